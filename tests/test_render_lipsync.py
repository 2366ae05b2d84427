"""Lip sync measured from a finished MP4's pixels and audio finds a known offset, and refuses what it cannot measure.

The files are made the way the product makes them: the neural renderer draws
the face with its jaw following a syllable-like envelope shifted by a known
amount, ffmpeg encodes H.264 + AAC, and the measurement sees only the file.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from edge_avatar.motion import BLENDSHAPE_INDEX, neutral_motion
from edge_avatar.render.lipsync import LipSyncError, MouthTrack, analyse_mp4, measure_mp4, measure_turns
from edge_avatar.render.neural import NeuralRenderer, model_path_for

pytestmark = [
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"),
    pytest.mark.skipif(not model_path_for(256).is_file(), reason="needs the trained renderer"),
]

FPS = 30
RATE_HZ = 16_000
DURATION_S = 6.0


def syllable_envelope(t_s: np.ndarray, seed: int = 3) -> np.ndarray:
    """Bursts of 80-220 ms with 40-160 ms gaps between 0.5 s and 5.5 s: the rhythm of speech."""
    rng = np.random.default_rng(seed)
    env = np.zeros_like(t_s)
    start = 0.5
    while start < DURATION_S - 0.5:
        length = rng.uniform(0.08, 0.22)
        inside = (t_s >= start) & (t_s < start + length)
        env[inside] = rng.uniform(0.5, 1.0) * np.sin(np.pi * (t_s[inside] - start) / length)
        start += length + rng.uniform(0.04, 0.16)
    return env


def make_mp4(path: Path, shift_ms: float, with_audio: bool = True, face: bool = True) -> Path:
    """The mouth opens with the envelope ``shift_ms`` later (+) or earlier (-) than the sound."""
    t_audio = np.arange(int(DURATION_S * RATE_HZ)) / RATE_HZ
    rng = np.random.default_rng(5)
    voice = np.sin(2 * np.pi * 140 * t_audio) + 0.5 * np.sin(2 * np.pi * 280 * t_audio) \
        + 0.2 * rng.standard_normal(t_audio.size)
    audio = (0.25 * syllable_envelope(t_audio) * voice).astype(np.float32)
    wav = path.with_suffix(".wav")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE_HZ)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    renderer = NeuralRenderer(256, 256, (28, 36, 52))
    frames_t = np.arange(int(DURATION_S * FPS)) / FPS
    jaw = syllable_envelope(frames_t - shift_ms / 1000.0)
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "256x256", "-r", str(FPS),
           "-i", "-"] + (["-i", str(wav)] if with_audio else []) + \
          ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "20"] + (["-c:a", "aac", "-shortest"] if with_audio
                                                                       else []) + [str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    for value in jaw:
        motion = neutral_motion()
        motion[BLENDSHAPE_INDEX["jawOpen"]] = float(value) * 0.9
        image = renderer.render(motion) if face else np.full((256, 256, 3), 40, np.uint8)
        proc.stdin.write(np.ascontiguousarray(image).tobytes())
    proc.stdin.close()
    assert proc.wait(timeout=120) == 0
    renderer.close()
    return path


@pytest.fixture(scope="module")
def perception():
    from edge_avatar.perception.pipeline import VisionPerception

    return VisionPerception()


@pytest.mark.parametrize("shift_ms", [100.0, -67.0])
def test_a_known_offset_is_found_from_the_pixels(tmp_path, perception, shift_ms):
    result = measure_mp4(make_mp4(tmp_path / "shifted.mp4", shift_ms), perception)
    assert result["frames_with_face"] == result["frames"] == int(DURATION_S * FPS)
    assert abs(result["av_offset_ms"] - shift_ms) <= 20.0, result["av_offset_ms"]
    assert result["correlation"] > 0.6
    assert result["correlation"] > result["correlation_at_0_ms"]   # the shift is really there


def test_per_turn_offsets_and_their_summary(tmp_path, perception):
    track = analyse_mp4(make_mp4(tmp_path / "late.mp4", 100.0), perception)
    result = measure_turns(track, [0.4, None, 3.0])
    first, missing, second = result["turns"]
    assert missing is None and abs(first - 100.0) <= 25.0 and abs(second - 100.0) <= 25.0
    assert result["abs_summary_ms"]["count"] == 2 and result["abs_summary_ms"]["max"] >= 75.0


def test_what_cannot_be_measured_is_refused_with_the_reason(tmp_path, perception):
    with pytest.raises(LipSyncError, match="no audio stream"):
        measure_mp4(make_mp4(tmp_path / "silent.mp4", 0.0, with_audio=False), perception)
    with pytest.raises(LipSyncError, match="found no face"):
        measure_mp4(make_mp4(tmp_path / "faceless.mp4", 0.0, face=False), perception)
    with pytest.raises(LipSyncError, match="no such file"):
        measure_mp4(tmp_path / "missing.mp4", perception)
    quiet = MouthTrack(np.full(90, 0.01), FPS, np.zeros(3 * RATE_HZ, np.float32))
    with pytest.raises(LipSyncError, match="frames with a face near speech"):
        quiet.best_offset()
