"""The one fixed-rate tick: capture -> perception -> planner -> renderer -> present.

Why this module exists: the avatar's face must advance exactly once per
frame period of the *audio* clock, whatever else the device is doing, or lip
sync and every latency figure are lost. The schedule is integer arithmetic
on the media clock: tick ``k`` is due at ``t0 + k * 1e9 / rate`` (the rate is
kept as an exact fraction), so nothing accumulates and the loop never drifts.

When a tick starts late:

- later than ``loop.late_tick_skip_perception_ms``: perception is skipped for
  that tick (the planner runs on the last token) and it is counted;
- later than a whole period: the ticks that can no longer be on time are
  dropped (counted); the output repeats the last image for their pts, and the
  schedule resumes on the next due tick rather than trying to catch up.

Every stage is timed (``stages_ms`` in the report) and the whole tick too.
The tick never waits on a worker: it drains bounded queues without blocking.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Protocol

import numpy as np

from edge_avatar.clock import MediaClock
from edge_avatar.frames import CaptureStatus, RenderedFrame, VideoFrame
from edge_avatar.motion import MotionFrame, sanitize_motion
from edge_avatar.outputs.base import OutputSink
from edge_avatar.runtime.priority import lower_current_thread
from edge_avatar.runtime.queues import BoundedQueue
from edge_avatar.runtime.timing import StageTimer
from edge_avatar.sensors.base import CameraSource

log = logging.getLogger(__name__)

STAGES = ("capture", "perception", "planner", "renderer", "present")


class Perception(Protocol):
    def perceive(self, frame: VideoFrame, voice_rms: float) -> np.ndarray: ...


class PerceptionWorker(threading.Thread):
    """Perception off the tick: one request slot (latest wins), the tick reads the newest token.

    Used where perception costs more than a tick can spare (ONNX Runtime on a CPU). The tick
    asks for perception on its stride ticks; the worker then reads the camera itself (``read``)
    and perceives that frame, so the frame is read by the thread that uses it and neither the
    read (a driver's copy, a scenario's rendering) nor the inference ever lands on the tick.
    It runs below the tick's CPU priority (``nice_increment``): when the cores are busy the
    token ages instead of the tick slipping. Requests replaced before the worker took them are
    counted; the token's age at use is reported. A camera that was just lost publishes an
    empty token, so the planner falls back to idle behaviour.
    """

    def __init__(self, perception: Perception, timer: StageTimer, time_base,
                 read: Callable[[], tuple[VideoFrame | None, bool]], read_timer: StageTimer,
                 nice_increment: int = 0):
        super().__init__(name="edge-avatar-perception", daemon=True)
        self.perception = perception
        self.nice_increment = nice_increment
        self.nice: int | None = None
        self.timer = timer
        self.time_base = time_base
        self.read = read
        self.read_timer = read_timer
        self._cond = threading.Condition()
        self._pending: tuple[float, int] | None = None   # (voice rms, pts of the tick that asked)
        self._token: tuple[np.ndarray | None, int] | None = None  # (token or None = camera lost, pts of its frame)
        self._stopping = False
        self.frames_overwritten = 0
        self.runs = 0
        self.errors = 0

    def request(self, voice_rms: float, pts_ns: int) -> None:
        """Read the camera and perceive what it gives (the newest request wins)."""
        with self._cond:
            if self._pending is not None:
                self.frames_overwritten += 1
            self._pending = (voice_rms, pts_ns)
            self._cond.notify()

    def latest(self) -> tuple[np.ndarray | None, int] | None:
        with self._cond:
            return self._token

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def run(self) -> None:
        self.nice = lower_current_thread(self.nice_increment, self.name)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._stopping)
                if self._stopping:
                    return
                voice_rms, pts_ns = self._pending
                self._pending = None
            frame = self._read(pts_ns)
            if frame is None:
                continue
            start_ns = self.time_base.monotonic_ns()
            try:
                token = self.perception.perceive(frame, voice_rms)
            except Exception:  # noqa: BLE001 - perception stages return reasons; anything else is counted
                self.errors += 1
                log.exception("perception failed on frame %d", frame.seq)
                continue
            self.timer.add_ns(self.time_base.monotonic_ns() - start_ns)
            self.runs += 1
            with self._cond:
                self._token = (token, frame.pts_ns)

    def _read(self, pts_ns: int) -> VideoFrame | None:
        start_ns = self.time_base.monotonic_ns()
        try:
            frame, lost = self.read()
        except Exception:  # noqa: BLE001 - a camera's own failure is its ERROR status; anything else is counted
            self.errors += 1
            log.exception("camera read failed")
            return None
        finally:
            self.read_timer.add_ns(self.time_base.monotonic_ns() - start_ns)
        if lost:
            with self._cond:
                self._token = (None, pts_ns)
        return frame


class Planner(Protocol):
    def step(self, pts_ns: int, token: np.ndarray | None) -> np.ndarray: ...


class Renderer(Protocol):
    def render(self, motion: np.ndarray) -> np.ndarray: ...


@dataclass
class LoopEvent:
    pts_ns: int
    kind: str        # "camera_lost", "camera_recovered", "camera_eos", "stalled", ...
    detail: str = ""


@dataclass
class TickState:
    """What one tick knows; the previous tick's values are kept when a stage has nothing new."""

    tick: int = 0
    pts_ns: int = 0
    lateness_ns: int = 0
    frame: VideoFrame | None = None
    new_frame: bool = False
    token: np.ndarray | None = None
    voice_rms: float = 0.0
    motion: MotionFrame | None = None
    image: np.ndarray | None = None


@dataclass
class LoopCounters:
    ticks: int = 0
    frames_rendered: int = 0
    ticks_dropped: int = 0
    ticks_late: int = 0
    perception_runs: int = 0
    perception_skipped_late: int = 0
    camera_timeouts: int = 0
    camera_errors: int = 0
    motion_values_clamped: int = 0
    max_lateness_ns: int = 0
    events: list[LoopEvent] = field(default_factory=list)


class TickSchedule:
    """Exact due times: ``due_ns(k) = t0 + floor(k * 1e9 / rate)``, with the rate as a fraction."""

    def __init__(self, tick_rate_hz: float, t0_ns: int):
        self.rate = Fraction(tick_rate_hz).limit_denominator(1001)
        self.t0_ns = t0_ns

    @classmethod
    def on_frame_grid(cls, tick_rate_hz: float, now_ns: int) -> "TickSchedule":
        """A schedule whose ticks fall on media time's frame grid (``j / rate`` from media time 0): the
        first grid point at or after ``now_ns``.

        A recording places each frame in the slot ``round(pts * rate)``; ticks off the grid would be
        shifted into their slots by up to half a frame (16.7 ms at 30 Hz), differently in every run,
        and the lip sync measured from the video would move with it.
        """
        grid = cls(tick_rate_hz, 0)                               # media time's own frame grid
        j = grid.index_at(now_ns)
        if grid.due_ns(j) < now_ns:
            j += 1
        return cls(tick_rate_hz, grid.due_ns(j))

    def due_ns(self, k: int) -> int:
        return self.t0_ns + (k * 1_000_000_000 * self.rate.denominator) // self.rate.numerator

    def index_at(self, now_ns: int) -> int:
        """The last tick index whose due time is <= now."""
        k = ((now_ns - self.t0_ns) * self.rate.numerator) // (1_000_000_000 * self.rate.denominator)
        while self.due_ns(k + 1) <= now_ns:
            k += 1
        while k > 0 and self.due_ns(k) > now_ns:
            k -= 1
        return max(k, 0)

    @property
    def period_ns(self) -> float:
        return 1e9 / float(self.rate)


class AvatarLoop:
    def __init__(
        self,
        *,
        clock: MediaClock,
        tick_rate_hz: float,
        perception_stride_ticks: int,
        late_tick_skip_perception_ms: float,
        camera: CameraSource | None,
        sink: OutputSink,
        perception: Perception | None,
        planner: Planner,
        renderer: Renderer,
        voice_level: Callable[[], float] | None = None,
        stats_window_ticks: int = 20000,
        on_tick: Callable[[TickState], None] | None = None,
        perception_mode: str = "inline",
        perception_worker_nice: int = 0,
    ):
        self.clock = clock
        self.tick_rate_hz = tick_rate_hz
        self.perception_stride_ticks = perception_stride_ticks
        self.late_skip_ns = int(late_tick_skip_perception_ms * 1e6)
        self.camera = camera
        self.sink = sink
        self.perception = perception
        self.planner = planner
        self.renderer = renderer
        self.voice_level = voice_level or (lambda: 0.0)
        self.on_tick = on_tick
        self.timers = {name: StageTimer(name, stats_window_ticks) for name in STAGES}
        self.tick_timer = StageTimer("tick", stats_window_ticks)
        self.lateness_timer = StageTimer("lateness", stats_window_ticks)
        self.counters = LoopCounters()
        self.stop_event = threading.Event()
        self.schedule: TickSchedule | None = None
        self.last_tick_pts_ns = 0
        self.final_drift_ns = 0
        self.frames_advanced = 0  # read by the watchdog: only moves while frames really advance
        self._camera_ok = True
        self.token_age_timer = StageTimer("token_age", stats_window_ticks)
        self.perception_worker: PerceptionWorker | None = None
        if perception is not None and perception_mode == "worker":
            self.perception_worker = PerceptionWorker(perception, self.timers["perception"], clock.time_base,
                                                      self._read_camera, self.timers["capture"],
                                                      perception_worker_nice)

    def stop(self) -> None:
        self.stop_event.set()

    # ------------------------------------------------------------------ running

    def run(self, duration_s: float | None = None) -> None:
        """Tick until ``stop()``, the duration (media time) has passed, or the camera reports EOS."""
        schedule = self.schedule = TickSchedule.on_frame_grid(self.tick_rate_hz, self.clock.now_ns())
        end_ns = None if duration_s is None else schedule.t0_ns + int(duration_s * 1e9)
        state = TickState()
        k = 0
        if self.perception_worker is not None and not self.perception_worker.is_alive():
            self.perception_worker.start()
        try:
            self._run_ticks(schedule, end_ns, state, k)
        finally:
            if self.perception_worker is not None:
                self.perception_worker.stop()
                self.perception_worker.join(timeout=2.0)
        log.info("loop stopped after %d ticks", self.counters.ticks)

    def _run_ticks(self, schedule: TickSchedule, end_ns: int | None, state: TickState, k: int) -> None:
        base = self.clock.time_base
        while not self.stop_event.is_set():
            due_ns = schedule.due_ns(k)
            if end_ns is not None and due_ns >= end_ns:
                break
            self.clock.sleep_until_ns(due_ns)
            now_ns = self.clock.now_ns()
            if now_ns - due_ns >= schedule.period_ns:
                # Too late for whole ticks: drop them and resume on the one that is due now.
                k_now = schedule.index_at(now_ns)
                self.counters.ticks_dropped += k_now - k
                k, due_ns = k_now, schedule.due_ns(k_now)
                if end_ns is not None and due_ns >= end_ns:
                    break
            tick_start_ns = base.monotonic_ns()
            state.tick, state.pts_ns, state.lateness_ns = k, due_ns, now_ns - due_ns
            self._tick(state)
            self.tick_timer.add_ns(base.monotonic_ns() - tick_start_ns)
            self.lateness_timer.add_ns(max(0, state.lateness_ns))
            self.last_tick_pts_ns = due_ns
            self.final_drift_ns = now_ns - due_ns
            k += 1

    def _timed(self, name: str, fn: Callable[[], Any]) -> Any:
        base = self.clock.time_base
        start_ns = base.monotonic_ns()
        try:
            return fn()
        finally:
            self.timers[name].add_ns(base.monotonic_ns() - start_ns)

    def _tick(self, state: TickState) -> None:
        c = self.counters
        c.ticks += 1
        c.max_lateness_ns = max(c.max_lateness_ns, state.lateness_ns)
        late = state.lateness_ns > self.late_skip_ns
        if late:
            c.ticks_late += 1

        # The camera is read only on ticks that perceive: nothing else uses the frame, and a frame
        # read on an off-stride tick would only be overwritten (a scenario camera renders on read).
        # With a perception worker the worker reads it (see PerceptionWorker); the tick only asks.
        due_by_stride = state.tick % self.perception_stride_ticks == 0
        worker = self.perception_worker
        if worker is not None:
            if due_by_stride and self.camera is not None:
                state.voice_rms = self.voice_level()
                worker.request(state.voice_rms, state.pts_ns)
            newest = worker.latest()
            if newest is not None:
                state.token = newest[0]
                if newest[0] is not None:
                    self.token_age_timer.add_ns(max(0, state.pts_ns - newest[1]))
        else:
            state.new_frame = False
            if due_by_stride or self.perception is None:
                self._timed("capture", lambda: self._capture(state))
            if self.perception is not None and state.frame is not None and state.new_frame and due_by_stride:
                if late:
                    c.perception_skipped_late += 1
                else:
                    state.voice_rms = self.voice_level()
                    state.token = self._timed("perception",
                                              lambda: self.perception.perceive(state.frame, state.voice_rms))
                    c.perception_runs += 1

        raw_motion = self._timed("planner", lambda: self.planner.step(state.pts_ns, state.token))
        motion, clamped = sanitize_motion(raw_motion)
        c.motion_values_clamped += clamped
        state.motion = MotionFrame(state.pts_ns, state.tick, motion)

        state.image = self._timed("renderer", lambda: self.renderer.render(motion))
        frame = RenderedFrame(state.pts_ns, state.tick, state.image)
        self._timed("present", lambda: self.sink.present(frame))
        c.frames_rendered += 1
        self.frames_advanced += 1
        if self.on_tick is not None:
            self.on_tick(state)

    def _capture(self, state: TickState) -> None:
        frame, lost = self._read_camera(state.pts_ns)
        if frame is not None:
            state.frame, state.new_frame = frame, True
        if lost:
            state.frame, state.token = None, None  # stale: the planner falls back to idle behaviour

    def _read_camera(self, pts_ns: int | None = None) -> tuple[VideoFrame | None, bool]:
        """One camera read: (the new frame or None, whether the camera was lost just now); counts and reports.

        Called by the tick (``pts_ns``: its due time, for events), or by the perception worker in
        worker mode (events then carry the media clock's time of the read); never by both.
        """
        camera = self.camera
        if camera is None:
            return None, False
        status, frame = camera.read_latest()
        c = self.counters
        if pts_ns is None:
            pts_ns = self.clock.now_ns()
        if status is CaptureStatus.OK and frame is not None:
            if not self._camera_ok:
                self._camera_ok = True
                c.events.append(LoopEvent(pts_ns, "camera_recovered", camera.uri))
            return frame, False
        if status is CaptureStatus.TIMEOUT:
            c.camera_timeouts += 1
        elif status is CaptureStatus.ERROR:
            c.camera_errors += 1
            if self._camera_ok:
                self._camera_ok = False
                c.events.append(LoopEvent(pts_ns, "camera_lost", camera.uri))
                return None, True
        elif status is CaptureStatus.EOS:
            c.events.append(LoopEvent(pts_ns, "camera_eos", camera.uri))
            self.camera = None  # a file or scenario ran out: keep the avatar alive without a camera
        return None, False

    # ------------------------------------------------------------------ reporting

    def report(self) -> dict[str, Any]:
        c = self.counters
        media_s = (self.last_tick_pts_ns - self.schedule.t0_ns) / 1e9 + 1 / self.tick_rate_hz \
            if self.schedule and c.ticks else 0.0
        expected = c.frames_rendered + c.ticks_dropped
        return {
            "tick_rate_hz": self.tick_rate_hz,
            "media_s": round(media_s, 3),
            "frames": {
                "rendered": c.frames_rendered,
                "dropped": c.ticks_dropped,
                "dropped_pct": round(100.0 * c.ticks_dropped / expected, 3) if expected else 0.0,
                "fps": round(c.frames_rendered / media_s, 3) if media_s else 0.0,
            },
            "ticks": {
                "total": c.ticks,
                "late": c.ticks_late,
                "perception_runs": c.perception_runs,
                "perception_skipped_late": c.perception_skipped_late,
                "max_lateness_ms": round(c.max_lateness_ns / 1e6, 3),
                "lateness_ms": self.lateness_timer.summary_ms(),
                "final_drift_ms": round(self.final_drift_ns / 1e6, 4),
            },
            "tick_ms": self.tick_timer.summary_ms(),
            "stages_ms": {name: t.summary_ms() for name, t in self.timers.items()},
            "camera": {"timeouts": c.camera_timeouts, "errors": c.camera_errors},
            "perception_worker": None if self.perception_worker is None else {
                "runs": self.perception_worker.runs,
                "frames_overwritten": self.perception_worker.frames_overwritten,
                "errors": self.perception_worker.errors,
                "nice": self.perception_worker.nice,
                "token_age_ms": self.token_age_timer.summary_ms(),
            },
            "motion_values_clamped": c.motion_values_clamped,
            "events": [{"pts_s": round(e.pts_ns / 1e9, 3), "kind": e.kind, "detail": e.detail}
                       for e in c.events],
        }


def queue_stats(queues: list[BoundedQueue]) -> dict[str, Any]:
    return {q.name: q.stats() for q in queues}
