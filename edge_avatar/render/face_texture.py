"""The avatar's face, painted in its surface chart from the 52 ARKit blendshapes and the eye angles.

Why this module exists: the teacher draws the face in two steps, like a
film renderer: this module paints the *texture* -- albedo, a height field
(nose, lips, cheeks, brow ridge) and a gloss mask -- in the head's (u, v)
chart (see ``layout``), and ``teacher`` wraps it onto the turned head and
lights it. Painting in the chart keeps every feature's shape independent of
the head's rotation, and it gives the student its texture targets.

The design is ours: a friendly, softly stylised receptionist with large
almond eyes, rounded brows, a small button nose, rosy cheeks and a swept
fringe. Each blendshape moves a named control point (a lid apex, a mouth
corner, a brow end) by an amount in head units written next to it, so the
effect of every channel can be read here and tested from the pixels.

Why OpenCV: its anti-aliased polygon filling with sub-pixel coordinates and
its Gaussian blur are fast, exact and available on every machine we train
on. It is used only by the teacher (training, evaluation, tests), never by
the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_avatar.motion import BLENDSHAPE_INDEX, EYES_SLICE
from edge_avatar.render.layout import EYE_PATCH, TEXTURE_RECT, Rect

SUBPIXEL_BITS = 4                 # cv2 fixed-point precision for polygon vertices
EYEBALL_RADIUS_UNITS = 0.22       # how far the iris travels per radian of gaze
IRIS_R = 0.105                    # iris radius, head units
LOOK_BLENDSHAPE_DEG = 10.0        # eyeLook* add this much gaze at 1.0 (their main effect is on the lids)

# ---------------------------------------------------------------- palette (sRGB 0..1)

SKIN = np.array([0.94, 0.74, 0.61], np.float32)
SKIN_SHADOW = np.array([0.78, 0.54, 0.45], np.float32)
BLUSH = np.array([0.93, 0.52, 0.50], np.float32)
HAIR = np.array([0.25, 0.16, 0.12], np.float32)
HAIR_SHEEN = np.array([0.44, 0.30, 0.22], np.float32)
BROW = np.array([0.27, 0.17, 0.13], np.float32)
LASH = np.array([0.13, 0.08, 0.07], np.float32)
SCLERA = np.array([0.97, 0.96, 0.94], np.float32)
IRIS = np.array([0.36, 0.24, 0.13], np.float32)
IRIS_LIGHT = np.array([0.60, 0.43, 0.22], np.float32)
PUPIL = np.array([0.06, 0.04, 0.04], np.float32)
LIP = np.array([0.80, 0.43, 0.43], np.float32)
LIP_UPPER = np.array([0.72, 0.37, 0.38], np.float32)
LIP_LINE = np.array([0.45, 0.20, 0.21], np.float32)
MOUTH_INSIDE = np.array([0.30, 0.09, 0.11], np.float32)
TEETH = np.array([0.97, 0.95, 0.90], np.float32)
TONGUE = np.array([0.86, 0.46, 0.48], np.float32)
WHITE = np.array([1.0, 1.0, 1.0], np.float32)


class Blendshapes:
    """Read a motion frame's blendshapes by ARKit name, clamped to 0..1."""

    def __init__(self, motion: np.ndarray):
        self._values = np.clip(np.asarray(motion, np.float32)[:52], 0.0, 1.0)

    def __getattr__(self, name: str) -> float:
        return float(self._values[BLENDSHAPE_INDEX[name]])

    def side(self, stem: str, sign: int) -> float:
        """``stem`` + "Left" for sign +1 (the avatar's left), + "Right" for -1."""
        return float(self._values[BLENDSHAPE_INDEX[stem + ("Left" if sign > 0 else "Right")]])


@dataclass
class FaceTexture:
    """The painted chart: albedo (H, W, 3), height (H, W) in head units, gloss (H, W), at ``px_per_unit``."""

    albedo: np.ndarray
    height: np.ndarray
    gloss: np.ndarray
    px_per_unit: float
    rect: Rect

    def slopes(self) -> tuple[np.ndarray, np.ndarray]:
        """dh/du and dh/dv (head units per head unit), (H, W) each; v grows upwards, rows downwards."""
        d_row, d_col = np.gradient(self.height)
        return d_col * self.px_per_unit, -d_row * self.px_per_unit

    def channels(self) -> np.ndarray:
        """(H, W, 6): albedo RGB, slope u, slope v, gloss -- the layout the student learns."""
        slope_u, slope_v = self.slopes()
        return np.concatenate([self.albedo, slope_u[..., None], slope_v[..., None], self.gloss[..., None]],
                              axis=-1).astype(np.float32)


# ---------------------------------------------------------------- small geometry helpers


def smoothstep(e0: float, e1: float, x: np.ndarray | float) -> np.ndarray | float:
    t = np.clip((np.asarray(x, np.float32) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def arc(p0: tuple[float, float], p1: tuple[float, float], bulge: float, n: int = 24, power: float = 1.0,
        skew: float = 0.0) -> np.ndarray:
    """Points from p0 to p1 bent by ``bulge`` head units along +v (its peak moved by ``skew`` in -0.5..0.5)."""
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)
    x0, y0 = p0
    x1, y1 = p1
    # Remap t so the peak of sin(pi * s) sits at 0.5 + skew.
    peak = 0.5 + skew
    s = np.where(t < peak, 0.5 * t / peak, 0.5 + 0.5 * (t - peak) / (1.0 - peak))
    lift = bulge * np.clip(np.sin(np.pi * s), 0.0, 1.0) ** power
    return np.stack([x0 + (x1 - x0) * t, y0 + (y1 - y0) * t + lift], axis=-1)


def ellipse_pts(center: tuple[float, float], radii: tuple[float, float], angle_rad: float = 0.0,
                n: int = 40) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False, dtype=np.float32)
    x, y = radii[0] * np.cos(t), radii[1] * np.sin(t)
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], axis=-1)


def thick_stroke(points: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """A closed outline around a polyline with a width per point (head units): a tapered brush stroke."""
    d = np.gradient(points, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    half = (widths / 2.0)[:, None]
    return np.concatenate([points + normal * half, (points - normal * half)[::-1]], axis=0)


# ---------------------------------------------------------------- the canvas


class Painter:
    """A chart-space canvas: anti-aliased shapes become soft masks that tint, raise or gloss it."""

    def __init__(self, px_per_unit: float, rect: Rect = TEXTURE_RECT):
        self.ppu = float(px_per_unit)
        self.rect = rect
        self.width_px, self.height_px = rect.size_px(px_per_unit)
        self.albedo = np.empty((self.height_px, self.width_px, 3), np.float32)
        self.albedo[:] = SKIN
        self.height = np.zeros((self.height_px, self.width_px), np.float32)
        self.gloss = np.full((self.height_px, self.width_px), 0.12, np.float32)

    def to_px(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, np.float32)
        return np.stack([(pts[:, 0] - self.rect.u0) * self.ppu, (self.rect.v1 - pts[:, 1]) * self.ppu], -1)

    def mask(self, shapes: list[np.ndarray], blur_units: float = 0.0, stroke_units: float = 0.0,
             closed: bool = True) -> tuple[np.ndarray, int, int] | None:
        """Coverage (0..1) of the filled polygons (or strokes) in ``shapes``, cropped to their bounding box."""
        px = [self.to_px(s) for s in shapes if len(s) >= 2]
        if not px:
            return None
        allp = np.concatenate(px, axis=0)
        pad = int(np.ceil(3.0 * blur_units * self.ppu + stroke_units * self.ppu)) + 3
        c0 = max(int(np.floor(allp[:, 0].min())) - pad, 0)
        r0 = max(int(np.floor(allp[:, 1].min())) - pad, 0)
        c1 = min(int(np.ceil(allp[:, 0].max())) + pad, self.width_px)
        r1 = min(int(np.ceil(allp[:, 1].max())) + pad, self.height_px)
        if c1 <= c0 or r1 <= r0:
            return None
        canvas = np.zeros((r1 - r0, c1 - c0), np.uint8)
        scale = float(1 << SUBPIXEL_BITS)
        fixed = [np.round((p - (c0, r0)) * scale).astype(np.int32) for p in px]
        if stroke_units > 0.0:
            thickness = max(1, int(round(stroke_units * self.ppu)))
            cv2.polylines(canvas, fixed, closed, 255, thickness, cv2.LINE_AA, SUBPIXEL_BITS)
        else:
            cv2.fillPoly(canvas, fixed, 255, cv2.LINE_AA, shift=SUBPIXEL_BITS)
        m = canvas.astype(np.float32) * (1.0 / 255.0)
        if blur_units > 0.0:
            sigma = blur_units * self.ppu
            m = cv2.GaussianBlur(m, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
        return m, r0, c0

    def paint(self, mask: tuple[np.ndarray, int, int] | None, color: np.ndarray | None = None,
              alpha: float = 1.0, raise_units: float = 0.0, gloss: float | None = None,
              clip: tuple[np.ndarray, int, int] | None = None) -> None:
        """Blend ``color`` over the albedo by mask * alpha, add ``raise_units`` of height, set gloss."""
        if mask is None or alpha <= 0.0 and raise_units == 0.0:
            return
        m, r0, c0 = mask
        if clip is not None:
            m = m * self._crop(clip, r0, c0, m.shape)
        sl = np.s_[r0:r0 + m.shape[0], c0:c0 + m.shape[1]]
        if color is not None and alpha > 0.0:
            a = (m * min(alpha, 1.0))[..., None]
            self.albedo[sl] += a * (np.asarray(color, np.float32) - self.albedo[sl])
        if raise_units:
            self.height[sl] += m * raise_units
        if gloss is not None:
            self.gloss[sl] += m * (gloss - self.gloss[sl])

    @staticmethod
    def _crop(clip: tuple[np.ndarray, int, int], r0: int, c0: int, shape: tuple[int, int]) -> np.ndarray:
        """``clip`` (another mask) resampled onto the box at (r0, c0) of ``shape``; zero outside it."""
        cm, cr, cc = clip
        out = np.zeros(shape, np.float32)
        rr0, cc0 = max(r0, cr), max(c0, cc)
        rr1, cc1 = min(r0 + shape[0], cr + cm.shape[0]), min(c0 + shape[1], cc + cm.shape[1])
        if rr1 > rr0 and cc1 > cc0:
            out[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = cm[rr0 - cr:rr1 - cr, cc0 - cc:cc1 - cc]
        return out

    def texture(self) -> FaceTexture:
        return FaceTexture(self.albedo, self.height, self.gloss, self.ppu, self.rect)


# ---------------------------------------------------------------- the face


def gaze_deg(motion: np.ndarray, sign: int) -> tuple[float, float]:
    """(yaw, pitch) of one eye in degrees: the eye angles plus the eyeLook* blendshapes' share."""
    bs = Blendshapes(motion)
    eyes = np.nan_to_num(np.asarray(motion, np.float32)[EYES_SLICE])
    yaw, pitch = (float(eyes[0]), float(eyes[1])) if sign > 0 else (float(eyes[2]), float(eyes[3]))
    # eyeLookOut of the left eye turns it to the avatar's left (+u); of the right eye, to its right.
    yaw += LOOK_BLENDSHAPE_DEG * sign * (bs.side("eyeLookOut", sign) - bs.side("eyeLookIn", sign))
    pitch += LOOK_BLENDSHAPE_DEG * (bs.side("eyeLookUp", sign) - bs.side("eyeLookDown", sign))
    return float(np.clip(yaw, -40.0, 40.0)), float(np.clip(pitch, -35.0, 35.0))


def paint_face(motion: np.ndarray, px_per_unit: float, rect: Rect = TEXTURE_RECT) -> FaceTexture:
    """Paint the whole chart for one motion frame (see the module docstring)."""
    p = Painter(px_per_unit, rect)
    bs = Blendshapes(motion)
    _paint_base(p)
    _paint_cheeks(p, bs)
    _paint_nose(p, bs)
    for sign in (1, -1):
        _paint_eye(p, bs, sign, gaze_deg(motion, sign))
    _paint_mouth(p, bs)
    _paint_hair(p)
    _paint_ears(p)
    return p.texture()


def _paint_base(p: Painter) -> None:
    """Static relief and soft shadows: brow ridge, eye sockets, chin, the jaw line under the chin."""
    for sign in (1, -1):
        p.paint(p.mask([ellipse_pts((sign * 0.37, 0.08), (0.2, 0.14))], blur_units=0.07), SKIN_SHADOW, 0.18)
        p.paint(p.mask([ellipse_pts((sign * 0.38, 0.33), (0.22, 0.07))], blur_units=0.06), raise_units=0.035)
    p.paint(p.mask([ellipse_pts((0.0, -0.98), (0.2, 0.12))], blur_units=0.08), raise_units=0.025)
    # The underside of the jaw is in shadow however the head turns (ambient occlusion).
    p.paint(p.mask([ellipse_pts((0.0, -1.45), (0.95, 0.3))], blur_units=0.1), SKIN_SHADOW, 0.45)


def _paint_cheeks(p: Painter, bs: Blendshapes) -> None:
    puff = bs.cheekPuff
    for sign in (1, -1):
        lift = 0.5 * bs.side("mouthSmile", sign) + 0.5 * bs.side("cheekSquint", sign)
        center = (sign * (0.55 + 0.03 * puff), -0.24 + 0.07 * lift)
        radii = (0.19 * (1.0 + 0.3 * puff), 0.12 * (1.0 + 0.25 * puff))
        p.paint(p.mask([ellipse_pts(center, radii)], blur_units=0.08), BLUSH, 0.28 + 0.22 * lift + 0.3 * puff)
        # The cheek's relief: raised by a smile or a squint, inflated by a puff.
        p.paint(p.mask([ellipse_pts((sign * 0.52, -0.3 + 0.06 * lift), (0.24, 0.2))], blur_units=0.1),
                raise_units=0.04 + 0.05 * lift + 0.12 * puff)


def _paint_nose(p: Painter, bs: Blendshapes) -> None:
    # Relief: a bridge and a round tip (the tip protrudes ~0.14 head units; see teacher parallax).
    p.paint(p.mask([ellipse_pts((0.0, 0.0), (0.05, 0.15))], blur_units=0.05), raise_units=0.05)
    p.paint(p.mask([ellipse_pts((0.0, -0.13), (0.085, 0.075))], blur_units=0.045), raise_units=0.12)
    p.paint(p.mask([ellipse_pts((0.0, -0.12), (0.07, 0.06))], blur_units=0.04), BLUSH, 0.22)
    for sign in (1, -1):
        sneer = bs.side("noseSneer", sign)
        wing = (sign * (0.085 + 0.012 * sneer), -0.19 + 0.035 * sneer)
        p.paint(p.mask([ellipse_pts(wing, (0.05, 0.04))], blur_units=0.03), raise_units=0.06 + 0.02 * sneer)
        nostril = (sign * (0.05 + 0.01 * sneer), -0.215 + 0.03 * sneer)
        p.paint(p.mask([ellipse_pts(nostril, (0.027 + 0.008 * sneer, 0.014), angle_rad=sign * 0.35)],
                       blur_units=0.006), LIP_LINE * 0.6, 0.85)
        if sneer > 0.0:  # wrinkles across the side of the bridge
            for k in range(3):
                y = -0.01 + 0.045 * k
                line = arc((sign * 0.05, y), (sign * 0.17, y + 0.03), 0.01, n=8)
                p.paint(p.mask([line], stroke_units=0.012, closed=False, blur_units=0.005), SKIN_SHADOW,
                        0.75 * sneer)
    # The shadow under the tip.
    p.paint(p.mask([ellipse_pts((0.0, -0.255), (0.09, 0.03))], blur_units=0.025), SKIN_SHADOW, 0.4)


def _paint_eye(p: Painter, bs: Blendshapes, sign: int, gaze: tuple[float, float]) -> None:
    """One eye and its brow; coordinates are written for the left eye (u > 0) and mirrored by ``sign``."""
    blink = bs.side("eyeBlink", sign)
    squint = bs.side("eyeSquint", sign)
    wide = bs.side("eyeWide", sign)
    look_up, look_down = bs.side("eyeLookUp", sign), bs.side("eyeLookDown", sign)
    look_in, look_out = bs.side("eyeLookIn", sign), bs.side("eyeLookOut", sign)
    cheek = bs.side("cheekSquint", sign)
    sneer = bs.side("noseSneer", sign)

    def m(u: float, v: float) -> tuple[float, float]:
        return sign * u, v

    def mirror(pts: np.ndarray) -> np.ndarray:
        return pts * np.array([sign, 1.0], np.float32)

    cx, cy = 0.38, 0.04
    inner, outer = (0.19, 0.025), (0.575, 0.07)
    up_open = 0.16 * (1.0 + 0.45 * wide + 0.22 * look_up - 0.3 * look_down - 0.3 * squint) - 0.03 * sneer
    lo_open = -0.1 * (1.0 + 0.15 * wide - 0.2 * look_down) + 0.06 * squint + 0.075 * cheek + 0.02 * sneer
    lo_open = min(lo_open, -0.005)
    closed_line = -0.02 + 0.5 * lo_open          # where the lids meet: just above the lower lid
    up_apex = up_open + (closed_line - up_open) * blink
    lo_apex = lo_open + (closed_line - lo_open) * blink * 0.35
    skew = 0.12 * (look_out - look_in) + 0.06
    upper = arc(inner, outer, up_apex - 0.5 * (inner[1] + outer[1]) + cy, n=32, power=0.85, skew=skew)
    lower = arc(inner, outer, lo_apex - 0.5 * (inner[1] + outer[1]) + cy, n=32, power=1.2, skew=0.1)
    gap = upper[:, 1] - lower[:, 1]
    upper[:, 1] = np.maximum(upper[:, 1], lower[:, 1])  # a closed lid lies on the lower one
    opening_pts = np.concatenate([upper, lower[::-1]], axis=0)
    is_open = float(gap.max()) > 0.004

    # Lid crease and socket: the crease rides up with a wide eye and fades as the lid closes.
    crease = arc((0.19, 0.07), (0.58, 0.1), 0.1 + 0.5 * (up_apex - 0.16) * 0.6 + 0.03 * wide, n=24,
                 power=0.9, skew=0.05)
    p.paint(p.mask([mirror(crease)], stroke_units=0.018, closed=False, blur_units=0.012), SKIN_SHADOW,
            0.55 * (1.0 - 0.7 * blink))
    # Smile lines at the outer corner from a squint of the cheek.
    if cheek + squint > 0.0:
        for k, dy in enumerate((-0.04, 0.02, 0.08)):
            line = arc((0.6, 0.05 + dy), (0.72, 0.02 + 1.6 * dy), 0.01, n=8)
            p.paint(p.mask([mirror(line)], stroke_units=0.011, closed=False, blur_units=0.006), SKIN_SHADOW,
                    (0.6 - 0.1 * k) * min(1.0, cheek + 0.5 * squint))
        p.paint(p.mask([mirror(arc((0.24, -0.05), (0.52, -0.02), -0.05, n=16))], stroke_units=0.02,
                       closed=False, blur_units=0.02), SKIN_SHADOW, 0.35 * cheek)

    if is_open:
        opening = p.mask([mirror(opening_pts)])
        p.paint(opening, SCLERA, 1.0, gloss=0.3)
        # Shadow cast by the upper lid on the eyeball.
        shade = upper.copy()
        shade[:, 1] -= 0.03
        p.paint(p.mask([mirror(np.concatenate([upper, shade[::-1]]))], blur_units=0.025), SKIN_SHADOW * 0.8,
                0.55, clip=opening)
        yaw, pitch = np.deg2rad(gaze[0]), np.deg2rad(gaze[1])
        iris_c = (sign * cx + EYEBALL_RADIUS_UNITS * np.sin(yaw), cy - 0.005 + EYEBALL_RADIUS_UNITS * np.sin(pitch))
        squash = (float(np.cos(yaw)), float(np.cos(pitch)))
        p.paint(p.mask([ellipse_pts(iris_c, (IRIS_R * squash[0], IRIS_R * squash[1]))]), IRIS, 1.0, clip=opening)
        p.paint(p.mask([ellipse_pts((iris_c[0], iris_c[1] - 0.025), (0.06 * squash[0], 0.045 * squash[1]))],
                       blur_units=0.02), IRIS_LIGHT, 0.7, clip=opening)
        p.paint(p.mask([ellipse_pts(iris_c, (IRIS_R * squash[0], IRIS_R * squash[1]))], stroke_units=0.016,
                       blur_units=0.004), PUPIL, 0.55, clip=opening)
        p.paint(p.mask([ellipse_pts(iris_c, (0.05 * squash[0], 0.05 * squash[1]))], blur_units=0.003), PUPIL,
                1.0, clip=opening)
        for (dx, dy, r, a) in ((-0.035, 0.04, 0.025, 0.95), (0.035, -0.035, 0.012, 0.8)):
            p.paint(p.mask([ellipse_pts((iris_c[0] + dx, iris_c[1] + dy), (r, r))], blur_units=0.003), WHITE, a,
                    clip=opening)
        # Lower lid line.
        p.paint(p.mask([mirror(lower[2:-2])], stroke_units=0.012, closed=False, blur_units=0.006), SKIN_SHADOW,
                0.75)

    # Upper lash line: thick, tapering towards the nose, with a small flick past the outer corner.
    n = len(upper)
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)
    widths = 0.018 + 0.03 * t ** 0.8
    flick = np.array([[outer[0] + 0.05, outer[1] + 0.045 + 0.6 * (upper[-1, 1] - outer[1])]], np.float32)
    lash = np.concatenate([upper, flick], axis=0)
    p.paint(p.mask([mirror(thick_stroke(lash, np.append(widths, 0.004)))], blur_units=0.004), LASH, 1.0,
            gloss=0.25)

    # The brow: a tapered stroke; inner end up (browInnerUp), outer end up, all down and in (browDown).
    down = bs.side("browDown", sign)
    inner_up, outer_up = bs.browInnerUp, bs.side("browOuterUp", sign)
    b_inner = (0.17 - 0.035 * down, 0.35 + 0.13 * inner_up - 0.09 * down)
    b_outer = (0.61 + 0.01 * outer_up, 0.36 + 0.12 * outer_up - 0.05 * down + 0.02 * inner_up)
    bulge = 0.075 + 0.045 * outer_up - 0.03 * down - 0.025 * inner_up
    brow = arc(b_inner, b_outer, bulge, n=28, power=1.0, skew=-0.1 + 0.15 * inner_up)
    t = np.linspace(0.0, 1.0, len(brow), dtype=np.float32)
    widths = 0.07 - 0.045 * t ** 1.5
    p.paint(p.mask([mirror(thick_stroke(brow, widths))], blur_units=0.006), BROW, 0.97, raise_units=0.008,
            gloss=0.2)
    # Frown lines between the brows; worry lines above them.
    if down > 0.0:
        p.paint(p.mask([mirror(arc((0.065, 0.3), (0.085, 0.42), 0.01, n=8))], stroke_units=0.014,
                       closed=False, blur_units=0.006), SKIN_SHADOW, 0.8 * down)
    if inner_up > 0.0:
        for dy in (0.0, 0.06):
            line = arc((0.0, 0.55 + dy), (0.2, 0.53 + dy), -0.015, n=10)
            p.paint(p.mask([mirror(line)], stroke_units=0.012, closed=False, blur_units=0.008), SKIN_SHADOW,
                    0.5 * inner_up)


def _paint_mouth(p: Painter, bs: Blendshapes) -> None:
    jaw_open, close = bs.jawOpen, bs.mouthClose
    jaw_lr = bs.jawLeft - bs.jawRight
    funnel, pucker = bs.mouthFunnel, bs.mouthPucker
    roll_up, roll_lo = bs.mouthRollUpper, bs.mouthRollLower
    shrug_up, shrug_lo = bs.mouthShrugUpper, bs.mouthShrugLower
    tongue = bs.tongueOut
    press = 0.5 * (bs.mouthPressLeft + bs.mouthPressRight)
    stretch = 0.5 * (bs.mouthStretchLeft + bs.mouthStretchRight)

    xc = 0.11 * (bs.mouthLeft - bs.mouthRight)
    yc = -0.5 + 0.025 * shrug_lo + 0.015 * shrug_up - 0.02 * jaw_open

    def corner(sign: int) -> tuple[float, float]:
        smile, frown = bs.side("mouthSmile", sign), bs.side("mouthFrown", sign)
        dimple, stretch_s = bs.side("mouthDimple", sign), bs.side("mouthStretch", sign)
        press_s = bs.side("mouthPress", sign)
        half = (0.215 + 0.055 * smile + 0.075 * stretch_s + 0.03 * dimple + 0.012 * press_s
                - 0.09 * pucker - 0.065 * funnel - 0.02 * bs.cheekPuff)
        dy = (0.085 * smile - 0.075 * frown - 0.025 * stretch_s + 0.012 * dimple
              + 0.015 * bs.side("mouthUpperUp", sign) - 0.03 * jaw_open)
        return xc + sign * half + 0.04 * jaw_lr * 0.5, yc + dy

    right, left = corner(-1), corner(1)

    # Per-side amounts blend across the mouth from the right corner (t = 0) to the left one (t = 1).
    n = 41
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)
    w_left = smoothstep(0.2, 0.8, t)

    def sided(stem: str) -> np.ndarray:
        return (1.0 - w_left) * bs.side(stem, -1) + w_left * bs.side(stem, 1)

    bump = np.sin(np.pi * t)
    x = right[0] + (left[0] - right[0]) * t
    # The line where the lips meet: straight between the corners, curved by a smile or frown.
    mid = np.where(t < 0.5, yc + (right[1] - yc) * (1 - 2 * t) ** 2, yc + (left[1] - yc) * (2 * t - 1) ** 2)
    lower_shift = 0.09 * jaw_lr * bump                              # the jaw carries the lower lip sideways

    drop = 0.3 * max(jaw_open - close, 0.0) * (1.0 - 0.85 * press)
    up_gap = (0.012 * jaw_open + 0.07 * sided("mouthUpperUp") + 0.035 * funnel + 0.012 * shrug_up
              + 0.02 * tongue) * (1.0 - 0.8 * press)
    lo_gap = (drop + 0.075 * sided("mouthLowerDown") + 0.06 * funnel + 0.01 * stretch + 0.035 * tongue
              + 0.015 * pucker) * (1.0 - 0.6 * press) - 0.02 * shrug_lo
    lo_gap = np.maximum(lo_gap, 0.0)
    roundness = 0.55 - 0.3 * funnel - 0.2 * pucker                 # < 1: a rounder opening
    prof_up = np.clip(np.sin(np.pi * t), 0.0, 1.0) ** max(roundness, 0.2)
    prof_lo = np.clip(np.sin(np.pi * t), 0.0, 1.0) ** max(roundness * 0.9, 0.2)
    up_inner = np.stack([x, mid + up_gap * prof_up], -1)
    lo_inner = np.stack([x + lower_shift, mid - lo_gap * prof_lo], -1)

    thick_up = 0.055 * (1 - 0.85 * roll_up) * (1 + 0.55 * pucker + 0.35 * funnel) * (1 - 0.35 * press) \
        * (1 - 0.3 * stretch)
    thick_lo = 0.078 * (1 - 0.85 * roll_lo) * (1 + 0.5 * pucker + 0.35 * funnel) * (1 - 0.35 * press) \
        * (1 - 0.3 * stretch) * (1 + 0.15 * bs.jawForward)
    lip_prof = np.clip(np.sin(np.pi * t), 0.0, 1.0) ** 0.55
    bow = 0.018 * np.exp(-((t - 0.5) / 0.07) ** 2) * (1 - 0.5 * pucker)  # the Cupid's bow dip
    up_outer = np.stack([x, up_inner[:, 1] + thick_up * lip_prof - bow], -1)
    lo_outer = np.stack([x + lower_shift, lo_inner[:, 1] - thick_lo * lip_prof - 0.01 * bs.jawForward], -1)

    # Relief and shadows around the mouth: the philtrum, the chin crease, the cheeks' folds.
    p.paint(p.mask([ellipse_pts((xc, yc + 0.16), (0.045, 0.07))], blur_units=0.03), SKIN_SHADOW, 0.12)
    chin_y = float(lo_outer[n // 2, 1]) - 0.07 + 0.02 * shrug_lo
    p.paint(p.mask([arc((xc - 0.14 + lower_shift[n // 2], chin_y + 0.01), (xc + 0.14 + lower_shift[n // 2],
                                                                             chin_y + 0.01), -0.025, n=16)],
                   stroke_units=0.025, closed=False, blur_units=0.025), SKIN_SHADOW, 0.2 + 0.5 * shrug_lo)
    if shrug_lo > 0.0:  # the chin boss wrinkles
        for dx in (-0.06, 0.0, 0.06):
            p.paint(p.mask([ellipse_pts((xc + dx, chin_y - 0.12), (0.02, 0.015))], blur_units=0.01),
                    SKIN_SHADOW, 0.45 * shrug_lo)
    for sign, c in ((-1, right), (1, left)):
        fold = (0.18 + 0.55 * bs.side("mouthSmile", sign) + 0.3 * bs.side("mouthUpperUp", sign)
                + 0.35 * bs.side("noseSneer", sign) + 0.25 * bs.side("mouthStretch", sign))
        start = (sign * 0.13, -0.2 + 0.02 * bs.side("noseSneer", sign))
        end = (c[0] + sign * 0.05, c[1] - 0.02)
        p.paint(p.mask([arc(start, end, -0.03 * sign * sign, n=16)], stroke_units=0.02, closed=False,
                       blur_units=0.018), SKIN_SHADOW, min(fold, 1.0) * 0.55)
        dimple = bs.side("mouthDimple", sign)
        if dimple > 0.0:
            p.paint(p.mask([ellipse_pts((c[0] + sign * 0.055, c[1] + 0.005), (0.018, 0.028))], blur_units=0.01),
                    SKIN_SHADOW, 0.75 * dimple, raise_units=-0.02 * dimple)
        # Corner shadows.
        p.paint(p.mask([ellipse_pts((c[0] + sign * 0.008, c[1]), (0.016, 0.012))], blur_units=0.008), LIP_LINE,
                0.55)
    if bs.cheekPuff > 0.0:
        p.paint(p.mask([ellipse_pts((xc, yc), (0.3, 0.2))], blur_units=0.06), raise_units=0.05 * bs.cheekPuff)

    # Lips (relief: pucker and funnel push them forward).
    protrude = 0.03 + 0.07 * pucker + 0.045 * funnel
    upper_lip = np.concatenate([up_outer, up_inner[::-1]], 0)
    lower_lip = np.concatenate([lo_inner, lo_outer[::-1]], 0)
    p.paint(p.mask([np.concatenate([up_outer, lo_outer[::-1]], 0)], blur_units=0.03), raise_units=protrude)
    p.paint(p.mask([upper_lip]), LIP_UPPER, 0.95, gloss=0.45)
    p.paint(p.mask([lower_lip]), LIP, 0.95, gloss=0.55)
    hl = (float(x[n // 2] + lower_shift[n // 2]), float(0.5 * (lo_inner[n // 2, 1] + lo_outer[n // 2, 1])))
    p.paint(p.mask([ellipse_pts((hl[0] + 0.03, hl[1] + 0.005), (0.05, 0.014))], blur_units=0.012), WHITE,
            0.28 * (1 - 0.8 * roll_lo))

    # The opening: the inside, teeth and tongue, clipped to it.
    opening_pts = np.concatenate([up_inner, lo_inner[::-1]], 0)
    gap = float((up_inner[:, 1] - lo_inner[:, 1]).max())
    if gap > 0.004:
        opening = p.mask([opening_pts])
        p.paint(opening, MOUTH_INSIDE, 1.0, gloss=0.15, raise_units=-0.03)
        teeth_top = up_inner.copy()
        teeth_bot = up_inner.copy()
        teeth_bot[:, 1] -= 0.055 * np.clip(np.sin(np.pi * t), 0.0, 1.0) ** 0.4
        p.paint(p.mask([np.concatenate([teeth_top, teeth_bot[::-1]], 0)], blur_units=0.003), TEETH, 0.97,
                clip=opening, gloss=0.35)
        lower_teeth = 0.3 * sided("mouthLowerDown").max() + 0.8 * bs.jawForward
        if lower_teeth > 0.0:
            lt_top = lo_inner.copy()
            lt_top[:, 1] += 0.04 * np.clip(np.sin(np.pi * t), 0.0, 1.0) ** 0.4
            p.paint(p.mask([np.concatenate([lo_inner, lt_top[::-1]], 0)], blur_units=0.003), TEETH,
                    min(lower_teeth, 0.95), clip=opening)
        tongue_c = (float(x[n // 2] + lower_shift[n // 2]), float(lo_inner[n // 2, 1]) + 0.03)
        p.paint(p.mask([ellipse_pts(tongue_c, (0.13, 0.06))], blur_units=0.006), TONGUE, 0.95, clip=opening)
        p.paint(p.mask([opening_pts], stroke_units=0.012, blur_units=0.006), LIP_LINE, 0.6)
    else:
        p.paint(p.mask([up_inner[1:-1]], stroke_units=0.014 * (1 + 0.5 * press), closed=False, blur_units=0.005),
                LIP_LINE, 0.9)
    if tongue > 0.0:  # out over the lower lip
        tip = (float(x[n // 2] + lower_shift[n // 2]), float(lo_inner[n // 2, 1]) - 0.02 - 0.1 * tongue)
        p.paint(p.mask([ellipse_pts(tip, (0.085, 0.045 + 0.035 * tongue))], blur_units=0.006), TONGUE,
                min(1.0, 2.0 * tongue), gloss=0.5, raise_units=0.04 * tongue)
        p.paint(p.mask([arc((tip[0], tip[1] + 0.04), (tip[0], tip[1] - 0.03 * tongue), 0.0, n=4)],
                       stroke_units=0.008, closed=False, blur_units=0.005), LIP_LINE, 0.4 * tongue)


def _paint_hair(p: Painter) -> None:
    """A soft side-swept fringe parted on the avatar's left, short at the sides, down to the nape at the back."""
    u = np.linspace(-2.45, 2.45, 197, dtype=np.float32)
    # Hairline height along the chart: the fringe sweeps from the parting (u = 0.5) down to the avatar's
    # right temple; at the sides it comes down in front of the ears; at the back, down to the nape.
    part = 0.5
    fringe = np.where(u > part, 0.66 + 0.35 * (u - part) ** 2, 0.66 - 0.16 * np.sin(np.clip((part - u) / 1.3, 0, 1)
                                                                                 * np.pi * 0.9))
    fringe += 0.03 * np.sin(u * 9.0) * smoothstep(-0.9, 0.3, u) * smoothstep(0.6, 0.2, u)  # wispy tips
    au = np.abs(u)
    side = smoothstep(0.82, 1.2, au)
    temple = 0.1 - 0.25 * smoothstep(1.15, 1.35, au) * (1 - smoothstep(1.42, 1.55, au))  # sideburn
    temple = temple + 0.15 * smoothstep(1.42, 1.55, au)                                   # over the ear
    back = smoothstep(1.86, 2.02, au)
    line = fringe * (1 - side) + temple * side * (1 - back) + (-0.9) * back
    outline = np.concatenate([np.stack([u, line], -1), [[2.45, 1.4], [-2.45, 1.4]]], 0)
    hair = p.mask([outline], blur_units=0.005)
    # A soft shadow on the forehead under the fringe (painted first, then covered by the hair itself).
    p.paint(p.mask([np.stack([u, line - 0.02], -1)[np.abs(u) < 1.2]], stroke_units=0.05, closed=False,
                   blur_units=0.035), SKIN_SHADOW, 0.5)
    p.paint(hair, HAIR, 1.0, gloss=0.35, raise_units=0.03)
    # Strands: darker and lighter sweeps following the fringe, and a sheen band over the crown.
    for k in range(7):
        v0 = 0.72 + 0.09 * k
        sweep = arc((-1.5, v0 - 0.35 + 0.02 * k), (1.4, v0 + 0.16), 0.18 - 0.01 * k, n=40, skew=0.15)
        shade = HAIR * 0.72 if k % 2 else HAIR_SHEEN
        p.paint(p.mask([sweep], stroke_units=0.03, closed=False, blur_units=0.025), shade, 0.3, clip=hair)
    p.paint(p.mask([arc((-1.0, 0.98), (1.0, 1.1), 0.1, n=30)], stroke_units=0.1, closed=False, blur_units=0.06),
            HAIR_SHEEN * 1.15, 0.5, clip=hair)


def _paint_ears(p: Painter) -> None:
    for sign in (1, -1):
        c = (sign * 1.66, -0.06)
        p.paint(p.mask([ellipse_pts(c, (0.12, 0.19))], blur_units=0.02), SKIN_SHADOW, 0.45)
        p.paint(p.mask([ellipse_pts((c[0] + sign * 0.02, c[1] + 0.02), (0.07, 0.12))], blur_units=0.03),
                BLUSH * 0.85, 0.35)


def neutral_eye_patch_is_symmetric(px_per_unit: float = 80.0) -> float:
    """Largest difference between the left eye patch and the mirrored right one (a self-check for tests)."""
    tex = paint_face(np.zeros(64, np.float32), px_per_unit)
    ch = tex.channels()
    w, h = EYE_PATCH.size_px(px_per_unit)
    c_left = round((EYE_PATCH.u0 - TEXTURE_RECT.u0) * px_per_unit)
    r0 = round((TEXTURE_RECT.v1 - EYE_PATCH.v1) * px_per_unit)
    left = ch[r0:r0 + h, c_left:c_left + w, :3]
    c_right = round((-EYE_PATCH.u1 - TEXTURE_RECT.u0) * px_per_unit)
    right = ch[r0:r0 + h, c_right:c_right + w, :3][:, ::-1]
    return float(np.abs(left - right).max())
