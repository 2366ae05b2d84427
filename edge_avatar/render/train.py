"""``edge-avatar train renderer``: distil the teacher into the student, export ONNX, write the manifest.

Why this module exists: the renderer that ships is a trained artefact, so
how it was made must be one command that anyone can rerun and get the same
file. The run is reproducible by construction: seeded sampling, seeded
initialisation and batch order, deterministic torch kernels, a fixed thread
count (an option, recorded), the torch version pinned in the manifest
(2.13.0, CPU build), and the teacher's renders cached by content
(``dataset``).

Four phases: conversation-like motion from scratch (cached by recipe key),
the texture decoders alone, everything on conversation plus range ends, and
last the eye layers alone on eye-centred crops chosen by eye state (closed,
half closed, open at every gaze; see ``train_renderer``). Losses, per step
(frames and textures):

- image: L1 on premultiplied RGBA, the eyes' pixels (``EYE_BOX``, found from
  the teacher's chart coordinates) weighted 1 + ``eye_weight``: they are 1 %
  of the frame and most of what a viewer looks at; plus (1 - SSIM) on the
  frame composited over the default display background;
- feature distillation from the teacher's buffers: head coverage (L1),
  chart coordinates (L1, mostly where the head is, most inside the face,
  where a warped grid would move a feature), the body's shadow (L1),
  and the chart texture itself -- eye and mouth patches and the coarse
  window -- (L1), so that each decoder learns its own sub-problem directly.

torch is imported here and in ``student`` only: the ``train`` extra.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.render import layout
from edge_avatar.render.dataset import DataSpec, ProgressBar, decode_texture, load_or_render

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "engines"
DEFAULT_DATA_DIR = "~/.cache/edge-avatar/renderer-data"
MANIFEST_NAME = "renderer.manifest.json"
PINNED_TORCH = "2.13.0"
EVAL_BACKGROUND_RGB = (28, 36, 52)   # DisplayConfig's default background: the one the figures are measured on


@dataclass(frozen=True)
class TrainOptions:
    """Everything that decides the trained weights (recorded in the manifest)."""

    size_px: int = 256
    frames: int = 4000
    textures: int = 12000
    frame_seed: int = 1
    texture_seed: int = 2
    val_frames: int = 48
    val_seed: int = 1001
    epochs: int = 3
    frame_batch: int = 8
    texture_batch: int = 8
    crop_px: int = 128
    lr: float = 2e-3
    static_lr: float = 5e-4
    seed: int = 7
    supersample: int = 2
    workers: int = 2
    # torch threads: part of the recipe (the float sums, so the weights, differ with it). One: on the shared
    # 2-core box a second thread that has to wait for a busy core makes every step 3-8x slower.
    threads: int = 1
    # phase 2: fine-tuning on the range ends
    extreme_textures: int = 6000
    extreme_texture_seed: int = 3
    extreme_frames: int = 800
    extreme_frame_seed: int = 4
    finetune_steps: int = 600
    finetune_lr: float = 6e-4
    finetune_static_lr: float = 1.5e-4
    finetune_seed: int = 8
    texture_phase_steps: int = 800
    texture_phase_batch: int = 16
    texture_phase_lr: float = 1e-3
    texture_phase_seed: int = 9
    # the eyes (every image phase): their pixels' extra weight in the image loss, and the chart-coordinate
    # loss's extra weight inside the head (where a warped grid would move or hide a feature)
    eye_weight: float = 4.0
    grid_inside_weight: float = 4.0
    # phase 3: the eye layers alone, on eye-centred crops of frames chosen by eye state
    eye_phase_steps: int = 400
    eye_phase_lr: float = 5e-4
    eye_phase_seed: int = 10
    eye_phase_closed_share: float = 0.4     # of each batch: eyes closed (blink >= 0.75) ...
    eye_phase_partial_share: float = 0.3    # ... half closed (0.2-0.75); the rest open, at every gaze
    # start from a trained smaller student (its weights file, ``grow``) instead of from scratch: no phase 1
    grow_from: str = ""
    # the decoders' sizes (student.WIDTHS): "slim" (the default) or "wide" (the first trained student's);
    # a grown student keeps the smaller one's
    widths: str = "slim"

    @staticmethod
    def grown_512() -> "TrainOptions":
        """The 512 px recipe: grown from the committed 256 px student, then fine-tuned at 512 px on fewer,
        larger teacher frames (the three later phases only; about an hour on the 2-core box, where training
        512 px from scratch would take about three)."""
        return TrainOptions(size_px=512, frames=600, textures=2000, val_frames=24, epochs=0,
                            extreme_textures=1000, extreme_frames=200, finetune_steps=300, finetune_lr=3e-4,
                            finetune_static_lr=1e-4, texture_phase_steps=200, texture_phase_lr=5e-4,
                            eye_phase_steps=100, grow_from="renderer_256.weights.npz")

    @staticmethod
    def quick() -> "TrainOptions":
        return TrainOptions(frames=48, textures=96, val_frames=8, epochs=2, frame_batch=4, texture_batch=4,
                            extreme_textures=48, extreme_frames=16, finetune_steps=8, texture_phase_steps=8,
                            eye_phase_steps=8)


def onnx_name(size_px: int) -> str:
    return f"renderer_{size_px}.onnx"


# ---------------------------------------------------------------------- the student's starting point


def initial_tensors(size_px: int) -> dict[str, np.ndarray]:
    """The student's starting point (``RendererStudent``'s arguments) from the teacher's neutral frame: static chart
    (5, Ht, Wt), body (4, S, S), base fields (7, S/4, S/4), and the eye layers (``initial_eye_layers``)."""
    import cv2  # noqa: PLC0415

    from edge_avatar.render.face_texture import paint_face  # noqa: PLC0415
    from edge_avatar.render.student import GEO_FIELDS, INITIAL_EDGE_SHARPNESS  # noqa: PLC0415
    from edge_avatar.render.teacher import TeacherRenderer  # noqa: PLC0415

    neutral = np.zeros(64, np.float32)
    ppu = layout.texels_per_unit(size_px)
    static = paint_face(neutral, ppu).channels()[..., :5].transpose(2, 0, 1)   # albedo, slopes (no gloss)
    teacher = TeacherRenderer(size_px, size_px, 2)
    frame = teacher.render_frame(neutral)
    body = cv2.resize(teacher._body_rgba, (size_px, size_px), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    q = size_px // 4
    fields = np.zeros((GEO_FIELDS, q, q), np.float32)
    fields[0:2] = uv_to_grid(frame.uv.reshape(q, 4, q, 4, 2).mean(axis=(1, 3))).transpose(2, 0, 1)
    alpha = np.clip(frame.head_alpha.reshape(q, 4, q, 4).mean(axis=(1, 3)), 0.02, 0.98)
    fields[2] = np.log(alpha / (1 - alpha)) / INITIAL_EDGE_SHARPNESS
    fields[3] = frame.body_shade.reshape(q, 4, q, 4).mean(axis=(1, 3))
    return {"static_texture": static.astype(np.float32), "body_rgba": body.astype(np.float32), "base_fields": fields,
            **initial_eye_layers(ppu)}


EYE_REST_GAZES_DEG = ((30, 0), (-30, 0), (0, 25), (0, -25), (21, 18), (-21, 18), (21, -18), (-21, -18))


def initial_eye_layers(ppu: float) -> dict[str, np.ndarray]:
    """The eye layers at rest, from the teacher's painter: ``eyeball`` (2, 5, He, We) of the left eye and of the
    right one mirrored, ``eye_opening`` logits (1, h, w) over the eye patch, and ``gaze_weight`` (2, 15), the
    iris shift per eye input (see ``student``).

    The opening at rest is where turning the eye changes the chart (the iris sweeps all of it) less its rim
    (lash and lid shadow, which stay where they are); the eyeball is the chart at rest there and plain sclera
    around it; the shift is the painter's gaze model made linear
    (``EYEBALL_RADIUS_UNITS`` per radian of the eye angles plus ``LOOK_BLENDSHAPE_DEG`` per eyeLook*).
    """
    import cv2  # noqa: PLC0415

    from edge_avatar.motion import EYE_LIMITS_DEG, EYES_SLICE  # noqa: PLC0415
    from edge_avatar.render.dataset import crop, mirror_patch, right_eye_rect  # noqa: PLC0415
    from edge_avatar.render.face_texture import (  # noqa: PLC0415
        EYEBALL_RADIUS_UNITS,
        LOOK_BLENDSHAPE_DEG,
        SCLERA,
        paint_face,
    )
    from edge_avatar.render.student import EYEBALL_HALF_UV, IRIS_REST_UV, eye_inputs, eyeball_hw  # noqa: PLC0415

    neutral = paint_face(np.zeros(64, np.float32), ppu).channels()[..., :5]
    rest = crop(neutral, layout.EYE_PATCH, ppu)                                   # (h, w, 5)
    moved = np.zeros(rest.shape[:2], np.float32)
    for yaw, pitch in EYE_REST_GAZES_DEG:
        m = np.zeros(64, np.float32)
        m[EYES_SLICE] = (yaw, pitch, yaw, pitch)
        turned = crop(paint_face(m, ppu).channels()[..., :5], layout.EYE_PATCH, ppu)
        moved = np.maximum(moved, np.abs(turned - rest).max(-1))
    opening = (moved > 0.02).astype(np.uint8)                                      # (h, w)
    # Two texels in from the opening's edge: its rim is lash and lid shadow, which must not slide with the iris.
    interior = cv2.erode(opening, np.ones((5, 5), np.uint8))
    content = cv2.dilate(interior, np.ones((3, 3), np.uint8)) > 0                 # a texel more: resampling

    he, we = eyeball_hw(ppu)
    u = IRIS_REST_UV[0] - EYEBALL_HALF_UV[0] + (np.arange(we) + 0.5) / ppu
    v = IRIS_REST_UV[1] + EYEBALL_HALF_UV[1] - (np.arange(he) + 0.5) / ppu
    cols = np.clip((u - layout.EYE_PATCH.u0) * ppu - 0.5, 0, rest.shape[1] - 1)
    rows = np.clip((layout.EYE_PATCH.v1 - v) * ppu - 0.5, 0, rest.shape[0] - 1)
    c0, r0 = np.floor(cols).astype(int), np.floor(rows).astype(int)
    c1, r1 = np.minimum(c0 + 1, rest.shape[1] - 1), np.minimum(r0 + 1, rest.shape[0] - 1)
    fc, fr = (cols - c0)[None, :, None], (rows - r0)[:, None, None]
    inside = content[np.rint(rows).astype(int)][:, np.rint(cols).astype(int)]
    sclera = np.concatenate([SCLERA, np.zeros(2, np.float32)])
    right = mirror_patch(crop(neutral, right_eye_rect(), ppu))   # the right eye as the left one's mirror image
    balls = []
    for eye in (rest, right):   # one eyeball each: the catch-lights are on the same side in both, not mirrored
        sampled = (eye[r0][:, c0] * (1 - fc) + eye[r0][:, c1] * fc) * (1 - fr) + \
            (eye[r1][:, c0] * (1 - fc) + eye[r1][:, c1] * fc) * fr                  # (He, We, 5)
        balls.append(np.where(inside[..., None], sampled, sclera).transpose(2, 0, 1))

    idx = list(eye_inputs()[0][0])                    # the left eye's motion indices, in the eye input order
    per_rad = EYEBALL_RADIUS_UNITS
    look = np.deg2rad(LOOK_BLENDSHAPE_DEG) * per_rad
    gaze = np.zeros((2, len(idx) + 1), np.float32)     # + the side flag
    gaze[0, idx.index(EYES_SLICE.start)] = np.deg2rad(EYE_LIMITS_DEG[0]) * per_rad   # inputs are angle / limit
    gaze[1, idx.index(EYES_SLICE.start + 1)] = np.deg2rad(EYE_LIMITS_DEG[1]) * per_rad
    gaze[0, idx.index(_bs("eyeLookOutLeft"))], gaze[0, idx.index(_bs("eyeLookInLeft"))] = look, -look
    gaze[1, idx.index(_bs("eyeLookUpLeft"))], gaze[1, idx.index(_bs("eyeLookDownLeft"))] = look, -look
    return {"eyeball": np.stack(balls).astype(np.float32),
            "eye_opening": np.where(interior > 0, 4.0, -4.0).astype(np.float32)[None],
            "gaze_weight": gaze}


def _bs(name: str) -> int:
    from edge_avatar.motion import BLENDSHAPE_INDEX  # noqa: PLC0415

    return BLENDSHAPE_INDEX[name]


GRID_KNEE = 0.985   # beyond this (far outside the head) grid targets are squashed to stay inside the chart


def uv_to_grid(uv: np.ndarray) -> np.ndarray:
    """Chart (u, v) in head units -> grid_sample coordinates (-1..1 over the texture, y down).

    Pixels far from the head continue the chart past its edges; those targets are squashed smoothly into
    (-0.995, 0.995) -- they are never seen (zero coverage), and in-range grids keep ONNX Runtime's
    GridSample on its fast path (out-of-range samples cost 2-3x more).
    """
    r = layout.TEXTURE_RECT
    gx = (uv[..., 0] - r.u0) / (r.u1 - r.u0) * 2.0 - 1.0
    gy = (r.v1 - uv[..., 1]) / (r.v1 - r.v0) * 2.0 - 1.0
    g = np.stack([gx, gy], -1).astype(np.float32)
    mag = np.abs(g)
    room = 0.995 - GRID_KNEE
    squashed = GRID_KNEE + room * np.tanh((mag - GRID_KNEE) / room)
    return (np.sign(g) * np.where(mag > GRID_KNEE, squashed, mag)).astype(np.float32)


# Where the eyes are in the chart (head units): opening, lids and lashes of the avatar's left eye at every
# expression and gaze (the right eye is its mirror image, u < 0); their pixels weigh more in the image loss.
EYE_BOX = layout.Rect(0.12, 0.70, -0.16, 0.34)


def eye_mask(uv: np.ndarray) -> np.ndarray:
    """(..., 2) chart coordinates -> (...) float32, 1 where they fall in either eye's ``EYE_BOX``."""
    au, v = np.abs(uv[..., 0]), uv[..., 1]
    box = EYE_BOX
    return ((au >= box.u0) & (au <= box.u1) & (v >= box.v0) & (v <= box.v1)).astype(np.float32)


def blink_level(motion: np.ndarray) -> np.ndarray:
    """(N, 64) -> (N,): how closed the more closed eye is (eyeBlinkLeft/Right)."""
    from edge_avatar.motion import BLENDSHAPE_INDEX  # noqa: PLC0415

    m = np.asarray(motion, np.float32)
    return np.maximum(m[:, BLENDSHAPE_INDEX["eyeBlinkLeft"]], m[:, BLENDSHAPE_INDEX["eyeBlinkRight"]])


# ---------------------------------------------------------------------- losses


def _gauss_1d(torch: Any) -> Any:
    from edge_avatar.render.metrics import SSIM_RADIUS_PX, SSIM_SIGMA_PX  # noqa: PLC0415

    x = torch.arange(-SSIM_RADIUS_PX, SSIM_RADIUS_PX + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / SSIM_SIGMA_PX) ** 2)
    return k / k.sum()


def ssim_torch(a: Any, b: Any, kernel: Any) -> Any:
    """Mean SSIM of (B, C, H, W) images in 0..1 (the metric's window and constants)."""
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    c = a.shape[1]
    kx = kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(x: Any) -> Any:
        return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return torch.mean(s)


# ---------------------------------------------------------------------- batches


class Batches:
    """Turns cached uint8/float16 arrays into torch tensors for the losses."""

    def __init__(self, frames: dict[str, np.ndarray], textures: dict[str, np.ndarray]):
        self.frames, self.textures = frames, textures

    @staticmethod
    def texture_targets(data: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, Any]:
        import torch  # noqa: PLC0415

        eyes = decode_texture(np.asarray(data["eyes"][idx]))                  # (B, 2, h, w, 6)
        mouth = decode_texture(np.asarray(data["mouth"][idx]))                # (B, h, w, 6)
        coarse = np.asarray(data["coarse"][idx], np.float32)                   # (B, h, w, 6)
        return {
            "motion": torch.from_numpy(np.asarray(data["motion"][idx], np.float32)),
            "eyes": torch.from_numpy(eyes).permute(0, 1, 4, 2, 3).contiguous(),  # (B, 2, 6, h, w)
            "mouth": torch.from_numpy(mouth).permute(0, 3, 1, 2).contiguous(),
            "coarse": torch.from_numpy(coarse).permute(0, 3, 1, 2).contiguous(),
        }

    def frame_batch(self, idx: np.ndarray) -> dict[str, Any]:
        import torch  # noqa: PLC0415

        idx = np.sort(idx)
        d = self.frames
        out = self.texture_targets(d, idx)
        out["rgba"] = torch.from_numpy(np.asarray(d["rgba"][idx], np.float32) / 255.0).permute(0, 3, 1, 2)
        out["head_alpha"] = torch.from_numpy(np.asarray(d["head_alpha"][idx], np.float32) / 255.0).unsqueeze(1)
        uv = np.asarray(d["uv"][idx], np.float32)                              # (B, S/4, S/4, 2)
        out["grid"] = torch.from_numpy(uv_to_grid(uv)).permute(0, 3, 1, 2)
        out["eye_mask"] = torch.from_numpy(eye_mask(uv)).unsqueeze(1)            # (B, 1, S/4, S/4)
        out["body_shade"] = torch.from_numpy(np.asarray(d["body_shade"][idx], np.float32)).unsqueeze(1)
        return out

    def texture_batch(self, idx: np.ndarray) -> dict[str, Any]:
        return self.texture_targets(self.textures, np.sort(idx))


def texture_loss(student: Any, out_tex: dict[str, Any], target: dict[str, Any], weighted: bool = False,
                 eyes_only: bool = False) -> Any:
    """L1 of the eye, mouth and coarse pieces of the predicted chart against the teacher's (``eyes_only``:
    the eye patches alone, for the eye phase).

    ``weighted`` (the later phases): albedo counts 4x more than slopes, and each texel counts
    1 + 8 x how far the teacher's albedo there is from the static chart's -- so a closing eyelid or an
    opening mouth, a few percent of a patch, is not averaged away by the patch's unchanging skin.
    """
    import torch  # noqa: PLC0415

    from edge_avatar.render.dataset import right_eye_rect  # noqa: PLC0415

    sh = student.shape
    # The window (the static chart with every change painted over it: albedo and slopes) against the
    # teacher's first five channels.
    window = out_tex["window"]
    w_row, w_col = sh.offset(layout.COARSE_WINDOW)
    static = student.static_texture[:, 0:3]

    def cut(rect: layout.Rect) -> Any:
        row, col = sh.offset(rect)
        h, w = sh.patch_hw(rect)
        return window[:, :, row - w_row:row - w_row + h, col - w_col:col - w_col + w]

    left = cut(layout.EYE_PATCH)
    right = torch.flip(cut(right_eye_rect()), dims=[3]) * student.mirror_sign[:, 0:5]
    eyes, mouth, coarse = target["eyes"][:, :, 0:5], target["mouth"][:, 0:5], target["coarse"][:, 0:5]
    if not weighted:
        loss = (left - eyes[:, 0]).abs().mean() + (right - eyes[:, 1]).abs().mean()
        loss = loss + (cut(layout.MOUTH_PATCH) - mouth).abs().mean()
        return loss + 0.5 * (out_tex["coarse"] - coarse).abs().mean()

    channel = torch.tensor([1.0, 1.0, 1.0, 0.25, 0.25]).view(1, 5, 1, 1)

    def static_albedo(rect: layout.Rect, flip: bool = False) -> Any:
        row, col = sh.offset(rect)
        h, w = sh.patch_hw(rect)
        piece = static[:, :, row:row + h, col:col + w].detach()
        return torch.flip(piece, dims=[3]) if flip else piece

    def weighted_l1(pred: Any, tgt: Any, base: Any) -> Any:
        change = (tgt[:, 0:3] - base).abs().sum(1, keepdim=True)
        return ((pred - tgt).abs() * channel * (1.0 + 8.0 * change)).mean()

    loss = weighted_l1(left, eyes[:, 0], static_albedo(layout.EYE_PATCH))
    loss = loss + weighted_l1(right, eyes[:, 1], static_albedo(right_eye_rect(), flip=True))
    if eyes_only:
        return loss
    loss = loss + weighted_l1(cut(layout.MOUTH_PATCH), mouth, static_albedo(layout.MOUTH_PATCH))
    return loss + 0.5 * ((out_tex["coarse"] - coarse).abs() * channel).mean()


# ---------------------------------------------------------------------- training


PHASE1_RECIPE_VERSION = 2   # bump when the first phase's loop or losses change: cached weights are then stale


def _image_losses(out: dict[str, Any], fb: dict[str, Any], crop: tuple[int, int, int], bg: Any, kernel: Any,
                  eye_weight: float) -> tuple[Any, Any, Any]:
    """(L1 with the eyes weighted 1 + ``eye_weight``, 1 - SSIM, plain L1 over the eyes) of the cropped frame."""
    import torch.nn.functional as F  # noqa: PLC0415

    row, col, size = crop
    window = np.s_[:, :, row:row + size, col:col + size]
    rgba, target = out["rgba"], fb["rgba"][window]
    comp = rgba[:, :3] + (1 - rgba[:, 3:4]) * bg
    comp_t = target[:, :3] + (1 - target[:, 3:4]) * bg
    eyes = F.interpolate(fb["eye_mask"], scale_factor=4.0, mode="nearest")[window] * fb["head_alpha"][window]
    err = (rgba - target).abs()                                                   # (B, 4, c, c)
    l_eye = (err * eyes).sum() / (4.0 * eyes.sum() + 1.0)
    l_img = err.mean() + eye_weight * (err * eyes).mean()
    return l_img, 1.0 - ssim_torch(comp, comp_t, kernel), l_eye


def _step_loss(student: Any, fb: dict[str, Any], tb: dict[str, Any], crop: tuple[int, int, int], bg: Any,
               kernel: Any, tex_weight: float, weighted: bool = False, eye_weight: float = 0.0,
               grid_inside_weight: float = 0.0) -> tuple[Any, dict[str, Any]]:
    """The training loss of one step (see the module docstring) and its parts."""
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    row, col, size = crop
    window = np.s_[:, :, row:row + size, col:col + size]
    out = student(fb["motion"], crop=crop)
    l_img, l_ssim, l_eye = _image_losses(out, fb, crop, bg, kernel, eye_weight)
    fields = out["fields"]
    quarter_alpha = F.avg_pool2d(fb["head_alpha"], 4)
    l_alpha = (out["alpha"] - fb["head_alpha"][window]).abs().mean() + \
        (torch.sigmoid(fields[:, 2:3] * student.edge_sharpness) - quarter_alpha).abs().mean()
    near = (F.max_pool2d(quarter_alpha, 5, stride=1, padding=2) > 0).float()
    inside = (quarter_alpha > 0.98).float()      # the face itself: a warp there moves what the viewer sees
    l_grid = ((fields[:, 0:2] - fb["grid"]).abs() * (0.05 + near + grid_inside_weight * inside)).mean()
    l_body = (fields[:, 3:4] - fb["body_shade"]).abs().mean()
    l_tex = texture_loss(student, out, fb, weighted)
    tex_out = student.textures(tb["motion"] / student.scale)
    l_tex = l_tex + texture_loss(student, tex_out, tb, weighted)
    loss = 4.0 * l_img + 0.5 * l_ssim + 1.0 * l_alpha + 2.0 * l_grid + 0.5 * l_body + tex_weight * l_tex
    return loss, {"img_l1": l_img, "ssim": 1.0 - l_ssim, "tex_l1": l_tex, "eye_l1": l_eye}


def _crop(rng: np.random.Generator, size: int, crop_px: int) -> tuple[int, int, int]:
    """A square where the head and its shadow can be (multiples of 4 px)."""
    crop = crop_px * size // 256
    row = 4 * int(rng.integers(0, (size * 7 // 8 - crop) // 4 + 1))
    col = 4 * int(rng.integers(size // 8 // 4, (size * 7 // 8 - crop) // 4 + 1))
    return row, col, crop


def _optimizer(student: Any, lr: float, static_lr: float) -> tuple[Any, list[float]]:
    import torch  # noqa: PLC0415

    static_names = {"static_texture", "body", "base_fields", "eye_ball", "eye_opening"}   # textures: slower
    groups = [
        {"params": [p for n, p in student.named_parameters() if n not in static_names and n != "edge_sharpness"],
         "lr": lr},
        {"params": [p for n, p in student.named_parameters() if n in static_names], "lr": static_lr},
        {"params": [student.edge_sharpness], "lr": lr * 5},
    ]
    return torch.optim.Adam(groups), [g["lr"] for g in groups]


def _lr_scale(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))) * 0.97 + 0.03


def _cat(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    import torch  # noqa: PLC0415

    return {k: torch.cat([a[k], b[k]], 0) for k in a}


def data_specs(options: TrainOptions) -> dict[str, DataSpec]:
    """The teacher data sets a run renders (or finds cached), by name: what the manifest's ``data`` keys name."""
    size, ss = options.size_px, options.supersample
    return {
        "frames": DataSpec(options.frames, options.frame_seed, size, ss, frames=True),
        "textures": DataSpec(options.textures, options.texture_seed, size, ss, frames=False),
        "validation": DataSpec(options.val_frames, options.val_seed, size, ss, frames=True),
        "extreme_textures": DataSpec(options.extreme_textures, options.extreme_texture_seed, size, ss, frames=False,
                                     sampler="extremes"),
        "extreme_frames": DataSpec(options.extreme_frames, options.extreme_frame_seed, size, ss, frames=True,
                                   sampler="extremes"),
    }


def train_renderer(options: TrainOptions, out_dir: Path, data_dir: str | Path = DEFAULT_DATA_DIR,
                   progress: Any = None) -> dict[str, Any]:
    """Render (or reuse) the data, train, export ``renderer_<S>.onnx`` and the manifest into ``out_dir``.

    Phase 1 learns from conversation-like motion (``epochs`` passes over the frames); its weights are
    cached under ``data_dir`` by a key of everything that decides them, so a rerun reuses them. Phase 2
    first trains the texture decoders alone on chart targets with the change-weighted loss, then
    fine-tunes everything on a half-and-half mix of that data and the range ends ("extremes": full
    blinks, winks, a wide-open jaw, blendshapes near 1.0), which conversation rarely reaches.
    """
    import torch  # noqa: PLC0415

    from edge_avatar.render.dataset import code_fingerprint  # noqa: PLC0415
    from edge_avatar.render.export import export_onnx, load_student, save_weights, weights_path_for  # noqa: PLC0415
    from edge_avatar.render.grow import describe as grow_describe  # noqa: PLC0415
    from edge_avatar.render.student import WIDTHS, RendererStudent  # noqa: PLC0415

    say = progress or (lambda msg: log.info("%s", msg))
    if torch.__version__.split("+")[0] != PINNED_TORCH:
        say(f"warning: torch {torch.__version__} is not the pinned {PINNED_TORCH}; the weights will differ")
    torch.manual_seed(options.seed)
    torch.set_num_threads(options.threads)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False   # a debugging aid that costs 20% of a step
    rng = np.random.default_rng(options.seed)
    started_s = time.monotonic()

    size = options.size_px
    root = Path(data_dir).expanduser()
    specs = data_specs(options)
    say("teacher data under " + str(root) + ": " + ", ".join(s.key() for s in specs.values()))
    data = {name: load_or_render(spec, root, options.workers, f"teacher {name}") for name, spec in specs.items()}
    render_s = time.monotonic() - started_s

    if options.grow_from:
        from edge_avatar.render.grow import grow_student  # noqa: PLC0415
        small_path = Path(options.grow_from)
        if not small_path.is_absolute():   # beside the output, else the committed one
            small_path = next((d / small_path for d in (Path(out_dir), DEFAULT_OUT_DIR) if (d / small_path).is_file()),
                              DEFAULT_OUT_DIR / small_path)
        small = load_student(small_path)
        say(f"student: grown from {small_path} ({small.shape.size_px}px)")
        grown_widths = next((name for name, w in WIDTHS.items() if w == small.widths), "custom")
        if grown_widths != options.widths:
            say(f"student: keeps the {grown_widths} widths of {small_path.name} (not {options.widths})")
            options = replace(options, widths=grown_widths)
        student = grow_student(small, initial_tensors(small.shape.size_px), initial_tensors(size), size)
        student.train()
    else:
        student = RendererStudent(size, **initial_tensors(size), widths=WIDTHS[options.widths])
    n_params = sum(p.numel() for p in student.parameters())
    say(f"student: {n_params / 1e6:.2f} M parameters")
    kernel = _gauss_1d(torch)
    bg = torch.tensor(EVAL_BACKGROUND_RGB, dtype=torch.float32).view(1, 3, 1, 1) / 255.0
    val = data["validation"]

    # ---- phase 1: conversation-like motion, from scratch (or its cached result)
    phase1_fields = {k: v for k, v in asdict(options).items()
                     if not k.startswith(("finetune", "extreme", "texture_phase", "eye_phase")) and k != "workers"}
    phase1_key = hashlib.sha256(json.dumps([
        PHASE1_RECIPE_VERSION, phase1_fields, [specs[n].key() for n in ("frames", "textures", "validation")],
        torch.__version__, code_fingerprint((Path(__file__).parent / "student.py").read_text(encoding="utf-8")),
    ]).encode()).hexdigest()[:12]
    checkpoint1 = root / f"renderer_{size}-phase1-{phase1_key}.pt"
    train_s = 0.0
    if options.grow_from:
        history = []   # grown: the smaller student's training was its phase 1
        phase1_key = None
    elif checkpoint1.is_file():
        student.load_state_dict(torch.load(checkpoint1, weights_only=True))
        history = json.loads(checkpoint1.with_suffix(".json").read_text())
        say(f"phase 1: reusing {checkpoint1}")
    else:
        phase_started_s = time.monotonic()
        history = _phase1(student, options, data, rng, kernel, bg, say)
        train_s += time.monotonic() - phase_started_s
        torch.save(student.state_dict(), checkpoint1)
        checkpoint1.with_suffix(".json").write_text(json.dumps(history))
    val_phase1 = validate(student, val, bg)

    # ---- phase 2: the texture decoders on their own (range ends included), then the whole student on images,
    # half conversation, half range ends
    phase_started_s = time.monotonic()
    history_tex = _phase_textures(student, options, data)
    history2 = _phase2(student, options, data, kernel, bg, say)
    val_phase2 = validate(student, val, bg)
    # ---- phase 3: the eye layers alone, on eye-centred crops chosen by eye state
    history3 = _phase_eyes(student, options, data, kernel, bg)
    train_s += time.monotonic() - phase_started_s

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / onnx_name(size)
    # The ONNX is made from the saved (float16) weights, not the live student: then training and --export-only
    # write the same bytes.
    save_weights(student, weights_path_for(onnx_path))
    export_onnx(load_student(weights_path_for(onnx_path)), onnx_path)
    record = {
        "options": asdict(options),
        "data": {name: spec.key() for name, spec in specs.items()},
        "teacher_render_s": round(render_s, 1),
        "train_s": round(train_s, 1),
        "steps": {"phase1": len(history) and history[-1]["step"], "textures": options.texture_phase_steps,
                  "phase2": options.finetune_steps, "eyes": options.eye_phase_steps},
        "parameters": n_params,
        "widths": student.widths.as_dict(),
        "history": {"phase1": history, "textures": history_tex, "phase2": history2, "eyes": history3},
        "val_psnr_db_ss2": {"phase1": round(val_phase1, 3), "phase2": round(val_phase2, 3),
                            "final": round(validate(student, val, bg), 3)},
        "eye_white_px": eye_check(student),
        "phase1_checkpoint_key": phase1_key,
        **({"grown": grow_describe(small_path)} if options.grow_from else {}),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    write_manifest(out_dir, size, onnx_path, record)
    say(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB) after {train_s / 60:.1f} min of training")
    return record


def _phase1(student: Any, options: TrainOptions, data: dict[str, Any], rng: np.random.Generator, kernel: Any,
            bg: Any, say: Any) -> list[dict[str, float]]:
    opt, base_lrs = _optimizer(student, options.lr, options.static_lr)
    steps_per_epoch = max(1, options.frames // options.frame_batch)
    total = steps_per_epoch * options.epochs
    warmup = min(100, total // 10)
    batches = Batches(data["frames"], data["textures"])
    bar = ProgressBar(total, "train renderer (1/2)")
    history: list[dict[str, float]] = []
    step = 0
    val_psnr = float("nan")
    for _epoch in range(options.epochs):
        order = rng.permutation(options.frames)
        for b in range(steps_per_epoch):
            f_idx = order[b * options.frame_batch:(b + 1) * options.frame_batch]
            t_idx = rng.integers(0, options.textures, options.texture_batch)
            fb, tb = batches.frame_batch(f_idx), batches.texture_batch(t_idx)
            for g, base_lr in zip(opt.param_groups, base_lrs):
                g["lr"] = base_lr * _lr_scale(step, total, warmup)
            loss, parts = _step_loss(student, fb, tb, _crop(rng, options.size_px, options.crop_px), bg, kernel, 0.5,
                                     eye_weight=options.eye_weight, grid_inside_weight=options.grid_inside_weight)
            step, val_psnr = _apply(student, opt, loss, parts, step, total, history, data["validation"], bg, bar,
                                    val_psnr)
    return history


def _phase_textures(student: Any, options: TrainOptions, data: dict[str, Any]) -> list[dict[str, float]]:
    """The texture decoders alone, on chart targets (no image): cheap steps, many faces, range ends included."""
    import torch  # noqa: PLC0415

    rng = np.random.default_rng(options.texture_phase_seed)
    params = [p for n, p in student.named_parameters() if n.startswith(("eye.", "eye_", "mouth.", "coarse."))]
    opt = torch.optim.Adam(params, lr=options.texture_phase_lr)
    total = options.texture_phase_steps
    usual = Batches(data["frames"], data["textures"])
    ends = Batches(data["extreme_frames"], data["extreme_textures"])
    half = options.texture_phase_batch // 2
    bar = ProgressBar(total, "train renderer (textures)")
    history: list[dict[str, float]] = []
    for step in range(total):
        tb = _cat(usual.texture_batch(rng.integers(0, options.textures, half)),
                  ends.texture_batch(rng.integers(0, options.extreme_textures, half)))
        opt.param_groups[0]["lr"] = options.texture_phase_lr * _lr_scale(step, total, min(30, total // 10))
        loss = texture_loss(student, student.textures(tb["motion"] / student.scale), tb, weighted=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % 50 == 0 or step + 1 == total:
            history.append({"step": step + 1, "tex_l1_weighted": round(loss.item(), 5)})
        bar.update(step + 1, f"texture loss {loss.item():.4f}")
    return history


def _phase2(student: Any, options: TrainOptions, data: dict[str, Any], kernel: Any, bg: Any,
            say: Any) -> list[dict[str, float]]:
    rng = np.random.default_rng(options.finetune_seed)
    opt, base_lrs = _optimizer(student, options.finetune_lr, options.finetune_static_lr)
    total = options.finetune_steps
    warmup = min(30, total // 10)
    usual = Batches(data["frames"], data["textures"])
    ends = Batches(data["extreme_frames"], data["extreme_textures"])
    half_f, half_t = options.frame_batch // 2, options.texture_batch // 2
    bar = ProgressBar(total, "train renderer (2/2)")
    history: list[dict[str, float]] = []
    val_psnr = float("nan")
    for step in range(total):
        fb = _cat(usual.frame_batch(rng.integers(0, options.frames, half_f)),
                  ends.frame_batch(rng.integers(0, options.extreme_frames, half_f)))
        tb = _cat(usual.texture_batch(rng.integers(0, options.textures, half_t)),
                  ends.texture_batch(rng.integers(0, options.extreme_textures, half_t)))
        for g, base_lr in zip(opt.param_groups, base_lrs):
            g["lr"] = base_lr * _lr_scale(step, total, warmup)
        loss, parts = _step_loss(student, fb, tb, _crop(rng, options.size_px, options.crop_px), bg, kernel, 1.0,
                                 weighted=True, eye_weight=options.eye_weight,
                                 grid_inside_weight=options.grid_inside_weight)
        _, val_psnr = _apply(student, opt, loss, parts, step, total, history, data["validation"], bg, bar, val_psnr)
    return history


def _eye_strata(motion: np.ndarray, count: int) -> list[np.ndarray]:
    """Indices of the first ``count`` frames by eye state: closed (blink >= 0.75), half closed (0.2-0.75), open."""
    level = blink_level(np.asarray(motion[:count]))
    everything = np.arange(len(level))
    strata = [np.flatnonzero(level >= 0.75), np.flatnonzero((level >= 0.2) & (level < 0.75)),
              np.flatnonzero(level < 0.2)]
    return [s if len(s) else everything for s in strata]   # (a tiny --quick set may lack one)


def _eye_pick(rng: np.random.Generator, strata: list[np.ndarray], count: int, options: TrainOptions) -> np.ndarray:
    closed = int(round(count * options.eye_phase_closed_share))
    partial = int(round(count * options.eye_phase_partial_share))
    sizes = (closed, partial, max(0, count - closed - partial))
    return np.concatenate([rng.choice(s, n) for s, n in zip(strata, sizes) if n])


def _eye_crop(mask: Any, size: int, crop_px: int) -> tuple[int, int, int]:
    """A square (multiples of 4 px) centred on the batch's eyes; ``mask`` (B, 1, S/4, S/4) from ``eye_mask``."""
    crop = crop_px * size // 256
    rows, cols = np.nonzero(mask.sum((0, 1)).numpy())
    if len(rows) == 0:
        cy, cx = size * 0.4, size * 0.5
    else:
        cy, cx = 4 * rows.mean() + 2, 4 * cols.mean() + 2
    row = int(np.clip(4 * round((cy - crop / 2) / 4), 0, size - crop))
    col = int(np.clip(4 * round((cx - crop / 2) / 4), 0, size - crop))
    return row, col, crop


def _phase_eyes(student: Any, options: TrainOptions, data: dict[str, Any], kernel: Any, bg: Any
                ) -> list[dict[str, float]]:
    """The eyes alone (decoder, eyeball, opening, gaze), on eye-centred crops: 40 % closed, 30 % half closed,
    the rest open.

    Only the eye layers paint the eyes (the geometry cannot see them), so training them alone sharpens the
    eyes and finishes the lids without moving anything else. Frames and chart targets come half from the
    conversation sets, half from the range ends, each drawn by eye state (``eye_phase_*`` options).
    """
    import torch  # noqa: PLC0415

    rng = np.random.default_rng(options.eye_phase_seed)
    params = [p for n, p in student.named_parameters() if n.startswith(("eye.", "eye_"))]
    frozen = [p for n, p in student.named_parameters() if not n.startswith(("eye.", "eye_"))]
    opt = torch.optim.Adam(params, lr=options.eye_phase_lr)
    total = options.eye_phase_steps
    sets = [(Batches(data["frames"], data["textures"]), options.frames, options.textures),
            (Batches(data["extreme_frames"], data["extreme_textures"]), options.extreme_frames,
             options.extreme_textures)]
    strata = [(_eye_strata(b.frames["motion"], nf), _eye_strata(b.textures["motion"], nt)) for b, nf, nt in sets]
    half_f, half_t = options.frame_batch // 2, options.texture_phase_batch // 2
    bar = ProgressBar(total, "train renderer (eyes)")
    history: list[dict[str, float]] = []
    val_psnr = float("nan")
    for p in frozen:
        p.requires_grad_(False)
    try:
        for step in range(total):
            fb = _cat(*(b.frame_batch(_eye_pick(rng, fs, half_f, options)) for (b, _, _), (fs, _) in zip(sets, strata)))
            tb = _cat(*(b.texture_batch(_eye_pick(rng, ts, half_t, options))
                        for (b, _, _), (_, ts) in zip(sets, strata)))
            opt.param_groups[0]["lr"] = options.eye_phase_lr * _lr_scale(step, total, min(30, total // 10))
            crop = _eye_crop(fb["eye_mask"], options.size_px, options.crop_px)
            out = student(fb["motion"], crop=crop)
            l_img, l_ssim, l_eye = _image_losses(out, fb, crop, bg, kernel, options.eye_weight)
            tex_out = student.textures(tb["motion"] / student.scale)
            l_tex = texture_loss(student, out, fb, weighted=True, eyes_only=True) + \
                texture_loss(student, tex_out, tb, weighted=True, eyes_only=True)
            loss = 4.0 * l_img + 0.5 * l_ssim + l_tex
            parts = {"img_l1": l_img, "ssim": 1.0 - l_ssim, "tex_l1": l_tex, "eye_l1": l_eye}
            _, val_psnr = _apply(student, opt, loss, parts, step, total, history, data["validation"], bg, bar,
                                 val_psnr)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return history


def eye_check(student: Any, bg_rgb: tuple[int, int, int] = EVAL_BACKGROUND_RGB) -> dict[str, dict[str, int]]:
    """White-of-the-eye pixels (``metrics.eye_white_px``, both eyes) of the student and the teacher, eyes open,
    half closed and closed, head at rest: the numbers ``tests/test_render_student.py`` checks."""
    import torch  # noqa: PLC0415

    from edge_avatar.motion import neutral_motion  # noqa: PLC0415
    from edge_avatar.render.metrics import eye_white_px  # noqa: PLC0415
    from edge_avatar.render.teacher import TeacherRenderer  # noqa: PLC0415

    size = student.shape.size_px
    teacher = TeacherRenderer(size, size, 3, bg_rgb)
    bg = torch.tensor(bg_rgb, dtype=torch.float32).view(1, 3, 1, 1) / 255.0
    out: dict[str, dict[str, int]] = {"student": {}, "teacher": {}}
    student.eval()
    with torch.no_grad():
        for name, blink in (("open", 0.0), ("half", 0.5), ("closed", 1.0)):
            m = neutral_motion()
            m[8] = m[9] = blink                                      # eyeBlinkLeft, eyeBlinkRight
            rgb = student(torch.from_numpy(m).view(1, -1), bg)["rgb"][0]
            image = (torch.clamp(rgb, 0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
            out["student"][name] = sum(eye_white_px(image))
            out["teacher"][name] = sum(eye_white_px(teacher.render(m)))
    student.train()
    return out


def _apply(student: Any, opt: Any, loss: Any, parts: dict[str, Any], step: int, total: int,
           history: list[dict[str, float]], val: dict[str, Any], bg: Any, bar: ProgressBar,
           val_psnr: float) -> tuple[int, float]:
    """Backward, clip, step; record and report. Returns (steps done, last validation PSNR)."""
    import torch  # noqa: PLC0415

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    opt.step()
    step += 1
    loss_v, ssim_v = loss.item(), parts["ssim"].item()
    if step % 50 == 0 or step == total:
        history.append({"step": step, "loss": round(loss_v, 5), "img_l1": round(parts["img_l1"].item(), 5),
                        "ssim": round(ssim_v, 4), "tex_l1": round(parts["tex_l1"].item(), 5),
                        "eye_l1": round(parts["eye_l1"].item(), 5)})
    if step % 500 == 0 or step == total:
        val_psnr = validate(student, val, bg)
        history[-1]["val_psnr_db"] = round(val_psnr, 2)
    bar.update(step, f"loss {loss_v:.4f} ssim {ssim_v:.3f} val {val_psnr:.1f} dB")
    return step, val_psnr


def validate(student: Any, val: dict[str, np.ndarray], bg: Any) -> float:
    """Mean PSNR (dB) of the composited student frames against the cached teacher frames."""
    import torch  # noqa: PLC0415

    from edge_avatar.render.metrics import psnr  # noqa: PLC0415

    student.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(val["motion"]), 8):
            motion = torch.from_numpy(np.asarray(val["motion"][start:start + 8], np.float32))
            rgba = student(motion)["rgba"]
            comp = torch.clamp(rgba[:, :3] + (1 - rgba[:, 3:4]) * bg, 0, 1)
            ref_rgba = np.asarray(val["rgba"][start:start + 8], np.float32) / 255.0
            bg_np = bg.view(3).numpy()
            ref = ref_rgba[..., :3] + (1 - ref_rgba[..., 3:4]) * bg_np
            got = comp.permute(0, 2, 3, 1).numpy()
            for r, g in zip(ref, got):
                scores.append(psnr(np.round(r * 255), np.round(g * 255)))
    student.train()
    return float(np.mean(scores))


def int8_recipe() -> dict[str, Any]:
    """The manifest's ``quantization`` section: the layers ``engines build`` keeps in float, and why."""
    from edge_avatar.render.evaluate import INT8_RECOMMENDED, INT8_VARIANTS  # noqa: PLC0415

    return {"keep_float": list(INT8_VARIANTS[INT8_RECOMMENDED]),
            "why": "measured with `edge-avatar eval renderer --int8` on the slim 256 px student: everything INT8 "
                   "costs 11.0 dB against the teacher, the geometry decoder (the sampling grid) in float 1.04 dB, "
                   "the geometry decoder and the eye decoder's last layer in float 0.49 dB (the wide student: "
                   "up to 11 dB in the geometry, 2.2 dB in the eye layer, < 0.2 dB anywhere else)"}


def write_manifest(out_dir: Path, size: int, onnx_path: Path, record: dict[str, Any] | None) -> Path:
    """engines/renderer.manifest.json: one entry per renderer size (the engines manifest is another's).

    ``record`` is the training run's; None keeps the one already there (a re-export of the same weights:
    ``export_renderer`` has checked that there is one).
    """
    from edge_avatar.render.export import weights_path_for  # noqa: PLC0415
    from edge_avatar.render.neural import EXPORT_WINDOW_256  # noqa: PLC0415
    from edge_avatar.render.onnx_passes import export_facts  # noqa: PLC0415

    path = out_dir / MANIFEST_NAME
    manifest = json.loads(path.read_text()) if path.is_file() else {"manifest_version": 1, "models": {}}
    key = f"renderer_{size}"
    if record is None:
        record = manifest["models"][key]["training"]
    data = onnx_path.read_bytes()
    weights = weights_path_for(onnx_path)
    weights_entry = {"file": weights.name, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    if size != 256:   # only the 256 px weights are committed (engines/ stays small); the others are grown again
        weights_entry.update(committed=False, why=f"{weights.stat().st_size / 1e6:.0f} MB: not committed (engines/ "
                             "stays under 32 MB); `edge-avatar train renderer --size 512` grows it again from the "
                             "committed renderer_256.weights.npz")
    previous = manifest["models"].get(key, {}).get("weights", {})
    if previous.get("sha256") == weights_entry["sha256"]:   # the same weights: what was said of them still holds
        weights_entry = {**previous, **weights_entry}
    quick = record["options"]["frames"] < 100
    manifest["models"][key] = {
        "file": onnx_path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "kind": "onnx",
        "source": "trained by this project (distilled from edge_avatar.render.teacher)",
        "licence": "Apache-2.0",
        "training_command": "edge-avatar train renderer" + (" --quick" if quick else "")
                            + (f" --size {size}" if size != 256 else "")
                            + (" --from-scratch" if size == 512 and not record["options"].get("grow_from") else "")
                            + (f" --widths {record['options']['widths']}"
                               if record["options"].get("widths", "slim") != "slim"
                               and not record["options"].get("grow_from") else ""),
        "weights": weights_entry,
        "export": {"command": "edge-avatar train renderer --export-only" + (f" --size {size}" if size != 256 else ""),
                   "window_256": list(EXPORT_WINDOW_256), **export_facts(onnx_path)},
        "opset": 17,
        "inputs": [{"name": "motion", "shape": [1, 64], "dtype": "float32"},
                   {"name": "background_rgb", "shape": [3], "dtype": "float32"}],
        "outputs": [{"name": "image", "shape": [1, size, size, 3], "dtype": "uint8"}],
        "training": record,
        "quantization": int8_recipe(),
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def export_renderer(size: int, out_dir: Path = DEFAULT_OUT_DIR) -> Path:
    """``edge-avatar train renderer --export-only``: re-make renderer_<size>.onnx from its committed weights
    (``renderer_<size>.weights.npz``) and update its manifest entry, keeping the training record."""
    from edge_avatar.render.export import export_onnx, load_student, weights_path_for  # noqa: PLC0415

    onnx_path = Path(out_dir) / onnx_name(size)
    weights = weights_path_for(onnx_path)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: train the renderer first (edge-avatar train renderer"
                                + (f" --size {size}" if size != 256 else "") + ")")
    manifest_path = Path(out_dir) / MANIFEST_NAME
    entry = (json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}).get("models", {}).get(
        f"renderer_{size}", {})
    if "training" not in entry:
        raise ValueError(f"{manifest_path}: no renderer_{size} entry with a training record: train it first")
    recorded = entry.get("weights", {}).get("sha256")
    if recorded and recorded != hashlib.sha256(weights.read_bytes()).hexdigest():
        raise ValueError(f"{weights} is not the file {manifest_path} records (sha256 {recorded[:12]}...): its "
                         "training record would describe other weights; train again instead")
    student = load_student(weights)
    if student.shape.size_px != size:
        raise ValueError(f"{weights} holds a {student.shape.size_px}px renderer, not {size}px")
    export_onnx(student, onnx_path)
    write_manifest(Path(out_dir), size, onnx_path, None)
    return onnx_path
