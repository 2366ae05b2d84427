"""Bounded queues between worker threads and the tick, each with a stated overflow policy.

Why: a stalled stage must neither grow memory nor add latency, and audio must
never disappear without a trace. Each queue is created with one policy:

- ``DROP_OLDEST``: latest wins (camera frames, perception tokens, telemetry);
  the oldest item is discarded to make room and counted in ``dropped``.
- ``BLOCK``: the producer waits up to ``put_timeout_s`` for room (audio on
  its way to the speaker); if that runs out ``QueueFull`` is raised, so the
  loss is loud, never silent.

Control messages (``ControlMessage``: interrupt, stop) jump ahead of media:
they go into a separate lane that ``get`` always serves first, and they are
never dropped, which is what lets a barge-in overtake queued speech.
"""

from __future__ import annotations

import collections
import enum
import threading
from typing import Any

from edge_avatar.frames import ControlMessage


class OverflowPolicy(enum.Enum):
    DROP_OLDEST = "drop_oldest"
    BLOCK = "block"


class QueueFull(RuntimeError):
    pass


class QueueEmpty(Exception):
    pass


class BoundedQueue:
    def __init__(self, name: str, capacity: int, policy: OverflowPolicy, put_timeout_s: float = 2.0):
        if capacity < 1:
            raise ValueError(f"queue {name!r}: capacity must be >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.policy = policy
        self.put_timeout_s = put_timeout_s
        self._media: collections.deque[Any] = collections.deque()
        self._control: collections.deque[ControlMessage] = collections.deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.put_count = 0
        self.high_water = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._media) + len(self._control)

    def put(self, item: Any) -> None:
        with self._cond:
            self.put_count += 1
            if isinstance(item, ControlMessage):
                self._control.append(item)
                self._cond.notify_all()
                return
            if len(self._media) >= self.capacity:
                if self.policy is OverflowPolicy.DROP_OLDEST:
                    self._media.popleft()
                    self.dropped += 1
                else:
                    ok = self._cond.wait_for(lambda: len(self._media) < self.capacity, self.put_timeout_s)
                    if not ok:
                        self.dropped += 1
                        raise QueueFull(f"queue {self.name!r} full ({self.capacity} items) for "
                                        f"{self.put_timeout_s} s: its consumer is stalled")
            self._media.append(item)
            self.high_water = max(self.high_water, len(self._media))
            self._cond.notify_all()

    def get(self, timeout_s: float | None = None) -> Any:
        """Next control message if any, else the oldest media item; raises QueueEmpty on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._control or self._media, timeout_s):
                raise QueueEmpty(self.name)
            item = self._control.popleft() if self._control else self._media.popleft()
            self._cond.notify_all()
            return item

    def get_nowait(self) -> Any:
        return self.get(timeout_s=0)

    def drain(self) -> list[Any]:
        """Everything queued now, control messages first (used by the tick, which never waits)."""
        with self._cond:
            items = list(self._control) + list(self._media)
            self._control.clear()
            self._media.clear()
            self._cond.notify_all()
            return items

    def clear_media(self) -> int:
        """Discard queued media (not control); returns how many were discarded."""
        with self._cond:
            n = len(self._media)
            self._media.clear()
            self._cond.notify_all()
            return n

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"policy": self.policy.value, "capacity": self.capacity, "queued": len(self._media),
                    "put": self.put_count, "dropped": self.dropped, "high_water": self.high_water}
