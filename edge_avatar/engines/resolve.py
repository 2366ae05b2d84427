"""``resolve_model(name, config)``: which file the loading code should open for a model, and why.

Why this module exists: the perception, planner and renderer loaders must not
know about caches, keys or benchmarks. They ask once at start-up and get the
file, its precision and a sentence to log::

    from edge_avatar.engines import resolve_model
    resolved = resolve_model("face_detector", config)        # config: the frozen RootConfig
    backend = load_backend(resolved.backend, resolved.path, config.backend)
    log.info("%s: %s (%s)", "face_detector", resolved.precision, resolved.reason)

The answer is the choice ``engines build`` recorded (the fastest candidate
that verified on this machine), re-checked cheaply: the ONNX still has the
hash the artifact was built from, the runtime version, device, board and
power mode are the same, and the artifact file still has its recorded
sha256. Anything else -- no build yet, a JetPack upgrade, a damaged file --
gives the fp32 ONNX with the reason, never an exception: the avatar starts
slower rather than not at all. Only an unknown model name raises.
Standard library only (plus ``onnxruntime``/``tensorrt`` just to read their
version when an artifact for them is chosen, and the quantizer's recipe
fingerprint to check that an INT8 build keeps in float what its manifest
names now).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

from edge_avatar.engines import cache as cache_mod
from edge_avatar.engines.cache import CacheKey, CacheManifest
from edge_avatar.engines.manifest import load_entries, sha256_file

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


class ResolvedModel(NamedTuple):
    """``(path, precision, reason)``; ``backend`` says which inference backend loads ``path``."""

    path: Path
    precision: str
    reason: str

    @property
    def backend(self) -> str:
        return "tensorrt" if self.path.suffix.lower() in ENGINE_SUFFIXES else "onnxruntime"


def _current_runtime_and_device(backend: str) -> tuple[str, str]:
    if backend == "tensorrt":
        from edge_avatar.backends.tensorrt_backend import import_tensorrt  # noqa: PLC0415
        from edge_avatar.engines.tensorrt_build import cuda_device_name  # noqa: PLC0415

        return cache_mod.tensorrt_runtime(import_tensorrt()), cache_mod.gpu_device(cuda_device_name)
    return cache_mod.onnxruntime_runtime(), cache_mod.cpu_device()


def resolve_model(name: str, config: Any) -> ResolvedModel:
    """The file to load for model ``name`` under ``config`` (a ``RootConfig``): chosen build, else fp32 ONNX.

    Raises ``KeyError`` only for a name no manifest in the engines folder lists.
    """
    entries = load_entries(config.perception.engines_dir or None)
    if name not in entries:
        raise KeyError(f"unknown model {name!r}; models in the manifests: {', '.join(sorted(entries))}")
    entry = entries[name]
    board = config.board
    fallback = entry.path

    def fp32(reason: str) -> ResolvedModel:
        return ResolvedModel(fallback, "fp32", reason)

    if config.backend.name == "null":
        return fp32("null backend: the fp32 ONNX's I/O is read, nothing runs")
    cache_dir = cache_mod.board_dir(config.backend.engine_cache_dir, board.name)
    manifest = CacheManifest.load(cache_dir)
    choice = manifest.data["models"].get(name, {}).get("choice")
    if manifest.load_problem:
        return fp32(f"engine cache unusable ({manifest.load_problem}); run `edge-avatar engines build`")
    if not choice:
        return fp32(f"no engine build recorded for board {board.name} in {cache_dir}; "
                    "run `edge-avatar engines build` (fp32 until then)")
    if choice.get("precision") == "fp32" and choice.get("backend") == "onnxruntime":
        if choice.get("onnx_sha256") not in (None, entry.sha256):
            return fp32(f"{entry.path.name} changed since the engine build (manifest sha256 {entry.sha256[:12]}, "
                        f"chosen for {choice['onnx_sha256'][:12]}); run `edge-avatar engines build`")
        return fp32(choice.get("reason", "fp32 chosen"))
    record = manifest.artifact(name, choice.get("artifact", ""))
    if record is None:
        return fp32(f"the chosen {choice.get('artifact')} is missing from {manifest.path}; run `edge-avatar engines "
                    "build`")
    try:
        have = CacheKey.from_dict(record["key"])
        if record["backend"] == "tensorrt" and config.backend.name != "tensorrt":
            return fp32(f"a TensorRT engine was chosen but backend.name is {config.backend.name!r}")
        runtime, device = _current_runtime_and_device(record["backend"])
    except Exception as exc:  # noqa: BLE001 - a missing runtime or a damaged record means fp32, said why
        return fp32(f"cannot check the chosen {choice.get('artifact')}: {exc}")
    problems = []
    if have.onnx_sha256 != entry.sha256:  # the manifest names another model now (the ONNX is checked at build)
        problems.append(f"{entry.path.name} changed since the build (manifest sha256 {entry.sha256[:12]}, built "
                        f"from {have.onnx_sha256[:12]})")
    recipe = have.recipe
    if have.precision == "int8":  # the float layers the manifest names now must be the ones it was built with
        try:
            from edge_avatar.engines.quantize import model_recipe  # noqa: PLC0415

            recipe = model_recipe(entry)
        except Exception as exc:  # noqa: BLE001 - a malformed section or no quantizer: not provably current
            problems.append(f"cannot check its INT8 recipe: {exc}")
    wanted = CacheKey(name, have.onnx_sha256, runtime, device, board.name, board.power_mode, have.precision,
                      recipe, have.calibration)
    problems += wanted.differences(have)
    path = manifest.artifact_path(record)
    if not problems:
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif sha256_file(path) != record.get("sha256"):
            problems.append(f"{path} is damaged (sha256 differs from the build record)")
        elif not record.get("verify", {}).get("passed"):
            problems.append(f"it did not pass verification ({record.get('verify', {}).get('reason', 'not verified')})")
    if problems:
        return fp32(f"the chosen {choice.get('artifact')} build is not usable: {'; '.join(problems)}; using fp32 "
                    "until `edge-avatar engines build` runs")
    return ResolvedModel(path, record["precision"], choice.get("reason", ""))
