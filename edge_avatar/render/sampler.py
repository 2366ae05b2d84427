"""Motion frames to train and test the renderer on: realistic mixtures, and enough of the odd ones.

Why this module exists: the student only learns the faces it is shown. The
planner (issue 6) will emit lip-sync visemes, smiles, blinks, brow raises,
head turns and gaze shifts, mostly small and mostly in a few combinations;
perception mirrors a visitor's 52 ARKit blendshapes, which can be anything.
So a sample is built like a moment of conversation -- a viseme (sometimes
two, blended as coarticulation does), an expression, a blink phase, brows,
a head pose and a gaze -- and a share of samples adds random activations of
any blendshape so every one of the 52 is seen across its whole range.

Everything is drawn from one ``numpy.random.Generator`` seeded by the
caller, so a seed names a data set exactly (training, held-out evaluation
and the unit tests use different seeds).
"""

from __future__ import annotations

import numpy as np

from edge_avatar.motion import (
    ARKIT_BLENDSHAPES,
    BLENDSHAPE_INDEX,
    EYE_LIMITS_DEG,
    EYES_SLICE,
    GESTURE_SLICE,
    HEAD_LIMITS_DEG,
    HEAD_SLICE,
    MOTION_FRAME_SIZE,
)

# Our own viseme -> blendshape table (weights 0..1), after the usual 15-viseme sets used for lip sync.
VISEMES: dict[str, dict[str, float]] = {
    "sil": {},
    "PP": {"mouthClose": 0.25, "mouthPressLeft": 0.5, "mouthPressRight": 0.5, "mouthRollLower": 0.2,
           "mouthRollUpper": 0.15, "jawOpen": 0.08},
    "FF": {"mouthRollLower": 0.6, "mouthUpperUpLeft": 0.3, "mouthUpperUpRight": 0.3, "jawOpen": 0.12,
           "mouthFunnel": 0.1},
    "TH": {"jawOpen": 0.2, "tongueOut": 0.35, "mouthLowerDownLeft": 0.15, "mouthLowerDownRight": 0.15},
    "DD": {"jawOpen": 0.22, "mouthStretchLeft": 0.15, "mouthStretchRight": 0.15, "mouthLowerDownLeft": 0.2,
           "mouthLowerDownRight": 0.2},
    "kk": {"jawOpen": 0.3, "mouthStretchLeft": 0.2, "mouthStretchRight": 0.2},
    "CH": {"jawOpen": 0.18, "mouthFunnel": 0.45, "mouthPucker": 0.25, "mouthUpperUpLeft": 0.2,
           "mouthUpperUpRight": 0.2},
    "SS": {"jawOpen": 0.08, "mouthStretchLeft": 0.35, "mouthStretchRight": 0.35, "mouthSmileLeft": 0.15,
           "mouthSmileRight": 0.15, "mouthUpperUpLeft": 0.15, "mouthUpperUpRight": 0.15},
    "nn": {"jawOpen": 0.15, "mouthClose": 0.05, "mouthLowerDownLeft": 0.1, "mouthLowerDownRight": 0.1},
    "RR": {"jawOpen": 0.15, "mouthPucker": 0.4, "mouthFunnel": 0.3},
    "aa": {"jawOpen": 0.65, "mouthLowerDownLeft": 0.3, "mouthLowerDownRight": 0.3, "mouthUpperUpLeft": 0.1,
           "mouthUpperUpRight": 0.1},
    "E": {"jawOpen": 0.35, "mouthStretchLeft": 0.4, "mouthStretchRight": 0.4, "mouthSmileLeft": 0.2,
          "mouthSmileRight": 0.2, "mouthLowerDownLeft": 0.25, "mouthLowerDownRight": 0.25},
    "ih": {"jawOpen": 0.25, "mouthStretchLeft": 0.3, "mouthStretchRight": 0.3, "mouthSmileLeft": 0.15,
           "mouthSmileRight": 0.15},
    "oh": {"jawOpen": 0.45, "mouthFunnel": 0.6, "mouthPucker": 0.2},
    "ou": {"jawOpen": 0.2, "mouthPucker": 0.75, "mouthFunnel": 0.35},
}

EXPRESSIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "friendly": {"mouthSmileLeft": 0.45, "mouthSmileRight": 0.45, "cheekSquintLeft": 0.2,
                 "cheekSquintRight": 0.2, "browOuterUpLeft": 0.1, "browOuterUpRight": 0.1},
    "happy": {"mouthSmileLeft": 0.85, "mouthSmileRight": 0.85, "cheekSquintLeft": 0.55, "cheekSquintRight": 0.55,
              "eyeSquintLeft": 0.3, "eyeSquintRight": 0.3, "mouthDimpleLeft": 0.3, "mouthDimpleRight": 0.3,
              "jawOpen": 0.1},
    "surprised": {"browInnerUp": 0.8, "browOuterUpLeft": 0.7, "browOuterUpRight": 0.7, "eyeWideLeft": 0.7,
                  "eyeWideRight": 0.7, "jawOpen": 0.35, "mouthFunnel": 0.2},
    "concerned": {"browInnerUp": 0.7, "browDownLeft": 0.15, "browDownRight": 0.15, "mouthFrownLeft": 0.35,
                  "mouthFrownRight": 0.35, "mouthPressLeft": 0.2, "mouthPressRight": 0.2},
    "thinking": {"browDownLeft": 0.35, "browOuterUpRight": 0.3, "eyeLookUpLeft": 0.5, "eyeLookUpRight": 0.5,
                 "mouthPressLeft": 0.3, "mouthPressRight": 0.3, "mouthLeft": 0.25, "eyeSquintLeft": 0.2},
    "sad": {"browInnerUp": 0.6, "mouthFrownLeft": 0.6, "mouthFrownRight": 0.6, "mouthShrugLower": 0.35,
            "eyeSquintLeft": 0.1, "eyeSquintRight": 0.1, "mouthRollLower": 0.1},
    "skeptical": {"browDownRight": 0.5, "browOuterUpLeft": 0.5, "mouthRight": 0.3, "mouthPressRight": 0.35,
                  "noseSneerRight": 0.15, "eyeSquintRight": 0.35},
    "disgust": {"noseSneerLeft": 0.7, "noseSneerRight": 0.7, "mouthUpperUpLeft": 0.5, "mouthUpperUpRight": 0.5,
                "browDownLeft": 0.5, "browDownRight": 0.5, "mouthFrownLeft": 0.3, "mouthFrownRight": 0.3},
    "amused": {"mouthSmileLeft": 0.6, "mouthSmileRight": 0.25, "mouthDimpleLeft": 0.4, "cheekSquintLeft": 0.4,
               "browOuterUpLeft": 0.2, "mouthLeft": 0.15},
    "puffed": {"cheekPuff": 0.8, "mouthPucker": 0.2, "mouthClose": 0.1},
}


SAMPLER_MODES = ("conversation", "extremes")


class MotionSampler:
    """Draws motion frames (64 float32 values, layout v1).

    ``mode="conversation"`` (the default) draws moments of a conversation; ``mode="extremes"`` draws
    the ends of the ranges that conversation rarely reaches -- full blinks and winks, a wide-open jaw,
    one to three blendshapes near 1.0, strong expressions, the whole gaze range -- which the student
    is fine-tuned on so that it does not round them off.
    """

    def __init__(self, seed: int, mode: str = "conversation"):
        if mode not in SAMPLER_MODES:
            raise ValueError(f"unknown sampler mode {mode!r}; expected one of {SAMPLER_MODES}")
        self.rng = np.random.default_rng(seed)
        self.mode = mode
        self._viseme_names = list(VISEMES)
        self._expression_names = list(EXPRESSIONS)

    def sample(self) -> np.ndarray:
        return self._extreme() if self.mode == "extremes" else self._conversation()

    def _extreme(self) -> np.ndarray:
        rng = self.rng
        m = np.zeros(MOTION_FRAME_SIZE, np.float32)
        bs = np.zeros(52, np.float32)
        if rng.random() < 0.3:
            name = self._expression_names[rng.integers(len(self._expression_names))]
            _add(bs, EXPRESSIONS[name], rng.uniform(0.8, 1.2))
        r = rng.random()
        if r < 0.35:                                   # a closed or nearly closed blink
            closed = rng.uniform(0.8, 1.0)
            bs[_i("eyeBlinkLeft")] = closed + rng.normal(0, 0.03)
            bs[_i("eyeBlinkRight")] = closed + rng.normal(0, 0.03)
        elif r < 0.45:                                 # a wink
            bs[_i("eyeBlinkLeft" if rng.random() < 0.5 else "eyeBlinkRight")] = rng.uniform(0.8, 1.0)
        if rng.random() < 0.3:                         # the jaw wide open, lips sometimes held closed
            bs[_i("jawOpen")] = rng.uniform(0.6, 1.0)
            if rng.random() < 0.25:
                bs[_i("mouthClose")] = rng.uniform(0.3, 1.0) * bs[_i("jawOpen")]
        for _ in range(int(rng.integers(1, 4))):       # any blendshape near the end of its range
            bs[rng.integers(52)] = rng.uniform(0.6, 1.0)
        m[:52] = np.clip(bs, 0.0, 1.0)
        m[HEAD_SLICE] = np.clip(rng.normal(0.0, 1.0, 3) * np.array([15.0, 10.0, 6.0]), -HEAD_LIMITS_DEG,
                                HEAD_LIMITS_DEG)
        eyes = rng.uniform(-1.0, 1.0, 2) * EYE_LIMITS_DEG[:2] if rng.random() < 0.5 else np.zeros(2)
        m[EYES_SLICE] = np.clip(np.concatenate([eyes, eyes + rng.normal(0, 1.0, 2)]), -EYE_LIMITS_DEG,
                                EYE_LIMITS_DEG)
        if rng.random() < 0.3:
            _look_blendshapes(m, rng.uniform(0.5, 1.0))
        return m

    def _conversation(self) -> np.ndarray:
        rng = self.rng
        m = np.zeros(MOTION_FRAME_SIZE, np.float32)
        bs = np.zeros(52, np.float32)

        # An expression, at some intensity, sometimes none.
        if rng.random() < 0.75:
            name = self._expression_names[rng.integers(len(self._expression_names))]
            _add(bs, EXPRESSIONS[name], rng.uniform(0.3, 1.1))
        # Speaking: one viseme, or two blended (coarticulation), at some amplitude.
        if rng.random() < 0.65:
            a = self._viseme_names[rng.integers(len(self._viseme_names))]
            amp = rng.uniform(0.4, 1.25)
            if rng.random() < 0.5:
                b = self._viseme_names[rng.integers(len(self._viseme_names))]
                w = rng.uniform()
                _add(bs, VISEMES[a], amp * w)
                _add(bs, VISEMES[b], amp * (1 - w))
            else:
                _add(bs, VISEMES[a], amp)
        # Blinks: mostly open, often mid-blink, sometimes a wink.
        r = rng.random()
        if r < 0.3:
            phase = rng.uniform(0.0, 1.0)
            bs[_i("eyeBlinkLeft")] += phase + rng.normal(0, 0.04)
            bs[_i("eyeBlinkRight")] += phase + rng.normal(0, 0.04)
        elif r < 0.35:
            bs[_i("eyeBlinkLeft" if rng.random() < 0.5 else "eyeBlinkRight")] += rng.uniform(0.5, 1.0)
        # Brows move on stressed syllables and questions.
        if rng.random() < 0.4:
            bs[_i("browInnerUp")] += rng.uniform(0, 0.6)
            up = rng.uniform(0, 0.6)
            bs[_i("browOuterUpLeft")] += up * rng.uniform(0.7, 1.0)
            bs[_i("browOuterUpRight")] += up * rng.uniform(0.7, 1.0)
        # Any blendshape, anywhere in its range: covers all 52 and the combinations nobody planned.
        if rng.random() < 0.35:
            for _ in range(int(rng.integers(1, 7))):
                bs[rng.integers(52)] += rng.uniform(0.0, 1.0)
        bs += np.abs(rng.normal(0.0, 0.015, 52)).astype(np.float32)  # the small activity of a live face
        m[:52] = np.clip(bs, 0.0, 1.0)

        # Head: mostly small turns, sometimes anything up to the limits.
        if rng.random() < 0.12:
            head = rng.uniform(-1.0, 1.0, 3) * HEAD_LIMITS_DEG
        else:
            head = np.clip(rng.normal(0.0, 1.0, 3) * np.array([13.0, 8.0, 5.0]), -HEAD_LIMITS_DEG, HEAD_LIMITS_DEG)
        m[HEAD_SLICE] = head
        # Gaze: both eyes together with a little vergence; eyeLook* usually agree with it.
        if rng.random() < 0.1:
            eyes = rng.uniform(-1.0, 1.0, 4) * EYE_LIMITS_DEG
        else:
            yaw, pitch = rng.normal(0.0, 1.0) * 11.0, rng.normal(0.0, 1.0) * 7.0
            verge = rng.normal(0.0, 1.5)
            eyes = np.array([yaw - verge, pitch, yaw + verge, pitch + rng.normal(0, 0.5)])
        m[EYES_SLICE] = np.clip(eyes, -EYE_LIMITS_DEG, EYE_LIMITS_DEG)
        if rng.random() < 0.5:
            _look_blendshapes(m, rng.uniform(0.5, 1.0))
        # Gesture channels do not change the face (the head angles already carry nods and shakes), but
        # they arrive with every frame, so the student must learn to ignore them.
        if rng.random() < 0.3:
            m[GESTURE_SLICE] = rng.uniform(0.0, 1.0, 5)
        return m

    def batch(self, count: int) -> np.ndarray:
        """(count, 64) float32."""
        return np.stack([self.sample() for _ in range(count)]).astype(np.float32)


def _i(name: str) -> int:
    return BLENDSHAPE_INDEX[name]


def _add(bs: np.ndarray, weights: dict[str, float], scale: float) -> None:
    for name, w in weights.items():
        bs[_i(name)] += w * scale


def _look_blendshapes(m: np.ndarray, gain: float) -> None:
    """Set eyeLook* from the eye angles, as a face tracker would report them for the same gaze."""
    for sign, yaw, pitch in ((1, m[55], m[56]), (-1, m[57], m[58])):
        side = "Left" if sign > 0 else "Right"
        out = max(0.0, sign * yaw / 30.0) * gain     # the left eye looks out when it turns to the avatar's left
        inward = max(0.0, -sign * yaw / 30.0) * gain
        m[_i("eyeLookOut" + side)] = min(1.0, max(m[_i("eyeLookOut" + side)], out))
        m[_i("eyeLookIn" + side)] = min(1.0, max(m[_i("eyeLookIn" + side)], inward))
        m[_i("eyeLookUp" + side)] = min(1.0, max(m[_i("eyeLookUp" + side)], max(0.0, pitch / 25.0) * gain))
        m[_i("eyeLookDown" + side)] = min(1.0, max(m[_i("eyeLookDown" + side)], max(0.0, -pitch / 25.0) * gain))


def named_expressions() -> dict[str, np.ndarray]:
    """A few labelled motion frames for contact sheets and tests (neutral first)."""
    def frame(weights: dict[str, float], head=(0.0, 0.0, 0.0), eyes=(0.0, 0.0, 0.0, 0.0)) -> np.ndarray:
        m = np.zeros(MOTION_FRAME_SIZE, np.float32)
        _add(m, weights, 1.0)
        m[HEAD_SLICE], m[EYES_SLICE] = head, eyes
        return m

    return {
        "neutral": frame({}),
        "friendly": frame(EXPRESSIONS["friendly"]),
        "happy": frame(EXPRESSIONS["happy"], head=(8.0, 3.0, 4.0)),
        "speaking aa": frame(VISEMES["aa"]),
        "speaking ou": frame(VISEMES["ou"], head=(-12.0, 0.0, 0.0)),
        "speaking FF": frame(VISEMES["FF"]),
        "surprised": frame(EXPRESSIONS["surprised"]),
        "concerned": frame(EXPRESSIONS["concerned"], head=(0.0, -6.0, -5.0)),
        "thinking": frame(EXPRESSIONS["thinking"], head=(10.0, 8.0, 0.0), eyes=(12.0, 12.0, 12.0, 12.0)),
        "blink": frame({"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}),
        "looking left": frame({}, head=(30.0, 0.0, 0.0), eyes=(15.0, 0.0, 15.0, 0.0)),
        "looking down": frame({}, head=(-20.0, -18.0, 8.0), eyes=(0.0, -15.0, 0.0, -15.0)),
        "disgust": frame(EXPRESSIONS["disgust"]),
        "puffed": frame(EXPRESSIONS["puffed"]),
        "tongue out": frame({"tongueOut": 1.0, "jawOpen": 0.3}),
        "wink": frame({"eyeBlinkLeft": 1.0, "mouthSmileLeft": 0.6, "cheekSquintLeft": 0.4}),
    }


assert len(ARKIT_BLENDSHAPES) == 52
