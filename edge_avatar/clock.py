"""The one media clock: the audio output's sample position.

Why this module exists: lip sync and every latency figure are only as good as
the clock they are measured on. The speaker consumes samples at a fixed rate
and we always feed it (silence when idle), so its sample position is a clock
that never stops and that the audio the visitor hears is locked to by
construction. Pipeline code never reads ``time.time()``: it asks a
``MediaClock`` for ``now_ns()`` and sleeps with ``sleep_until_ns()``.

Underneath a media clock sits a *time base*, which says how fast time passes:

- ``RealTimeBase``: the monotonic clock; what a device runs on.
- ``AcceleratedTimeBase``: virtual time that counts the real time spent
  working but skips the time spent sleeping. Ten simulated minutes of a loop
  that has nothing to do take seconds, yet a tick whose work overruns its
  period is still late, so drift and late-tick handling are exercised.
- ``ManualTimeBase``: time moves only when a test says so.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from edge_avatar.frames import samples_to_ns

NS_PER_S = 1_000_000_000


class TimeBase(Protocol):
    def monotonic_ns(self) -> int: ...

    def sleep_until_ns(self, target_ns: int) -> None: ...


class RealTimeBase:
    """Wall-clock monotonic time; sleeps really sleep."""

    # The last stretch before a deadline is spun rather than slept: Linux sleep
    # overshoots by 50-100 us, and a tick that starts late costs budget.
    SPIN_NS = 200_000

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_until_ns(self, target_ns: int) -> None:
        while True:
            remaining_ns = target_ns - time.monotonic_ns()
            if remaining_ns <= 0:
                return
            if remaining_ns > self.SPIN_NS:
                time.sleep((remaining_ns - self.SPIN_NS) / NS_PER_S)
            else:
                time.sleep(0)


class AcceleratedTimeBase:
    """Virtual time = real time spent working + time skipped instead of slept."""

    def __init__(self) -> None:
        self._real_origin_ns = time.monotonic_ns()
        self._skipped_ns = 0
        self._lock = threading.Lock()

    def monotonic_ns(self) -> int:
        with self._lock:
            return time.monotonic_ns() - self._real_origin_ns + self._skipped_ns

    def sleep_until_ns(self, target_ns: int) -> None:
        with self._lock:
            now_ns = time.monotonic_ns() - self._real_origin_ns + self._skipped_ns
            if target_ns > now_ns:
                self._skipped_ns += target_ns - now_ns


class ManualTimeBase:
    """Time stands still until ``advance_ns`` or a sleep moves it; for unit tests."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now_ns = start_ns
        self._lock = threading.Lock()

    def monotonic_ns(self) -> int:
        with self._lock:
            return self._now_ns

    def advance_ns(self, delta_ns: int) -> None:
        with self._lock:
            self._now_ns += delta_ns

    def sleep_until_ns(self, target_ns: int) -> None:
        with self._lock:
            self._now_ns = max(self._now_ns, target_ns)


class SamplePositionSource(Protocol):
    """Anything that reports how many samples the speaker has consumed (see edge_avatar.outputs.audio)."""

    sample_rate_hz: int

    def position_samples(self) -> int: ...


class MediaClock:
    """Media time in ns, read from the speaker's sample position.

    A real sound card advances its position in whole periods (e.g. 10 ms), so
    between two period boundaries the time base interpolates; the result
    never goes backwards and is never ahead of the next boundary.
    """

    def __init__(self, audio_position: SamplePositionSource, time_base: TimeBase):
        self._audio = audio_position
        self.time_base = time_base
        self._lock = threading.Lock()
        self._last_position = -1
        self._last_position_base_ns = 0
        self._block_ns = 0
        self._last_now_ns = 0

    def now_ns(self) -> int:
        position = self._audio.position_samples()
        base_ns = self.time_base.monotonic_ns()
        with self._lock:
            position_ns = samples_to_ns(position, self._audio.sample_rate_hz)
            if position != self._last_position:
                if self._last_position >= 0:
                    self._block_ns = max(self._block_ns, position_ns - samples_to_ns(
                        self._last_position, self._audio.sample_rate_hz))
                self._last_position = position
                self._last_position_base_ns = base_ns
            interpolated_ns = min(base_ns - self._last_position_base_ns, self._block_ns)
            now_ns = max(position_ns + max(0, interpolated_ns), self._last_now_ns)
            self._last_now_ns = now_ns
            return now_ns

    def sleep_until_ns(self, target_ns: int) -> None:
        """Sleep until media time reaches ``target_ns`` (returns at once if already there)."""
        while True:
            remaining_ns = target_ns - self.now_ns()
            if remaining_ns <= 0:
                return
            self.time_base.sleep_until_ns(self.time_base.monotonic_ns() + remaining_ns)
