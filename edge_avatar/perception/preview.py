"""Draw what perception saw onto the image: boxes, mesh points, head-pose axes, top blendshapes, hands.

Why this module exists: numbers in a JSON are easy to get subtly wrong (a
mirrored axis, a box off by the letterbox padding); a picture shows it at
once. ``edge-avatar perceive IMAGE --draw DIR`` writes one per image, and the
tests' preview is made the same way. OpenCV draws (already used for crops).
"""

from __future__ import annotations

import numpy as np

from edge_avatar.motion import ARKIT_BLENDSHAPES
from edge_avatar.perception.geometry import import_cv2
from edge_avatar.perception.hands import FINGERS
from edge_avatar.perception.token import EMOTIONS, PerceptionResult

ACTIVE_RGB = (40, 220, 80)
BYSTANDER_RGB = (250, 190, 40)
HAND_RGB = (80, 160, 255)


def _rotation_from_angles(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Ry(yaw) Rx(-pitch) Rz(roll): the convention of ``geometry.euler_from_rotation``."""
    y, p, r = np.radians([yaw_deg, -pitch_deg, roll_deg])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def draw_result(image: np.ndarray, result: PerceptionResult, top_blendshapes: int = 5,
                min_side_px: int = 900) -> np.ndarray:
    """An RGB copy of ``image`` (enlarged so the long side is at least ``min_side_px``) with the result drawn."""
    cv2 = import_cv2()
    zoom = max(1, int(np.ceil(min_side_px / max(image.shape[:2]))))
    canvas = cv2.resize(image, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR) if zoom > 1 else image.copy()
    canvas = np.ascontiguousarray(canvas)
    result = _zoomed(result, zoom)
    scale = max(canvas.shape[:2]) / 640.0
    thick = max(1, int(round(2 * scale)))
    font = 0.45 * max(scale, 0.6)
    for face in result.faces:
        colour = ACTIVE_RGB if face.is_active else BYSTANDER_RGB
        x1, y1, x2, y2 = (int(round(v)) for v in face.box_xyxy)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thick)
        label = ("visitor" if face.is_active else "bystander") + f" {face.distance_m:.2f} m"
        cv2.putText(canvas, label, (x1, max(12, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, font, colour, thick)
        if face.landmarks is None:
            continue
        for x, y in face.landmarks[:, :2].astype(int):
            cv2.circle(canvas, (int(x), int(y)), max(1, thick // 2), (255, 255, 255), -1)
        for idx in (468, 473):
            x, y = face.landmarks[idx, :2].astype(int)
            cv2.circle(canvas, (int(x), int(y)), thick + 1, (255, 60, 60), -1)
        if face.head_pose_deg is not None:
            origin = face.landmarks[1, :2]  # nose tip
            length = 0.5 * (face.box_xyxy[2] - face.box_xyxy[0])
            rot = _rotation_from_angles(*face.head_pose_deg)
            for axis, rgb in zip(np.eye(3), ((255, 0, 0), (0, 255, 0), (0, 90, 255))):
                d = rot @ axis  # x right, y up, z toward the camera
                end = origin + length * np.array([d[0], -d[1]])
                cv2.arrowedLine(canvas, tuple(int(v) for v in origin), tuple(int(v) for v in end), rgb, thick,
                                tipLength=0.15)
        lines = []
        if face.head_pose_deg is not None:
            yaw, pitch, roll = face.head_pose_deg
            lines.append(f"yaw {yaw:+.1f} pitch {pitch:+.1f} roll {roll:+.1f}")
        if face.gaze is not None:
            lines.append(f"gaze {face.gaze.yaw_deg:+.1f},{face.gaze.pitch_deg:+.1f} "
                         f"looking {face.gaze.looking_at_screen:.2f}")
        if face.emotion is not None:
            top = int(np.argmax(face.emotion))
            lines.append(f"{EMOTIONS[top]} {face.emotion[top]:.2f}")
        if face.blendshapes is not None:
            for i in np.argsort(-face.blendshapes)[:top_blendshapes]:
                lines.append(f"{ARKIT_BLENDSHAPES[i]} {face.blendshapes[i]:.2f}")
        for k, text in enumerate(lines):
            org = (x2 + 6, y1 + 14 + int(k * 16 * max(scale, 0.8)))
            cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thick + 2)
            cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, font, colour, max(1, thick - 1))
    for hand in result.hands:
        pts = hand.landmarks[:, :2].astype(int)
        for chain in FINGERS.values():
            seq = [0, *chain]
            for a, b in zip(seq, seq[1:]):
                cv2.line(canvas, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), HAND_RGB, thick)
        x1, y1, x2, y2 = (int(round(v)) for v in hand.box_xyxy)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), HAND_RGB, thick)
        cv2.putText(canvas, f"{hand.handedness} {hand.gesture}", (x1, max(12, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                    font, HAND_RGB, thick)
    status = f"{result.reason} | {result.engagement}"
    cv2.putText(canvas, status, (8, canvas.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thick + 2)
    cv2.putText(canvas, status, (8, canvas.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), thick)
    return canvas


def _zoomed(result: PerceptionResult, zoom: int) -> PerceptionResult:
    """A shallow copy of ``result`` with every pixel coordinate multiplied by ``zoom``."""
    import copy  # noqa: PLC0415

    if zoom == 1:
        return result
    out = copy.copy(result)
    out.faces = []
    for face in result.faces:
        f = copy.copy(face)
        f.box_xyxy = face.box_xyxy * zoom
        f.landmarks = None if face.landmarks is None else face.landmarks * zoom
        out.faces.append(f)
    out.hands = []
    for hand in result.hands:
        h = copy.copy(hand)
        h.box_xyxy, h.landmarks = hand.box_xyxy * zoom, hand.landmarks * zoom
        out.hands.append(h)
    return out


def save_rgb_png(path: str, image: np.ndarray) -> None:
    cv2 = import_cv2()
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1])):
        raise OSError(f"could not write {path}")
