"""Video outputs: a real MP4 through real ffmpeg, checked with ffprobe and decoded back.

The A/V sync test plays a beep through the virtual speaker (the master clock)
while the loop's frames flash white at the same media time, then measures
both in the muxed file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from edge_avatar.clock import ManualTimeBase, MediaClock
from edge_avatar.config import DisplayConfig, OutputConfig
from edge_avatar.frames import RenderedFrame
from edge_avatar.outputs import video
from edge_avatar.outputs.audio import VirtualAudioOutput
from edge_avatar.outputs.base import OutputUnavailable
from edge_avatar.outputs.video import FileMp4Sink, Letterbox, NullSink, OutputFailed, open_output

NS_PER_S = 1_000_000_000
BACKGROUND_RGB = (28, 36, 52)

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="ffmpeg/ffprobe not installed (sudo apt-get install ffmpeg)")


def ffprobe_streams(path: Path) -> dict[str, dict]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_type,codec_name,width,height,duration,nb_read_frames,avg_frame_rate,sample_rate",
         "-of", "json", str(path)], check=True, capture_output=True, text=True).stdout
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


def decode_gray_frames(path: Path, width_px: int, height_px: int) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf",
                          f"scale={width_px}:{height_px}", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height_px, width_px)  # (T, H, W)


def decode_audio(path: Path, sample_rate_hz: int) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar",
                          str(sample_rate_hz), "-f", "f32le", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype="<f4")  # (N,)


def moving_square(index: int, size_px: int = 128) -> np.ndarray:
    image = np.zeros((size_px, size_px, 3), dtype=np.uint8)  # (H, W, 3)
    x0 = 8 + index % (size_px - 32)
    image[40:72, x0:x0 + 24] = (230, 80, 40)
    return image


def file_output(path: Path, crf: int = 23) -> OutputConfig:
    return OutputConfig(uri=f"file://{path}", video_crf=crf)


@needs_ffmpeg
def test_mp4_has_both_streams_in_sync(tmp_path):
    fps = 30
    speaker_rate_hz = 16000
    display = DisplayConfig(width_px=256, height_px=192, background_rgb=BACKGROUND_RGB)
    out_path = tmp_path / "nested" / "dir" / "avatar.mp4"  # the directory does not exist yet
    sink = open_output(file_output(out_path), display, fps, speaker_rate_hz)
    assert isinstance(sink, FileMp4Sink)

    # The speaker is the clock: queue 1.0 s of silence then a 0.5 s 1 kHz beep; it starts at sample 0.
    time_base = ManualTimeBase()
    speaker = VirtualAudioOutput(time_base, sample_rate_hz=speaker_rate_hz, block_ms=10)
    speaker.add_tap(sink.audio_tap)
    clock = MediaClock(speaker, time_base)
    t_beep = np.arange(speaker_rate_hz // 2) / speaker_rate_hz
    speaker.write(np.concatenate([np.zeros(speaker_rate_hz, np.float32),
                                  (0.5 * np.sin(2 * np.pi * 1000.0 * t_beep)).astype(np.float32)]))
    speaker.start()

    flash_tick = 30  # t = 1.0 s, when the beep starts
    for tick in range(3 * fps):
        pts_ns = tick * NS_PER_S // fps
        time_base.advance_ns(pts_ns - time_base.monotonic_ns())
        clock.now_ns()  # the speaker consumes (and taps) up to now, as it would while the loop waits
        image = np.full((128, 128, 3), 255, np.uint8) if tick == flash_tick else moving_square(tick)
        sink.present(RenderedFrame(pts_ns, tick, image))
    time_base.advance_ns(3 * NS_PER_S - time_base.monotonic_ns())
    speaker.close()
    report = sink.close()

    assert report["path"] == str(out_path) and out_path.is_file()
    assert report["frames_written"] == 90 and report["frames_repeated"] == 0 and report["frames_dropped"] == 0
    # The encoder is below the tick's CPU priority (Linux), with the configured x264 preset.
    assert report["encoder"]["preset"] == "veryfast" and report["encoder"]["crf"] == 23
    if sys.platform.startswith("linux"):
        assert report["encoder"]["nice"] == os.getpriority(os.PRIO_PROCESS, 0) + 5
    assert report["video_s"] == pytest.approx(3.0)
    assert report["audio_s"] >= 3.0
    assert sorted(p.name for p in out_path.parent.iterdir()) == ["avatar.mp4"]  # temporaries removed

    streams = ffprobe_streams(out_path)
    assert set(streams) == {"video", "audio"}
    v, a = streams["video"], streams["audio"]
    assert (v["codec_name"], v["width"], v["height"], v["avg_frame_rate"]) == ("h264", 256, 192, "30/1")
    assert a["codec_name"] == "aac" and int(a["sample_rate"]) == speaker_rate_hz
    assert int(v["nb_read_frames"]) == 90
    assert float(v["duration"]) == pytest.approx(3.0, abs=1 / fps)
    assert float(a["duration"]) == pytest.approx(3.0, abs=1 / fps)

    # The flash, seen in the decoded video...
    gray = decode_gray_frames(out_path, 64, 48).astype(np.float32)
    flash_frames = np.flatnonzero(gray.mean(axis=(1, 2)) > 150)
    assert list(flash_frames) == [flash_tick]
    flash_s = flash_frames[0] / fps
    # ...the beep, heard in the decoded audio...
    audio = decode_audio(out_path, speaker_rate_hz)
    onset_s = np.flatnonzero(np.abs(audio) > 0.2)[0] / speaker_rate_hz
    assert onset_s == pytest.approx(1.0, abs=0.005)
    # ...land within one frame of each other.
    assert abs(onset_s - flash_s) < 1 / fps
    beep = audio[int(1.1 * speaker_rate_hz):int(1.4 * speaker_rate_hz)]
    spectrum = np.abs(np.fft.rfft(beep * np.hanning(len(beep))))
    peak_hz = np.argmax(spectrum) * speaker_rate_hz / len(beep)
    assert peak_hz == pytest.approx(1000.0, abs=5.0)

    # The square moves (decoded at 64x48, the 128x128 render is letterboxed into the central 48x48).
    def square_x(frame: np.ndarray) -> float:
        bright = frame[:, 8:56] > 60
        return float(np.mean(np.nonzero(bright)[1]))
    assert square_x(gray[50]) > square_x(gray[5]) + 3

    # Letterbox bars carry the display background; the render fills the middle.
    rgb = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out_path), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    first = np.frombuffer(rgb, np.uint8).reshape(192, 256, 3).astype(int)
    assert np.abs(first[96, 10] - BACKGROUND_RGB).max() <= 8     # left bar
    assert np.abs(first[96, 245] - BACKGROUND_RGB).max() <= 8    # right bar
    assert np.abs(first[10, 128] - (0, 0, 0)).max() <= 8         # the render's black corner, not a bar


@needs_ffmpeg
def test_pts_gaps_repeat_frames_and_duplicates_are_dropped(tmp_path):
    fps = 10
    out_path = tmp_path / "gaps.mp4"
    sink = open_output(file_output(out_path), DisplayConfig(width_px=64, height_px=64), fps, 16000)
    # Slots 2, 3, 6, 6 (again), 7: two lead-in frames, two repeats, one dropped.
    for seq, slot in enumerate([2, 3, 6, 6, 7]):
        image = np.full((64, 64, 3), 40 * seq, np.uint8)
        sink.present(RenderedFrame(slot * NS_PER_S // fps + 1_000_000, seq, image))  # 1 ms of jitter
    report = sink.close()
    assert (report["frames_written"], report["frames_lead_in"], report["frames_repeated"],
            report["frames_dropped"]) == (8, 2, 2, 1)
    assert report["audio_s"] == 0.0
    streams = ffprobe_streams(out_path)
    assert set(streams) == {"video"}  # no audio was played: a video-only file
    assert int(streams["video"]["nb_read_frames"]) == 8
    levels = decode_gray_frames(out_path, 16, 16).mean(axis=(1, 2))
    # Slots 0-1 background, 2: seq 0, 3-5: seq 1 (repeated), 6: seq 2, 7: seq 4 (seq 3 was dropped).
    expected = [None, None, 0, 40, 40, 40, 80, 160]
    for slot, level in enumerate(expected):
        if level is not None:
            assert abs(levels[slot] - level) < 12, (slot, levels)


@needs_ffmpeg
def test_audio_tap_fills_gaps_with_silence_and_ignores_repeats(tmp_path):
    sink = open_output(file_output(tmp_path / "a.mp4"), DisplayConfig(width_px=64, height_px=64), 10, 8000)
    block = np.full(800, 0.5, np.float32)
    sink.audio_tap(block, 800)       # starts late: 800 samples of silence first
    sink.audio_tap(block, 1200)      # overlaps the previous block by 400 samples
    for tick in range(4):
        sink.present(RenderedFrame(tick * NS_PER_S // 10, tick, np.zeros((64, 64, 3), np.uint8)))
    report = sink.close()
    assert report["audio_gap_samples"] == 800 and report["audio_overlap_samples"] == 400
    assert report["audio_s"] == pytest.approx(2000 / 8000)
    streams = ffprobe_streams(Path(report["path"]))
    assert float(streams["audio"]["duration"]) == pytest.approx(0.4, abs=0.001)  # padded to the video's 0.4 s
    audio = decode_audio(Path(report["path"]), 8000)
    # A decoder may play the last AAC frame's padding (1024 samples); the container says where audio ends.
    assert 3200 <= len(audio) <= 3200 + 1024
    assert np.abs(audio[100:700]).max() < 0.05 and np.abs(audio[1000:1900]).mean() > 0.3


def test_missing_ffmpeg_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no ffmpeg anywhere
    with pytest.raises(OutputUnavailable) as err:
        open_output(file_output(tmp_path / "x.mp4"), DisplayConfig(), 30, 22050)
    message = str(err.value)
    assert "ffmpeg not found on PATH" in message and "sudo apt-get install ffmpeg" in message


@needs_ffmpeg
def test_ffmpeg_failing_mid_run_reports_its_log(tmp_path):
    out_path = tmp_path / "broken.mp4"
    # The encoder's temporary output is a directory: ffmpeg starts, cannot write, and exits.
    (tmp_path / f".broken.mp4.{os.getpid()}.video.mp4").mkdir()
    sink = open_output(file_output(out_path), DisplayConfig(width_px=64, height_px=64), 30, 22050)
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(OutputFailed) as err:
        for tick in range(200):
            sink.present(RenderedFrame(tick * NS_PER_S // 30, tick, frame))
            time.sleep(0.01)
        sink.close()
    message = str(err.value)
    assert "ffmpeg" in message and "Is a directory" in message
    with pytest.raises(OutputFailed):
        sink.close()
    assert not out_path.exists()


def test_unknown_schemes_and_options_list_what_is_supported():
    with pytest.raises(OutputUnavailable) as err:
        open_output(OutputConfig(uri="rtsp://camera/stream"), DisplayConfig(), 30, 22050)
    assert "unknown scheme 'rtsp'" in str(err.value)
    for scheme in ("file://", "window://", "null://"):
        assert scheme in str(err.value)
    with pytest.raises(OutputUnavailable, match="unknown option 'fulscreen'"):
        open_output(OutputConfig(uri="window://?fulscreen=1"), DisplayConfig(), 30, 22050)
    with pytest.raises(OutputUnavailable, match="not a URI"):
        open_output(OutputConfig(uri="out.mp4"), DisplayConfig(), 30, 22050)


def test_window_without_pygame_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)  # as on a machine without pygame
    with pytest.raises(OutputUnavailable) as err:
        open_output(OutputConfig(uri="window://"), DisplayConfig(), 30, 22050)
    assert "pip install pygame" in str(err.value) and "null://" in str(err.value)


def test_window_without_display_says_what_to_do(monkeypatch):
    # SDL's own refusal, as pygame raises it on a headless box (pygame itself is not installed here).
    class SdlError(RuntimeError):
        pass

    def no_video_device(*_args, **_kwargs):
        raise SdlError("No available video device")

    fake = types.SimpleNamespace(
        error=SdlError, FULLSCREEN=1,
        display=types.SimpleNamespace(init=no_video_device, set_mode=no_video_device, quit=lambda: None))
    monkeypatch.setitem(sys.modules, "pygame", fake)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    with pytest.raises(OutputUnavailable) as err:
        open_output(OutputConfig(uri="window://?fullscreen=1"), DisplayConfig(), 30, 22050)
    message = str(err.value)
    assert "No available video device" in message and "DISPLAY" in message
    assert "file://" in message and "null://" in message

    # Recent SDL does not fail: it quietly draws off-screen, where nobody would see the face.
    fake.display = types.SimpleNamespace(init=lambda: None, get_driver=lambda: "offscreen",
                                         set_mode=no_video_device, quit=lambda: None)
    with pytest.raises(OutputUnavailable, match="fell back to its 'offscreen' driver"):
        open_output(OutputConfig(uri="window://"), DisplayConfig(), 30, 22050)


def test_window_presents_frames_letterboxed_at_their_pts(monkeypatch):
    pygame = pytest.importorskip("pygame", reason="pygame not installed (pip install pygame)")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # asked for explicitly: an off-screen SDL window
    time_base = ManualTimeBase()
    speaker = VirtualAudioOutput(time_base, sample_rate_hz=16000)
    speaker.start()
    clock = MediaClock(speaker, time_base)
    sink = open_output(OutputConfig(uri="window://"), DisplayConfig(width_px=320, height_px=200,
                                                                    background_rgb=BACKGROUND_RGB),
                       30, 16000, clock=clock)
    try:
        for tick in range(5):
            sink.present(RenderedFrame(tick * NS_PER_S // 30, tick, np.full((64, 64, 3), 200, np.uint8)))
        # The window held each frame until its pts on the media clock.
        assert 4 * NS_PER_S // 30 <= clock.now_ns() < 4 * NS_PER_S // 30 + 1_000_000
        surface = pygame.display.get_surface()
        assert tuple(surface.get_at((160, 100)))[:3] == (200, 200, 200)
        assert tuple(surface.get_at((5, 100)))[:3] == BACKGROUND_RGB  # letterbox bar
    finally:
        report = sink.close()
    assert report["frames_written"] == 5 and report["frames_late"] == 0


def test_null_sink_counts_frames_and_audio():
    sink = open_output(OutputConfig(uri="null://"), DisplayConfig(), 25, 16000)
    assert isinstance(sink, NullSink)
    for tick in range(50):
        sink.present(RenderedFrame(tick * NS_PER_S // 25, tick, np.zeros((8, 8, 3), np.uint8)))
    sink.audio_tap(np.zeros(16000, np.float32), 0)
    sink.audio_tap(np.zeros(8000, np.float32), 16000)
    assert sink.close() == {"path": None, "frames_written": 50, "video_s": 2.0, "audio_s": 1.5}


@pytest.mark.parametrize("with_opencv", [True, False])
def test_letterbox_keeps_aspect_on_the_background(monkeypatch, with_opencv):
    if not with_opencv:
        monkeypatch.setattr(video, "_cv2", lambda: None)  # the NumPy nearest-neighbour path
    box = Letterbox(200, 100, BACKGROUND_RGB)
    image = np.full((50, 50, 3), 200, np.uint8)
    out = box(image)
    assert out.shape == (100, 200, 3) and out.dtype == np.uint8
    assert box.placement(50, 50) == (50, 0, 100, 100)
    assert (out[:, :50] == BACKGROUND_RGB).all() and (out[:, 150:] == BACKGROUND_RGB).all()
    assert (out[:, 50:150] == 200).all()
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        box(np.zeros((10, 10), np.uint8))
