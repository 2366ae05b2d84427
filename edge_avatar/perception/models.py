"""Finding, checking and loading the perception models listed in ``engines/manifest.json``.

Why this module exists: the pipeline must run the exact files the manifest
describes (sha256-checked, so a truncated checkout or a hand-edited model is
refused with the file named) through whatever inference backend the config
picks -- ``edge_avatar.backends.load_backend``, ONNX Runtime here, TensorRT on
a Jetson -- and must know the canonical face geometry. Nothing here imports a
runtime itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.backends import InferenceBackend, ModelLoadError, load_backend
from edge_avatar.config import BackendConfig
from edge_avatar.perception.options import PerceptionConfig

log = logging.getLogger(__name__)

REPO_ENGINES_DIR = Path(__file__).resolve().parents[2] / "engines"
MANIFEST_NAME = "manifest.json"

# Our model names (manifest keys) -> the PerceptionConfig field naming the file.
MODEL_FIELDS = {
    "face_detector": "face_detector_model",
    "face_landmarks": "face_landmarks_model",
    "face_blendshapes": "face_blendshapes_model",
    "emotion": "emotion_model",
    "palm_detector": "palm_detector_model",
    "hand_landmarks": "hand_landmarks_model",
}


def engines_dir(config: PerceptionConfig) -> Path:
    return Path(config.engines_dir).expanduser() if config.engines_dir else REPO_ENGINES_DIR


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ModelLoadError(path, "manifest not found; run `python -m edge_avatar.perception.convert` "
                                   "or check out engines/ from the repository")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(path, f"not valid JSON: {exc}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model(config: PerceptionConfig, name: str, manifest: dict[str, Any] | None = None) -> Path:
    """Path of model ``name``; when it is the manifest's file and ``verify_sha256`` is on, its hash is checked."""
    directory = engines_dir(config)
    file_name = getattr(config, MODEL_FIELDS[name]) if name in MODEL_FIELDS else config.face_geometry_file
    path = Path(file_name).expanduser()
    if not path.is_absolute():
        path = directory / path
    if not path.is_file():
        field_name = MODEL_FIELDS.get(name, "face_geometry_file")
        raise ModelLoadError(path, f"perception model {name!r} not found (perception.{field_name})")
    if config.verify_sha256:
        manifest = manifest if manifest is not None else read_manifest(directory)
        entry = manifest.get("models", {}).get(name)
        if entry is not None and Path(entry["file"]).name == path.name and path.parent == directory:
            actual = _sha256(path)
            if actual != entry["sha256"]:
                raise ModelLoadError(path, f"sha256 {actual} does not match the manifest ({entry['sha256']}); "
                                           "the file is corrupt or was changed: re-run the conversion or "
                                           "restore engines/ from the repository")
    return path


@dataclass(frozen=True)
class FaceGeometry:
    """The canonical face (cm, x right, y up, z toward the camera) and the Procrustes landmark weights."""

    canonical_cm: np.ndarray        # (468, 3)
    procrustes_ids: np.ndarray      # (33,) landmark indices
    procrustes_weights: np.ndarray  # (33,)
    triangles: np.ndarray           # (898, 3)


@lru_cache(maxsize=4)
def _load_geometry(path: str) -> FaceGeometry:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return FaceGeometry(
        canonical_cm=np.asarray(data["canonical_vertices_cm"], dtype=np.float64),
        procrustes_ids=np.asarray(data["procrustes_landmark_ids"], dtype=np.int64),
        procrustes_weights=np.asarray(data["procrustes_weights"], dtype=np.float64),
        triangles=np.asarray(data["triangles"], dtype=np.int64),
    )


def load_face_geometry(config: PerceptionConfig) -> FaceGeometry:
    return _load_geometry(str(resolve_model(config, "face_geometry")))


class ModelSet:
    """The perception networks, each an ``InferenceBackend``; hands only when enabled."""

    def __init__(self, config: PerceptionConfig, backend: BackendConfig | None = None, root: Any = None):
        """``root`` (the RootConfig) lets the engine build's choice per model apply (edge_avatar.engines)."""
        backend = backend or BackendConfig()
        directory = engines_dir(config)
        manifest = read_manifest(directory) if config.verify_sha256 else None
        self.backend_name = backend.name
        self._backends: dict[str, InferenceBackend] = {}
        self.choices: dict[str, dict[str, str]] = {}  # name -> backend, precision, reason (for reports)
        names = ["face_detector", "face_landmarks", "face_blendshapes", "emotion"]
        if config.hands_enabled:
            names += ["palm_detector", "hand_landmarks"]
        try:
            for name in names:
                path, backend_name, precision, reason = self._choose(config, name, manifest, backend, root)
                self._backends[name] = load_backend(backend_name, path, backend)
                self.choices[name] = {"backend": backend_name, "precision": precision, "reason": reason}
                log.info("%s: %s %s (%s)", name, backend_name, precision, reason)
        except Exception:
            self.close()
            raise
        self.geometry = load_face_geometry(config)

    @staticmethod
    def _choose(config: PerceptionConfig, name: str, manifest, backend: BackendConfig, root: Any):
        """(path, backend name, precision, reason): the verified, faster build if one exists, else fp32 ONNX."""
        if root is not None:
            from edge_avatar.engines import resolve_model as resolve_engine  # noqa: PLC0415

            resolved = resolve_engine(name, root)
            if resolved.precision != "fp32":
                return resolved.path, resolved.backend, resolved.precision, resolved.reason
            reason = resolved.reason
        else:
            reason = "fp32 ONNX (no engine choice consulted)"
        # The TensorRT backend loads only built engines; the fp32 ONNX runs through ONNX Runtime.
        backend_name = "onnxruntime" if backend.name == "tensorrt" else backend.name
        return resolve_model(config, name, manifest), backend_name, "fp32", reason

    def get(self, name: str) -> InferenceBackend | None:
        return self._backends.get(name)

    def __getitem__(self, name: str) -> InferenceBackend:
        return self._backends[name]

    def names(self) -> list[str]:
        return list(self._backends)

    def warm_up(self, iterations: int = 2) -> dict[str, float]:
        return {name: b.warm_up(iterations) for name, b in self._backends.items()}

    def close(self) -> None:
        for b in self._backends.values():
            b.close()
        self._backends.clear()
