"""Native TensorRT backend: serialized engines on one shared CUDA stream per tick.

Why this module exists: on a Jetson the perception, planner and renderer
networks must all fit in one 33 ms tick next to the camera, audio and
display. Native TensorRT gives the fastest kernels (INT8/FP16, DLA) and lets
the three engines be queued back to back on one CUDA stream with a single
synchronisation per tick, where ONNX Runtime would sync after every model.

Only the TensorRT 10 named-tensor API is used (``num_io_tensors``,
``get_tensor_*``, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``): JetPack 6 ships TensorRT 10.3 and JetPack 7 10.13+,
and the old bindings API is gone from both. CUDA memory, streams and events
come from cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` on older
releases) because it is NVIDIA's maintained binding of the same runtime API
TensorRT uses; pycuda is the fallback because older JetPack images carry it.
All of these are imported when a backend is created, never at import time,
so this module can be imported (and its errors shown) on any machine.

Usage from a tick loop::

    stream = SharedStream()
    perception = load_backend("tensorrt", "perception.engine", cfg, stream=stream)
    planner = load_backend("tensorrt", "planner.engine", cfg, stream=stream)
    ...
    p = stream.enqueue(perception, {"image": image})                # nothing waits yet
    q = stream.enqueue(planner, {"token": p.device("token"), ...})  # reads perception's GPU output
    gpu_ms = stream.synchronize()                                   # one sync per tick
    motion = q.get()["motion"]
"""

from __future__ import annotations

import abc
import collections
import ctypes
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edge_avatar.backends.base import (
    BackendUnavailable,
    InferenceBackend,
    ModelLoadError,
    TensorSpec,
    element_count,
)
from edge_avatar.config import BackendConfig

if TYPE_CHECKING:
    from typing_extensions import Self  # annotations only; never imported at run time

logger = logging.getLogger(__name__)

TENSORRT_INSTALL_HINT = (
    "on a Jetson TensorRT comes with JetPack: `sudo apt-get install python3-libnvinfer` (create the venv "
    "with --system-site-packages so it can see it); on an x86 machine with an NVIDIA GPU: "
    "`pip install tensorrt`"
)
CUDA_INSTALL_HINT = (
    "`pip install cuda-python` (match your CUDA major version, e.g. 'cuda-python>=12,<13' on JetPack 6), "
    "or `pip install pycuda` (the 'jetson' extra)"
)
REBUILD_HINT = "rebuild it on this device with `edge-avatar engines build`"
ONNX_SUFFIXES = (".onnx",)


class CudaError(RuntimeError):
    """A CUDA runtime call failed; the message names the call and the CUDA error."""


# --------------------------------------------------------------------------- imports


def import_tensorrt() -> Any:
    """Import the ``tensorrt`` module (10.x) or raise ``BackendUnavailable`` with the install hint."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailable("tensorrt", "the Python package 'tensorrt' (TensorRT 10.x)",
                                 TENSORRT_INSTALL_HINT, str(exc)) from exc
    major = str(getattr(tensorrt, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < 10:
        raise BackendUnavailable("tensorrt", "TensorRT 10 or newer",
                                 "upgrade to JetPack 6 (TensorRT 10.3) or later",
                                 f"found tensorrt {getattr(tensorrt, '__version__', 'unknown')}")
    return tensorrt


def import_cuda_api() -> CudaApi:
    """The CUDA runtime through cuda-python (new or old module layout), else pycuda."""
    errors: list[str] = []
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        return CudaPythonApi(cudart)
    except ImportError as exc:
        errors.append(f"cuda.bindings.runtime: {exc}")
    try:
        from cuda import cudart  # cuda-python < 12.6
        return CudaPythonApi(cudart)
    except ImportError as exc:
        errors.append(f"cuda.cudart: {exc}")
    try:
        import pycuda.driver as drv
        return PyCudaApi.for_module(drv)
    except ImportError as exc:
        errors.append(f"pycuda: {exc}")
    raise BackendUnavailable("tensorrt", "the Python package 'cuda-python' (or 'pycuda') for CUDA memory "
                             "and streams", CUDA_INSTALL_HINT, "; ".join(errors))


def check_available() -> None:
    """Raise ``BackendUnavailable`` unless TensorRT, a CUDA binding and a GPU are all present."""
    import_tensorrt()
    api = import_cuda_api()
    try:
        count = api.device_count()
    except Exception as exc:  # no driver: the binding imports but every call fails
        raise BackendUnavailable("tensorrt", "an NVIDIA GPU visible to CUDA",
                                 "run on a Jetson or a machine with an NVIDIA GPU and driver", str(exc)) from exc
    if count < 1:
        raise BackendUnavailable("tensorrt", "an NVIDIA GPU visible to CUDA",
                                 "run on a Jetson or a machine with an NVIDIA GPU and driver", "0 devices")


# --------------------------------------------------------------------------- CUDA runtime wrappers


class CudaApi(abc.ABC):
    """The few CUDA runtime operations the backend needs, over whichever Python binding is installed."""

    name: str

    @abc.abstractmethod
    def device_count(self) -> int: ...

    @abc.abstractmethod
    def device_alloc(self, nbytes: int) -> int: ...

    @abc.abstractmethod
    def device_free(self, ptr: int) -> None: ...

    @abc.abstractmethod
    def host_alloc(self, nbytes: int) -> np.ndarray:
        """Page-locked host memory as a flat uint8 array (async copies need pinned memory)."""

    @abc.abstractmethod
    def host_free(self, array: np.ndarray) -> None: ...

    @abc.abstractmethod
    def stream_create(self) -> Any: ...

    @abc.abstractmethod
    def stream_handle(self, stream: Any) -> int: ...

    @abc.abstractmethod
    def stream_synchronize(self, stream: Any) -> None: ...

    @abc.abstractmethod
    def stream_destroy(self, stream: Any) -> None: ...

    @abc.abstractmethod
    def event_create(self) -> Any: ...

    @abc.abstractmethod
    def event_record(self, event: Any, stream: Any) -> None: ...

    @abc.abstractmethod
    def event_elapsed_ms(self, start: Any, end: Any) -> float: ...

    @abc.abstractmethod
    def event_destroy(self, event: Any) -> None: ...

    @abc.abstractmethod
    def copy_htod_async(self, dst_ptr: int, src: np.ndarray, nbytes: int, stream: Any) -> None: ...

    @abc.abstractmethod
    def copy_dtoh_async(self, dst: np.ndarray, src_ptr: int, nbytes: int, stream: Any) -> None: ...

    @abc.abstractmethod
    def copy_dtod_async(self, dst_ptr: int, src_ptr: int, nbytes: int, stream: Any) -> None: ...


class CudaPythonApi(CudaApi):
    """cuda-python's runtime module: every call returns ``(error, *results)``."""

    name = "cuda-python"

    def __init__(self, cudart: Any) -> None:
        self._rt = cudart
        self._host_ptrs: set[int] = set()  # pinned allocations we made

    def _call(self, what: str, result: Any) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        code = getattr(err, "value", err)
        if code != 0:
            raise CudaError(f"{what} failed: {getattr(err, 'name', err)}")
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def device_count(self) -> int:
        return int(self._call("cudaGetDeviceCount", self._rt.cudaGetDeviceCount()))

    def device_alloc(self, nbytes: int) -> int:
        return int(self._call(f"cudaMalloc({nbytes})", self._rt.cudaMalloc(nbytes)))

    def device_free(self, ptr: int) -> None:
        self._call("cudaFree", self._rt.cudaFree(ptr))

    def host_alloc(self, nbytes: int) -> np.ndarray:
        ptr = int(self._call(f"cudaMallocHost({nbytes})", self._rt.cudaMallocHost(nbytes)))
        array = np.ctypeslib.as_array((ctypes.c_ubyte * nbytes).from_address(ptr))  # (nbytes,) uint8
        self._host_ptrs.add(ptr)
        return array

    def host_free(self, array: np.ndarray) -> None:
        ptr = int(array.ctypes.data)
        if ptr in self._host_ptrs:
            self._host_ptrs.discard(ptr)
            self._call("cudaFreeHost", self._rt.cudaFreeHost(ptr))

    def stream_create(self) -> Any:
        # Non-blocking: no implicit ordering with the legacy default stream other libraries may use.
        return self._call("cudaStreamCreateWithFlags",
                          self._rt.cudaStreamCreateWithFlags(getattr(self._rt, "cudaStreamNonBlocking", 1)))

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_synchronize(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", self._rt.cudaStreamSynchronize(stream))

    def stream_destroy(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", self._rt.cudaStreamDestroy(stream))

    def event_create(self) -> Any:
        return self._call("cudaEventCreate", self._rt.cudaEventCreate())

    def event_record(self, event: Any, stream: Any) -> None:
        self._call("cudaEventRecord", self._rt.cudaEventRecord(event, stream))

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._call("cudaEventElapsedTime", self._rt.cudaEventElapsedTime(start, end)))

    def event_destroy(self, event: Any) -> None:
        self._call("cudaEventDestroy", self._rt.cudaEventDestroy(event))

    def copy_htod_async(self, dst_ptr: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync(H2D)", self._rt.cudaMemcpyAsync(dst_ptr, src.ctypes.data, nbytes, kind, stream))

    def copy_dtoh_async(self, dst: np.ndarray, src_ptr: int, nbytes: int, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync(D2H)", self._rt.cudaMemcpyAsync(dst.ctypes.data, src_ptr, nbytes, kind, stream))

    def copy_dtod_async(self, dst_ptr: int, src_ptr: int, nbytes: int, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._call("cudaMemcpyAsync(D2D)", self._rt.cudaMemcpyAsync(dst_ptr, src_ptr, nbytes, kind, stream))


class PyCudaApi(CudaApi):
    """pycuda's driver module, on the device's primary context (the one TensorRT's runtime API uses).

    pycuda calls need that context current on the calling thread: create and
    run backends from the tick thread.
    """

    name = "pycuda"
    _instances: ClassVar[dict[int, PyCudaApi]] = {}

    def __init__(self, drv: Any) -> None:
        self._drv = drv
        drv.init()
        self._context = drv.Device(0).retain_primary_context()
        self._context.push()
        self._allocations: dict[int, Any] = {}

    @classmethod
    def for_module(cls, drv: Any) -> PyCudaApi:
        """One instance (one context push) per process."""
        key = id(drv)
        if key not in cls._instances:
            cls._instances[key] = cls(drv)
        return cls._instances[key]

    def device_count(self) -> int:
        return int(self._drv.Device.count())

    def device_alloc(self, nbytes: int) -> int:
        allocation = self._drv.mem_alloc(nbytes)
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def device_free(self, ptr: int) -> None:
        allocation = self._allocations.pop(ptr, None)
        if allocation is not None:
            allocation.free()

    def host_alloc(self, nbytes: int) -> np.ndarray:
        return self._drv.pagelocked_empty(nbytes, np.uint8)

    def host_free(self, array: np.ndarray) -> None:
        free = getattr(array.base, "free", None)
        if free is not None:
            free()

    def stream_create(self) -> Any:
        return self._drv.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def stream_destroy(self, stream: Any) -> None:
        pass  # pycuda destroys the stream when the object is collected

    def event_create(self) -> Any:
        return self._drv.Event()

    def event_record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(end.time_since(start))

    def event_destroy(self, event: Any) -> None:
        pass

    def copy_htod_async(self, dst_ptr: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        self._drv.memcpy_htod_async(dst_ptr, src[:nbytes], stream)

    def copy_dtoh_async(self, dst: np.ndarray, src_ptr: int, nbytes: int, stream: Any) -> None:
        self._drv.memcpy_dtoh_async(dst[:nbytes], src_ptr, stream)

    def copy_dtod_async(self, dst_ptr: int, src_ptr: int, nbytes: int, stream: Any) -> None:
        self._drv.memcpy_dtod_async(dst_ptr, src_ptr, nbytes, stream)


# --------------------------------------------------------------------------- TensorRT logger


_TRT_LOGGERS: dict[int, Any] = {}


def _trt_logger(trt: Any) -> Any:
    """One logger per process (TensorRT keeps the first one it is given), routed to ``logging``.

    It also remembers recent errors so a failed deserialisation can say why.
    """
    key = id(trt)
    if key in _TRT_LOGGERS:
        return _TRT_LOGGERS[key]

    severity = trt.ILogger.Severity

    class _CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.error_count = 0
            self.recent_errors: collections.deque[tuple[int, str]] = collections.deque(maxlen=32)

        def log(self, level: Any, msg: str) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                self.error_count += 1
                self.recent_errors.append((self.error_count, msg))
                logger.error("TensorRT: %s", msg)
            elif level == severity.WARNING:
                logger.warning("TensorRT: %s", msg)
            else:
                logger.debug("TensorRT: %s", msg)

        def errors_since(self, mark: int) -> list[str]:
            return [msg for index, msg in self.recent_errors if index > mark]

    trt_logger = _CapturingLogger()
    init_plugins = getattr(trt, "init_libnvinfer_plugins", None)
    if init_plugins is not None:
        init_plugins(trt_logger, "")
    _TRT_LOGGERS[key] = trt_logger
    return trt_logger


# --------------------------------------------------------------------------- buffers and results


class _IOBuffer:
    """One I/O tensor's device buffer and pinned host staging buffer; grows, never shrinks."""

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name = name
        self.dtype = dtype
        self.capacity_bytes = 0
        self.device_ptr = 0
        self.host: np.ndarray | None = None  # (capacity_bytes,) uint8, page-locked

    def ensure(self, nbytes: int, cuda: CudaApi) -> None:
        nbytes = max(nbytes, self.dtype.itemsize, 1)
        if nbytes <= self.capacity_bytes:
            return
        self.free(cuda)
        self.device_ptr = cuda.device_alloc(nbytes)
        self.host = cuda.host_alloc(nbytes)
        self.capacity_bytes = nbytes

    def host_view(self, shape: tuple[int, ...]) -> np.ndarray:
        assert self.host is not None
        nbytes = element_count(shape) * self.dtype.itemsize
        return self.host[:nbytes].view(self.dtype).reshape(shape)

    def free(self, cuda: CudaApi) -> None:
        if self.device_ptr:
            cuda.device_free(self.device_ptr)
        if self.host is not None:
            cuda.host_free(self.host)
        self.device_ptr, self.host, self.capacity_bytes = 0, None, 0


@dataclass(frozen=True)
class DeviceTensor:
    """An engine output left on the GPU, to feed another engine without a round trip through the host.

    Valid until its producer is enqueued again. Get one from ``PendingOutputs.device(name)``.
    """

    producer: TensorRTBackend
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    device_ptr: int
    nbytes: int
    stream: SharedStream
    generation: int


class PendingOutputs:
    """Outputs of one enqueued engine; readable after the stream's ``synchronize()``."""

    def __init__(self, backend: TensorRTBackend, stream: SharedStream, label: str,
                 views: dict[str, np.ndarray], devices: dict[str, DeviceTensor], generation: int) -> None:
        self.backend = backend
        self.stream = stream
        self.label = label
        self._views = views
        self._devices = devices
        self._generation = generation
        self.ready = False

    def get(self, copy: bool = True) -> dict[str, np.ndarray]:
        """The outputs by name. ``copy=False`` returns views of pinned buffers the next tick overwrites."""
        if not self.ready:
            raise RuntimeError(f"outputs of {self.label} are not ready: call SharedStream.synchronize() first")
        if self.backend._closed:
            raise RuntimeError(f"outputs of {self.label} are gone: the backend was closed")
        if self.backend._generation != self._generation:
            raise RuntimeError(f"outputs of {self.label} are stale: the engine has been enqueued again since")
        return {n: (v.copy() if copy else v) for n, v in self._views.items()}

    def device(self, name: str) -> DeviceTensor:
        """Output ``name`` as a GPU tensor to pass as a feed to a later engine on the same stream."""
        if name not in self._devices:
            raise KeyError(f"{self.label} has no output {name!r}; outputs: {', '.join(self._devices)}")
        return self._devices[name]


# --------------------------------------------------------------------------- the shared stream


class SharedStream:
    """One CUDA stream for all the engines of a tick, with one synchronisation per tick.

    ``enqueue`` queues an engine's input copies, its execution and its output
    copies without waiting. Engines queued on the same stream run in order,
    so an engine that reads another's output (``PendingOutputs.device``)
    needs no extra wait. An event is recorded before the first engine and
    after each one; ``synchronize`` waits once and returns each engine's GPU
    time in ms from those events.
    """

    def __init__(self, cuda: CudaApi | None = None) -> None:
        self.cuda = cuda or import_cuda_api()
        self._stream = self.cuda.stream_create()
        self.handle = self.cuda.stream_handle(self._stream)
        self._events: list[Any] = []  # boundaries, reused every tick
        self._pending: list[tuple[str, PendingOutputs]] = []
        self.last_gpu_ms: dict[str, float] = {}
        self._closed = False

    @property
    def stream(self) -> Any:
        """The binding's stream object (what CUDA calls take)."""
        return self._stream

    @property
    def pending(self) -> list[str]:
        """Labels of the engines queued since the last ``synchronize``."""
        return [label for label, _ in self._pending]

    def _event(self, index: int) -> Any:
        while len(self._events) <= index:
            self._events.append(self.cuda.event_create())
        return self._events[index]

    def enqueue(self, backend: TensorRTBackend, feeds: Mapping[str, Any]) -> PendingOutputs:
        """Validate ``feeds``, then queue copies + execution of ``backend``; returns without waiting."""
        if not isinstance(backend, TensorRTBackend):
            raise TypeError(f"SharedStream runs TensorRT engines; got {type(backend).__name__} "
                            f"(run other backends with backend.run(feeds))")
        backend.validate(feeds)
        return self._enqueue_validated(backend, feeds)

    def _enqueue_validated(self, backend: TensorRTBackend, feeds: Mapping[str, Any]) -> PendingOutputs:
        if self._closed:
            raise RuntimeError("SharedStream is closed")
        if any(p.backend is backend for _, p in self._pending):
            raise RuntimeError(f"{backend.label} is already queued on this stream; call synchronize() before "
                               f"enqueuing it again (its buffers are in use)")
        if not self._pending:
            self.cuda.event_record(self._event(0), self._stream)
        labels, label, suffix = self.pending, backend.label, 2
        while label in labels:  # two engines with the same file stem
            label, suffix = f"{backend.label}#{suffix}", suffix + 1
        pending = backend._enqueue(feeds, self, label)
        self._pending.append((label, pending))
        self.cuda.event_record(self._event(len(self._pending)), self._stream)
        return pending

    def synchronize(self) -> dict[str, float]:
        """Wait for everything queued; GPU ms per engine label, in queue order (also in ``last_gpu_ms``)."""
        if self._closed:
            raise RuntimeError("SharedStream is closed")
        self.cuda.stream_synchronize(self._stream)
        gpu_ms: dict[str, float] = {}
        for index, (label, pending) in enumerate(self._pending):
            gpu_ms[label] = self.cuda.event_elapsed_ms(self._events[index], self._events[index + 1])
            pending.ready = True
        self._pending.clear()
        self.last_gpu_ms = gpu_ms
        return gpu_ms

    def close(self) -> None:
        if self._closed:
            return
        self.cuda.stream_synchronize(self._stream)
        for event in self._events:
            self.cuda.event_destroy(event)
        self._events.clear()
        self._pending.clear()
        self.cuda.stream_destroy(self._stream)
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- the backend


class TensorRTBackend(InferenceBackend):
    """One deserialized TensorRT engine with one execution context.

    ``run(feeds)`` enqueues on the backend's stream and synchronizes: fine
    standalone. In the tick loop use ``SharedStream.enqueue`` for every
    engine and ``synchronize`` once.
    """

    name = "tensorrt"

    def __init__(self, model_path: str | Path, config: BackendConfig | None = None,
                 stream: SharedStream | None = None, label: str | None = None) -> None:
        super().__init__(model_path)
        path = self.model_path
        trt = import_tensorrt()
        cuda = stream.cuda if stream is not None else import_cuda_api()
        self._trt = trt
        self.label = label or path.stem
        self.trt_version = str(getattr(trt, "__version__", "unknown"))

        if not path.is_file():
            raise ModelLoadError(path, ("file not found" if not path.exists() else "not a regular file")
                                 + "; build engines with `edge-avatar engines build`")
        if path.suffix.lower() in ONNX_SUFFIXES:
            raise ModelLoadError(path, "unsupported: this is an ONNX model; the tensorrt backend loads serialized "
                                       "engines built from it by `edge-avatar engines build` (or use the "
                                       "onnxruntime backend)")
        data = path.read_bytes()
        if not data:
            raise ModelLoadError(path, f"the file is empty (truncated?); {REBUILD_HINT}")

        self._trt_logger = _trt_logger(trt)
        self._runtime = trt.Runtime(self._trt_logger)
        mark = self._trt_logger.error_count
        try:
            engine = self._runtime.deserialize_cuda_engine(data)
        except Exception as exc:  # noqa: BLE001 - some versions raise instead of returning None
            engine, raised = None, str(exc)
        else:
            raised = ""
        if engine is None:
            reasons = "; ".join(self._trt_logger.errors_since(mark) + ([raised] if raised else []))
            raise ModelLoadError(
                path,
                f"TensorRT {self.trt_version} could not deserialize this engine"
                + (f" ({reasons})" if reasons else "")
                + ". An engine only loads on the TensorRT version and GPU that built it (one built by "
                  "another TensorRT version, e.g. before a JetPack upgrade, fails like this), and a truncated "
                  f"or corrupt file fails the same way: {REBUILD_HINT}",
            )
        self._engine = engine

        self._profiles: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            mode = engine.get_tensor_mode(name)
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            trt_dtype = engine.get_tensor_dtype(name)
            try:
                dtype = np.dtype(trt.nptype(trt_dtype)).name
            except (TypeError, KeyError) as exc:
                raise ModelLoadError(path, f"unsupported: I/O tensor {name!r} has TensorRT type {trt_dtype}, "
                                           f"which has no numpy equivalent") from exc
            spec = TensorSpec(name, shape, dtype)
            if mode == trt.TensorIOMode.INPUT:
                self._inputs.append(spec)
                if spec.is_dynamic:
                    lo, opt, hi = engine.get_tensor_profile_shape(name, 0)
                    self._profiles[name] = (tuple(int(d) for d in lo), tuple(int(d) for d in opt),
                                            tuple(int(d) for d in hi))
            elif mode == trt.TensorIOMode.OUTPUT:
                self._outputs.append(spec)

        self._context = engine.create_execution_context()
        if self._context is None:
            raise ModelLoadError(path, "TensorRT could not create an execution context (out of GPU memory?)")

        self._stream = stream if stream is not None else SharedStream(cuda)
        self._owns_stream = stream is None
        self._buffers = {s.name: _IOBuffer(s.name, np.dtype(s.dtype)) for s in self._inputs + self._outputs}
        self._input_shapes: dict[str, tuple[int, ...]] = {}
        self._generation = 0
        logger.info("tensorrt %s: loaded %s (%d inputs, %d outputs, cuda via %s)", self.trt_version, path.name,
                    len(self._inputs), len(self._outputs), cuda.name)

    @property
    def stream(self) -> SharedStream:
        return self._stream

    def _extra_spec(self) -> dict[str, Any]:
        return {
            "tensorrt_version": self.trt_version,
            "cuda_binding": self._stream.cuda.name,
            "profiles": {n: {"min": list(lo), "opt": list(opt), "max": list(hi)}
                         for n, (lo, opt, hi) in self._profiles.items()},
        }

    def example_feeds(self, dynamic_dim: int = 1) -> dict[str, np.ndarray]:
        """Zeros at the optimisation profile's 'opt' shape for dynamic inputs (a dim of 1 may be out of range)."""
        feeds = {}
        for spec in self._inputs:
            shape = self._profiles[spec.name][1] if spec.name in self._profiles else spec.concrete_shape(dynamic_dim)
            feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
        return feeds

    def validate(self, feeds: Mapping[str, Any]) -> None:
        super().validate(feeds)
        for name, (lo, _, hi) in self._profiles.items():
            shape = tuple(int(d) for d in feeds[name].shape)
            if any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
                raise ValueError(f"model {self.model_path}: input {name!r} shape {shape} is outside the engine's "
                                 f"optimisation profile (min {lo}, max {hi}); rebuild the engine with a wider "
                                 f"profile or feed a shape in range")
        for name, value in feeds.items():
            if isinstance(value, DeviceTensor):
                if value.producer._closed:
                    raise ValueError(f"model {self.model_path}: input {name!r} is a device tensor of "
                                     f"{value.producer.label}, which has been closed")
                if value.producer._generation != value.generation:
                    raise ValueError(f"model {self.model_path}: input {name!r} is a stale device tensor "
                                     f"({value.producer.label}.{value.name} was enqueued again since)")
                if value.stream is not self._stream and value.stream.pending:
                    raise ValueError(f"model {self.model_path}: input {name!r} comes from another stream "
                                     f"with unsynchronized work; enqueue both engines on one SharedStream")

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        pending = self._stream._enqueue_validated(self, feeds)
        self._stream.synchronize()
        return pending.get()

    def _enqueue(self, feeds: Mapping[str, Any], stream: SharedStream, label: str) -> PendingOutputs:
        """Queue input copies, execution and output copies on ``stream`` (feeds already validated)."""
        if self._closed:
            raise RuntimeError(f"model {self.model_path}: backend 'tensorrt' is closed")
        cuda, context = stream.cuda, self._context
        self._generation += 1

        for spec in self._inputs:
            value = feeds[spec.name]
            shape = tuple(int(d) for d in value.shape)
            if spec.is_dynamic and self._input_shapes.get(spec.name) != shape:
                mark = self._trt_logger.error_count
                if not context.set_input_shape(spec.name, shape):
                    reasons = "; ".join(self._trt_logger.errors_since(mark)) or "see the TensorRT log"
                    raise ValueError(f"model {self.model_path}: TensorRT rejected shape {shape} for input "
                                     f"{spec.name!r}: {reasons}")
                self._input_shapes[spec.name] = shape
            buffer = self._buffers[spec.name]
            nbytes = element_count(shape) * buffer.dtype.itemsize
            if isinstance(value, DeviceTensor) and value.producer is not self:
                address = value.device_ptr  # zero copy: same stream, so the producer has finished by now
            else:
                buffer.ensure(nbytes, cuda)
                if isinstance(value, DeviceTensor):  # our own previous output (recurrent state): copy it
                    cuda.copy_dtod_async(buffer.device_ptr, value.device_ptr, nbytes, stream.stream)
                else:
                    np.copyto(buffer.host_view(shape), value)  # into pinned staging memory
                    cuda.copy_htod_async(buffer.device_ptr, buffer.host, nbytes, stream.stream)
                address = buffer.device_ptr
            if not context.set_tensor_address(spec.name, address):
                raise RuntimeError(f"model {self.model_path}: TensorRT refused the address of input {spec.name!r}")

        output_shapes: dict[str, tuple[int, ...]] = {}
        for spec in self._outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"model {self.model_path}: output {spec.name!r} has a data-dependent shape "
                                   f"{shape}, which this backend does not support")
            buffer = self._buffers[spec.name]
            buffer.ensure(element_count(shape) * buffer.dtype.itemsize, cuda)
            if not context.set_tensor_address(spec.name, buffer.device_ptr):
                raise RuntimeError(f"model {self.model_path}: TensorRT refused the address of output {spec.name!r}")
            output_shapes[spec.name] = shape

        mark = self._trt_logger.error_count
        if not context.execute_async_v3(stream.handle):
            reasons = "; ".join(self._trt_logger.errors_since(mark)) or "see the TensorRT log"
            raise RuntimeError(f"model {self.model_path}: TensorRT execute_async_v3 failed: {reasons}")

        views: dict[str, np.ndarray] = {}
        devices: dict[str, DeviceTensor] = {}
        for spec in self._outputs:
            buffer, shape = self._buffers[spec.name], output_shapes[spec.name]
            nbytes = element_count(shape) * buffer.dtype.itemsize
            cuda.copy_dtoh_async(buffer.host, buffer.device_ptr, nbytes, stream.stream)
            views[spec.name] = buffer.host_view(shape)
            devices[spec.name] = DeviceTensor(self, spec.name, shape, buffer.dtype, buffer.device_ptr, nbytes,
                                              stream, self._generation)
        return PendingOutputs(self, stream, label, views, devices, self._generation)

    def close(self) -> None:
        if self._closed:
            return
        stream = self._stream
        if not stream._closed:
            stream.cuda.stream_synchronize(stream.stream)  # nothing of ours may still be in flight
        for buffer in self._buffers.values():
            buffer.free(stream.cuda)
        # Destroy in dependency order: context, then engine, then runtime.
        self._context = None
        self._engine = None
        self._runtime = None
        if self._owns_stream:
            stream.close()
        super().close()
