"""The renderer as it ships: the trained student rewritten for inference and exported as ONNX.

Why this module exists: the student is written for training (every field a
separate, readable step; inputs normalised in the graph; the relief kept as
two slopes until the end). At inference more than half of its time went
into passes over whole maps (the 192x192 per-pixel window, the 192x192 chart
window), many of them elementwise steps that fold away: ONNX Runtime on one
core ran ~150 nodes per frame. ``DeployRenderer`` computes the same image
with the constants folded:

- the selection of each decoder's inputs, the eye mirroring and the side
  flag are folded into its first layer, which reads the whole normalised
  frame (the normalisation itself stays a separate step: INT8 quantizes a
  layer's input with one scale, and raw angles of +-45 degrees would leave
  the blendshapes, 0..1, a few levels);
- the relief (a learned mix of the two slopes) is linear, so it is folded
  into the last layer of every texture decoder and into the eyeball layers:
  the chart is assembled in 4 channels, not 5, with no subtraction of the
  static chart and no second pass to mix the slopes;
- the chart is the constant chart with its expression window pasted in
  (one concatenation), not the constant chart plus a zero-padded residual;
- the geometry decoder's coordinate channels are constant, so their share
  of each convolution is a constant map added after it (the convolutions
  then read multiples of 16 channels, 32 and 16 for the slim student, which
  ONNX Runtime runs in its blocked layout);
- the edge sharpness, the 0..255 scaling and the rounding offset are folded
  into the geometry decoder's coverage channel, the shader's last layer and
  the body layer; the frame is cast to uint8 before the transpose to HWC;
- the two fixed bilinear upsamplings by 4 (the geometry fields to the
  per-pixel window, the coarse decoder's change to the chart window) are
  two matrix products each (``BilinearResample``: columns, then rows),
  with the window's crop built into the matrices. ONNX Runtime's Resize
  took 1.8 ms of a 12 ms frame on one core for them; the products take
  about 0.6 ms. The engine build never quantizes these nodes
  (``edge_avatar.engines.quantize``: layers whose names begin with
  ``resample`` are fixed resampling, not learned weights).

Every fold is exact in real arithmetic; in float32 the frame differs from
the training graph's by rounding (tests: within 3 levels of 255 everywhere
in the window, more than one level off in under 0.1 % of it). The per-pixel
stage runs only in ``EXPORT_WINDOW_256`` (scaled to the frame size), where
the teacher's head and chin shadow can be; the rest of the frame is the
learned body layer over the background.
Layer names keep the student's (``geo/conv1``, ``eye/out`` ...), so the
manifest's INT8 ``keep_float`` list still names the same layers.

torch is needed to export only (the ``train`` extra).
"""

from __future__ import annotations

import copy
import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_avatar.motion import MOTION_FRAME_SIZE
from edge_avatar.render import layout
from edge_avatar.render.dataset import coarse_texels_per_unit, right_eye_rect
from edge_avatar.render.neural import EXPORT_WINDOW_256
from edge_avatar.render.onnx_passes import merge_consecutive_slices, store_weights_as_float16
from edge_avatar.render.student import (
    Decoder,
    RendererStudent,
    _place,
    eye_inputs,
    geometry_inputs,
    mouth_inputs,
    widths_from_state,
)
from edge_avatar.render.upsampling import bilinear_matrix

OPSET = 17

WEIGHTS_SUFFIX = ".weights.npz"


def _linear_from_motion(fc: nn.Linear, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> nn.Linear:
    """A Linear reading the whole normalised (64,) motion frame, equal to ``fc`` applied to selected inputs.

    ``rows``: one (indices, multipliers, constant tail) per copy of ``fc``: the copy's input is
    ``motion[indices] * multipliers`` followed by the constant tail (None: no tail). The copies are stacked, so
    one Gemm computes them all ((B, 64) -> (B, copies * out)).
    """
    weight = fc.weight.detach().double()
    bias = fc.bias.detach().double()
    weights, biases = [], []
    for idx, mult, tail in rows:
        n = len(idx)
        w = torch.zeros(weight.shape[0], MOTION_FRAME_SIZE, dtype=torch.float64)
        for j, (i, m) in enumerate(zip(idx.tolist(), mult.tolist())):
            w[:, i] += weight[:, j] * m
        b = bias.clone()
        if tail is not None:
            b += weight[:, n:] @ torch.from_numpy(np.asarray(tail, np.float64))
        elif weight.shape[1] != n:
            raise ValueError(f"layer reads {weight.shape[1]} inputs, {n} given")
        weights.append(w)
        biases.append(b)
    out = nn.Linear(MOTION_FRAME_SIZE, weight.shape[0] * len(rows))
    with torch.no_grad():
        out.weight.copy_(torch.cat(weights).float())
        out.bias.copy_(torch.cat(biases).float())
    return out


def _selecting(fc: nn.Linear, idx: np.ndarray) -> nn.Linear:
    """``fc`` applied to ``motion[idx]``, as a Linear reading the whole normalised frame."""
    return _linear_from_motion(fc, [(idx, np.ones(len(idx)), None)])


def _fold_out_channels(conv: nn.Conv2d, shuffle: int, mix: np.ndarray, gain: float = 1.0) -> nn.Conv2d:
    """``conv`` followed by pixel shuffle, with the per-pixel linear map ``mix`` (new, old) applied to its
    channels after the shuffle, folded into the conv (pixel shuffle reads channel c * r^2 + k as sub-pixel k of
    channel c); ``gain`` multiplies everything."""
    r2 = shuffle * shuffle
    mix_t = torch.from_numpy(np.asarray(mix, np.float64))
    w = conv.weight.detach().double().view(mix_t.shape[1], r2, *conv.weight.shape[1:])
    b = conv.bias.detach().double().view(mix_t.shape[1], r2)
    new = nn.Conv2d(conv.in_channels, mix_t.shape[0] * r2, conv.kernel_size, padding=conv.padding)
    with torch.no_grad():
        new.weight.copy_((torch.einsum("nc,ck...->nk...", mix_t, w) * gain).reshape(new.weight.shape).float())
        new.bias.copy_((mix_t @ b * gain).reshape(-1).float())
    return new


class BilinearResample(nn.Module):
    """(..., H, W) -> (..., rows, cols): a fixed bilinear resampling as two matrix products (columns, then rows)."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray):
        """``rows``: (out_h, H) and ``cols``: (out_w, W), e.g. from ``bilinear_matrix``."""
        super().__init__()
        self.register_buffer("rows", torch.from_numpy(np.ascontiguousarray(rows, np.float32)))
        self.register_buffer("cols_t", torch.from_numpy(np.ascontiguousarray(cols.T, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.rows, torch.matmul(x, self.cols_t))


class DeployDecoder(nn.Module):
    """A trained ``Decoder`` reading the raw motion frame, with its coordinate channels folded into constant maps."""

    def __init__(self, decoder: Decoder, fc1: nn.Linear, out: nn.Conv2d, copies: int):
        super().__init__()
        self.copies = copies
        self.hidden = decoder.fc1.out_features
        self.base_hw = decoder.base_hw
        self.chans = decoder.chans
        self.shuffle = decoder.shuffle
        self.leaky = decoder.leaky
        self.fc1 = fc1
        self.fc2 = copy.deepcopy(decoder.fc2)
        self.out = out
        for i, conv in ((1, decoder.conv1), (2, decoder.conv2)):
            if decoder.coords:   # conv(cat(x, coords)) = conv_x(x) + conv_coords(coords): the second term is constant
                n_x = conv.in_channels - 2
                plain = nn.Conv2d(n_x, conv.out_channels, 3, padding=1, bias=False)
                with torch.no_grad():
                    plain.weight.copy_(conv.weight[:, :n_x])
                    coords = getattr(decoder, f"coords{i}")
                    constant = F.conv2d(coords, conv.weight[:, n_x:], conv.bias, padding=1)
                self.register_buffer(f"map{i}", constant.detach().clone())
                setattr(self, f"conv{i}", plain)
            else:
                setattr(self, f"conv{i}", copy.deepcopy(conv))
                self.register_buffer(f"map{i}", None)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.leaky) if self.leaky > 0 else F.relu(x)

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        x = self._act(self.fc1(motion)).view(self.copies, self.hidden)
        x = self._act(self.fc2(x)).view(self.copies, self.chans[0], *self.base_hw)
        for i in (1, 2):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = getattr(self, f"conv{i}")(x)
            constant = getattr(self, f"map{i}")
            x = self._act(x if constant is None else x + constant)
        return F.pixel_shuffle(self.out(x), self.shuffle)


class DeployRenderer(nn.Module):
    """(motion (1, 64) raw, background_rgb (3,) 0..255) -> image (1, S, S, 3) uint8: the student, folded."""

    def __init__(self, student: RendererStudent, window_256: tuple[int, int, int] = EXPORT_WINDOW_256):
        super().__init__()
        student = copy.deepcopy(student).eval()
        sh = student.shape
        size = sh.size_px
        self.size_px = size
        self.window = tuple(v * size // 256 for v in window_256)
        row, col, win = self.window
        relief_u, relief_v = (float(v) for v in student.relief.detach().view(2))
        self.register_buffer("scale", student.scale.clone())
        with torch.no_grad():
            # --- eyes: one decoder, run for both (the right one painted mirrored); relief per side
            idx, sign = eye_inputs()
            eye_rows = [(idx[s], sign[s], [float(s)]) for s in (0, 1)]
            eye_mix = np.eye(7)[[0, 1, 2, 3, 3, 5, 6]]        # r g b relief_left relief_right cover opening
            eye_mix[3, 3:5] = (relief_u, relief_v)
            eye_mix[4, 3:5] = (-relief_u, relief_v)             # the right eye's slope along u is mirrored
            self.eye = DeployDecoder(student.eye, _linear_from_motion(student.eye.fc1, eye_rows),
                                     _fold_out_channels(student.eye.out, student.eye.shuffle, eye_mix), copies=2)
            gaze = _linear_from_motion(student.eye_gaze, eye_rows)   # (1, 64) -> (1, 4): both eyes' iris shifts
            gaze.weight.mul_(student.gaze_to_grid.repeat(2).view(4, 1))
            gaze.bias.mul_(student.gaze_to_grid.repeat(2))
            self.eye_gaze = gaze
            ball = student.eye_ball.detach()[0]                                  # (2, 5, He, We)
            self.register_buffer("eye_ball", torch.stack([
                torch.cat([ball[s, 0:3], relief_u * (1 - 2 * s) * ball[s, 3:4] + relief_v * ball[s, 4:5]])
                for s in (0, 1)]))                                               # (2, 4, He, We)
            self.register_buffer("eye_grid_t", student.eye_grid.detach()[0].permute(2, 0, 1).contiguous())  # (2, h, w)
            self.register_buffer("eye_opening", student.eye_opening.detach().clone())
            # --- mouth and the coarse decoder: relief folded in
            mouth_mix = np.zeros((5, 6))
            mouth_mix[[0, 1, 2, 4], [0, 1, 2, 5]] = 1.0
            mouth_mix[3, 3:5] = (relief_u, relief_v)
            self.mouth = DeployDecoder(student.mouth, _selecting(student.mouth.fc1, mouth_inputs()),
                                       _fold_out_channels(student.mouth.out, student.mouth.shuffle, mouth_mix),
                                       copies=1)
            coarse_mix = np.zeros((4, 5))
            coarse_mix[[0, 1, 2], [0, 1, 2]] = 1.0
            coarse_mix[3, 3:5] = (relief_u, relief_v)
            self.coarse = DeployDecoder(student.coarse, _selecting(student.coarse.fc1, np.arange(56)),   # motion[:56]
                                        _fold_out_channels(student.coarse.out, student.coarse.shuffle, coarse_mix),
                                        copies=1)
            # --- geometry: the edge sharpness folded into the coverage logit
            sharp = float(student.edge_sharpness.detach())
            geo_gain = np.eye(7)
            geo_gain[2, 2] = sharp
            self.geo = DeployDecoder(student.geo, _selecting(student.geo.fc1, geometry_inputs()),
                                     _fold_out_channels(student.geo.out, student.geo.shuffle, geo_gain), copies=1)
            base = student.base_fields.detach().clone()
            base[:, 2] *= sharp
            self.register_buffer("base_fields", base)
            # --- the chart: constant, with the expression window pasted in
            static4 = student.static4().detach()
            self.factor = int(round(sh.texels_per_unit / coarse_texels_per_unit(sh.texels_per_unit)))
            w_row, w_col = sh.offset(layout.COARSE_WINDOW)
            w_h, w_w = sh.coarse_hw[0] * self.factor, sh.coarse_hw[1] * self.factor
            self.chart_window = (w_row, w_col, w_h, w_w)
            self.register_buffer("static4", static4.clone())
            self.register_buffer("static4_window", static4[:, :, w_row:w_row + w_h, w_col:w_col + w_w].clone())
            # fixed upsamplings, named so that the INT8 build leaves them in float ("/resample_coarse/MatMul" ...)
            self.resample_coarse = BilinearResample(bilinear_matrix(sh.coarse_hw[0], self.factor),
                                                    bilinear_matrix(sh.coarse_hw[1], self.factor))
            # where the layers go in the window: both eyes as one band (they meet at the middle), then the mouth
            left_r, left_c = sh.offset(layout.EYE_PATCH)
            right_r, right_c = sh.offset(right_eye_rect())
            eye_h, eye_w = sh.patch_hw(layout.EYE_PATCH)
            if left_r != right_r or right_c + eye_w != left_c:
                raise ValueError("the eye patches must sit side by side (right eye, then left) in the chart")
            self.eye_band = (right_r - w_row, right_c - w_col, eye_h, 2 * eye_w)
            m_r, m_c = sh.offset(layout.MOUTH_PATCH)
            self.mouth_at = (m_r - w_row, m_c - w_col, *sh.patch_hw(layout.MOUTH_PATCH))
            # --- shading and the frame, in 0..255 with the rounding offset
            self.shader1 = copy.deepcopy(student.shader1)
            shader2 = copy.deepcopy(student.shader2)
            shader2.weight.mul_(255.0)
            shader2.bias.mul_(255.0)
            shader2.bias[3:6] += 0.5
            self.shader2 = shader2
            body = student.body.detach()
            self.register_buffer("body_rgb255", body[:, 0:3] * 255.0)
            self.register_buffer("body_keep", 1.0 - body[:, 3:4])                  # share of the background seen
        q = sh.geo_hw[0]
        # the quarter-size fields the window's pixels interpolate from, and the x4 upsampling cropped to the window
        self.quarter = (max(row // 4 - 1, 0), max(col // 4 - 1, 0),
                        min((row + win) // 4 + 1, q), min((col + win) // 4 + 1, q))
        r0, c0, r1, c1 = self.quarter
        self.resample_fields = BilinearResample(bilinear_matrix(r1 - r0, 4, row - 4 * r0, win),
                                                bilinear_matrix(c1 - c0, 4, col - 4 * c0, win))

    # ------------------------------------------------------------------ the chart

    def chart(self, motion: torch.Tensor) -> torch.Tensor:
        """The chart texture (1, 4, Ht, Wt): albedo and relief."""
        eyes = self.eye(motion)                                                    # (2, 7, h, w)
        # the gaze shifts each eye's grid; subtracted channels-first, where the broadcast runs are long
        shift = self.eye_gaze(motion).view(2, 2, 1)
        h, w = self.eye_grid_t.shape[-2:]
        grid = (self.eye_grid_t.view(1, 2, h * w) - shift).permute(0, 2, 1).reshape(2, h, w, 2)
        ball = F.grid_sample(self.eye_ball, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)                                  # (2, 4, h, w)
        paint = torch.cat([eyes[:, 0:3], torch.cat([eyes[0:1, 3:4], eyes[1:2, 4:5]], 0)], 1)
        opening = torch.sigmoid(self.eye_opening + eyes[:, 6:7])
        cover = torch.sigmoid(eyes[:, 5:6])
        shown = opening * (1.0 - cover)
        layer = torch.cat([ball * shown + paint * cover, (1.0 - opening) * (1.0 - cover)], 1)   # (2, 5, h, w)
        band = torch.cat([torch.flip(layer[1:2], [3]), layer[0:1]], 3)                         # right, left
        mouth = self.mouth(motion)                                                 # (1, 5, h, w)
        mouth_cover = torch.sigmoid(mouth[:, 4:5])
        mouth = torch.cat([mouth[:, 0:4] * mouth_cover, 1.0 - mouth_cover], 1)
        window = self.static4_window + self.resample_coarse(self.coarse(motion))
        for part, (r, c, h, w) in ((band, self.eye_band), (mouth, self.mouth_at)):
            under = window[:, :, r:r + h, c:c + w]
            change = part[:, 0:4] - (1.0 - part[:, 4:5]) * under                  # part over what is there
            window = window + _place(change, (r, c), self.chart_window[2:])
        w_row, w_col, w_h, w_w = self.chart_window
        st = self.static4
        column = torch.cat([st[:, :, :w_row, w_col:w_col + w_w], window, st[:, :, w_row + w_h:, w_col:w_col + w_w]], 2)
        return torch.cat([st[:, :, :, :w_col], column, st[:, :, :, w_col + w_w:]], 3)

    # ------------------------------------------------------------------ the frame

    def forward(self, motion: torch.Tensor, background_rgb: torch.Tensor) -> torch.Tensor:
        row, col, win = self.window
        motion = motion / self.scale
        tex = self.chart(motion)
        fields = self.base_fields + self.geo(motion)                               # (1, 7, S/4, S/4)
        r0, c0, r1, c1 = self.quarter
        full = self.resample_fields(fields[:, :, r0:r1, c0:c1])                     # (1, 7, win, win)
        grid = full[:, 0:2].permute(0, 2, 3, 1)
        looked = F.grid_sample(tex, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        shaded = self.shader2(F.relu(self.shader1(torch.cat([looked[:, 3:4], full[:, 4:7]], 1))))
        head = looked[:, 0:3] * shaded[:, 0:3] + shaded[:, 3:6]                    # 0..255, + 0.5
        bg = background_rgb.view(1, 3, 1, 1)

        def over(r: slice, c: slice, shade: torch.Tensor | None = None) -> torch.Tensor:
            body = self.body_rgb255[:, :, r, c]
            return (body if shade is None else body * shade) + (self.body_keep[:, :, r, c] * bg + 0.5)

        inner_rows, inner_cols = slice(row, row + win), slice(col, col + win)
        under = over(inner_rows, inner_cols, full[:, 3:4])
        inner = under + torch.sigmoid(full[:, 2:3]) * (head - under)
        middle = torch.cat([over(inner_rows, slice(0, col)), inner, over(inner_rows, slice(col + win, None))], 3)
        rgb = torch.cat([over(slice(0, row), slice(None)), middle, over(slice(row + win, None), slice(None))], 2)
        return torch.clamp(rgb, 0.0, 255.0).to(torch.uint8).permute(0, 2, 3, 1)


def weights_path_for(onnx_path: Path) -> Path:
    """engines/renderer_256.onnx -> engines/renderer_256.weights.npz: the trained student the ONNX is made from."""
    return Path(onnx_path).with_name(Path(onnx_path).stem + WEIGHTS_SUFFIX)


def save_weights(student: RendererStudent, path: Path) -> None:
    """The student's parameters as an npz (float16 for the large ones, as the ONNX stores them): what
    ``export_onnx`` and a later fine-tuning start from."""
    arrays = {}
    for name, tensor in student.state_dict().items():
        arr = tensor.detach().cpu().numpy()
        arrays[name] = arr.astype(np.float16) if arr.dtype == np.float32 and arr.size >= 1024 else arr
    # written entry by entry with a fixed timestamp (np.savez stamps the current time): same weights, same bytes
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, arr in arrays.items():
            with archive.open(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)


def load_student(path: Path) -> RendererStudent:
    """A ``RendererStudent`` with the weights in ``path`` (``save_weights``); its size comes from the arrays."""
    try:
        with np.load(path) as z:
            state = {name: torch.from_numpy(z[name].astype(np.float32)) for name in z.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a renderer weights file ({exc})") from exc
    needed = ("static_texture", "body", "base_fields", "eye_ball", "eye_opening", "eye_gaze.weight")
    missing = [n for n in needed if n not in state]
    if missing:
        raise ValueError(f"{path}: renderer weights lack {', '.join(missing)}")
    size = int(state["body"].shape[-1])
    try:
        widths = widths_from_state(state)
    except KeyError as exc:
        raise ValueError(f"{path}: renderer weights lack {exc.args[0]}") from exc
    except IndexError as exc:
        raise ValueError(f"{path}: a decoder's weights have the wrong shape ({exc})") from exc
    try:
        student = RendererStudent(size, static_texture=state["static_texture"][0].numpy(),
                                  body_rgba=state["body"][0].numpy(), base_fields=state["base_fields"][0].numpy(),
                                  eyeball=state["eye_ball"][0].numpy(), eye_opening=state["eye_opening"][0].numpy(),
                                  gaze_weight=state["eye_gaze.weight"].numpy(), widths=widths)
        student.load_state_dict(state)
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ValueError(f"{path}: weights do not fit a {size}px renderer student: {exc}") from exc
    return student.eval()


def export_onnx(student: RendererStudent, path: Path, opset: int = OPSET,
                window_256: tuple[int, int, int] = EXPORT_WINDOW_256) -> None:
    """Write the student as ONNX (``DeployRenderer``): inputs motion (1, 64) float32, background_rgb (3,) float32
    0..255; output image (1, S, S, 3) uint8. Large float32 weights are stored as float16 (a Cast restores
    float32; ONNX Runtime folds it once when the session is created), halving the file."""
    import onnx  # noqa: PLC0415

    deploy = DeployRenderer(student, window_256).eval()
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # the exporter's notes on shape inference and folding
        torch.onnx.export(deploy, (torch.zeros(1, MOTION_FRAME_SIZE), torch.tensor([28.0, 36.0, 52.0])), buffer,
                          input_names=["motion", "background_rgb"], output_names=["image"], opset_version=opset,
                          dynamo=False, do_constant_folding=True)
    model = store_weights_as_float16(merge_consecutive_slices(onnx.load_from_string(buffer.getvalue())))
    model.doc_string = ("edge-avatar neural renderer (student). motion: (1, 64) motion frame layout v1, "
                        "sanitized; background_rgb: (3,) 0..255; image: (1, S, S, 3) uint8 RGB.")
    onnx.checker.check_model(model)
    Path(path).write_bytes(model.SerializeToString())
