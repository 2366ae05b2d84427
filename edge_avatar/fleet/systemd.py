"""systemd integration: READY after warm-up, STATUS lines, and a watchdog that only a moving face can feed.

Why this module exists: ``edge-avatar.service`` is ``Type=notify`` with
``WatchdogSec``. systemd must hear READY=1 only once the engines are loaded
and warmed (a visitor must never meet a cold first frame), and must stop
hearing WATCHDOG=1 as soon as the face stops advancing, whatever else in the
process is still alive: then systemd kills and restarts the service. A timer
thread that pings unconditionally would keep a frozen kiosk "healthy"
forever; ``Watchdog`` pings only when the loop's ``frames_advanced`` counter
has moved since its previous ping.

The notify protocol is one datagram on the unix socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace), so it is
written here with the standard library instead of depending on ``sdnotify``
or ``systemd-python``. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a
no-op, so the same code runs in a terminal, a test and the service.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable, Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """sd_notify(3) over ``$NOTIFY_SOCKET``; silent when not started by systemd."""

    def __init__(self, address: str | None = None):
        self.address = address
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.sent: int = 0
        self.failures: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "SystemdNotifier":
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; False (logged once) if it could not be sent."""
        if not self.address:
            return False
        message = "\n".join(assignments).encode("utf-8")
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(message, target)
            except OSError as exc:
                self.failures += 1
                if self.failures == 1:
                    log.warning("sd_notify to %s failed: %s", self.address, exc)
                return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def extend_timeout(self, seconds: float) -> bool:
        """During a long start-up step (an engine build): "I need this much more time"."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def watchdog_trigger(self) -> bool:
        """Ask systemd to treat the service as hung right now (e.g. the loop reported a fatal stall)."""
        return self.notify("WATCHDOG=trigger")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def watchdog_interval_s(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Half of systemd's ``WatchdogSec`` (from ``$WATCHDOG_USEC``), or None when no watchdog applies to us."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner.strip() != str(os.getpid() if pid is None else pid):
        return None  # the variables were inherited from a parent that is the watched process
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


class Watchdog:
    """Feeds systemd's watchdog only while frames advance.

    ``frames_advanced`` returns the loop's counter (``AvatarLoop.frames_advanced``).
    ``poll()`` pings if the counter moved since the previous ping and returns
    whether it did; ``start()`` runs ``poll()`` every ``interval_s`` (default:
    half of ``WatchdogSec``) on a daemon thread. A stalled loop therefore
    stops the pings, and systemd's ``WatchdogSec`` later kills and restarts
    the service (``Restart=on-failure`` includes watchdog timeouts).
    """

    def __init__(self, frames_advanced: Callable[[], int], notifier: SystemdNotifier, *,
                 interval_s: float | None = None, on_stall: Callable[[float], None] | None = None,
                 monotonic_s: Callable[[], float] = time.monotonic):
        self.frames_advanced = frames_advanced
        self.notifier = notifier
        self.interval_s = interval_s if interval_s is not None else watchdog_interval_s()
        self.on_stall = on_stall
        self._monotonic_s = monotonic_s
        self._last_count: int | None = None
        self._last_progress_s = monotonic_s()
        self._stall_reported = False
        self.pings = 0
        self.skipped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled and self.interval_s is not None

    def poll(self) -> bool:
        try:
            count = int(self.frames_advanced())
        except Exception:  # noqa: BLE001 - an unreadable counter is no evidence of progress
            log.exception("watchdog: reading frames_advanced failed")
            count = self._last_count
        now_s = self._monotonic_s()
        if self._last_count is None:
            self._last_count = count  # baseline: progress is measured from here
            return False
        if count is not None and count != self._last_count:
            self._last_count = count
            self._last_progress_s = now_s
            self._stall_reported = False
            self.pings += 1
            self.notifier.watchdog()
            return True
        self.skipped += 1
        stalled_s = now_s - self._last_progress_s
        if not self._stall_reported and self.interval_s is not None and stalled_s >= self.interval_s:
            self._stall_reported = True
            log.error("watchdog: no frame for %.1f s; not feeding systemd's watchdog", stalled_s)
            if self.on_stall is not None:
                self.on_stall(stalled_s)
        return False

    def start(self) -> bool:
        """Run in the background; False (and nothing started) when systemd asked for no watchdog."""
        if not self.enabled or self._thread is not None:
            return False
        self.poll()  # baseline now
        self._thread = threading.Thread(target=self._run, name="systemd-watchdog", daemon=True)
        self._thread.start()
        log.info("watchdog: checking frame progress every %.1f s", self.interval_s)
        return True

    def _run(self) -> None:
        assert self.interval_s is not None
        while not self._stop.wait(self.interval_s):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
