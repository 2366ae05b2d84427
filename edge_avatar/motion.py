"""The motion frame: what the planner emits and the renderer (or a 3D avatar) consumes, once per tick.

Why a fixed, versioned vector: the planner and renderer are neural networks
exchanged as ONNX/TensorRT engines, and external avatars (Unity, Unreal,
three.js) are driven from the same numbers, so the layout is a contract.
Layout v1 (float32, ``MOTION_FRAME_SIZE`` values):

- [0:52)   the 52 ARKit blendshapes, ARKit names in ARKit's (alphabetical) order, 0..1
- [52:55)  head yaw, pitch, roll in degrees (yaw + = avatar's left, pitch + = up)
- [55:59)  eye yaw, pitch for the left eye then the right eye, degrees
- [59:64)  gesture channels 0..1: nod, shake, tilt, point, open_hands
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MOTION_FRAME_VERSION = 1

ARKIT_BLENDSHAPES: tuple[str, ...] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft",
    "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
    "tongueOut",
)
assert len(ARKIT_BLENDSHAPES) == 52
BLENDSHAPE_INDEX = {name: i for i, name in enumerate(ARKIT_BLENDSHAPES)}

HEAD_SLICE = slice(52, 55)
EYES_SLICE = slice(55, 59)
GESTURE_NAMES: tuple[str, ...] = ("nod", "shake", "tilt", "point", "open_hands")
GESTURE_SLICE = slice(59, 64)
MOTION_FRAME_SIZE = 64

# Physical limits used to clamp untrusted values (degrees).
HEAD_LIMITS_DEG = np.array([45.0, 30.0, 30.0], dtype=np.float32)
EYE_LIMITS_DEG = np.array([30.0, 25.0, 30.0, 25.0], dtype=np.float32)


@dataclass(frozen=True)
class MotionFrame:
    pts_ns: int
    seq: int
    values: np.ndarray  # (MOTION_FRAME_SIZE,) float32

    def blendshape(self, name: str) -> float:
        return float(self.values[BLENDSHAPE_INDEX[name]])

    @property
    def head_deg(self) -> np.ndarray:
        return self.values[HEAD_SLICE]

    @property
    def eyes_deg(self) -> np.ndarray:
        return self.values[EYES_SLICE]


def neutral_motion() -> np.ndarray:
    return np.zeros(MOTION_FRAME_SIZE, dtype=np.float32)


def sanitize_motion(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Clamp a motion vector to its valid ranges, NaN to neutral; returns (clean copy, values changed)."""
    clean = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    before = clean.copy()
    clean[:52] = np.clip(clean[:52], 0.0, 1.0)
    clean[HEAD_SLICE] = np.clip(clean[HEAD_SLICE], -HEAD_LIMITS_DEG, HEAD_LIMITS_DEG)
    clean[EYES_SLICE] = np.clip(clean[EYES_SLICE], -EYE_LIMITS_DEG, EYE_LIMITS_DEG)
    clean[GESTURE_SLICE] = np.clip(clean[GESTURE_SLICE], 0.0, 1.0)
    changed = int(np.count_nonzero(before != clean)) + int(np.count_nonzero(~np.isfinite(values)))
    return clean, changed
