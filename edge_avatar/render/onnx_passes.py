"""Graph passes on an exported ONNX model: merging Slices, storing weights as float16, and what a file holds.

Why this module exists: ``render.export`` writes the renderer with torch, but
these passes only need onnx, so they (and their tests) run wherever the
product's core dependencies do, without the ``train`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def export_facts(path: Path) -> dict[str, Any]:
    """What the manifest says of an exported file: its node count and the operators it uses."""
    import onnx  # noqa: PLC0415

    nodes = [n for n in onnx.load(str(path)).graph.node if not n.name.endswith("__cast")]
    return {"nodes": len(nodes), "operators": sorted({n.op_type for n in nodes})}


def merge_consecutive_slices(model: Any) -> Any:
    """Merge each Slice that only feeds another Slice on other axes into it (torch writes ``x[:, :, a:b, c:d]``
    as two Slices, each a copy): exact, one pass over the data fewer.

    Only Slices with all five inputs constant and non-negative axes are merged (what torch writes); a first
    Slice whose output anything else reads (another node, or the graph's output) is kept. Chains merge into one
    Slice, and the pass can run again on its own output."""
    from onnx import numpy_helper  # noqa: PLC0415

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, int] = {}
    for name in [n for node in graph.node for n in node.input] + [o.name for o in graph.output]:
        consumers[name] = consumers.get(name, 0) + 1
    producer = {o: n for n in graph.node for o in n.output}

    def constant(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def constant_args(node: Any) -> list[np.ndarray] | None:
        args = [constant(name) for name in node.input[1:]] if len(node.input) == 5 else [None]
        return None if any(a is None for a in args) else args

    merged = 0
    for node in list(graph.node):
        first = producer.get(node.input[0]) if node.op_type == "Slice" else None
        if first is None or first.op_type != "Slice" or consumers.get(first.output[0]) != 1:
            continue
        a, b = constant_args(first), constant_args(node)
        if a is None or b is None or min(a[2].min(), b[2].min()) < 0 or set(a[2].tolist()) & set(b[2].tolist()):
            continue
        while f"merged_slice_{merged}_starts" in inits:   # unique names, also on a second pass
            merged += 1
        tag = f"merged_slice_{merged}"
        for k, part in enumerate(("starts", "ends", "axes", "steps")):
            joined = numpy_helper.from_array(np.concatenate([a[k], b[k]]).astype(np.int64), f"{tag}_{part}")
            graph.initializer.append(joined)
            inits[joined.name] = joined                 # a third Slice of the chain reads these
            node.input[k + 1] = joined.name
        node.input[0] = first.input[0]
        graph.node.remove(first)
        merged += 1
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)   # the merged Slices' old arguments
    return model


def store_weights_as_float16(model: Any, min_elements: int = 1024) -> Any:
    """Replace each float32 initializer of at least ``min_elements`` by a float16 one plus a Cast node."""
    import onnx  # noqa: PLC0415
    from onnx import helper, numpy_helper  # noqa: PLC0415

    graph = model.graph
    keep, casts = [], []
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size >= min_elements:
            half_name = init.name + "__fp16"
            keep.append(numpy_helper.from_array(arr.astype(np.float16), half_name))
            casts.append(helper.make_node("Cast", [half_name], [init.name], to=onnx.TensorProto.FLOAT,
                                          name=init.name + "__cast"))
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return model
