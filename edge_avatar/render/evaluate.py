"""``edge-avatar eval renderer``: the student against the teacher, as numbers and as pictures.

Why this module exists: "PSNR >= 30 dB and SSIM >= 0.95 on held-out motion"
is the renderer's acceptance criterion, and a number alone hides *where* a
network is wrong. This renders held-out motion frames (a seed no training
set uses, plus the named expressions) with both renderers at the configured
size over the configured background, and writes:

- ``sheet_NN.png``: rows of teacher | student | |difference| x 4;
- ``metrics.json``: PSNR and SSIM per frame and their mean / min / 5th
  percentile, the model's file and sha256, the teacher's settings.

The teacher needs OpenCV (it is a training/evaluation tool); the student runs
through the same ``NeuralRenderer`` the loop uses.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_avatar.render.metrics import psnr, ssim

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


def evaluate_renderer(config: Any, frames: int, out_dir: Path, model: str | None = None, supersample: int = 3,
                      seed: int = 2024, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
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

    out_dir.mkdir(parents=True, exist_ok=True)
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
        "per_frame": result["per_frame"],
        "sheets": sheets,
    }
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    student.close()
    return record
