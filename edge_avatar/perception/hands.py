"""Hands: palm detection, 21 landmarks, and rule-based gestures (wave, open palm, thumbs up, pointing).

Why this module exists: a visitor who waves, points at a sign or gives a
thumbs up is talking to the avatar without words. MediaPipe's palm detector
and hand landmark model (mediapipe==0.10.14, MODELS.md) find the hand and its
joints; no package ships a gesture classifier, so gestures are rules on the
joint geometry, which are transparent, need no training data and are easy to
tune per site (``PerceptionConfig`` gesture fields):

- a finger is *extended* when its joints are nearly straight (angles above
  ``finger_extended_min_deg``) and its tip is farther from the wrist than its
  middle joint; the thumb when it is nearly straight and its joints run away
  from the pinky's base (a tucked thumb folds back across the palm);
- open palm: all five extended; pointing: only the index (thumb free);
  thumbs up: only the thumb, pointing up within ``thumbs_up_max_tilt_deg``;
- wave: an open hand whose horizontal position reverses direction at least
  ``wave_min_reversals`` times within ``wave_window_ms`` with a swing of
  ``wave_min_amplitude_hand_widths`` (timed on the media clock, pts).

Pre/post-processing follows MediaPipe's published graph options: palm input
192x192 letterboxed in [0, 1], 2016 anchors (strides 8,16,16,16, two per
cell), hand ROI = palm box x2.6 shifted half a box toward the fingers and
rotated so wrist -> middle-finger MCP points up; tracking ROI from the
landmarks (subset box x2.0, shifted 0.1 up).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge_avatar.backends import InferenceBackend
from edge_avatar.perception.geometry import (
    Detections,
    RotatedRect,
    apply_affine,
    crop,
    decode_ssd,
    detections_to_image,
    letterbox_rect,
    rect_from_points,
    rotation_from_points,
    ssd_anchor_centres,
    weighted_nms,
)
from edge_avatar.perception.options import PerceptionConfig

PALM_INPUT_PX = 192
HAND_INPUT_PX = 224
NUM_HAND_LANDMARKS = 21

# Palm keypoints: 0 wrist centre, 2 middle-finger MCP (the ROI's "up").
PALM_KP_WRIST, PALM_KP_MIDDLE_MCP = 0, 2
# Hand landmarks (MediaPipe hand topology).
WRIST = 0
FINGERS: dict[str, tuple[int, int, int, int]] = {  # MCP (CMC for the thumb), PIP, DIP, TIP
    "thumb": (1, 2, 3, 4),
    "index": (5, 6, 7, 8),
    "middle": (9, 10, 11, 12),
    "ring": (13, 14, 15, 16),
    "pinky": (17, 18, 19, 20),
}
TRACKING_SUBSET = np.array([0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18])


class PalmDetector:
    """Palms in image pixels with 7 keypoints each."""

    def __init__(self, model: InferenceBackend, min_score: float, nms_iou: float = 0.3, max_palms: int = 4):
        self.model = model
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.max_palms = max_palms
        self.anchors = ssd_anchor_centres(PALM_INPUT_PX, strides=(8, 16, 16, 16),
                                          anchors_per_cell=(2, 2, 2, 2))  # (2016, 2)

    def detect(self, image: np.ndarray) -> Detections:
        height, width = image.shape[:2]
        patch, to_image = crop(image, letterbox_rect(width, height), PALM_INPUT_PX, PALM_INPUT_PX)
        x = patch.astype(np.float32) * (1.0 / 255.0)                    # (192, 192, 3) in [0, 1]
        out = self.model.run({"image": x[None]})
        dets = decode_ssd(out["regressors"][0], out["scores"][0, :, 0], self.anchors, PALM_INPUT_PX,
                          num_keypoints=7, min_score=self.min_score)
        dets = weighted_nms(dets, self.nms_iou, self.max_palms)
        return detections_to_image(dets, to_image, PALM_INPUT_PX)


def hand_rect_from_palm(box_xyxy: np.ndarray, keypoints: np.ndarray, scale: float) -> RotatedRect:
    angle = rotation_from_points(keypoints[PALM_KP_WRIST], keypoints[PALM_KP_MIDDLE_MCP], math.pi / 2)
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return RotatedRect((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, angle).scaled(scale, shift_y=-0.5)


def hand_rect_from_landmarks(landmarks: np.ndarray) -> RotatedRect:
    angle = rotation_from_points(landmarks[WRIST, :2], landmarks[FINGERS["middle"][0], :2], math.pi / 2)
    return rect_from_points(landmarks[TRACKING_SUBSET, :2], angle).scaled(2.0, shift_y=-0.1)


class HandLandmarker:
    """21 landmarks (image pixels), presence and right-hand probability for one hand ROI."""

    def __init__(self, model: InferenceBackend):
        self.model = model

    def run(self, image: np.ndarray, rect: RotatedRect) -> tuple[np.ndarray, float, float]:
        patch, to_image = crop(image, rect, HAND_INPUT_PX, HAND_INPUT_PX)
        x = patch.astype(np.float32) * (1.0 / 255.0)                    # (224, 224, 3) in [0, 1]
        out = self.model.run({"image": x[None]})
        pts = out["landmarks"].reshape(NUM_HAND_LANDMARKS, 3)            # (21, 3) crop pixels
        landmarks = np.empty((NUM_HAND_LANDMARKS, 3), dtype=np.float32)  # (21, 3) image pixels
        landmarks[:, :2] = apply_affine(to_image, pts[:, :2])
        landmarks[:, 2] = pts[:, 2] * (rect.width / HAND_INPUT_PX)
        presence = float(out["presence"].ravel()[0])
        right_prob_mirrored = float(out["handedness"].ravel()[0])
        return landmarks, presence, right_prob_mirrored


# --------------------------------------------------------------------------- gesture rules


def _angle_deg(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """Angle at b between b->a and b->c, degrees (180 = straight)."""
    u, v = a - b, c - b
    cos = float(np.dot(u, v) / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-9))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def fingers_extended(landmarks: np.ndarray, min_straight_deg: float) -> dict[str, bool]:
    """Which fingers are extended, from (21, 3) landmarks (x, y used: robust to the model's weak z)."""
    pts = landmarks[:, :2].astype(np.float64)
    wrist = pts[WRIST]
    out: dict[str, bool] = {}
    for name, (mcp, pip, dip, tip) in FINGERS.items():
        straight = min(_angle_deg(pts[mcp], pts[pip], pts[dip]), _angle_deg(pts[pip], pts[dip], pts[tip]))
        if name == "thumb":
            # The thumb bends at MCP and IP (a little less straight when out: 15 deg of slack); it is out
            # when straight and its joints run away from the pinky's base (a tucked thumb folds back across
            # the palm toward it).
            pinky_base = pts[FINGERS["pinky"][0]]
            d_mcp, d_ip, d_tip = (np.linalg.norm(pts[j] - pinky_base) for j in (pip, dip, tip))
            out[name] = bool(straight >= min_straight_deg - 15.0 and d_tip > d_ip > d_mcp)
        else:
            farther = np.linalg.norm(pts[tip] - wrist) > np.linalg.norm(pts[pip] - wrist)
            out[name] = bool(straight >= min_straight_deg and farther)
    return out


def static_gesture(landmarks: np.ndarray, extended: dict[str, bool], thumbs_up_max_tilt_deg: float) -> str:
    """One of none, open_palm, thumbs_up, pointing from the finger states (wave is decided over time)."""
    others = [extended[f] for f in ("index", "middle", "ring", "pinky")]
    if all(others) and extended["thumb"]:
        return "open_palm"
    if extended["index"] and not any(others[1:]):
        return "pointing"
    if extended["thumb"] and not any(others):
        mcp, tip = landmarks[FINGERS["thumb"][1], :2], landmarks[FINGERS["thumb"][3], :2]
        dx, dy = float(tip[0] - mcp[0]), float(tip[1] - mcp[1])
        tilt = math.degrees(math.atan2(abs(dx), -dy))  # 0 = straight up in the image
        if tilt <= thumbs_up_max_tilt_deg:
            return "thumbs_up"
    return "none"


@dataclass
class WaveDetector:
    """Counts direction reversals of an open hand's horizontal position over a time window (media clock)."""

    window_ns: int
    min_reversals: int
    min_amplitude_widths: float
    history: deque = field(default_factory=lambda: deque(maxlen=128))  # (pts_ns, x_px, hand_width_px, open)

    def update(self, pts_ns: int, x_px: float, hand_width_px: float, open_hand: bool) -> bool:
        self.history.append((pts_ns, x_px, hand_width_px, open_hand))
        while self.history and pts_ns - self.history[0][0] > self.window_ns:
            self.history.popleft()
        if len(self.history) < 4 or sum(h[3] for h in self.history) < len(self.history) / 2:
            return False
        xs = np.array([h[1] for h in self.history])
        width = float(np.median([h[2] for h in self.history]))
        threshold = self.min_amplitude_widths * width
        # Reversals with hysteresis: a swing counts once x moves more than the threshold back from the
        # last extreme in the current direction.
        reversals, direction, extreme = 0, 0, float(xs[0])
        for x in xs[1:]:
            if direction == 0:
                if abs(x - extreme) > threshold:
                    direction, extreme = (1 if x > extreme else -1), float(x)
            elif direction > 0:
                if x > extreme:
                    extreme = float(x)
                elif extreme - x > threshold:
                    reversals, direction, extreme = reversals + 1, -1, float(x)
            else:
                if x < extreme:
                    extreme = float(x)
                elif x - extreme > threshold:
                    reversals, direction, extreme = reversals + 1, 1, float(x)
        return reversals >= self.min_reversals


def handedness_label(right_prob_mirrored: float, camera_mirrored: bool) -> tuple[str, float]:
    """The visitor's own hand: the model assumes a mirrored (selfie) image, so swap for a plain camera."""
    right_prob = right_prob_mirrored if camera_mirrored else 1.0 - right_prob_mirrored
    return ("right" if right_prob >= 0.5 else "left"), right_prob


def wave_detector(config: PerceptionConfig) -> WaveDetector:
    return WaveDetector(int(config.wave_window_ms * 1e6), config.wave_min_reversals,
                        config.wave_min_amplitude_hand_widths)
