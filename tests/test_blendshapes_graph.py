"""The blendshape mixer's matrix form: same numbers as tf2onnx's convolution form, or a refusal that says why.

The conversion itself needs TensorFlow (not here), so these tests build a small mixer in the layout
tf2onnx writes (1x1 convolutions on (1, C, 1, W) tensors, transposes around the token mixing, layer
norms as elementwise nodes) and rewrite that; the committed model is checked against the upstream
.tflite in test_perception_models.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_avatar.perception.blendshapes_graph import MixerRewriteError, mixer_as_matrices  # noqa: E402

ENGINES = Path(__file__).resolve().parents[1] / "engines"
POINTS, TOKENS, CHANNELS, TOKEN_HIDDEN, CHANNEL_HIDDEN, OUTPUTS = 12, 6, 8, 16, 24, 5


def conv_form_mixer(blocks: int = 2, class_token_last: bool = False, head_reads: int = 0, seed: int = 0) -> Any:
    """A mixer as tf2onnx lays it out; ``class_token_last`` appends the token instead, ``head_reads`` is the
    token the head reads (the known network: 0, the class token)."""
    rng = np.random.default_rng(seed)
    nodes: list[Any] = []
    inits: list[Any] = []
    count = [0]

    def const(array: np.ndarray) -> str:
        count[0] += 1
        name = f"c{count[0]}"
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        count[0] += 1
        out = f"n{count[0]}"
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(x: str, n_out: int, n_in: int) -> str:
        w = rng.normal(0, 1 / np.sqrt(n_in), (n_out, n_in, 1, 1)).astype(np.float32)
        return node("Conv", [x, const(w), const(rng.normal(0, 0.1, n_out).astype(np.float32))],
                    kernel_shape=[1, 1])

    def layer_norm(x: str) -> str:                       # over axis 1 of (1, C, 1, N)
        mean = node("ReduceMean", [x], axes=[1])
        centred = node("Sub", [x, mean])
        var = node("ReduceMean", [node("Mul", [centred, centred])], axes=[1])
        inv = node("Reciprocal", [node("Sqrt", [node("Add", [var, const(np.array([[[[1e-6]]]], np.float32))])])])
        gamma = const(rng.uniform(0.5, 1.5, (1, CHANNELS, 1, 1)).astype(np.float32))
        return node("Mul", [node("Mul", [centred, inv]), gamma])

    x = node("Reshape", ["points", const(np.array([1, POINTS, 1, 2], np.int64))])
    x = conv(x, TOKENS, POINTS)                                                   # (1, T, 1, 2)
    x = conv(node("Transpose", [x], perm=[0, 3, 2, 1]), CHANNELS, 2)              # (1, C, 1, T)
    token = const(rng.normal(0, 1, (1, CHANNELS, 1, 1)).astype(np.float32))
    x = node("Concat", [x, token] if class_token_last else [token, x], axis=3)   # (1, C, 1, T + 1)
    for _ in range(blocks):
        y = node("Transpose", [layer_norm(x)], perm=[0, 3, 2, 1])                # (1, T + 1, 1, C)
        y = conv(node("Relu", [conv(y, TOKEN_HIDDEN, TOKENS + 1)]), TOKENS + 1, TOKEN_HIDDEN)
        x = node("Add", [x, node("Transpose", [y], perm=[0, 3, 2, 1])])
        y = conv(node("Relu", [conv(layer_norm(x), CHANNEL_HIDDEN, CHANNELS)]), CHANNELS, CHANNEL_HIDDEN)
        x = node("Add", [x, y])
    first = node("Slice", [x, const(np.array([head_reads], np.int64)), const(np.array([head_reads + 1], np.int64)),
                           const(np.array([3], np.int64))])
    logits = conv(first, OUTPUTS, CHANNELS)
    nodes.append(helper.make_node("Reshape", [node("Sigmoid", [logits]), const(np.array([OUTPUTS], np.int64))],
                                  ["coefficients"]))
    graph = helper.make_graph(nodes, "mixer", [helper.make_tensor_value_info("points", TensorProto.FLOAT,
                                                                            [1, POINTS, 2])],
                              [helper.make_tensor_value_info("coefficients", TensorProto.FLOAT, [OUTPUTS])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def run(proto: Any, points: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"points": points})[0]


def test_the_matrix_form_computes_what_the_convolution_form_does():
    proto = conv_form_mixer()
    original = onnx.ModelProto()
    original.CopyFrom(proto)
    facts = mixer_as_matrices(proto)
    onnx.checker.check_model(proto, full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    assert "Conv" not in ops and "Transpose" not in ops and "MatMul" in ops
    assert facts["blocks"] == 2 and facts["tokens"] == TOKENS + 1 and facts["channels"] == CHANNELS
    points = np.random.default_rng(7).uniform(0, 400, (1, POINTS, 2)).astype(np.float32)
    expected, got = run(original, points), run(proto, points)
    assert got.shape == (OUTPUTS,)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_different_network_is_refused_by_the_numeric_check():
    """The same layers, but the head reads another token: nothing in the shapes tells, the numbers do."""
    with pytest.raises(MixerRewriteError, match="differs from tf2onnx's graph by .* the upstream model changed"):
        mixer_as_matrices(conv_form_mixer(head_reads=3))


def test_a_class_token_appended_instead_of_prepended_is_refused():
    with pytest.raises(MixerRewriteError, match="one Concat that prepends a 8-channel class token"):
        mixer_as_matrices(conv_form_mixer(class_token_last=True))


def test_a_graph_that_is_not_a_mixer_is_refused_by_its_shape():
    proto = conv_form_mixer()
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    proto.graph.node.remove(conv)
    with pytest.raises(MixerRewriteError, match="expected 2 \\+ 4 per block \\+ 1 convolutions, found"):
        mixer_as_matrices(proto)


def test_the_committed_blendshape_model_is_the_matrix_form():
    proto = onnx.load(str(ENGINES / "face_blendshapes.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    assert "Conv" not in ops and "Transpose" not in ops
    facts = json.loads((ENGINES / "manifest.json").read_text(encoding="utf-8"))["models"]["face_blendshapes"]
    assert facts["graph_rewrite"]["blocks"] == 4
    assert facts["graph_rewrite"]["max_abs_difference_vs_tf2onnx"] <= 1e-5
