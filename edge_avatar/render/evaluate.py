"""``edge-avatar eval renderer``: the student against the teacher, as numbers and as pictures.

Why this module exists: "PSNR >= 30 dB and SSIM >= 0.95 on held-out motion"
is the renderer's acceptance criterion, and a number alone hides *where* a
network is wrong. This renders held-out motion frames (a seed no training
set uses, plus the named expressions) with both renderers at the configured
size over the configured background, and writes:

- ``sheet_NN.png``: rows of teacher | student | |difference| x 4;
- ``eyes.png``: the eyes magnified, teacher | student, through a blink
  (open, a quarter, half, three quarters, closed), a wink and the gaze's
  four directions -- the part of a face people look at first;
- ``metrics.json``: PSNR and SSIM per frame and their mean / min / 5th
  percentile, the white of the eyes (``metrics.eye_white_px``) of both
  renderers through that blink, the model's file and sha256, the teacher's
  settings;
- with ``--int8``, ``int8.json``: the student quantized to INT8 (ONNX
  Runtime static quantization, Q/DQ, calibrated on sampled motion) against
  the teacher next to the fp32 student, per quantization variant, with its
  CPU speed (``evaluate_int8``).

The teacher needs OpenCV (it is a training/evaluation tool); the student runs
through the same ``NeuralRenderer`` the loop uses.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_avatar.render.metrics import eye_white_px, psnr, ssim

log = logging.getLogger(__name__)

DIFF_GAIN = 4.0
ROWS_PER_SHEET = 4


def held_out_motion(count: int, seed: int) -> np.ndarray:
    from edge_avatar.render.sampler import MotionSampler  # noqa: PLC0415

    return MotionSampler(seed).batch(count)


def compare(teacher_images: list[np.ndarray], student_images: list[np.ndarray]) -> dict[str, Any]:
    p = [psnr(t, s) for t, s in zip(teacher_images, student_images)]
    q = [ssim(t, s) for t, s in zip(teacher_images, student_images)]

    def summary(values: list[float]) -> dict[str, float]:
        arr = np.asarray(values, np.float64)
        return {"mean": round(float(arr.mean()), 4), "min": round(float(arr.min()), 4),
                "p5": round(float(np.percentile(arr, 5)), 4)}

    return {"psnr_db": summary(p), "ssim": summary(q), "per_frame": [
        {"psnr_db": round(a, 3), "ssim": round(b, 5)} for a, b in zip(p, q)]}


def sheet(rows: list[tuple[np.ndarray, np.ndarray]], labels: list[str]) -> np.ndarray:
    """(teacher, student) pairs -> one image: teacher | student | amplified difference per row."""
    import cv2  # noqa: PLC0415

    out = []
    for (t, s), label in zip(rows, labels):
        diff = np.clip(np.abs(t.astype(np.int16) - s.astype(np.int16)) * DIFF_GAIN, 0, 255).astype(np.uint8)
        row = np.concatenate([t, s, diff], axis=1).copy()
        w = t.shape[1]
        for i, text in enumerate(("teacher", "student", f"|diff| x{DIFF_GAIN:g}")):
            cv2.putText(row, text, (i * w + 5, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                        cv2.LINE_AA)
        cv2.putText(row, label, (5, t.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                    cv2.LINE_AA)
        out.append(row)
    return np.concatenate(out, axis=0)


def eye_motions() -> dict[str, np.ndarray]:
    """Labelled motion frames that exercise the eyes: a blink in five steps, a wink, the gaze's four directions."""
    from edge_avatar.motion import BLENDSHAPE_INDEX, neutral_motion  # noqa: PLC0415

    out: dict[str, np.ndarray] = {}
    for blink in (0.0, 0.25, 0.5, 0.75, 1.0):
        m = neutral_motion()
        m[BLENDSHAPE_INDEX["eyeBlinkLeft"]] = m[BLENDSHAPE_INDEX["eyeBlinkRight"]] = blink
        out[f"blink {blink:g}"] = m
    m = neutral_motion()
    m[BLENDSHAPE_INDEX["eyeBlinkLeft"]] = 1.0
    out["wink (left)"] = m
    for name, (yaw, pitch) in (("gaze left", (-25.0, 0.0)), ("gaze right", (25.0, 0.0)), ("gaze up", (0.0, 20.0)),
                               ("gaze down", (0.0, -20.0))):
        m = neutral_motion()
        m[55:59] = (yaw, pitch, yaw, pitch)
        out[name] = m
    return out


EYE_SHEET_BOX = (0.27, 0.47, 0.30, 0.70)   # rows top/bottom, columns left/right (fractions): both eyes at rest
EYE_SHEET_ZOOM = 3


def eye_sheet(rows: list[tuple[np.ndarray, np.ndarray]], labels: list[str]) -> np.ndarray:
    """Teacher | student crops of the eyes, magnified (nearest neighbour, so pixels stay pixels)."""
    import cv2  # noqa: PLC0415

    out = []
    for (t, s), label in zip(rows, labels):
        h, w = t.shape[:2]
        r0, r1, c0, c1 = (int(EYE_SHEET_BOX[0] * h), int(EYE_SHEET_BOX[1] * h), int(EYE_SHEET_BOX[2] * w),
                          int(EYE_SHEET_BOX[3] * w))
        pair = [cv2.resize(img[r0:r1, c0:c1], None, fx=EYE_SHEET_ZOOM, fy=EYE_SHEET_ZOOM,
                           interpolation=cv2.INTER_NEAREST) for img in (t, s)]
        row = np.concatenate([pair[0], np.zeros((pair[0].shape[0], 4, 3), np.uint8), pair[1]], axis=1)
        cv2.putText(row, f"{label}: teacher | student", (5, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                    cv2.LINE_AA)
        out.append(row)
    return np.concatenate(out, axis=0)


def evaluate_renderer(config: Any, frames: int, out_dir: Path, model: str | None = None, supersample: int = 3,
                      seed: int = 2024, progress: Callable[[str], None] | None = None,
                      int8: bool = False) -> dict[str, Any]:
    import cv2  # noqa: PLC0415

    from edge_avatar.render.neural import NeuralRenderer  # noqa: PLC0415
    from edge_avatar.render.sampler import named_expressions  # noqa: PLC0415
    from edge_avatar.render.teacher import TeacherRenderer  # noqa: PLC0415

    size = config.render.width_px
    background = tuple(config.display.background_rgb)
    student = NeuralRenderer(size, config.render.height_px, background, config.backend, model_path=model)
    teacher = TeacherRenderer(size, config.render.height_px, supersample, background)
    named = named_expressions()
    motions = list(held_out_motion(frames, seed))
    labels = [f"held-out #{i}" for i in range(frames)]
    t_imgs, s_imgs = [], []
    for i, m in enumerate(motions):
        t_imgs.append(teacher.render(m))
        s_imgs.append(student.render(m))
        if progress and (i + 1) % 8 == 0:
            progress(f"eval renderer: {i + 1}/{frames} held-out frames")
    result = compare(t_imgs, s_imgs)
    n_t, n_s = [teacher.render(m) for m in named.values()], [student.render(m) for m in named.values()]
    named_result = compare(n_t, n_s)
    eyes = eye_motions()
    e_t, e_s = [teacher.render(m) for m in eyes.values()], [student.render(m) for m in eyes.values()]

    out_dir.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_dir / "eyes.png"), eye_sheet(list(zip(e_t, e_s)), list(eyes))[..., ::-1])
    all_rows = list(zip(n_t, n_s)) + list(zip(t_imgs, s_imgs))
    all_labels = list(named) + labels
    sheets = []
    for k in range(0, len(all_rows), ROWS_PER_SHEET):
        path = out_dir / f"sheet_{k // ROWS_PER_SHEET:02d}.png"
        image = sheet(all_rows[k:k + ROWS_PER_SHEET], all_labels[k:k + ROWS_PER_SHEET])
        cv2.imwrite(str(path), image[..., ::-1])
        sheets.append(path.name)
    data = Path(student.model_path).read_bytes()
    record = {
        "frames": frames,
        "seed": seed,
        "size_px": size,
        "background_rgb": list(background),
        "model": str(student.model_path),
        "model_sha256": hashlib.sha256(data).hexdigest(),
        "teacher_supersample": supersample,
        "psnr_db": result["psnr_db"],
        "ssim": result["ssim"],
        "named_expressions": {name: v for name, v in zip(named, named_result["per_frame"])},
        "eye_white_px": {name: {"teacher": list(eye_white_px(t)), "student": list(eye_white_px(s))}
                         for name, t, s in zip(eyes, e_t, e_s)},
        "per_frame": result["per_frame"],
        "sheets": sheets + ["eyes.png"],
    }
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    student.close()
    if int8:
        int8_record = evaluate_int8(student.model_path, motions, t_imgs, s_imgs, background, out_dir,
                                    progress=progress)
        (out_dir / "int8.json").write_text(json.dumps(int8_record, indent=2) + "\n")
        record["int8"] = int8_record
    return record


# ---------------------------------------------------------------------- INT8


INT8_CALIBRATION_SEED = 3031      # calibration motion: a seed no training or evaluation set uses
INT8_CALIBRATION_FRAMES = 128
INT8_EXTREMES_SHARE = 0.25        # of the calibration frames: range ends (closed eyes, open jaw), so their
                                  # activations are inside the calibrated ranges too
_GEOMETRY = ("geo/fc1", "geo/fc2", "geo/conv1", "geo/conv2", "geo/out", "eye_gaze")
# What stays in float (``quantize_int8``'s ``keep_float``: layer names, as in ``RendererStudent``). Measured
# one layer at a time on the 256 px student (8 held-out frames): what says *where* to sample is the sensitive
# part -- the geometry decoder's output is the sampling grid, which must land within a texel of 384 (int8
# resolves 1/127 of its range): INT8 in geo/out alone costs 11 dB, in geo/conv2 0.6 dB, and its five layers
# together far more than each alone; the eye decoder's last layer (eye/out: colours, coverage and the opening's
# logit in one tensor, one activation scale) costs 2.2 dB; every other texture and shader layer < 0.2 dB.
INT8_VARIANTS: dict[str, tuple[str, ...]] = {
    "all": (),                                                     # every weighted layer but the output heads
    "ends_fp32": ("fc1", "out", "shader2"),                        # first and last layer of every part in float
    "geometry_fp32": _GEOMETRY,                                    # the geometry decoder and the gaze shift
    "geometry_eyes_fp32": _GEOMETRY + ("eye/out",),                # ... and the eye decoder's last layer
}
INT8_RECOMMENDED = "geometry_eyes_fp32"


def calibration_motion(count: int, seed: int = INT8_CALIBRATION_SEED) -> np.ndarray:
    """(count, 64): conversation-like frames with a share of range ends, from the training sampler."""
    from edge_avatar.render.sampler import MotionSampler  # noqa: PLC0415

    ends = int(round(count * INT8_EXTREMES_SHARE))
    usual = MotionSampler(seed).batch(count - ends)
    if not ends:
        return usual
    return np.concatenate([usual, MotionSampler(seed + 1, "extremes").batch(ends)], 0)


def quantize_int8(source: str | Path, out_path: str | Path, motions: np.ndarray,
                  background_rgb: tuple[int, int, int], keep_float: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write an INT8 Q/DQ copy of the renderer ``source`` to ``out_path``; returns what was done.

    Exactly what ``edge-avatar engines build`` makes (``edge_avatar.engines.quantize.quantize_int8``: QDQ,
    int8 symmetric activations and per-channel weights, MinMax ranges, Conv/Gemm/MatMul only, so
    GridSample, Resize, the fixed upsamplings (``resample_*``) and the compositing stay float),
    calibrated on ``motions`` rendered over ``background_rgb``. The layers named in ``keep_float`` stay
    in float: "geo/out" is the geometry decoder's last layer, "out" the last layer of every decoder,
    "shader2" the shader's last; the build takes its list from the renderer manifest's ``quantization.keep_float``.
    """
    from edge_avatar.engines.calibration import CalibrationData  # noqa: PLC0415
    from edge_avatar.engines.quantize import quantize_int8 as quantize_model  # noqa: PLC0415

    background = np.asarray(background_rgb, np.float32).reshape(3)
    feeds = [{"motion": m.reshape(1, -1).astype(np.float32), "background_rgb": background} for m in motions]
    data = CalibrationData("renderer", feeds, [], f"{len(feeds)} motion frames", "")
    facts = quantize_model("renderer", Path(source), data, Path(out_path), tuple(keep_float))
    floats = facts["float_heads"] + facts["float_layers"] + facts["float_resampling"]
    return {"calibration_frames": len(feeds), "weighted_nodes": facts["weighted_nodes"],
            "int8_nodes": facts["weighted_nodes"] - len(floats), "float_nodes": floats,
            "bytes": Path(out_path).stat().st_size}


def evaluate_int8(model: str | Path, motions: list[np.ndarray], teacher_images: list[np.ndarray],
                  fp32_images: list[np.ndarray], background_rgb: tuple[int, int, int], out_dir: Path,
                  variants: dict[str, tuple[str, ...]] | None = None, calibration_frames: int = INT8_CALIBRATION_FRAMES,
                  timing_iterations: int = 200, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """INT8 against fp32, both against the teacher: PSNR/SSIM of each quantization variant and its CPU speed.

    Each variant is measured twice: through ONNX Runtime's CPU kernels (what this machine runs) and as the
    exact Q/DQ graph (``edge_avatar.engines.build.run_qdq_reference``: what an INT8 TensorRT engine
    computes). Speed is one thread, the fp32 model and every variant timed in turns on the same held-out
    frames.
    """
    from dataclasses import replace  # noqa: PLC0415

    from edge_avatar.config import BackendConfig  # noqa: PLC0415
    from edge_avatar.engines.bench import time_interleaved_ms  # noqa: PLC0415
    from edge_avatar.engines.build import run_qdq_reference  # noqa: PLC0415
    from edge_avatar.motion import sanitize_motion  # noqa: PLC0415
    from edge_avatar.render.neural import NeuralRenderer  # noqa: PLC0415

    size = teacher_images[0].shape[0]
    variants = INT8_VARIANTS if variants is None else variants
    fp32 = compare(teacher_images, fp32_images)
    cal = calibration_motion(calibration_frames)
    backend = replace(BackendConfig(name="onnxruntime"), intra_op_threads=1)
    renderers = {"fp32": NeuralRenderer(size, size, background_rgb, backend, model_path=model)}
    background = np.asarray(background_rgb, np.float32).reshape(3)
    exact_feeds = [{"motion": sanitize_motion(np.asarray(m, np.float32).reshape(-1))[0].reshape(1, -1),
                    "background_rgb": background} for m in motions]   # what NeuralRenderer feeds, unoptimised
    record: dict[str, Any] = {
        "calibration": {"frames": len(cal), "seed": INT8_CALIBRATION_SEED, "extremes_share": INT8_EXTREMES_SHARE,
                        "sampler": "edge_avatar.render.sampler.MotionSampler"},
        "recipe": "onnxruntime quantize_static: QDQ, int8 symmetric activations, int8 symmetric per-channel "
                  "weights, MinMax, Conv/Gemm/MatMul, output heads in float (edge_avatar.engines.quantize)",
        "fp32": {"psnr_db": fp32["psnr_db"], "ssim": fp32["ssim"]},
        "variants": {},
    }
    try:
        for name, keep in variants.items():
            path = out_dir / f"renderer_{size}.int8-{name.replace('/', '-')}.onnx"
            if progress:
                progress(f"eval renderer --int8: quantizing ({name})")
            facts = quantize_int8(model, path, cal, background_rgb, keep)
            renderers[name] = NeuralRenderer(size, size, background_rgb, backend, model_path=path)
            cpu = compare(teacher_images, [renderers[name].render(m) for m in motions])
            exact = compare(teacher_images, [out["image"][0] for out in run_qdq_reference(path, exact_feeds)])
            record["variants"][name] = {
                **facts, "file": path.name,
                "cpu_kernels": _int8_quality(cpu, fp32), "exact_qdq": _int8_quality(exact, fp32),
            }
        if progress:
            progress("eval renderer --int8: timing fp32 and INT8 (1 thread, interleaved)")
        def runner(r: Any) -> Callable[[Any], Any]:
            frames = itertools.cycle(motions)   # each candidate walks the same held-out frames

            def run(_: Any) -> Any:
                return r.render(next(frames))
            return run

        timing = time_interleaved_ms({n: runner(r) for n, r in renderers.items()}, {}, warmup=10,
                                     iterations=timing_iterations)
        record["cpu_ms_1_thread"] = {n: {k: t[k] for k in ("min_ms", "p50_ms", "p95_ms")} for n, t in timing.items()}
        record["within_1_db"] = {n: v["cpu_kernels"]["psnr_cost_db"] <= 1.0 and v["exact_qdq"]["psnr_cost_db"] <= 1.0
                                 for n, v in record["variants"].items()}
        record["recommended"] = INT8_RECOMMENDED if INT8_RECOMMENDED in record["variants"] else None
    finally:
        for r in renderers.values():
            r.close()
    return record


def _int8_quality(int8: dict[str, Any], fp32: dict[str, Any]) -> dict[str, Any]:
    return {"psnr_db": int8["psnr_db"], "ssim": int8["ssim"],
            "psnr_cost_db": round(fp32["psnr_db"]["mean"] - int8["psnr_db"]["mean"], 3),
            "ssim_cost": round(fp32["ssim"]["mean"] - int8["ssim"]["mean"], 5),
            "worst_frame_psnr_cost_db": round(max(a["psnr_db"] - b["psnr_db"] for a, b in
                                                  zip(fp32["per_frame"], int8["per_frame"])), 3)}
