"""Worker threads around the tick: the microphone reader and the listener that consumes it.

Why this module exists: capture, recognition, dialogue and synthesis take
variable time, and none of it may block the tick. Each runs on its own
thread and talks to the others through ``BoundedQueue``s whose overflow
policy is stated where the queue is made:

- mic -> listener: ``DROP_OLDEST`` (500 chunks = 5 s); a stalled listener
  loses the oldest audio and the loss is counted in the report;
- turns -> dialogue (runtime/conversation.py): ``BLOCK``; a reply is never dropped;
- speech -> speaker: the speaker's own sample queue (blocks, never drops).

An ``interrupt`` control message overtakes queued replies and the speaker is
cleared (barge-in). Each worker times its own work and counts its errors; an
exception in one item is logged and counted, never kills the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import numpy as np

from edge_avatar.frames import AudioChunk, CaptureStatus, ControlMessage
from edge_avatar.runtime.queues import BoundedQueue, QueueEmpty
from edge_avatar.runtime.timing import StageTimer
from edge_avatar.sensors.base import MicrophoneSource

log = logging.getLogger(__name__)


class Worker(threading.Thread):
    """A daemon thread with a stop flag, a work timer and an error counter."""

    def __init__(self, name: str):
        super().__init__(name=f"edge-avatar-{name}", daemon=True)
        self.worker_name = name
        self.stop_event = threading.Event()
        self.timer = StageTimer(name)
        self.errors = 0
        self.last_error = ""

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - a worker reports and carries on
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("worker %s: error", self.worker_name)
                time.sleep(0.05)

    def step(self) -> None:
        raise NotImplementedError

    def stats(self) -> dict:
        return {"work_ms": self.timer.summary_ms(), "errors": self.errors, "last_error": self.last_error}


class MicrophoneWorker(Worker):
    """Reads the microphone in order and fans each chunk out to subscriber queues."""

    POLL_S = 0.005

    def __init__(self, microphone: MicrophoneSource, subscribers: list[BoundedQueue]):
        super().__init__("microphone")
        self.microphone = microphone
        self.subscribers = subscribers
        self.chunks = 0
        self.eos = False

    def step(self) -> None:
        status, chunk = self.microphone.read(timeout_ms=20)
        if status is CaptureStatus.OK and chunk is not None:
            self.chunks += 1
            for queue in self.subscribers:
                queue.put(chunk)
        elif status is CaptureStatus.EOS:
            self.eos = True
            self.stop_event.wait(0.05)
        else:  # TIMEOUT or ERROR (the source reconnects by itself)
            self.stop_event.wait(self.POLL_S)

    def stats(self) -> dict:
        return {**super().stats(), "chunks": self.chunks, "eos": self.eos, **self.microphone.stats()}


class ListenerWorker(Worker):
    """Feeds microphone chunks to a turn detector (``on_chunk``) and keeps the visitor's voice level."""

    def __init__(self, chunks: BoundedQueue, on_chunk: Callable[[AudioChunk], None]):
        super().__init__("listener")
        self.chunks = chunks
        self.on_chunk = on_chunk
        self.voice_rms = 0.0

    def step(self) -> None:
        try:
            chunk = self.chunks.get(timeout_s=0.05)
        except QueueEmpty:
            return
        if isinstance(chunk, ControlMessage):
            return
        start_ns = time.monotonic_ns()
        self.voice_rms = float(np.sqrt(np.mean(chunk.samples * chunk.samples))) if len(chunk.samples) else 0.0
        self.on_chunk(chunk)
        self.timer.add_ns(time.monotonic_ns() - start_ns)
