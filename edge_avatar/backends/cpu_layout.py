"""The convolution layout ONNX Runtime's CPU provider runs fastest on this very CPU.

Why this module exists: ONNX Runtime's CPU provider runs convolutions in a
blocked channel layout (NCHWc) whose block is 8 channels on an AVX2 CPU and
16 on an AVX-512 CPU (MLAS ``platform.cpp``: ``NchwcBlockSize``). A layer
whose channel count is not a multiple of the block falls out of that layout,
and the graph is reordered back and forth around it. The converted MediaPipe
face mesh has four 8-channel blocks at 128x128: on an AVX-512 CPU they must
be 16 channels wide to stay blocked (the reorders around them were part of a
quarter of the face mesh's profile there, session 5), while on an AVX2 CPU
the same zero channels only double the work of those layers (the face mesh
took 10.2-10.6 ms with them and 9.0-9.6 ms without, BENCHMARKS.md). One
committed file cannot be right
for both, so the files keep the narrowest block any x86 CPU uses (8: the
converter widens to that) and the ONNX Runtime backend widens further, in
memory, when it loads a model on a CPU with a wider block
(``prepare_for_cpu``). Only models that ask for it are touched: the converter
stamps ``WIDEN_KEY`` into the files where the wider block finds runs to
widen, so a model trained by this project (the renderer, the planner) keeps
the layout it was measured in.

Widening is exact in real arithmetic: the added channels hold zeros through
every layer. On a CPU whose block is 8 the widened graph gives bit for bit the
file's outputs (tested); on an AVX-512 CPU the widened layers run in other
kernels than the file's, so sums may round in another order (ulp-level
differences, tested with a tolerance). TensorRT and the INT8 build read the
files as committed.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

WIDEN_KEY = "edge_avatar.widen_channels_to_cpu_block"     # model metadata: "1" where a 16-channel block widens runs
CONVERTED_CHANNEL_MULTIPLE = 8                              # what the committed files are widened to (AVX2's block)
AVX512_CHANNEL_BLOCK = 16


def nchwc_block_channels(cpu_flags: set[str] | None = None, machine: str | None = None) -> int:
    """The channel block of ONNX Runtime's blocked convolutions on this CPU: 16 on an x86 CPU with
    AVX-512F, 8 on other x86 CPUs (MLAS's default block); 0 elsewhere (aarch64: not measured, so nothing
    is widened there). ``cpu_flags``/``machine`` default to /proc/cpuinfo's first "flags" line and
    ``platform.machine()``."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return 0
    flags = read_cpu_flags() if cpu_flags is None else cpu_flags
    return AVX512_CHANNEL_BLOCK if "avx512f" in flags else CONVERTED_CHANNEL_MULTIPLE


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first "flags" line of /proc/cpuinfo as a set (empty where the file is missing: not Linux)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def prepare_for_cpu(model_path: Path, block: int) -> tuple[bytes | None, int]:
    """The model's bytes widened to ``block`` channels, and how many runs were widened; ``(None, 0)`` when
    the file is to be loaded as it is (no wider block, or the model does not carry ``WIDEN_KEY``)."""
    if block <= CONVERTED_CHANNEL_MULTIPLE:
        return None, 0
    import onnx  # noqa: PLC0415 - a core dependency, loaded only on a CPU that needs it

    proto = onnx.load(str(model_path))
    if {p.key: p.value for p in proto.metadata_props}.get(WIDEN_KEY) != "1":
        return None, 0
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for node in proto.graph.node for a in node.attribute):
        return None, 0      # If/Loop/Scan bodies would read tensors this pass does not follow
    fold_weight_casts(proto.graph)
    runs = widen_narrow_channels(proto.graph, block)
    if not runs:
        return None, 0
    logger.info("%s: %d runs of narrow layers widened to %d channels for this CPU's blocked layout",
                model_path.name, runs, block)
    return proto.SerializeToString(), runs


def fold_weight_casts(graph: Any) -> int:
    """Replace each Cast of a float16 initializer to float32 by the float32 initializer itself (the
    converted files store exact float16 weights that way); returns how many were folded. An initializer
    that is also a graph input (a default the caller may override) is left alone."""
    from onnx import TensorProto, numpy_helper  # noqa: PLC0415

    graph_inputs = {v.name for v in graph.input}
    inits = {i.name: i for i in graph.initializer if i.name not in graph_inputs}
    folded, keep, sources = [], [], set()
    for node in graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and to == TensorProto.FLOAT and node.input[0] in inits:
            array = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
            folded.append(numpy_helper.from_array(array, node.output[0]))
            sources.add(node.input[0])
        else:
            keep.append(node)
    if folded:
        used = {name for node in keep for name in node.input} | {o.name for o in graph.output}
        stale = [i for i in graph.initializer if i.name in sources and i.name not in used]
        for init in stale:
            graph.initializer.remove(init)
        graph.initializer.extend(folded)
        del graph.node[:]
        graph.node.extend(keep)
    return len(folded)


def widen_narrow_channels(graph: Any, multiple: int) -> int:
    """Widen each run of layers whose channel count is not a multiple of ``multiple`` with zero channels.

    A run starts at a plain convolution with ``c`` outputs, goes through per-channel layers (Relu,
    BatchNormalization, Add of two tensors of the run, depthwise convolution) and ends at the plain
    convolutions that read it. Each gets ``multiple``-rounded channels: the new output channels have
    zero weights and bias, so they hold exact zeros through every layer of the run (Relu(0) = 0, a
    zero-scale normalisation with variance 1 gives 0, a zero depthwise kernel gives 0), and the reading
    convolutions get zero weights for them. Only "+ 0 * 0" terms are added: computed by the same kernels
    the outputs are bit for bit the same (tested with ONNX Runtime's optimizations off); ONNX Runtime
    then keeps those layers in its NCHWc layout when ``multiple`` is its block.
    A run that meets any other layer is left as it is. Returns how many runs were widened. The weights
    must be initializers (``fold_weight_casts`` first for the committed float16 + Cast files)."""
    from onnx import numpy_helper  # noqa: PLC0415

    inits = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    added: dict[str, Any] = {}
    replaced: set[str] = set()

    def attr(node: Any, name: str, default: int) -> int:
        return next((a.i for a in node.attribute if a.name == name), default)

    def array(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    def padded(name: str, axis: int, size: int, fill: float = 0.0) -> str:
        new_name = f"{name}_pad{size}_{axis}" + ("" if fill == 0.0 else f"_fill{fill:g}")
        replaced.add(name)
        if new_name not in added:
            a = numpy_helper.to_array(inits[name])
            widths = [(0, 0)] * a.ndim
            widths[axis] = (0, size - a.shape[axis])
            added[new_name] = numpy_helper.from_array(np.pad(a, widths, constant_values=fill).astype(a.dtype),
                                                      new_name)
        return new_name

    def constant_bias(node: Any) -> bool:
        return len(node.input) < 3 or not node.input[2] or node.input[2] in inits

    count = 0
    for start in list(graph.node):
        weights = array(start.input[1]) if start.op_type == "Conv" and len(start.input) > 1 else None
        if weights is None or attr(start, "group", 1) != 1 or weights.shape[0] % multiple == 0 \
                or not constant_bias(start):
            continue
        c = weights.shape[0]
        wide = -(-c // multiple) * multiple
        region, inner, readers, ok = {start.output[0]}, [], [], True
        seen: set[int] = set()
        queue = [start.output[0]]
        while queue and ok:
            tensor = queue.pop()
            if tensor in graph_outputs:
                ok = False
                break
            for node in consumers.get(tensor, []):
                if id(node) in seen:
                    continue
                seen.add(id(node))
                w = array(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
                if node.op_type in ("Relu", "Add"):
                    inner.append(node)
                elif node.op_type == "BatchNormalization" and node.input[0] == tensor and all(
                        n in inits and inits[n].dims == [c] for n in node.input[1:5]):
                    inner.append(node)
                elif w is not None and c > 1 and attr(node, "group", 1) == c and w.shape[:2] == (c, 1) \
                        and node.input[0] == tensor and constant_bias(node):
                    inner.append(node)
                elif w is not None and attr(node, "group", 1) == 1 and w.shape[1] == c and node.input[0] == tensor:
                    readers.append(node)
                    continue
                else:
                    ok = False
                    break
                region.add(node.output[0])
                queue.append(node.output[0])
        if not ok or not readers or any(n.op_type == "Add" and not set(n.input) <= region for n in inner):
            continue
        start.input[1] = padded(start.input[1], 0, wide)
        if len(start.input) > 2 and start.input[2]:
            start.input[2] = padded(start.input[2], 0, wide)
        for node in inner:
            if node.op_type == "BatchNormalization":      # scale, bias, mean: 0; variance: 1 (no 0/0)
                for i, fill in ((1, 0.0), (2, 0.0), (3, 0.0), (4, 1.0)):
                    node.input[i] = padded(node.input[i], 0, wide, fill)
            elif node.op_type == "Conv":                  # depthwise: one zero kernel per new channel
                node.input[1] = padded(node.input[1], 0, wide)
                if len(node.input) > 2 and node.input[2]:
                    node.input[2] = padded(node.input[2], 0, wide)
                for a in node.attribute:
                    if a.name == "group":
                        a.i = wide
        for node in readers:
            node.input[1] = padded(node.input[1], 1, wide)
        stale = [v for v in graph.value_info if v.name in region]
        for v in stale:
            graph.value_info.remove(v)
        count += 1
    if count:
        graph.initializer.extend(added.values())
        used = {name for node in graph.node for name in node.input}
        unused = [i for i in graph.initializer if i.name in replaced and i.name not in used]
        for init in unused:
            graph.initializer.remove(init)
    return count
