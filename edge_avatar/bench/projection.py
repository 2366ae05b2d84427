"""``bench projection``: a paper projection of what a tick costs on Jetson Orin Nano 8GB and AGX Orin 64GB.

Why this module exists: no Jetson has been available to this project yet,
but the product's choices (perception stride, render size, INT8 vs fp16)
have to be made against something better than a guess. This bench turns
what *can* be known on any machine -- the work each network does, counted
from its ONNX graph -- and NVIDIA's published peak figures into a range of
milliseconds per model and per tick. Everything it prints about a Jetson is
a projection and is labelled so; a measurement on the device replaces it.

The model, deliberately simple (all knobs are in ``ASSUMPTIONS``):

    projected_ms = MACs * 2 / (dense ops/s of the precision * utilisation)
                   + kernels * per-kernel overhead

- MACs (multiply-accumulates) are counted from the graph after onnx shape
  inference at the shapes the product feeds: Conv, ConvTranspose, Gemm,
  MatMul, GRU and LSTM; everything else (activations, pooling, resize,
  grid sampling, ...) is counted as negligible and only listed in the op
  histogram.
- "dense ops/s": NVIDIA quotes INT8 TOPS with 2:4 structured sparsity; our
  networks are not pruned that way, so the dense figure (half) is used, and
  fp16 tensor-core throughput is half of dense INT8 on Ampere.
- utilisation: batch-1 networks with few channels keep a small share of the
  tensor cores busy; a range (low..high) is assumed, not measured.
- kernels: the nodes TensorRT would still launch after fusing elementwise
  ops into their producer and folding constants (an estimate from the
  graph); each costs a fixed overhead on one CUDA stream (again a range).

"low" pairs the high utilisation with the small overhead, "high" the
opposite. A memory-traffic time (weights + activations over the published
DRAM bandwidth) is reported beside it as a sanity check, not added in.

The CPU figures are measured here (ONNX Runtime, one intra-op thread, p50),
on a shared 2-core box, so they are noisy; they serve as the measured anchor
for MACs (achieved GMAC/s) and are not scaled to the Jetson: a CPU-to-GPU
ratio would need a utilisation we cannot measure without the GPU.

The listening models (Silero VAD, Whisper tiny.en) run on the Jetson's CPU in
the product, so they are reported per second of audio and per turn, outside
the GPU tick. Whisper is a CTranslate2 model, not ONNX: its MACs are counted
from the weight shapes in its ``model.bin`` and Whisper's layer structure.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.bench import register

KIND = "projection (not measured on a device)"
REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINES_DIR = REPO_ROOT / "engines"

# --------------------------------------------------------------------------- published figures

# Peak figures as NVIDIA publishes them. Sources:
#   [nano-ds]  NVIDIA Jetson Orin Nano Series module data sheet: Orin Nano 8GB "up to 40 (sparse) INT8 TOPS
#              and 20 (dense) INT8 TOPS", 1024 CUDA cores, 32 tensor cores, GPU max 625 MHz, 128-bit LPDDR5
#              68 GB/s, no DLA.
#   [super]    NVIDIA Jetson Orin Nano Super developer kit product page (JetPack 6.1/6.2 "Super" modes, Dec
#              2024): 67 INT8 TOPS sparse, GPU up to 1020 MHz, 102 GB/s -- same module, higher clocks.
#   [agx-ds]   NVIDIA Jetson AGX Orin Series data sheet and technical brief: AGX Orin 64GB 275 INT8 TOPS sparse
#              in total, of which the GPU 170 (16 SMs, 2048 CUDA cores, 64 tensor cores, 1.3 GHz) and the two
#              DLA v2 cores 105; 256-bit LPDDR5 204.8 GB/s.
#   derived    dense = sparse / 2 (2:4 structured sparsity doubles the quoted rate); fp16 dense = INT8 dense / 2
#              (Ampere tensor cores); consistent with 32 or 64 tensor cores x 1024 dense INT8 ops/clock x clock.
DEVICES: dict[str, dict[str, Any]] = {
    "orin-nano-8gb": {
        "name": "Jetson Orin Nano 8GB",
        "cuda_cores": 1024,                 # [nano-ds]
        "tensor_cores": 32,                 # [nano-ds]
        "gpu_max_mhz": 625,                 # [nano-ds] (the original modes; see super_mode)
        "int8_sparse_tops": 40.0,           # [nano-ds]
        "int8_dense_tops": 20.0,            # [nano-ds]
        "fp16_dense_tflops": 10.0,          # derived
        "dram_gb_per_s": 68.0,              # [nano-ds]
        "dla_cores": 0,                     # [nano-ds]
        "super_mode": {                     # [super]
            "int8_sparse_tops": 67.0, "gpu_max_mhz": 1020, "dram_gb_per_s": 102.0,
            "note": "JetPack 6.1+ 'Super' power modes raise the clocks of the same module; the projection "
                    "uses the 625 MHz figures (conservative). At MAXN_SUPER the compute term shrinks by "
                    "625/1020; the board config runs the 25W mode, whose GPU clock cap is not confirmed here.",
        },
        "sources": "NVIDIA Jetson Orin Nano Series data sheet; Jetson Orin Nano Super developer kit page",
    },
    "agx-orin-64gb": {
        "name": "Jetson AGX Orin 64GB",
        "cuda_cores": 2048,                 # [agx-ds]
        "tensor_cores": 64,                 # [agx-ds]
        "gpu_max_mhz": 1300,                # [agx-ds]
        "int8_sparse_tops": 275.0,          # [agx-ds] GPU + 2 DLA
        "gpu_int8_sparse_tops": 170.0,      # [agx-ds] GPU alone
        "dla_int8_sparse_tops": 105.0,      # [agx-ds] both DLA v2 cores
        "int8_dense_tops": 85.0,            # derived: GPU alone (the board config does not use the DLA)
        "fp16_dense_tflops": 42.5,          # derived
        "dram_gb_per_s": 204.8,             # [agx-ds]
        "dla_cores": 2,                     # [agx-ds]
        "sources": "NVIDIA Jetson AGX Orin Series data sheet and technical brief",
    },
}

# The stated assumptions of the projection; every one is ours, none is measured on a Jetson.
ASSUMPTIONS: dict[str, Any] = {
    "utilisation": {"low": 0.10, "high": 0.25,
                    "why": "share of dense tensor-core peak a batch-1 network with few channels reaches "
                           "(TensorRT, one stream); small CNNs sit at the low end"},
    "kernel_overhead_us": {"low": 15.0, "high": 30.0,
                           "why": "launch plus the minimum duration of one small kernel, TensorRT on one "
                                  "CUDA stream on Orin"},
    "kernels": "MAC-bearing nodes plus non-elementwise nodes (pooling, resize, concat, transpose, pad, "
               "slice, gather, reductions, softmax, grid sampling, depth-to-space), after constant folding; "
               "elementwise nodes are assumed fused into their producer; a recurrent node counts once per "
               "time step",
    "bytes_per_value": {"int8": 1, "fp16": 2},
    "memory_check": "weights once + each kernel's output written and read once, at the published DRAM "
                    "bandwidth; reported beside the projection, not added to it",
    "dense_vs_sparse": "dense = NVIDIA's sparse INT8 figure / 2; fp16 = dense INT8 / 2",
    "dla": "not used (use_dla: false in both board configs); AGX Orin's projection is the GPU's 170 sparse TOPS",
    "renderer_512": "the trained engines/renderer_512.onnx (AGX Orin, Thor) where it exists; without it the "
                    "256 px model is scaled up on the device, and its cost here is the 256 px model's with "
                    "convolution MACs and activations x4, dense layers and kernel count unchanged",
    "perception_frame": "one visitor; per perception frame: face landmarks + blendshapes every frame, emotion "
                        "every emotion_interval_frames, face detection every redetect_interval_frames, palm "
                        "detection every hand_detect_interval_frames, hand landmarks for one tracked hand "
                        "(mean); the worst frame runs every model once and hand landmarks for max_hands",
    "tick": "perception runs inline on the tick every perception_stride_ticks; planner and renderer every "
            "tick; mean tick = mean perception frame / stride + planner + renderer; worst tick = worst "
            "perception frame + planner + renderer",
    "whisper_kernels": "per encoder layer 10, per decoder layer and token 14, per token 3 more (embedding, "
                       "final norm, logits)",
}

# Ops whose MACs are counted; the rest count as negligible.
MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "GRU", "LSTM"})
# Ops that TensorRT would still run as a kernel of their own (not fused into a producer).
STANDALONE_OPS = frozenset({
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Resize", "Upsample", "GridSample",
    "DepthToSpace", "SpaceToDepth", "Concat", "Transpose", "Softmax", "ReduceMean", "ReduceSum", "ReduceMax",
    "Pad", "Slice", "Gather", "Split", "TopK", "InstanceNormalization", "LayerNormalization",
})
_WEIGHT_DTYPES = frozenset({1, 2, 3, 10, 11, 16})  # float, uint8, int8, float16, double, bfloat16

# --------------------------------------------------------------------------- counting work in an ONNX graph


@dataclass
class GraphCost:
    """What one run of a network does, counted from its graph."""

    macs: int
    macs_by_op: dict[str, int]
    params: int
    kernels: int
    activation_values: int               # outputs of the kernels above, summed
    conv_macs: int                       # the share that scales with image area
    conv_activation_values: int
    op_histogram: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _shape_of(value_info: Any) -> list[int | None] | None:
    if not value_info.type.HasField("tensor_type") or not value_info.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value_info.type.tensor_type.shape.dim]


def _fix_input_shapes(model: Any, input_shapes: dict[str, list[int]]) -> None:
    """Give the graph inputs the shapes the product feeds (dynamic dims made concrete)."""
    for graph_input in model.graph.input:
        shape = input_shapes.get(graph_input.name)
        if shape is None:
            continue
        dims = graph_input.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ValueError(f"input {graph_input.name!r} has rank {len(dims)}, shape given {shape}")
        for dim, value in zip(dims, shape):
            dim.Clear()
            dim.dim_value = int(value)


def _ort_values(model: Any, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Run ``model`` once in ONNX Runtime with ``names`` exposed as outputs; name -> value."""
    import onnx  # noqa: PLC0415

    from edge_avatar.backends.onnxruntime_backend import import_onnxruntime  # noqa: PLC0415

    ort = import_onnxruntime()
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names if n not in existing])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3          # inlined branches leave unused initializers: not worth a warning
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs() if o.name in set(names)]
    return dict(zip(wanted, session.run(wanted, feeds)))


def _inline_ifs(model: Any, feeds: dict[str, np.ndarray]) -> tuple[Any, int]:
    """Replace every ``If`` by the branch these feeds take (conditions evaluated in ONNX Runtime).

    Nested ``If`` nodes surface in the main graph after their parent is inlined, so this repeats until
    none is left. Returns the flattened model and how many ``If`` nodes were resolved.
    """
    import onnx  # noqa: PLC0415

    resolved = 0
    for _ in range(32):                                  # nesting depth guard
        ifs = [n for n in model.graph.node if n.op_type == "If"]
        if not ifs:
            return model, resolved
        conditions = _ort_values(model, feeds, [n.input[0] for n in ifs])
        nodes: list[Any] = []
        for node in model.graph.node:
            if node.op_type != "If":
                nodes.append(node)
                continue
            taken = "then_branch" if bool(np.asarray(conditions[node.input[0]]).reshape(-1)[0]) else "else_branch"
            branch = next(a.g for a in node.attribute if a.name == taken)
            model.graph.initializer.extend(branch.initializer)
            nodes.extend(branch.node)
            for inner, outer in zip(branch.output, node.output):
                nodes.append(onnx.helper.make_node("Identity", [inner.name], [outer]))
            resolved += 1
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    raise ValueError("If nodes nested deeper than 32 levels")


def _host_side_names(graph: Any) -> tuple[set[str], set[str]]:
    """(constants, shape values): tensors no GPU kernel computes.

    Constants: initializers and everything computed only from them (folded when the engine is built).
    Shape values: what ``Shape``/``Size`` return and everything computed from them and constants
    (TensorRT evaluates shape arithmetic on the host).
    """
    constants = {t.name for t in graph.initializer}
    shape_values: set[str] = set()
    graph_inputs = {i.name for i in graph.input} - constants
    for node in graph.node:
        inputs = [x for x in node.input if x]
        outputs = [o for o in node.output if o]
        if node.op_type == "Constant" or (inputs and all(x in constants and x not in graph_inputs for x in inputs)):
            constants.update(outputs)
        elif node.op_type in ("Shape", "Size") or (
                inputs and all(x in constants or x in shape_values for x in inputs)):
            shape_values.update(outputs)
    return constants, shape_values


def _node_macs(node: Any, shapes: dict[str, list[int]]) -> int:
    """Multiply-accumulates of one node at concrete shapes (0 for ops not counted)."""
    def shape(i: int, outputs: bool = False) -> list[int]:
        names = node.output if outputs else node.input
        return shapes[names[i]]

    op = node.op_type
    if op == "Conv":                     # each output value: (C_in / group) * kernel taps
        return math.prod(shape(0, outputs=True)) * math.prod(shape(1)[1:])
    if op == "ConvTranspose":            # each input value scatters to (C_out / group) * kernel taps
        return math.prod(shape(0)) * math.prod(shape(1)[1:])
    if op == "Gemm":
        attrs = {a.name: a.i for a in node.attribute}
        a_shape = shape(0)
        k = a_shape[0] if attrs.get("transA", 0) else a_shape[-1]
        return math.prod(shape(0, outputs=True)) * k
    if op == "MatMul":
        return math.prod(shape(0, outputs=True)) * shape(0)[-1]
    if op in ("GRU", "LSTM"):            # W: (dirs, gates*H, in), R: (dirs, gates*H, H); per step and batch row
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
        x = shape(0)
        steps, batch = (x[1], x[0]) if layout else (x[0], x[1])
        w, r = shape(1), shape(2)
        return steps * batch * w[0] * w[1] * (w[2] + r[2])
    return 0


def _recurrent_steps(node: Any, shapes: dict[str, list[int]]) -> int:
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    x = shapes[node.input[0]]
    return x[1] if layout else x[0]


def count_graph_cost(model: Any, input_shapes: dict[str, list[int]],
                     feeds: dict[str, np.ndarray] | None = None) -> GraphCost:
    """MACs, parameters, kernel estimate and op histogram of ``model`` at ``input_shapes``.

    Shapes come from onnx shape inference (with data propagation). ``If`` nodes are resolved to the
    branch ``feeds`` take; where inference leaves a needed dim unknown, one ONNX Runtime run with those
    tensors exposed supplies it (``feeds`` are required then, and a note says so).
    """
    import onnx  # noqa: PLC0415

    work = onnx.ModelProto()
    work.CopyFrom(model)
    notes: list[str] = []
    _fix_input_shapes(work, input_shapes)
    if any(n.op_type == "If" for n in work.graph.node):
        if feeds is None:
            raise ValueError("the graph has If nodes: feeds are needed to pick the branches")
        work, resolved = _inline_ifs(work, feeds)
        notes.append(f"{resolved} If nodes resolved to the branch these inputs take")
    inferred = onnx.shape_inference.infer_shapes(work, data_prop=True)
    graph = inferred.graph
    shapes: dict[str, list[int | None]] = {t.name: list(t.dims) for t in graph.initializer}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        s = _shape_of(vi)
        if s is not None:
            shapes[vi.name] = s
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = list(a.t.dims)

    constants, shape_values = _host_side_names(graph)
    runtime_nodes = [n for n in graph.node if n.op_type != "Constant"
                     and not all(o in constants or o in shape_values for o in n.output if o)]
    kernel_nodes = [n for n in runtime_nodes if n.op_type in MAC_OPS or n.op_type in STANDALONE_OPS]
    def first_output(node: Any) -> str:               # a GRU may leave its sequence output unnamed
        return next(o for o in node.output if o)

    needed = set()
    for n in kernel_nodes:
        needed.update(x for x in n.input[:3] if x)
        needed.add(first_output(n))
    unknown = sorted(x for x in needed if shapes.get(x) is None or None in shapes[x])
    if unknown:
        if feeds is None:
            raise ValueError(f"shape inference left {len(unknown)} tensors unknown (e.g. {unknown[0]!r}); "
                             "pass feeds to resolve them")
        for name, value in _ort_values(work, feeds, unknown).items():
            shapes[name] = list(np.asarray(value).shape)
        notes.append(f"{len(unknown)} tensor shapes taken from one ONNX Runtime run (inference left them open)")

    macs_by_op: Counter[str] = Counter()
    kernels = activation_values = conv_macs = conv_activation_values = 0
    for n in kernel_nodes:
        macs = _node_macs(n, shapes) if n.op_type in MAC_OPS else 0
        macs_by_op[n.op_type] += macs
        out_values = math.prod(shapes.get(first_output(n)) or [0])
        activation_values += out_values
        if n.op_type in ("Conv", "ConvTranspose"):
            conv_macs += macs
            conv_activation_values += out_values
        kernels += _recurrent_steps(n, shapes) if n.op_type in ("GRU", "LSTM") else 1

    params = sum(math.prod(t.dims) for t in graph.initializer if t.data_type in _WEIGHT_DTYPES)
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in _WEIGHT_DTYPES:
                    params += math.prod(a.t.dims)
    histogram = Counter(n.op_type for n in graph.node)
    return GraphCost(macs=sum(macs_by_op.values()), macs_by_op={k: v for k, v in macs_by_op.items() if v},
                     params=int(params), kernels=kernels, activation_values=activation_values,
                     conv_macs=conv_macs, conv_activation_values=conv_activation_values,
                     op_histogram=dict(histogram.most_common()), notes=notes)


# --------------------------------------------------------------------------- the projection


def project_ms(macs: int, kernels: int, device: dict[str, Any], precision: str) -> dict[str, float]:
    """Projected ms (low, high) of one run with ``macs`` and ``kernels`` on ``device`` at ``precision``.

    ``compute_ms`` and ``overhead_ms`` ([low, high] each) show which term dominates.
    """
    dense_ops_per_s = (device["int8_dense_tops"] if precision == "int8" else device["fp16_dense_tflops"]) * 1e12
    util, overhead = ASSUMPTIONS["utilisation"], ASSUMPTIONS["kernel_overhead_us"]
    compute_low_ms = macs * 2 / (dense_ops_per_s * util["high"]) * 1e3
    compute_high_ms = macs * 2 / (dense_ops_per_s * util["low"]) * 1e3
    overhead_low_ms, overhead_high_ms = kernels * overhead["low"] / 1e3, kernels * overhead["high"] / 1e3
    return {"low": round(compute_low_ms + overhead_low_ms, 4), "high": round(compute_high_ms + overhead_high_ms, 4),
            "compute_ms": [round(compute_low_ms, 4), round(compute_high_ms, 4)],
            "overhead_ms": [round(overhead_low_ms, 4), round(overhead_high_ms, 4)]}


def memory_ms(weight_values: int, activation_values: int, device: dict[str, Any], precision: str) -> float:
    """Time to move the weights once and each kernel output twice at the published DRAM bandwidth."""
    bytes_moved = (weight_values + 2 * activation_values) * ASSUMPTIONS["bytes_per_value"][precision]
    return round(bytes_moved / (device["dram_gb_per_s"] * 1e9) * 1e3, 4)


def projections(macs: int, kernels: int, weight_values: int, activation_values: int) -> dict[str, Any]:
    """{"kind", device: {precision: {low, high, memory_check}}} for every device."""
    out: dict[str, Any] = {"kind": KIND}
    for key, device in DEVICES.items():
        out[key] = {p: {**project_ms(macs, kernels, device, p),
                        "memory_check": memory_ms(weight_values, activation_values, device, p)}
                    for p in ("int8", "fp16")}
    return out


# --------------------------------------------------------------------------- the product's models


@dataclass(frozen=True)
class ModelEntry:
    """One network the device runs and the inputs the product gives it."""

    name: str
    path: Path
    role: str                                   # "perception", "planner", "renderer", "vad"
    feeds: dict[str, np.ndarray]


def _image(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def product_models() -> tuple[list[ModelEntry], list[dict[str, str]]]:
    """The ONNX networks of the product with the shapes the runtime feeds, and those skipped (with why).

    Shapes: perception from engines/manifest.json (batch fixed to 1); the planner one tick
    (``features`` (1, 1, 149), NeuralPlanner.step); the renderer one motion frame (NeuralRenderer);
    Silero one 512-sample window plus 64 samples of context at 16 kHz (listening.vad.SileroVad).
    """
    import json  # noqa: PLC0415

    from edge_avatar.motion import neutral_motion  # noqa: PLC0415
    from edge_avatar.planner.inputs import INPUT_SIZE  # noqa: PLC0415

    entries: list[ModelEntry] = []
    skipped: list[dict[str, str]] = []
    manifest = json.loads((ENGINES_DIR / "manifest.json").read_text(encoding="utf-8"))
    for name, model in manifest["models"].items():
        if model.get("kind") != "onnx":
            continue
        feeds = {i["name"]: _image(tuple(i["shape"])) for i in model["inputs"]}
        entries.append(ModelEntry(name, ENGINES_DIR / model["file"], "perception", feeds))
    planner_state = 128
    try:
        planner_manifest = json.loads((ENGINES_DIR / "planner.manifest.json").read_text(encoding="utf-8"))
        planner_state = next(int(i["shape"][-1]) for i in planner_manifest["inputs"] if i["name"] == "state_in")
    except (OSError, StopIteration, KeyError, ValueError):
        pass
    entries.append(ModelEntry("planner", ENGINES_DIR / "planner.onnx", "planner", {
        "features": _image((1, 1, INPUT_SIZE)), "state_in": np.zeros((1, 1, planner_state), np.float32)}))
    for size in (256, 512):   # the 512 px renderer (AGX Orin, Thor) where it has been trained
        path = ENGINES_DIR / f"renderer_{size}.onnx"
        if size == 256 or path.is_file():
            entries.append(ModelEntry(f"renderer_{size}", path, "renderer", {
                "motion": neutral_motion().reshape(1, -1).astype(np.float32),
                "background_rgb": np.array([0.1, 0.1, 0.12], np.float32)}))
    try:
        from edge_avatar.listening.vad import (  # noqa: PLC0415
            SILERO_CONTEXT_SAMPLES,
            SILERO_STATE_SHAPE,
            SILERO_WINDOW_SAMPLES,
            default_silero_model_path,
        )

        window = SILERO_WINDOW_SAMPLES + SILERO_CONTEXT_SAMPLES
        entries.append(ModelEntry("silero_vad", default_silero_model_path(), "vad", {
            "input": (_image((1, window)) - 0.5) * 0.1, "state": np.zeros(SILERO_STATE_SHAPE, np.float32),
            "sr": np.array(16000, np.int64)}))
    except Exception as exc:  # noqa: BLE001 - a missing package is a skip with its reason
        skipped.append({"model": "silero_vad", "reason": str(exc)})
    return [e for e in entries if e.path.is_file()], skipped + [
        {"model": e.name, "reason": f"{e.path} not found"} for e in entries if not e.path.is_file()]


def measure_cpu_ms(path: Path, feeds: dict[str, np.ndarray], runs: int, warmup: int = 5) -> dict[str, float]:
    """min / p50 / p95 ms of one run in ONNX Runtime on this CPU, one intra-op thread."""
    from edge_avatar.backends import load_backend, summarize_ms, time_calls_ms  # noqa: PLC0415
    from edge_avatar.config import BackendConfig  # noqa: PLC0415

    backend = load_backend("onnxruntime", path, BackendConfig(intra_op_threads=1))
    try:
        for _ in range(warmup):
            backend.run(feeds)
        s = summarize_ms(time_calls_ms(lambda: backend.run(feeds), runs))
    finally:
        backend.close()
    return {"min": round(s.min_ms, 3), "p50": round(s.p50_ms, 3), "p95": round(s.p95_ms, 3), "runs": s.count}


# --------------------------------------------------------------------------- Whisper (CTranslate2)


def read_ct2_shapes(model_bin: Path) -> dict[str, tuple[int, ...]]:
    """Variable name -> shape from a CTranslate2 ``model.bin`` (binary layout version 6), data skipped.

    Layout, as ctranslate2's ModelSpec writes it: u32 version, string spec name, u32 revision, u32
    count, then per variable: string name, u8 rank, rank x u32 dims, u8 dtype, u32 byte count, bytes.
    Strings are u16 length (with the NUL) + bytes.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    with open(model_bin, "rb") as f:
        def read(fmt: str) -> int:
            return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]

        def read_string() -> str:
            return f.read(read("H"))[:-1].decode("utf-8")

        version = read("I")
        if version != 6:
            raise ValueError(f"{model_bin}: CTranslate2 binary version {version}, only 6 is understood here")
        read_string()
        read("I")
        for _ in range(read("I")):
            name = read_string()
            dims = tuple(read("I") for _ in range(read("B")))
            read("B")
            f.seek(read("I"), os.SEEK_CUR)
            shapes[name] = dims
    return shapes


def whisper_turn_cost(shapes: dict[str, tuple[int, ...]], context_frames: int,
                      decoder_positions: int) -> dict[str, int]:
    """MACs and kernels of one Whisper decode: encoder over ``context_frames`` mel frames, greedy decoder.

    From the weight shapes: conv1 (d, n_mels, 3) over every mel frame, conv2 (d, d, 3) stride 2; each
    encoder linear once per encoder position plus attention (2 * T^2 * d per layer); each decoder
    linear once per position, except the cross-attention key/value projection (once per encoder
    position per turn); cross-attention over the encoder positions and self-attention over the
    positions so far; the output projection tied to the embeddings (vocab x d) per position.
    """
    d = shapes["encoder/conv1/weight"][0]
    enc_positions = context_frames // 2
    encoder = math.prod(shapes["encoder/conv1/weight"]) * context_frames
    encoder += math.prod(shapes["encoder/conv2/weight"]) * enc_positions
    enc_layers = {n.split("/")[1] for n in shapes if re.match(r"encoder/layer_\d+/", n)}   # not layer_norm
    dec_layers = {n.split("/")[1] for n in shapes if re.match(r"decoder/layer_\d+/", n)}
    cross_kv = per_position = 0
    for name, s in shapes.items():
        if not name.endswith("/weight") or len(s) != 2 or "position_encodings" in name:
            continue
        if re.match(r"encoder/layer_\d+/", name):
            encoder += s[0] * s[1] * enc_positions
        elif re.match(r"decoder/layer_\d+/", name) and name.endswith("/attention/linear_1/weight"):
            cross_kv += s[0] * s[1] * enc_positions
        elif re.match(r"decoder/layer_\d+/", name):
            per_position += s[0] * s[1]
    encoder += len(enc_layers) * 2 * enc_positions * enc_positions * d
    vocab_d = math.prod(shapes["decoder/embeddings/weight"])
    mean_context = (decoder_positions + 1) / 2
    per_position += vocab_d + len(dec_layers) * 2 * d * (enc_positions + mean_context)
    decoder = cross_kv + int(decoder_positions * per_position)
    kernels = 2 + 10 * len(enc_layers) + len(dec_layers) + decoder_positions * (14 * len(dec_layers) + 3)
    return {"encoder_macs": int(encoder), "decoder_macs": int(decoder), "macs": int(encoder + decoder),
            "kernels": int(kernels), "encoder_positions": enc_positions,
            "weights_per_position": int(per_position - len(dec_layers) * 2 * d * (enc_positions + mean_context)),
            "params": int(sum(math.prod(s) for s in shapes.values() if s))}


def whisper_section(quick: bool) -> dict[str, Any]:
    """Whisper tiny.en per turn: MACs from model.bin, CPU ms of the recognizer on a real 3 s utterance."""
    from tokenizers import Tokenizer  # noqa: PLC0415 - faster-whisper's own dependency

    from edge_avatar.backends import summarize_ms, time_calls_ms  # noqa: PLC0415
    from edge_avatar.listening.asr import (  # noqa: PLC0415
        MEL_FRAMES_PER_S,
        WhisperRecognizer,
        default_whisper_model_dir,
    )
    from edge_avatar.listening.bench import moonshine_asset  # noqa: PLC0415
    from edge_avatar.listening.offline import read_audio  # noqa: PLC0415
    from edge_avatar.listening.options import PROCESS_RATE_HZ, ListeningConfig  # noqa: PLC0415
    from edge_avatar.listening.resample import resample  # noqa: PLC0415

    config = ListeningConfig(asr_cpu_threads=1)
    model_dir = Path(config.asr_model_dir).expanduser() if config.asr_model_dir else default_whisper_model_dir()
    shapes = read_ct2_shapes(model_dir / "model.bin")
    samples, rate_hz = read_audio(moonshine_asset("two_cities.wav"))
    utterance_s = 3.0                       # about one visitor question
    utterance = resample(samples, rate_hz, PROCESS_RATE_HZ)[: int(utterance_s * PROCESS_RATE_HZ)]
    utterance = np.ascontiguousarray(utterance, np.float32)
    recognizer = WhisperRecognizer(config)
    recognition = recognizer.transcribe(utterance)                      # warm-up, and the text
    timing = summarize_ms(time_calls_ms(lambda: recognizer.transcribe(utterance), 2 if quick else 5))
    context_frames = recognizer.context_frames(int(utterance_s * MEL_FRAMES_PER_S))
    text_tokens = len(Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(" " + recognition.text,
                                                                                 add_special_tokens=False).ids)
    positions = text_tokens + 3            # start-of-transcript and no-timestamps prompt, end of text
    cost = whisper_turn_cost(shapes, context_frames, positions)
    return {
        "model": f"Whisper {config.asr_model_name} (CTranslate2 {config.asr_compute_type}, "
                 f"{model_dir.parent.name}/{model_dir.name}/model.bin)",
        "placement": "the Jetson's CPU in the product (CTranslate2); the GPU lines are a what-if",
        "utterance_s": utterance_s, "text": recognition.text, "context_ms": context_frames * 10,
        "decoder_positions": positions, **cost,
        "cpu_ms_per_turn": {"min": round(timing.min_ms, 1), "p50": round(timing.p50_ms, 1),
                            "p95": round(timing.p95_ms, 1), "runs": timing.count, "threads": 1},
        "projected_ms_per_turn_if_on_gpu": projections(
            cost["macs"], cost["kernels"],
            cost["params"] - cost["weights_per_position"] + cost["weights_per_position"] * positions, 0),
        "memory_check_note": "weights: encoder once, decoder weights and the tied output projection once per "
                             "position (a batch-1 decoder re-reads them every token); activations not counted",
    }


# --------------------------------------------------------------------------- per-tick totals


def _scaled(cost: GraphCost, area_factor: int) -> GraphCost:
    """The same network at ``area_factor`` x the image area: convolution work and activations scale."""
    extra = (area_factor - 1)
    return GraphCost(macs=cost.macs + extra * cost.conv_macs,
                     macs_by_op={**cost.macs_by_op, **{k: v * area_factor for k, v in cost.macs_by_op.items()
                                                        if k in ("Conv", "ConvTranspose")}},
                     params=cost.params, kernels=cost.kernels,
                     activation_values=cost.activation_values + extra * cost.conv_activation_values,
                     conv_macs=cost.conv_macs * area_factor,
                     conv_activation_values=cost.conv_activation_values * area_factor,
                     op_histogram=cost.op_histogram, notes=[ASSUMPTIONS["renderer_512"]])


def perception_runs_per_frame(perception: Any) -> dict[str, dict[str, float]]:
    """How often each perception model runs per perception frame: mean (one visitor) and worst."""
    hands = perception.hands_enabled
    return {
        "face_detector": {"mean": 1 / perception.redetect_interval_frames, "worst": 1},
        "face_landmarks": {"mean": 1, "worst": 1},
        "face_blendshapes": {"mean": 1, "worst": 1},
        "emotion": {"mean": 1 / perception.emotion_interval_frames, "worst": 1},
        "palm_detector": {"mean": 1 / perception.hand_detect_interval_frames if hands else 0, "worst": int(hands)},
        "hand_landmarks": {"mean": min(1, perception.max_hands) if hands else 0,
                           "worst": perception.max_hands if hands else 0},
    }


def device_totals(board: str, device_key: str, models: dict[str, dict[str, Any]],
                  renderer_key: str) -> dict[str, Any]:
    """Per-tick projected ms (mean and worst tick) and headroom against the tick budget, per precision."""
    from edge_avatar.config import load_config  # noqa: PLC0415

    config = load_config(board)
    budget_ms = 1000.0 / config.loop.tick_rate_hz
    stride = config.loop.perception_stride_ticks
    runs = perception_runs_per_frame(config.perception)
    result: dict[str, Any] = {
        "kind": KIND, "board_config": board, "tick_rate_hz": config.loop.tick_rate_hz,
        "tick_budget_ms": round(budget_ms, 3), "perception_stride_ticks": stride,
        "render_px": config.render.width_px, "renderer_model": renderer_key,
        "perception_runs_per_frame": runs,
    }
    for precision in ("int8", "fp16"):
        row: dict[str, Any] = {}
        for bound in ("low", "high"):
            ms = {name: m["projected_ms"][device_key][precision][bound] for name, m in models.items()}
            frame_mean = sum(ms[n] * r["mean"] for n, r in runs.items() if n in ms)
            frame_worst = sum(ms[n] * r["worst"] for n, r in runs.items() if n in ms)
            every_tick = ms["planner"] + ms[renderer_key]
            tick_mean = frame_mean / stride + every_tick
            tick_worst = frame_worst + every_tick
            row[bound] = {
                "perception_frame_mean_ms": round(frame_mean, 3), "perception_frame_worst_ms": round(frame_worst, 3),
                "planner_ms": ms["planner"], "renderer_ms": ms[renderer_key],
                "tick_mean_ms": round(tick_mean, 3), "tick_worst_ms": round(tick_worst, 3),
                "headroom_worst_tick_ms": round(budget_ms - tick_worst, 3),
                "headroom_worst_tick_pct": round(100 * (budget_ms - tick_worst) / budget_ms, 1),
                "gpu_busy_mean_pct": round(100 * tick_mean / budget_ms, 1),
            }
        row["fits_budget"] = row["high"]["tick_worst_ms"] < budget_ms
        result[precision] = row
    return result


@register("projection", "paper projection of per-tick cost on Jetson Orin Nano 8GB / AGX Orin 64GB "
                        "(MACs from the graphs, published TOPS, assumed utilisation; not a measurement)")
def bench_projection(quick: bool = False) -> dict[str, Any]:
    import onnx  # noqa: PLC0415

    runs = 10 if quick else 100
    load_before = os.getloadavg()
    entries, skipped = product_models()
    models: dict[str, dict[str, Any]] = {}
    costs: dict[str, GraphCost] = {}
    for entry in entries:
        cost = count_graph_cost(onnx.load(str(entry.path)), {k: list(v.shape) for k, v in entry.feeds.items()},
                                entry.feeds)
        costs[entry.name] = cost
        cpu = measure_cpu_ms(entry.path, entry.feeds, runs)
        models[entry.name] = _model_row(entry.name, entry.role, str(entry.path.relative_to(REPO_ROOT))
                                        if entry.path.is_relative_to(REPO_ROOT) else str(entry.path), cost, cpu)
    if "renderer_256" in costs and "renderer_512" not in costs:
        scaled = _scaled(costs["renderer_256"], 4)
        models["renderer_512"] = _model_row("renderer_512", "renderer", "(renderer_256 scaled, not a file)",
                                            scaled, None)

    devices: dict[str, Any] = {}
    required = {"planner", "renderer_256"}
    if required <= set(models):
        devices["orin-nano-8gb"] = device_totals("orin-nano-8gb", "orin-nano-8gb", models, "renderer_256")
        devices["agx-orin-64gb"] = device_totals("agx-orin-64gb", "agx-orin-64gb", models, "renderer_512")

    listening: dict[str, Any] = {}
    if "silero_vad" in models:
        from edge_avatar.listening.vad import SILERO_WINDOW_SAMPLES  # noqa: PLC0415

        windows_per_s = 16000 / SILERO_WINDOW_SAMPLES
        listening["silero_vad"] = {
            "placement": "the Jetson's CPU in the product (ONNX Runtime, 1 thread), gated by webrtcvad",
            "windows_per_s": windows_per_s,
            "cpu_ms_per_audio_s_ungated": round(models["silero_vad"]["cpu_ms"]["p50"] * windows_per_s, 2),
        }
    try:
        listening["whisper"] = whisper_section(quick)
    except Exception as exc:  # noqa: BLE001 - a missing recognizer is a skip with its reason
        skipped.append({"model": "whisper", "reason": f"{type(exc).__name__}: {exc}"})

    return {
        "kind": KIND,
        "formula": "projected_ms = MACs*2 / (dense ops/s x utilisation) + kernels x per-kernel overhead; "
                   "low = high utilisation + small overhead, high = the opposite",
        "devices_published": DEVICES,
        "assumptions": ASSUMPTIONS,
        "models": models,
        "per_tick": devices,
        "listening": listening,
        "skipped": skipped,
        "cpu_timing": {"runtime": "onnxruntime CPUExecutionProvider", "intra_op_threads": 1, "runs": runs,
                       "load_average_before": [round(x, 2) for x in load_before],
                       "load_average_after": [round(x, 2) for x in os.getloadavg()],
                       "note": "shared 2-core box with other work running: CPU timings are noisy"},
        "cpu_to_gpu_ratio": "not used: scaling CPU ms by a peak-ops ratio assumes equal utilisation on both, "
                            "which batch-1 GPU inference does not have; achieved CPU GMAC/s is reported instead",
    }


def _model_row(name: str, role: str, path: str, cost: GraphCost, cpu: dict[str, float] | None) -> dict[str, Any]:
    top = dict(list(cost.op_histogram.items())[:8])
    row: dict[str, Any] = {
        "role": role, "file": path, "macs": cost.macs, "mmacs": round(cost.macs / 1e6, 2),
        "macs_by_op": cost.macs_by_op, "params": cost.params, "kernels_estimated": cost.kernels,
        "activation_values": cost.activation_values, "ops_histogram_top": top,
        "ops_total": sum(cost.op_histogram.values()), "notes": cost.notes,
        "cpu_ms_p50": cpu["p50"] if cpu else None, "cpu_ms": cpu,
        "cpu_gmacs_per_s": round(cost.macs / (cpu["p50"] * 1e6), 2) if cpu and cpu["p50"] > 0 else None,
        "projected_ms": projections(cost.macs, cost.kernels, cost.params, cost.activation_values),
    }
    if role == "vad":
        row["placement"] = "CPU in the product; GPU lines are a what-if"
    return row
