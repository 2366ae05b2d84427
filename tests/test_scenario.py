"""The scripted visitor: file format, frames, moving lips, microphone track and echo, sources on the media clock.

Everything runs on the real bundled demo (a real face photo, espeak-ng speech
and a real recording) or on small scenarios written into tmp_path; time is a
manual media clock, so a 38 s scenario is checked in well under a second of
wall time per test. The visitor's moving mouth is checked with the real
perception models (skipped, with the reason, where they are not built), and
the echo with a tone played through the real virtual speaker.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import threading
import time
import wave

import numpy as np
import pytest
import yaml

from edge_avatar.clock import ManualTimeBase, MediaClock, RealTimeBase
from edge_avatar.config import CameraConfig, MicrophoneConfig
from edge_avatar.frames import CaptureStatus, samples_to_ns
from edge_avatar.outputs.audio import VirtualAudioOutput
from edge_avatar.scenario import ScenarioError, bundled_scenarios, load_scenario
from edge_avatar.scenario import audio as scenario_audio
from edge_avatar.scenario import format as scenario_format
from edge_avatar.scenario.audio import frame_levels_db
from edge_avatar.scenario.echo import room_impulse_response
from edge_avatar.scenario.format import Echo, resolve_ref
from edge_avatar.scenario.sources import ScenarioCamera, ScenarioMicrophone

requires_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                     reason="espeak-ng not installed (apt-get install espeak-ng; `make test` does)")
requires_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                     reason="ffmpeg not installed (apt-get install ffmpeg; `make test` does)")

W, H = 640, 480
RATE = 16000
# Where the astronaut's lips part, measured with `edge-avatar perceive --landmarks` (as in demo.yaml).
ASTRONAUT_MOUTH = {"center_px": [223.5, 149.6], "width_px": 41.9, "corner_rise_px": 9.5}


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
    """Issue 10: walk up, greeted, ask for a department, interrupt once, thank, leave; a bystander talks."""
    assert "demo" in bundled_scenarios()
    assert demo.name == "demo" and 35.0 <= demo.duration_s <= 40.0
    truth = demo.ground_truth()
    question, follow_up, bystander, thanks = truth.utterances
    assert [u.text for u in truth.addressed] == ["Where is the cardiology department?",
                                                 "So is it on the second floor?", "Thank you!"]
    assert [(u.who, u.addressed) for u in truth.utterances] == [
        ("visitor", True), ("visitor", True), ("bystanders[0]", False), ("visitor", True)]
    assert [u.kind for u in truth.utterances] == ["say", "say", "wav", "say"]
    # The real recording is the bystander's background talk, with its true words.
    assert bystander.text == "It was the best of times, it was the worst of times."
    assert 3.0 < bystander.duration_s < 3.6   # 1.20-4.54 s of two_cities.wav
    # She walks up from about 3.6 m and is within engagement range (~1.2 m) by 4 s; the avatar's
    # 2.8 s greeting (starting 3.1-3.9 s) is over before she asks.
    assert truth.visitor_at(0.0).distance_m > 3.0
    assert truth.visitor_at(4.0).distance_m < 1.3
    assert question.start_s >= 3.9 + 2.8 + 0.3
    for u in truth.addressed:
        visitor = truth.visitor_at(u.start_s)
        assert visitor.distance_m == pytest.approx(0.8, abs=0.06) and visitor.face_in_frame
    # The avatar's answer (9 s) starts 0.3-1 s after the question: the follow-up comes ~2 s into it ...
    assert 2.5 <= follow_up.start_s - question.end_s <= 3.5
    # ... the bystander talks while the avatar answers the follow-up, visible at the back ...
    assert follow_up.end_s + 1.5 <= bystander.start_s and bystander.end_s + 4.0 <= thanks.start_s
    for t_s in (bystander.start_s, bystander.end_s):
        (person,) = truth.bystanders_at(t_s)
        assert person.distance_m == pytest.approx(4.5) and person.face_visible
    # ... the thanks waits for the end of that answer, and she is gone at the end.
    assert thanks.start_s - follow_up.end_s >= 10.0
    assert not truth.visitor_at(demo.duration_s - 0.5).face_visible
    assert truth.utterance_at(bystander.start_s + 1.0) == bystander
    assert truth.utterance_at(bystander.end_s + 1.0) is None


def test_visitor_mouth_moves_with_her_own_speech_only(demo):
    """Open at her syllables (0.7-1 of the full drop while talking), closed in pauses and while others talk."""
    truth = demo.ground_truth()
    question, follow_up, bystander, thanks = truth.utterances
    for u in (question, follow_up, thanks):
        samples = [truth.visitor_at(t_s).mouth_open for t_s in np.arange(u.start_s + 0.05, u.end_s - 0.05, 0.01)]
        assert max(samples) > 0.95 and np.median(samples) >= 0.7, u
    pauses = [question.start_s - 0.5, question.end_s + 0.5, follow_up.end_s + 0.5,
              *np.arange(bystander.start_s, bystander.end_s, 0.05), thanks.end_s + 0.5]
    assert all(truth.visitor_at(t_s).mouth_open == 0.0 for t_s in pauses)
    assert truth.bystanders_at(bystander.start_s + 1.0)[0].mouth_open == 0.0   # no `mouth` given for him


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


@pytest.fixture(scope="module")
def perception():
    """The real vision models, as the loop runs them."""
    from edge_avatar.backends.base import BackendUnavailable, ModelLoadError
    from edge_avatar.perception.pipeline import VisionPerception

    try:
        stage = VisionPerception()
    except (ModelLoadError, BackendUnavailable) as exc:
        pytest.skip(f"perception engines unavailable ({exc}); build them with `make engines`")
    yield stage
    stage.close()


def _jaw_open(perception, image: np.ndarray) -> float:
    from edge_avatar.motion import BLENDSHAPE_INDEX

    face = perception.analyze_image(image).active
    assert face is not None, "perception lost the visitor's face"
    return float(face.blendshapes[BLENDSHAPE_INDEX["jawOpen"]])


def test_real_perception_sees_the_mouth_open_at_speech_peaks_and_closed_in_pauses(demo, perception):
    """The point of the moving lips: turn-taking reads jawOpen, and a static photo reads ~0.01 throughout."""
    truth = demo.ground_truth()
    question, follow_up, bystander, thanks = truth.utterances
    series = demo.track.mouth_open["visitor"]   # one value per 10 ms
    for u in (question, follow_up):
        k0, k1 = int(u.start_s * 100), int(u.end_s * 100)
        peak_s = (k0 + int(np.argmax(series[k0:k1])) + 0.5) / 100
        assert truth.visitor_at(peak_s).mouth_open > 0.95
        assert _jaw_open(perception, demo.render_frame(peak_s, W, H)) > 0.2, (u.text, peak_s)
    # Pauses: before she speaks, while the avatar answers, and while the bystander talks.
    for t_s in (question.start_s - 0.7, question.end_s + 1.0, bystander.start_s + 1.5):
        assert truth.visitor_at(t_s).mouth_open == 0.0
        assert _jaw_open(perception, demo.render_frame(t_s, W, H)) < 0.1, t_s


@requires_espeak
def test_the_mouth_opens_only_below_the_lip_line_with_a_dark_inside(tmp_path):
    """Same pose, mouth closed vs open: only the lower face changes, the gap is dark, the eyes are untouched."""
    still = {"visitor.keyframes": [{"t_s": 0.0, "x_m": 0.0, "distance_m": 0.8}, {"t_s": 3.0, "x_m": 0.0,
                                                                                   "distance_m": 0.8}]}
    talking = load_scenario(str(_write(tmp_path, _small_scenario(**{"visitor.mouth": ASTRONAUT_MOUTH, **still}))),
                            cache_dir=tmp_path / "cache")
    photo = load_scenario(str(_write(tmp_path, _small_scenario(**still), name="photo.yaml")),
                          cache_dir=tmp_path / "cache")
    truth = talking.ground_truth()
    (u,) = truth.utterances
    times = np.arange(u.start_s, u.end_s, 0.01)
    open_s = float(times[int(np.argmax([truth.visitor_at(t).mouth_open for t in times]))])
    closed_s = u.start_s - 0.3
    assert truth.visitor_at(closed_s).mouth_open == 0.0 and truth.visitor_at(open_s).mouth_open > 0.95
    closed, opened = talking.render_frame(closed_s, W, H), talking.render_frame(open_s, W, H)
    assert np.array_equal(closed, photo.render_frame(closed_s, W, H))   # a closed mouth is the photo itself
    assert np.array_equal(photo.render_frame(closed_s, W, H), photo.render_frame(open_s, W, H))
    x0, y0, x1, y1 = truth.visitor_at(open_s).face_box_px
    face_h = y1 - y0
    changed = np.abs(opened.astype(np.int16) - closed.astype(np.int16)).max(axis=2) > 8
    ys, xs = np.nonzero(changed)
    assert len(xs) > 200
    margin_px = 0.1 * (x1 - x0)
    assert xs.min() >= x0 - margin_px and xs.max() <= x1 + margin_px      # within the jaw's width
    assert ys.min() >= y0 + 0.6 * face_h and ys.max() <= y1 + 0.6 * face_h  # lips, chin, onto the neck
    luma = lambda img: img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # noqa: E731
    mouth = (slice(int(y0 + 0.6 * face_h), int(y1)), slice(int(x0), int(x1)))
    dark_closed = int((luma(closed)[mouth] < 50).sum())
    dark_open = int((luma(opened)[mouth] < 50).sum())
    assert dark_open > dark_closed + 60, (dark_closed, dark_open)
    # Anti-aliased edges: the gap's border pixels take values between the lip and the dark inside.
    column = luma(opened)[:, int((x0 + x1) / 2)]
    gap = np.nonzero(column[int(y0):int(y1 + 0.3 * face_h)] < 50)[0] + int(y0)
    edge = column[gap.max() + 1]
    assert 50 <= edge <= 0.9 * column[gap.max() + 4], "a hard edge below the gap"


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
    ({"visitor.mouth": {"center_px": [223.5, 149.6]}}, "visitor.mouth.width_px", "missing"),
    ({"visitor.mouth": {"center_px": [40, 149.6], "width_px": 41.9}}, "visitor.mouth.center_px",
     "outside the person's crop_px"),
    ({"visitor.mouth": {"center_px": [223.5], "width_px": 41.9}}, "visitor.mouth.center_px", "[x, y]"),
    ({"room": {"echo": {"level_db": 20}}}, "room.echo.level_db", "<= 6"),
    ({"room": {"echo": {"rt60": 0.3}}}, "room.echo.rt60", "unknown key"),
    ({"room": {"reverb": {}}}, "room.reverb", "unknown key"),
    ({"speech.0.who": "bystanders[0]"}, "speech[0].who", "the scene has visitor"),
    ({"speech.0.who": "the cat"}, "speech[0].who", "'visitor' or 'bystanders[N]'"),
    ({"speech.0.addressed": "yes"}, "speech[0].addressed", "true or false"),
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
    for t_s in (0.0, 1.5, 3.0, 5.5):    # no bystander before 12 s
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
    """Each utterance at its stated level (the visitor at -24 dBFS, louder when interrupting, the bystander at -38)."""
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
        stated_dbfs = demo.spec.speech[u.index].level_dbfs or demo.spec.audio.speech_level_dbfs
        assert 10 * np.log10(np.mean(10 ** (inside / 10))) == pytest.approx(stated_dbfs, abs=2.0), u
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


# --------------------------------------------------------------------------- echo of the avatar's speaker


def _echo_scenario(tmp_path, **echo):
    """A silent 4 s room (noise at -90 dBFS) whose microphone hears the speaker as ``echo`` says."""
    data = _small_scenario(speech=[], room={"echo": {"level_db": -12, "delay_ms": 8, "rt60_s": 0.3, **echo}},
                           audio={"room_noise_dbfs": -90})
    return load_scenario(str(_write(tmp_path, data, name="echo.yaml")), cache_dir=tmp_path / "cache")


def _play_and_record(scenario, signal: np.ndarray, play_at_s: float, speaker_rate_hz: int = 22050,
                     poller: bool = False) -> tuple[np.ndarray, int]:
    """Play ``signal`` on a virtual speaker at ``play_at_s``, record the scenario mic; (mic samples, first sample).

    ``poller``: another thread keeps reading the clock, so the speaker (and its taps) run on it.
    """
    time_base = ManualTimeBase()
    speaker = VirtualAudioOutput(time_base, sample_rate_hz=speaker_rate_hz, block_ms=10)
    clock = MediaClock(speaker, time_base)
    mic = ScenarioMicrophone(scenario, clock, MicrophoneConfig(sample_rate_hz=RATE, chunk_ms=10))
    assert mic.attach_speaker(speaker) and mic.echo_attached
    speaker.start()
    mic.start()
    stop = threading.Event()
    thread = threading.Thread(target=lambda: [clock.now_ns() for _ in iter(stop.is_set, True)], daemon=True)
    if poller:
        thread.start()
    time_base.advance_ns(int(play_at_s * 1e9))
    clock.now_ns()
    first = speaker.write(signal)
    chunks = []
    while True:
        time_base.advance_ns(10_000_000)
        status, chunk = mic.read(0)
        while status is CaptureStatus.OK:
            chunks.append(chunk)
            status, chunk = mic.read(0)
        if status is CaptureStatus.EOS:
            break
    stop.set()
    if poller:
        thread.join(timeout=5)
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert mic.stats()["echo"]["chunks_with_echo"] > 0
    return np.concatenate([c.samples for c in chunks]), first


def test_a_tone_played_through_the_speaker_comes_back_into_the_mic_delayed_and_attenuated(tmp_path):
    scenario = _echo_scenario(tmp_path)
    speaker_hz, tone_hz = 22050, 500.0
    tone = (0.5 * np.sin(2 * np.pi * tone_hz * np.arange(int(0.5 * speaker_hz)) / speaker_hz)).astype(np.float32)
    recorded, first_sample = _play_and_record(scenario, tone, play_at_s=0.2, speaker_rate_hz=speaker_hz)
    played_s = first_sample / speaker_hz                      # on the master clock (210 ms: the next block)
    onset = int(np.nonzero(np.abs(recorded) > 2e-3)[0][0])
    assert onset / RATE == pytest.approx(played_s + 0.008, abs=0.0015)   # delay_ms: 8
    assert np.abs(recorded[:onset - 32]).max() < 1e-3                  # nothing before it but the room
    # Steady state: the tone at the room's gain for 500 Hz, which is near the stated -12 dB.
    h = room_impulse_response(scenario.spec.room.echo, RATE, scenario.spec.seed)
    gain_db = 20 * np.log10(abs(np.sum(h * np.exp(-2j * np.pi * tone_hz * np.arange(len(h)) / RATE))))
    steady = recorded[int((played_s + 0.1) * RATE):int((played_s + 0.45) * RATE)]
    level_db = 20 * np.log10(np.sqrt(np.mean(steady ** 2)) / np.sqrt(np.mean(tone ** 2)))
    assert level_db == pytest.approx(gain_db, abs=0.3)
    assert level_db == pytest.approx(-12.0, abs=4.0)
    # After the tone stops, the room rings down (rt60 0.3 s: 60 dB in 0.3 s) and is silent again.
    end_s = played_s + len(tone) / speaker_hz + 0.008
    tail = recorded[int((end_s + 0.35) * RATE):int((end_s + 0.45) * RATE)]
    assert np.sqrt(np.mean(tail ** 2)) < 1e-3 * np.sqrt(np.mean(steady ** 2))
    # The mic still carries the scenario's own track underneath, sample for sample.
    assert np.max(np.abs(recorded[:onset - 32] - scenario.audio()[:onset - 32])) < 1e-7


def test_echo_is_the_same_whichever_thread_runs_the_speaker(tmp_path):
    """Taps run on the speaker's thread; the echo depends on sample indices only, never on who plays."""
    scenario = _echo_scenario(tmp_path, delay_ms=20)
    rng = np.random.default_rng(5)
    burst = (0.3 * rng.standard_normal(int(0.4 * 22050))).astype(np.float32)
    alone, first_a = _play_and_record(scenario, burst, play_at_s=0.3)
    threaded, first_b = _play_and_record(scenario, burst, play_at_s=0.3, poller=True)
    assert first_a == first_b and np.array_equal(alone, threaded)
    # Broadband: the echo's energy is the stated level relative to what was played (band-limited to 8 kHz).
    from edge_avatar.listening.resample import resample

    played = resample(burst, 22050, RATE)
    echo_energy = float(np.sum((alone - scenario.audio()).astype(np.float64) ** 2))
    assert 10 * np.log10(echo_energy / float(np.sum(played.astype(np.float64) ** 2))) == pytest.approx(-12.0, abs=1.0)


def test_no_echo_without_a_room_or_without_a_speaker(tmp_path):
    scenario = load_scenario(str(_write(tmp_path, _small_scenario(speech=[]))), cache_dir=tmp_path / "cache")
    time_base = ManualTimeBase()
    speaker = VirtualAudioOutput(time_base, sample_rate_hz=22050)
    mic = ScenarioMicrophone(scenario, MediaClock(speaker, time_base), MicrophoneConfig(sample_rate_hz=RATE))
    assert mic.attach_speaker(speaker) is False and not mic.echo_attached and speaker._taps == []
    assert "echo" not in mic.stats()


def test_room_impulse_response_is_seeded_and_has_the_stated_level_and_decay():
    echo = Echo(level_db=-12.0, delay_ms=8.0, rt60_s=0.3, direct_to_reverb_db=6.0)
    h = room_impulse_response(echo, RATE, seed=7)
    assert len(h) == round(0.3 * RATE)
    assert np.sum(h ** 2) == pytest.approx(10 ** (-12 / 10), rel=1e-9)
    assert np.argmax(np.abs(h)) == 0                                  # the direct path comes first
    assert h[0] ** 2 / np.sum(h[1:] ** 2) == pytest.approx(10 ** 0.6, rel=1e-9)
    tenth = len(h) // 10
    early, late = np.sum(h[1:tenth] ** 2), np.sum(h[-tenth:] ** 2)
    assert 10 * np.log10(late / early) < -40.0                        # 60 dB down at the end
    assert np.array_equal(h, room_impulse_response(echo, RATE, seed=7))
    assert not np.array_equal(h, room_impulse_response(echo, RATE, seed=8))


# --------------------------------------------------------------------------- determinism and cache


@requires_espeak
def test_two_loads_give_identical_audio_and_frames(tmp_path, demo):
    again = load_scenario("demo", cache_dir=tmp_path / "fresh-cache")   # built from scratch, not from the cache
    assert not again.track.from_cache
    assert again.audio().tobytes() == demo.audio().tobytes()
    assert again.ground_truth().utterances == demo.ground_truth().utterances
    assert again.track.mouth_open.keys() == demo.track.mouth_open.keys()
    for who, series in demo.track.mouth_open.items():
        assert np.array_equal(again.track.mouth_open[who], series)
    for t_s in (0.7, 4.2, 7.9, 13.0, 17.5, 30.0):   # walking, talking (mouth open), a bystander, leaving
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
    assert second.ground_truth().utterances == first.ground_truth().utterances
    assert np.array_equal(second.track.mouth_open["visitor"], first.track.mouth_open["visitor"])
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
