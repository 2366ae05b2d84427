"""The scripted visitor: file format, frames, microphone track, sources on the media clock, caching.

Everything runs on the real bundled demo (a real face photo, espeak-ng speech
and a real recording) or on small scenarios written into tmp_path; time is a
manual media clock, so a 43 s scenario is checked in well under a second of
wall time per test.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
import wave

import numpy as np
import pytest
import yaml

from edge_avatar.clock import ManualTimeBase, MediaClock, RealTimeBase
from edge_avatar.config import CameraConfig, MicrophoneConfig
from edge_avatar.frames import CaptureStatus, samples_to_ns
from edge_avatar.scenario import ScenarioError, bundled_scenarios, load_scenario
from edge_avatar.scenario import audio as scenario_audio
from edge_avatar.scenario import format as scenario_format
from edge_avatar.scenario.audio import frame_levels_db
from edge_avatar.scenario.format import resolve_ref
from edge_avatar.scenario.sources import ScenarioCamera, ScenarioMicrophone

requires_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                     reason="espeak-ng not installed (apt-get install espeak-ng; `make test` does)")
requires_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                     reason="ffmpeg not installed (apt-get install ffmpeg; `make test` does)")

W, H = 640, 480
RATE = 16000


class FakeSpeaker:
    """A speaker position a test sets by hand (the media clock reads it)."""

    sample_rate_hz = RATE

    def __init__(self) -> None:
        self.position = 0

    def position_samples(self) -> int:
        return self.position


class ManualClock:
    """A MediaClock on a manual time base; ``set_s`` moves media time."""

    def __init__(self) -> None:
        self.speaker = FakeSpeaker()
        self.clock = MediaClock(self.speaker, ManualTimeBase())

    def set_s(self, t_s: float) -> None:
        self.speaker.position = int(round(t_s * RATE))

    def set_ns(self, t_ns: int) -> None:
        # The smallest sample position whose time is >= t_ns.
        self.speaker.position = -(-t_ns * RATE // 1_000_000_000)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("scenario-cache")


@pytest.fixture(scope="module")
def demo(cache_dir):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    return load_scenario("demo", cache_dir=cache_dir)


def _small_scenario(**overrides) -> dict:
    """A 4 s scenario: the real face walks from 3 m to 0.8 m, says one thing, leaves by 3.6 s."""
    data = {
        "version": 1,
        "name": "small",
        "duration_s": 4.0,
        "seed": 3,
        "background": {"solid_rgb": [40, 60, 80]},
        "visitor": {
            "image": "package://skimage/data/astronaut.png",
            "face_box_px": [183, 72, 84, 90],
            "crop_px": [30, 0, 400, 512],
            "sway": 0.0,
            "keyframes": [
                {"t_s": 0.0, "x_m": 0.0, "distance_m": 3.0},
                {"t_s": 1.5, "x_m": 0.0, "distance_m": 0.8},
                {"t_s": 2.5, "x_m": 0.0, "distance_m": 0.8},
                {"t_s": 3.6, "x_m": 4.0, "distance_m": 2.5},
            ],
        },
        "speech": [{"start_s": 1.6, "say": "Hello there."}],
    }
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        last = parts[-1]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


_DELETE = object()


def _write(tmp_path, data, name="scenario.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _non_background_bbox(frame: np.ndarray, background: np.ndarray, threshold: int = 24):
    diff = np.abs(frame.astype(np.int16) - background.astype(np.int16)).max(axis=2)
    ys, xs = np.nonzero(diff > threshold)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# --------------------------------------------------------------------------- the demo


def test_demo_is_bundled_and_follows_the_hospital_script(demo):
    assert "demo" in bundled_scenarios()
    assert demo.name == "demo" and 40.0 <= demo.duration_s <= 45.0
    truth = demo.ground_truth()
    texts = [u.text for u in truth.utterances]
    assert texts[0] == "Hello! Where is the cardiology department?"
    assert texts[-1] == "Thank you, goodbye!"
    assert [u.kind for u in truth.utterances] == ["say", "say", "wav", "say"]
    real = truth.utterances[2]
    assert real.text == "It was the best of times, it was the worst of times."
    assert 3.0 < real.duration_s < 3.6   # 1.20-4.54 s of two_cities.wav
    # The visitor has walked up (about 3.6 m -> 0.8 m) before speaking, is engaged while talking ...
    assert truth.visitor_at(0.0).distance_m > 3.0
    for u in truth.utterances:
        visitor = truth.visitor_at(u.start_s)
        assert visitor.distance_m == pytest.approx(0.8, abs=0.06) and visitor.face_in_frame
    # ... leaves 6-8 s after each question for the avatar's answer, except the barge-in ...
    gaps = [b.start_s - a.end_s for a, b in zip(truth.utterances, truth.utterances[1:])]
    assert gaps[0] < 6.0, "the follow-up interrupts the avatar's first answer"
    assert all(6.0 <= g <= 9.0 for g in gaps[1:])
    # ... and is gone at the end.
    assert not truth.visitor_at(demo.duration_s - 0.5).face_visible
    assert truth.utterance_at(real.start_s + 1.0) == real and truth.utterance_at(real.end_s + 1.0) is None


def test_demo_references_are_found_without_importing_the_packages():
    already = {m: m in sys.modules for m in ("skimage", "moonshine_voice")}
    face = resolve_ref("package://skimage/data/astronaut.png", base_dir=scenario_format.Path("."))
    speech = resolve_ref("package://moonshine_voice/assets/two_cities.wav", base_dir=scenario_format.Path("."))
    assert face.is_file() and speech.is_file()
    for module, was_imported in already.items():
        assert (module in sys.modules) == was_imported


def test_face_size_follows_the_pinhole_model(demo):
    truth = demo.ground_truth()
    focal_px = demo.focal_length_px(W)
    assert focal_px == pytest.approx((W / 2) / np.tan(np.radians(30)), rel=1e-9)
    for t_s in (0.0, 3.0, 8.0):
        visitor = truth.visitor_at(t_s, W, H)
        expected_px = focal_px * 0.15 / visitor.distance_m
        # Head sway and turning (yaw up to 25 degrees) change the projected width a little.
        assert visitor.face_width_px == pytest.approx(expected_px, rel=0.12)


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("overrides, key_path, words", [
    ({"colour": "blue"}, "colour", "unknown key"),
    ({"visitor.keyframes.0.speed_m_s": 1.0}, "visitor.keyframes[0].speed_m_s", "unknown key"),
    ({"duration_s": _DELETE}, "duration_s", "missing"),
    ({"visitor.face_box_px": _DELETE}, "visitor.face_box_px", "missing"),
    ({"speech.0.start_s": -1.0}, "speech[0].start_s", ">= 0"),
    ({"visitor.keyframes.1.t_s": -0.5}, "visitor.keyframes[1].t_s", ">= 0"),
    ({"visitor.keyframes.2.t_s": 1.0}, "visitor.keyframes[2].t_s", "time order"),
    ({"version": 2}, "version", "version 1"),
    ({"name": "Demo Visitor"}, "name", "lower-case"),
    ({"background": {"solid_rgb": [0, 0, 300]}}, "background.solid_rgb", "0..255"),
    ({"speech": [{"start_s": 1.0, "say": "Hi", "wav": "x.wav", "text": "Hi"}]}, "speech[0]", "exactly one"),
    ({"speech": [{"start_s": 1.0, "wav": "package://moonshine_voice/assets/two_cities.wav"}]},
     "speech[0].text", "true transcript"),
    ({"speech": [{"start_s": 1.0, "wav": "package://moonshine_voice/assets/two_cities.wav",
                  "clip_s": [2.0, 1.0], "text": "x"}]}, "speech[0].clip_s", "start < end"),
    ({"visitor.image": "package://no_such_package_xyz/face.png"}, "visitor.image",
     "pip install no-such-package-xyz"),
    ({"visitor.image": "faces/missing.png"}, "visitor.image", "not found"),
    ({"visitor.image": "package://skimage/data/no_such_face.png"}, "visitor.image", "no file"),
])
def test_bad_scenario_files_name_the_file_and_the_key(tmp_path, overrides, key_path, words):
    path = _write(tmp_path, _small_scenario(**overrides))
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(path), cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert str(path) in message and key_path in message and words in message, message
    assert info.value.key_path == key_path and isinstance(info.value, ValueError)


@requires_espeak
def test_overlapping_utterances_are_refused_with_the_measured_end(tmp_path):
    speech = [{"start_s": 0.5, "say": "Where is the cardiology department?"}, {"start_s": 1.0, "say": "Sorry?"}]
    path = _write(tmp_path, _small_scenario(speech=speech))
    with pytest.raises(ScenarioError, match=r"speech\[1\]\.start_s: .*overlaps speech\[0\]") as info:
        load_scenario(str(path), cache_dir=tmp_path / "cache")
    assert str(path) in str(info.value)


@requires_espeak
def test_speech_running_past_the_end_is_refused(tmp_path):
    path = _write(tmp_path, _small_scenario(**{"speech.0.start_s": 3.8}))
    with pytest.raises(ScenarioError, match=r"speech\[0\]\.start_s: .*after duration_s"):
        load_scenario(str(path), cache_dir=tmp_path / "cache")


def test_missing_known_package_names_the_pinned_pip_command(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(scenario_format.importlib.util, "find_spec",
                        lambda name, *a: None if name == "moonshine_voice" else real_find_spec(name, *a))
    speech = [{"start_s": 1.0, "wav": "package://moonshine_voice/assets/two_cities.wav", "text": "x"}]
    path = _write(tmp_path, _small_scenario(speech=speech))
    with pytest.raises(ScenarioError, match=r"speech\[0\]\.wav: .*pip install --no-deps moonshine-voice==0\.1\.5"):
        load_scenario(str(path), cache_dir=tmp_path / "cache")


def test_unknown_bundled_name_and_broken_yaml(tmp_path):
    with pytest.raises(ScenarioError, match="no bundled scenario named 'lobby'.*demo"):
        load_scenario("scenario://lobby")
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\nname: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"broken\.yaml: line \d+, column \d+: not valid YAML"):
        load_scenario(str(path))


def test_face_box_outside_the_image_is_refused(tmp_path):
    path = _write(tmp_path, _small_scenario(**{"visitor.crop_px": _DELETE, "visitor.face_box_px": [480, 10, 80, 90],
                                               "speech": []}))
    with pytest.raises(ScenarioError, match=r"visitor\.face_box_px: .*outside the 512x512 image"):
        load_scenario(str(path), cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------- camera


def test_camera_frames_show_the_visitor_approach_and_leave(demo):
    time_ctl = ManualClock()
    camera = ScenarioCamera(demo, time_ctl.clock, CameraConfig(width_px=W, height_px=H, fps=30.0))
    camera.start()
    background = demo.background(W, H)
    sizes = []
    for t_s in (0.0, 1.5, 3.0, 5.5):    # no bystander before 17 s
        time_ctl.set_s(t_s)
        status, frame = camera.read_latest()
        assert status is CaptureStatus.OK and frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
        box = _non_background_bbox(frame.image, background)
        assert box is not None
        face = demo.ground_truth().visitor_at(t_s, W, H).face_box_px
        assert box[0] <= face[0] + 2 and box[1] <= face[1] + 2 and box[2] >= face[2] - 2   # face inside the person
        sizes.append((box[2] - box[0], box[3] - box[1]))
    widths = [s[0] for s in sizes]
    heights = [s[1] for s in sizes]
    assert widths == sorted(widths) and heights == sorted(heights), sizes
    assert widths[-1] > 3 * widths[0]   # 3.6 m -> 0.8 m
    time_ctl.set_s(demo.duration_s - 0.5)   # after the visitor left (and the bystander too)
    status, frame = camera.read_latest()
    assert status is CaptureStatus.OK
    assert _non_background_bbox(frame.image, background, threshold=0) is None
    camera.close()


def test_camera_paces_frames_on_the_media_clock(demo):
    time_ctl = ManualClock()
    camera = ScenarioCamera(demo, time_ctl.clock, CameraConfig(width_px=320, height_px=240, fps=30.0))
    assert camera.read_latest() == (CaptureStatus.ERROR, None)   # not started
    camera.start()
    status, first = camera.read_latest()
    assert status is CaptureStatus.OK and first.seq == 0 and first.pts_ns == 0
    assert first.image.shape == (240, 320, 3) and first.source == "scenario://demo"
    assert camera.read_latest() == (CaptureStatus.TIMEOUT, None)   # same frame period
    time_ctl.speaker.position = 533   # 33.3125 ms: the last sample before frame 1 (33.333 ms)
    assert camera.read_latest()[0] is CaptureStatus.TIMEOUT
    time_ctl.speaker.position = 534
    status, second = camera.read_latest()
    assert status is CaptureStatus.OK and second.seq == 1 and second.pts_ns == 33_333_333
    time_ctl.set_s(0.2)   # frames 2..5 pass unread: latest wins
    status, latest = camera.read_latest()
    assert latest.seq == 6 and latest.pts_ns == 200_000_000
    assert camera.stats()["frames_captured"] == 3 and camera.stats()["frames_replaced"] == 4
    time_ctl.set_s(demo.duration_s)
    assert camera.read_latest() == (CaptureStatus.EOS, None)


def test_frames_render_in_a_few_milliseconds(demo):
    demo.render_frame(8.0, W, H)   # warm the background cache
    began = time.perf_counter()
    for i in range(20):
        demo.render_frame(6.0 + 0.1 * i, W, H)   # the visitor at 0.8 m: the largest warp
    per_frame_ms = (time.perf_counter() - began) / 20 * 1e3
    assert per_frame_ms < 25.0, f"{per_frame_ms:.1f} ms per 640x480 frame"


# --------------------------------------------------------------------------- microphone


def test_mic_track_has_speech_exactly_in_the_utterance_windows(demo):
    samples = demo.audio()
    assert samples.dtype == np.float32 and len(samples) == round(demo.duration_s * RATE)
    levels_db = frame_levels_db(samples, RATE)   # 10 ms frames
    times_s = np.arange(len(levels_db)) * 0.010
    tolerance_s = 0.050
    utterances = demo.ground_truth().utterances
    near = np.zeros(len(levels_db), dtype=bool)
    for u in utterances:
        near |= (times_s + 0.010 > u.start_s - tolerance_s) & (times_s < u.end_s + tolerance_s)
        loud = np.nonzero((levels_db > -45.0) & (times_s + 0.010 > u.start_s - tolerance_s)
                          & (times_s < u.end_s + tolerance_s))[0]
        assert len(loud) > 0, u
        assert abs(times_s[loud[0]] - u.start_s) <= tolerance_s, (u, times_s[loud[0]])
        assert abs(times_s[loud[-1]] + 0.010 - u.end_s) <= tolerance_s, (u, times_s[loud[-1]])
        inside = levels_db[(times_s >= u.start_s) & (times_s + 0.010 <= u.end_s)]
        assert np.mean(10 ** (inside / 10)) > 10 ** (-30 / 10), "speech at a conversational level"
    # Near-silence elsewhere: only the stated room noise (-62 dBFS RMS).
    outside = levels_db[~near]
    assert outside.max() < -52.0
    assert 10 * np.log10(np.mean(10 ** (outside / 10))) == pytest.approx(-62.0, abs=1.5)


def test_mic_chunks_are_sample_exact_and_end_with_eos(demo):
    time_ctl = ManualClock()
    mic = ScenarioMicrophone(demo, time_ctl.clock, MicrophoneConfig(sample_rate_hz=RATE, chunk_ms=10))
    mic.start()
    time_ctl.set_s(demo.duration_s)
    chunks = []
    while True:
        status, chunk = mic.read(timeout_ms=0)
        if status is not CaptureStatus.OK:
            break
        chunks.append(chunk)
    assert status is CaptureStatus.EOS
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert all(c.pts_ns == c.seq * 160 * 1_000_000_000 // RATE and len(c.samples) == 160 for c in chunks)
    assert np.array_equal(np.concatenate([c.samples for c in chunks]), demo.audio()[:len(chunks) * 160])
    assert len(chunks) == len(demo.audio()) // 160
    assert mic.stats()["chunks_captured"] == len(chunks)


@requires_espeak
def test_mic_waits_for_media_time_and_does_not_block_a_stopped_clock(tmp_path):
    scenario = load_scenario(str(_write(tmp_path, _small_scenario())), cache_dir=tmp_path / "cache")
    time_ctl = ManualClock()
    config = MicrophoneConfig(sample_rate_hz=44100, chunk_ms=10)   # 441 samples: pts are not whole ms
    mic = ScenarioMicrophone(scenario, time_ctl.clock, config)
    mic.start()
    began = time.perf_counter()
    assert mic.read(timeout_ms=200) == (CaptureStatus.TIMEOUT, None)   # time stands still
    assert time.perf_counter() - began < 0.1
    time_ctl.speaker.position = 479   # 29.94 ms on the 16 kHz speaker; chunk 2 ends at 30 ms
    assert [mic.read(0)[1].seq for _ in range(2)] == [0, 1]
    assert mic.read(0)[0] is CaptureStatus.TIMEOUT
    time_ctl.set_ns(samples_to_ns(441 * 3, 44100))
    assert time_ctl.clock.now_ns() == 30_000_000
    status, chunk = mic.read(0)
    assert status is CaptureStatus.OK and chunk.seq == 2 and chunk.pts_ns == 2 * 441 * 10**9 // 44100
    assert chunk.sample_rate_hz == 44100 and len(chunk.samples) == 441
    mic.close()
    assert mic.read(0)[0] is CaptureStatus.ERROR


@requires_espeak
def test_mic_blocks_until_the_chunk_is_due_on_a_real_clock(tmp_path):
    scenario = load_scenario(str(_write(tmp_path, _small_scenario())), cache_dir=tmp_path / "cache")

    class WallSpeaker:
        sample_rate_hz = RATE
        origin_ns = time.monotonic_ns()

        def position_samples(self) -> int:
            return (time.monotonic_ns() - self.origin_ns) * RATE // 1_000_000_000

    clock = MediaClock(WallSpeaker(), RealTimeBase())
    mic = ScenarioMicrophone(scenario, clock, MicrophoneConfig(sample_rate_hz=RATE, chunk_ms=20), start_ns=0)
    mic.start()
    for expected_seq in range(3):
        status, chunk = mic.read(timeout_ms=500)
        assert status is CaptureStatus.OK and chunk.seq == expected_seq
        assert clock.now_ns() >= chunk.pts_ns + 20_000_000   # never delivered before it was "recorded"


# --------------------------------------------------------------------------- determinism and cache


@requires_espeak
def test_two_loads_give_identical_audio_and_frames(tmp_path, demo):
    again = load_scenario("demo", cache_dir=tmp_path / "fresh-cache")   # built from scratch, not from the cache
    assert not again.track.from_cache
    assert again.audio().tobytes() == demo.audio().tobytes()
    assert again.ground_truth().utterances == demo.ground_truth().utterances
    for t_s in (0.7, 4.2, 11.9, 24.5, 38.0):
        assert np.array_equal(again.render_frame(t_s, W, H), demo.render_frame(t_s, W, H))


@requires_espeak
def test_second_load_comes_from_the_cache_without_running_espeak(tmp_path, monkeypatch):
    path = _write(tmp_path, _small_scenario())
    first = load_scenario(str(path), cache_dir=tmp_path / "cache")
    assert not first.track.from_cache
    assert first.track.cache_path.parent == tmp_path / "cache" and first.track.cache_path.name.startswith("small-")

    def no_espeak(*args, **kwargs):
        raise AssertionError("espeak-ng ran on a cached load")

    monkeypatch.setattr(scenario_audio, "synthesize_espeak", no_espeak)
    began = time.perf_counter()
    second = load_scenario(str(path), cache_dir=tmp_path / "cache")
    assert time.perf_counter() - began < 1.0
    assert second.track.from_cache and second.audio().tobytes() == first.audio().tobytes()
    # Changing what is said changes the key: that build must synthesize again.
    _write(tmp_path, _small_scenario(**{"speech.0.say": "Good morning."}))
    with pytest.raises(AssertionError, match="espeak-ng ran"):
        load_scenario(str(path), cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------- the file form


@requires_ffmpeg
def test_file_form_plays_an_existing_clip(tmp_path):
    video, sound = tmp_path / "clip.mp4", tmp_path / "clip.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
                    "-t", "2", "-pix_fmt", "yuv420p", str(video)], check=True)
    with wave.open(str(sound), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * RATE) / RATE)
        w.writeframes((tone * 32767).astype("<i2").tobytes())
    path = _write(tmp_path, {"version": 1, "name": "clip", "file": {"video": "clip.mp4", "audio": "clip.wav"},
                             "speech": [{"start_s": 0.5, "end_s": 1.5, "text": "a tone"}]})
    scenario = load_scenario(str(path), cache_dir=tmp_path / "cache")
    assert scenario.duration_s == pytest.approx(2.0)
    assert scenario.ground_truth().utterances[0].text == "a tone"
    time_ctl = ManualClock()
    camera = ScenarioCamera(scenario, time_ctl.clock, CameraConfig(width_px=W, height_px=H, fps=10.0))
    camera.start()
    frames = []
    for t_s in (0.0, 0.5, 1.0):
        time_ctl.set_s(t_s)
        status, frame = camera.read_latest()
        assert status is CaptureStatus.OK and frame.image.shape == (H, W, 3)
        frames.append(frame.image)
    assert not np.array_equal(frames[0], frames[2])   # the test pattern moves
    mic = ScenarioMicrophone(scenario, time_ctl.clock, MicrophoneConfig(sample_rate_hz=RATE, chunk_ms=10))
    mic.start()
    status, chunk = mic.read(0)
    assert status is CaptureStatus.OK and np.sqrt(np.mean(chunk.samples**2)) > 0.1
