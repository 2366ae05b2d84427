"""``edge-avatar bench renderer``: how fast the student draws a frame, and how close it is to the teacher.

Why this module exists: the renderer's two acceptance numbers -- p50 under
10 ms per 256x256 frame in ONNX Runtime on the 2-core box, and PSNR >= 30 dB
/ SSIM >= 0.95 against the teacher on held-out motion -- must be measured
the same way every time and land in one JSON with the machine named. The
student runs through ``NeuralRenderer`` exactly as the loop calls it (motion
sanitising included), warmed up, on held-out motion frames, at the backend's
configured thread count (1 on x86-cpu: the other stages share the cores) and
at 2 threads. Wall time is reported with CPU time per frame and the load
average, because the development box is shared and wall time alone would
blame the renderer for its neighbours.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from edge_avatar.bench import register
from edge_avatar.config import load_config

EVAL_SEED = 2024


def _timed(fn, frames: list[np.ndarray], repeats: int) -> dict[str, float]:
    wall, cpu = [], []
    for r in range(repeats):
        m = frames[r % len(frames)]
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        fn(m)
        wall.append((time.perf_counter_ns() - t0) / 1e6)
        cpu.append((time.thread_time_ns() - c0) / 1e6)
    w, c = np.asarray(wall), np.asarray(cpu)
    return {"count": repeats, "min_ms": round(float(w.min()), 3), "p50_ms": round(float(np.percentile(w, 50)), 3),
            "p95_ms": round(float(np.percentile(w, 95)), 3), "cpu_p50_ms": round(float(np.percentile(c, 50)), 3)}


@register("renderer", "neural renderer: ms per 256x256 frame (ONNX Runtime), teacher ms, PSNR/SSIM vs teacher")
def bench_renderer(quick: bool = False) -> dict[str, Any]:
    from dataclasses import replace  # noqa: PLC0415

    from edge_avatar.render.evaluate import compare, held_out_motion  # noqa: PLC0415
    from edge_avatar.render.neural import NeuralRenderer  # noqa: PLC0415

    config = load_config("x86-cpu")
    size = config.render.width_px
    background = tuple(config.display.background_rgb)
    motions = list(held_out_motion(16 if quick else 48, EVAL_SEED))
    load_before = os.getloadavg()[0]

    speed: dict[str, Any] = {}
    student_images: list[np.ndarray] = []
    for threads in sorted({config.backend.intra_op_threads or 1, 2}):
        backend = replace(config.backend, intra_op_threads=threads)
        renderer = NeuralRenderer(size, size, background, backend)
        for m in motions[:10]:
            renderer.render(m)                                     # warm-up beyond the backend's own
        speed[f"threads_{threads}"] = _timed(renderer.render, motions, 100 if quick else 400)
        if not student_images:
            student_images = [renderer.render(m) for m in motions]
        model = str(renderer.model_path)
        renderer.close()

    result: dict[str, Any] = {
        "size_px": size,
        "model": model,
        "configured_threads": config.backend.intra_op_threads,
        "student_ms": speed,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    try:
        from edge_avatar.render.teacher import TeacherRenderer  # noqa: PLC0415 - needs OpenCV
    except ImportError as exc:
        result["teacher"] = f"skipped: {exc}"
        return result
    teacher = TeacherRenderer(size, size, 3, background)
    teacher_images = [teacher.render(m) for m in motions]
    result["teacher_ms"] = _timed(teacher.render, motions, 5 if quick else 20)
    quality = compare(teacher_images, student_images)
    result["quality"] = {"held_out_frames": len(motions), "seed": EVAL_SEED, "teacher_supersample": 3,
                         "psnr_db": quality["psnr_db"], "ssim": quality["ssim"]}
    result["speedup_vs_teacher_p50"] = round(result["teacher_ms"]["p50_ms"] / speed[f"threads_{threads}"]["p50_ms"], 1)
    return result
