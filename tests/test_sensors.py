"""Cameras and microphones by URI: real files through the real decoders, and the failure messages.

No camera or sound card exists on the CI box, so the live-capture logic
(latest wins, reconnect with backoff, the PortAudio callback queue) runs
against a fake VideoCapture / sounddevice injected with monkeypatch; the
backends' real code paths are what is exercised around them.
"""

from __future__ import annotations

import glob
import queue
import shutil
import subprocess
import sys
import threading
import time
import types
import wave
from pathlib import Path

import numpy as np
import pytest

from edge_avatar.clock import ManualTimeBase, MediaClock
from edge_avatar.config import CameraConfig, MicrophoneConfig
from edge_avatar.frames import CaptureStatus
from edge_avatar.outputs.audio import VirtualAudioOutput
from edge_avatar.sensors.base import SourceUnavailable
from edge_avatar.sensors.camera import FileCamera, V4l2Camera, backoff_delays_s, open_camera
from edge_avatar.sensors.microphone import (
    SoundDeviceMicrophone,
    WavFileMicrophone,
    open_microphone,
    resample_audio,
)

MS = 1_000_000  # ns
NS_PER_S = 1_000_000_000

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


@pytest.fixture
def manual_clock():
    """A media clock that moves only when the test advances it: (clock, time_base)."""
    time_base = ManualTimeBase()
    speaker = VirtualAudioOutput(time_base, sample_rate_hz=16000)
    speaker.start()
    return MediaClock(speaker, time_base), time_base


def wait_until(predicate, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


# --------------------------------------------------------------------------- camera: files


@pytest.fixture(scope="module")
def solid_clip(tmp_path_factory) -> Path:
    """10 frames at 10 fps, 96x64; frame i is solid grey 20 * i + 10 (written by real ffmpeg)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    path = tmp_path_factory.mktemp("clip") / "solid.mp4"
    frames = np.concatenate([np.full((64, 96, 3), 20 * i + 10, np.uint8) for i in range(10)])
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "96x64",
                    "-framerate", "10", "-i", "-", "-c:v", "libx264", "-crf", "5", "-pix_fmt", "yuv420p",
                    str(path)], input=frames.tobytes(), check=True)
    return path


def grey(frame) -> float:
    return float(frame.image.mean())


def test_file_camera_is_paced_by_the_clock_and_ends(solid_clip, manual_clock):
    clock, time_base = manual_clock
    camera = open_camera(CameraConfig(uri=f"file://{solid_clip}", width_px=64, height_px=48), clock)
    assert isinstance(camera, FileCamera)
    camera.start()
    try:
        status, frame = camera.read_latest()
        assert status is CaptureStatus.OK and (frame.seq, frame.pts_ns) == (0, 0)
        assert frame.image.shape == (48, 64, 3) and frame.image.dtype == np.uint8  # resized to config
        assert grey(frame) == pytest.approx(10, abs=4)
        assert camera.read_latest()[0] is CaptureStatus.TIMEOUT  # frame 1 is due at 100 ms

        time_base.advance_ns(100 * MS)
        status, frame = camera.read_latest()
        assert status is CaptureStatus.OK and (frame.seq, frame.pts_ns) == (1, 100 * MS)
        assert grey(frame) == pytest.approx(30, abs=4)

        time_base.advance_ns(350 * MS)  # now 450 ms: frames 2 and 3 are stale, 4 is the latest
        status, frame = camera.read_latest()
        assert status is CaptureStatus.OK and (frame.seq, frame.pts_ns) == (4, 400 * MS)
        assert grey(frame) == pytest.approx(90, abs=4)
        assert camera.stats()["frames_overwritten"] == 2

        time_base.advance_ns(2 * NS_PER_S)
        status, frame = camera.read_latest()
        assert status is CaptureStatus.OK and frame.seq == 9
        assert camera.read_latest()[0] is CaptureStatus.EOS
        assert camera.stats()["fps"] == 10.0
    finally:
        camera.close()


def test_file_camera_loops_with_increasing_pts(solid_clip, manual_clock):
    clock, time_base = manual_clock
    camera = open_camera(CameraConfig(uri=f"file://{solid_clip}?loop=1", width_px=64, height_px=48), clock)
    camera.start()
    try:
        seen = []
        for _ in range(25):  # 2.5 passes
            status, frame = camera.read_latest()
            assert status is CaptureStatus.OK
            seen.append((frame.seq, frame.pts_ns, round((grey(frame) - 10) / 20)))
            time_base.advance_ns(100 * MS)
        assert [s[0] for s in seen] == list(range(25))
        assert [s[1] for s in seen] == [i * 100 * MS for i in range(25)]
        assert [s[2] for s in seen] == [(i % 10) for i in range(25)]  # grey 20 * i + 10 -> i
        assert camera.stats()["loops"] >= 2
    finally:
        camera.close()


def test_missing_video_file_and_bad_options(tmp_path, manual_clock):
    clock, _ = manual_clock
    with pytest.raises(SourceUnavailable, match=r"video file .*nope\.mp4 does not exist"):
        open_camera(CameraConfig(uri=f"file://{tmp_path}/nope.mp4"), clock)
    with pytest.raises(SourceUnavailable, match="unknown option 'lop'"):
        open_camera(CameraConfig(uri=f"file://{tmp_path}/nope.mp4?lop=1"), clock)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    camera = open_camera(CameraConfig(uri=f"file://{not_video}"), clock)
    with pytest.raises(SourceUnavailable, match="ffprobe"):
        camera.start()


# --------------------------------------------------------------------------- camera: devices


def test_unknown_camera_scheme_lists_the_supported_ones(manual_clock):
    clock, _ = manual_clock
    with pytest.raises(SourceUnavailable) as err:
        open_camera(CameraConfig(uri="gige://10.0.0.7"), clock)
    for scheme in ("realsense://", "v4l2://", "csi://", "file://", "scenario://"):
        assert scheme in str(err.value)


def test_missing_v4l2_device_names_it_and_what_exists(manual_clock):
    clock, _ = manual_clock
    missing = next(f"/dev/video{n}" for n in range(64) if not Path(f"/dev/video{n}").exists())
    with pytest.raises(SourceUnavailable) as err:
        open_camera(CameraConfig(uri=f"v4l2://{missing}"), clock)
    message = str(err.value)
    assert f"{missing} does not exist; found: " in message
    assert (", ".join(sorted(glob.glob("/dev/video*"))) or "none") in message
    short = missing.removeprefix("/dev/video")
    with pytest.raises(SourceUnavailable, match=f"{missing} does not exist"):
        open_camera(CameraConfig(uri=f"v4l2://{short}"), clock)  # v4l2://N means /dev/videoN


def test_realsense_without_pyrealsense2_gives_the_install_hint(monkeypatch, manual_clock):
    clock, _ = manual_clock
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)  # as on a machine without the wheel
    with pytest.raises(SourceUnavailable) as err:
        open_camera(CameraConfig(uri="realsense://"), clock)
    assert "pyrealsense2 not installed" in str(err.value)
    assert "pip install 'edge-avatar[camera]'" in str(err.value)


def test_realsense_not_plugged_in_says_so(monkeypatch, manual_clock):
    clock, _ = manual_clock
    fake_rs = types.SimpleNamespace(
        context=lambda: types.SimpleNamespace(query_devices=lambda: []),
        camera_info=types.SimpleNamespace(serial_number="serial_number"))
    monkeypatch.setitem(sys.modules, "pyrealsense2", fake_rs)
    with pytest.raises(SourceUnavailable, match="no RealSense found by pyrealsense2"):
        open_camera(CameraConfig(uri="realsense://"), clock)
    with pytest.raises(SourceUnavailable, match=r"recording /no/such\.bag does not exist"):
        open_camera(CameraConfig(uri="realsense:///no/such.bag"), clock)


def test_csi_without_gstreamer_says_what_to_install(manual_clock):
    import cv2

    gstreamer = [line for line in cv2.getBuildInformation().splitlines() if "GStreamer:" in line]
    if gstreamer and "YES" in gstreamer[0]:
        pytest.skip("this OpenCV has GStreamer; csi:// would try the real sensor")
    clock, _ = manual_clock
    with pytest.raises(SourceUnavailable) as err:
        open_camera(CameraConfig(uri="csi://0"), clock)
    assert "without GStreamer" in str(err.value) and "JetPack" in str(err.value)


class FakeDevice:
    """Stands in for a webcam behind cv2.VideoCapture: the test feeds frames and failures, and decides opens."""

    def __init__(self):
        self.frames: queue.Queue = queue.Queue()
        self.open_results: list[bool] = []   # next opens; True when empty
        self.opened_paths: list[tuple[str, int]] = []
        self.halted = threading.Event()      # a real driver returns from read() within a frame period

    def close(self, camera) -> None:
        self.halted.set()
        camera.close()

    def capture_class(self):
        device = self

        class FakeCapture:
            def __init__(self, path, api=None):
                device.opened_paths.append((path, api))
                self._open = device.open_results.pop(0) if device.open_results else True

            def isOpened(self):  # noqa: N802 - OpenCV's name
                return self._open

            def set(self, prop, value):
                return True

            def get(self, prop):
                return 0.0

            def read(self):
                while not device.halted.is_set():
                    try:
                        item = device.frames.get(timeout=0.02)
                    except queue.Empty:
                        continue
                    if isinstance(item, str):  # "fail": the driver reports a dead device
                        return False, None
                    return True, item
                return False, None

            def release(self):
                self._open = False

        return FakeCapture


@pytest.fixture
def fake_webcam(monkeypatch, tmp_path):
    import cv2

    device = FakeDevice()
    monkeypatch.setattr(cv2, "VideoCapture", device.capture_class())
    node = tmp_path / "video7"  # stands in for /dev/video7
    node.write_bytes(b"")
    return device, node


def bgr_frame(value: int) -> np.ndarray:
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[..., 0] = value  # blue in OpenCV's BGR order
    return frame


def test_v4l2_latest_frame_wins_and_overwrites_are_counted(fake_webcam, manual_clock):
    device, node = fake_webcam
    clock, time_base = manual_clock
    camera = open_camera(CameraConfig(uri=f"v4l2://{node}", width_px=64, height_px=48), clock)
    assert isinstance(camera, V4l2Camera)
    camera.start()
    try:
        import cv2

        assert device.opened_paths == [(str(node), cv2.CAP_V4L2)]
        assert camera.read_latest()[0] is CaptureStatus.TIMEOUT  # nothing captured yet; does not wait
        for i in range(5):
            time_base.advance_ns(33 * MS)
            device.frames.put(bgr_frame(10 * (i + 1)))
            wait_until(lambda n=i + 1: camera.stats()["frames_captured"] == n)
        status, frame = camera.read_latest()
        assert status is CaptureStatus.OK
        assert frame.seq == 4 and frame.pts_ns == 5 * 33 * MS  # stamped on the media clock at capture
        assert (frame.image[..., 2] == 50).all() and (frame.image[..., 0] == 0).all()  # BGR -> RGB
        assert camera.stats()["frames_overwritten"] == 4
        assert camera.read_latest()[0] is CaptureStatus.TIMEOUT  # nothing new since

        threading.Timer(0.05, lambda: device.frames.put(bgr_frame(60))).start()
        status, frame = camera.read_latest(timeout_ms=2000)  # a caller may choose to wait
        assert status is CaptureStatus.OK and frame.seq == 5
        assert camera.stats()["frames_read"] == 2
    finally:
        device.close(camera)


def test_v4l2_reconnects_with_exponential_backoff(fake_webcam, manual_clock):
    device, node = fake_webcam
    clock, _ = manual_clock
    config = CameraConfig(uri=f"v4l2://{node}", width_px=64, height_px=48,
                          reconnect_backoff_initial_s=0.05, reconnect_backoff_max_s=0.1)
    camera = open_camera(config, clock)
    camera.start()
    try:
        device.frames.put(bgr_frame(1))
        wait_until(lambda: camera.stats()["frames_captured"] == 1)
        assert camera.read_latest()[0] is CaptureStatus.OK

        device.open_results = [False, False, True]  # unplugged for two attempts, then back
        device.frames.put("fail")
        wait_until(lambda: camera.stats()["state"] == "failed", 2.0)
        assert camera.read_latest()[0] is CaptureStatus.ERROR
        wait_until(lambda: camera.stats()["reconnects"] == 1, 3.0)
        stats = camera.stats()
        assert stats["device_errors"] == 1 and stats["reconnect_attempts"] == 3
        assert list(camera.backoff_history_s) == [0.05, 0.1, 0.1]  # doubled, capped at the max
        assert camera.read_latest()[0] is CaptureStatus.TIMEOUT  # alive again, no new frame yet

        device.frames.put(bgr_frame(2))
        status, frame = camera.read_latest(timeout_ms=2000)
        assert status is CaptureStatus.OK and frame.seq == 1

        device.frames.put("fail")  # after a good frame the backoff starts over from the initial delay
        wait_until(lambda: camera.stats()["reconnects"] == 2, 3.0)
        assert list(camera.backoff_history_s) == [0.05, 0.1, 0.1, 0.05]
    finally:
        device.close(camera)
    assert camera.read_latest()[0] is CaptureStatus.EOS


def test_backoff_schedule():
    delays = backoff_delays_s(0.5, 10.0)
    assert [next(delays) for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_scenario_uris_delegate_to_the_scenario_package(monkeypatch, manual_clock):
    clock, _ = manual_clock
    calls = []

    class ScenarioCamera:
        def __init__(self, scenario, clock_, config):
            calls.append(("camera", scenario, clock_, config.uri))

    class ScenarioMicrophone:
        def __init__(self, scenario, clock_, config):
            calls.append(("mic", scenario, clock_, config.uri))

    package = types.ModuleType("edge_avatar.scenario")
    package.load_scenario = lambda name: f"loaded:{name}"
    sources = types.ModuleType("edge_avatar.scenario.sources")
    sources.ScenarioCamera, sources.ScenarioMicrophone = ScenarioCamera, ScenarioMicrophone
    monkeypatch.setitem(sys.modules, "edge_avatar.scenario", package)
    monkeypatch.setitem(sys.modules, "edge_avatar.scenario.sources", sources)
    assert isinstance(open_camera(CameraConfig(uri="scenario://lobby"), clock), ScenarioCamera)
    assert isinstance(open_microphone(MicrophoneConfig(uri="scenario://lobby"), clock), ScenarioMicrophone)
    assert calls == [("camera", "loaded:lobby", clock, "scenario://lobby"),
                     ("mic", "loaded:lobby", clock, "scenario://lobby")]


# --------------------------------------------------------------------------- microphone: WAV files


def write_wav(path: Path, samples: np.ndarray, rate_hz: int, sample_width_bytes: int = 2) -> Path:
    """samples: (N,) or (N, channels) float in [-1, 1]."""
    samples = np.asarray(samples, dtype=np.float64)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(sample_width_bytes)
        wav.setframerate(rate_hz)
        if sample_width_bytes == 2:
            wav.writeframes(np.round(samples * 32767).astype("<i2").tobytes())
        else:
            wav.writeframes(np.round(samples * 127 + 128).astype(np.uint8).tobytes())
    return path


def tone(freq_hz: float, seconds: float, rate_hz: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


def peak_hz(samples: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.argmax(spectrum) * rate_hz / len(samples)


def read_all(mic) -> list:
    chunks = []
    while True:
        status, chunk = mic.read(timeout_ms=0)
        if status is CaptureStatus.EOS:
            return chunks
        assert status is CaptureStatus.OK, status
        chunks.append(chunk)


def test_wav_chunks_are_paced_and_timestamped_by_sample_count(tmp_path, manual_clock):
    clock, time_base = manual_clock
    source = tone(440, 1.0, 16000)
    path = write_wav(tmp_path / "voice.wav", source, 16000)
    mic = open_microphone(MicrophoneConfig(uri=f"file://{path}", sample_rate_hz=16000, chunk_ms=10), clock)
    assert isinstance(mic, WavFileMicrophone)
    mic.start()
    assert mic.read(timeout_ms=0)[0] is CaptureStatus.TIMEOUT  # chunk 0 is complete only at 10 ms
    time_base.advance_ns(10 * MS)
    status, chunk = mic.read(timeout_ms=0)
    assert status is CaptureStatus.OK and (chunk.seq, chunk.pts_ns, len(chunk.samples)) == (0, 0, 160)
    assert chunk.sample_rate_hz == 16000 and chunk.samples.dtype == np.float32
    np.testing.assert_allclose(chunk.samples, source[:160], atol=1 / 32767)
    time_base.advance_ns(25 * MS)  # 35 ms: chunks 1 and 2 are complete, 3 is not
    assert [mic.read(timeout_ms=0)[1].pts_ns for _ in range(2)] == [10 * MS, 20 * MS]
    assert mic.read(timeout_ms=0)[0] is CaptureStatus.TIMEOUT

    time_base.advance_ns(2 * NS_PER_S)
    rest = read_all(mic)
    assert len(rest) == 97 and mic.read(timeout_ms=0)[0] is CaptureStatus.EOS
    for chunk in rest:
        first_sample = chunk.seq * 160
        assert chunk.pts_ns == first_sample * NS_PER_S // 16000
    assert mic.stats()["chunks_captured"] == 100


def test_wav_last_chunk_is_padded_and_loop_continues_the_count(tmp_path, manual_clock):
    clock, time_base = manual_clock
    path = write_wav(tmp_path / "short.wav", np.full(250, 0.25), 16000)  # 1.5625 chunks of 160
    config = MicrophoneConfig(uri=f"file://{path}", sample_rate_hz=16000, chunk_ms=10)
    mic = open_microphone(config, clock)
    mic.start()
    time_base.advance_ns(NS_PER_S)
    chunks = read_all(mic)
    assert len(chunks) == 2 and len(chunks[1].samples) == 160
    assert np.allclose(chunks[1].samples[:90], 0.25, atol=1e-4) and not chunks[1].samples[90:].any()

    looping = open_microphone(MicrophoneConfig(uri=f"file://{path}?loop=1", sample_rate_hz=16000,
                                               chunk_ms=10), clock)
    looping.start()  # its origin is now (1 s)
    time_base.advance_ns(50 * MS)
    chunks = [looping.read(timeout_ms=0)[1] for _ in range(5)]
    assert [c.pts_ns - NS_PER_S for c in chunks] == [i * 10 * MS for i in range(5)]
    assert all(np.allclose(c.samples, 0.25, atol=1e-4) for c in chunks)  # wraps without a gap
    assert looping.read(timeout_ms=0)[0] is CaptureStatus.TIMEOUT


@pytest.mark.parametrize("with_scipy", [True, False])
def test_resampling_48k_to_16k_keeps_the_tone_and_removes_aliases(tmp_path, manual_clock, monkeypatch,
                                                                  with_scipy):
    if not with_scipy:
        monkeypatch.setitem(sys.modules, "scipy.signal", None)  # the NumPy fallback
    clock, time_base = manual_clock
    path = write_wav(tmp_path / "48k.wav", tone(1000, 1.0, 48000), 48000)
    mic = open_microphone(MicrophoneConfig(uri=f"file://{path}", sample_rate_hz=16000), clock)
    mic.start()
    time_base.advance_ns(2 * NS_PER_S)
    audio = np.concatenate([c.samples for c in read_all(mic)])
    assert len(audio) == 16000
    assert peak_hz(audio[1600:-1600], 16000) == pytest.approx(1000, abs=2)
    assert np.sqrt(np.mean(audio[1600:-1600] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)

    # 12 kHz cannot exist at 16 kHz; unfiltered it would fold to 4 kHz. It must be gone instead.
    alias = resample_audio(tone(12000, 1.0, 48000).astype(np.float32), 48000, 16000)
    assert np.sqrt(np.mean(alias[1600:-1600] ** 2)) < 0.01


def test_stereo_wav_is_downmixed(tmp_path, manual_clock):
    clock, time_base = manual_clock
    left, right = tone(440, 0.2, 16000, 0.6), tone(660, 0.2, 16000, 0.2)
    path = write_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000)
    mic = open_microphone(MicrophoneConfig(uri=f"file://{path}", sample_rate_hz=16000), clock)
    mic.start()
    time_base.advance_ns(NS_PER_S)
    audio = np.concatenate([c.samples for c in read_all(mic)])
    np.testing.assert_allclose(audio[:3200], (left + right) / 2, atol=2 / 32767)


def test_bad_wav_files_are_named_with_the_fix(tmp_path, manual_clock):
    clock, _ = manual_clock
    eight_bit = write_wav(tmp_path / "eight.wav", tone(440, 0.1, 8000), 8000, sample_width_bytes=1)
    with pytest.raises(SourceUnavailable) as err:
        open_microphone(MicrophoneConfig(uri=f"file://{eight_bit}"), clock)
    assert str(eight_bit) in str(err.value) and "8-bit PCM" in str(err.value)
    assert "ffmpeg -i" in str(err.value)

    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(SourceUnavailable, match=r"notes\.wav is not a 16-bit PCM WAV"):
        open_microphone(MicrophoneConfig(uri=f"file://{text}"), clock)

    if shutil.which("ffmpeg"):
        float_wav = tmp_path / "float.wav"  # IEEE float samples (format 3): not PCM
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=0.1", "-c:a", "pcm_f32le",
                        str(float_wav)], check=True)
        with pytest.raises(SourceUnavailable, match=r"float\.wav is not a 16-bit PCM WAV"):
            open_microphone(MicrophoneConfig(uri=f"file://{float_wav}"), clock)


def test_missing_wav_and_unknown_mic_scheme(tmp_path, manual_clock):
    clock, _ = manual_clock
    with pytest.raises(SourceUnavailable, match=r"WAV file .*absent\.wav does not exist"):
        open_microphone(MicrophoneConfig(uri=f"file://{tmp_path}/absent.wav"), clock)
    with pytest.raises(SourceUnavailable) as err:
        open_microphone(MicrophoneConfig(uri="pulse://mic"), clock)
    for scheme in ("default://", "alsa://", "portaudio://", "file://", "scenario://"):
        assert scheme in str(err.value)
    with pytest.raises(SourceUnavailable, match="portaudio://INDEX with a number"):
        open_microphone(MicrophoneConfig(uri="portaudio://usb"), clock)


# --------------------------------------------------------------------------- microphone: sound cards


def test_no_sound_card_says_what_was_found(manual_clock):
    try:
        import sounddevice
    except (ImportError, OSError):
        pytest.skip("PortAudio not installed")
    if any(d["max_input_channels"] > 0 for d in sounddevice.query_devices()):
        pytest.skip("this machine has an input device")
    clock, _ = manual_clock
    with pytest.raises(SourceUnavailable) as err:
        open_microphone(MicrophoneConfig(uri="default://"), clock)
    message = str(err.value)
    assert "no input device" in message and "/proc/asound/cards" in message


class FakeSoundDevice(types.ModuleType):
    """A python-sounddevice stand-in with one USB mic; the test drives the stream's callback itself."""

    def __init__(self):
        super().__init__("sounddevice")
        self.streams = []
        self.devices = [{"name": "HDA Intel PCH: HDMI 0 (hw:0,3)", "max_input_channels": 0},
                        {"name": "USB Audio Device: - (hw:2,0)", "max_input_channels": 1}]
        self.PortAudioError = RuntimeError

    def query_devices(self):
        return self.devices

    def check_input_settings(self, **kwargs):
        pass

    def InputStream(self, **kwargs):  # noqa: N802 - sounddevice's name
        fake = self

        class Stream:
            latency = 0.0
            active = False

            def __init__(self):
                self.kwargs = kwargs
                fake.streams.append(self)

            def start(self):
                self.active = True

            def close(self, ignore_errors=True):
                self.active = False

        return Stream()


def test_sound_card_capture_timestamps_by_samples_and_drops_oldest(monkeypatch, manual_clock):
    clock, time_base = manual_clock
    fake = FakeSoundDevice()
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    config = MicrophoneConfig(uri="alsa://USB", sample_rate_hz=16000, chunk_ms=10, queue_chunks=8)
    mic = open_microphone(config, clock)
    assert isinstance(mic, SoundDeviceMicrophone) and mic.device == 1
    mic.start()
    stream = fake.streams[0]
    assert (stream.kwargs["samplerate"], stream.kwargs["channels"], stream.kwargs["blocksize"]) == (16000, 1, 160)
    callback = stream.kwargs["callback"]
    no_overflow = types.SimpleNamespace(input_overflow=False)

    time_base.advance_ns(10 * MS)  # the first block arrives when its last sample has been captured
    for k in range(12):  # 12 blocks into a queue of 8: the 4 oldest are dropped, and counted
        callback(np.full((160, 1), k / 100, np.float32), 160, None, no_overflow)
    chunks = [mic.read(timeout_ms=0)[1] for _ in range(8)]
    assert [c.seq for c in chunks] == list(range(4, 12))
    assert [c.pts_ns for c in chunks] == [k * 160 * NS_PER_S // 16000 for k in range(4, 12)]
    assert chunks[0].samples[0] == pytest.approx(0.04)
    assert mic.read(timeout_ms=0)[0] is CaptureStatus.TIMEOUT
    stats = mic.stats()
    assert (stats["chunks_captured"], stats["chunks_dropped"]) == (12, 4)

    callback(np.zeros((160, 1), np.float32), 160, None, types.SimpleNamespace(input_overflow=True))
    assert mic.stats()["device_overflows"] == 1
    assert mic.read(timeout_ms=0)[1].seq == 12

    stream.kwargs["finished_callback"]()  # PortAudio stopped the stream: the device went away
    assert mic.read(timeout_ms=0)[0] is CaptureStatus.ERROR
    # After the initial backoff (0.5 s) a read reopens the stream; reads never wait for it.
    wait_until(lambda: mic.read(timeout_ms=0)[0] is not CaptureStatus.ERROR, 3.0)
    assert mic.stats()["reconnects"] == 1 and len(fake.streams) == 2 and fake.streams[1].active
    mic.close()
    assert not fake.streams[1].active


def test_sound_card_device_names_are_checked(monkeypatch, manual_clock):
    clock, _ = manual_clock
    monkeypatch.setitem(sys.modules, "sounddevice", FakeSoundDevice())
    with pytest.raises(SourceUnavailable, match=r"no input device whose name contains 'Jabra'.*1: USB Audio"):
        open_microphone(MicrophoneConfig(uri="alsa://Jabra"), clock)
    with pytest.raises(SourceUnavailable, match="no input device with index 0"):
        open_microphone(MicrophoneConfig(uri="portaudio://0"), clock)  # HDMI has no input channels
    assert open_microphone(MicrophoneConfig(uri="default://"), clock).device is None


def test_heavy_backends_are_imported_only_when_used():
    code = ("import sys, edge_avatar.sensors.camera, edge_avatar.sensors.microphone, edge_avatar.outputs.video; "
            "print(sorted({'cv2', 'sounddevice', 'pyrealsense2', 'pygame', 'scipy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
