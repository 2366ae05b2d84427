"""Start a larger renderer student (512 px) from a trained smaller one (256 px).

Why this module exists: the 512 px renderer (AGX Orin, Thor) costs four
times the 256 px one per training step and per teacher frame; trained from
scratch with the 256 px recipe it would take about three hours of this 2-core
box. But the two students are one design at two densities: the decoders'
hidden layers have the same shapes (only their last layer emits a 4x4
instead of a 2x2 block per cell), and the learned textures are the teacher's
neutral painting plus a smooth learned correction. So the larger student
starts from the smaller one:

- every layer but the decoders' last is copied as it is;
- each decoder's last layer is copied so that it emits, for every 2x2
  sub-pixel of the small student, the same value in the 2x2 block of 4x4
  sub-pixels covering it (a nearest-neighbour enlargement of its output);
- every texture-like parameter (static chart, body layer, geometry base
  fields, eyeballs, eye opening) is the teacher's neutral painting *at the
  large size* plus the small student's learned correction, enlarged
  bilinearly: the painting keeps its full-resolution detail and the
  learning is kept.

The grown student already draws the small one's face at twice the size; a
short fine-tuning at 512 px (``train.TrainOptions.grown_512``) then sharpens it
against the teacher. torch is needed (the ``train`` extra).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edge_avatar.render.student import Decoder, RendererStudent, StudentWidths

TEXTURE_PARAMETERS = ("static_texture", "body", "base_fields", "eye_ball", "eye_opening")
# The student's decoder attributes, as its widths name them. (student.py stays as it is: its code keys the
# cached phase-1 weights of every training record.)
DECODERS = tuple(f.name for f in fields(StudentWidths))


def _enlarge(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of the last two axes of ``x`` to ``hw`` (any leading axes)."""
    lead = x.shape[:-2]
    flat = x.reshape(1, -1, *x.shape[-2:])
    return F.interpolate(flat, size=hw, mode="bilinear", align_corners=False).reshape(*lead, *hw)


def _grow_last_layer(small: Decoder, large: Decoder, channels: int) -> None:
    """``large.out`` := ``small.out`` enlarged: sub-pixel (a, b) of the large block reads the small one's
    (a // f, b // f), f = large shuffle / small shuffle (pixel shuffle reads channel c * r^2 + i * r + j)."""
    rs, rl = small.shuffle, large.shuffle
    f = rl // rs
    w_small = small.out.weight.detach().view(channels, rs, rs, *small.out.weight.shape[1:])
    b_small = small.out.bias.detach().view(channels, rs, rs)
    rows = torch.arange(rl) // f
    w_large = w_small[:, rows][:, :, rows]                     # (C, rl, rl, Cin, 3, 3)
    b_large = b_small[:, rows][:, :, rows]
    with torch.no_grad():
        large.out.weight.copy_(w_large.reshape(large.out.weight.shape))
        large.out.bias.copy_(b_large.reshape(-1))


def grow_student(small: RendererStudent, small_init: dict[str, np.ndarray], large_init: dict[str, np.ndarray],
                 size_px: int) -> RendererStudent:
    """A ``size_px`` student from the trained ``small`` one (see the module docstring).

    ``small_init`` / ``large_init``: ``train.initial_tensors`` at the two sizes (the teacher's neutral painting
    each student started from); the large student's textures are ``large_init`` + the small one's learned
    change from ``small_init``, enlarged.
    """
    if size_px % small.shape.size_px:
        raise ValueError(f"a {size_px}px student cannot grow from a {small.shape.size_px}px one")
    large = RendererStudent(size_px, **large_init, widths=small.widths)
    state = {k: v.clone() for k, v in large.state_dict().items()}
    small_state = small.state_dict()
    init_names = {"static_texture": "static_texture", "body": "body_rgba", "base_fields": "base_fields",
                  "eye_ball": "eyeball", "eye_opening": "eye_opening"}
    for name in TEXTURE_PARAMETERS:
        learned = small_state[name][0] - torch.from_numpy(small_init[init_names[name]].astype(np.float32))
        state[name] = state[name] + _enlarge(learned, tuple(state[name].shape[-2:])).unsqueeze(0)
    skip = set(TEXTURE_PARAMETERS) | {f"{d}.out.{p}" for d in DECODERS for p in ("weight", "bias")}
    for name, value in small_state.items():
        if name in skip:
            continue
        if state[name].shape != value.shape:
            raise ValueError(f"{name}: {tuple(value.shape)} in the small student, {tuple(state[name].shape)} here")
        state[name] = value.clone()
    large.load_state_dict(state)
    for name in DECODERS:
        decoder = getattr(small, name)
        _grow_last_layer(decoder, getattr(large, name), decoder.out.out_channels // decoder.shuffle ** 2)
    return large


def describe(small_weights: Any) -> dict[str, Any]:
    """The manifest's record of where a grown student came from (the small weights by name and hash)."""
    import hashlib  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    path = Path(small_weights)
    return {"grown_from": path.name, "grown_from_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "how": "edge_avatar.render.grow: hidden layers copied, last layers enlarged (nearest), textures = "
                   "teacher's neutral painting at this size + the small student's learned change (bilinear)"}
