"""ONNX Runtime backend: the reference path that runs everywhere.

Why this module exists: development, CI and any non-Jetson machine run the
same ONNX models the device runs, so every accelerated path has a CPU
reference to be compared against. ONNX Runtime was chosen because it runs the
exact ``.onnx`` files in ``engines/`` without conversion, is a pip wheel on
x86 and aarch64, and on a Jetson the same code can reach the GPU through its
CUDA and TensorRT execution providers (the onnxruntime-gpu wheel for JetPack).

``onnxruntime`` is imported only when a session is created, so importing
``edge_avatar.backends`` stays free.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.backends import cpu_layout
from edge_avatar.backends.base import (
    BackendUnavailable,
    InferenceBackend,
    ModelLoadError,
    TensorSpec,
)
from edge_avatar.config import BackendConfig

logger = logging.getLogger(__name__)

INSTALL_HINT = ("pip install onnxruntime (on a Jetson, the onnxruntime-gpu wheel built for your JetPack "
                "from NVIDIA's Jetson AI Lab index gives the CUDA and TensorRT execution providers)")

# ONNX Runtime's type strings -> numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}

# Session-creation failures, by ONNX Runtime exception class name -> what to tell the operator.
_LOAD_FAILURES = {
    "InvalidProtobuf": "the file is truncated or corrupt (not a valid ONNX protobuf)",
    "InvalidGraph": "the ONNX graph is invalid",
    "NotImplemented": "unsupported by this onnxruntime build (an operator or opset it does not implement)",
    "NoSuchFile": "file not found",
}


def import_onnxruntime() -> Any:
    """Import onnxruntime or raise ``BackendUnavailable`` with the install hint."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable("onnxruntime", "the Python package 'onnxruntime'", INSTALL_HINT,
                                 str(exc)) from exc
    return onnxruntime


def check_available() -> None:
    import_onnxruntime()


def select_providers(requested: tuple[str, ...] | list[str], available: list[str]) -> list[str]:
    """Keep the requested providers that this build has, in order; log the dropped ones.

    Falls back to the CPU provider when nothing requested is available, so a
    Jetson config still runs (slowly) on a development machine.
    """
    kept = [p for p in requested if p in available]
    dropped = [p for p in requested if p not in available]
    if dropped:
        logger.warning("onnxruntime: dropping execution providers not available in this build: %s "
                       "(available: %s)", ", ".join(dropped), ", ".join(available))
    if not kept:
        logger.warning("onnxruntime: none of the requested providers is available; using CPUExecutionProvider")
        kept = ["CPUExecutionProvider"]
    return kept


def _provider_options(provider: str, config: BackendConfig) -> dict[str, str]:
    """Per-provider options: the TensorRT EP caches its engines where our native engines live."""
    if provider == "TensorrtExecutionProvider":
        cache_dir = Path(config.engine_cache_dir).expanduser() / "onnxruntime-trt"
        cache_dir.mkdir(parents=True, exist_ok=True)
        return {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache_dir),
        }
    return {}


def _spec_from_node_arg(arg: Any, model_path: Path) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise ModelLoadError(model_path, f"unsupported: tensor {arg.name!r} has type {arg.type}; "
                                         f"supported: {', '.join(sorted(set(_ORT_TYPES.values())))}")
    shape = tuple(d if isinstance(d, (int, str)) else None for d in (arg.shape or []))
    return TensorSpec(arg.name, shape, dtype)


class OnnxRuntimeBackend(InferenceBackend):
    """One ``onnxruntime.InferenceSession`` over one ``.onnx`` file."""

    name = "onnxruntime"

    def __init__(self, model_path: str | Path, config: BackendConfig | None = None) -> None:
        super().__init__(model_path)
        config = config or BackendConfig()
        ort = import_onnxruntime()
        path = self.model_path
        if not path.is_file():
            raise ModelLoadError(path, "file not found" if not path.exists() else "not a regular file")
        if path.stat().st_size == 0:
            raise ModelLoadError(path, "the file is empty (truncated download or interrupted write?)")

        options = ort.SessionOptions()
        if config.intra_op_threads > 0:
            options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = 1
        if config.intra_op_threads != 1 and not config.onnxruntime_spin_wait:   # see BackendConfig
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        providers = select_providers(config.onnxruntime_providers, ort.get_available_providers())
        provider_options = [_provider_options(p, config) for p in providers]
        widened: bytes | None = None
        self.channels_widened_runs = 0
        if providers[0] == "CPUExecutionProvider":      # the CPU's blocked layout (cpu_layout's docstring)
            try:
                widened, self.channels_widened_runs = cpu_layout.prepare_for_cpu(
                    path, cpu_layout.nchwc_block_channels())
            except Exception as exc:  # noqa: BLE001 - the file as it is still runs; the session reports a broken one
                logger.warning("onnxruntime: %s is loaded as it is, not widened for this CPU's layout: %s",
                               path.name, exc)
        try:
            try:
                self._session = ort.InferenceSession(widened if widened is not None else str(path),
                                                     sess_options=options, providers=providers,
                                                     provider_options=provider_options)
            except Exception as exc:  # noqa: BLE001 - a widened copy that fails: fall back to the file itself
                if widened is None:
                    raise
                logger.warning("onnxruntime: the widened %s failed to load (%s); loading the file as it is",
                               path.name, str(exc).strip())
                self.channels_widened_runs = 0
                self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers,
                                                     provider_options=provider_options)
        except Exception as exc:  # onnxruntime raises its own pybind classes; map them by name
            reason = _LOAD_FAILURES.get(type(exc).__name__, "onnxruntime could not load it")
            raise ModelLoadError(path, f"{reason}: {str(exc).strip()}") from exc

        self._inputs = [_spec_from_node_arg(a, path) for a in self._session.get_inputs()]
        self._outputs = [_spec_from_node_arg(a, path) for a in self._session.get_outputs()]
        self._output_names = [s.name for s in self._outputs]
        self.providers = list(self._session.get_providers())
        logger.info("onnxruntime: loaded %s with %s (intra-op threads %s)", path.name,
                    ", ".join(self.providers), config.intra_op_threads or "default")

    def _extra_spec(self) -> dict[str, Any]:
        return {"providers": list(self.providers), "channel_runs_widened_for_cpu": self.channels_widened_runs}

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._session.run(self._output_names, dict(feeds))
        except Exception as exc:
            raise RuntimeError(f"model {self.model_path}: onnxruntime inference failed: {exc}") from exc
        return dict(zip(self._output_names, values))

    def close(self) -> None:
        if not self._closed:
            self._session = None  # the session frees its arena when collected
        super().close()
