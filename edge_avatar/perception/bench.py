"""``bench perception``: per-frame vision perception latency at 640x480 with tracking, on a real photo sequence.

Why this module exists: the issue's target is p50 under 15 ms per frame on
the 2-core box, and "where did the time go" is answered per stage. The
sequence is real: scikit-image's astronaut portrait composited onto the
coffee photo and moved (translation, in-plane rotation, scale) like a
visitor shifting in front of a kiosk, 30 fps media timestamps, so the
tracker runs as it does live (detection every ``redetect_interval_frames``,
landmark-ROI tracking in between, palm detection every
``hand_detect_interval_frames``). Warm-up frames are not timed; p50/p95 come
from ``backends.summarize_ms``. fp32 at the board's threads and at two, then
the models as ``edge-avatar engines build`` chose them on this machine (its
INT8 builds where they passed verification and were faster); when it chose
fp32 for every model, that run would repeat the first and is not made, and
the choices with their reasons say why. ONNX Runtime threads are reported.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import numpy as np

from edge_avatar.backends import summarize_ms
from edge_avatar.bench import register
from edge_avatar.config import load_config
from edge_avatar.frames import VideoFrame

FRAME_W, FRAME_H = 640, 480
FPS = 30.0
TARGET_P50_MS = 15.0


def astronaut_sequence(count: int, width: int = FRAME_W, height: int = FRAME_H,
                       period_frames: int = 300) -> list[np.ndarray]:
    """``count`` RGB frames: the astronaut moved over the coffee photo (a real face, a real background).

    One cycle of the motion takes ``period_frames`` (10 s at 30 fps): a visitor shifting their weight,
    at most about 3 px per frame, whatever ``count`` is.
    """
    from edge_avatar.perception.geometry import import_cv2  # noqa: PLC0415
    from edge_avatar.perception.material import skimage_image  # noqa: PLC0415

    cv2 = import_cv2()
    person = skimage_image("astronaut")                        # (512, 512, 3)
    background = cv2.resize(skimage_image("coffee"), (width, height), interpolation=cv2.INTER_AREA)
    mask = np.zeros(person.shape[:2], np.uint8)
    cv2.ellipse(mask, (230, 250), (200, 260), 0, 0, 360, 255, -1)  # head and shoulders, soft-edged below
    mask = cv2.GaussianBlur(mask, (31, 31), 0)
    frames = []
    for k in range(count):
        phase = 2 * math.pi * k / period_frames
        angle_deg = 8.0 * math.sin(3 * phase)
        scale = 0.75 + 0.1 * math.sin(2 * phase)
        matrix = cv2.getRotationMatrix2D((230, 200), angle_deg, scale)
        matrix[:, 2] += (width / 2 - 230 + 120 * math.sin(phase), height / 2 - 200 + 40 * math.sin(2 * phase))
        warped = cv2.warpAffine(person, matrix, (width, height))
        alpha = cv2.warpAffine(mask, matrix, (width, height)).astype(np.float32)[:, :, None] / 255.0
        frames.append((alpha * warped + (1 - alpha) * background).astype(np.uint8))
    return frames


def run_sequence(stage: Any, frames: list[np.ndarray], warmup: int) -> dict[str, Any]:
    """Time ``stage.perceive`` per frame; per-stage p50 and tracking counts from ``last_result``."""
    stage.reset()
    per_frame_ms: list[float] = []
    stages: dict[str, list[float]] = {}
    faces_found = detections = 0
    for k, image in enumerate(frames):
        frame = VideoFrame(pts_ns=int(k * 1e9 / FPS), seq=k, image=image)
        start = time.perf_counter_ns()
        stage.perceive(frame, 0.0)
        elapsed_ms = (time.perf_counter_ns() - start) / 1e6
        if k < warmup:
            continue
        result = stage.last_result
        per_frame_ms.append(elapsed_ms)
        faces_found += int(result.active is not None)
        detections += int(result.detection_ran)
        for name, ms in result.stages_ms.items():
            stages.setdefault(name, []).append(ms)
    timed = len(per_frame_ms)
    return {
        "per_frame_ms": summarize_ms(per_frame_ms).to_dict(),
        "stages_ms_p50": {k: round(float(np.percentile(v + [0.0] * (timed - len(v)), 50)), 3)
                          for k, v in stages.items()},
        "stages_ms_mean": {k: round(float(np.sum(v) / timed), 3) for k, v in stages.items()},
        "frames_timed": timed,
        "visitor_found_frac": round(faces_found / max(timed, 1), 3),
        "detection_frames": detections,
    }


@register("perception", "vision perception per frame at 640x480 with tracking (astronaut sequence), fp32")
def bench_perception(quick: bool = False) -> dict[str, Any]:
    from edge_avatar.perception.pipeline import VisionPerception  # noqa: PLC0415

    config = load_config("x86-cpu")
    count, warmup = (60, 10) if quick else (300, 20)
    frames = astronaut_sequence(count + warmup)
    runs: dict[str, Any] = {}
    load_before = os.getloadavg()[0]
    thread_options = sorted({config.backend.intra_op_threads or 1, 2})
    for threads in thread_options:
        backend = dataclasses.replace(config.backend, intra_op_threads=threads)
        stage = VisionPerception(config.perception, backend)
        try:
            runs[f"intra_op_threads={threads}"] = run_sequence(stage, frames, warmup)
        finally:
            stage.close()
    board_key = f"intra_op_threads={config.backend.intra_op_threads or 1}"
    stage = VisionPerception(config.perception, config.backend, root=config)   # the engine build's choices
    try:
        choices = dict(stage.models.choices)
        if any(c["precision"] != "fp32" for c in choices.values()):
            runs["as_built"] = run_sequence(stage, frames, warmup)
        else:
            runs["as_built"] = f"the same models as {board_key}: the engine build chose fp32 for every one"
    finally:
        stage.close()
    p50 = runs[board_key]["per_frame_ms"]["p50_ms"]
    return {
        "frame": f"{FRAME_W}x{FRAME_H}",
        "sequence": "skimage astronaut composited on skimage coffee, moved +-120 px, +-8 deg, scale 0.65-0.85",
        "backend": config.backend.name,
        "precision": "fp32 (runs by threads); as_built: the engine build's choice per model",
        "engine_choices": {name: {"precision": c["precision"], "reason": c["reason"]} for name, c in choices.items()},
        "board_config": "x86-cpu",
        "redetect_interval_frames": config.perception.redetect_interval_frames,
        "hand_detect_interval_frames": config.perception.hand_detect_interval_frames,
        "runs": runs,
        # Other processes on a 2-core box inflate every figure (and 2 threads suffer most): read p50 with this.
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "targets": {"p50_under_15ms_board_threads": p50 < TARGET_P50_MS, "target_p50_ms": TARGET_P50_MS},
    }
