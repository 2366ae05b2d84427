"""Inference backends, picked by name from the config.

Why this package exists: the models run in ONNX Runtime on a development
machine, in native TensorRT on a Jetson, and not at all in pipeline tests;
the rest of the code sees one small interface (``InferenceBackend``). Each
backend lives in its own module and imports its runtime only when chosen, so
``import edge_avatar.backends`` pulls in neither onnxruntime nor tensorrt and
a missing runtime is reported as ``BackendUnavailable`` with the install hint.

    backend = load_backend(config.backend.name, "engines/planner.onnx", config.backend)
    backend.warm_up()
    outputs = backend.run({"token": token})
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from edge_avatar.backends.base import (
    BackendUnavailable,
    InferenceBackend,
    ModelLoadError,
    TensorSpec,
    TimingSummary,
    summarize_ms,
    time_call_ms,
    time_calls_ms,
    validate_feeds,
)
from edge_avatar.config import BackendConfig

if TYPE_CHECKING:
    from edge_avatar.backends.tensorrt_backend import SharedStream

__all__ = [
    "BACKEND_NAMES",
    "BackendUnavailable",
    "InferenceBackend",
    "ModelLoadError",
    "TensorSpec",
    "TimingSummary",
    "available_backends",
    "load_backend",
    "summarize_ms",
    "time_call_ms",
    "time_calls_ms",
    "validate_feeds",
]

# name -> module inside this package; imported only when the backend is asked for.
_MODULES = {
    "onnxruntime": "edge_avatar.backends.onnxruntime_backend",
    "tensorrt": "edge_avatar.backends.tensorrt_backend",
    "null": "edge_avatar.backends.null_backend",
}
BACKEND_NAMES = tuple(_MODULES)


def _check_name(name: str) -> None:
    if name not in _MODULES:
        raise ValueError(f"unknown inference backend {name!r}; known backends: {', '.join(BACKEND_NAMES)}")


def load_backend(name: str, model_path: str | Path, config: BackendConfig | None = None,
                 stream: SharedStream | None = None) -> InferenceBackend:
    """Create backend ``name`` for ``model_path``.

    - ``onnxruntime``: an ``.onnx`` file, providers and threads from ``config``.
    - ``tensorrt``: a serialized engine; ``stream`` is the tick's ``SharedStream``
      (a private stream is created when it is None).
    - ``null``: an ``.onnx`` file whose declared I/O is read, not run.

    ``stream`` is used only by ``tensorrt``. Raises ``ValueError`` for an
    unknown name, ``BackendUnavailable`` when the runtime is not installed and
    ``ModelLoadError`` when the file cannot be loaded.
    """
    _check_name(name)
    config = config or BackendConfig()
    module = importlib.import_module(_MODULES[name])
    if name == "onnxruntime":
        return module.OnnxRuntimeBackend(model_path, config)
    if name == "tensorrt":
        return module.TensorRTBackend(model_path, config, stream=stream)
    return module.NullBackend.from_onnx(model_path)


def available_backends() -> dict[str, str]:
    """Backend name -> ``"ok"``, or the reason it cannot be used here (with the install hint)."""
    status: dict[str, str] = {}
    for name, module_name in _MODULES.items():
        try:
            module = importlib.import_module(module_name)
            check = getattr(module, "check_available", None)
            if check is not None:
                check()
        except BackendUnavailable as exc:
            status[name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - a broken install must show up here, not crash the listing
            status[name] = f"unavailable: {type(exc).__name__}: {exc}"
        else:
            status[name] = "ok"
    return status
