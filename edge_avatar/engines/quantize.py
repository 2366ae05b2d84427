"""INT8 Q/DQ ONNX by ONNX Runtime static quantization, and which models should not be quantized at all.

Why this module exists: TensorRT 10 takes INT8 only as explicit quantization
(Q/DQ nodes in the ONNX; its implicit calibrators are deprecated since
10.1), and the same Q/DQ file runs in ONNX Runtime on a CPU, so one
quantized file serves both the device and the development machine, and
its accuracy can be checked here. ``onnxruntime.quantization`` was chosen
because it is already a dependency, it writes the Q/DQ form TensorRT reads
(symmetric, zero point 0, per-channel weights on the output-channel axis)
and its calibrators take plain numpy feeds.

Recipe (``RECIPE`` is part of every cache key):

1. fold constant ``DequantizeLinear`` weights (the FER model ships int8
   weights) into float initializers, so the quantizer sees ordinary weights;
2. ``quant_pre_process``: symbolic shape inference and ONNX Runtime's basic
   graph optimisation, which also folds the float16 -> float32 weight casts
   of the converted MediaPipe models;
3. ``quantize_static``: QDQ format, int8 activations and weights, both
   symmetric, per-channel weights, MinMax calibration, only the weighted ops
   (Conv, Gemm, MatMul) quantized and the last weighted op before each
   output kept in float (box, landmark and score heads need the resolution);
   nodes of a layer whose name begins with ``resample`` (``FIXED_RESAMPLING``:
   ``/resample_fields/MatMul``) stay float
   too: they are fixed bilinear resamplings written as matrix products (the
   renderer's upsamplings), whose weights are interpolation shares, not
   learned ones, and whose INT8 would move the sampling grid itself.

``POLICIES`` keeps in float the models whose INT8 was measured to be harmful
(numbers in BENCHMARKS.md), with the reason; ``--int8 all`` tries them anyway.

A model's own manifest may keep more layers in float (``"quantization":
{"keep_float": [...], "why": "..."}``): layer names matched as ``/<name>/``
in the exported node names, chosen by measuring the model layer by layer.
The renderer keeps its geometry decoder and its eye decoder's last layer in
float this way (``edge_avatar.render.evaluate.INT8_VARIANTS``). The list is
part of that model's recipe fingerprint, so changing it rebuilds the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_avatar.engines.calibration import CalibrationData
from edge_avatar.engines.errors import BuildError
from edge_avatar.engines.manifest import load_onnx_checked

log = logging.getLogger(__name__)

QUANTIZED_OP_TYPES = ("Conv", "Gemm", "MatMul")
FIXED_RESAMPLING = "resample"
RECIPE = {"version": 1, "format": "QDQ", "activations": "int8 symmetric", "weights": "int8 symmetric per-channel",
          "calibration": "MinMax", "ops": list(QUANTIZED_OP_TYPES), "output_heads": "float",
          "fixed_resampling": f"float (layers named {FIXED_RESAMPLING}*)"}


@dataclass(frozen=True)
class QuantPolicy:
    """Whether a model is quantized to INT8, and otherwise which float precision TensorRT should use and why."""

    int8: bool
    float_precision: str = "fp16"     # what TensorRT builds when int8 is off (or as the int8 engine's fallback)
    reason: str = ""


# Measured on the real perception models with kiosk calibration data (BENCHMARKS.md, calibration/README.md).
# "Exact Q/DQ" is the Q/DQ graph evaluated as written (what TensorRT's kernels compute); "CPU kernels" is
# ONNX Runtime's fused int8 kernels on the AVX2 development CPU, which add their own (saturation) error.
POLICIES: dict[str, QuantPolicy] = {
    "face_detector": QuantPolicy(True, "fp16", "INT8 Q/DQ tried; verify decides"),
    "emotion": QuantPolicy(True, "fp16", "INT8 Q/DQ tried (its weights are int8 already); verify decides"),
    "face_landmarks": QuantPolicy(
        False, "fp16",
        "INT8 harmful: exact Q/DQ gives 10.8 px mean landmark error on the 256 px crop (limit 1.5 px); activation "
        "ranges differ up to 180x between channels of one tensor (0.08 vs 14.4 after the first conv) and per-tensor "
        "INT8 activations (all TensorRT's Q/DQ takes) wipe out the small channels. fp16 on TensorRT (the .tflite "
        "weights were fp16), fp32 on the CPU"),
    "palm_detector": QuantPolicy(
        False, "fp16",
        "INT8 harmful: exact Q/DQ gives palm box IoU 0.43 vs fp32 (same per-channel range spread in its PReLU "
        "blocks); fp16 on TensorRT, fp32 on the CPU"),
    "hand_landmarks": QuantPolicy(
        False, "fp16",
        "INT8 harmful: exact Q/DQ gives 11.9 px mean / 48 px p95 landmark error on the 224 px crop and handedness "
        "off by up to 0.8; fp16 on TensorRT, fp32 on the CPU"),
    "face_blendshapes": QuantPolicy(
        False, "fp32",
        "INT8 harmful and pointless: exact Q/DQ moves a coefficient by up to 0.10 (CPU kernels: MAE 0.051, max 0.89); "
        "the input is landmark coordinates in image pixels feeding LayerNorms, and the model takes about 1 ms. "
        "fp32 everywhere (a sum of pixel coordinates overflows fp16's 65504)"),
}
DEFAULT_POLICY = QuantPolicy(True, "fp16", "INT8 Q/DQ tried; verify decides")


def policy_for(name: str, int8_mode: str = "policy") -> QuantPolicy:
    """The model's policy; ``int8_mode`` "all" tries INT8 everywhere, "none" nowhere."""
    policy = POLICIES.get(name, DEFAULT_POLICY)
    if int8_mode == "all" and not policy.int8:
        return QuantPolicy(True, policy.float_precision, f"INT8 forced by --int8 all (policy: {policy.reason})")
    if int8_mode == "none" and policy.int8:
        return QuantPolicy(False, policy.float_precision, "INT8 disabled by --int8 none")
    return policy


def recipe_fingerprint(keep_float: tuple[str, ...] = ()) -> str:
    """Hash of the recipe (and the quantizer's version); a model's float layers are part of its recipe."""
    import onnxruntime  # noqa: PLC0415

    recipe: dict[str, Any] = {**RECIPE, "onnxruntime": onnxruntime.__version__}
    if keep_float:
        recipe["keep_float"] = sorted(keep_float)
    text = json.dumps(recipe, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def keep_float_layers(entry: Any) -> tuple[str, ...]:
    """The layers ``entry``'s manifest keeps in float (``quantization.keep_float``); () if it names none.

    Raises ``BuildError`` naming the manifest field when the section is malformed.
    """
    section = entry.extra.get("quantization")
    if section is None:
        return ()
    layers = section.get("keep_float") if isinstance(section, dict) else None
    if not isinstance(layers, list) or not all(isinstance(x, str) and x.strip("/") for x in layers):
        raise BuildError(entry.name, "int8 quantization",
                         f"{entry.manifest_path}: models.{entry.name}.quantization.keep_float must be a list of "
                         f"layer names (e.g. [\"geo/out\"]), got {layers!r}")
    return tuple(x.strip("/") for x in layers)


def model_recipe(entry: Any) -> str:
    """``entry``'s INT8 recipe fingerprint: the common recipe plus its manifest's float layers (BuildError if
    that section is malformed). Both the build's cache key and ``resolve_model``'s check use it."""
    return recipe_fingerprint(keep_float_layers(entry))


def layer_nodes(node_names: list[str], layers: tuple[str, ...]) -> list[str]:
    """The nodes of ``node_names`` inside any of ``layers``: "geo/out" matches "/student/geo/out/Conv" and "geo/out"."""
    return [n for n in node_names if any(f"/{layer}/" in f"/{n.strip('/')}/" for layer in layers)]


def resampling_nodes(node_names: list[str]) -> list[str]:
    """The nodes of ``node_names`` inside a layer whose name begins with ``FIXED_RESAMPLING``:
    "/resample_fields/MatMul" is one, "/geo/out/Conv" and a bare "resample_x" node name are not."""
    return [n for n in node_names if any(part.startswith(FIXED_RESAMPLING) for part in n.strip("/").split("/")[:-1])]


# --------------------------------------------------------------------------- graph preparation


def fold_constant_dequantize(model: Any) -> int:
    """Replace ``DequantizeLinear`` nodes whose inputs are all initializers by float initializers; returns the count."""
    import numpy as np  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    folded = 0
    keep = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and all(n in initializers for n in node.input if n):
            x = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
            zero = (numpy_helper.to_array(initializers[node.input[2]]).astype(np.float32)
                    if len(node.input) > 2 and node.input[2] else np.zeros_like(scale))
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and scale.size > 1:  # per-axis: broadcast along ``axis``
                shape = [1] * x.ndim
                shape[axis] = scale.size
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            value = ((x - zero) * scale).astype(np.float32)
            graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
            folded += 1
        else:
            keep.append(node)
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        used = {n for node in graph.node for n in node.input}
        live = [i for i in graph.initializer if i.name in used or i.name in {o.name for o in graph.output}]
        del graph.initializer[:]
        graph.initializer.extend(live)
    return folded


def output_head_nodes(model: Any) -> list[str]:
    """The last weighted node (Conv/Gemm/MatMul) on the way back from each graph output."""
    producers = {out: node for node in model.graph.node for out in node.output}
    heads: list[str] = []
    for output in model.graph.output:
        node, seen = producers.get(output.name), 0
        while node is not None and node.op_type not in QUANTIZED_OP_TYPES and seen < 64:
            node = next((producers[i] for i in node.input if i in producers), None)
            seen += 1
        if node is not None and node.name and node.name not in heads:
            heads.append(node.name)
    return heads


def _name_nodes(model: Any) -> None:
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"


# --------------------------------------------------------------------------- quantization


def quantize_int8(name: str, source: Path, data: CalibrationData, out_path: Path,
                  keep_float: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write the INT8 Q/DQ ONNX of ``source`` to ``out_path`` (a temporary path the caller renames); returns facts.

    ``keep_float``: layers kept in float besides the output heads (``keep_float_layers`` of the manifest).
    """
    import onnx  # noqa: PLC0415
    import onnxruntime  # noqa: PLC0415
    from onnxruntime.quantization import (  # noqa: PLC0415
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    class _Reader(CalibrationDataReader):
        def __init__(self, feeds: list[dict[str, Any]]) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._feeds, None)

    if not data.calibration:
        raise BuildError(name, "int8 quantization", "no calibration samples")
    model = load_onnx_checked(source)
    folded = fold_constant_dequantize(model)
    _name_nodes(model)
    with tempfile.TemporaryDirectory(prefix=f"edge-avatar-quant-{name}-") as tmp:
        prepared, pre = Path(tmp) / "prepared.onnx", Path(tmp) / "pre.onnx"
        onnx.save(model, str(prepared))
        try:
            quant_pre_process(str(prepared), str(pre), skip_symbolic_shape=False)
        except Exception as exc:  # noqa: BLE001 - symbolic shape inference can fail on exotic graphs
            log.warning("%s: quant_pre_process with symbolic shapes failed (%s); retrying without", name, exc)
            quant_pre_process(str(prepared), str(pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre))
        heads = output_head_nodes(pre_model)
        weighted = [n.name for n in pre_model.graph.node if n.op_type in QUANTIZED_OP_TYPES]
        float_layers = [n for n in layer_nodes(weighted, keep_float) if n not in heads]
        if keep_float and not float_layers:
            raise BuildError(name, "int8 quantization", f"quantization.keep_float {list(keep_float)} matches no "
                                                        f"Conv/Gemm/MatMul node of {source.name}")
        resampling = [n for n in resampling_nodes(weighted) if n not in heads + float_layers]
        chatter = io.StringIO()  # the calibrators print progress on stdout, which carries our --json
        with contextlib.redirect_stdout(chatter):
            quantize_static(
                str(pre), str(out_path), _Reader(data.calibration),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=list(QUANTIZED_OP_TYPES), nodes_to_exclude=heads + float_layers + resampling,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            )
        if chatter.getvalue().strip():
            log.debug("%s: onnxruntime quantizer: %s", name, chatter.getvalue().strip())
    quantized = onnx.load(str(out_path))
    counts: dict[str, int] = {}
    for node in quantized.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    if not counts.get("QuantizeLinear"):
        with contextlib.suppress(OSError):
            out_path.unlink()
        raise BuildError(name, "int8 quantization", "the quantizer inserted no QuantizeLinear node "
                                                     "(no Conv/Gemm/MatMul to quantize?)")
    return {"onnxruntime": onnxruntime.__version__, "calibration_samples": len(data.calibration),
            "dequantize_folded": folded, "float_heads": heads, "float_layers": float_layers,
            "float_resampling": resampling,
            "weighted_nodes": len(weighted), "qdq_nodes": counts}
