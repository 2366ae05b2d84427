"""The TensorRT engine build, against a fake ``tensorrt`` shaped like the TensorRT 10 builder API, and a real one.

The fake extends the runtime fake of ``test_backends`` (same ``Runtime``,
engines and CUDA stream semantics) with ``Builder``, ``OnnxParser``, the
builder config (flags, memory pools, optimisation level, DLA, timing
cache), optimisation profiles and ``build_serialized_network``. Its
"engines" compute with ONNX Runtime on the very file TensorRT was asked to
build, so the orchestrator's verify, bench and choice run end to end through
the real ``TensorRTBackend``. It records every builder call, so the tests
check what TensorRT 10.3 (weakly typed, INT8 + FP16 flags) and 10.13
(strongly typed) builds are asked for. The ``trt`` tests run the same build
on a real GPU and skip, saying why, elsewhere.
"""

from __future__ import annotations

import enum
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from test_backends import FAKE_OPS, FAKE_PLAN_MAGIC, FakeCudaRuntime, make_fake_tensorrt
from test_engines_support import config_for, make_engines_dir

from edge_avatar.config import load_config
from edge_avatar.engines import BuildError, resolve_model
from edge_avatar.engines.build import BuildOptions, build_engines
from edge_avatar.engines.cache import CacheManifest, board_dir
from edge_avatar.engines.calibration import CalibrationOptions
from edge_avatar.engines.tensorrt_build import build_engine, uses_strong_typing

FAST = BuildOptions(calibration=CalibrationOptions(sequence_samples=24), bench_warmup=1, bench_iterations=3)
ONNX_TO_TRT = {1: "FLOAT", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "HALF"}


def add_fake_builder(trt: types.ModuleType, monkeypatch: pytest.MonkeyPatch, version: str = "10.3.0") -> None:
    """The TensorRT 10 builder API on top of the runtime fake; every call is recorded in ``trt.builds``."""
    trt.__version__ = version
    trt.builds = []

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        STRONGLY_TYPED = 1  # the real enum value in TensorRT 10.x (EXPLICIT_BATCH = 0 is deprecated)

    class BuilderFlag(enum.IntEnum):
        FP16 = 0
        INT8 = 1
        GPU_FALLBACK = 3

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0

    class DeviceType(enum.IntEnum):
        GPU = 0
        DLA = 1

    class ITensor:
        def __init__(self, name: str, shape: tuple[int, ...], dtype: str) -> None:
            self.name, self.shape, self.dtype = name, shape, dtype

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[ITensor] = []
            self.outputs: list[ITensor] = []
            self.source: Path | None = None

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, index: int) -> ITensor:
            return self.inputs[index]

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Any) -> None:
            self.network, self.errors = network, []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> str:
            return self.errors[index]

        def parse(self, model: bytes, path: str = "") -> bool:
            try:
                proto = onnx.load_from_string(bytes(model))
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"ModelImporter.cpp: failed to parse ONNX model: {exc}")
                return False
            if not proto.graph.node:
                self.errors.append("ModelImporter.cpp: empty graph")
                return False

            def tensors(values: Any, dynamic_batch: bool) -> list[ITensor]:
                out = []
                for v in values:
                    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)
                    out.append(ITensor(v.name, dims, ONNX_TO_TRT[v.type.tensor_type.elem_type]))
                return out
            inits = {i.name for i in proto.graph.initializer}
            self.network.inputs = tensors([v for v in proto.graph.input if v.name not in inits], False)
            self.network.outputs = tensors(proto.graph.output, False)
            self.network.source = Path(path)
            return True

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class ITimingCache:
        def __init__(self, blob: bytes) -> None:
            self.entries = json.loads(blob) if blob else []

        def serialize(self) -> bytes:
            return json.dumps(self.entries).encode()

    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags: set[str] = set()
            self.pools: dict[str, int] = {}
            self.builder_optimization_level = 3
            self.default_device_type = DeviceType.GPU
            self.DLA_core = -1
            self.profiles: list[IOptimizationProfile] = []
            self.timing_cache: ITimingCache | None = None
            self.created_caches: list[bytes] = []

        def set_flag(self, flag: BuilderFlag) -> None:
            self.flags.add(BuilderFlag(flag).name)

        def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
            self.pools[MemoryPoolType(pool).name] = int(size)

        def create_timing_cache(self, blob: bytes) -> ITimingCache:
            self.created_caches.append(bytes(blob))
            return ITimingCache(bytes(blob))

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            self.timing_cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache:
            return self.timing_cache

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class Builder:
        num_DLA_cores = 2

        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            return INetworkDefinition(int(flags))

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
            strongly = bool(network.flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            if strongly and config.flags & {"INT8", "FP16"}:
                self.logger.log(trt.ILogger.Severity.ERROR, "IBuilder::buildSerializedNetwork: Error Code 3: "
                                "precision flags are not allowed on a strongly typed network")
                return None
            trt.builds.append({"network": network, "config": config, "strongly_typed": strongly})
            config.timing_cache.entries.append(network.source.name)
            source = str(network.source)
            op = f"ort:{source}"
            monkeypatch.setitem(FAKE_OPS, op, _onnx_runner(source))
            tensors = [{"name": t.name, "mode": mode, "shape": list(t.shape), "dtype": t.dtype}
                       for mode, group in (("input", network.inputs), ("output", network.outputs)) for t in group]
            profiles = {n: [list(s) for s in shapes] for p in config.profiles for n, shapes in p.shapes.items()}
            return FAKE_PLAN_MAGIC + json.dumps({"op": op, "tensors": tensors, "profiles": profiles}).encode()

    for name, value in dict(NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag, BuilderFlag=BuilderFlag,
                            MemoryPoolType=MemoryPoolType, DeviceType=DeviceType, Builder=Builder,
                            OnnxParser=OnnxParser).items():
        setattr(trt, name, value)


def _onnx_runner(path: str):
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda tensors: dict(zip(names, session.run(names, {k: v for k, v in tensors.items()})))


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch):
    """Fake tensorrt (runtime + builder) and fake cuda-python in sys.modules, with a device name."""
    cuda = FakeCudaRuntime()
    trt = make_fake_tensorrt(cuda)
    add_fake_builder(trt, monkeypatch)
    runtime_module = cuda.module()
    runtime_module.cudaGetDeviceProperties = lambda index: (
        0, types.SimpleNamespace(name=b"Fake Orin GPU", major=8, minor=7))
    package, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    package.__path__, bindings.__path__ = [], []
    package.bindings, bindings.runtime = bindings, runtime_module
    for name, module in (("tensorrt", trt), ("cuda", package), ("cuda.bindings", bindings),
                         ("cuda.bindings.runtime", runtime_module), ("pycuda", None), ("pycuda.driver", None)):
        monkeypatch.setitem(sys.modules, name, module)
    return trt


class Board:
    def __init__(self, **changes: Any) -> None:
        self.engine_workspace_mb, self.builder_optimization_level = 512, 4
        self.use_dla, self.dla_core, self.precision = False, 0, "int8"
        self.__dict__.update(changes)


# --------------------------------------------------------------------------- build_engine against the API


def test_trt_10_3_int8_is_weakly_typed_with_int8_and_fp16_flags(fake_trt, tmp_path: Path) -> None:
    engines = make_engines_dir(tmp_path)
    cache_path = tmp_path / "timing.bin"
    plan, facts = build_engine(fake_trt, "renderer_4", engines / "renderer_4.onnx", "int8", Board(), cache_path)
    build = fake_trt.builds[-1]
    assert not build["strongly_typed"] and build["network"].flags == 0
    assert build["config"].flags == {"INT8", "FP16"}                  # FP16 fallback for the float layers
    assert build["config"].pools == {"WORKSPACE": 512 * 1024 * 1024}
    assert build["config"].builder_optimization_level == 4
    assert facts["builder_flags"] == ["INT8", "FP16"] and facts["tensorrt"] == "10.3.0"
    assert plan.startswith(FAKE_PLAN_MAGIC) and cache_path.is_file()


def test_trt_10_13_int8_is_strongly_typed_without_precision_flags(fake_trt, tmp_path: Path) -> None:
    fake_trt.__version__ = "10.13.2"
    engines = make_engines_dir(tmp_path)
    assert uses_strong_typing(fake_trt, "int8") and not uses_strong_typing(fake_trt, "fp16")
    build_engine(fake_trt, "renderer_4", engines / "renderer_4.onnx", "int8", Board(), tmp_path / "t.bin")
    build = fake_trt.builds[-1]
    strongly_typed_flag = 1 << int(fake_trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert build["strongly_typed"] and build["network"].flags == strongly_typed_flag
    assert build["config"].flags == set()
    build_engine(fake_trt, "renderer_4", engines / "renderer_4.onnx", "fp16", Board(), tmp_path / "t.bin")
    assert fake_trt.builds[-1]["config"].flags == {"FP16"} and not fake_trt.builds[-1]["strongly_typed"]


def test_dla_with_gpu_fallback_when_the_board_asks(fake_trt, tmp_path: Path) -> None:
    engines = make_engines_dir(tmp_path)
    build_engine(fake_trt, "renderer_4", engines / "renderer_4.onnx", "fp16", Board(use_dla=True, dla_core=1),
                 tmp_path / "t.bin")
    config = fake_trt.builds[-1]["config"]
    assert config.default_device_type == fake_trt.DeviceType.DLA and config.DLA_core == 1
    assert "GPU_FALLBACK" in config.flags
    build_engine(fake_trt, "renderer_4", engines / "renderer_4.onnx", "fp16", Board(use_dla=True, dla_core=5),
                 tmp_path / "t.bin")  # this device has 2 DLA cores: build for the GPU
    assert fake_trt.builds[-1]["config"].default_device_type == fake_trt.DeviceType.GPU


def test_timing_cache_is_saved_and_reused(fake_trt, tmp_path: Path) -> None:
    engines = make_engines_dir(tmp_path)
    cache_path = tmp_path / "timing-cache-trt-10.3.0.bin"
    build_engine(fake_trt, "renderer_4", engines / "renderer_4.onnx", "fp16", Board(), cache_path)
    assert fake_trt.builds[-1]["config"].created_caches == [b""]
    first = cache_path.read_bytes()
    build_engine(fake_trt, "renderer_4", engines / "renderer_4.onnx", "int8", Board(), cache_path)
    assert fake_trt.builds[-1]["config"].created_caches == [first]  # the previous timings seed the next build


def test_dynamic_inputs_get_an_optimisation_profile(fake_trt, tmp_path: Path) -> None:
    from test_backends import build_onnx_model, make_weights  # a conv net with a dynamic batch

    path = build_onnx_model(tmp_path / "dyn.onnx", make_weights())
    build_engine(fake_trt, "dyn", path, "fp16", Board(), tmp_path / "t.bin",
                 input_samples={"x": [(2, 3, 8, 8), (4, 3, 8, 8)]})
    (profile,) = fake_trt.builds[-1]["config"].profiles
    assert profile.shapes["x"] == ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))
    with pytest.raises(BuildError, match="dynamic dims"):
        build_engine(fake_trt, "dyn", path, "fp16", Board(), tmp_path / "t.bin")


def test_parse_and_build_failures_name_the_stage(fake_trt, tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(BuildError, match="tensorrt onnx parse failed: ModelImporter"):
        build_engine(fake_trt, "bad", bad, "fp16", Board(), tmp_path / "t.bin")

    def out_of_memory(self, network, config):
        self.logger.log(fake_trt.ILogger.Severity.ERROR, "Error Code 2: OutOfMemory (workspace too small)")
        return None

    monkeypatch.setattr(fake_trt.Builder, "build_serialized_network", out_of_memory)
    engines = make_engines_dir(tmp_path / "e")
    with pytest.raises(BuildError, match="tensorrt fp16 build failed: .*OutOfMemory") as info:
        build_engine(fake_trt, "renderer_4", engines / "renderer_4.onnx", "fp16", Board(), tmp_path / "t.bin")
    assert info.value.model == "renderer_4" and not (tmp_path / "t.bin").exists()


# --------------------------------------------------------------------------- the whole build with TensorRT


def _trt_config(engines: Path, cache: Path):
    return config_for(engines, cache, "backend.name=tensorrt", "board.precision=int8")


def test_build_with_tensorrt_verifies_engines_and_resolve_picks_one(fake_trt, tmp_path: Path, monkeypatch) -> None:
    engines = make_engines_dir(tmp_path)
    config = _trt_config(engines, tmp_path / "cache")
    timings = {"onnxruntime:fp32": 3.0, "onnxruntime:int8": 4.0, "tensorrt:int8": 0.5, "tensorrt:fp16": 0.8}
    monkeypatch.setattr("edge_avatar.engines.bench.time_interleaved_ms", lambda runners, *a, **k: {
        n: {"p50_ms": timings[n], "p95_ms": timings[n] * 1.2} for n in runners})
    lines: list[str] = []
    (report,) = build_engines(config, FAST, lines.append)
    assert report.ok, report.errors
    manifest = CacheManifest.load(board_dir(config.backend.engine_cache_dir, config.board.name))
    arts = manifest.data["models"]["renderer_4"]["artifacts"]
    assert set(arts) == {"onnxruntime:int8", "tensorrt:int8", "tensorrt:fp16"}
    assert arts["tensorrt:int8"]["key"]["runtime"] == "trt-10.3.0"
    assert arts["tensorrt:int8"]["key"]["device"] == "Fake_Orin_GPU_sm87"
    assert arts["tensorrt:int8"]["file"].endswith(".int8.engine") and arts["tensorrt:int8"]["verify"]["passed"]
    assert Path(fake_trt.builds[0]["network"].source).name.endswith(".int8.onnx")  # built from the Q/DQ ONNX
    assert (manifest.directory / "timing-cache-trt-10.3.0.bin").is_file()
    assert any("building the TensorRT int8 engine" in line for line in lines)

    resolved = resolve_model("renderer_4", config)
    assert resolved.backend == "tensorrt" and resolved.precision == "int8" and resolved.path.suffix == ".engine"
    assert "tensorrt:int8" in resolved.reason and "p50 0.50 ms" in resolved.reason

    # JetPack upgrade: TensorRT 10.13 cannot load 10.3 engines. Until the build runs, fp32 with the reason.
    fake_trt.__version__ = "10.13.1"
    resolved = resolve_model("renderer_4", config)
    assert resolved.precision == "fp32" and "built by TensorRT 10.3.0, this machine has 10.13.1" in resolved.reason
    lines.clear()
    timings = {**timings, "tensorrt:int8": 0.4}
    (report,) = build_engines(config, FAST, lines.append)
    assert report.ok, report.errors
    assert any("tensorrt:int8: building (built by TensorRT 10.3.0" in line for line in lines)
    assert fake_trt.builds[-2]["strongly_typed"]                          # the new int8 engine is strongly typed
    assert resolve_model("renderer_4", config).precision == "int8"


def test_engine_that_fails_to_deserialize_is_rebuilt(fake_trt, tmp_path: Path, monkeypatch) -> None:
    engines = make_engines_dir(tmp_path)
    config = _trt_config(engines, tmp_path / "cache")
    build_engines(config, FAST)
    manifest = CacheManifest.load(board_dir(config.backend.engine_cache_dir, config.board.name))
    art = manifest.data["models"]["renderer_4"]["artifacts"]["tensorrt:fp16"]
    path = manifest.artifact_path(art)
    path.write_bytes(b"engine from elsewhere")                            # deserializes to nothing
    import hashlib

    art["sha256"] = hashlib.sha256(b"engine from elsewhere").hexdigest()
    manifest.save()
    lines: list[str] = []
    build_engines(config, FAST, lines.append)
    assert any("tensorrt:fp16: building (the cached file does not load" in line for line in lines)
    assert path.parent.joinpath(CacheManifest.load(manifest.directory).data["models"]["renderer_4"]["artifacts"]
                                ["tensorrt:fp16"]["file"].split("/")[-1]).read_bytes().startswith(FAKE_PLAN_MAGIC)


def test_board_without_tensorrt_here_builds_cpu_candidates_and_says_so(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    engines = make_engines_dir(tmp_path)
    config = _trt_config(engines, tmp_path / "cache")
    lines: list[str] = []
    (report,) = build_engines(config, FAST, lines.append)
    assert any("runs TensorRT, but it is unavailable here" in line for line in lines)
    resolved = resolve_model("renderer_4", config)
    assert resolved.backend == "onnxruntime"


# --------------------------------------------------------------------------- a real TensorRT


@pytest.fixture(scope="module")
def real_trt():
    from edge_avatar.backends import BackendUnavailable
    from edge_avatar.backends.tensorrt_backend import check_available, import_tensorrt

    try:
        check_available()
    except BackendUnavailable as exc:
        pytest.skip(f"needs TensorRT 10 and an NVIDIA GPU: {exc}")
    return import_tensorrt()


@pytest.mark.trt
def test_real_trt_builds_int8_and_fp16_engines_that_verify(real_trt, tmp_path: Path) -> None:
    engines = make_engines_dir(tmp_path)
    config = _trt_config(engines, tmp_path / "cache")
    (report,) = build_engines(config, FAST)
    assert report.ok, report.errors
    manifest = CacheManifest.load(board_dir(config.backend.engine_cache_dir, config.board.name))
    arts = manifest.data["models"]["renderer_4"]["artifacts"]
    assert arts["tensorrt:int8"]["verify"]["passed"], arts["tensorrt:int8"]["verify"]
    assert arts["tensorrt:fp16"]["verify"]["passed"], arts["tensorrt:fp16"]["verify"]
    assert resolve_model("renderer_4", config).backend == "tensorrt"


@pytest.mark.trt
def test_real_trt_perception_detector_fp16_engine(real_trt, tmp_path: Path) -> None:
    config = load_config(overrides=["backend.name=tensorrt", "board.precision=int8",
                                    f"backend.engine_cache_dir={tmp_path}"])
    options = BuildOptions(models=("face_detector",), calibration=CalibrationOptions(frames=6, held_out_frames=4),
                           bench_warmup=2, bench_iterations=5)
    (report,) = build_engines(config, options)
    assert report.ok, report.errors
    manifest = CacheManifest.load(board_dir(tmp_path, config.board.name))
    assert manifest.data["models"]["face_detector"]["artifacts"]["tensorrt:fp16"]["verify"]["passed"]
    assert np.isfinite(manifest.data["models"]["face_detector"]["bench"]["timings_ms"]["tensorrt:fp16"]["p50_ms"])
