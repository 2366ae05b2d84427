"""A scenario played as a camera and a microphone on the media clock.

Why this module exists: the loop must not know whether its visitor is real.
``ScenarioCamera`` and ``ScenarioMicrophone`` implement the same interfaces
as a RealSense or an ALSA device (``edge_avatar.sensors.base``), and time in
them is the media clock's, never wall time: with a manual or accelerated
time base a 42 s scenario plays in milliseconds, frame for frame and sample
for sample the same as in real time.

Scenario time 0 is media time ``start_ns`` (0 by default: the speaker's first
sample). Timestamps come from counts: frame ``k`` has pts
``start_ns + k * 1e9 / fps`` (exact integer arithmetic on the rational
frame rate), audio chunk ``i`` has pts ``start_ns + i * chunk * 1e9 // rate``.

A real kiosk microphone also hears the avatar's own speaker. When the
scenario has ``room.echo`` and the session hands the microphone its speaker
(``ScenarioMicrophone.attach_speaker``), each chunk also carries the echo of
what that speaker really played (``echo.py``), on the same media clock.
"""

from __future__ import annotations

import threading
import time
from fractions import Fraction

import numpy as np

from edge_avatar.clock import MediaClock
from edge_avatar.config import CameraConfig, MicrophoneConfig
from edge_avatar.frames import AudioChunk, CaptureStatus, VideoFrame, ns_to_samples, samples_to_ns
from edge_avatar.scenario import GroundTruth, Scenario
from edge_avatar.scenario.echo import SpeakerEcho
from edge_avatar.sensors.base import CameraSource, MicrophoneSource

NS_PER_S = 1_000_000_000
# How long (real time) a microphone read waits to see whether media time moves at all; if it
# does not (a manual clock in a test), the read answers TIMEOUT instead of blocking.
_PROBE_S = 0.001


class ScenarioCamera(CameraSource):
    """Renders the scenario frame for the current camera period; latest wins, no frame queue.

    ``read_latest`` answers OK once per frame period (``config.fps``) with the
    frame whose pts starts the period now running, TIMEOUT while that frame
    was already returned, and EOS from ``duration_s`` on. Periods that pass
    without a read are counted as replaced (a real camera would have
    overwritten them), and ``seq`` is the frame index, so gaps show.
    """

    def __init__(self, scenario: Scenario, clock: MediaClock, config: CameraConfig, *, start_ns: int = 0):
        self.scenario = scenario
        self.uri = f"scenario://{scenario.name}"
        self.width_px = config.width_px
        self.height_px = config.height_px
        self._clock = clock
        self._start_ns = start_ns
        rate = Fraction(config.fps).limit_denominator(1001)
        self._fps_num, self._fps_den = rate.numerator, rate.denominator
        self._end_ns = start_ns + round(scenario.duration_s * NS_PER_S)
        self._last_index = -1
        self._started = False
        self._closed = False
        self._frames = 0
        self._replaced = 0
        self._render_ns_total = 0
        self._render_ns_max = 0

    def start(self) -> None:
        self._started = True
        self._closed = False

    def frame_pts_ns(self, index: int) -> int:
        """The presentation time of frame ``index`` on the media clock."""
        return self._start_ns + index * NS_PER_S * self._fps_den // self._fps_num

    def frame_index_at(self, media_ns: int) -> int:
        """The frame period running at media time ``media_ns`` (-1 before the scenario starts)."""
        if media_ns < self._start_ns:
            return -1
        return (media_ns - self._start_ns) * self._fps_num // (NS_PER_S * self._fps_den)

    def read_latest(self) -> tuple[CaptureStatus, VideoFrame | None]:
        if not self._started or self._closed:
            return CaptureStatus.ERROR, None
        index = self.frame_index_at(self._clock.now_ns())
        if index < 0:
            return CaptureStatus.TIMEOUT, None
        pts_ns = self.frame_pts_ns(index)
        if pts_ns >= self._end_ns:
            return CaptureStatus.EOS, None
        if index <= self._last_index:
            return CaptureStatus.TIMEOUT, None
        self._replaced += index - self._last_index - 1
        self._last_index = index
        began = time.perf_counter_ns()  # cost accounting only; media time comes from the clock
        image = self.scenario.render_frame((pts_ns - self._start_ns) / NS_PER_S, self.width_px, self.height_px)
        spent = time.perf_counter_ns() - began
        self._render_ns_total += spent
        self._render_ns_max = max(self._render_ns_max, spent)
        self._frames += 1
        return CaptureStatus.OK, VideoFrame(pts_ns=pts_ns, seq=index, image=image, depth_m=None, source=self.uri)

    def close(self) -> None:
        self._closed = True

    def stats(self) -> dict:
        return {
            "frames_captured": self._frames,
            "frames_replaced": self._replaced,
            "reconnects": 0,
            "render_ms_mean": self._render_ns_total / self._frames / 1e6 if self._frames else 0.0,
            "render_ms_max": self._render_ns_max / 1e6,
        }

    def ground_truth(self) -> GroundTruth:
        return self.scenario.ground_truth()


class ScenarioMicrophone(MicrophoneSource):
    """Delivers the scenario's track in ``chunk_ms`` chunks once media time has passed each chunk's end.

    Nothing is dropped: a reader that falls behind gets the backlog at once,
    in order. ``read(timeout_ms)`` waits (in real time, interruptible by
    ``close``) only while media time is moving; on a clock that stands still
    it answers TIMEOUT after a 1 ms probe, so a test on a manual clock never
    hangs. The track is drawn at ``config.sample_rate_hz`` (resampled once if
    that differs from the scenario's own rate); a partial last chunk is not
    delivered.

    Echo: with ``room.echo`` in the scenario, ``attach_speaker(speaker)`` makes
    every chunk also hold what that speaker played ``delay_ms`` before it,
    through the scenario's room (see ``edge_avatar.scenario.echo``). Without
    an attached speaker, or without ``room.echo``, there is no echo.
    """

    def __init__(self, scenario: Scenario, clock: MediaClock, config: MicrophoneConfig, *, start_ns: int = 0):
        self.scenario = scenario
        self.uri = f"scenario://{scenario.name}"
        self.sample_rate_hz = config.sample_rate_hz
        self.chunk_samples = config.sample_rate_hz * config.chunk_ms // 1000
        self._clock = clock
        self._start_ns = start_ns
        self._samples = None
        self._next_index = 0
        self._started = False
        self._closed = threading.Event()
        self._chunks = 0
        self._timeouts = 0
        self._echo: SpeakerEcho | None = None
        self._first_sample = ns_to_samples(start_ns, config.sample_rate_hz)   # chunk 0's index on the master clock

    def attach_speaker(self, speaker) -> bool:
        """Let this microphone hear ``speaker`` (an ``AudioOutput``) the way the scenario's room says.

        The session calls this once, before the speaker starts, with the
        speaker whose sample position is the master clock. It adds a tap to the
        speaker (called on the speaker's thread with every played block; it
        only copies) and from then on each chunk at pts ``t`` also holds the
        echo of what was played at ``t - room.echo.delay_ms``. Returns whether
        echo is on: False when the scenario has no ``room.echo`` (nothing is
        attached then).
        """
        echo = self.scenario.spec.room.echo
        if echo is None:
            return False
        self._echo = SpeakerEcho(echo, speaker.sample_rate_hz, self.sample_rate_hz, self.scenario.spec.seed)
        speaker.add_tap(self._echo.tap)
        return True

    @property
    def echo_attached(self) -> bool:
        return self._echo is not None

    def start(self) -> None:
        self._samples = self.scenario.audio(self.sample_rate_hz)
        self._started = True
        self._closed.clear()

    @property
    def chunk_count(self) -> int:
        """How many whole chunks the scenario holds."""
        return len(self._samples) // self.chunk_samples if self._samples is not None else 0

    def chunk_pts_ns(self, index: int) -> int:
        return self._start_ns + samples_to_ns(index * self.chunk_samples, self.sample_rate_hz)

    def read(self, timeout_ms: int) -> tuple[CaptureStatus, AudioChunk | None]:
        if not self._started or self._closed.is_set():
            return CaptureStatus.ERROR, None
        index = self._next_index
        if index >= self.chunk_count:
            return CaptureStatus.EOS, None
        ready_ns = self.chunk_pts_ns(index + 1)
        now_ns = self._clock.now_ns()
        deadline_ns = now_ns + max(0, timeout_ms) * 1_000_000
        while now_ns < ready_ns:
            if now_ns >= deadline_ns:
                self._timeouts += 1
                return CaptureStatus.TIMEOUT, None
            wait_s = min(ready_ns, deadline_ns) - now_ns
            if self._closed.wait(min(wait_s / NS_PER_S, _PROBE_S)):
                return CaptureStatus.ERROR, None
            later_ns = self._clock.now_ns()
            if later_ns == now_ns:  # media time stands still: do not block a test for nothing
                self._timeouts += 1
                return CaptureStatus.TIMEOUT, None
            now_ns = later_ns
            if now_ns < ready_ns and now_ns < deadline_ns:
                remaining_s = (min(ready_ns, deadline_ns) - now_ns) / NS_PER_S
                if self._closed.wait(remaining_s):
                    return CaptureStatus.ERROR, None
                now_ns = self._clock.now_ns()
        first = index * self.chunk_samples
        samples = self._samples[first:first + self.chunk_samples].copy()
        if self._echo is not None:
            samples += self._echo.render(self._first_sample + first, self.chunk_samples)
            np.clip(samples, -1.0, 1.0, out=samples)
        self._next_index = index + 1
        self._chunks += 1
        return CaptureStatus.OK, AudioChunk(pts_ns=self.chunk_pts_ns(index), seq=index, samples=samples,
                                            sample_rate_hz=self.sample_rate_hz)

    def close(self) -> None:
        self._closed.set()

    def stats(self) -> dict:
        stats = {"chunks_captured": self._chunks, "chunks_dropped": 0, "timeouts": self._timeouts, "reconnects": 0}
        if self._echo is not None:
            stats["echo"] = self._echo.stats()
        return stats

    def ground_truth(self) -> GroundTruth:
        return self.scenario.ground_truth()
