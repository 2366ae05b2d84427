"""Simple stand-in models for the stages whose real networks land in later work.

Why this module exists: the loop, clock, queues and timing are final and must
run end to end now, so each stage needs *something* to run. Everything here
is deliberately small, deterministic and honest about what it is:

- ``LuminancePerception``: a 4-value token (frame mean, contrast, motion
  energy, visitor voice level); no face analysis. Replaced by the real
  perception token (MediaPipe face mesh, blendshapes, gaze, emotion, hands).
- ``EnvelopePlanner``: jaw opening from the envelope of the audio the speaker
  is playing at the tick's pts, blinks on a fixed random schedule, a slow
  breathing head motion. Replaced by the distilled neural planner.
- ``SketchRenderer``: a flat-shaded face drawn with numpy from the motion
  frame (head, eyes with blinks, mouth opening). Replaced by the distilled
  neural renderer.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from edge_avatar.frames import VideoFrame, ns_to_samples
from edge_avatar.motion import BLENDSHAPE_INDEX, EYES_SLICE, HEAD_SLICE, neutral_motion

log = logging.getLogger(__name__)

PLACEHOLDER_TOKEN_SIZE = 4


class LuminancePerception:
    """Token v0: [mean luminance, luminance std, mean abs frame difference, visitor voice rms], all 0..1."""

    def __init__(self) -> None:
        self._previous_small: np.ndarray | None = None

    def perceive(self, frame: VideoFrame, voice_rms: float) -> np.ndarray:
        small = frame.image[::8, ::8].astype(np.float32).mean(axis=2) / 255.0  # (H/8, W/8)
        motion = 0.0 if self._previous_small is None or self._previous_small.shape != small.shape \
            else float(np.abs(small - self._previous_small).mean())
        self._previous_small = small
        return np.array([small.mean(), small.std(), motion, voice_rms], dtype=np.float32)


class SpeechEnvelope:
    """An audio tap that keeps the RMS of every 10 ms block the speaker played, indexed by sample time."""

    def __init__(self, sample_rate_hz: int, history_s: float = 30.0):
        self.sample_rate_hz = sample_rate_hz
        self.block_samples = sample_rate_hz // 100
        self._ring = np.zeros(int(history_s * 100), dtype=np.float32)
        self._lock = threading.Lock()
        self._carry = np.zeros(0, dtype=np.float32)
        self._carry_start = 0

    def __call__(self, samples: np.ndarray, first_sample: int) -> None:
        with self._lock:
            if len(self._carry) == 0:
                self._carry_start = first_sample
            data = np.concatenate([self._carry, samples])
            n_blocks = len(data) // self.block_samples
            for b in range(n_blocks):
                block = data[b * self.block_samples:(b + 1) * self.block_samples]
                index = (self._carry_start // self.block_samples + b) % len(self._ring)
                self._ring[index] = float(np.sqrt(np.mean(block * block)))
            self._carry = data[n_blocks * self.block_samples:]
            self._carry_start += n_blocks * self.block_samples

    def rms_at(self, pts_ns: int) -> float:
        index = ns_to_samples(pts_ns, self.sample_rate_hz) // self.block_samples
        with self._lock:
            return float(self._ring[index % len(self._ring)])


class EnvelopePlanner:
    """Motion from the played speech envelope plus scheduled blinks and breathing."""

    BLINK_DURATION_NS = 150_000_000

    def __init__(self, envelope: SpeechEnvelope | None, voice_level=None, seed: int = 7):
        self._envelope = envelope
        self._voice_level = voice_level or (lambda: 0.0)  # the visitor's voice rms, 0..1
        self._rng = np.random.default_rng(seed)
        self._next_blink_ns = 0
        self._blink_start_ns = -1
        self._jaw = 0.0

    def step(self, pts_ns: int, token: np.ndarray | None) -> np.ndarray:
        motion = neutral_motion()
        rms = self._envelope.rms_at(pts_ns) if self._envelope else 0.0
        target_jaw = float(np.clip(rms * 6.0, 0.0, 1.0))
        self._jaw += (target_jaw - self._jaw) * 0.6  # light smoothing, ~1 tick
        motion[BLENDSHAPE_INDEX["jawOpen"]] = self._jaw
        motion[BLENDSHAPE_INDEX["mouthClose"]] = max(0.0, 0.3 - self._jaw)
        if pts_ns >= self._next_blink_ns:
            self._blink_start_ns = pts_ns
            self._next_blink_ns = pts_ns + int(self._rng.uniform(2.0, 6.0) * 1e9)
        if 0 <= pts_ns - self._blink_start_ns < self.BLINK_DURATION_NS:
            phase = (pts_ns - self._blink_start_ns) / self.BLINK_DURATION_NS
            closed = float(np.sin(np.pi * phase))
            motion[BLENDSHAPE_INDEX["eyeBlinkLeft"]] = closed
            motion[BLENDSHAPE_INDEX["eyeBlinkRight"]] = closed
        t_s = pts_ns / 1e9
        motion[HEAD_SLICE] = (2.0 * np.sin(t_s * 0.7), 1.5 * np.sin(t_s * 2 * np.pi / 4.0), 0.0)
        if self._voice_level() > 0.02:  # the visitor is talking: smile slightly
            motion[BLENDSHAPE_INDEX["mouthSmileLeft"]] = motion[BLENDSHAPE_INDEX["mouthSmileRight"]] = 0.3
        motion[EYES_SLICE] = 0.0
        return motion


class SketchRenderer:
    """A flat-shaded face from a motion frame, drawn with precomputed coordinate grids."""

    def __init__(self, width_px: int, height_px: int):
        self.width_px, self.height_px = width_px, height_px
        ys, xs = np.mgrid[0:height_px, 0:width_px].astype(np.float32)
        self._xs = xs / width_px - 0.5   # (H, W) in [-0.5, 0.5)
        self._ys = ys / height_px - 0.5
        self._background = np.array([28, 36, 52], dtype=np.uint8)

    def render(self, motion: np.ndarray) -> np.ndarray:
        yaw_deg, pitch_deg, _roll = motion[HEAD_SLICE]
        cx = float(np.clip(-yaw_deg / 90.0, -0.2, 0.2))
        cy = float(np.clip(-pitch_deg / 90.0, -0.2, 0.2))
        x, y = self._xs - cx, self._ys - cy
        image = np.empty((self.height_px, self.width_px, 3), dtype=np.uint8)
        image[:] = self._background
        image[(x / 0.32) ** 2 + (y / 0.40) ** 2 <= 1.0] = (236, 196, 160)   # head
        blink = (motion[BLENDSHAPE_INDEX["eyeBlinkLeft"]], motion[BLENDSHAPE_INDEX["eyeBlinkRight"]])
        for side, closed in zip((-1.0, 1.0), blink):
            eye_h = 0.045 * (1.0 - 0.9 * float(closed)) + 1e-3
            image[((x - side * 0.12) / 0.06) ** 2 + ((y + 0.08) / eye_h) ** 2 <= 1.0] = (40, 40, 48)
        jaw = float(motion[BLENDSHAPE_INDEX["jawOpen"]])
        smile = float(motion[BLENDSHAPE_INDEX["mouthSmileLeft"]])
        mouth_h = 0.012 + 0.09 * jaw
        mouth_y = y - 0.17 - 0.03 * jaw + smile * 0.05 * (x / 0.12) ** 2
        image[(x / 0.12) ** 2 + (mouth_y / mouth_h) ** 2 <= 1.0] = (120, 40, 50)
        return image
