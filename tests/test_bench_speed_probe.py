"""The speed probe: a fixed network whose timing places a benchmark in a fast or a slow minute of the machine."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from edge_avatar.bench.speed_probe import PROBE_SHAPE, SpeedProbe, probe_model_bytes, speed_record


def test_the_probe_is_the_same_network_every_time_and_computes_what_it_says():
    first, second = probe_model_bytes(), probe_model_bytes()
    assert first == second                                   # fixed weights: one yardstick across runs
    model = onnx.load_from_string(first)
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu", "Conv", "Relu", "Conv", "Relu", "Conv"]
    x = np.random.default_rng(2).standard_normal(PROBE_SHAPE).astype(np.float32)
    y = ort.InferenceSession(first, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert y.shape == PROBE_SHAPE and np.isfinite(y).all() and float(np.abs(y).mean()) > 1e-3
    # the multiply-adds the docstring states: 3x3 conv, 1x1 to twice the channels, depthwise 3x3, 1x1 back
    c, h, w = PROBE_SHAPE[1:]
    macs = h * w * (c * c * 9 + c * 2 * c + 2 * c * 9 + 2 * c * c)
    assert 55e6 < macs < 59e6


def test_a_measurement_is_a_positive_time_and_the_record_keeps_both():
    probe = SpeedProbe()
    ms = probe.measure(runs=5)
    assert ms > 0
    record = speed_record(ms, None)
    assert record["probe_ms_before"] == ms and record["probe_ms_after"] is None
    assert "speed_probe.py" in record["probe"]
