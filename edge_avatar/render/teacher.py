"""The reference renderer (the teacher): the avatar drawn exactly from a motion frame, slowly and well.

Why this module exists: the neural renderer that runs on the device is
distilled from images, and those images have to come from somewhere that is
ours, deterministic and right by construction. The teacher is a small
analytic ray caster, written with numpy:

1. the head is a pair of half-ellipsoids (the lower one lengthens with
   jawOpen, widens with cheekPuff and is sheared by jawLeft/Right/Forward)
   plus two ear ellipsoids, all turned by the head's yaw/pitch/roll about
   the top of the neck and cast with orthographic rays, one per sub-pixel;
2. each hit gets its surface-chart coordinates (``layout``); a parallax
   step with the painted height field lets the nose and lips stand out of
   the surface as the head turns;
3. the painted texture (``face_texture``) is looked up there and lit in
   world space: a wrapped key light, sky/ground ambient, a cool rim light and
   a soft specular, all from normals that combine the ellipsoid's and the
   height field's, so the shading follows the rotation;
4. the neck and shoulders are a fixed layer behind the head, shadowed by the
   chin; the background stays transparent (premultiplied RGBA), so the
   display's configured colour shows through.

Every frame is rendered ``supersample`` x larger and area-averaged down,
which is what makes the edges smooth. Besides the image the teacher returns
the buffers the student is taught from (texture coordinates and head
coverage per pixel, the chart texture).

Why numpy and OpenCV: numpy broadcasting over a few hundred thousand rays is
fast enough for a few frames per second and needs nothing else; OpenCV's
``remap`` (texture lookup), area resize and blur are the fastest exact
versions of those three operations available on the CPU. Neither is needed
at run time, and torch is not used here at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from edge_avatar.motion import BLENDSHAPE_INDEX, HEAD_LIMITS_DEG, HEAD_SLICE, sanitize_motion
from edge_avatar.render import layout
from edge_avatar.render.face_texture import SKIN, SKIN_SHADOW, FaceTexture, paint_face

log = logging.getLogger(__name__)

DEFAULT_SUPERSAMPLE = 3
DEFAULT_BACKGROUND_RGB = (28, 36, 52)
TEXTURE_OVERSAMPLE = 1.15          # texels per sub-pixel at the front of the face
PARALLAX_STEPS = 2
PARALLAX_MAX_UNITS = 0.25

# Lights (world space, unit vectors towards the light).
KEY_DIR = np.array([-0.45, 0.55, 0.70], np.float32) / np.linalg.norm([-0.45, 0.55, 0.70])
RIM_DIR = np.array([0.75, 0.35, -0.55], np.float32) / np.linalg.norm([0.75, 0.35, -0.55])
KEY_RGB = np.array([1.0, 0.95, 0.88], np.float32) * 0.62
SKY_RGB = np.array([0.52, 0.54, 0.60], np.float32)
GROUND_RGB = np.array([0.46, 0.38, 0.34], np.float32)
RIM_RGB = np.array([0.55, 0.70, 0.95], np.float32) * 0.35
WRAP = 0.4                         # wrapped diffuse: light reaches a little past the terminator (skin)
SPEC_POWER = 28.0
SPEC_STRENGTH = 0.45
DETAIL_NORMAL_GAIN = 1.0

# Clothes and neck (world units; the body does not turn with the head).
SCRUBS = np.array([0.18, 0.53, 0.57], np.float32)
SCRUBS_TRIM = np.array([0.11, 0.38, 0.42], np.float32)
BADGE = np.array([0.96, 0.97, 0.97], np.float32)


def rotation_matrix(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """World-from-head rotation for the conventions in ``layout`` (yaw, then pitch, then roll)."""
    y, p, r = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])  # +pitch: nose up
    rx = rx.T  # rotating (0,0,1) about x by +p moves it to -y; the transpose lifts it
    rz = np.array([[np.cos(-r), -np.sin(-r), 0], [np.sin(-r), np.cos(-r), 0], [0, 0, 1]])
    return (rz @ rx @ ry).astype(np.float64)


@dataclass
class TeacherFrame:
    """One rendered frame and the buffers the student learns from (all at the output size).

    rgba: (H, W, 4) float32 premultiplied, head over body over transparent.
    head_alpha: (H, W) float32, the head's coverage (the body excluded).
    uv: (H, W, 2) float32, the chart coordinates looked up at each pixel (parallax included); outside the
        head they continue smoothly (the nearest point of the head's silhouette), so the field is smooth.
    body_shade: (H, W) float32, how much the chin's shadow darkens the body layer (1 = unshadowed).
    """

    rgba: np.ndarray
    head_alpha: np.ndarray
    uv: np.ndarray
    body_shade: np.ndarray

    def composite(self, background_rgb: tuple[int, int, int]) -> np.ndarray:
        """(H, W, 3) uint8: the frame over a constant background colour."""
        return composite_rgba(self.rgba, background_rgb)


def composite_rgba(rgba: np.ndarray, background_rgb: tuple[int, int, int]) -> np.ndarray:
    bg = np.asarray(background_rgb, np.float32) / 255.0
    rgb = rgba[..., :3] + (1.0 - rgba[..., 3:4]) * bg
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class TeacherRenderer:
    """The reference avatar. ``render(motion)`` follows the loop's Renderer protocol (slowly)."""

    def __init__(self, width_px: int = 256, height_px: int = 256, supersample: int = DEFAULT_SUPERSAMPLE,
                 background_rgb: tuple[int, int, int] = DEFAULT_BACKGROUND_RGB):
        if width_px < 16 or height_px < 16 or supersample < 1:
            raise ValueError(f"bad teacher size {width_px}x{height_px} x{supersample}")
        self.width_px, self.height_px, self.supersample = width_px, height_px, supersample
        self.background_rgb = tuple(int(c) for c in background_rgb)
        self.values_clamped = 0
        ss_w, ss_h = width_px * supersample, height_px * supersample
        self._unit_px = layout.HEAD_UNIT_FRAC * ss_h                  # sub-pixels per head unit
        cx, cy = layout.HEAD_CENTER_FRAC[0] * ss_w, layout.HEAD_CENTER_FRAC[1] * ss_h
        cols = (np.arange(ss_w, dtype=np.float64) + 0.5 - cx) / self._unit_px
        rows = (cy - (np.arange(ss_h, dtype=np.float64) + 0.5)) / self._unit_px
        self._cx_px, self._cy_px = cx, cy
        self._wx, self._wy = (g.astype(np.float32) for g in np.meshgrid(cols, rows))  # (Hs, Ws) world x, y
        self._texel_per_unit = self._unit_px * TEXTURE_OVERSAMPLE
        self._body_rgba = self._paint_body()                          # (Hs, Ws, 4) premultiplied
        self._body_mask = self._body_rgba[..., 3]

    # ------------------------------------------------------------------ public

    def render(self, motion: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 over ``background_rgb``."""
        return self.render_frame(motion).composite(self.background_rgb)

    def render_frame(self, motion: np.ndarray) -> TeacherFrame:
        clean, changed = sanitize_motion(np.asarray(motion, np.float32).reshape(-1))
        self.values_clamped += changed
        texture = paint_face(clean, self._texel_per_unit)
        return self._render(clean, texture)

    def texture(self, motion: np.ndarray, px_per_unit: float) -> FaceTexture:
        """The chart texture of ``motion`` at another density (the student's texture targets)."""
        clean, _ = sanitize_motion(np.asarray(motion, np.float32).reshape(-1))
        return paint_face(clean, px_per_unit)

    # ------------------------------------------------------------------ geometry

    def _render(self, motion: np.ndarray, texture: FaceTexture) -> TeacherFrame:
        bs = motion[:52]
        yaw, pitch, roll = (float(v) for v in np.clip(motion[HEAD_SLICE], -HEAD_LIMITS_DEG, HEAD_LIMITS_DEG))
        rot = rotation_matrix(yaw, pitch, roll)
        pivot = np.asarray(layout.NECK_PIVOT, np.float64)
        hs, ws = self._wx.shape

        # Only the head's bounding box is cast: its centre projected, plus the farthest point (chin, ears).
        center = rot @ (-pivot) + pivot
        reach = 1.45
        c0 = max(int((center[0] - reach) * self._unit_px + self._cx_px), 0)
        c1 = min(int((center[0] + reach) * self._unit_px + self._cx_px) + 2, ws)
        r0 = max(int(self._cy_px - (center[1] + reach) * self._unit_px), 0)
        r1 = min(int(self._cy_px - (center[1] - reach) * self._unit_px) + 2, hs)
        box = np.s_[r0:r1, c0:c1]
        wx, wy = self._wx[box], self._wy[box]

        # Rays in head-local space: origin o + t * d, t grows away from the viewer.
        rot32 = rot.astype(np.float32)
        d = (rot.T @ np.array([0.0, 0.0, -1.0])).astype(np.float32)
        o = np.empty(wx.shape + (3,), np.float32)
        rel = (wx - pivot[0], wy - pivot[1], 10.0 - pivot[2])
        for i in range(3):  # o = R^T (world - pivot) + pivot
            o[..., i] = rot32[0, i] * rel[0] + rot32[1, i] * rel[1] + rot32[2, i] * rel[2] + pivot[i]

        jaw_open = float(bs[BLENDSHAPE_INDEX["jawOpen"]])
        jaw_lr = float(bs[BLENDSHAPE_INDEX["jawLeft"]] - bs[BLENDSHAPE_INDEX["jawRight"]])
        jaw_fwd = float(bs[BLENDSHAPE_INDEX["jawForward"]])
        puff = float(bs[BLENDSHAPE_INDEX["cheekPuff"]])
        a_u, b_u, c_u = layout.HEAD_RADII_UPPER
        a_l, b_l, c_l = layout.HEAD_RADII_LOWER
        lower_radii = (a_l + layout.CHEEK_PUFF_UNITS * puff, b_l + layout.JAW_DROP_UNITS * jaw_open, c_l)
        # The lower half is sheared: its points at height y < 0 move by (kx * y, 0, kz * y).
        shear = (-0.1 * jaw_lr, -0.07 * jaw_fwd)

        best_t = np.full(wx.shape, np.inf, np.float32)
        hit_p = np.zeros(wx.shape + (3,), np.float32)
        normal = np.zeros(wx.shape + (3,), np.float32)
        head = np.zeros(wx.shape, bool)

        for radii, upper in (((a_u, b_u, c_u), True), (lower_radii, False)):
            r = np.asarray(radii, np.float32)
            oo, dd = o, d
            if not upper:  # undo the shear: q = p - (kx y, 0, kz y)
                oo = o.copy()
                oo[..., 0] -= shear[0] * o[..., 1]
                oo[..., 2] -= shear[1] * o[..., 1]
                dd = (d - np.array([shear[0] * d[1], 0.0, shear[1] * d[1]])).astype(np.float32)
            t, q, inside = _ellipsoid_hits(oo, dd, np.zeros(3, np.float32), r)
            p_y = o[..., 1] + t * d[1]
            ok = inside & ((p_y >= 0.0) if upper else (p_y < 0.0)) & (t < best_t)
            n = q / np.square(r)
            if not upper:  # the normal of the sheared surface: grad of |q/r|^2 through the shear
                n[..., 1] -= shear[0] * n[..., 0] + shear[1] * n[..., 2]
            best_t = np.where(ok, t, best_t)
            hit_p[ok] = (o + t[..., None] * d)[ok]
            normal[ok] = n[ok]
            head |= ok
        for sign in (1.0, -1.0):
            ear_c = (np.array(layout.EAR_CENTER) * np.array([sign, 1.0, 1.0])).astype(np.float32)
            r = np.asarray(layout.EAR_RADII, np.float32)
            t, q, inside = _ellipsoid_hits(o, d, ear_c, r)
            ok = inside & (t < best_t)
            best_t = np.where(ok, t, best_t)
            hit_p[ok] = (q + ear_c)[ok]
            normal[ok] = (q / np.square(r))[ok]
            head |= ok

        # Where the rays miss, continue the chart smoothly: the ray's closest approach to the head.
        _, q_near, _ = _ellipsoid_hits(o, d, np.zeros(3, np.float32), np.asarray(layout.HEAD_RADII_UPPER, np.float32))
        surface = np.where(head[..., None], hit_p, q_near)
        normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-9)

        u = np.arctan2(surface[..., 0] / a_u, surface[..., 2] / c_u)
        v = surface[..., 1]

        # Tangents of the chart at the hit, for parallax and detail normals.
        cos_u, sin_u = np.cos(u), np.sin(u)
        # t_v = normal x t_u with t_u = (cos u, 0, -sin u)
        t_v = np.stack([-normal[..., 1] * sin_u, normal[..., 2] * cos_u + normal[..., 0] * sin_u,
                        -normal[..., 1] * cos_u], -1)
        t_v /= np.maximum(np.linalg.norm(t_v, axis=-1, keepdims=True), 1e-9)
        view = -d                                                       # towards the viewer, head-local
        v_n = np.maximum(normal @ view, 0.25)
        v_u = cos_u * view[0] - sin_u * view[2]
        v_v = t_v @ view

        tex_u, tex_v = u, v
        for _ in range(PARALLAX_STEPS):
            h = _sample(texture.height[..., None], texture, tex_u, tex_v)[..., 0]
            h = np.where(head, h, 0.0)
            tex_u = u + np.clip(h * v_u / v_n, -PARALLAX_MAX_UNITS, PARALLAX_MAX_UNITS)
            tex_v = v + np.clip(h * v_v / v_n, -PARALLAX_MAX_UNITS, PARALLAX_MAX_UNITS)

        looked = _sample(texture.channels(), texture, tex_u, tex_v)        # (h, w, 6)
        albedo, slope_u, slope_v, gloss = looked[..., :3], looked[..., 3], looked[..., 4], looked[..., 5]

        n_detail = np.empty_like(normal)
        n_detail[..., 0] = normal[..., 0] - DETAIL_NORMAL_GAIN * (slope_u * cos_u + slope_v * t_v[..., 0])
        n_detail[..., 1] = normal[..., 1] - DETAIL_NORMAL_GAIN * slope_v * t_v[..., 1]
        n_detail[..., 2] = normal[..., 2] - DETAIL_NORMAL_GAIN * (-slope_u * sin_u + slope_v * t_v[..., 2])
        n_detail /= np.maximum(np.linalg.norm(n_detail, axis=-1, keepdims=True), 1e-9)
        n_world = n_detail @ rot32.T                                     # (h, w, 3)
        color = _shade(albedo, n_world, gloss)

        head_a = np.zeros((hs, ws), np.float32)
        head_a[box] = head
        head_rgb = np.zeros((hs, ws, 3), np.float32)
        head_rgb[box] = color * head[..., None]
        # The body layer, shadowed by the chin (light from above-front: the shadow falls a little lower).
        body_shade = 1.0 - 0.45 * self._chin_shadow(head_a)
        rgba_ss = self._body_rgba * body_shade[..., None]
        rgba_ss[..., 3] = self._body_rgba[..., 3]
        rgba_ss *= (1.0 - head_a)[..., None]
        rgba_ss[..., :3] += head_rgb
        rgba_ss[..., 3] += head_a

        size = (self.width_px, self.height_px)
        down = (lambda img: cv2.resize(img, size, interpolation=cv2.INTER_AREA)) if self.supersample > 1 \
            else (lambda img: img)
        uv = self._smooth_uv(rot, pivot)
        uv_box = np.stack([tex_u, tex_v], -1).astype(np.float32)
        ss = self.supersample
        # Inside the box the exact chart (parallax included) replaces the smooth continuation.
        b0, b1 = -(-r0 // ss), r1 // ss
        a0, a1 = -(-c0 // ss), c1 // ss
        if b1 > b0 and a1 > a0:
            exact = down_box(uv_box[b0 * ss - r0:b1 * ss - r0, a0 * ss - c0:a1 * ss - c0], ss)
            uv[b0:b1, a0:a1] = exact
        return TeacherFrame(
            rgba=np.clip(down(rgba_ss), 0.0, 1.0),
            head_alpha=down(head_a),
            uv=uv,
            body_shade=down(body_shade.astype(np.float32)),
        )

    def _smooth_uv(self, rot: np.ndarray, pivot: np.ndarray) -> np.ndarray:
        """(H, W, 2) chart coordinates of the closest approach to the upper head, at the output size."""
        ss = self.supersample
        wx = self._wx[ss // 2::ss, ss // 2::ss][:self.height_px, :self.width_px]
        wy = self._wy[ss // 2::ss, ss // 2::ss][:self.height_px, :self.width_px]
        rel = np.stack([wx - pivot[0], wy - pivot[1], np.full_like(wx, 10.0 - pivot[2])], -1)
        o = (rel @ rot + pivot).astype(np.float32)
        d = (rot.T @ np.array([0.0, 0.0, -1.0])).astype(np.float32)
        radii = np.asarray(layout.HEAD_RADII_UPPER, np.float32)
        _, q, _ = _ellipsoid_hits(o, d, np.zeros(3, np.float32), radii)
        u = np.arctan2(q[..., 0] / radii[0], q[..., 2] / radii[2])
        return np.stack([u, q[..., 1]], -1).astype(np.float32)

    def _chin_shadow(self, head_a: np.ndarray) -> np.ndarray:
        """A soft shadow of the head on the neck: its coverage blurred and moved down a little."""
        shift_px = int(round(0.16 * self._unit_px))
        moved = np.zeros_like(head_a)
        moved[shift_px:] = head_a[:-shift_px]
        small = cv2.resize(moved, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigmaX=0.06 * self._unit_px / 4)
        blurred = cv2.resize(small, (head_a.shape[1], head_a.shape[0]), interpolation=cv2.INTER_LINEAR)
        return np.clip(blurred, 0.0, 1.0) * (self._body_mask > 0)

    # ------------------------------------------------------------------ the body layer

    def _paint_body(self) -> np.ndarray:
        """Neck, shoulders and a teal scrub top with a V neck and a blank ID badge; lit like the head."""
        x, y = self._wx, self._wy
        rgba = np.zeros(x.shape + (4,), np.float32)
        aa = 1.5 / self._unit_px                                        # one sub-pixel and a half, in units

        def cover(signed: np.ndarray) -> np.ndarray:                   # signed > 0 inside, in units
            return np.clip(0.5 + signed / aa, 0.0, 1.0)

        # Neck: a vertical cylinder, shaded across its width.
        neck_r = 0.38
        neck = cover(neck_r - np.abs(x)) * cover(-0.35 - y)
        nx = np.clip(x / neck_r, -1.0, 1.0)
        n_neck = np.stack([nx, np.zeros_like(nx), np.sqrt(1.0 - nx ** 2)], -1)
        neck_rgb = _shade(np.broadcast_to(SKIN * 0.97, x.shape + (3,)), n_neck, np.full(x.shape, 0.1))
        # A soft shadow under the jaw line, always there.
        neck_rgb *= (1.0 - 0.28 * np.clip((y + 0.45) / 0.5 + 1.0, 0.0, 1.0) ** 2)[..., None]

        # Shoulders: sloping from the base of the neck and rounding off at the arms.
        ax = np.abs(x)
        slope = -1.3 - 0.36 * np.clip((ax - 0.3) / 1.1, 0.0, 1.0) ** 1.4
        arm, bend = 1.78, 1.4
        rounded = -1.66 - 0.7 * (1.0 - np.sqrt(np.clip(1.0 - ((ax - bend) / (arm - bend)) ** 2, 0.0, 1.0)))
        shoulder_top = np.where(ax < bend, slope, rounded)
        torso = cover(shoulder_top - y) * cover(arm - ax)
        tx = np.clip(x / 1.95, -0.95, 0.95)
        ty = np.clip(0.5 - (shoulder_top - y) * 1.5, -0.2, 0.5)
        n_torso = np.stack([tx, ty, np.sqrt(np.clip(1.0 - tx ** 2 - ty ** 2, 0.05, 1.0))], -1)
        # The V neck shows the skin; the trim is a darker band around it.
        v_depth = -1.37 - 0.55 * (1.0 - np.clip(ax / 0.42, 0.0, 1.0))
        in_v = cover(y - v_depth) * (ax < 0.42)
        trim = cover(0.05 - np.abs(y - v_depth)) * cover(0.52 - ax) * cover(y - v_depth + 0.05)
        albedo = np.broadcast_to(SCRUBS, x.shape + (3,)).copy()
        albedo = albedo * (1.0 - trim[..., None]) + SCRUBS_TRIM * trim[..., None]
        badge = cover(0.17 - np.abs(x - 0.95)) * cover(0.21 - np.abs(y + 2.1))
        badge_stripe = badge * cover(0.045 - np.abs(y + 1.97))
        albedo = albedo * (1.0 - badge[..., None]) + BADGE * badge[..., None]
        albedo = albedo * (1.0 - badge_stripe[..., None]) + SCRUBS_TRIM * badge_stripe[..., None]
        torso_rgb = _shade(albedo.astype(np.float32), n_torso, np.full(x.shape, 0.08))
        # The neck continues down inside the V; elsewhere the top covers it.
        torso_a = torso * (1.0 - in_v)
        skin_v = torso * in_v
        v_rgb = _shade(np.broadcast_to(SKIN * 0.95, x.shape + (3,)), n_neck, np.full(x.shape, 0.1))
        v_rgb *= (1.0 - 0.35 * cover(y - v_depth - 0.06) * 0.0 - 0.3 * cover(0.08 - (y - v_depth)))[..., None]
        under = np.maximum(neck, skin_v)
        under_rgb = np.where(skin_v[..., None] > neck[..., None], v_rgb, neck_rgb)
        rgb = under_rgb * under[..., None] * (1.0 - torso_a[..., None]) + torso_rgb * torso_a[..., None]
        alpha = under * (1.0 - torso_a) + torso_a
        rgba[..., :3] = rgb
        rgba[..., 3] = alpha
        return rgba


# ---------------------------------------------------------------------- helpers


def _ellipsoid_hits(o: np.ndarray, d: np.ndarray, center: np.ndarray, radii: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Front-most hit of rays o + t d with an axis-aligned ellipsoid.

    Returns (t, q, inside): t of the hit (or of the closest approach when missed), q = the point relative
    to ``center`` at that t, and whether the ray hits. At the silhouette both coincide, so q is continuous.
    """
    oc = (o - center) / radii                          # (..., 3)
    dn = d / radii                                     # (3,)
    a = float(dn @ dn)
    b = 2.0 * (oc[..., 0] * dn[0] + oc[..., 1] * dn[1] + oc[..., 2] * dn[2])
    c = oc[..., 0] ** 2 + oc[..., 1] ** 2 + oc[..., 2] ** 2 - 1.0
    disc = b * b - 4.0 * a * c
    inside = disc >= 0.0
    t_near = -b / (2.0 * a)
    t = np.where(inside, (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a), t_near)
    q = o + t[..., None] * d - center
    return t, q, inside


def down_box(img: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each factor x factor block: (H*f, W*f, C) -> (H, W, C)."""
    h, w = img.shape[0] // factor, img.shape[1] // factor
    return img[:h * factor, :w * factor].reshape(h, factor, w, factor, -1).mean(axis=(1, 3))


def _sample(channels: np.ndarray, texture: FaceTexture, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of (Ht, Wt, C) chart channels at (u, v) head units; edge texels outside."""
    map_x = ((u - texture.rect.u0) * texture.px_per_unit - 0.5).astype(np.float32)
    map_y = ((texture.rect.v1 - v) * texture.px_per_unit - 0.5).astype(np.float32)
    out = []
    for start in range(0, channels.shape[-1], 4):     # remap takes at most 4 channels
        chunk = np.ascontiguousarray(channels[..., start:start + 4], dtype=np.float32)
        res = cv2.remap(chunk, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out.append(res.reshape(u.shape + (chunk.shape[-1],)))
    return np.concatenate(out, -1)


def _shade(albedo: np.ndarray, n_world: np.ndarray, gloss: np.ndarray) -> np.ndarray:
    """Key (wrapped Lambert) + sky/ground ambient + rim + Blinn specular, in world space."""
    n_dot_l = n_world @ KEY_DIR
    diffuse = np.clip((n_dot_l + WRAP) / (1.0 + WRAP), 0.0, 1.0)
    # A warm tint where the light wraps past the terminator: a cheap stand-in for light under the skin.
    terminator = np.clip(diffuse * (1.0 - diffuse) * 4.0, 0.0, 1.0) * 0.08
    sky = 0.5 + 0.5 * n_world[..., 1]
    ambient = SKY_RGB * sky[..., None] + GROUND_RGB * (1.0 - sky[..., None])
    light = ambient + KEY_RGB * diffuse[..., None] + np.array([1.0, 0.35, 0.2], np.float32) * terminator[..., None]
    facing = np.clip(n_world[..., 2], 0.0, 1.0)
    rim = (1.0 - facing) ** 3 * np.clip(n_world @ RIM_DIR + 0.3, 0.0, 1.0)
    half = KEY_DIR + np.array([0.0, 0.0, 1.0], np.float32)
    half /= np.linalg.norm(half)
    spec = SPEC_STRENGTH * gloss * np.clip(n_world @ half, 0.0, 1.0) ** SPEC_POWER
    color = albedo * light + RIM_RGB * rim[..., None] + spec[..., None] * np.array([1.0, 0.97, 0.94], np.float32)
    return color.astype(np.float32)


def skin_tone() -> tuple[np.ndarray, np.ndarray]:
    """The skin's albedo and shadow tint (for tests and documentation)."""
    return SKIN.copy(), SKIN_SHADOW.copy()
