"""The models to build, read from ``engines/*manifest.json``, and each ONNX checked against its entry.

Why this module exists: an engine is only as trustworthy as the ONNX it was
built from. Before anything is quantized or built, every file is checked
against what its manifest promises -- size, sha256, opset, input and output
names, shapes and dtypes -- and a mismatch stops that model with the file
and the field named (a truncated copy, a hand-edited model, a manifest that
was not regenerated). The perception models live in ``engines/manifest.json``;
trained models (planner, renderer) bring their own ``engines/<name>.manifest.json``
with the same entry layout, so a new model needs no change here.

The ``onnx`` package (a core dependency) parses the protobuf: it is the
reference reader of the format and tells a truncated file from a valid one
without running anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_avatar.engines.errors import ManifestError

log = logging.getLogger(__name__)

REPO_ENGINES_DIR = Path(__file__).resolve().parents[2] / "engines"
MAIN_MANIFEST = "manifest.json"
EXTRA_MANIFEST_GLOB = "*.manifest.json"

# Which family a model belongs to decides its calibration data and its accuracy metric.
FAMILY_PREFIXES = (("planner", "planner"), ("renderer", "renderer"))
PERCEPTION_MODELS = ("face_detector", "face_landmarks", "face_blendshapes", "emotion", "palm_detector",
                     "hand_landmarks")


def model_family(name: str) -> str:
    """"perception" (fed by the perception pipeline), "planner", "renderer", or "other" (needs a generator)."""
    if name in PERCEPTION_MODELS:
        return "perception"
    for prefix, family in FAMILY_PREFIXES:
        if name.startswith(prefix):
            return family
    return "other"


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int | str, ...]
    dtype: str

    @staticmethod
    def from_json(data: dict[str, Any]) -> TensorEntry:
        return TensorEntry(str(data["name"]), tuple(data.get("shape", ())), str(data.get("dtype", "float32")))


@dataclass(frozen=True)
class ModelEntry:
    """One ONNX model of a manifest: where it is and what it must look like."""

    name: str
    path: Path
    sha256: str
    bytes: int | None
    opset: int | None
    inputs: tuple[TensorEntry, ...]
    outputs: tuple[TensorEntry, ...]
    manifest_path: Path
    family: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def calibration_hook(self) -> str | None:
        """``"package.module:function"`` named by the manifest for calibration feeds, if any."""
        hook = self.extra.get("calibration")
        return str(hook) if hook else None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(path, "file", f"cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(path, "file", f"not valid JSON ({exc})") from None
    if isinstance(data, dict) and "models" not in data and "file" in data and "sha256" in data:
        # A single-model manifest (e.g. planner.manifest.json): the object itself is the entry.
        name = str(data.get("model") or Path(str(data["file"])).stem)
        return {"models": {name: data}}
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ManifestError(path, "models", "expected a JSON object with a 'models' mapping (or one model's "
                                            "'file' and 'sha256')")
    return data


def load_entries(engines_dir: str | Path | None = None) -> dict[str, ModelEntry]:
    """Every ONNX model named by ``engines_dir``'s manifests (``kind: onnx`` only), by model name."""
    directory = Path(engines_dir).expanduser() if engines_dir else REPO_ENGINES_DIR
    manifests = [directory / MAIN_MANIFEST] if (directory / MAIN_MANIFEST).is_file() else []
    manifests += sorted(p for p in directory.glob(EXTRA_MANIFEST_GLOB) if p.name != MAIN_MANIFEST)
    if not manifests:
        raise ManifestError(directory / MAIN_MANIFEST, "file", "no manifest found (engines/manifest.json or "
                                                               "engines/*.manifest.json)")
    entries: dict[str, ModelEntry] = {}
    for manifest_path in manifests:
        for name, raw in _read_json(manifest_path)["models"].items():
            if not isinstance(raw, dict) or raw.get("kind", "onnx") != "onnx":
                continue
            for key in ("file", "sha256"):
                if key not in raw:
                    raise ManifestError(manifest_path, f"models.{name}.{key}", "missing")
            if name in entries:
                raise ManifestError(manifest_path, f"models.{name}",
                                    f"model name also used by {entries[name].manifest_path.name}")
            known = {"file", "sha256", "bytes", "opset", "inputs", "outputs"}
            entries[name] = ModelEntry(
                name=name,
                path=directory / raw["file"],
                sha256=str(raw["sha256"]),
                bytes=int(raw["bytes"]) if raw.get("bytes") is not None else None,
                opset=int(raw["opset"]) if raw.get("opset") is not None else None,
                inputs=tuple(TensorEntry.from_json(t) for t in raw.get("inputs", [])),
                outputs=tuple(TensorEntry.from_json(t) for t in raw.get("outputs", [])),
                manifest_path=manifest_path,
                family=model_family(name),
                extra={k: v for k, v in raw.items() if k not in known},
            )
    return entries


_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
                11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}


def _graph_tensors(values: Any) -> list[TensorEntry]:
    out = []
    for value in values:
        tensor_type = value.type.tensor_type
        dims: list[int | str] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or "?")
        out.append(TensorEntry(value.name, tuple(dims), _ONNX_DTYPES.get(tensor_type.elem_type, "unknown")))
    return out


def load_onnx_checked(path: Path) -> Any:
    """Parse ``path`` with ``onnx``; a missing, empty, truncated or corrupt file raises ``ManifestError``."""
    import onnx  # noqa: PLC0415 - a core dependency, but only the build needs it
    from google.protobuf.message import DecodeError  # noqa: PLC0415 - shipped with onnx

    if not path.is_file():
        raise ManifestError(path, "file", "not found" if not path.exists() else "not a regular file")
    data = path.read_bytes()
    if not data:
        raise ManifestError(path, "file", "the file is empty (an interrupted copy or write?)")
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ManifestError(path, "file", f"truncated or corrupt: not a valid ONNX protobuf ({exc})") from None
    if not model.graph.node:
        raise ManifestError(path, "graph", "truncated or corrupt: the ONNX graph has no nodes")
    return model


def validate(entry: ModelEntry) -> Any:
    """Check ``entry.path`` against its manifest entry; returns the parsed ``onnx.ModelProto``.

    Order: existence and size first (a truncated file is named as such, not
    as a hash mismatch), then sha256, then the parsed graph (opset, I/O).
    """
    path = entry.path
    where = f"{entry.manifest_path.name} models.{entry.name}"
    if not path.is_file():
        raise ManifestError(path, "file", f"not found (listed in {where})")
    size = path.stat().st_size
    if entry.bytes is not None and size != entry.bytes:
        kind = "truncated" if size < entry.bytes else "larger than expected"
        raise ManifestError(path, "bytes", f"{kind}: {size} bytes, {where}.bytes says {entry.bytes}; restore the "
                                           f"file (git checkout engines/) or regenerate it with its manifest")
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise ManifestError(path, "sha256", f"{actual} does not match {where}.sha256 {entry.sha256}; the file "
                                            f"is corrupt or was changed without regenerating the manifest")
    model = load_onnx_checked(path)
    if entry.opset is not None:
        opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        got = opsets.get("ai.onnx")
        if got != entry.opset:
            raise ManifestError(path, "opset", f"the file has opset {got}, {where}.opset says {entry.opset}")
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [t for t in _graph_tensors(model.graph.input) if t.name not in initializers]
    for kind, declared, actual_tensors in (("inputs", entry.inputs, graph_inputs),
                                           ("outputs", entry.outputs, _graph_tensors(model.graph.output))):
        if not declared:
            continue
        if [t.name for t in declared] != [t.name for t in actual_tensors]:
            raise ManifestError(path, f"{kind}.names", f"the file has {[t.name for t in actual_tensors]}, "
                                                       f"{where}.{kind} says {[t.name for t in declared]}")
        for want, got in zip(declared, actual_tensors):
            if [str(d) for d in want.shape] != [str(d) for d in got.shape]:
                raise ManifestError(path, f"{kind}.{want.name}.shape",
                                    f"the file has {list(got.shape)}, {where} says {list(want.shape)}")
            if want.dtype != got.dtype:
                raise ManifestError(path, f"{kind}.{want.name}.dtype",
                                    f"the file has {got.dtype}, {where} says {want.dtype}")
    return model
