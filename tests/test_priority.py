"""CPU priority beside the tick: a thread lowers itself; a child in its own session is lowered with its autogroup."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge_avatar.runtime.priority import lower_current_thread, lower_process, lower_thread

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux semantics")


@linux_only
def test_a_thread_lowers_only_itself():
    seen = {}

    def worker():
        seen["value"] = lower_current_thread(4, "test")
        seen["own"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    base = os.getpriority(os.PRIO_PROCESS, 0)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["value"] == seen["own"] == min(19, base + 4)
    assert os.getpriority(os.PRIO_PROCESS, 0) == base          # the calling (tick) thread is untouched
    assert lower_current_thread(0, "test") is None             # 0: leave it


@linux_only
def test_a_child_in_its_own_session_is_lowered_with_its_autogroup():
    child = subprocess.Popen(["sleep", "5"], start_new_session=True)
    try:
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert lower_process(child.pid, 5, "test") == min(19, base + 5)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, base + 5)
        autogroup = Path(f"/proc/{child.pid}/autogroup")
        if autogroup.is_file():                               # where the kernel groups sessions for the scheduler
            assert int(autogroup.read_text().split("nice")[1]) >= 5
    finally:
        child.kill()
        child.wait()
    assert lower_process(child.pid, 5, "gone") is None         # a process that is gone: a warning, no exception


@linux_only
def test_another_thread_is_lowered_by_its_id():
    started, release, seen = threading.Event(), threading.Event(), {}

    def worker():
        seen["tid"] = threading.get_native_id()
        started.set()
        release.wait(5)
        seen["own"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    base = os.getpriority(os.PRIO_PROCESS, 0)
    thread = threading.Thread(target=worker)
    thread.start()
    started.wait(5)
    assert lower_thread(seen["tid"], 3, "test") == min(19, base + 3)
    release.set()
    thread.join()
    assert seen["own"] == min(19, base + 3)
    assert os.getpriority(os.PRIO_PROCESS, 0) == base
    assert lower_thread(seen["tid"], 0, "test") is None
