"""Latency of each model per backend and precision, measured so that a busy 2-core box still gives fair numbers.

Why this module exists: on a CPU, INT8 is often *slower* than fp32 (no VNNI,
depthwise convolutions, the Q/DQ overhead), and on a Jetson the answer
depends on the GPU, the DLA and the power mode. So the runtime does not
guess: it times every candidate on this machine and picks the fastest one
that verified. Candidates are timed interleaved (one call of each in turn,
after a warm-up), so a background load slows them alike instead of
penalising whichever ran last; p50 and p95 come from ``backends.summarize_ms``.
The thread count is the board config's (``backend.intra_op_threads``).

``bench engines`` registers this with ``edge-avatar bench`` (one JSON for
BENCHMARKS.md); ``edge-avatar engines bench --json`` runs it for a chosen board.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edge_avatar.backends import summarize_ms
from edge_avatar.bench import register

log = logging.getLogger(__name__)

Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def time_interleaved_ms(runners: Mapping[str, Runner], feeds: Mapping[str, np.ndarray], warmup: int = 10,
                        iterations: int = 50) -> dict[str, dict[str, float]]:
    """Per candidate: min/p50/p95/max/mean ms of ``iterations`` calls on ``feeds``, taken in turns after ``warmup``."""
    for _ in range(max(warmup, 1)):
        for run in runners.values():
            run(feeds)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(max(iterations, 1)):
        for name, run in runners.items():
            start_ns = time.perf_counter_ns()
            run(feeds)
            samples[name].append((time.perf_counter_ns() - start_ns) / 1e6)
    return {name: {k: round(v, 4) if isinstance(v, float) else v for k, v in summarize_ms(s).to_dict().items()}
            for name, s in samples.items()}


@register("engines", "per model: fp32 vs INT8 Q/DQ (and TensorRT engines where present), p50/p95 ms")
def bench_engines_default(quick: bool) -> dict[str, Any]:
    """The built candidates of the default board (x86-cpu), timed; builds what is missing first."""
    from edge_avatar.config import load_config  # noqa: PLC0415
    from edge_avatar.engines.build import BuildOptions, bench_engines  # noqa: PLC0415
    from edge_avatar.engines.calibration import CalibrationOptions  # noqa: PLC0415

    config = load_config()
    calibration = CalibrationOptions(frames=8, held_out_frames=6) if quick else CalibrationOptions()
    options = BuildOptions(calibration=calibration, bench_iterations=10 if quick else 60,
                           bench_warmup=3 if quick else 10)
    return bench_engines(config, options, progress=None)
