"""Inference backends: ONNX Runtime on a real graph, the null backend, TensorRT on a fake and a real GPU.

The ONNX Runtime tests run a real (small) convolutional network built here
with onnx.helper and compare it with a numpy computation of the same maths.
The TensorRT backend is tested twice: against a small fake ``tensorrt`` and
fake cuda-python runtime that reproduce the TensorRT 10 named-tensor API and
CUDA's stream semantics (work runs only when the stream is synchronized), and,
behind the ``trt`` marker, against the real TensorRT on a real GPU.
"""

from __future__ import annotations

import ctypes
import enum
import json
import logging
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_avatar.backends import (
    BackendUnavailable,
    ModelLoadError,
    TensorSpec,
    available_backends,
    load_backend,
    summarize_ms,
    time_calls_ms,
    validate_feeds,
)
from edge_avatar.backends.null_backend import NullBackend
from edge_avatar.backends.onnxruntime_backend import select_providers
from edge_avatar.config import BackendConfig

CPU_CONFIG = BackendConfig(name="onnxruntime", onnxruntime_providers=("CPUExecutionProvider",), intra_op_threads=1)

# --------------------------------------------------------------------------- a real small ONNX model

IMAGE_C, IMAGE_HW, FEATURES, CLASSES = 3, 8, 4, 2


def make_weights(seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv_w": (rng.standard_normal((FEATURES, IMAGE_C, 3, 3)) * 0.3).astype(np.float32),  # (O, C, kH, kW)
        "conv_b": (rng.standard_normal(FEATURES) * 0.1).astype(np.float32),                  # (O,)
        "fc_w": rng.standard_normal((CLASSES, FEATURES)).astype(np.float32),                  # (K, O)
        "fc_b": (rng.standard_normal(CLASSES) * 0.1).astype(np.float32),                      # (K,)
    }


def build_onnx_model(path: Path, weights: dict[str, np.ndarray]) -> Path:
    """x (batch, 3, 8, 8) -> Conv 3x3 pad 1 -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> y (batch, 2)."""
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),  # (B, O, 1, 1)
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),     # (B, O)
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", IMAGE_C, IMAGE_HW, IMAGE_HW])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge-avatar-tests")
    model.ir_version = 8  # loadable by older runtimes and TensorRT 10.3's parser
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def reference_forward(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    """The same network in float64 numpy."""
    x64 = x.astype(np.float64)                                                   # (B, C, H, W)
    padded = np.pad(x64, ((0, 0), (0, 0), (1, 1), (1, 1)))                        # (B, C, H+2, W+2)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # (B, C, H, W, 3, 3)
    conv = np.einsum("bchwij,ocij->bohw", windows, w["conv_w"].astype(np.float64))
    conv += w["conv_b"][None, :, None, None]                                       # (B, O, H, W)
    pooled = np.maximum(conv, 0.0).mean(axis=(2, 3))                              # (B, O)
    return pooled @ w["fc_w"].T.astype(np.float64) + w["fc_b"]                     # (B, K)


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return make_weights()


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory, weights: dict[str, np.ndarray]) -> Path:
    return build_onnx_model(tmp_path_factory.mktemp("models") / "tiny_convnet.onnx", weights)


def image_batch(batch: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, IMAGE_C, IMAGE_HW, IMAGE_HW)).astype(np.float32)


# --------------------------------------------------------------------------- package surface


def test_importing_backends_does_not_import_runtimes() -> None:
    code = ("import sys, edge_avatar.backends as b, edge_avatar.backends.tensorrt_backend;"
            "bad = [m for m in ('onnxruntime', 'tensorrt', 'pycuda', 'cuda') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unknown_backend_name_lists_known_ones(onnx_model: Path) -> None:
    with pytest.raises(ValueError, match="unknown inference backend 'openvino'.*onnxruntime, tensorrt, null"):
        load_backend("openvino", onnx_model, CPU_CONFIG)


def test_available_backends_reports_ok_or_reason() -> None:
    status = available_backends()
    assert set(status) == {"onnxruntime", "tensorrt", "null"}
    assert status["onnxruntime"] == "ok" and status["null"] == "ok"
    assert status["tensorrt"] == "ok" or "unavailable" in status["tensorrt"]


def test_missing_tensorrt_gives_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now raises ImportError
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"\0" * 64)
    with pytest.raises(BackendUnavailable) as info:
        load_backend("tensorrt", engine, BackendConfig(name="tensorrt"))
    message = str(info.value)
    assert "'tensorrt'" in message and "sudo apt-get install python3-libnvinfer" in message
    assert "python3-libnvinfer" in available_backends()["tensorrt"]


def test_missing_onnxruntime_gives_install_hint(monkeypatch: pytest.MonkeyPatch, onnx_model: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailable, match="pip install onnxruntime"):
        load_backend("onnxruntime", onnx_model, CPU_CONFIG)
    assert "pip install onnxruntime" in available_backends()["onnxruntime"]


# --------------------------------------------------------------------------- ONNX Runtime on a real graph


@pytest.fixture(scope="module")
def ort_backend(onnx_model: Path):
    backend = load_backend("onnxruntime", onnx_model, CPU_CONFIG)
    yield backend
    backend.close()


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_numpy_reference(ort_backend, weights, batch: int) -> None:
    x = image_batch(batch)
    outputs = ort_backend.run({"x": x})
    assert list(outputs) == ["y"]
    assert outputs["y"].shape == (batch, CLASSES) and outputs["y"].dtype == np.float32
    np.testing.assert_allclose(outputs["y"], reference_forward(x, weights), rtol=1e-5, atol=1e-5)


def test_onnxruntime_io_spec(ort_backend, onnx_model: Path) -> None:
    assert ort_backend.name == "onnxruntime"
    assert ort_backend.model_path == onnx_model
    assert ort_backend.inputs == [TensorSpec("x", ("batch", IMAGE_C, IMAGE_HW, IMAGE_HW), "float32")]
    assert ort_backend.outputs == [TensorSpec("y", ("batch", CLASSES), "float32")]
    spec = ort_backend.io_spec()
    assert spec["backend"] == "onnxruntime" and spec["model"] == str(onnx_model)
    assert spec["inputs"] == [{"name": "x", "shape": ["batch", 3, 8, 8], "dtype": "float32"}]
    assert spec["outputs"] == [{"name": "y", "shape": ["batch", 2], "dtype": "float32"}]
    assert spec["providers"] == ["CPUExecutionProvider"]
    json.dumps(spec)  # printable as JSON


def test_onnxruntime_session_options_follow_config(onnx_model: Path) -> None:
    backend = load_backend("onnxruntime", onnx_model, BackendConfig(intra_op_threads=2))
    options = backend._session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"   # parked by default
    backend.close()
    spinning = load_backend("onnxruntime", onnx_model, BackendConfig(intra_op_threads=2, onnxruntime_spin_wait=True))
    with pytest.raises(Exception, match="allow_spinning"):      # not set: ONNX Runtime's default (spin)
        spinning._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    spinning.close()


def test_warm_up_returns_mean_ms(ort_backend) -> None:
    mean_ms = ort_backend.warm_up(iterations=3)
    assert isinstance(mean_ms, float) and mean_ms > 0.0


def test_unavailable_providers_are_dropped_and_logged(onnx_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = BackendConfig(onnxruntime_providers=("NoSuchExecutionProvider", "CPUExecutionProvider"))
    with caplog.at_level(logging.WARNING, logger="edge_avatar.backends.onnxruntime_backend"):
        backend = load_backend("onnxruntime", onnx_model, config)
    assert backend.providers == ["CPUExecutionProvider"]
    assert "NoSuchExecutionProvider" in caplog.text
    backend.close()


def test_select_providers_keeps_order_and_falls_back_to_cpu() -> None:
    jetson = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    wanted = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert select_providers(wanted, jetson) == list(wanted)
    assert select_providers(wanted, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert select_providers(("CUDAExecutionProvider",), ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_missing_model_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    for name in ("onnxruntime", "null"):
        with pytest.raises(ModelLoadError, match=r"nope\.onnx: file not found"):
            load_backend(name, missing, CPU_CONFIG)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_model_file_is_named(tmp_path: Path, onnx_model: Path, damage: str) -> None:
    data = onnx_model.read_bytes()
    bad = tmp_path / f"{damage}.onnx"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x07not an onnx file" * 8,
                     "empty": b""}[damage])
    for name in ("onnxruntime", "null"):
        with pytest.raises(ModelLoadError) as info:
            load_backend(name, bad, CPU_CONFIG)
        assert str(bad) in str(info.value)
        assert ("truncated or corrupt" if damage != "empty" else "empty") in str(info.value)


def test_wrong_input_name_is_named(ort_backend) -> None:
    with pytest.raises(ValueError, match=r"tiny_convnet\.onnx: unknown input 'image'.*x \(batch, 3, 8, 8\) float32"):
        ort_backend.run({"image": image_batch(1)})
    with pytest.raises(ValueError, match=r"tiny_convnet\.onnx: missing input 'x'"):
        ort_backend.run({})


def test_wrong_shape_is_named(ort_backend) -> None:
    with pytest.raises(ValueError, match=r"tiny_convnet\.onnx: input 'x' expected shape \(batch, 3, 8, 8\) "
                                         r"\(dim 1 = 3\), got \(1, 4, 8, 8\)"):
        ort_backend.run({"x": np.zeros((1, 4, 8, 8), np.float32)})
    with pytest.raises(ValueError, match=r"input 'x' expected rank 4"):
        ort_backend.run({"x": np.zeros((3, 8, 8), np.float32)})


def test_wrong_dtype_is_named(ort_backend) -> None:
    with pytest.raises(ValueError, match=r"tiny_convnet\.onnx: input 'x' expected dtype float32, got float64"):
        ort_backend.run({"x": image_batch(1).astype(np.float64)})


def test_named_dims_must_agree_across_inputs() -> None:
    specs = [TensorSpec("a", ("batch", 2), "float32"), TensorSpec("b", ("batch",), "int64")]
    validate_feeds("m.onnx", specs, {"a": np.zeros((3, 2), np.float32), "b": np.zeros(3, np.int64)})
    with pytest.raises(ValueError, match=r"input 'b' dim 0 \('batch'\) is 4, but input 'a' has 'batch' = 3"):
        validate_feeds("m.onnx", specs, {"a": np.zeros((3, 2), np.float32), "b": np.zeros(4, np.int64)})


def test_closed_backend_refuses_to_run(onnx_model: Path) -> None:
    backend = load_backend("onnxruntime", onnx_model, CPU_CONFIG)
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        backend.run({"x": image_batch(1)})


def test_timing_helpers() -> None:
    samples = time_calls_ms(lambda: sum(range(1000)), 5)
    assert len(samples) == 5 and all(s > 0 for s in samples)
    summary = summarize_ms([1.0, 2.0, 3.0, 4.0])
    assert (summary.min_ms, summary.p50_ms, summary.max_ms, summary.mean_ms) == (1.0, 2.5, 4.0, 2.5)


# --------------------------------------------------------------------------- null backend


def test_null_backend_reads_onnx_io_and_returns_zeros(onnx_model: Path, ort_backend) -> None:
    backend = load_backend("null", onnx_model, CPU_CONFIG)
    assert backend.inputs == ort_backend.inputs and backend.outputs == ort_backend.outputs
    outputs = backend.run({"x": image_batch(5)})
    assert outputs["y"].shape == (5, CLASSES) and outputs["y"].dtype == np.float32 and not outputs["y"].any()
    backend.run({"x": image_batch(1)})
    assert backend.calls == 2 and backend.last_feeds["x"].shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="expected dtype float32"):
        backend.run({"x": np.zeros((1, 3, 8, 8), np.uint8)})
    assert backend.calls == 2  # rejected feeds are not counted
    assert backend.warm_up(2) >= 0.0 and backend.calls == 4


def test_null_backend_from_specs() -> None:
    backend = NullBackend([TensorSpec("audio", (1, "T"), "float32")],
                          [TensorSpec("vad", (1, "T"), "float32"), TensorSpec("state", (2, 64), "float16")])
    outputs = backend.run({"audio": np.zeros((1, 160), np.float32)})
    assert outputs["vad"].shape == (1, 160) and outputs["state"].shape == (2, 64)
    assert outputs["state"].dtype == np.float16


# --------------------------------------------------------------------------- fake CUDA runtime + TensorRT 10


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorInvalidResourceHandle = 400
    cudaErrorNotReady = 600


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStream_t:
    def __init__(self, handle: int) -> None:
        self._handle = handle

    def __int__(self) -> int:
        return self._handle


class cudaEvent_t:
    def __init__(self) -> None:
        self.time_ms: float | None = None


class FakeCudaRuntime:
    """cuda-python's runtime API in pure Python.

    Calls return ``(cudaError_t, *results)`` like cuda-python. Async copies
    and kernels are queued on their stream and run only at
    ``cudaStreamSynchronize``, so code that reads results before syncing gets
    stale data, as on a GPU. "Device" and "pinned" memory are separate ctypes
    allocations, and every copy checks its pointers lie in the right kind.
    """

    STEP_MS = 0.25  # fake GPU time per queued operation

    def __init__(self) -> None:
        self.device: dict[int, Any] = {}
        self.pinned: dict[int, Any] = {}
        self.streams: dict[int, list[Callable[[], None]]] = {}
        self.stream_flags: dict[int, int] = {}
        self.copies: list[tuple[str, int]] = []
        self.sync_calls = 0
        self.kernels_run = 0
        self.gpu_clock_ms = 0.0
        self._next_handle = 0x5000

    def module(self) -> types.ModuleType:
        mod = types.ModuleType("cuda.bindings.runtime")
        mod.cudaError_t, mod.cudaMemcpyKind = cudaError_t, cudaMemcpyKind
        mod.cudaStream_t, mod.cudaEvent_t = cudaStream_t, cudaEvent_t
        mod.cudaStreamNonBlocking = 1
        for name in dir(self):
            if name.startswith("cuda"):
                setattr(mod, name, getattr(self, name))
        return mod

    # -- helpers
    @staticmethod
    def _inside(ptr: Any, nbytes: int, table: dict[int, Any]) -> bool:
        return isinstance(ptr, int) and any(
            base <= ptr and ptr + nbytes <= base + ctypes.sizeof(buf) for base, buf in table.items())

    def is_device(self, ptr: Any, nbytes: int = 1) -> bool:
        return self._inside(ptr, nbytes, self.device)

    def enqueue(self, stream_handle: int, op: Callable[[], None]) -> bool:
        if stream_handle not in self.streams:
            return False
        self.streams[stream_handle].append(op)
        return True

    def _alloc(self, nbytes: int, table: dict[int, Any]) -> tuple:
        buf = (ctypes.c_ubyte * nbytes)()
        table[ctypes.addressof(buf)] = buf
        return cudaError_t.cudaSuccess, ctypes.addressof(buf)

    # -- the runtime API subset
    def cudaGetDeviceCount(self) -> tuple:
        return cudaError_t.cudaSuccess, 1

    def cudaMalloc(self, nbytes: int) -> tuple:
        return self._alloc(nbytes, self.device)

    def cudaFree(self, ptr: int) -> tuple:
        return (cudaError_t.cudaSuccess,) if self.device.pop(ptr, None) is not None else \
            (cudaError_t.cudaErrorInvalidValue,)

    def cudaMallocHost(self, nbytes: int) -> tuple:
        return self._alloc(nbytes, self.pinned)

    def cudaFreeHost(self, ptr: int) -> tuple:
        return (cudaError_t.cudaSuccess,) if self.pinned.pop(ptr, None) is not None else \
            (cudaError_t.cudaErrorInvalidValue,)

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple:
        self._next_handle += 0x10
        self.streams[self._next_handle] = []
        self.stream_flags[self._next_handle] = int(flags)
        return cudaError_t.cudaSuccess, cudaStream_t(self._next_handle)

    def cudaStreamSynchronize(self, stream: cudaStream_t) -> tuple:
        if not isinstance(stream, cudaStream_t) or int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self.sync_calls += 1
        queue = self.streams[int(stream)]
        while queue:
            queue.pop(0)()
            self.gpu_clock_ms += self.STEP_MS
        return (cudaError_t.cudaSuccess,)

    def cudaStreamDestroy(self, stream: cudaStream_t) -> tuple:
        return (cudaError_t.cudaSuccess,) if self.streams.pop(int(stream), None) is not None else \
            (cudaError_t.cudaErrorInvalidResourceHandle,)

    def cudaEventCreate(self) -> tuple:
        return cudaError_t.cudaSuccess, cudaEvent_t()

    def cudaEventRecord(self, event: cudaEvent_t, stream: cudaStream_t) -> tuple:
        event.time_ms = None

        def stamp() -> None:
            event.time_ms = self.gpu_clock_ms

        ok = isinstance(event, cudaEvent_t) and self.enqueue(int(stream), stamp)
        return (cudaError_t.cudaSuccess if ok else cudaError_t.cudaErrorInvalidResourceHandle,)

    def cudaEventElapsedTime(self, start: cudaEvent_t, end: cudaEvent_t) -> tuple:
        if start.time_ms is None or end.time_ms is None:
            return cudaError_t.cudaErrorNotReady, 0.0
        return cudaError_t.cudaSuccess, end.time_ms - start.time_ms

    def cudaEventDestroy(self, event: cudaEvent_t) -> tuple:
        return (cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst: Any, src: Any, count: int, kind: cudaMemcpyKind, stream: cudaStream_t) -> tuple:
        rules = {
            cudaMemcpyKind.cudaMemcpyHostToDevice: (self.device, self.pinned),
            cudaMemcpyKind.cudaMemcpyDeviceToHost: (self.pinned, self.device),
            cudaMemcpyKind.cudaMemcpyDeviceToDevice: (self.device, self.device),
        }
        if kind not in rules:
            return (cudaError_t.cudaErrorInvalidValue,)
        dst_table, src_table = rules[kind]
        if not (self._inside(dst, count, dst_table) and self._inside(src, count, src_table)):
            return (cudaError_t.cudaErrorInvalidValue,)  # e.g. pageable host memory or a host pointer as device
        self.copies.append((kind.name, count))
        ok = self.enqueue(int(stream), lambda: ctypes.memmove(dst, src, count))
        return (cudaError_t.cudaSuccess if ok else cudaError_t.cudaErrorInvalidResourceHandle,)


# The fake engines' maths, by the "op" named in a fake plan file.
FAKE_OPS: dict[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]] = {
    "scale_sum": lambda t: {"y": t["x"] * t["scale"], "s": (t["x"] * t["scale"]).sum(axis=1)},
    "double": lambda t: {"z": t["y"] * 2},
}
FAKE_PLAN_MAGIC = b"FAKE-TRT10-PLAN\n"


def make_fake_tensorrt(cuda: FakeCudaRuntime) -> types.ModuleType:
    """A ``tensorrt`` module with the TensorRT 10 named-tensor API only (no bindings API at all)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"

    class DataType(enum.Enum):
        FLOAT = 0
        HALF = 1
        INT8 = 2
        INT32 = 3
        BOOL = 4
        UINT8 = 5
        INT64 = 9
        BF16 = 7

    numpy_types = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
                   DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8,
                   DataType.INT64: np.int64}

    def nptype(trt_type: DataType) -> type:
        if trt_type not in numpy_types:
            raise TypeError(f"Could not resolve TensorRT datatype to an equivalent numpy datatype. {trt_type}")
        return numpy_types[trt_type]

    class TensorIOMode(enum.Enum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    class ILogger:
        class Severity(enum.Enum):
            INTERNAL_ERROR = 0
            ERROR = 1
            WARNING = 2
            INFO = 3
            VERBOSE = 4

        def __init__(self) -> None:
            pass

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self.input_shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}
            self.set_input_shape_calls: list[tuple[str, tuple[int, ...]]] = []
            self.set_tensor_address_calls: list[tuple[str, int]] = []
            self.execute_calls: list[int] = []

        def _error(self, msg: str) -> bool:
            self.engine.logger.log(ILogger.Severity.ERROR, msg)
            return False

        def set_input_shape(self, name: str, shape: Any) -> bool:
            shape = tuple(int(d) for d in shape)
            self.set_input_shape_calls.append((name, shape))
            tensor = self.engine.tensors.get(name)
            if tensor is None or tensor["mode"] != "input":
                return self._error(f"IExecutionContext::setInputShape: Error Code 3: {name} is not an input")
            lo, _, hi = self.engine.profiles.get(name, (tensor["shape"],) * 3)
            if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
                return self._error(f"IExecutionContext::setInputShape: Error Code 3: {name} {shape} out of profile")
            self.input_shapes[name] = shape
            return True

        def _input_shape(self, name: str) -> tuple[int, ...]:
            return self.input_shapes.get(name, tuple(self.engine.tensors[name]["shape"]))

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            tensor = self.engine.tensors[name]
            if tensor["mode"] == "input":
                return self._input_shape(name)
            shapes = {n: self._input_shape(n) for n in self.engine.input_names}
            if any(d < 0 for s in shapes.values() for d in s):
                return tuple(tensor["shape"])
            zeros = {n: np.zeros(s, self.engine.dtype(n)) for n, s in shapes.items()}
            return FAKE_OPS[self.engine.op](zeros)[name].shape

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.set_tensor_address_calls.append((name, address))
            if name not in self.engine.tensors:
                return self._error(f"IExecutionContext::setTensorAddress: Error Code 3: no tensor {name}")
            self.addresses[name] = int(address)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            self.execute_calls.append(stream_handle)
            engine = self.engine
            unset = [n for n in engine.tensors if not self.addresses.get(n)]
            if unset:
                return self._error(f"IExecutionContext::enqueueV3: Error Code 3: address of {unset} not set")
            shapes = {n: self.get_tensor_shape(n) for n in engine.tensors}
            if any(d < 0 for s in shapes.values() for d in s):
                return self._error("IExecutionContext::enqueueV3: Error Code 3: input shapes not specified")
            addresses = dict(self.addresses)
            for n, s in shapes.items():
                if not cuda.is_device(addresses[n], max(1, int(np.prod(s)) * engine.dtype(n).itemsize)):
                    return self._error(f"IExecutionContext::enqueueV3: Error Code 1: {n} is not device memory")

            def kernel() -> None:
                inputs = {}
                for n in engine.input_names:
                    dtype, shape = engine.dtype(n), shapes[n]
                    raw = (ctypes.c_ubyte * (int(np.prod(shape)) * dtype.itemsize)).from_address(addresses[n])
                    inputs[n] = np.frombuffer(raw, dtype).reshape(shape).copy()
                for n, value in FAKE_OPS[engine.op](inputs).items():
                    value = np.ascontiguousarray(value, engine.dtype(n))
                    ctypes.memmove(addresses[n], value.ctypes.data, value.nbytes)
                cuda.kernels_run += 1

            return cuda.enqueue(int(stream_handle), kernel) or self._error("enqueueV3: invalid stream")

    class ICudaEngine:
        def __init__(self, plan: dict, logger: ILogger) -> None:
            self.logger = logger
            self.op = plan["op"]
            self.tensors = {t["name"]: t for t in plan["tensors"]}
            self.input_names = [t["name"] for t in plan["tensors"] if t["mode"] == "input"]
            self.profiles = {k: tuple(tuple(s) for s in v) for k, v in plan.get("profiles", {}).items()}
            self.contexts: list[IExecutionContext] = []

        def dtype(self, name: str) -> np.dtype:
            return np.dtype(nptype(DataType[self.tensors[name]["dtype"]]))

        @property
        def num_io_tensors(self) -> int:
            return len(self.tensors)

        def get_tensor_name(self, index: int) -> str:
            return list(self.tensors)[index]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return TensorIOMode.INPUT if self.tensors[name]["mode"] == "input" else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return tuple(self.tensors[name]["shape"])

        def get_tensor_dtype(self, name: str) -> DataType:
            return DataType[self.tensors[name]["dtype"]]

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
            assert profile_index == 0
            return list(self.profiles[name])

        def create_execution_context(self) -> IExecutionContext:
            self.contexts.append(IExecutionContext(self))
            return self.contexts[-1]

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            assert isinstance(logger, ILogger)
            self.logger = logger
            trt.runtimes.append(self)
            self.engines: list[ICudaEngine] = []

        def deserialize_cuda_engine(self, serialized: bytes) -> ICudaEngine | None:
            data = bytes(serialized)
            if not data.startswith(FAKE_PLAN_MAGIC):
                self.logger.log(ILogger.Severity.ERROR,
                                "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization "
                                "assertion stdVersionRead == kSERIALIZATION_VERSION failed.Version tag does not "
                                "match. Note: Current Version: 239, Serialized Engine Version: 236)")
                return None
            self.engines.append(ICudaEngine(json.loads(data[len(FAKE_PLAN_MAGIC):]), self.logger))
            return self.engines[-1]

    trt.DataType, trt.nptype, trt.TensorIOMode = DataType, nptype, TensorIOMode
    trt.ILogger, trt.Runtime = ILogger, Runtime
    trt.init_libnvinfer_plugins = lambda logger, namespace: True
    trt.runtimes = []  # test hook: every Runtime the backend created
    return trt


def write_fake_plan(path: Path, op: str, tensors: list[dict], profiles: dict | None = None) -> Path:
    path.write_bytes(FAKE_PLAN_MAGIC + json.dumps({"op": op, "tensors": tensors, "profiles": profiles or {}}).encode())
    return path


SCALE_SUM_TENSORS = [
    {"name": "x", "mode": "input", "shape": [-1, 4], "dtype": "FLOAT"},
    {"name": "scale", "mode": "input", "shape": [1], "dtype": "FLOAT"},
    {"name": "y", "mode": "output", "shape": [-1, 4], "dtype": "FLOAT"},
    {"name": "s", "mode": "output", "shape": [-1], "dtype": "FLOAT"},
]
DOUBLE_TENSORS = [
    {"name": "y", "mode": "input", "shape": [-1, 4], "dtype": "FLOAT"},
    {"name": "z", "mode": "output", "shape": [-1, 4], "dtype": "FLOAT"},
]
BATCH_PROFILE = [[1, 4], [2, 4], [8, 4]]  # min, opt, max


@pytest.fixture(params=["cuda.bindings.runtime", "cuda.cudart"])
def fake_gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Fake tensorrt + fake cuda-python in sys.modules (both module layouts), with two fake engine files."""
    cuda = FakeCudaRuntime()
    trt = make_fake_tensorrt(cuda)
    runtime_module = cuda.module()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    if request.param == "cuda.bindings.runtime":
        package, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
        package.__path__, bindings.__path__ = [], []
        package.bindings, bindings.runtime = bindings, runtime_module
        monkeypatch.setitem(sys.modules, "cuda", package)
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime_module)
    else:
        package = types.ModuleType("cuda")
        package.__path__ = []
        package.cudart = runtime_module
        monkeypatch.setitem(sys.modules, "cuda", package)
        monkeypatch.setitem(sys.modules, "cuda.bindings", None)
        monkeypatch.setitem(sys.modules, "cuda.cudart", runtime_module)
    return types.SimpleNamespace(
        cuda=cuda, trt=trt,
        scale_sum=write_fake_plan(tmp_path / "scale_sum.engine", "scale_sum", SCALE_SUM_TENSORS, {"x": BATCH_PROFILE}),
        double=write_fake_plan(tmp_path / "double.engine", "double", DOUBLE_TENSORS, {"y": BATCH_PROFILE}),
        tmp_path=tmp_path,
    )


TRT_CONFIG = BackendConfig(name="tensorrt")


def test_fake_trt_run_sets_shapes_addresses_and_copies_back(fake_gpu) -> None:
    cuda = fake_gpu.cuda
    backend = load_backend("tensorrt", fake_gpu.scale_sum, TRT_CONFIG)
    assert backend.inputs == [TensorSpec("x", ("?", 4), "float32"), TensorSpec("scale", (1,), "float32")]
    assert backend.outputs == [TensorSpec("y", ("?", 4), "float32"), TensorSpec("s", ("?",), "float32")]
    spec = backend.io_spec()
    assert spec["tensorrt_version"] == "10.3.0" and spec["cuda_binding"] == "cuda-python"
    assert spec["profiles"] == {"x": {"min": [1, 4], "opt": [2, 4], "max": [8, 4]}}

    x = np.arange(12, dtype=np.float32).reshape(3, 4)  # (B, 4)
    outputs = backend.run({"x": x, "scale": np.array([2.0], np.float32)})
    np.testing.assert_array_equal(outputs["y"], x * 2)
    np.testing.assert_array_equal(outputs["s"], (x * 2).sum(axis=1))

    context = fake_gpu.trt.runtimes[0].engines[0].contexts[0]
    assert context.set_input_shape_calls == [("x", (3, 4))]  # the dynamic input only
    assert {name for name, _ in context.set_tensor_address_calls} == {"x", "scale", "y", "s"}
    assert all(cuda.is_device(address) for _, address in context.set_tensor_address_calls)
    assert context.execute_calls == [backend.stream.handle]
    assert cuda.stream_flags[backend.stream.handle] == 1  # non-blocking stream
    kinds = [kind for kind, _ in cuda.copies]
    assert kinds.count("cudaMemcpyHostToDevice") == 2 and kinds.count("cudaMemcpyDeviceToHost") == 2
    assert cuda.sync_calls == 1

    # Same shape again: no new set_input_shape; a new batch size: one more.
    backend.run({"x": x, "scale": np.array([1.0], np.float32)})
    backend.run({"x": x[:1], "scale": np.array([1.0], np.float32)})
    assert context.set_input_shape_calls == [("x", (3, 4)), ("x", (1, 4))]

    backend.close()
    assert not cuda.device and not cuda.pinned and not cuda.streams  # everything freed


def test_fake_trt_shared_stream_one_sync_per_tick(fake_gpu) -> None:
    from edge_avatar.backends.tensorrt_backend import SharedStream

    cuda = fake_gpu.cuda
    stream = SharedStream()
    first = load_backend("tensorrt", fake_gpu.scale_sum, TRT_CONFIG, stream=stream)
    second = load_backend("tensorrt", fake_gpu.double, TRT_CONFIG, stream=stream)
    x = np.ones((2, 4), np.float32)
    scale = np.array([3.0], np.float32)

    for tick in range(3):
        p = stream.enqueue(first, {"x": x * tick, "scale": scale})
        q = stream.enqueue(second, {"y": p.device("y")})  # stays on the GPU
        assert cuda.kernels_run == 2 * tick  # nothing has run yet: enqueue never waits
        with pytest.raises(RuntimeError, match="synchronize"):
            q.get()
        with pytest.raises(RuntimeError, match="already queued"):
            stream.enqueue(first, {"x": x, "scale": scale})
        gpu_ms = stream.synchronize()
        assert list(gpu_ms) == ["scale_sum", "double"] and all(ms > 0 for ms in gpu_ms.values())
        assert cuda.sync_calls == tick + 1
        np.testing.assert_array_equal(q.get()["z"], x * tick * 3 * 2)
        np.testing.assert_array_equal(p.get()["s"], (x * tick * 3).sum(axis=1))

    contexts = [r.engines[0].contexts[0] for r in fake_gpu.trt.runtimes]
    assert all(set(c.execute_calls) == {stream.handle} for c in contexts)
    # The second engine read the first one's device buffer directly (no host round trip).
    y_address = dict(contexts[0].set_tensor_address_calls)["y"]
    assert dict(contexts[1].set_tensor_address_calls)["y"] == y_address

    # Outputs of an earlier tick are refused once the engine has been queued again.
    p_old = p
    stream.enqueue(first, {"x": x, "scale": scale})
    stream.synchronize()
    with pytest.raises(RuntimeError, match="stale"):
        p_old.get()
    for backend in (first, second):
        backend.close()
    stream.close()
    assert not cuda.device and not cuda.pinned and not cuda.streams


def test_fake_trt_recurrent_feed_of_own_output(fake_gpu) -> None:
    from edge_avatar.backends.tensorrt_backend import SharedStream

    stream = SharedStream()
    backend = load_backend("tensorrt", fake_gpu.double, TRT_CONFIG, stream=stream)
    state = stream.enqueue(backend, {"y": np.full((1, 4), 1.5, np.float32)})
    stream.synchronize()
    for _ in range(3):  # feed the previous output back in without leaving the GPU
        state = stream.enqueue(backend, {"y": state.device("z")})
        stream.synchronize()
    np.testing.assert_array_equal(state.get()["z"], np.full((1, 4), 1.5 * 16, np.float32))
    assert "cudaMemcpyDeviceToDevice" in [kind for kind, _ in fake_gpu.cuda.copies]
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):  # its pinned buffers are freed
        state.get()
    stream.close()


def test_fake_trt_feed_errors(fake_gpu) -> None:
    backend = load_backend("tensorrt", fake_gpu.scale_sum, TRT_CONFIG)
    scale = np.array([1.0], np.float32)
    with pytest.raises(ValueError, match=r"scale_sum\.engine: input 'x' shape \(9, 4\) is outside .* max \(8, 4\)"):
        backend.run({"x": np.zeros((9, 4), np.float32), "scale": scale})
    with pytest.raises(ValueError, match=r"scale_sum\.engine: input 'x' expected dtype float32, got int32"):
        backend.run({"x": np.zeros((2, 4), np.int32), "scale": scale})
    with pytest.raises(ValueError, match=r"scale_sum\.engine: missing input 'scale'"):
        backend.run({"x": np.zeros((2, 4), np.float32)})
    assert backend.warm_up(2) > 0.0  # zeros at the profile's opt shape
    backend.close()


def test_fake_trt_engine_from_another_version_says_rebuild(fake_gpu) -> None:
    bad = fake_gpu.tmp_path / "old.engine"
    bad.write_bytes(b"\x00\x01serialized by TensorRT 8.6" * 4)
    with pytest.raises(ModelLoadError) as info:
        load_backend("tensorrt", bad, TRT_CONFIG)
    message = str(info.value)
    assert str(bad) in message and "TensorRT 10.3.0 could not deserialize" in message
    assert "Version tag does not match" in message and "edge-avatar engines build" in message


def test_fake_trt_refuses_onnx_and_missing_files(fake_gpu, onnx_model: Path) -> None:
    with pytest.raises(ModelLoadError, match="ONNX model.*edge-avatar engines build"):
        load_backend("tensorrt", onnx_model, TRT_CONFIG)
    with pytest.raises(ModelLoadError, match=r"missing\.engine: file not found"):
        load_backend("tensorrt", fake_gpu.tmp_path / "missing.engine", TRT_CONFIG)


def test_fake_trt_missing_cuda_binding_gives_install_hint(fake_gpu, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendUnavailable, match=r"cuda-python.*pip install cuda-python.*pycuda"):
        load_backend("tensorrt", fake_gpu.scale_sum, TRT_CONFIG)


def test_fake_trt_shared_stream_refuses_other_backends(fake_gpu, ort_backend) -> None:
    from edge_avatar.backends.tensorrt_backend import SharedStream

    stream = SharedStream()
    with pytest.raises(TypeError, match="runs TensorRT engines"):
        stream.enqueue(ort_backend, {"x": image_batch(1)})
    stream.close()


# --------------------------------------------------------------------------- real TensorRT on a real GPU


@pytest.fixture(scope="module")
def real_trt():
    from edge_avatar.backends.tensorrt_backend import check_available, import_tensorrt

    try:
        check_available()
    except BackendUnavailable as exc:
        pytest.skip(f"needs TensorRT 10 and an NVIDIA GPU: {exc}")
    return import_tensorrt()


@pytest.fixture(scope="module")
def real_engine(real_trt, onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test ONNX model built into an FP32 engine (TF32 off so it matches numpy closely)."""
    from edge_avatar.backends.tensorrt_backend import _trt_logger

    trt = real_trt
    trt_logger = _trt_logger(trt)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(onnx_model.read_bytes()):
        pytest.fail("ONNX parse failed: " + "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 28)
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, IMAGE_C, IMAGE_HW, IMAGE_HW), (2, IMAGE_C, IMAGE_HW, IMAGE_HW),
                      (4, IMAGE_C, IMAGE_HW, IMAGE_HW))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "TensorRT engine build failed"
    path = tmp_path_factory.mktemp("engines") / "tiny_convnet.engine"
    path.write_bytes(bytes(plan))
    return path


@pytest.mark.trt
def test_real_trt_matches_numpy_and_onnxruntime(real_engine: Path, ort_backend, weights) -> None:
    backend = load_backend("tensorrt", real_engine, TRT_CONFIG)
    assert backend.inputs == [TensorSpec("x", ("?", IMAGE_C, IMAGE_HW, IMAGE_HW), "float32")]
    for batch in (1, 3, 4):
        x = image_batch(batch, seed=batch)
        y = backend.run({"x": x})["y"]
        np.testing.assert_allclose(y, reference_forward(x, weights), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(y, ort_backend.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
    assert backend.warm_up(3) > 0.0
    backend.close()


@pytest.mark.trt
def test_real_trt_shared_stream(real_engine: Path, weights) -> None:
    from edge_avatar.backends.tensorrt_backend import SharedStream

    with SharedStream() as stream:
        first = load_backend("tensorrt", real_engine, TRT_CONFIG, stream=stream)
        second = load_backend("tensorrt", real_engine, TRT_CONFIG, stream=stream)
        xs = [image_batch(2, seed=10), image_batch(2, seed=11)]
        for _ in range(3):
            pending = [stream.enqueue(first, {"x": xs[0]}), stream.enqueue(second, {"x": xs[1]})]
            gpu_ms = stream.synchronize()
            assert list(gpu_ms) == ["tiny_convnet", "tiny_convnet#2"] and all(ms > 0 for ms in gpu_ms.values())
            for p, x in zip(pending, xs):
                np.testing.assert_allclose(p.get()["y"], reference_forward(x, weights), rtol=1e-4, atol=1e-4)
        first.close()
        second.close()


@pytest.mark.trt
def test_real_trt_rejects_corrupt_engine(real_trt, real_engine: Path, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.engine"
    bad.write_bytes(real_engine.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="could not deserialize.*edge-avatar engines build"):
        load_backend("tensorrt", bad, TRT_CONFIG)
