"""The teacher's renders of sampled motion frames, cached on disk so training never renders twice.

Why this module exists: the teacher takes a few hundred milliseconds a frame,
training reads every frame many times, and a training run must be
repeatable. A data set is named by everything that decides its contents --
the code of the teacher, the painter, the layout and the sampler (docstrings
and comments excluded), the seed, the count, the frame size and the
supersampling -- and stored under that name as plain ``.npy`` files (uint8
where the values allow it), which numpy memory-maps back without copying. Rendering runs in worker processes (two by
default: the development box has two cores) and shows a progress bar.

Stored per sample (S = frame size, T = the student's texels per head unit):

- ``motion`` (N, 64) float32;
- ``rgba`` (N, S, S, 4) uint8, premultiplied, head over body over transparent;
- ``head_alpha`` (N, S, S) uint8;
- ``uv`` (N, S/4, S/4, 2) float16, chart coordinates (area mean over 4x4 pixels);
- ``body_shade`` (N, S/4, S/4) float16;
- ``eyes`` (N, 2, 80k, 64k, 6) uint8, the left eye patch and the mirrored right one (texture code below);
- ``mouth`` (N, 104k, 96k, 6) uint8;
- ``coarse`` (N, 48k, 48k, 6) float16, the smooth part of the change from the neutral texture.

Texture code: albedo and gloss as value * 255; slopes as slope * 40 + 128 (so +-3.2 fits).
A texture-only set (``frames=False``) stores motion, eyes, mouth and coarse: cheap to paint, it gives the
texture decoders many more faces than the full renders can.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_avatar.render import layout

log = logging.getLogger(__name__)

SLOPE_CODE_SCALE = 40.0
SLOPE_CODE_OFFSET = 128.0
DATA_FORMAT_VERSION = 1
_SOURCES = ("layout.py", "face_texture.py", "teacher.py", "sampler.py")


@dataclass(frozen=True)
class DataSpec:
    """What a cached data set contains; its ``key`` names the folder."""

    count: int
    seed: int
    size_px: int = 256
    supersample: int = 2
    frames: bool = True          # False: textures only
    sampler: str = "conversation"  # or "extremes" (see MotionSampler)

    def key(self) -> str:
        h = hashlib.sha256()
        here = Path(__file__).resolve().parent
        for name in _SOURCES:
            h.update(code_fingerprint((here / name).read_text(encoding="utf-8")).encode())
        fields = [DATA_FORMAT_VERSION, self.count, self.seed, self.size_px, self.supersample, self.frames]
        if self.sampler != "conversation":   # (the default is left out so earlier keys stay valid)
            fields.append(self.sampler)
        h.update(json.dumps(fields).encode())
        kind = ("frames" if self.frames else "textures") + ("" if self.sampler == "conversation" else "-x")
        return f"{kind}-{self.size_px}-n{self.count}-s{self.seed}-{h.hexdigest()[:12]}"


def code_fingerprint(source: str) -> str:
    """The code of a module without its docstrings and comments: what decides the renders, not the prose."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


# ---------------------------------------------------------------------- texture coding


def encode_texture(channels: np.ndarray) -> np.ndarray:
    """(..., 6) float -> uint8 (see the module docstring)."""
    out = np.empty(channels.shape, np.float32)
    out[..., :3] = channels[..., :3] * 255.0
    out[..., 3:5] = channels[..., 3:5] * SLOPE_CODE_SCALE + SLOPE_CODE_OFFSET
    out[..., 5] = channels[..., 5] * 255.0
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def decode_texture(code: np.ndarray) -> np.ndarray:
    """uint8 (..., 6) -> float32 channels."""
    c = code.astype(np.float32)
    out = np.empty(c.shape, np.float32)
    out[..., :3] = c[..., :3] / 255.0
    out[..., 3:5] = (c[..., 3:5] - SLOPE_CODE_OFFSET) / SLOPE_CODE_SCALE
    out[..., 5] = c[..., 5] / 255.0
    return out


def crop(channels: np.ndarray, rect: layout.Rect, px_per_unit: float) -> np.ndarray:
    """The texels of ``rect`` from a full chart texture (H, W, C)."""
    col, row = layout.patch_offset_px(rect, px_per_unit)
    w, h = rect.size_px(px_per_unit)
    return channels[row:row + h, col:col + w]


def mirror_patch(patch: np.ndarray) -> np.ndarray:
    """Flip a chart patch left-right; the slope along u changes sign."""
    out = patch[:, ::-1].copy()
    out[..., 3] = -out[..., 3]
    return out


def right_eye_rect() -> layout.Rect:
    r = layout.EYE_PATCH
    return layout.Rect(-r.u1, -r.u0, r.v0, r.v1)


def texture_targets(channels: np.ndarray, neutral: np.ndarray, px_per_unit: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eyes (2, h, w, 6), mouth (h, w, 6), coarse (h, w, 6)) from a full chart texture (H, W, 6) float."""
    left = crop(channels, layout.EYE_PATCH, px_per_unit)
    right = mirror_patch(crop(channels, right_eye_rect(), px_per_unit))
    mouth = crop(channels, layout.MOUTH_PATCH, px_per_unit)
    residual = crop(channels, layout.COARSE_WINDOW, px_per_unit) - crop(neutral, layout.COARSE_WINDOW, px_per_unit)
    factor = int(round(px_per_unit / coarse_texels_per_unit(px_per_unit)))
    h, w = residual.shape[0] // factor, residual.shape[1] // factor
    coarse = residual[:h * factor, :w * factor].reshape(h, factor, w, factor, -1).mean(axis=(1, 3))
    return np.stack([left, right]), mouth, coarse.astype(np.float32)


def coarse_texels_per_unit(px_per_unit: float) -> float:
    """The coarse window's density: a quarter of the texture's."""
    return px_per_unit / 4.0


# ---------------------------------------------------------------------- rendering workers

_worker_state: dict = {}


def _init_worker(spec: DataSpec) -> None:
    import cv2  # noqa: PLC0415 - the teacher's dependency, only in workers

    from edge_avatar.render.teacher import TeacherRenderer  # noqa: PLC0415

    cv2.setNumThreads(1)
    _worker_state["teacher"] = TeacherRenderer(spec.size_px, spec.size_px, spec.supersample) if spec.frames \
        else None
    _worker_state["spec"] = spec
    ppu = layout.texels_per_unit(spec.size_px)
    _worker_state["ppu"] = ppu
    _worker_state["neutral"] = _paint(np.zeros(64, np.float32), ppu)


def _paint(motion: np.ndarray, ppu: float) -> np.ndarray:
    from edge_avatar.motion import sanitize_motion  # noqa: PLC0415
    from edge_avatar.render.face_texture import paint_face  # noqa: PLC0415

    return paint_face(sanitize_motion(motion)[0], ppu).channels()


def _render_one(item: tuple[int, np.ndarray]) -> tuple[int, dict[str, np.ndarray]]:
    index, motion = item
    spec: DataSpec = _worker_state["spec"]
    ppu = _worker_state["ppu"]
    eyes, mouth, coarse = texture_targets(_paint(motion, ppu), _worker_state["neutral"], ppu)
    out = {"eyes": encode_texture(eyes), "mouth": encode_texture(mouth), "coarse": coarse.astype(np.float16)}
    if spec.frames:
        frame = _worker_state["teacher"].render_frame(motion)
        s4 = spec.size_px // 4
        out["rgba"] = np.clip(np.round(frame.rgba * 255.0), 0, 255).astype(np.uint8)
        out["head_alpha"] = np.clip(np.round(frame.head_alpha * 255.0), 0, 255).astype(np.uint8)
        out["uv"] = frame.uv.reshape(s4, 4, s4, 4, 2).mean(axis=(1, 3)).astype(np.float16)
        out["body_shade"] = frame.body_shade.reshape(s4, 4, s4, 4).mean(axis=(1, 3)).astype(np.float16)
    return index, out


# ---------------------------------------------------------------------- the cache


class ProgressBar:
    """A one-line text progress bar on stderr (no dependency; a log line instead when not a terminal)."""

    def __init__(self, total: int, label: str, width: int = 30):
        self.total, self.label, self.width = max(total, 1), label, width
        self.start_s = time.monotonic()
        self._last_s = 0.0
        self._tty = sys.stderr.isatty()

    def update(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        if done < self.total and now - self._last_s < (0.2 if self._tty else 15.0):
            return
        self._last_s = now
        frac = done / self.total
        elapsed = now - self.start_s
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        bar = "#" * int(frac * self.width) + "-" * (self.width - int(frac * self.width))
        line = f"{self.label} [{bar}] {done}/{self.total} {elapsed:5.0f}s eta {eta:4.0f}s {extra}"
        if self._tty:
            print("\r" + line, end="\n" if done >= self.total else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


FIELDS_FRAMES = ("motion", "rgba", "head_alpha", "uv", "body_shade", "eyes", "mouth", "coarse")
FIELDS_TEXTURES = ("motion", "eyes", "mouth", "coarse")


def field_shapes(spec: DataSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    s, k = spec.size_px, spec.size_px / 256.0
    ppu = layout.texels_per_unit(s)
    ew, eh = layout.EYE_PATCH.size_px(ppu)
    mw, mh = layout.MOUTH_PATCH.size_px(ppu)
    cw, ch = layout.COARSE_WINDOW.size_px(coarse_texels_per_unit(ppu))
    del k
    shapes = {
        "motion": ((64,), "float32"),
        "rgba": ((s, s, 4), "uint8"),
        "head_alpha": ((s, s), "uint8"),
        "uv": ((s // 4, s // 4, 2), "float16"),
        "body_shade": ((s // 4, s // 4), "float16"),
        "eyes": ((2, eh, ew, 6), "uint8"),
        "mouth": ((mh, mw, 6), "uint8"),
        "coarse": ((ch, cw, 6), "float16"),
    }
    names = FIELDS_FRAMES if spec.frames else FIELDS_TEXTURES
    return {n: shapes[n] for n in names}


def load_or_render(spec: DataSpec, root: Path, workers: int = 2, label: str = "render") -> dict[str, np.ndarray]:
    """The data set for ``spec`` (memory-mapped), rendering what is missing into ``root / spec.key()``."""
    from edge_avatar.render.sampler import MotionSampler  # noqa: PLC0415

    folder = Path(root).expanduser() / spec.key()
    done_file = folder / "complete.json"
    shapes = field_shapes(spec)
    if done_file.is_file():
        log.info("renderer data: using cached %s", folder)
        return {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in shapes}
    folder.mkdir(parents=True, exist_ok=True)
    motions = MotionSampler(spec.seed, spec.sampler).batch(spec.count)
    arrays = {name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype,
                                              shape=(spec.count, *shape))
              for name, (shape, dtype) in shapes.items()}
    arrays["motion"][:] = motions
    bar = ProgressBar(spec.count, f"{label} ({spec.key().split('-')[0]})")
    items = [(i, motions[i]) for i in range(spec.count)]
    start_s = time.monotonic()
    if workers <= 1:
        _init_worker(spec)
        results = map(_render_one, items)
        pool = None
    else:
        pool = mp.get_context("fork" if os.name == "posix" else "spawn").Pool(
            workers, initializer=_init_worker, initargs=(spec,))
        results = pool.imap_unordered(_render_one, items, chunksize=8)
    try:
        for done, (index, out) in enumerate(results, start=1):
            for name, value in out.items():
                arrays[name][index] = value
            bar.update(done)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    for a in arrays.values():
        a.flush()
    done_file.write_text(json.dumps({"spec": spec.__dict__, "key": spec.key(),
                                     "seconds": round(time.monotonic() - start_s, 1)}, indent=2))
    return {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in shapes}
