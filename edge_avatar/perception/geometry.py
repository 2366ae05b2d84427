"""Image geometry shared by the face and hand pipelines: rotated ROIs, crops, SSD decoding, NMS, Procrustes.

Why this module exists: every MediaPipe network here looks at a *rotated,
square crop* of the frame (a face turned upright by its eye line, a hand
turned so the fingers point up) and answers in crop coordinates; the
detectors answer in anchor-relative offsets of a letterboxed square. All of
that is one idea -- an affine map between the frame and a model's input --
so it lives here once, in numpy, with the crop itself done by OpenCV's
``warpAffine`` (bilinear, about 0.1 ms for 256x256: the only OpenCV call the
pipeline makes; OpenCV is already the project's image library for capture).

Conventions: image coordinates are pixels, x right, y down; an angle is in
radians, positive = counter-clockwise *as seen in the image* (the usual
mathematical sense with y pointing up). The facts used (anchor layouts, box
encodings, ROI scales) are MediaPipe's published graph options (MODELS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def import_cv2():
    """OpenCV, or an ImportError that says how to install it."""
    try:
        import cv2  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - the dev venv has it
        raise ImportError("perception needs OpenCV for its crops: pip install opencv-python-headless") from exc
    return cv2


# --------------------------------------------------------------------------- rotated rectangles


@dataclass(frozen=True)
class RotatedRect:
    """A rectangle in image pixels: centre, size and rotation (radians, counter-clockwise in the image)."""

    cx: float
    cy: float
    width: float
    height: float
    angle_rad: float = 0.0

    def scaled(self, scale_x: float, scale_y: float | None = None, shift_x: float = 0.0, shift_y: float = 0.0,
               square_long: bool = True) -> RotatedRect:
        """MediaPipe's RectTransformation: shift (in rect units, along the rect's own axes), square, scale."""
        sy = scale_x if scale_y is None else scale_y
        c, s = math.cos(self.angle_rad), math.sin(self.angle_rad)
        # The rect's x axis in the image is (c, -s) (y down); its y axis is (s, c).
        dx = shift_x * self.width
        dy = shift_y * self.height
        cx = self.cx + dx * c + dy * s
        cy = self.cy - dx * s + dy * c
        w, h = self.width, self.height
        if square_long:
            w = h = max(w, h)
        return RotatedRect(cx, cy, w * scale_x, h * sy, self.angle_rad)

    def corners(self) -> np.ndarray:
        """(4, 2) corners: top-left, top-right, bottom-right, bottom-left in the rect's own frame."""
        half = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) * (self.width, self.height)
        c, s = math.cos(self.angle_rad), math.sin(self.angle_rad)
        axes = np.array([[c, -s], [s, c]])  # rows: the rect's x and y axes in the image (y down)
        return half @ axes + (self.cx, self.cy)

    def bounding_box(self) -> np.ndarray:
        """(4,) axis-aligned x1, y1, x2, y2 that contains the rotated rect."""
        pts = self.corners()
        return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])


def rotation_from_points(start_xy: np.ndarray, end_xy: np.ndarray, target_angle_rad: float) -> float:
    """ROI rotation that brings the vector start->end to ``target_angle_rad`` (0 = pointing right, pi/2 = up)."""
    dx = float(end_xy[0] - start_xy[0])
    dy = float(end_xy[1] - start_xy[1])
    current = math.atan2(-dy, dx)  # image y points down: flip to the mathematical sense
    return normalize_angle(current - target_angle_rad)


def normalize_angle(angle_rad: float) -> float:
    return (angle_rad + math.pi) % (2 * math.pi) - math.pi


def rect_from_points(points_xy: np.ndarray, angle_rad: float) -> RotatedRect:
    """The tightest rect at ``angle_rad`` around (N, 2) points."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    # Image -> rect frame: inverse of the rect's axes (c, -s), (s, c).
    local = points_xy @ np.array([[c, s], [-s, c]])  # (N, 2)
    lo, hi = local.min(axis=0), local.max(axis=0)
    centre_local = (lo + hi) / 2
    centre = centre_local @ np.array([[c, -s], [s, c]])
    return RotatedRect(float(centre[0]), float(centre[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]), angle_rad)


def crop_matrix(rect: RotatedRect, out_w: int, out_h: int) -> np.ndarray:
    """(2, 3) affine map from image pixels to crop pixels for ``rect`` resampled to out_w x out_h."""
    c, s = math.cos(rect.angle_rad), math.sin(rect.angle_rad)
    sx, sy = out_w / rect.width, out_h / rect.height
    # crop = S * R^T * (p - centre) + out/2, where R's columns are the rect axes in the image.
    a = np.array([[c * sx, -s * sx], [s * sy, c * sy]])
    t = np.array([out_w / 2, out_h / 2]) - a @ np.array([rect.cx, rect.cy])
    return np.hstack([a, t[:, None]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    a = matrix[:, :2]
    inv = np.linalg.inv(a)
    return np.hstack([inv, (-inv @ matrix[:, 2])[:, None]])


def apply_affine(matrix: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
    """(N, 2) points through a (2, 3) affine map."""
    return points_xy @ matrix[:, :2].T + matrix[:, 2]


def crop(image: np.ndarray, rect: RotatedRect, out_w: int, out_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``rect`` of (H, W, C) ``image`` to (out_h, out_w, C); returns (crop, crop->image affine).

    Outside the frame is black (zeros), as in MediaPipe's ImageToTensor with
    zero border mode, so a half face at the edge is simply partly black.
    """
    cv2 = import_cv2()
    matrix = crop_matrix(rect, out_w, out_h)
    patch = cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return patch, invert_affine(matrix)


def letterbox_rect(width_px: int, height_px: int) -> RotatedRect:
    """The square (upright) rect that letterboxes a whole frame: the long side fits, the short side is padded."""
    side = float(max(width_px, height_px))
    return RotatedRect(width_px / 2.0, height_px / 2.0, side, side, 0.0)


# --------------------------------------------------------------------------- SSD detection


def ssd_anchor_centres(input_size: int, strides: tuple[int, ...], anchors_per_cell: tuple[int, ...],
                       offset: float = 0.5) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1] for MediaPipe's SSD layout with ``fixed_anchor_size`` (w = h = 1).

    Consecutive layers with the same stride share one grid whose anchors per
    cell add up (so palm: strides 8,16,16,16 with 2 per layer -> 24x24x2 +
    12x12x6 = 2016; full-range face: stride 4 -> 48x48x1 = 2304).
    """
    centres = []
    i = 0
    while i < len(strides):
        stride = strides[i]
        per_cell = 0
        while i < len(strides) and strides[i] == stride:
            per_cell += anchors_per_cell[i]
            i += 1
        cells = math.ceil(input_size / stride)
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs.ravel() + offset) / cells, (ys.ravel() + offset) / cells], axis=1)  # (cells^2, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


@dataclass
class Detections:
    """Decoded detections in *image* pixels: boxes (N, 4) x1,y1,x2,y2; keypoints (N, K, 2); scores (N,)."""

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty(num_keypoints: int) -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0, num_keypoints, 2), np.float32),
                          np.zeros((0,), np.float32))


MIN_BOX_FRACTION = 0.005  # boxes narrower than 0.5% of the detector input (< 1 px) are dropped


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def decode_ssd(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, input_size: int,
               num_keypoints: int, min_score: float, score_clip: float = 100.0) -> Detections:
    """Boxes and keypoints in [0, 1] of the model input from (N, 4 + 2K) regressors and (N,) logits.

    Encoding (TensorsToDetections with reverse_output_order, x/y/w/h scale =
    input size): centre = anchor + offset / size, size = raw / size.
    """
    scores = sigmoid(np.clip(logits, -score_clip, score_clip))  # (N,)
    keep = np.nonzero(scores >= min_score)[0]
    if keep.size == 0:
        return Detections.empty(num_keypoints)
    raw = regressors[keep] / float(input_size)  # (M, 4 + 2K)
    centre = anchors[keep]                      # (M, 2)
    cxy = centre + raw[:, 0:2]
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([cxy - half, cxy + half], axis=1)
    kps = raw[:, 4:4 + 2 * num_keypoints].reshape(-1, num_keypoints, 2) + centre[:, None, :]
    # A box a model (or the null backend) reports with no size or non-finite numbers is not a detection.
    sane = (np.all(np.isfinite(raw), axis=1) & (raw[:, 2] > MIN_BOX_FRACTION) & (raw[:, 3] > MIN_BOX_FRACTION))
    return Detections(boxes[sane].astype(np.float32), kps[sane].astype(np.float32),
                      scores[keep][sane].astype(np.float32))


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box with (N, 4) boxes (x1, y1, x2, y2)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(dets: Detections, iou_threshold: float, max_count: int) -> Detections:
    """MediaPipe's WEIGHTED non-max suppression: overlapping boxes are averaged, weighted by score."""
    if len(dets) == 0:
        return dets
    order = np.argsort(-dets.scores)
    boxes, kps, scores = dets.boxes[order], dets.keypoints[order], dets.scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    out_boxes, out_kps, out_scores = [], [], []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        overlap = box_iou(boxes[i], boxes) >= iou_threshold
        group = np.nonzero(overlap & remaining)[0]
        remaining[group] = False
        w = scores[group][:, None]
        out_boxes.append((boxes[group] * w).sum(0) / w.sum())
        out_kps.append((kps[group] * w[:, :, None]).sum(0) / w.sum())
        out_scores.append(scores[i])
        if len(out_scores) >= max_count:
            break
    return Detections(np.array(out_boxes, np.float32), np.array(out_kps, np.float32),
                      np.array(out_scores, np.float32))


def detections_to_image(dets: Detections, to_image: np.ndarray, input_size: int) -> Detections:
    """Map detections from [0, 1] of the model input to image pixels through the crop->image affine."""
    if len(dets) == 0:
        return dets
    corners = dets.boxes.reshape(-1, 2) * input_size             # (2N, 2)
    corners = apply_affine(to_image, corners).reshape(-1, 4)
    kps = apply_affine(to_image, dets.keypoints.reshape(-1, 2) * input_size).reshape(dets.keypoints.shape)
    return Detections(corners.astype(np.float32), kps.astype(np.float32), dets.scores)


# --------------------------------------------------------------------------- Procrustes / head pose


def weighted_umeyama(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray,
                                                                                          np.ndarray]:
    """Similarity (scale s, rotation R, translation t) minimising sum w |s R source + t - target|^2.

    ``source`` and ``target`` are (N, 3); Umeyama (1991) with weights, the
    reflection case excluded so R is a proper rotation.
    """
    w = weights / weights.sum()                       # (N,)
    mu_s = w @ source
    mu_t = w @ target
    src = source - mu_s
    tgt = target - mu_t
    cov = (tgt * w[:, None]).T @ src                  # (3, 3)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0
    rotation = u @ np.diag(sign) @ vt
    var_s = float(w @ (src * src).sum(axis=1))
    scale = float((d * sign).sum() / max(var_s, 1e-12))
    translation = mu_t - scale * rotation @ mu_s
    return scale, rotation, translation


def euler_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from a head rotation in the x-right, y-up, z-toward-camera frame.

    R = Ry(yaw) @ Rx(-pitch) @ Rz(roll), so: yaw + turns the nose toward the
    image's right (the visitor's left), pitch + lifts the chin (looks up),
    roll + tilts the head counter-clockwise as the camera sees it.
    """
    r = rotation
    pitch = math.asin(max(-1.0, min(1.0, r[1, 2])))  # r12 = sin(-pitch') with pitch' = -pitch
    yaw = math.atan2(r[0, 2], r[2, 2])
    roll = math.atan2(r[1, 0], r[1, 1])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)
