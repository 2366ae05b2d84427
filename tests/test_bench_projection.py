"""The Jetson projection: MAC counting on graphs with known answers, and the bench's document in quick mode."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_avatar.bench import projection  # noqa: E402


def _weights(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.full(shape, 0.01, np.float32), name)


def _conv_gemm_model() -> onnx.ModelProto:
    """x (1,3,8,8) -> Conv 3x3 pad 1 (4 ch) -> Relu -> depthwise Conv 3x3 (group 4) -> Flatten -> Gemm (256 -> 10)."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=4),
        helper.make_node("Flatten", ["c2"], ["f"]),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_weights("w1", (4, 3, 3, 3)), _weights("b1", (4,)), _weights("w2", (4, 1, 3, 3)),
         _weights("wg", (256, 10)), _weights("bg", (10,))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_macs_of_conv_depthwise_and_gemm_are_exact():
    cost = projection.count_graph_cost(_conv_gemm_model(), {"x": [1, 3, 8, 8]})
    conv = 1 * 4 * 8 * 8 * (3 * 3 * 3)        # every output value: C_in x 3 x 3
    depthwise = 1 * 4 * 8 * 8 * (1 * 3 * 3)   # group 4: one input channel per output
    gemm = 1 * 10 * 256
    assert cost.macs_by_op == {"Conv": conv + depthwise, "Gemm": gemm}
    assert cost.macs == conv + depthwise + gemm == 11776
    assert cost.params == 4 * 27 + 4 + 4 * 9 + 2560 + 10
    assert cost.kernels == 3                  # Relu and Flatten fold into their neighbours
    assert cost.op_histogram == {"Conv": 2, "Relu": 1, "Flatten": 1, "Gemm": 1}


def test_batch_dim_scales_the_count():
    one = projection.count_graph_cost(_conv_gemm_model(), {"x": [1, 3, 8, 8]}).macs
    assert projection.count_graph_cost(_conv_gemm_model(), {"x": [4, 3, 8, 8]}).macs == 4 * one


def test_gru_and_if_branch_taken():
    """A GRU counts 3 gates x H x (input + H) per step; an If counts only the branch the feeds take."""
    hidden, inputs, steps = 4, 5, 2
    gru = helper.make_node("GRU", ["x", "W", "R"], ["", "h"], hidden_size=hidden)
    big = helper.make_graph([helper.make_node("MatMul", ["h2", "big"], ["out_big"])], "then",
                            [], [helper.make_tensor_value_info("out_big", TensorProto.FLOAT, None)],
                            [_weights("big", (hidden, 64))])
    small = helper.make_graph([helper.make_node("MatMul", ["h2", "small"], ["out_small"])], "else",
                              [], [helper.make_tensor_value_info("out_small", TensorProto.FLOAT, None)],
                              [_weights("small", (hidden, 2))])
    graph = helper.make_graph(
        [gru, helper.make_node("Reshape", ["h", "shape"], ["h2"]),
         helper.make_node("If", ["flag"], ["y"], then_branch=big, else_branch=small)],
        "rnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["t", 1, inputs]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_weights("W", (1, 3 * hidden, inputs)), _weights("R", (1, 3 * hidden, hidden)),
         numpy_helper.from_array(np.array([1, hidden], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": np.zeros((steps, 1, inputs), np.float32), "flag": np.array(False)}
    cost = projection.count_graph_cost(model, {"x": [steps, 1, inputs]}, feeds)
    assert cost.macs_by_op == {"GRU": steps * 3 * hidden * (inputs + hidden), "MatMul": hidden * 2}
    assert cost.kernels == steps + 1
    assert any("If" in note for note in cost.notes)


def test_projection_formula_and_ranges():
    nano = projection.DEVICES["orin-nano-8gb"]
    p = projection.project_ms(10**9, 100, nano, "int8")
    # 2 GOPs at 20 dense TOPS x 25 % = 0.4 ms, + 100 x 15 us; high: x 10 %, + 100 x 30 us
    assert p["low"] == pytest.approx(0.4 + 1.5)
    assert p["high"] == pytest.approx(1.0 + 3.0)
    assert projection.project_ms(10**9, 0, nano, "fp16")["low"] == pytest.approx(0.8)
    agx = projection.DEVICES["agx-orin-64gb"]
    assert agx["int8_dense_tops"] == agx["gpu_int8_sparse_tops"] / 2
    assert nano["int8_dense_tops"] == nano["int8_sparse_tops"] / 2


def _projections_are_marked(node, path="") -> list[str]:
    """Paths of dicts under a key naming a projection (or a per-device total) that lack the label."""
    bad: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if ("projected" in key or path.endswith("per_tick")) and isinstance(value, dict):
                if value.get("kind") != projection.KIND:
                    bad.append(f"{path}/{key}")
            bad += _projections_are_marked(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            bad += _projections_are_marked(value, f"{path}[{i}]")
    return bad


def test_bench_runs_quick_and_labels_every_projection():
    from edge_avatar.bench import BENCHMARKS, run_benchmarks

    result = run_benchmarks(["projection"], quick=True)
    trained_512 = (projection.ENGINES_DIR / "renderer_512.onnx").is_file()
    assert "projection" in BENCHMARKS
    doc = result["benchmarks"]["projection"]
    json.dumps(doc)                                    # one JSON document
    assert {"user", "idle", "steal"} <= set(doc["machine_cpu_pct"])   # the machine while it ran
    speed = doc["machine_speed"]                                       # and how fast it was then
    assert speed["probe_ms_before"] > 0 and speed["probe_ms_after"] > 0 and "1 thread" in speed["probe"]
    assert doc["kind"] == projection.KIND == "projection (not measured on a device)"
    for key in ("formula", "devices_published", "assumptions", "models", "per_tick", "listening", "cpu_timing"):
        assert key in doc
    expected = {"emotion", "face_blendshapes", "face_detector", "face_landmarks", "palm_detector",
                "hand_landmarks", "planner", "renderer_256", "renderer_512"}
    assert expected <= set(doc["models"])
    for name, row in doc["models"].items():
        for key in ("macs", "params", "ops_histogram_top", "cpu_ms_p50", "projected_ms"):
            assert key in row, (name, key)
        assert row["macs"] > 0 and row["params"] > 0
        for device in projection.DEVICES:
            for precision in ("int8", "fp16"):
                low_high = row["projected_ms"][device][precision]
                assert 0 < low_high["low"] <= low_high["high"]
        if name != "renderer_512" or trained_512:
            assert row["cpu_ms_p50"] > 0
    # the trained 512 px model, measured; else the 256 px one scaled to 4x the area (marked as an assumption)
    ratio = doc["models"]["renderer_512"]["macs"] / doc["models"]["renderer_256"]["macs"]
    assert 1.5 < ratio < 4.5 if trained_512 else ratio > 3
    for device in ("orin-nano-8gb", "agx-orin-64gb"):
        totals = doc["per_tick"][device]
        assert totals["tick_budget_ms"] == pytest.approx(1000 / 30, abs=1e-3)
        for precision in ("int8", "fp16"):
            high = totals[precision]["high"]
            assert high["tick_worst_ms"] >= high["tick_mean_ms"] > 0
            assert high["headroom_worst_tick_ms"] == pytest.approx(totals["tick_budget_ms"] - high["tick_worst_ms"],
                                                                  abs=1e-2)
    assert doc["per_tick"]["agx-orin-64gb"]["renderer_model"] == "renderer_512"
    assert _projections_are_marked(doc) == []
