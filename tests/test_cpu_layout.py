"""The per-CPU channel layout: which block this CPU has, and that widening at load changes no output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_avatar.backends import cpu_layout
from edge_avatar.backends.cpu_layout import (
    WIDEN_KEY,
    fold_weight_casts,
    nchwc_block_channels,
    prepare_for_cpu,
    read_cpu_flags,
)

ENGINES = Path(__file__).resolve().parents[1] / "engines"
FACE_MESH = ENGINES / "face_landmarks_detector.onnx"


@pytest.mark.parametrize(("flags", "machine", "block"), [
    ({"fma", "avx2", "avx512f", "avx512bw"}, "x86_64", 16),
    ({"fma", "avx2"}, "x86_64", 8),
    ({"sse4_2", "avx"}, "x86_64", 8),                   # MLAS's default block on x86
    ({"fma", "avx2", "avx512f"}, "aarch64", 0),          # not an x86 CPU: nothing is widened
])
def test_the_block_follows_the_cpu_flags(flags, machine, block):
    assert nchwc_block_channels(flags, machine) == block


def test_cpu_flags_are_read_from_the_first_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu fma avx2 sse4_2\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n", encoding="utf-8")
    assert read_cpu_flags(cpuinfo) == {"fpu", "fma", "avx2", "sse4_2"}
    assert read_cpu_flags(tmp_path / "missing") == set()


def test_the_committed_face_mesh_keeps_8_channel_layers_and_asks_to_be_widened():
    """The file is laid out for AVX2 (and TensorRT); the manifest and the file agree on what AVX-512 widens."""
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    proto = onnx.load(str(FACE_MESH))
    assert {p.key: p.value for p in proto.metadata_props}.get(WIDEN_KEY) == "1"
    fold_weight_casts(proto.graph)
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    conv_outputs = [inits[n.input[1]].shape[0] for n in proto.graph.node if n.op_type == "Conv"]
    assert conv_outputs.count(8) >= 4
    manifest = json.loads((ENGINES / "manifest.json").read_text(encoding="utf-8"))["models"]
    assert manifest["face_landmarks"]["runs_widened_at_load_on_avx512"] == 4
    assert manifest["face_landmarks"]["narrow_channel_runs_padded"] == 0


def assert_same_numbers(got: np.ndarray, expected: np.ndarray) -> None:
    """Bit for bit where this CPU's block is 8 (both graphs run the same blocked kernels); on an AVX-512 CPU
    the file's 8-channel layers run in other kernels than the widened ones, so sums may round differently."""
    if nchwc_block_channels() == 8:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


def test_widening_the_face_mesh_for_avx512_gives_the_same_numbers():
    import onnxruntime as ort  # noqa: PLC0415

    widened, runs = prepare_for_cpu(FACE_MESH, 16)
    assert runs == 4 and widened is not None
    as_file = ort.InferenceSession(str(FACE_MESH), providers=["CPUExecutionProvider"])
    as_widened = ort.InferenceSession(widened, providers=["CPUExecutionProvider"])
    image = np.random.default_rng(3).random((1, 256, 256, 3), dtype=np.float32)
    name = as_file.get_inputs()[0].name
    for expected, got in zip(as_file.run(None, {name: image}), as_widened.run(None, {name: image})):
        assert_same_numbers(got, expected)


@pytest.mark.parametrize(("model", "block"), [
    (FACE_MESH, 8),                                      # an AVX2 CPU runs the file as it is
    (FACE_MESH, 0),
    (ENGINES / "renderer_256.onnx", 16),                 # a model without the key is never touched
])
def test_a_model_is_loaded_as_it_is_unless_both_the_cpu_and_the_file_ask(model, block):
    assert prepare_for_cpu(model, block) == (None, 0)


def test_the_onnxruntime_backend_widens_at_load_on_an_avx512_cpu(monkeypatch):
    from edge_avatar.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: PLC0415
    from edge_avatar.config import BackendConfig  # noqa: PLC0415

    config = BackendConfig(name="onnxruntime", intra_op_threads=1)
    image = np.random.default_rng(4).random((1, 256, 256, 3), dtype=np.float32)
    monkeypatch.setattr(cpu_layout, "nchwc_block_channels", lambda *a, **k: 8)
    plain = OnnxRuntimeBackend(FACE_MESH, config)
    monkeypatch.setattr(cpu_layout, "nchwc_block_channels", lambda *a, **k: 16)
    wide = OnnxRuntimeBackend(FACE_MESH, config)
    assert plain.io_spec()["channel_runs_widened_for_cpu"] == 0
    assert wide.io_spec()["channel_runs_widened_for_cpu"] == 4
    name = plain.inputs[0].name
    expected, got = plain.run({name: image}), wide.run({name: image})
    for key in expected:
        assert_same_numbers(got[key], expected[key])
    plain.close()
    wide.close()


def test_a_widened_copy_that_fails_to_load_falls_back_to_the_file(monkeypatch, caplog):
    from edge_avatar.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: PLC0415
    from edge_avatar.config import BackendConfig  # noqa: PLC0415

    monkeypatch.setattr(cpu_layout, "prepare_for_cpu", lambda path, block: (b"not an onnx model", 4))
    with caplog.at_level("WARNING"):
        backend = OnnxRuntimeBackend(FACE_MESH, BackendConfig(name="onnxruntime", intra_op_threads=1))
    assert backend.io_spec()["channel_runs_widened_for_cpu"] == 0
    assert "failed to load" in caplog.text and FACE_MESH.name in caplog.text
    assert backend.run(backend.example_feeds())       # the file itself runs
    backend.close()


def tiny_model_with_key(tmp_path: Path, with_subgraph: bool) -> Path:
    """conv 8 -> relu -> conv, float16 weights + Cast, the widening key; optionally an If node."""
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(0, 1, (8, 16, 1, 1)).astype(np.float16), "w_in_fp16"),
             numpy_helper.from_array(rng.normal(0, 1, (16, 8, 1, 1)).astype(np.float32), "w_out")]
    nodes = [helper.make_node("Cast", ["w_in_fp16"], ["w_in"], to=TensorProto.FLOAT),
             helper.make_node("Conv", ["x", "w_in"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w_out"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 3, 3])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 3, 3])]
    if with_subgraph:
        branch = helper.make_graph([helper.make_node("Identity", ["y"], ["z_branch"])], "branch", [],
                                   [helper.make_tensor_value_info("z_branch", TensorProto.FLOAT, [1, 16, 3, 3])])
        inputs.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))
        nodes.append(helper.make_node("If", ["flag"], ["z"], then_branch=branch, else_branch=branch))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 16, 3, 3]))
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.metadata_props.add(key=WIDEN_KEY, value="1")
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def test_a_small_model_with_the_key_is_widened_and_one_with_a_subgraph_is_not(tmp_path):
    widened, runs = prepare_for_cpu(tiny_model_with_key(tmp_path, with_subgraph=False), 16)
    assert runs == 1 and widened is not None
    assert prepare_for_cpu(tiny_model_with_key(tmp_path, with_subgraph=True), 16) == (None, 0)


def test_folding_casts_keeps_initializers_that_are_graph_inputs_and_outputs():
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    half = numpy_helper.from_array(np.ones(4, np.float16), "h")
    override = numpy_helper.from_array(np.ones(4, np.float16), "default")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["h"], ["h32"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["default"], ["d32"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["h32", "d32"], ["y"])], "g",
        [helper.make_tensor_value_info("default", TensorProto.FLOAT16, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT16, [4])], [half, override])
    assert fold_weight_casts(graph) == 1                        # "default" may be overridden: left as a Cast
    names = {i.name for i in graph.initializer}
    assert {"h32", "default", "h"} <= names                     # "h" is also a graph output: kept
    assert [n.op_type for n in graph.node] == ["Cast", "Add"]
