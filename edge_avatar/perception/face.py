"""Faces: detection, the 478-point mesh, blendshapes, head pose, gaze, emotion.

Why this module exists: it turns the pixels of one face into the numbers the
planner needs, with MediaPipe's published pre- and post-processing (MODELS.md)
and nothing but numpy around the networks:

- ``FaceDetector``: BlazeFace full range (faces to about 5 m; a kiosk visitor
  approaching from the door is small), letterboxed 192x192 input, SSD anchors
  (one layer, stride 4), sigmoid scores, weighted NMS;
- ``FaceMesh``: the 256x256 face mesh v2 on a crop rotated by the eye line;
  478 landmarks including 10 iris points;
- ``blendshapes``: the 146-landmark subset (face_blendshapes_graph) in image
  pixels -> 52 ARKit coefficients;
- ``head_pose``: weighted Procrustes (Umeyama) of the 33 basis landmarks onto
  the canonical face from the same ``.task`` bundle; the scale (pixels per cm)
  also gives the distance through the focal length;
- ``gaze``: iris centre against the eye corners in the head's own frame;
- ``EmotionClassifier``: FER2013 mini-Xception on a 64x64 gray upright crop,
  then fused log-linearly with blendshape evidence (the model alone is weak
  on non-frontal, low-light faces; the blendshapes are geometric and stable).

The model instances are ``InferenceBackend`` objects, so the same code runs in
ONNX Runtime here and in TensorRT on a Jetson.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_avatar.backends import InferenceBackend
from edge_avatar.motion import ARKIT_BLENDSHAPES
from edge_avatar.perception.geometry import (
    Detections,
    RotatedRect,
    apply_affine,
    crop,
    decode_ssd,
    detections_to_image,
    euler_from_rotation,
    import_cv2,
    letterbox_rect,
    rect_from_points,
    rotation_from_points,
    sigmoid,
    ssd_anchor_centres,
    weighted_nms,
    weighted_umeyama,
)
from edge_avatar.perception.models import FaceGeometry
from edge_avatar.perception.token import EMOTIONS, Gaze

DETECTOR_INPUT_PX = 192
MESH_INPUT_PX = 256
EMOTION_INPUT_PX = 64
NUM_LANDMARKS = 478

# Detector keypoints (BlazeFace): the eye that appears on the image's left, the other eye, nose tip,
# mouth centre, and the two ear tragions.
KP_EYE_IMAGE_LEFT, KP_EYE_IMAGE_RIGHT, KP_NOSE, KP_MOUTH = 0, 1, 2, 3

# Mesh landmarks used here (MediaPipe face mesh topology).
LM_EYE_IMAGE_LEFT_OUTER, LM_EYE_IMAGE_LEFT_INNER = 33, 133     # the visitor's right eye
LM_EYE_IMAGE_RIGHT_INNER, LM_EYE_IMAGE_RIGHT_OUTER = 362, 263  # the visitor's left eye
LM_IRIS_IMAGE_LEFT, LM_IRIS_IMAGE_RIGHT = 468, 473              # iris centres (5 points each: centre + 4)

# The 146 landmarks the blendshape model reads (face_blendshapes_graph.cc, kLandmarksSubsetIdxs).
BLENDSHAPE_LANDMARKS = np.array([
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70,
    78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149,
    150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195,
    197, 234, 246, 249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300,
    308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375,
    377, 378, 379, 380, 381, 382, 384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454,
    466, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
])
assert BLENDSHAPE_LANDMARKS.size == 146
# The model's 52 outputs: "_neutral", then ARKit's names in ARKit order without tongueOut.
BLENDSHAPE_MODEL_NAMES: tuple[str, ...] = ("_neutral",) + tuple(n for n in ARKIT_BLENDSHAPES if n != "tongueOut")
assert len(BLENDSHAPE_MODEL_NAMES) == 52
_ARKIT_FROM_MODEL = np.array([BLENDSHAPE_MODEL_NAMES.index(n) if n in BLENDSHAPE_MODEL_NAMES else -1
                              for n in ARKIT_BLENDSHAPES])

EYEBALL_RADIUS_CM = 1.2  # human eyeball radius (about 12 mm): iris offset -> eye rotation
# Where the iris centre sits, relative to the midpoint of the eye corners, when the eye looks straight ahead
# (head frame, cm): about 2 mm above the corner line and 1 mm toward the temple (the inner corner reaches
# further toward the nose). Measured on two frontal photos (astronaut, opencv-doc portrait) looking into the
# camera: without it both read about 10 deg "up" and 5 deg outward per eye.
EYE_REST_UP_CM = 0.2
EYE_REST_TEMPORAL_CM = 0.11


# --------------------------------------------------------------------------- detection


class FaceDetector:
    """BlazeFace full range on the whole (letterboxed) frame; detections in image pixels."""

    def __init__(self, model: InferenceBackend, min_score: float, nms_iou: float, max_faces: int = 10):
        self.model = model
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.max_faces = max_faces
        self.anchors = ssd_anchor_centres(DETECTOR_INPUT_PX, strides=(4,), anchors_per_cell=(1,))  # (2304, 2)

    def detect(self, image: np.ndarray) -> Detections:
        height, width = image.shape[:2]
        patch, to_image = crop(image, letterbox_rect(width, height), DETECTOR_INPUT_PX, DETECTOR_INPUT_PX)
        x = patch.astype(np.float32) * (1.0 / 127.5) - 1.0          # (192, 192, 3) in [-1, 1]
        out = self.model.run({"image": x[None]})
        dets = decode_ssd(out["regressors"][0], out["scores"][0, :, 0], self.anchors, DETECTOR_INPUT_PX,
                          num_keypoints=6, min_score=self.min_score)
        dets = weighted_nms(dets, self.nms_iou, self.max_faces)
        return detections_to_image(dets, to_image, DETECTOR_INPUT_PX)


def face_rect_from_detection(box_xyxy: np.ndarray, keypoints: np.ndarray, scale: float) -> RotatedRect:
    """Mesh ROI from a detection: the box, rotated so the eye line is horizontal, squared and scaled."""
    angle = rotation_from_points(keypoints[KP_EYE_IMAGE_LEFT], keypoints[KP_EYE_IMAGE_RIGHT], 0.0)
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return RotatedRect((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, angle).scaled(scale)


def face_rect_from_landmarks(landmarks: np.ndarray, scale: float) -> RotatedRect:
    """Mesh ROI for the next frame from this frame's landmarks (tracking): eye-corner line, tight box, scale."""
    angle = rotation_from_points(landmarks[LM_EYE_IMAGE_LEFT_OUTER, :2], landmarks[LM_EYE_IMAGE_RIGHT_OUTER, :2], 0.0)
    return rect_from_points(landmarks[:468, :2], angle).scaled(scale)


# --------------------------------------------------------------------------- mesh and blendshapes


class FaceMesh:
    """478 landmarks in image pixels (z relative, scaled like x) and a presence probability for one ROI."""

    def __init__(self, model: InferenceBackend):
        self.model = model

    def run(self, image: np.ndarray, rect: RotatedRect) -> tuple[np.ndarray, float]:
        patch, to_image = crop(image, rect, MESH_INPUT_PX, MESH_INPUT_PX)
        x = patch.astype(np.float32) * (1.0 / 255.0)               # (256, 256, 3) in [0, 1]
        out = self.model.run({"image": x[None]})
        crop_pts = out["landmarks"].reshape(NUM_LANDMARKS, 3)       # (478, 3) crop pixels
        presence = float(sigmoid(np.clip(out["presence"].ravel()[0], -100, 100)))
        landmarks = np.empty((NUM_LANDMARKS, 3), dtype=np.float32)  # (478, 3) image pixels
        landmarks[:, :2] = apply_affine(to_image, crop_pts[:, :2])
        landmarks[:, 2] = crop_pts[:, 2] * (rect.width / MESH_INPUT_PX)
        return landmarks, presence


def blendshapes(model: InferenceBackend, landmarks: np.ndarray) -> np.ndarray:
    """(52,) ARKit blendshapes in ARKit order from (478, 3) image-pixel landmarks; tongueOut is 0."""
    points = landmarks[BLENDSHAPE_LANDMARKS, :2].astype(np.float32)[None]  # (1, 146, 2) image pixels
    raw = model.run({"points": points})["blendshapes"].ravel()            # (52,) _neutral + 51
    out = np.where(_ARKIT_FROM_MODEL >= 0, raw[np.maximum(_ARKIT_FROM_MODEL, 0)], 0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- head pose and gaze


@dataclass(frozen=True)
class HeadPose:
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    rotation: np.ndarray      # (3, 3) canonical head frame -> camera-aligned frame (x right, y up, z to camera)
    scale_px_per_cm: float
    translation: np.ndarray   # (3,)

    @property
    def angles_deg(self) -> np.ndarray:
        return np.array([self.yaw_deg, self.pitch_deg, self.roll_deg], dtype=np.float32)


def _to_y_up(landmarks: np.ndarray) -> np.ndarray:
    """Image landmarks -> a right-handed frame: x right, y up, z toward the camera (pixels)."""
    return np.stack([landmarks[:, 0], -landmarks[:, 1], -landmarks[:, 2]], axis=1).astype(np.float64)


def head_pose(landmarks: np.ndarray, geometry: FaceGeometry) -> HeadPose:
    """Weighted Procrustes of the basis landmarks onto the canonical face (weak perspective)."""
    ids = geometry.procrustes_ids
    target = _to_y_up(landmarks[ids])                                         # (33, 3) pixels
    scale, rotation, translation = weighted_umeyama(geometry.canonical_cm[ids], target, geometry.procrustes_weights)
    yaw, pitch, roll = euler_from_rotation(rotation)
    return HeadPose(yaw, pitch, roll, rotation, scale, translation)


def gaze(landmarks: np.ndarray, pose: HeadPose, screen_pitch_deg: float, looking_max_deg: float) -> Gaze:
    """Eye rotation from the iris centre against the eye corners, in the head frame, plus head pose.

    The landmarks are taken into the canonical head frame (cm) by the inverse
    Procrustes transform, so head rotation and distance cancel; the iris offset
    from the corners' midpoint then gives the eye's rotation on an eyeball of
    ``EYEBALL_RADIUS_CM``. Gaze = head + eyes (small-angle sum). Looking at
    the screen is a soft score of the angle between the gaze and the screen
    direction (``screen_pitch_deg`` below the camera axis).
    """
    eyes = [LM_EYE_IMAGE_LEFT_OUTER, LM_EYE_IMAGE_LEFT_INNER, LM_IRIS_IMAGE_LEFT,
            LM_EYE_IMAGE_RIGHT_OUTER, LM_EYE_IMAGE_RIGHT_INNER, LM_IRIS_IMAGE_RIGHT]
    head_cm = (_to_y_up(landmarks[eyes]) - pose.translation) @ pose.rotation / pose.scale_px_per_cm  # (6, 3) cm
    eye_yaw, eye_pitch = [], []
    for outer, inner, iris, temple_x in ((0, 1, 2, -1.0), (3, 4, 5, 1.0)):      # rows of head_cm
        rest = (head_cm[outer] + head_cm[inner]) / 2 + (temple_x * EYE_REST_TEMPORAL_CM, EYE_REST_UP_CM, 0.0)
        offset = head_cm[iris] - rest
        eye_yaw.append(math.degrees(math.asin(max(-1.0, min(1.0, offset[0] / EYEBALL_RADIUS_CM)))))
        eye_pitch.append(math.degrees(math.asin(max(-1.0, min(1.0, offset[1] / EYEBALL_RADIUS_CM)))))
    gaze_yaw = pose.yaw_deg + float(np.mean(eye_yaw))
    gaze_pitch = pose.pitch_deg + float(np.mean(eye_pitch))
    off_axis = math.hypot(gaze_yaw, gaze_pitch - screen_pitch_deg)
    looking = soft_below(off_axis, looking_max_deg)
    return Gaze(gaze_yaw, gaze_pitch, (eye_yaw[0], eye_yaw[1]), (eye_pitch[0], eye_pitch[1]), looking)


def soft_below(value: float, limit: float) -> float:
    """1 well below ``limit``, 0.5 at it, 0 well above (logistic, width 15% of the limit)."""
    return float(sigmoid(np.float64((limit - value) / max(0.15 * limit, 1e-6))))


def attention(yaw_deg: float, pitch_deg: float, looking: float, max_yaw_deg: float, max_pitch_deg: float) -> float:
    """0..1: head toward the avatar (soft limits) times a gaze term; 0.5 or more counts as attending."""
    head = soft_below(abs(yaw_deg), max_yaw_deg) * soft_below(abs(pitch_deg), max_pitch_deg)
    return head * (0.4 + 0.6 * looking)


def yaw_from_detection(keypoints: np.ndarray) -> float:
    """Rough head yaw in degrees from the detector's keypoints (faces not meshed): nose against the eyes."""
    left, right, nose = keypoints[KP_EYE_IMAGE_LEFT], keypoints[KP_EYE_IMAGE_RIGHT], keypoints[KP_NOSE]
    eye_dist = float(np.linalg.norm(right - left))
    if eye_dist < 1e-6:
        return 0.0
    axis = (right - left) / eye_dist
    offset = float(np.dot(nose - (left + right) / 2, axis)) / eye_dist  # about +-0.5 at profile
    return math.degrees(math.asin(max(-1.0, min(1.0, 2.0 * offset))))


# --------------------------------------------------------------------------- emotion


class EmotionClassifier:
    """FER2013 mini-Xception: 7 probabilities from an upright gray crop around the landmarks."""

    def __init__(self, model: InferenceBackend, crop_scale: float = 1.15):
        self.model = model
        self.crop_scale = crop_scale

    def run(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        cv2 = import_cv2()
        angle = rotation_from_points(landmarks[LM_EYE_IMAGE_LEFT_OUTER, :2],
                                     landmarks[LM_EYE_IMAGE_RIGHT_OUTER, :2], 0.0)
        rect = rect_from_points(landmarks[:468, :2], angle).scaled(self.crop_scale)
        patch, _ = crop(image, rect, EMOTION_INPUT_PX, EMOTION_INPUT_PX)
        gray = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY).astype(np.float32)     # (64, 64)
        x = (gray * (1.0 / 255.0) - 0.5) * 2.0
        probs = self.model.run({"image": x[None, :, :, None]})["probabilities"].ravel()  # (7,)
        probs = np.clip(probs.astype(np.float64), 1e-6, None)
        return (probs / probs.sum()).astype(np.float32)


_BS = {name: i for i, name in enumerate(ARKIT_BLENDSHAPES)}


def _mean(bs: np.ndarray, *names: str) -> float:
    return sum(float(bs[_BS[n]]) for n in names) / len(names)     # plain floats: np.mean of 2 costs ~10 us


def blendshape_emotion_evidence(bs: np.ndarray) -> np.ndarray:
    """(7,) 0..1 evidence per emotion from FACS-like blendshape combinations (EMOTIONS order).

    Coarse, documented action-unit pairings (Ekman's prototypes): happy =
    smile + cheek squint; surprise = brows up + eyes wide + jaw open; sad =
    lip corners down + inner brow up; angry = brows down + lips pressed;
    disgust = nose sneer + upper lip up; fear = brows up + eyes wide + lips
    stretched; neutral = the absence of all of them.
    """
    smile = _mean(bs, "mouthSmileLeft", "mouthSmileRight")
    happy = min(1.0, 0.8 * smile + 0.2 * _mean(bs, "cheekSquintLeft", "cheekSquintRight") * 2)
    brows_up = max(bs[_BS["browInnerUp"]], _mean(bs, "browOuterUpLeft", "browOuterUpRight"))
    eyes_wide = _mean(bs, "eyeWideLeft", "eyeWideRight")
    surprise = 0.4 * brows_up + 0.25 * eyes_wide + 0.35 * bs[_BS["jawOpen"]]
    sad = (0.6 * _mean(bs, "mouthFrownLeft", "mouthFrownRight") + 0.4 * bs[_BS["browInnerUp"]]) * (1 - smile)
    angry = 0.7 * _mean(bs, "browDownLeft", "browDownRight") + 0.3 * _mean(bs, "mouthPressLeft", "mouthPressRight")
    disgust = 0.6 * _mean(bs, "noseSneerLeft", "noseSneerRight") + 0.4 * _mean(bs, "mouthUpperUpLeft",
                                                                                "mouthUpperUpRight")
    fear = 0.35 * brows_up + 0.35 * eyes_wide + 0.3 * _mean(bs, "mouthStretchLeft", "mouthStretchRight")
    evidence = np.array([angry, disgust, fear, happy, sad, surprise, 0.0], dtype=np.float64)
    evidence[EMOTIONS.index("neutral")] = max(0.0, 1.0 - evidence.max())
    return np.clip(evidence, 0.0, 1.0)


def fuse_emotion(image_probs: np.ndarray, bs: np.ndarray | None, weight: float, sharpness: float = 4.0) -> np.ndarray:
    """Log-linear fusion: p ~ p_image^(1-w) * softmax(sharpness * evidence)^w; w = 0 keeps the model alone."""
    if bs is None or weight <= 0.0:
        return image_probs.astype(np.float32)
    logits_bs = sharpness * blendshape_emotion_evidence(bs)
    log_bs = logits_bs - np.log(np.exp(logits_bs).sum())
    log_p = (1.0 - weight) * np.log(np.clip(image_probs.astype(np.float64), 1e-6, None)) + weight * log_bs
    p = np.exp(log_p - log_p.max())
    return (p / p.sum()).astype(np.float32)
