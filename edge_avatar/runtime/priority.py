"""CPU priority for the threads and processes beside the tick: the tick first, best-effort work after.

Why this module exists: on a CPU-only board every stage shares a few cores,
and the one with a deadline is the tick (a frame every 33 ms). Perception
on a worker is best effort by design (latest frame wins, the planner uses
the newest token), and the video encoder has a queue; when the cores are
busy, they should be the ones to wait. Linux lets an unprivileged process
*lower* the priority (raise the nice value) of any of its own threads --
``setpriority(PRIO_PROCESS, tid)`` acts on one thread there -- but never
raise it back, so the tick keeps the process's priority and the others are
lowered, each by itself when it starts. No root, no real-time classes: a
systemd unit can still add ``Nice=`` or ``CPUWeight=`` for the whole service.

Elsewhere (macOS, Windows) this does nothing and says so once at debug level.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

MAX_NICE = 19


def lower_current_thread(increment: int, role: str) -> int | None:
    """Raise the calling thread's nice value by ``increment`` (0 = leave it); the new value, or None if unsupported."""
    return lower_thread(threading.get_native_id(), increment, role)


def lower_thread(tid: int, increment: int, role: str) -> int | None:
    """Raise thread ``tid``'s (of this process) nice value by ``increment``; the new value, or None if unsupported."""
    if increment <= 0:
        return None
    return _lower(tid, increment, f"thread {role} (tid {tid})")


def lower_process(pid: int, increment: int, role: str) -> int | None:
    """Raise child process ``pid``'s nice value by ``increment``: every thread it has, and its autogroup.

    Threads it starts later inherit the value. A child started in its own session (``setsid``) gets
    its own scheduler autogroup where the kernel has them (``/proc/sys/kernel/sched_autogroup_enabled``),
    and nice values only rank tasks inside one group; the group's own nice is what ranks it against
    ours, so that is lowered too.
    """
    if increment <= 0:
        return None
    value = _lower(pid, increment, f"process {role} (pid {pid})")
    if value is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            if int(tid) != pid:
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, int(tid), value)
    _lower_autogroup(pid, value, role)
    return value


def _lower_autogroup(pid: int, value: int, role: str) -> None:
    path = f"/proc/{pid}/autogroup"     # "/autogroup-123 nice 0"; absent without CONFIG_SCHED_AUTOGROUP
    try:
        with open(path) as f:
            current = int(f.read().split("nice")[1])
        if value > current:
            with open(path, "w") as f:
                f.write(str(value))
    except (OSError, ValueError, IndexError) as exc:
        log.debug("process %s (pid %d): autogroup nice not set: %s", role, pid, exc)


def _lower(ident: int, increment: int, what: str) -> int | None:
    if not sys.platform.startswith("linux") or not hasattr(os, "setpriority"):
        log.debug("%s: per-thread priority is only set on Linux", what)
        return None
    try:
        value = min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, ident) + increment)
        os.setpriority(os.PRIO_PROCESS, ident, value)
    except OSError as exc:  # the thread or process is gone, or a sandbox forbids it: run at the same priority
        log.warning("%s: could not lower its CPU priority: %s", what, exc)
        return None
    log.debug("%s: nice %d", what, value)
    return value
