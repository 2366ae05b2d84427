"""The engine cache: what was built, for which exact machine, written so that a crash never loses a good engine.

Why this module exists: a TensorRT engine only loads on the TensorRT
version and GPU that built it, and an INT8 Q/DQ ONNX only means something
for the ONNX file and calibration data it came from. So every artifact is
filed under a key made of everything that decides it, and anything that
differs means "rebuild":

    key = sha256(onnx sha256, runtime ("trt-10.3.0" or "ort-1.32.0"), device
                 (GPU name + compute capability, Jetson model, or "cpu-x86_64"),
                 board, power mode, precision, quantization recipe, calibration data)

Layout under ``backend.engine_cache_dir`` (default ``~/.cache/edge-avatar/engines``)::

    <board>/cache-manifest.json                    what was built, verified, timed and chosen
    <board>/timing-cache-trt<version>.bin           TensorRT's layer timing cache (TensorRT builds only)
    <board>/<model>/<model>.<key12>.<precision>.onnx    INT8 Q/DQ ONNX (ONNX Runtime, and TensorRT's input)
    <board>/<model>/<model>.<key12>.<precision>.engine  serialized TensorRT engine

Every file is written to a temporary file in the same folder, flushed,
fsynced and renamed over the old one (``os.replace`` is atomic on POSIX), so
a full disk or a power cut mid-build leaves the previous file and the
previous manifest as they were. Standard library only: ``resolve_model``
reads this at start-up and must stay cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_avatar.engines.errors import EngineError

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
CACHE_MANIFEST_NAME = "cache-manifest.json"
KEY_PREFIX_CHARS = 12


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to ``path``; on success it replaces ``path``, on any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_writer(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def atomic_copy(source: str | Path, target: str | Path) -> None:
    with open(source, "rb") as src, atomic_writer(target, "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            dst.write(block)


def remove_stale_temporaries(directory: Path) -> int:
    """Delete ``.*.tmp`` files a crashed build left behind; returns how many."""
    count = 0
    if directory.is_dir():
        for tmp in directory.rglob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                count += 1
    return count


# --------------------------------------------------------------------------- identity of this machine


def onnxruntime_runtime() -> str:
    """``"ort-<version>"`` (ONNX Runtime is a core dependency)."""
    import onnxruntime  # noqa: PLC0415

    return f"ort-{onnxruntime.__version__}"


def tensorrt_runtime(trt: Any) -> str:
    return f"trt-{getattr(trt, '__version__', 'unknown')}"


def cpu_device() -> str:
    """``cpu-<arch>-<model name>``: ONNX Runtime picks kernels by instruction set, so the CPU is part of the key."""
    model = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    model = line.split(":", 1)[1].strip()
                    break
    return "-".join(p for p in ("cpu", platform.machine() or "unknown", model.replace(" ", "_")) if p)


def gpu_device(cuda_api: Any | None = None) -> str:
    """The GPU an engine is built for: the Jetson module name, else CUDA's device name + compute capability."""
    with contextlib.suppress(OSError):
        model = Path("/proc/device-tree/model").read_bytes().rstrip(b"\0").decode("utf-8", "replace").strip()
        if "jetson" in model.lower() or "nvidia" in model.lower():
            return "jetson-" + model.replace(" ", "_")
    if cuda_api is not None:
        with contextlib.suppress(Exception):
            return str(cuda_api())
    return "gpu-unknown"


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class CacheKey:
    """Everything that decides an artifact; two builds with equal keys are interchangeable."""

    model: str
    onnx_sha256: str
    runtime: str        # "ort-1.32.0" | "trt-10.3.0"
    device: str         # "cpu-x86_64-AMD_EPYC" | "jetson-NVIDIA_Jetson_AGX_Orin" | "NVIDIA_H100 sm90"
    board: str
    power_mode: str
    precision: str      # "int8" | "fp16" | "fp32"
    recipe: str         # quantization / build settings fingerprint
    calibration: str    # calibration data fingerprint ("" when none was used)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> CacheKey:
        return CacheKey(**{k: str(data.get(k, "")) for k in CacheKey.__dataclass_fields__})

    @property
    def digest(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def differences(self, other: CacheKey) -> list[str]:
        """Human-readable reasons ``other`` (what is cached) does not fit ``self`` (what is wanted)."""
        out = []
        for name in CacheKey.__dataclass_fields__:
            want, have = getattr(self, name), getattr(other, name)
            if want != have:
                if name == "runtime" and have.startswith("trt-"):
                    out.append(f"built by TensorRT {have[4:]}, this machine has {want.removeprefix('trt-')} "
                               f"(engines do not load across TensorRT versions, e.g. after a JetPack upgrade)")
                elif name == "runtime":
                    out.append(f"built with {have}, this machine has {want}")
                elif name in ("onnx_sha256", "calibration", "recipe"):
                    out.append(f"{name} changed ({have[:12] or 'none'} -> {want[:12] or 'none'})")
                else:
                    out.append(f"{name} {have!r} != {want!r}")
        return out


def artifact_file_name(key: CacheKey, suffix: str) -> str:
    return f"{key.model}.{key.digest[:KEY_PREFIX_CHARS]}.{key.precision}{suffix}"


def board_dir(cache_root: str | Path, board: str) -> Path:
    return Path(cache_root).expanduser() / board


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------- the cache manifest


class CacheManifest:
    """``<board>/cache-manifest.json``: per model, the artifacts (with key, file hash, verify and bench results)
    and the runtime's choice. Loaded leniently (a damaged manifest means "nothing cached", never a crash),
    saved atomically."""

    def __init__(self, directory: Path, data: dict[str, Any] | None = None, problem: str = "") -> None:
        self.directory = directory
        self.data = data or {"format": CACHE_FORMAT_VERSION, "models": {}}
        self.data.setdefault("models", {})
        self.load_problem = problem

    @property
    def path(self) -> Path:
        return self.directory / CACHE_MANIFEST_NAME

    @classmethod
    def load(cls, directory: Path) -> CacheManifest:
        path = directory / CACHE_MANIFEST_NAME
        if not path.is_file():
            return cls(directory)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("engine cache manifest %s is unreadable (%s); treating the cache as empty", path, exc)
            return cls(directory, problem=f"{path} is unreadable ({exc})")
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT_VERSION:
            return cls(directory, problem=f"{path} has format {data.get('format') if isinstance(data, dict) else '?'}"
                                          f", expected {CACHE_FORMAT_VERSION}")
        return cls(directory, data)

    def save(self) -> None:
        self.data["format"] = CACHE_FORMAT_VERSION
        self.data["updated_utc"] = utc_now()
        atomic_write_json(self.path, self.data)

    def model(self, name: str) -> dict[str, Any]:
        return self.data["models"].setdefault(name, {"artifacts": {}})

    def artifact(self, name: str, precision: str) -> dict[str, Any] | None:
        return self.data["models"].get(name, {}).get("artifacts", {}).get(precision)

    def artifact_path(self, record: dict[str, Any]) -> Path:
        return self.directory / record["file"]


def check_artifact(manifest: CacheManifest, record: dict[str, Any] | None, wanted: CacheKey) -> str | None:
    """None when ``record`` is a usable build for ``wanted``; otherwise the reason it is not."""
    if record is None:
        return "not built yet"
    try:
        have = CacheKey.from_dict(record["key"])
        file_sha = record["sha256"]
        path = manifest.artifact_path(record)
    except (KeyError, TypeError) as exc:
        return f"cache manifest entry is incomplete ({exc})"
    differences = wanted.differences(have)
    if differences:
        return "; ".join(differences)
    if not path.is_file():
        return f"{path} is missing"
    from edge_avatar.engines.manifest import sha256_file  # noqa: PLC0415 - hashlib only

    actual = sha256_file(path)
    if actual != file_sha:
        return f"{path} is damaged (sha256 {actual[:12]} != {file_sha[:12]} recorded when built)"
    return None


class CacheWriteError(EngineError):
    """Writing to the engine cache failed (full disk, read-only folder); the previous files are untouched."""
