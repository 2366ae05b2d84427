"""The tick: exact schedule, late-tick degradation, lost camera, bad motion, no drift."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from edge_avatar.clock import AcceleratedTimeBase, ManualTimeBase, MediaClock
from edge_avatar.frames import CaptureStatus, VideoFrame
from edge_avatar.outputs.audio import VirtualAudioOutput
from edge_avatar.outputs.base import OutputSink
from edge_avatar.runtime.loop import AvatarLoop, TickSchedule


class RecordingSink(OutputSink):
    uri = "test://"

    def __init__(self):
        self.pts = []

    def present(self, frame):
        self.pts.append(frame.pts_ns)

    def close(self):
        return {"frames": len(self.pts)}


class ScriptedCamera:
    """Returns statuses from a script, one per read; OK yields a small grey frame."""

    uri = "test://camera"

    def __init__(self, script):
        self.script = list(script)
        self.reads = 0

    def start(self):
        pass

    def read_latest(self):
        status = self.script[min(self.reads, len(self.script) - 1)]
        self.reads += 1
        if status is CaptureStatus.OK:
            return status, VideoFrame(self.reads, self.reads, np.full((8, 8, 3), 128, np.uint8))
        return status, None

    def close(self):
        pass


class CountingPerception:
    def __init__(self):
        self.calls = 0

    def perceive(self, frame, voice_rms):
        self.calls += 1
        return np.zeros(4, np.float32)


class ZeroPlanner:
    def step(self, pts_ns, token):
        return np.zeros(64, np.float32)


class ConstRenderer:
    def render(self, motion):
        return np.zeros((4, 4, 3), np.uint8)


def make_loop(time_base, *, camera=None, perception=None, planner=None, renderer=None, rate_hz=30.0,
              stride=1, late_ms=8.0):
    speaker = VirtualAudioOutput(time_base, sample_rate_hz=16000)
    speaker.start()
    clock = MediaClock(speaker, time_base)
    sink = RecordingSink()
    loop = AvatarLoop(clock=clock, tick_rate_hz=rate_hz, perception_stride_ticks=stride,
                      late_tick_skip_perception_ms=late_ms, camera=camera, sink=sink,
                      perception=perception, planner=planner or ZeroPlanner(),
                      renderer=renderer or ConstRenderer())
    return loop, sink


@pytest.mark.parametrize("rate_hz", [30.0, 25.0, 29.97, 60.0])
def test_schedule_is_exact_and_invertible(rate_hz):
    schedule = TickSchedule(rate_hz, t0_ns=123)
    ten_minutes = round(600 * rate_hz)
    expected = 123 + ten_minutes * 10**9 * schedule.rate.denominator // schedule.rate.numerator
    assert schedule.due_ns(ten_minutes) == expected
    if rate_hz in (30.0, 25.0, 60.0):
        assert schedule.due_ns(ten_minutes) == 123 + 600 * 10**9  # not one ns of accumulated error
    for k in (0, 1, 7, 1000, ten_minutes):
        assert schedule.index_at(schedule.due_ns(k)) == k
        assert schedule.index_at(schedule.due_ns(k + 1) - 1) == k


@pytest.mark.parametrize("rate_hz", [30.0, 25.0, 29.97, 60.0])
@pytest.mark.parametrize("now_ns", [0, 1, 12_345_678, 537_123_456_789])
def test_a_schedule_starts_on_the_media_frame_grid(rate_hz, now_ns):
    """The first tick is the first frame-grid point at or after now, so pts * rate is a whole slot."""
    from fractions import Fraction

    schedule = TickSchedule.on_frame_grid(rate_hz, now_ns)
    period = Fraction(10**9 * schedule.rate.denominator, schedule.rate.numerator)     # ns, exact
    first = -(-Fraction(now_ns) // period)                  # the first grid index at or after now
    assert first * period - 1 < schedule.t0_ns <= first * period + 1      # that grid point, to the ns
    assert (first - 1) * period < now_ns or now_ns == 0     # and not a later one
    for k in (1, 29, 1000):
        assert abs(schedule.due_ns(k) - (first + k) * period) < 2   # every tick on the grid, within 2 ns


def test_every_tick_presented_on_the_exact_grid():
    loop, sink = make_loop(ManualTimeBase())
    loop.run(duration_s=2.0)
    assert len(sink.pts) == 60
    t0 = loop.schedule.t0_ns
    assert [p - t0 for p in sink.pts] == [k * 10**9 // 30 for k in range(60)]
    report = loop.report()
    assert report["frames"]["dropped"] == 0
    assert report["frames"]["fps"] == pytest.approx(30.0)


def test_stalled_tick_drops_missed_ticks_and_resumes_on_schedule():
    base = ManualTimeBase()

    class StallingRenderer:
        calls = 0

        def render(self, motion):
            StallingRenderer.calls += 1
            if StallingRenderer.calls == 10:
                base.advance_ns(100_000_000)  # tick 9 overruns to 400 ms: ticks 10 and 11 cannot be on time
            return np.zeros((4, 4, 3), np.uint8)

    loop, sink = make_loop(base, renderer=StallingRenderer())
    loop.run(duration_s=1.0)
    report = loop.report()
    assert report["frames"]["dropped"] == 2
    assert report["frames"]["rendered"] == 28
    t0 = loop.schedule.t0_ns
    assert 10 * 10**9 // 30 + t0 not in sink.pts and 12 * 10**9 // 30 + t0 in sink.pts
    t0 = loop.schedule.t0_ns
    grid = {k * 10**9 // 30 for k in range(30)}
    assert all(p - t0 in grid for p in sink.pts)  # resumed on the grid, no drift
    assert sink.pts == sorted(sink.pts)


def test_late_tick_skips_perception_but_still_renders():
    base = ManualTimeBase()

    class SlowPlanner:
        calls = 0

        def step(self, pts_ns, token):
            SlowPlanner.calls += 1
            if SlowPlanner.calls == 5:
                base.advance_ns(45_000_000)  # the next tick starts ~12 ms late (< one period)
            return np.zeros(64, np.float32)

    perception = CountingPerception()
    camera = ScriptedCamera([CaptureStatus.OK])
    loop, sink = make_loop(base, camera=camera, perception=perception, planner=SlowPlanner())
    loop.run(duration_s=1.0)
    report = loop.report()
    assert report["ticks"]["perception_skipped_late"] == 1
    assert report["ticks"]["late"] == 1
    assert perception.calls == 29
    assert report["frames"]["rendered"] == 30 and report["frames"]["dropped"] == 0


def test_perception_stride():
    perception = CountingPerception()
    camera = ScriptedCamera([CaptureStatus.OK])
    loop, _ = make_loop(ManualTimeBase(), camera=camera, perception=perception, stride=3)
    loop.run(duration_s=1.0)
    assert perception.calls == 10
    assert camera.reads == 10                       # the camera is read only on the ticks that perceive
    assert loop.report()["stages_ms"]["capture"]["count"] == 10


def test_without_perception_the_camera_is_read_every_tick():
    camera = ScriptedCamera([CaptureStatus.OK])
    loop, _ = make_loop(ManualTimeBase(), camera=camera, stride=3)
    loop.run(duration_s=1.0)
    assert camera.reads == 30


def test_lost_camera_degrades_reports_and_recovers():
    script = [CaptureStatus.OK] * 5 + [CaptureStatus.ERROR] * 5 + [CaptureStatus.TIMEOUT] * 2 + [CaptureStatus.OK]
    perception = CountingPerception()
    loop, sink = make_loop(ManualTimeBase(), camera=ScriptedCamera(script), perception=perception)
    loop.run(duration_s=1.0)
    report = loop.report()
    kinds = [e["kind"] for e in report["events"]]
    assert kinds == ["camera_lost", "camera_recovered"]
    assert report["camera"] == {"timeouts": 2, "errors": 5}
    assert len(sink.pts) == 30  # the face never stopped
    assert perception.calls == 5 + 18


def test_nan_and_out_of_range_motion_is_clamped_and_counted():
    class WildPlanner:
        def step(self, pts_ns, token):
            motion = np.zeros(64, np.float32)
            motion[0] = np.nan
            motion[24] = 7.0     # jawOpen far out of range
            motion[52] = 400.0   # head yaw in degrees
            return motion

    seen = []

    class CheckingRenderer:
        def render(self, motion):
            seen.append(motion.copy())
            return np.zeros((4, 4, 3), np.uint8)

    loop, _ = make_loop(ManualTimeBase(), planner=WildPlanner(), renderer=CheckingRenderer())
    loop.run(duration_s=0.2)
    assert loop.report()["motion_values_clamped"] == 3 * len(seen)
    assert all(np.isfinite(m).all() and m[24] == 1.0 and m[52] == 45.0 for m in seen)


def test_no_drift_over_simulated_minute_with_real_work():
    loop, sink = make_loop(AcceleratedTimeBase())
    loop.run(duration_s=60.0)
    report = loop.report()
    assert report["frames"]["rendered"] == 1800
    assert report["frames"]["dropped"] == 0
    assert abs(report["ticks"]["final_drift_ms"]) < 1.0
    assert sink.pts[-1] - loop.schedule.t0_ns == 1799 * 10**9 // 30


def test_stop_ends_the_loop_promptly():
    base = ManualTimeBase()
    loop, sink = make_loop(base)

    class StoppingRenderer:
        calls = 0

        def render(self, motion):
            StoppingRenderer.calls += 1
            if StoppingRenderer.calls == 12:
                loop.stop()
            return np.zeros((4, 4, 3), np.uint8)

    loop.renderer = StoppingRenderer()
    loop.run(duration_s=None)
    assert len(sink.pts) == 12


def test_perception_worker_keeps_the_tick_on_time_and_uses_the_newest_token():
    import time

    from edge_avatar.clock import RealTimeBase

    class SlowPerception:
        calls = 0

        def perceive(self, frame, voice_rms):
            SlowPerception.calls += 1
            time.sleep(0.08)  # 80 ms: far longer than a 33 ms tick
            return np.full(4, float(frame.seq), np.float32)

    tokens = []

    class RecordingPlanner:
        def step(self, pts_ns, token):
            tokens.append(None if token is None else float(token[0]))
            return np.zeros(64, np.float32)

    base = RealTimeBase()
    speaker = VirtualAudioOutput(base, sample_rate_hz=16000)
    speaker.start()
    clock = MediaClock(speaker, base)
    loop = AvatarLoop(clock=clock, tick_rate_hz=30.0, perception_stride_ticks=1, late_tick_skip_perception_ms=8.0,
                      camera=ScriptedCamera([CaptureStatus.OK]), sink=RecordingSink(),
                      perception=SlowPerception(), planner=RecordingPlanner(), renderer=ConstRenderer(),
                      perception_mode="worker")
    loop.run(duration_s=1.0)
    report = loop.report()
    assert report["frames"]["dropped"] == 0  # the tick never waited for perception
    worker = report["perception_worker"]
    assert 5 <= worker["runs"] <= 14 and worker["frames_overwritten"] > 5
    seen = [t for t in tokens if t is not None]
    assert seen and seen == sorted(seen)  # tokens only move forward
    assert worker["token_age_ms"]["p50"] > 30


def test_perception_worker_reads_the_camera_off_the_tick_and_a_lost_camera_clears_the_token():
    import threading

    from edge_avatar.clock import RealTimeBase

    tick_thread = threading.get_ident()
    read_threads = set()

    class ThreadNotingCamera(ScriptedCamera):
        def read_latest(self):
            read_threads.add(threading.get_ident())
            return super().read_latest()

    tokens = []

    class RecordingPlanner:
        def step(self, pts_ns, token):
            tokens.append(None if token is None else float(token[0]))
            return np.zeros(64, np.float32)

    class SeqPerception:
        def perceive(self, frame, voice_rms):
            return np.full(4, float(frame.seq), np.float32)

    base = RealTimeBase()
    speaker = VirtualAudioOutput(base, sample_rate_hz=16000)
    speaker.start()
    camera = ThreadNotingCamera([CaptureStatus.OK] * 8 + [CaptureStatus.ERROR])
    loop = AvatarLoop(clock=MediaClock(speaker, base), tick_rate_hz=30.0, perception_stride_ticks=2,
                      late_tick_skip_perception_ms=8.0, camera=camera, sink=RecordingSink(),
                      perception=SeqPerception(), planner=RecordingPlanner(), renderer=ConstRenderer(),
                      perception_mode="worker", perception_worker_nice=3)
    loop.run(duration_s=2.0)
    report = loop.report()
    assert read_threads and tick_thread not in read_threads       # the tick never touched the camera
    assert 9 <= camera.reads <= 31                                 # read on stride ticks only (30 in 2 s)
    assert [e["kind"] for e in report["events"]] == ["camera_lost"]
    seen = [t for t in tokens if t is not None]
    assert seen and tokens[-1] is None                             # tokens, then cleared once the camera was lost
    worker = report["perception_worker"]
    assert worker["runs"] == 8 and report["stages_ms"]["capture"]["count"] >= 9
    if sys.platform.startswith("linux"):                          # below the tick's priority (per thread)
        assert worker["nice"] == os.getpriority(os.PRIO_PROCESS, 0) + 3


def test_a_camera_that_ends_on_the_worker_leaves_the_avatar_running():
    from edge_avatar.clock import RealTimeBase

    base = RealTimeBase()
    speaker = VirtualAudioOutput(base, sample_rate_hz=16000)
    speaker.start()
    camera = ScriptedCamera([CaptureStatus.OK] * 3 + [CaptureStatus.EOS])
    perception = CountingPerception()
    sink = RecordingSink()
    loop = AvatarLoop(clock=MediaClock(speaker, base), tick_rate_hz=30.0, perception_stride_ticks=1,
                      late_tick_skip_perception_ms=8.0, camera=camera, sink=sink, perception=perception,
                      planner=ZeroPlanner(), renderer=ConstRenderer(), perception_mode="worker")
    loop.run(duration_s=1.0)
    report = loop.report()
    assert loop.camera is None and camera.reads == 4                # no read after the end
    assert [e["kind"] for e in report["events"]] == ["camera_eos"]
    assert perception.calls == 3 and len(sink.pts) >= 25            # the face went on without a camera
