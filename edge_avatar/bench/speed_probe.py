"""How fast the machine is right now: one fixed small network timed before and after each benchmark.

Why this module exists: on the 2-core development VM the same model takes up
to half again as long at some moments as at others, with no steal and
nothing else running (measured over 75 s, one model after another: the
renderer 8.1-13.2 ms, the face mesh 7.1-10.5 ms). ``machine_cpu_pct``
cannot show that (the CPU is busy either way, only slower), so a figure
could come from a fast or a slow stretch and nobody could tell. The probe is
a fixed convolution network shaped like the project's models (a 3x3
convolution, a pointwise one, a depthwise one, a pointwise one, on a 64x64
map of 32 channels; about 57 M multiply-adds, fixed weights), run in ONNX
Runtime on one thread, before and after each benchmark. It is a rough
yardstick: over those 75 s its time correlated 0.57-0.68 with the
renderer's and 0.39-0.47 with the face mesh's (the two models 0.54-0.67
with each other), so a probe well above its usual value marks a slow
stretch, not a correction factor. It compares this machine with itself over
time, not machines with each other.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

PROBE_SHAPE = (1, 32, 64, 64)        # (N, C, H, W) of the probe's input
PROBE_RUNS = 40                      # timed runs per probe (about 0.1-0.2 s on the development box)
PROBE_WARMUP = 5


def probe_model_bytes() -> bytes:
    """The probe network as ONNX bytes (opset 13): conv 3x3 32->32, Relu, conv 1x1 32->64, Relu,
    depthwise 3x3 on 64, Relu, conv 1x1 64->32; weights from a fixed seed."""
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415 - onnx is a core dependency

    rng = np.random.default_rng(20261207)

    def weights(name: str, shape: tuple[int, ...]) -> Any:
        fan_in = int(np.prod(shape[1:]))
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)

    c = PROBE_SHAPE[1]
    inits = [weights("w1", (c, c, 3, 3)), weights("w2", (2 * c, c, 1, 1)), weights("w3", (2 * c, 1, 3, 3)),
             weights("w4", (c, 2 * c, 1, 1))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["a3"], pads=[1, 1, 1, 1], group=2 * c),
        helper.make_node("Relu", ["a3"], ["r3"]),
        helper.make_node("Conv", ["r3", "w4"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "speed_probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                   list(PROBE_SHAPE))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(PROBE_SHAPE))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


class SpeedProbe:
    """One ONNX Runtime session of the probe network, on one thread; ``measure`` gives its p50 in ms."""

    def __init__(self) -> None:
        import onnxruntime as ort  # noqa: PLC0415

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(probe_model_bytes(), options, providers=["CPUExecutionProvider"])
        self._x = np.random.default_rng(1).standard_normal(PROBE_SHAPE).astype(np.float32)

    def measure(self, runs: int = PROBE_RUNS) -> float:
        """p50 wall time of one run, ms."""
        for _ in range(PROBE_WARMUP):
            self._session.run(None, {"x": self._x})
        times = []
        for _ in range(max(1, runs)):
            start = time.perf_counter_ns()
            self._session.run(None, {"x": self._x})
            times.append((time.perf_counter_ns() - start) / 1e6)
        return round(float(np.median(times)), 3)


def speed_record(before_ms: float | None, after_ms: float | None) -> dict[str, Any]:
    """The ``machine_speed`` entry of a benchmark: the probe's p50 before and after it ran (None: no probe)."""
    return {"probe_ms_before": before_ms, "probe_ms_after": after_ms,
            "probe": f"fixed conv net {PROBE_SHAPE}, ~57 M MACs, ONNX Runtime, 1 thread, p50 of {PROBE_RUNS} runs "
                     "(edge_avatar/bench/speed_probe.py): higher = a slower minute of this machine"}
