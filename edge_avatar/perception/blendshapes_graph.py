"""MediaPipe's face blendshape network, rewritten as plain matrix products at conversion time.

Why this module exists: the blendshape model is a small MLP-Mixer. The 146
landmarks become 96 tokens, a learned class token is added, four mixer
blocks each mix across the 97 tokens and then across the 64 channels, and a
52-way head reads the class token. tf2onnx writes every dense layer as a 1x1
convolution over a (1, C, 1, W) tensor with transposes between the token and
channel steps, and every layer norm as a dozen elementwise nodes. ONNX
Runtime spent most of its 1.9-2.6 ms per face (one core) moving data between
those layouts around 32 M multiply-adds. Written as matrix products on one
(97 tokens, 64 channels) matrix, with each layer norm in the pattern ONNX
Runtime fuses into its LayerNormalization kernel, the same network runs in
about 1.3 ms (BENCHMARKS.md), and TensorRT sees plain GEMMs.

``mixer_as_matrices`` recognises the network by its weights (the 1x1
convolutions in graph order, the layer-norm scales, the class token), builds
the matrix form, and then runs both graphs in ONNX Runtime on landmark sets
and refuses the result unless the outputs agree within ``MAX_DIFFERENCE``: if
MediaPipe ever changes the network, the conversion stops instead of writing a
different model. The input normalisation (centre and scale the landmarks) is
kept exactly as tf2onnx wrote it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_DIFFERENCE = 1e-5         # blendshape coefficients are 0..1; float32 reassociation is about 1e-6
CHECK_SETS = 16               # landmark sets the two graphs are compared on


class MixerRewriteError(RuntimeError):
    """The graph is not the MLP-Mixer this rewrite knows, or the rewrite does not compute the same numbers."""


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper  # noqa: PLC0415

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _recognise(graph: Any) -> dict[str, Any]:
    """The mixer's weights, read off tf2onnx's graph; ``MixerRewriteError`` where it does not fit."""
    from onnx import numpy_helper  # noqa: PLC0415

    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    if len(convs) < 7 or (len(convs) - 3) % 4:
        raise MixerRewriteError(f"expected 2 + 4 per block + 1 convolutions, found {len(convs)}")
    dense = []
    for conv in convs:
        weight = inits.get(conv.input[1])
        bias = inits.get(conv.input[2]) if len(conv.input) > 2 else None
        if weight is None or bias is None or weight.ndim != 4 or weight.shape[2:] != (1, 1) \
                or _attr(conv, "group", 1) != 1:
            raise MixerRewriteError(f"{conv.name or conv.output[0]}: not a 1x1 dense layer with constant weights")
        dense.append((weight[:, :, 0, 0].astype(np.float32), bias.astype(np.float32)))
    blocks = (len(convs) - 3) // 4
    channels = dense[1][0].shape[0]
    concats = [n for n in graph.node if n.op_type == "Concat"]
    class_token = [inits[n.input[0]] for n in concats if n.input[0] in inits and inits[n.input[0]].size == channels]
    if len(concats) != 1 or len(class_token) != 1:
        raise MixerRewriteError(f"expected one Concat that prepends a {channels}-channel class token")
    scales = [inits[name].reshape(channels).astype(np.float32) for n in graph.node if n.op_type == "Mul"
              for name in n.input if name in inits and inits[name].size == channels]
    if len(scales) != 2 * blocks:
        raise MixerRewriteError(f"expected {2 * blocks} layer-norm scales of {channels}, found {len(scales)}")
    producers = {o: n for n in graph.node for o in n.output}
    epsilons = {float(inits[name].ravel()[0]) for n in graph.node if n.op_type == "Add" for name in n.input
                if name in inits and inits[name].size == 1
                and any(producers.get(x) is not None and producers[x].op_type == "ReduceMean" for x in n.input)}
    if len(epsilons) != 1:
        raise MixerRewriteError(f"expected one layer-norm epsilon, found {sorted(epsilons)}")
    return {"dense": dense, "blocks": blocks, "channels": channels, "tokens": dense[0][0].shape[0] + 1,
            "class_token": class_token[0].reshape(1, channels).astype(np.float32), "scales": scales,
            "epsilon": epsilons.pop(), "first_input": convs[0].input[0]}


def _prefix(graph: Any, tensor: str) -> list[Any]:
    """The nodes ``tensor`` depends on, in graph order (the landmarks' normalisation)."""
    producers = {o: n for n in graph.node for o in n.output}
    needed, queue = set(), [tensor]
    while queue:
        node = producers.get(queue.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            queue.extend(node.input)
    return [n for n in graph.node if id(n) in needed]


def _build(mixer: dict[str, Any]) -> tuple[list[Any], list[Any], str]:
    """Nodes and initializers of the matrix form (rows are tokens, columns channels), and the logits' name."""
    from onnx import helper, numpy_helper  # noqa: PLC0415

    nodes, inits = [], []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.array(array, order="C"), f"mixer/{name}"))   # keeps 0-d as 0-d
        return f"mixer/{name}"

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [f"mixer/{name}"], name=f"mixer/{name}", **attrs))
        return f"mixer/{name}"

    zero = const("zero", np.zeros(mixer["channels"], np.float32))
    eps = const("epsilon", np.array(mixer["epsilon"], np.float32))
    two = const("two", np.array(2.0, np.float32))

    def layer_norm(x: str, scale: np.ndarray, name: str) -> str:
        """Over the channels, in the node pattern ONNX Runtime fuses into one LayerNormalization."""
        mean = node("ReduceMean", [x], f"{name}/mean", axes=[-1])
        centred = node("Sub", [x, mean], f"{name}/centred")
        var = node("ReduceMean", [node("Pow", [centred, two], f"{name}/square")], f"{name}/var", axes=[-1])
        std = node("Sqrt", [node("Add", [var, eps], f"{name}/var_eps")], f"{name}/std")
        normed = node("Div", [centred, std], f"{name}/normed")
        return node("Add", [node("Mul", [normed, const(f"{name}/scale", scale)], f"{name}/scaled"), zero], name)

    def left(w_b: tuple[np.ndarray, np.ndarray], x: str, name: str) -> str:      # across tokens: W @ x + b
        w, b = w_b
        return node("Add", [node("MatMul", [const(f"{name}/w", w), x], f"{name}/mm"), const(f"{name}/b", b[:, None])],
                    name)

    def right(w_b: tuple[np.ndarray, np.ndarray], x: str, name: str) -> str:     # across channels: x @ W^T + b
        w, b = w_b
        return node("Add", [node("MatMul", [x, const(f"{name}/w", w.T)], f"{name}/mm"), const(f"{name}/b", b[None, :])],
                    name)

    dense = mixer["dense"]
    points = node("Reshape", [mixer["first_input"], const("points_shape", np.array([dense[0][0].shape[1], -1],
                                                                                   np.int64))], "points")
    tokens = left(dense[0], points, "tokens")                                  # (96, 2)
    x = right(dense[1], tokens, "embed")                                       # (96, 64)
    x = node("Concat", [const("class_token", mixer["class_token"]), x], "with_class", axis=0)   # (97, 64)
    for b in range(mixer["blocks"]):
        token_mix, token_out, channel_mix, channel_out = dense[2 + 4 * b:6 + 4 * b]
        y = layer_norm(x, mixer["scales"][2 * b], f"block{b}/norm_tokens")
        y = left(token_out, node("Relu", [left(token_mix, y, f"block{b}/token_mix")], f"block{b}/token_relu"),
                 f"block{b}/token_out")
        x = node("Add", [x, y], f"block{b}/after_tokens")
        y = layer_norm(x, mixer["scales"][2 * b + 1], f"block{b}/norm_channels")
        y = right(channel_out, node("Relu", [right(channel_mix, y, f"block{b}/channel_mix")],
                                    f"block{b}/channel_relu"), f"block{b}/channel_out")
        x = node("Add", [x, y], f"block{b}/after_channels")
    head_w, head_b = dense[-1]
    cls = node("Gather", [x, const("class_index", np.array(0, np.int64))], "class", axis=0)   # (64,)
    logits = node("Add", [node("MatMul", [const("head/w", head_w), cls], "head/mm"), const("head/b", head_b)], "head")
    return nodes, inits, logits


def _run(proto: Any, feeds: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort  # noqa: PLC0415

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [session.run(None, {name: f})[0] for f in feeds]


def mixer_as_matrices(proto: Any) -> dict[str, Any]:
    """Rewrite ``proto`` (tf2onnx's blendshape graph, one input, one output) in place; facts for the manifest.

    Raises ``MixerRewriteError`` when the graph is not the known mixer or the rewrite's outputs differ
    from the original's by more than ``MAX_DIFFERENCE`` on ``CHECK_SETS`` landmark sets."""
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise MixerRewriteError("expected one input (the landmarks) and one output (the coefficients)")
    original = onnx.ModelProto()
    original.CopyFrom(proto)
    mixer = _recognise(graph)
    prefix = _prefix(graph, mixer["first_input"])
    nodes, inits, logits = _build(mixer)
    nodes.append(helper.make_node("Sigmoid", [logits], [graph.output[0].name], name="mixer/coefficients"))
    used = {name for n in prefix for name in n.input}
    kept_inits = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend([*prefix, *nodes])
    del graph.initializer[:]
    graph.initializer.extend([*kept_inits, *inits])
    del graph.value_info[:]

    dims = [d.dim_value or 1 for d in graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(2024)
    feeds = []
    for k in range(CHECK_SETS):          # landmark clouds of a face-sized spread at different places and scales
        centre = rng.uniform(100, 500, 2)
        feeds.append((centre + rng.normal(0, 20 + 10 * k, dims)).astype(np.float32))
    difference = max(float(np.abs(a - b).max()) for a, b in zip(_run(original, feeds), _run(proto, feeds)))
    if not difference <= MAX_DIFFERENCE:
        raise MixerRewriteError(f"the matrix form differs from tf2onnx's graph by {difference:.3g} "
                                f"(allowed {MAX_DIFFERENCE:g}); the upstream model changed?")
    return {"form": "mixer as matrix products", "blocks": mixer["blocks"], "tokens": mixer["tokens"],
            "channels": mixer["channels"], "max_abs_difference_vs_tf2onnx": difference,
            "checked_on_landmark_sets": CHECK_SETS}
