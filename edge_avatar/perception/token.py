"""The perception token: a fixed-layout, versioned float32 vector per camera frame, plus structured fields.

Why this module exists: the planner is a neural network exchanged as an
ONNX/TensorRT engine, so its input is a contract -- the same index always
means the same quantity, in the same unit, or the token's version changes.
No emotion *word* ever stands in for the numbers: emotion is a probability
vector and the blendshapes are the visitor's actual face. The structured
``PerceptionResult`` beside it carries what a vector cannot (landmarks,
several faces, the reason a frame was rejected) for the CLI, tests and
telemetry.

Token layout, version 1 (``TOKEN_SIZE`` = 107 float32; "visitor" = the active
visitor; every value is 0 when there is none unless stated):

| index  | name                | n  | unit     | meaning |
|--------|---------------------|----|----------|---------|
| 0      | version             | 1  | 1.0      | layout version (``TOKEN_VERSION``) |
| 1      | frame_valid         | 1  | 0/1      | frame analysed (0: dark, overexposed, corrupted; see reason) |
| 2      | visitor_present     | 1  | 0/1      | an active visitor's face is in this frame |
| 3:7    | engagement          | 4  | one-hot  | approaching, engaged, leaving, gone (always set) |
| 7      | distance_m          | 1  | m        | visitor distance: aligned depth, else face size |
| 8      | distance_from_depth | 1  | 0/1      | 1 when distance_m came from the depth image |
| 9:13   | face_box            | 4  | 0..1     | face box centre x, centre y, width, height (of frame w, h) |
| 13     | face_score          | 1  | 0..1     | landmark presence |
| 14     | face_partial        | 1  | 0/1      | the face box reaches the frame edge (half face) |
| 15:18  | head_pose_deg       | 3  | deg      | yaw (+ nose to image right), pitch (+ chin up), roll (+ ccw) |
| 18:20  | gaze_deg            | 2  | deg      | gaze yaw, pitch from the camera axis (head + eyes) |
| 20     | looking_at_screen   | 1  | 0..1     | soft score that the gaze falls on the screen |
| 21     | attending           | 1  | 0..1     | head toward the avatar and looking (engagement input) |
| 22:74  | blendshapes         | 52 | 0..1     | ARKit blendshapes, ARKit order (tongueOut 0: not estimated) |
| 74:81  | emotion             | 7  | prob     | angry disgust fear happy sad surprise neutral, sum 1 |
| 81:83  | valence_arousal     | 2  | -1..1    | valence, arousal implied by the emotion probabilities |
| 83     | faces_count         | 1  | count    | faces in view (visitor + bystanders) |
| 84     | bystanders_count    | 1  | count    | faces in view that are not the visitor |
| 85     | voice_rms           | 1  | 0..1     | microphone level given to ``perceive`` |
| 86     | state_age_s         | 1  | s        | time since the engagement state changed (media clock) |
| 87:97  | hand_0              | 10 | mixed    | see below; hands ordered by size, largest first |
| 97:107 | hand_1              | 10 | mixed    | the second hand, same layout |

A hand's 10 values: present (0/1), is_right (the visitor's own right hand),
centre x, centre y (0..1 of frame width, height), size (box width / frame
width), then the gesture one-hot: none, wave, open_palm, thumbs_up, pointing.
Emotion is the FER image model fused with blendshape evidence and smoothed
over the track; "ccw" is counter-clockwise as the camera sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_avatar.motion import ARKIT_BLENDSHAPES

TOKEN_VERSION = 1

ENGAGEMENT_STATES: tuple[str, ...] = ("approaching", "engaged", "leaving", "gone")
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
GESTURES: tuple[str, ...] = ("none", "wave", "open_palm", "thumbs_up", "pointing")
HAND_FIELDS: tuple[str, ...] = ("present", "is_right", "cx", "cy", "size") + tuple(f"gesture_{g}" for g in GESTURES)
MAX_TOKEN_HANDS = 2

# (name, size) in token order; the slices below are derived from it.
TOKEN_FIELDS: tuple[tuple[str, int], ...] = (
    ("version", 1),
    ("frame_valid", 1),
    ("visitor_present", 1),
    ("engagement", len(ENGAGEMENT_STATES)),
    ("distance_m", 1),
    ("distance_from_depth", 1),
    ("face_box", 4),
    ("face_score", 1),
    ("face_partial", 1),
    ("head_pose_deg", 3),
    ("gaze_deg", 2),
    ("looking_at_screen", 1),
    ("attending", 1),
    ("blendshapes", len(ARKIT_BLENDSHAPES)),
    ("emotion", len(EMOTIONS)),
    ("valence_arousal", 2),
    ("faces_count", 1),
    ("bystanders_count", 1),
    ("voice_rms", 1),
    ("state_age_s", 1),
    *((f"hand_{i}", len(HAND_FIELDS)) for i in range(MAX_TOKEN_HANDS)),
)


def _slices() -> dict[str, slice]:
    out, start = {}, 0
    for name, size in TOKEN_FIELDS:
        out[name] = slice(start, start + size)
        start += size
    return out


TOKEN_SLICES: dict[str, slice] = _slices()
TOKEN_SIZE: int = sum(size for _, size in TOKEN_FIELDS)
assert TOKEN_SIZE == 107

# Valence / arousal of each emotion class (circumplex placements, Russell 1980; coarse and documented).
EMOTION_VALENCE_AROUSAL = np.array([
    [-0.6, 0.7],   # angry
    [-0.7, 0.3],   # disgust
    [-0.6, 0.8],   # fear
    [0.8, 0.5],    # happy
    [-0.7, -0.4],  # sad
    [0.3, 0.8],    # surprise
    [0.0, 0.0],    # neutral
], dtype=np.float32)


# --------------------------------------------------------------------------- structured results


@dataclass
class Gaze:
    """Where the visitor looks. Angles in degrees; yaw + toward the image's right, pitch + up."""

    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    eye_yaw_deg: tuple[float, float] = (0.0, 0.0)    # per eye relative to the head: image-left eye, image-right eye
    eye_pitch_deg: tuple[float, float] = (0.0, 0.0)
    looking_at_screen: float = 0.0                   # 0..1

    def to_dict(self) -> dict[str, Any]:
        return {"yaw_deg": round(self.yaw_deg, 2), "pitch_deg": round(self.pitch_deg, 2),
                "eye_yaw_deg": [round(v, 2) for v in self.eye_yaw_deg],
                "eye_pitch_deg": [round(v, 2) for v in self.eye_pitch_deg],
                "looking_at_screen": round(self.looking_at_screen, 3)}


@dataclass
class FaceResult:
    """One face in one frame."""

    track_id: int
    box_xyxy: np.ndarray                 # (4,) pixels, from the landmarks (or the detector when not meshed)
    score: float                         # landmark presence, or detector score when not meshed
    detector_score: float = 0.0
    landmarks: np.ndarray | None = None  # (478, 3) pixels; z relative, scaled like x
    blendshapes: np.ndarray | None = None  # (52,) ARKit order
    head_pose_deg: np.ndarray | None = None  # (3,) yaw, pitch, roll
    gaze: Gaze | None = None
    emotion: np.ndarray | None = None    # (7,) EMOTIONS order, fused
    emotion_image: np.ndarray | None = None  # (7,) the image model alone
    distance_m: float = 0.0
    distance_source: str = "none"        # "depth", "face_size", "none"
    face_scale_px_per_cm: float = 0.0
    attending: float = 0.0
    partial: bool = False
    is_active: bool = False

    @property
    def meshed(self) -> bool:
        return self.landmarks is not None

    def to_dict(self, with_landmarks: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "track_id": self.track_id,
            "box": [round(float(v), 1) for v in self.box_xyxy],
            "score": round(float(self.score), 4),
            "detector_score": round(float(self.detector_score), 4),
            "active_visitor": self.is_active,
            "partial": self.partial,
            "distance_m": round(float(self.distance_m), 3),
            "distance_source": self.distance_source,
            "attending": round(float(self.attending), 3),
            "landmark_count": 0 if self.landmarks is None else int(self.landmarks.shape[0]),
        }
        if self.blendshapes is not None:
            out["blendshapes"] = {n: round(float(v), 4) for n, v in zip(ARKIT_BLENDSHAPES, self.blendshapes)}
        if self.head_pose_deg is not None:
            out["head_pose_deg"] = {k: round(float(v), 2) for k, v in zip(("yaw", "pitch", "roll"),
                                                                          self.head_pose_deg)}
        if self.gaze is not None:
            out["gaze"] = self.gaze.to_dict()
        if self.emotion is not None:
            out["emotion"] = {n: round(float(v), 4) for n, v in zip(EMOTIONS, self.emotion)}
        if self.emotion_image is not None:
            out["emotion_image_model"] = {n: round(float(v), 4) for n, v in zip(EMOTIONS, self.emotion_image)}
        if with_landmarks and self.landmarks is not None:
            out["landmarks"] = np.round(self.landmarks, 2).tolist()
        return out


@dataclass
class HandResult:
    """One hand in one frame."""

    track_id: int
    box_xyxy: np.ndarray                 # (4,) pixels
    score: float                         # landmark presence
    landmarks: np.ndarray                # (21, 3) pixels
    handedness: str = "unknown"          # "left" / "right" (the visitor's own hand)
    right_prob: float = 0.5
    gesture: str = "none"
    gesture_scores: dict[str, float] = field(default_factory=dict)
    fingers_extended: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "box": [round(float(v), 1) for v in self.box_xyxy],
            "score": round(float(self.score), 4),
            "handedness": self.handedness,
            "gesture": self.gesture,
            "fingers_extended": self.fingers_extended,
            "extended_count": int(sum(self.fingers_extended.values())),
            "landmarks": np.round(self.landmarks, 2).tolist(),
        }


@dataclass
class PerceptionResult:
    """Everything perceived in one frame; ``token()`` packs it into the planner's vector."""

    pts_ns: int
    seq: int
    frame_valid: bool
    reason: str                          # "ok", "no_face", "too_dark", "overexposed", "corrupted: ...", ...
    image_size: tuple[int, int] = (0, 0)  # (width, height)
    faces: list[FaceResult] = field(default_factory=list)
    hands: list[HandResult] = field(default_factory=list)
    engagement: str = "gone"
    state_age_s: float = 0.0
    voice_rms: float = 0.0
    detection_ran: bool = False
    stages_ms: dict[str, float] = field(default_factory=dict)

    @property
    def active(self) -> FaceResult | None:
        for face in self.faces:
            if face.is_active:
                return face
        return None

    @property
    def bystanders(self) -> list[FaceResult]:
        return [f for f in self.faces if not f.is_active]

    def token(self) -> np.ndarray:
        return encode_token(self)

    def to_dict(self, with_landmarks: bool = False) -> dict[str, Any]:
        return {
            "pts_ns": self.pts_ns, "seq": self.seq, "frame_valid": self.frame_valid, "reason": self.reason,
            "image_size": list(self.image_size), "engagement": self.engagement,
            "state_age_s": round(self.state_age_s, 3),
            "faces": [f.to_dict(with_landmarks) for f in self.faces],
            "hands": [h.to_dict() for h in self.hands],
            "stages_ms": {k: round(v, 3) for k, v in self.stages_ms.items()},
        }


def empty_token() -> np.ndarray:
    token = np.zeros(TOKEN_SIZE, dtype=np.float32)
    token[TOKEN_SLICES["version"]] = TOKEN_VERSION
    token[TOKEN_SLICES["engagement"].start + ENGAGEMENT_STATES.index("gone")] = 1.0
    return token


def encode_token(result: PerceptionResult) -> np.ndarray:
    """Pack a ``PerceptionResult`` into the version-1 layout documented above."""
    token = empty_token()
    s = TOKEN_SLICES
    token[s["frame_valid"]] = float(result.frame_valid)
    token[s["engagement"]] = 0.0
    token[s["engagement"].start + ENGAGEMENT_STATES.index(result.engagement)] = 1.0
    token[s["state_age_s"]] = result.state_age_s
    token[s["voice_rms"]] = float(np.clip(result.voice_rms, 0.0, 1.0))
    token[s["faces_count"]] = len(result.faces)
    width, height = result.image_size
    visitor = result.active
    token[s["bystanders_count"]] = len(result.faces) - (1 if visitor is not None else 0)
    if visitor is not None and width > 0 and height > 0:
        token[s["visitor_present"]] = 1.0
        token[s["distance_m"]] = visitor.distance_m
        token[s["distance_from_depth"]] = float(visitor.distance_source == "depth")
        x1, y1, x2, y2 = (float(v) for v in visitor.box_xyxy)
        token[s["face_box"]] = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width,
                                (y2 - y1) / height)
        token[s["face_score"]] = visitor.score
        token[s["face_partial"]] = float(visitor.partial)
        if visitor.head_pose_deg is not None:
            token[s["head_pose_deg"]] = visitor.head_pose_deg
        if visitor.gaze is not None:
            token[s["gaze_deg"]] = (visitor.gaze.yaw_deg, visitor.gaze.pitch_deg)
            token[s["looking_at_screen"]] = visitor.gaze.looking_at_screen
        token[s["attending"]] = visitor.attending
        if visitor.blendshapes is not None:
            token[s["blendshapes"]] = visitor.blendshapes
        if visitor.emotion is not None:
            token[s["emotion"]] = visitor.emotion
            token[s["valence_arousal"]] = visitor.emotion @ EMOTION_VALENCE_AROUSAL
    hands = sorted(result.hands, key=lambda h: -(h.box_xyxy[2] - h.box_xyxy[0]))[:MAX_TOKEN_HANDS]
    _encode_hands(token, hands, width, height)
    # A degenerate fit must not hand NaN or inf to the planner network.
    return np.nan_to_num(token, nan=0.0, posinf=0.0, neginf=0.0)


def _encode_hands(token: np.ndarray, hands: list[HandResult], width: int, height: int) -> None:
    s = TOKEN_SLICES
    for i, hand in enumerate(hands):
        if width <= 0 or height <= 0:
            break
        sl = s[f"hand_{i}"]
        x1, y1, x2, y2 = (float(v) for v in hand.box_xyxy)
        values = [1.0, float(hand.handedness == "right"), (x1 + x2) / 2 / width, (y1 + y2) / 2 / height,
                  (x2 - x1) / width] + [float(hand.gesture == g) for g in GESTURES]
        token[sl] = values


def token_field(token: np.ndarray, name: str) -> np.ndarray:
    """The values of one named field of a token (a view)."""
    return token[TOKEN_SLICES[name]]
