"""Build a TensorRT 10 engine from an ONNX (the INT8 Q/DQ one or the float original) on the device itself.

Why this module exists: engines are not portable across TensorRT versions or
GPUs, so they are built where they run, at first boot and after a JetPack
upgrade (``systemd/edge-avatar-engines.service``). Only the TensorRT 10
Python API is used, imported lazily (``import edge_avatar.engines`` works on
any machine):

- INT8 is explicit quantization from the Q/DQ ONNX. On TensorRT >= 10.12
  the network is strongly typed (``1 << int(NetworkDefinitionCreationFlag.
  STRONGLY_TYPED)``; the weakly typed precision flags are deprecated there):
  the Q/DQ nodes decide what runs in INT8 and the rest keeps the ONNX's
  types. On 10.3 (JetPack 6) the network is weakly typed with the ``INT8``
  and ``FP16`` builder flags, so the layers Q/DQ leaves in float may run in
  FP16 (the FP16 fallback).
- FP16 and FP32 engines come from the float ONNX (``FP16`` flag for fp16).
- DLA when the board asks for it (``default_device_type = DeviceType.DLA``,
  ``DLA_core``, ``GPU_FALLBACK`` for the layers DLA cannot run).
- The workspace limit and ``builder_optimization_level`` come from the board
  config; a timing cache next to the engines makes a rebuild fast; dynamic
  input dims get an optimisation profile (min 1, opt/max from the data or
  the manifest's ``profiles``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_avatar.engines.cache import atomic_write_bytes
from edge_avatar.engines.errors import BuildError

log = logging.getLogger(__name__)

STRONGLY_TYPED_MIN_VERSION = (10, 12)


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in str(version).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def uses_strong_typing(trt: Any, precision: str) -> bool:
    """Strongly typed networks for INT8 Q/DQ on TensorRT >= 10.12; weakly typed with builder flags otherwise."""
    return precision == "int8" and version_tuple(getattr(trt, "__version__", "0")) >= STRONGLY_TYPED_MIN_VERSION


def cuda_device_name() -> str:
    """``"<GPU name> sm<major><minor>"`` through cuda-python or pycuda; raises when neither can answer."""
    try:
        try:
            from cuda.bindings import runtime as cudart  # noqa: PLC0415
        except ImportError:
            from cuda import cudart  # noqa: PLC0415
        err, props = cudart.cudaGetDeviceProperties(0)
        if getattr(err, "value", err) != 0:
            raise RuntimeError(f"cudaGetDeviceProperties failed: {err}")
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return f"{name.strip(chr(0)).strip()} sm{props.major}{props.minor}".replace(" ", "_")
    except ImportError:
        import pycuda.autoinit  # noqa: F401, PLC0415
        import pycuda.driver as drv  # noqa: PLC0415

        device = drv.Device(0)
        major, minor = device.compute_capability()
        return f"{device.name()} sm{major}{minor}".replace(" ", "_")


def _profile_shapes(name: str, shape: Sequence[int], samples: Sequence[Sequence[int]],
                    declared: dict[str, Any] | None) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) for one dynamic input: the manifest's ``profiles`` entry, else 1 / data / data."""
    if declared and name in declared:
        entry = declared[name]
        return tuple(entry["min"]), tuple(entry["opt"]), tuple(entry["max"])
    if not samples:
        raise BuildError(name, "tensorrt profile", f"input {name!r} has dynamic dims {list(shape)} and neither "
                                                   "calibration data nor a manifest 'profiles' entry gives its size")
    opt = tuple(int(d) for d in samples[0])
    high = tuple(max(int(s[i]) for s in samples) for i in range(len(shape)))
    low = tuple(1 if int(d) < 0 else int(d) for d in shape)
    return low, opt, high


def build_engine(trt: Any, name: str, onnx_path: Path, precision: str, board: Any, timing_cache_path: Path,
                 input_samples: dict[str, list[tuple[int, ...]]] | None = None,
                 declared_profiles: dict[str, Any] | None = None,
                 say: Callable[[str], None] | None = None) -> tuple[bytes, dict[str, Any]]:
    """Serialized engine bytes for ``onnx_path`` and the facts of the build (flags, DLA, profiles).

    Raises ``BuildError`` naming the stage (parse, build) and TensorRT's own messages.
    """
    from edge_avatar.backends.tensorrt_backend import _trt_logger  # noqa: PLC0415 - one logger per process

    trt_logger = _trt_logger(trt)
    mark = trt_logger.error_count
    builder = trt.Builder(trt_logger)
    strongly_typed = uses_strong_typing(trt, precision)
    flags = (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(name, "tensorrt onnx parse", "; ".join(errors) or "the parser gave no reason")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(board.engine_workspace_mb) * (1 << 20))
    config.builder_optimization_level = int(board.builder_optimization_level)
    builder_flags: list[str] = []
    if not strongly_typed:
        if precision == "int8":
            builder_flags = ["INT8", "FP16"]  # FP16 fallback for the layers Q/DQ leaves in float
        elif precision == "fp16":
            builder_flags = ["FP16"]
        for flag in builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))

    dla = None
    if board.use_dla:
        cores = int(getattr(builder, "num_DLA_cores", 0))
        if precision == "fp32":
            log.warning("%s: DLA runs fp16/int8 only; building the fp32 engine for the GPU", name)
        elif board.dla_core < cores:
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = int(board.dla_core)
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
            builder_flags.append("GPU_FALLBACK")
            dla = int(board.dla_core)
        else:
            log.warning("%s: the board config asks for DLA core %d but this device has %d DLA cores; "
                        "building for the GPU", name, board.dla_core, cores)

    cache_bytes = timing_cache_path.read_bytes() if timing_cache_path.is_file() else b""
    timing_cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(timing_cache, False):
        log.warning("%s: timing cache %s does not match this TensorRT/GPU; starting a new one", name, timing_cache_path)
        timing_cache = config.create_timing_cache(b"")
        config.set_timing_cache(timing_cache, False)

    profiles: dict[str, dict[str, list[int]]] = {}
    profile = None
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        shape = tuple(int(d) for d in tensor.shape)
        if all(d >= 0 for d in shape):
            continue
        low, opt, high = _profile_shapes(tensor.name, shape, (input_samples or {}).get(tensor.name, []),
                                         declared_profiles)
        profile = profile or builder.create_optimization_profile()
        profile.set_shape(tensor.name, low, opt, high)
        profiles[tensor.name] = {"min": list(low), "opt": list(opt), "max": list(high)}
    if profile is not None:
        config.add_optimization_profile(profile)

    if say:
        typing = "strongly typed" if strongly_typed else "flags " + (",".join(builder_flags) or "none (fp32)")
        say(f"  tensorrt {trt.__version__}: building {precision} ({typing}"
            f"{f', DLA {dla}' if dla is not None else ''}, workspace {board.engine_workspace_mb} MB, "
            f"optimisation level {board.builder_optimization_level})")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        errors = trt_logger.errors_since(mark)
        raise BuildError(name, f"tensorrt {precision} build", "; ".join(errors) or "build_serialized_network "
                                                                                  "returned None (see the log)")
    serialized_cache = config.get_timing_cache().serialize()
    atomic_write_bytes(timing_cache_path, bytes(serialized_cache))
    facts = {"tensorrt": str(trt.__version__), "strongly_typed": strongly_typed, "builder_flags": builder_flags,
             "dla_core": dla, "workspace_mb": int(board.engine_workspace_mb),
             "builder_optimization_level": int(board.builder_optimization_level), "profiles": profiles}
    return bytes(plan), facts
