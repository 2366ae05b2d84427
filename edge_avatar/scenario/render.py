"""Camera frames of a scenario: a real face photo moved through a pinhole camera.

Why this module exists: perception must later find a *real* face in the
demo and estimate its distance from its size, so the visitor is a real
photograph (not a drawing) and its apparent size follows the pinhole model
exactly: the face box of ``face_width_m`` metres at ``distance_m`` is
``focal_length_px * face_width_m / distance_m`` pixels wide, with
``focal_length_px = (W / 2) / tan(hfov / 2)``.

Each person is a flat cut-out (a "billboard") in 3-D: the photo is placed at
the keyframe-interpolated position, turned by yaw/pitch/roll about the face
centre and projected with one homography per frame (``cv2.warpPerspective``
into the person's bounding box only, from a mip level close to the final
size so that a distant face is not aliased). A small, seeded head sway and
a walking bob make the motion look alive; everything is a pure function of
``t_s``, so the same time always gives the same bytes. A 640x480 frame
takes a few milliseconds.

A person whose ``mouth`` is given talks with their own voice: turn-taking
trusts a visible face with a closed mouth to mean "not talking" (a hum or
the avatar's own echo has no moving mouth), so a static photo would make
every real interruption look like echo. Before warping, the photo's lower
lip and chin are moved down by a smooth vertical displacement field, in
proportion to the openness the audio builder measured from that person's
speech at ``t_s`` (``AudioTrack.mouth_open``); the gap opened between the
upper teeth and the lower lip is filled with an anti-aliased dark mouth
interior. The deformation is done in the photo's own pixels, so it turns
and shrinks with the face.

OpenCV is used because it is already what the camera sources need and its
warp is fast; it is imported here, not at package import.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from edge_avatar.scenario.format import Background, CameraModel, Keyframe, Mouth, Person, ScenarioError, ScenarioSpec

log = logging.getLogger(__name__)

_CHANNELS = ("x_m", "distance_m", "yaw_deg", "pitch_deg", "roll_deg")
_STEP_HZ = 1.8          # walking cadence (steps per second)
_WALK_SPEED_M_S = 0.6   # speed at which the walking bob reaches full amplitude
_MOUTH_FRAME_S = 0.010  # the openness series' frame (edge_avatar.scenario.audio.MOUTH_FRAME_S)
_MOUTH_MIN_OPEN = 0.01  # below this the photo is used as it is
# Mouth rig proportions, in mouth widths (W): chin below the lip line, how fast the lip's
# lens-shaped drop blends into the whole jaw's, the jaw's width and the fade onto the neck.
_CHIN_BELOW_W = 0.70
_LIP_TO_JAW_W = 0.40
_JAW_FLAT_W = 0.45          # the chin drops fully this far either side of the mouth's centre ...
_JAW_EDGE_W = 1.05          # ... and not at all from here out (the jaw line; cheeks stretch between)
_NECK_FADE_W = 0.90
_LIP_PROFILE_POWER = 1.0    # lower-lip drop across the mouth: drop * (1 - u^2) ** power (a lens)
# Mouth interior (RGB): shadow under the upper teeth, the tongue's colour at the bottom of the gap.
_INTERIOR_TOP_RGB = np.array([30.0, 11.0, 13.0], dtype=np.float32)
_INTERIOR_BOTTOM_RGB = np.array([96.0, 40.0, 44.0], dtype=np.float32)


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - the venv always has it
        raise ScenarioError("", "", "rendering a scenario needs OpenCV; install it with: "
                                    "pip install opencv-python-headless") from exc
    return cv2


@dataclass(frozen=True)
class Pose:
    """Where a person's face is in camera coordinates (x right, y down, z forward), angles in degrees."""

    x_m: float
    y_m: float
    distance_m: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    speed_m_s: float


# --------------------------------------------------------------------------- trajectories


class Trajectory:
    """Keyframes interpolated by monotone cubic Hermite curves (no overshoot past a keyframe).

    Monotone interpolation matters: a visitor who walks up to 0.8 m must not
    dip to 0.75 m on the way, and one who stops must stop, not wobble.
    """

    def __init__(self, keyframes: tuple[Keyframe, ...]):
        self._t = np.array([k.t_s for k in keyframes], dtype=np.float64)
        self._values = {c: np.array([getattr(k, c) for k in keyframes], dtype=np.float64) for c in _CHANNELS}
        self._slopes = {c: _monotone_slopes(self._t, v) for c, v in self._values.items()}

    def at(self, t_s: float) -> dict[str, float]:
        t = self._t
        if len(t) == 1 or t_s <= t[0]:
            return {c: float(v[0]) for c, v in self._values.items()}
        if t_s >= t[-1]:
            return {c: float(v[-1]) for c, v in self._values.items()}
        k = int(np.searchsorted(t, t_s, side="right")) - 1
        h = t[k + 1] - t[k]
        s = (t_s - t[k]) / h
        h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
        out = {}
        for c, v in self._values.items():
            m = self._slopes[c]
            out[c] = float(h00 * v[k] + h10 * h * m[k] + h01 * v[k + 1] + h11 * h * m[k + 1])
        return out


def _monotone_slopes(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson slopes: the Hermite curve through (t, y) is monotone between keyframes."""
    n = len(t)
    m = np.zeros(n)
    if n < 2:
        return m
    h = np.diff(t)
    d = np.diff(y) / h
    m[0], m[-1] = d[0], d[-1]
    for k in range(1, n - 1):
        if d[k - 1] * d[k] <= 0:
            m[k] = 0.0
        else:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            m[k] = (w1 + w2) / (w1 / d[k - 1] + w2 / d[k])
    for k in range(n - 1):  # keep each segment monotone (alpha^2 + beta^2 <= 9)
        if d[k] == 0:
            m[k] = m[k + 1] = 0.0
            continue
        a, b = m[k] / d[k], m[k + 1] / d[k]
        r = a * a + b * b
        if r > 9:
            tau = 3 / math.sqrt(r)
            m[k], m[k + 1] = tau * a * d[k], tau * b * d[k]
    return m


# --------------------------------------------------------------------------- sprites


@dataclass
class _Sprite:
    """A person's cut-out as RGBA mip levels, with the face box in level-0 sprite coordinates."""

    levels: list[np.ndarray]           # (H_l, W_l, 4) uint8 RGBA, level l is 2**-l of level 0
    face_box_px: tuple[float, float, float, float]  # x, y, w, h in level-0 sprite pixels
    metres_per_px: float


def _load_rgba(person: Person, source: str, key_path: str) -> np.ndarray:
    cv2 = _cv2()
    image = cv2.imread(str(person.image.path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ScenarioError(source, f"{key_path}.image", f"cannot decode {person.image.path} as an image")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGBA)
    elif image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGBA)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    if image.dtype != np.uint8:
        image = (image.astype(np.float32) * (255.0 / np.iinfo(image.dtype).max)).round().astype(np.uint8)
    return image


def _bust_alpha(height: int, width: int, face: tuple[float, float, float, float]) -> np.ndarray:
    """A feathered head-and-shoulders silhouette around the face box: (H, W) float32 in [0, 1].

    Real photos have their own backgrounds (a flag, a street); this keeps the
    person and drops most of the rest without any segmentation model.
    """
    fx, fy, fw, fh = face
    cx, cy = fx + fw / 2, fy + fh / 2
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # Head with hair: wider and taller than the face box, centred a little above it.
    head = ((xx - cx) / (0.95 * fw)) ** 2 + ((yy - (cy - 0.18 * fh)) / (0.95 * fh)) ** 2
    neck = (np.abs(xx - cx) < 0.5 * fw) & (yy > cy) & (yy < cy + 1.3 * fh)
    # Shoulders and chest: a wide ellipse whose top sits just under the chin.
    torso = ((xx - cx) / (1.9 * fw)) ** 2 + ((yy - (cy + 2.55 * fh)) / (1.9 * fh)) ** 2
    # Below the chest the body goes on down to the bottom of the crop.
    body = np.where(yy > cy + 2.55 * fh, ((xx - cx) / (1.9 * fw)) ** 2, np.inf)
    inside = np.minimum(np.minimum(head, torso), body)
    feather = 0.12
    alpha = np.clip((1.0 + feather - inside) / (2 * feather), 0.0, 1.0)
    alpha = np.maximum(alpha, neck.astype(np.float32))
    # Fade out at the bottom of the crop so a far person does not end on a hard edge.
    fade_px = max(4.0, 0.25 * fh)
    alpha *= np.clip((height - 1 - yy) / fade_px, 0.0, 1.0)
    return alpha


def _make_sprite(person: Person, source: str, key_path: str) -> _Sprite:
    cv2 = _cv2()
    image = _load_rgba(person, source, key_path)
    h, w = image.shape[:2]
    crop = person.crop_px or (0, 0, w, h)
    cx, cy, cw, ch = crop
    fx, fy, fw, fh = person.face_box_px
    if cx + cw > w or cy + ch > h:
        raise ScenarioError(source, f"{key_path}.crop_px", f"{list(crop)} reaches outside the {w}x{h} image")
    if fx + fw > w or fy + fh > h:
        raise ScenarioError(source, f"{key_path}.face_box_px", f"{list(person.face_box_px)} reaches outside the "
                                                               f"{w}x{h} image")
    rgba = image[cy:cy + ch, cx:cx + cw].copy()
    face = (float(fx - cx), float(fy - cy), float(fw), float(fh))
    if person.cutout == "bust":
        alpha = _bust_alpha(ch, cw, face)
        rgba[..., 3] = (alpha * rgba[..., 3].astype(np.float32)).round().astype(np.uint8)
    elif person.cutout == "rect":
        rgba[..., 3] = 255
    # Premultiply so that bilinear warping does not bleed the photo's background into the edge.
    rgb = rgba[..., :3].astype(np.uint16) * rgba[..., 3:4].astype(np.uint16)
    rgba[..., :3] = ((rgb + 127) // 255).astype(np.uint8)
    levels = [rgba]
    while min(levels[-1].shape[:2]) >= 16 and len(levels) < 8:
        levels.append(cv2.pyrDown(levels[-1]))
    return _Sprite(levels=levels, face_box_px=face, metres_per_px=person.face_width_m / fw)


# --------------------------------------------------------------------------- renderer


class FrameRenderer:
    """Renders the camera image of a synthetic scenario at any time and size.

    The face photos are decoded once here; ``render`` allocates one output
    frame and touches only the pixels each person covers.
    """

    def __init__(self, spec: ScenarioSpec, mouth_open: dict[str, np.ndarray] | None = None):
        """``mouth_open``: who -> openness per 10 ms (``AudioTrack.mouth_open``); None: no mouth moves."""
        if spec.background is None:
            raise ValueError("FrameRenderer needs a synthetic scenario (the file form plays a video)")
        self.spec = spec
        self.camera: CameraModel = spec.camera
        self._people: list[tuple[Person, _Sprite, Trajectory, np.ndarray]] = []
        self._mouths: list[tuple[_MouthRig, np.ndarray] | None] = []
        people = ([("visitor", spec.visitor)] if spec.visitor else []) + [
            (f"bystanders[{i}]", b) for i, b in enumerate(spec.bystanders)]
        rng = np.random.default_rng(spec.seed)
        for key_path, person in people:
            sprite = _make_sprite(person, spec.source, key_path)
            # Sway: per channel, two sinusoids with seeded frequencies (Hz) and phases (rad).
            sway_params = np.stack([rng.uniform(0.12, 0.45, 5), rng.uniform(0, 2 * np.pi, 5),
                                    rng.uniform(0.5, 1.1, 5), rng.uniform(0, 2 * np.pi, 5)], axis=1)
            self._people.append((person, sprite, Trajectory(person.keyframes), sway_params))
            series = (mouth_open or {}).get(key_path)
            rig = _MouthRig.for_person(person, sprite, spec.source, key_path) if person.mouth is not None else None
            self._mouths.append((rig, series) if rig is not None and series is not None else None)
        self._background_cache: dict[tuple[int, int], np.ndarray] = {}
        self._background_image = None
        if spec.background.kind == "image":
            cv2 = _cv2()
            bgr = cv2.imread(str(spec.background.image.path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ScenarioError(spec.source, "background.image",
                                    f"cannot decode {spec.background.image.path} as an image")
            self._background_image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    # ----------------------------------------------------------------- geometry

    @property
    def people_count(self) -> int:
        return len(self._people)

    def pose(self, index: int, t_s: float) -> Pose:
        """Person ``index`` (0 = visitor if there is one) at ``t_s``, sway and walking bob included."""
        person, _, trajectory, sway = self._people[index]
        now = trajectory.at(t_s)
        dt = 0.05
        before, after = trajectory.at(t_s - dt), trajectory.at(t_s + dt)
        speed = math.hypot(after["x_m"] - before["x_m"], after["distance_m"] - before["distance_m"]) / (2 * dt)
        wiggle = [person.sway * (0.65 * math.sin(2 * math.pi * f1 * t_s + p1)
                                 + 0.35 * math.sin(2 * math.pi * f1 * 2.3 * f2 * t_s + p2))
                  for f1, p1, f2, p2 in sway]
        walk = min(1.0, speed / _WALK_SPEED_M_S) * person.sway
        y_m = self.camera.height_m - person.face_height_m
        return Pose(
            x_m=now["x_m"] + 0.010 * wiggle[0] + 0.012 * walk * math.sin(math.pi * _STEP_HZ * t_s),
            y_m=y_m + 0.006 * wiggle[1] - 0.015 * walk * abs(math.sin(math.pi * _STEP_HZ * t_s)),
            distance_m=now["distance_m"],
            yaw_deg=now["yaw_deg"] + 2.5 * wiggle[2],
            pitch_deg=now["pitch_deg"] + 1.5 * wiggle[3],
            roll_deg=now["roll_deg"] + 1.5 * wiggle[4],
            speed_m_s=speed,
        )

    def mouth_open(self, index: int, t_s: float) -> float:
        """How far person ``index``'s mouth is open at ``t_s``: 0 closed .. 1 a stressed vowel's full drop."""
        mouth = self._mouths[index]
        if mouth is None:
            return 0.0
        series = mouth[1]
        position = t_s / _MOUTH_FRAME_S - 0.5   # frame k's value belongs to the middle of its 10 ms
        k = int(math.floor(position))
        if k < -1 or k >= len(series):
            return 0.0
        a = float(series[k]) if k >= 0 else 0.0
        b = float(series[k + 1]) if k + 1 < len(series) else 0.0
        return a + (b - a) * (position - k)

    def homography(self, index: int, pose: Pose, width_px: int, height_px: int) -> np.ndarray:
        """3x3 map from level-0 sprite pixels of person ``index`` to image pixels."""
        _, sprite, _, _ = self._people[index]
        f = self.camera.focal_length_px(width_px)
        k = np.array([[f, 0.0, (width_px - 1) / 2.0], [0.0, f, (height_px - 1) / 2.0], [0.0, 0.0, 1.0]])
        yaw, pitch, roll = (math.radians(a) for a in (pose.yaw_deg, pose.pitch_deg, pose.roll_deg))
        # Positive yaw turns the face normal (initially toward the camera, -z) toward +x.
        ry = np.array([[math.cos(yaw), 0.0, -math.sin(yaw)], [0.0, 1.0, 0.0], [math.sin(yaw), 0.0, math.cos(yaw)]])
        rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(pitch), -math.sin(pitch)],
                       [0.0, math.sin(pitch), math.cos(pitch)]])
        rz = np.array([[math.cos(roll), -math.sin(roll), 0.0], [math.sin(roll), math.cos(roll), 0.0],
                       [0.0, 0.0, 1.0]])
        r = ry @ rx @ rz
        plane_to_camera = np.column_stack([r[:, 0], r[:, 1], [pose.x_m, pose.y_m, pose.distance_m]])
        fx, fy, fw, fh = sprite.face_box_px
        mpp = sprite.metres_per_px
        sprite_to_plane = np.array([[mpp, 0.0, -mpp * (fx + fw / 2)], [0.0, mpp, -mpp * (fy + fh / 2)],
                                    [0.0, 0.0, 1.0]])
        return k @ plane_to_camera @ sprite_to_plane

    def face_box(self, index: int, t_s: float, width_px: int, height_px: int) -> tuple[float, float, float, float]:
        """The projected face box of person ``index`` at ``t_s``: (x0, y0, x1, y1) image pixels, unclipped."""
        _, sprite, _, _ = self._people[index]
        h = self.homography(index, self.pose(index, t_s), width_px, height_px)
        fx, fy, fw, fh = sprite.face_box_px
        return _bbox(h, np.array([[fx, fy], [fx + fw, fy], [fx + fw, fy + fh], [fx, fy + fh]]))

    def person_box(self, index: int, t_s: float, width_px: int, height_px: int) -> tuple[float, float, float, float]:
        """The projected bounds of person ``index``'s whole cut-out: (x0, y0, x1, y1), unclipped."""
        _, sprite, _, _ = self._people[index]
        h = self.homography(index, self.pose(index, t_s), width_px, height_px)
        sh, sw = sprite.levels[0].shape[:2]
        return _bbox(h, np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], dtype=np.float64))

    # ----------------------------------------------------------------- pixels

    def background(self, width_px: int, height_px: int) -> np.ndarray:
        """The empty scene, (H, W, 3) uint8 RGB; read-only, shared between frames."""
        key = (width_px, height_px)
        frame = self._background_cache.get(key)
        if frame is None:
            frame = _background(self.spec.background, width_px, height_px, self._background_image)
            frame.setflags(write=False)
            self._background_cache = {key: frame}  # one size at a time is what a camera uses
        return frame

    def render(self, t_s: float, width_px: int, height_px: int) -> np.ndarray:
        """The camera image at ``t_s``: (H, W, 3) uint8 RGB, a new array."""
        cv2 = _cv2()
        frame = self.background(width_px, height_px).copy()
        poses = [(self.pose(i, t_s), i) for i in range(len(self._people))]
        for pose, index in sorted(poses, key=lambda p: -p[0].distance_m):  # far first
            if pose.distance_m <= 0.05:
                continue
            _, sprite, _, _ = self._people[index]
            h = self.homography(index, pose, width_px, height_px)
            sh, sw = sprite.levels[0].shape[:2]
            x0, y0, x1, y1 = _bbox(h, np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], dtype=np.float64))
            ix0, iy0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
            ix1, iy1 = min(width_px, int(math.ceil(x1)) + 1), min(height_px, int(math.ceil(y1)) + 1)
            if ix1 <= ix0 or iy1 <= iy0:
                continue  # out of the picture
            # Mip level: the largest shrink that still leaves >= 1 source pixel per output pixel.
            scale = math.sqrt(abs(np.linalg.det(h[:2, :2] / h[2, 2]))) if h[2, 2] != 0 else 1.0
            level = int(np.clip(math.floor(-math.log2(max(scale, 1e-6))), 0, len(sprite.levels) - 1))
            src = sprite.levels[level]
            mouth = self._mouths[index]
            if mouth is not None:
                openness = self.mouth_open(index, t_s)
                if openness >= _MOUTH_MIN_OPEN:
                    src = mouth[0].open(src, level, openness)
            up = np.diag([2.0 ** level, 2.0 ** level, 1.0])
            shift = np.array([[1.0, 0.0, -ix0], [0.0, 1.0, -iy0], [0.0, 0.0, 1.0]])
            warped = cv2.warpPerspective(src, shift @ h @ up, (ix1 - ix0, iy1 - iy0), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
            _blend_premultiplied(frame[iy0:iy1, ix0:ix1], warped)
        return frame


class _MouthRig:
    """Opens a photo's mouth: the lower lip and chin move down, the gap shows the mouth's dark inside.

    Coordinates are level-0 sprite pixels (the photo's, less the crop's
    origin); a mip level ``l`` is handled by scaling them by ``2 ** -l``, the
    same convention the renderer's homography uses. The lip line is a
    parabola through the mouth corners and ``center_px``; below it, in the
    mouth, the lower lip drops by ``drop * (1 - u^2)`` (u = -1..1
    corner to corner, a lens-shaped opening); further down that blends into
    a drop of the whole jaw (full under the mouth, none beyond the jaw line,
    so the cheeks beside the mouth stretch instead of tearing) and fades out
    below the chin onto the neck. Pixels are pulled from where they were
    (backward mapping with ``cv2.remap``), so nothing is left unfilled, and
    the gap's coverage is the exact 1-D overlap of each pixel with the gap:
    anti-aliased edges.
    """

    def __init__(self, mouth: Mouth, center_px: tuple[float, float]):
        self.center_px = center_px   # in level-0 sprite pixels
        self.width_px = mouth.width_px
        self.corner_rise_px = mouth.corner_rise_px
        self.full_open_px = mouth.full_open_px

    @classmethod
    def for_person(cls, person: Person, sprite: _Sprite, source: str, key_path: str) -> _MouthRig:
        assert person.mouth is not None
        mouth = person.mouth
        crop_x, crop_y = (person.crop_px or (0, 0, 0, 0))[:2]
        cx, cy = mouth.center_px[0] - crop_x, mouth.center_px[1] - crop_y
        h, w = sprite.levels[0].shape[:2]
        if not (0 <= cx - mouth.width_px / 2 and cx + mouth.width_px / 2 <= w and 0 <= cy < h):
            raise ScenarioError(source, f"{key_path}.mouth.center_px",
                                f"{list(mouth.center_px)} with width_px {mouth.width_px:g} reaches outside the "
                                f"person's image")
        return cls(mouth, (cx, cy))

    def open(self, level_image: np.ndarray, level: int, openness: float) -> np.ndarray:
        """A copy of the RGBA (premultiplied) mip level ``level`` with the mouth ``openness`` (0..1) open."""
        cv2 = _cv2()
        scale = 2.0 ** -level
        cx, cy = self.center_px[0] * scale, self.center_px[1] * scale
        width = self.width_px * scale
        rise = self.corner_rise_px * scale
        drop = self.full_open_px * scale * float(np.clip(openness, 0.0, 1.0))
        height_img, width_img = level_image.shape[:2]
        x0 = max(0, int(math.floor(cx - _JAW_EDGE_W * width)) - 1)
        x1 = min(width_img, int(math.ceil(cx + _JAW_EDGE_W * width)) + 2)
        y0 = max(0, int(math.floor(cy - max(rise, 0.0) - 2)))
        y1 = min(height_img, int(math.ceil(cy + (_CHIN_BELOW_W + _NECK_FADE_W) * width + drop + 2)) + 1)
        if x1 - x0 < 2 or y1 - y0 < 2 or drop <= 0.0:
            return level_image
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)                 # (h, w) pixel centres
        u = (xs - cx) / (0.5 * width)
        lip_y = cy - rise * np.clip(u, -1.0, 1.0) ** 2                       # where the lips part
        in_mouth = np.abs(u) < 1.0
        lip_drop = drop * np.clip(1.0 - u * u, 0.0, 1.0) ** _LIP_PROFILE_POWER
        jaw_drop = drop * (1.0 - _smoothstep((np.abs(xs - cx) - _JAW_FLAT_W * width)
                                             / ((_JAW_EDGE_W - _JAW_FLAT_W) * width)))
        below = ys - lip_y
        blend = _smoothstep(below / (_LIP_TO_JAW_W * width))
        neck = 1.0 - _smoothstep((ys - (cy + _CHIN_BELOW_W * width)) / (_NECK_FADE_W * width))
        shift = np.where(below >= 0.0, ((1.0 - blend) * lip_drop + blend * jaw_drop) * neck, 0.0)
        # Pixels in the upper half of the gap keep their own content (the upper teeth's edge), the rest
        # come from above, never from across the lip line.
        upper_half = in_mouth & (below < 0.5 * lip_drop)
        map_y = np.where(upper_half, ys, ys - shift)
        map_y = np.where(in_mouth & ~upper_half, np.maximum(map_y, lip_y + 0.5), map_y)
        roi = cv2.remap(level_image, np.ascontiguousarray(xs), np.ascontiguousarray(map_y.astype(np.float32)),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)              # (h, w, 4)
        # Coverage of each pixel [y - 0.5, y + 0.5] by the gap [lip_y, lip_y + lip_drop].
        cover = np.clip(np.minimum(ys + 0.5, lip_y + lip_drop) - np.maximum(ys - 0.5, lip_y), 0.0, 1.0)
        cover = np.where(in_mouth, cover, 0.0)[..., None]                      # (h, w, 1)
        depth = np.clip(below / np.maximum(lip_drop, 1e-3), 0.0, 1.0)[..., None] ** 1.5
        interior = (1.0 - depth) * _INTERIOR_TOP_RGB + depth * _INTERIOR_BOTTOM_RGB   # (h, w, 3)
        interior *= (0.8 + 0.2 * np.clip(1.0 - u * u, 0.0, 1.0))[..., None]         # darker in the corners
        alpha = roi[..., 3:4].astype(np.float32) / 255.0
        rgb = roi[..., :3].astype(np.float32) * (1.0 - cover) + interior * alpha * cover
        out = level_image.copy()
        out[y0:y1, x0:x1, :3] = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
        out[y0:y1, x0:x1, 3] = roi[..., 3]
        return out


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _bbox(h: np.ndarray, points: np.ndarray) -> tuple[float, float, float, float]:
    homogeneous = np.column_stack([points, np.ones(len(points))]) @ h.T
    xy = homogeneous[:, :2] / homogeneous[:, 2:3]
    return (float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max()))


def _blend_premultiplied(dst: np.ndarray, src_rgba: np.ndarray) -> None:
    """dst = src + dst * (255 - alpha) / 255, in place, in saturating uint8 (OpenCV's SIMD kernels)."""
    cv2 = _cv2()
    inverse = cv2.cvtColor(cv2.bitwise_not(np.ascontiguousarray(src_rgba[..., 3])), cv2.COLOR_GRAY2RGB)
    behind = cv2.multiply(np.ascontiguousarray(dst), inverse, scale=1.0 / 255.0)
    dst[...] = cv2.add(cv2.cvtColor(src_rgba, cv2.COLOR_RGBA2RGB), behind)


def _background(background: Background, width_px: int, height_px: int, image: np.ndarray | None) -> np.ndarray:
    if background.kind == "solid":
        frame = np.empty((height_px, width_px, 3), dtype=np.uint8)
        frame[...] = np.array(background.top_rgb, dtype=np.uint8)
        return frame
    if background.kind == "gradient":
        ramp = np.linspace(0.0, 1.0, height_px, dtype=np.float32)[:, None]
        column = (1 - ramp) * np.array(background.top_rgb, np.float32) + ramp * np.array(background.bottom_rgb,
                                                                                       np.float32)  # (H, 3)
        return np.repeat(column.round().astype(np.uint8)[:, None, :], width_px, axis=1)
    assert image is not None
    # Scale and centre-crop the image so that it covers (W, H).
    cv2 = _cv2()
    h, w = image.shape[:2]
    scale = max(width_px / w, height_px / h)
    resized = cv2.resize(image, (max(width_px, round(w * scale)), max(height_px, round(h * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    y0 = (resized.shape[0] - height_px) // 2
    x0 = (resized.shape[1] - width_px) // 2
    return np.ascontiguousarray(resized[y0:y0 + height_px, x0:x0 + width_px])
