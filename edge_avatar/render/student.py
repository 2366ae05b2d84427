"""The student: a compact convolutional renderer from the 64-value motion frame to an RGB image.

Why this module exists: the teacher is exact but slow; the device needs a
network that fits in a few milliseconds next to perception and the planner,
and that TensorRT can run as INT8. Its structure is the teacher's, learned:

- texture decoders paint the face's *chart* (pose-free) from the expression:
  one decoder shared by both eyes (the right eye is the left one's mirror
  image, so every eye sample teaches both), one for the mouth, jaw, nose
  and cheeks, one coarse decoder for smooth changes (blush, puff); their
  outputs are residuals added at fixed places to a learned static texture;
- each eye is two layers, as a real one is: a learned *eyeball* (sclera,
  iris, pupil, catch-lights; one per eye, as the light comes from one side)
  that slides under the lids by a learned linear
  function of the gaze (eye angles and eyeLook*), seen through an *opening*
  (a learned map at rest plus the eye decoder's residual logit), and over it
  the decoder's paint (lids, lashes, crease, brow) with its coverage. A
  decoder that had to paint a moving iris itself smeared it into a blur at
  every gaze but the rest one, and half-closed eyes into a dark slit;
- a geometry decoder predicts, at a quarter of the frame size, where every
  pixel looks in the chart (a sampling grid), the head's coverage as a
  smooth logit, a shadow factor for the body and three lighting features; all
  of them are smooth, so they are upsampled bilinearly, and the logit made
  sharp only at full size, which keeps edges crisp and cheap. It sees only
  what moves the teacher's geometry -- the head's angles, the jaw, the cheeks
  and the blendshapes whose painted relief shifts the parallax -- and not the
  eyes (eyeBlink, eyeSquint, eyeWide, eyeLook*, the eye angles), which change
  nothing but the chart: given them, it learned to warp the grid around the
  eyes (squeezing the eye white out of view to fake a blink, or hiding eyes
  the texture decoder drew badly), which left a ghost of the eye white
  through a closed lid and blurred open eyes;
- at full size, one grid sample fetches albedo and relief (a learned mix of
  the slopes), a 1x1 convolution "shader" turns relief + lighting features
  into a light colour and an added colour, and the head is laid over a
  learned body layer.

The static texture, the body layer and the geometry's base fields start from
the teacher's neutral frame, so the decoders learn residuals from the first
step. Everything is made of Linear, Conv, Resize, DepthToSpace, Pad, Gather
and GridSample: ONNX opset 17, ONNX Runtime and TensorRT (>= 8.6) run all of
it. torch is needed to train and export only (the ``train`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_avatar.motion import (
    ARKIT_BLENDSHAPES,
    BLENDSHAPE_INDEX,
    EYE_LIMITS_DEG,
    HEAD_LIMITS_DEG,
    HEAD_SLICE,
    MOTION_FRAME_SIZE,
)
from edge_avatar.render import layout
from edge_avatar.render.dataset import coarse_texels_per_unit, right_eye_rect

GEO_FIELDS = 7    # grid x, grid y, head logit, body shade, 3 lighting features
LIGHT_FEATURES = 3
PATCH_CHANNELS = 5   # the chart's channels: albedo RGB, slope along u, slope along v
PAINT_CHANNELS = 6   # what the eye and mouth decoders paint: those five and a coverage (alpha) logit
SAMPLED_CHANNELS = 4  # what is looked up per pixel: albedo RGB and one relief channel
EYE_CHANNELS = PAINT_CHANNELS + 1   # the eye decoder also gives the eye opening's logit (a residual)
INITIAL_EDGE_SHARPNESS = 3.0

# The eyeball layer of the avatar's left eye (the right one is its mirror image), in chart units: where the
# iris sits at rest, and the half extent of the layer around it (integer texels at 80 and 160 per unit).
IRIS_REST_UV = (0.38, 0.035)
EYEBALL_HALF_UV = (0.4, 0.45)


def motion_scale() -> np.ndarray:
    """(64,) divisors that bring every motion value to about -1..1 (angles by their limits)."""
    scale = np.ones(MOTION_FRAME_SIZE, np.float32)
    scale[52:55] = HEAD_LIMITS_DEG
    scale[55:59] = EYE_LIMITS_DEG
    return scale


def eye_inputs() -> tuple[np.ndarray, np.ndarray]:
    """(2, 14) indices into the motion frame and (2, 14) signs: row 0 the left eye, row 1 the right one mirrored."""
    stems = ("eyeBlink", "eyeSquint", "eyeWide", "eyeLookUp", "eyeLookDown", "eyeLookIn", "eyeLookOut",
             "cheekSquint", "noseSneer", "browDown", "browOuterUp")
    idx, sign = [], []
    for side, yaw_i, pitch_i, yaw_sign in (("Left", 55, 56, 1.0), ("Right", 57, 58, -1.0)):
        row = [BLENDSHAPE_INDEX[s + side] for s in stems] + [BLENDSHAPE_INDEX["browInnerUp"], yaw_i, pitch_i]
        idx.append(row)
        sign.append([1.0] * (len(row) - 2) + [yaw_sign, 1.0])
    return np.asarray(idx, np.int64), np.asarray(sign, np.float32)


def geometry_inputs() -> np.ndarray:
    """Indices of what can move the teacher's geometry: every blendshape but the eyes' own, and the head angles.

    (Measured with the teacher: eyeBlink/Squint/Wide/Look* and the eye angles leave its chart coordinates,
    coverage and shadow exactly unchanged; gesture channels never touch the face.)
    """
    eye_only = ("eyeBlink", "eyeSquint", "eyeWide", "eyeLookUp", "eyeLookDown", "eyeLookIn", "eyeLookOut")
    names = [n for n in ARKIT_BLENDSHAPES if not n.startswith(eye_only)]
    head = list(range(HEAD_SLICE.start, HEAD_SLICE.stop))
    return np.asarray([BLENDSHAPE_INDEX[n] for n in names] + head, np.int64)


def mouth_inputs() -> np.ndarray:
    """Indices of the blendshapes the mouth patch depends on (jaw, mouth, cheeks, nose, tongue)."""
    names = [n for n in ARKIT_BLENDSHAPES if n.startswith(("jaw", "mouth", "cheek", "noseSneer", "tongue"))]
    return np.asarray([BLENDSHAPE_INDEX[n] for n in names], np.int64)


@dataclass(frozen=True)
class DecoderWidth:
    """One decoder's widths: the MLP's hidden units and the channels of its three grid stages."""

    hidden: int
    chans: tuple[int, int, int]


@dataclass(frozen=True)
class StudentWidths:
    """The four decoders' widths. The per-pixel stage's cost is fixed by the frame; these set the rest."""

    eye: DecoderWidth
    mouth: DecoderWidth
    coarse: DecoderWidth
    geo: DecoderWidth

    def as_dict(self) -> dict[str, dict[str, object]]:
        return {name: {"hidden": w.hidden, "chans": list(w.chans)}
                for name, w in (("eye", self.eye), ("mouth", self.mouth), ("coarse", self.coarse), ("geo", self.geo))}


# The first trained student (32.4 dB, 2.7 M parameters). Its decoders' convolutions were a third of the
# frame's cost in ONNX Runtime on the 2-core box.
WIDE = StudentWidths(eye=DecoderWidth(96, (48, 32, 24)), mouth=DecoderWidth(128, (48, 40, 24)),
                     coarse=DecoderWidth(64, (32, 24, 16)), geo=DecoderWidth(128, (48, 32, 24)))
# The default since session 6: the mouth, coarse and geometry decoders at about half the convolution work, the
# eye decoder (the finest detail) a little slimmer; with the same per-pixel stage, about 20 % less per frame.
SLIM = StudentWidths(eye=DecoderWidth(96, (32, 24, 16)), mouth=DecoderWidth(96, (32, 16, 16)),
                     coarse=DecoderWidth(64, (16, 16, 8)), geo=DecoderWidth(96, (32, 16, 16)))
WIDTHS = {"wide": WIDE, "slim": SLIM}


def widths_from_state(state: dict[str, object]) -> StudentWidths:
    """The widths a saved state dict was trained with, read from its tensors' shapes."""
    def one(prefix: str) -> DecoderWidth:
        fc1, conv1, conv2 = (state[f"{prefix}.{n}.weight"] for n in ("fc1", "conv1", "conv2"))
        first = conv1.shape[1] - (2 if prefix == "geo" else 0)    # the geometry decoder also sees coordinates
        return DecoderWidth(int(fc1.shape[0]), (int(first), int(conv1.shape[0]), int(conv2.shape[0])))
    return StudentWidths(eye=one("eye"), mouth=one("mouth"), coarse=one("coarse"), geo=one("geo"))


@dataclass(frozen=True)
class StudentShape:
    """Sizes of everything, derived from the frame size (256 or 512)."""

    size_px: int

    @property
    def texels_per_unit(self) -> float:
        return layout.texels_per_unit(self.size_px)

    @property
    def texture_hw(self) -> tuple[int, int]:
        w, h = layout.TEXTURE_RECT.size_px(self.texels_per_unit)
        return h, w

    def patch_hw(self, rect: layout.Rect) -> tuple[int, int]:
        w, h = rect.size_px(self.texels_per_unit)
        return h, w

    def offset(self, rect: layout.Rect) -> tuple[int, int]:
        col, row = layout.patch_offset_px(rect, self.texels_per_unit)
        return row, col

    @property
    def coarse_hw(self) -> tuple[int, int]:
        w, h = layout.COARSE_WINDOW.size_px(coarse_texels_per_unit(self.texels_per_unit))
        return h, w

    @property
    def geo_hw(self) -> tuple[int, int]:
        return self.size_px // 4, self.size_px // 4


class Decoder(nn.Module):
    """Vector -> image: an MLP onto a small grid, two (bilinear x2, 3x3 conv) stages, then depth-to-space."""

    def __init__(self, n_in: int, out_hw: tuple[int, int], out_ch: int, chans: tuple[int, int, int],
                 hidden: int = 192, shuffle: int = 2, coords: bool = False, leaky: float = 0.0):
        super().__init__()
        self.leaky = leaky   # > 0: LeakyReLU, so no unit can die (the texture decoders need every one)
        h, w = out_hw
        if h % (4 * shuffle) or w % (4 * shuffle):
            raise ValueError(f"decoder output {out_hw} must divide by {4 * shuffle}")
        self.base_hw = (h // (4 * shuffle), w // (4 * shuffle))
        self.chans = chans
        self.shuffle = shuffle
        self.coords = coords
        extra = 2 if coords else 0
        self.fc1 = nn.Linear(n_in, hidden)
        self.fc2 = nn.Linear(hidden, chans[0] * self.base_hw[0] * self.base_hw[1])
        self.conv1 = nn.Conv2d(chans[0] + extra, chans[1], 3, padding=1)
        self.conv2 = nn.Conv2d(chans[1] + extra, chans[2], 3, padding=1)
        self.out = nn.Conv2d(chans[2], out_ch * shuffle * shuffle, 3, padding=1)
        if coords:
            for i, scale in ((1, 2), (2, 4)):
                hh, ww = self.base_hw[0] * scale, self.base_hw[1] * scale
                ys = torch.linspace(-1.0, 1.0, hh).view(1, 1, hh, 1).expand(1, 1, hh, ww)
                xs = torch.linspace(-1.0, 1.0, ww).view(1, 1, 1, ww).expand(1, 1, hh, ww)
                self.register_buffer(f"coords{i}", torch.cat([xs, ys], 1).contiguous(), persistent=False)
        nn.init.zeros_(self.out.bias)
        with torch.no_grad():
            self.out.weight.mul_(0.1)  # start close to "no change" from the base

    def _with_coords(self, x: torch.Tensor, i: int) -> torch.Tensor:
        if not self.coords:
            return x
        c = getattr(self, f"coords{i}").expand(x.shape[0], -1, -1, -1)
        return torch.cat([x, c], 1)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.leaky) if self.leaky > 0 else F.relu(x)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        x = self._act(self.fc1(v))
        x = self._act(self.fc2(x)).view(-1, self.chans[0], self.base_hw[0], self.base_hw[1])
        if self.training:  # oneDNN's convolutions train ~30% faster channels-last; export stays plain NCHW
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self._act(self.conv1(self._with_coords(x, 1)))
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self._act(self.conv2(self._with_coords(x, 2)))
        return F.pixel_shuffle(self.out(x), self.shuffle)


class RendererStudent(nn.Module):
    """Motion (B, 64) -> premultiplied RGBA (B, 4, S, S) and the intermediate fields (see the docstring)."""

    def __init__(self, size_px: int, static_texture: np.ndarray, body_rgba: np.ndarray, base_fields: np.ndarray,
                 eyeball: np.ndarray, eye_opening: np.ndarray, gaze_weight: np.ndarray, widths: StudentWidths = SLIM):
        """The starting point (``train.initial_tensors``): static chart (5, Ht, Wt), body layer (4, S, S), geometry
        base fields (7, S/4, S/4), eyeball layers (2, 5, He, We: the left eye, the right one mirrored), eye
        opening logits at rest (1, h, w) of the eye patch, and the gaze's iris shift per eye input (2, 15) in
        chart units. ``widths``: the decoders' sizes (``SLIM``, or ``WIDE`` for the first trained student)."""
        super().__init__()
        self.shape = StudentShape(size_px)
        self.widths = widths
        sh = self.shape
        k = size_px // 256
        self.register_buffer("scale", torch.from_numpy(motion_scale()).view(1, -1), persistent=False)
        idx, sign = eye_inputs()
        self.register_buffer("eye_idx", torch.from_numpy(idx.reshape(-1)), persistent=False)
        self.register_buffer("eye_sign", torch.from_numpy(sign).view(1, 2, -1), persistent=False)
        self.register_buffer("mouth_idx", torch.from_numpy(mouth_inputs()), persistent=False)
        self.register_buffer("geo_idx", torch.from_numpy(geometry_inputs()), persistent=False)
        eye_hw = sh.patch_hw(layout.EYE_PATCH)
        self.register_buffer("flip_idx", torch.arange(eye_hw[1] - 1, -1, -1), persistent=False)
        self.register_buffer("mirror_sign", torch.tensor([1, 1, 1, -1, 1, 1], dtype=torch.float32).view(1, 6, 1, 1),
                             persistent=False)
        self.register_buffer("eye_grid", torch.from_numpy(eyeball_grid(sh.texels_per_unit)).unsqueeze(0),
                             persistent=False)                                     # (1, h, w, 2)
        self.register_buffer("gaze_to_grid", torch.tensor([1.0 / EYEBALL_HALF_UV[0], -1.0 / EYEBALL_HALF_UV[1]]),
                             persistent=False)
        self.register_buffer("eye_side", torch.tensor([[0.0], [1.0]]).view(1, 2, 1), persistent=False)

        # The eye decoder is shared by both eyes (the right one painted mirrored), told which side it paints:
        # the fringe makes their surroundings differ.
        self.eye = Decoder(idx.shape[1] + 1, eye_hw, EYE_CHANNELS, widths.eye.chans, hidden=widths.eye.hidden,
                           shuffle=2 * k, leaky=0.1)
        self.eye_ball = nn.Parameter(torch.from_numpy(eyeball.astype(np.float32)).unsqueeze(0))   # (1, 2, 5, He, We)
        self.eye_opening = nn.Parameter(torch.from_numpy(eye_opening.astype(np.float32)).unsqueeze(0))  # (1, 1, h, w)
        self.eye_gaze = nn.Linear(idx.shape[1] + 1, 2)                             # eye inputs -> iris shift (u, v)
        with torch.no_grad():
            self.eye_gaze.weight.copy_(torch.from_numpy(gaze_weight.astype(np.float32)))
            self.eye_gaze.bias.zero_()
        self.mouth = Decoder(len(mouth_inputs()), sh.patch_hw(layout.MOUTH_PATCH), PAINT_CHANNELS, widths.mouth.chans,
                             hidden=widths.mouth.hidden, shuffle=2 * k, leaky=0.1)
        self.coarse = Decoder(56, sh.coarse_hw, PATCH_CHANNELS, widths.coarse.chans, hidden=widths.coarse.hidden,
                              shuffle=2 * k, leaky=0.1)
        for decoder, channels in ((self.eye, EYE_CHANNELS), (self.mouth, PAINT_CHANNELS)):
            with torch.no_grad():   # coverage starts near 0: the static chart (and the eyeball) show through
                decoder.out.bias.view(channels, -1)[5].fill_(-4.0)
        self.geo = Decoder(len(geometry_inputs()), sh.geo_hw, GEO_FIELDS, widths.geo.chans, hidden=widths.geo.hidden,
                           shuffle=2 * k, coords=True)
        # Relief = a learned mix of the two slopes (starts as the key light's direction in the chart).
        self.relief = nn.Parameter(torch.tensor([[0.45], [-0.55]]).view(1, 2, 1, 1))
        self.shader1 = nn.Conv2d(1 + LIGHT_FEATURES, 16, 1)
        self.shader2 = nn.Conv2d(16, 6, 1)
        with torch.no_grad():  # start as "colour = albedo": light 1, nothing added
            self.shader2.weight.mul_(0.05)
            self.shader2.bias.copy_(torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
        self.static_texture = nn.Parameter(torch.from_numpy(static_texture.astype(np.float32)).unsqueeze(0))
        self.body = nn.Parameter(torch.from_numpy(body_rgba.astype(np.float32)).unsqueeze(0))
        self.base_fields = nn.Parameter(torch.from_numpy(base_fields.astype(np.float32)).unsqueeze(0))
        self.edge_sharpness = nn.Parameter(torch.tensor(INITIAL_EDGE_SHARPNESS))

    # ------------------------------------------------------------------ pieces

    def static4(self) -> torch.Tensor:
        """The static chart as it is looked up: albedo and relief (1, 4, Ht, Wt); constant at run time."""
        st = self.static_texture
        return torch.cat([st[:, 0:3], (st[:, 3:5] * self.relief).sum(1, keepdim=True)], 1)

    def textures(self, motion: torch.Tensor) -> dict[str, torch.Tensor]:
        """The chart texture (B, 4, Ht, Wt) and its pieces, from normalized motion (B, 64).

        The window (B, 5, h, w) is the static chart plus the coarse decoder's smooth change; in each eye the
        eyeball shows through the opening; the eye and mouth decoders then paint over it, each texel blended
        by its coverage (so closing an eye is painting skin over it, not cancelling the open eye exactly).
        """
        b = motion.shape[0]
        sh = self.shape
        eye_in = torch.index_select(motion, 1, self.eye_idx).view(b, 2, -1) * self.eye_sign
        eye_in = torch.cat([eye_in, self.eye_side.expand(b, -1, -1)], 2).reshape(b * 2, -1)   # (2B, 15)
        eyes = self.eye(eye_in)                                                      # (2B, 7, h, w)
        shift = self.eye_gaze(eye_in) * self.gaze_to_grid                           # (2B, 2) in grid units
        grid = self.eye_grid - shift.view(b * 2, 1, 1, 2)                            # (2B, h, w, 2)
        # "zeros" padding: ONNX Runtime's fast path ("border" is 4-7x slower); the layer is larger than any
        # opening moved by any gaze, so what lies outside it is never seen.
        balls = self.eye_ball.expand(b, -1, -1, -1, -1).reshape(b * 2, *self.eye_ball.shape[2:])
        ball = F.grid_sample(balls, grid, mode="bilinear", padding_mode="zeros", align_corners=False)   # (2B, 5, h, w)
        opening = torch.sigmoid(self.eye_opening + eyes[:, 6:7])                     # (2B, 1, h, w)
        cover = torch.sigmoid(eyes[:, 5:6])
        # Each layer as (colour it adds, share of the chart under it that still shows): eyeball through the
        # opening, then the paint over both.
        eyes = torch.cat([ball * (opening * (1.0 - cover)) + eyes[:, 0:5] * cover,
                          (1.0 - opening) * (1.0 - cover)], 1)                       # (2B, 6, h, w)
        eyes = eyes.view(b, 2, 6, eyes.shape[-2], eyes.shape[-1])
        left = eyes[:, 0]
        right = torch.index_select(eyes[:, 1], 3, self.flip_idx) * self.mirror_sign   # mirrored back
        mouth = self.mouth(torch.index_select(motion, 1, self.mouth_idx))           # (B, 6, h, w)
        mouth_cover = torch.sigmoid(mouth[:, 5:6])
        mouth = torch.cat([mouth[:, 0:5] * mouth_cover, 1.0 - mouth_cover], 1)
        coarse = self.coarse(motion[:, :56])                                         # (B, 5, h, w)
        factor = int(round(sh.texels_per_unit / coarse_texels_per_unit(sh.texels_per_unit)))
        w_row, w_col = sh.offset(layout.COARSE_WINDOW)
        static_win = self.static_texture[:, :, w_row:w_row + sh.coarse_hw[0] * factor,
                                         w_col:w_col + sh.coarse_hw[1] * factor]
        window = static_win + F.interpolate(coarse, scale_factor=float(factor), mode="bilinear",
                                            align_corners=False)                   # (B, 5, h, w)
        win_hw = window.shape[-2:]
        for layer, rect in ((left, layout.EYE_PATCH), (right, right_eye_rect()), (mouth, layout.MOUTH_PATCH)):
            row, col = sh.offset(rect)
            r, c = row - w_row, col - w_col
            h, w = layer.shape[-2:]
            under = window[:, :, r:r + h, c:c + w]
            window = window + _place(layer[:, 0:5] - (1.0 - layer[:, 5:6]) * under, (r, c), win_hw)
        delta = window - static_win
        delta4 = torch.cat([delta[:, 0:3], (delta[:, 3:5] * self.relief).sum(1, keepdim=True)], 1)
        tex = self.static4() + _place(delta4, (w_row, w_col), sh.texture_hw)
        return {"texture": tex, "coarse": coarse, "window": window}

    def fields(self, motion: torch.Tensor) -> torch.Tensor:
        """Geometry fields at a quarter size (B, 7, S/4, S/4), from the inputs that move the geometry only."""
        return self.base_fields + self.geo(torch.index_select(motion, 1, self.geo_idx))

    def forward(self, motion_raw: torch.Tensor, background: torch.Tensor | None = None,
                crop: tuple[int, int, int] | None = None) -> dict[str, torch.Tensor]:
        """``motion_raw``: (B, 64) in motion-frame units (already sanitized); ``background``: (B, 3, 1, 1) 0..1.

        Returns the premultiplied frame ("rgba"), the head's coverage, the quarter-size fields, the chart
        texture and, when a background is given, the composited frame ("rgb", (B, 3, S, S) 0..1).
        ``crop`` = (row, col, size), all multiples of 4, renders only that square (training: the per-pixel
        stage is most of the cost, and a crop of it is exactly the same pixels as the whole frame's).
        """
        motion = motion_raw / self.scale
        tex = self.textures(motion)
        fields = self.fields(motion)                                                  # (B, 7, S/4, S/4)
        body = self.body
        if crop is None:
            full = F.interpolate(fields, scale_factor=4.0, mode="bilinear", align_corners=False)  # (B, 7, S, S)
        else:
            row, col, size = crop
            q = fields.shape[-1]
            r0, c0 = max(row // 4 - 1, 0), max(col // 4 - 1, 0)
            r1, c1 = min((row + size) // 4 + 1, q), min((col + size) // 4 + 1, q)
            up = F.interpolate(fields[:, :, r0:r1, c0:c1], scale_factor=4.0, mode="bilinear", align_corners=False)
            full = up[:, :, row - 4 * r0:row - 4 * r0 + size, col - 4 * c0:col - 4 * c0 + size]
            body = body[:, :, row:row + size, col:col + size]
        grid = full[:, 0:2].permute(0, 2, 3, 1)                                      # (B, S, S, 2)
        # "zeros" padding: ONNX Runtime's fast path (the head never samples outside the chart).
        looked = F.grid_sample(tex["texture"], grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)                                  # (B, 4, S, S)
        shader_in = torch.cat([looked[:, 3:4], full[:, 4:4 + LIGHT_FEATURES]], 1)   # relief, light
        shaded = self.shader2(F.relu(self.shader1(shader_in)))                      # (B, 6, S, S)
        head_rgb = looked[:, 0:3] * shaded[:, 0:3] + shaded[:, 3:6]
        alpha = torch.sigmoid(full[:, 2:3] * self.edge_sharpness)                   # (B, 1, S, S)
        body_rgb = body[:, 0:3] * full[:, 3:4]
        out = {"alpha": alpha, "fields": fields, **tex}
        if background is not None:   # the frame over a colour: everything the device needs, nothing more
            under = body_rgb + (1.0 - body[:, 3:4]) * background
            out["rgb"] = under + alpha * (head_rgb - under)
        if self.training or background is None:
            rgb = body_rgb + alpha * (head_rgb - body_rgb)
            a = body[:, 3:4] + alpha * (1.0 - body[:, 3:4])
            out["rgba"] = torch.cat([rgb, a], 1)
        return out


def eyeball_grid(texels_per_unit: float) -> np.ndarray:
    """(h, w, 2) grid_sample coordinates, in the eyeball layer, of the left eye patch's texel centres at rest."""
    rect = layout.EYE_PATCH
    w, h = rect.size_px(texels_per_unit)
    u = rect.u0 + (np.arange(w) + 0.5) / texels_per_unit
    v = rect.v1 - (np.arange(h) + 0.5) / texels_per_unit
    gx = (u - IRIS_REST_UV[0]) / EYEBALL_HALF_UV[0]
    gy = (IRIS_REST_UV[1] - v) / EYEBALL_HALF_UV[1]
    return np.stack(np.meshgrid(gx, gy), -1).astype(np.float32)


def eyeball_hw(texels_per_unit: float) -> tuple[int, int]:
    """(rows, cols) of the eyeball layer."""
    return round(2 * EYEBALL_HALF_UV[1] * texels_per_unit), round(2 * EYEBALL_HALF_UV[0] * texels_per_unit)


def _place(patch: torch.Tensor, offset: tuple[int, int], size_hw: tuple[int, int]) -> torch.Tensor:
    """Zero-pad ``patch`` (B, C, h, w) so it sits at (row, col) of a (B, C, H, W) canvas."""
    row, col = offset
    h, w = patch.shape[-2:]
    return F.pad(patch, (col, size_hw[1] - col - w, row, size_hw[0] - row - h))
