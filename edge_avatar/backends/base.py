"""The one small inference interface every backend implements.

Why this module exists: perception, planner and renderer must not care whether
their network runs in ONNX Runtime on a laptop, natively in TensorRT on a
Jetson, or not at all in a pipeline test. They see named numpy inputs going in
and named numpy outputs coming out, plus an I/O spec, a warm-up and ``close()``.

The interface is deliberately numpy-only (no torch, no framework tensors):
numpy is already a core dependency, it is what the camera, audio and renderer
code speak, and it costs nothing to import. Feed checking lives here, once, so
that a wrong name, shape or dtype gives the same clear message on every
backend instead of a different native stack trace per runtime.
"""

from __future__ import annotations

import abc
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from typing_extensions import Self  # annotations only; never imported at run time

logger = logging.getLogger(__name__)

# The name used for an unnamed dynamic dimension.
UNNAMED_DIM = "?"

Dim = int | str


class BackendUnavailable(RuntimeError):
    """A backend's Python package (or its hardware) is missing; the message says how to install it."""

    def __init__(self, backend: str, package: str, install_hint: str, detail: str = ""):
        self.backend = backend
        self.package = package
        self.install_hint = install_hint
        self.detail = detail
        because = f" ({detail})" if detail else ""
        super().__init__(
            f"inference backend {backend!r} is unavailable: it needs {package}, which could not be "
            f"loaded{because}. To install: {install_hint}"
        )


class ModelLoadError(RuntimeError):
    """A model file could not be loaded: missing, truncated/corrupt, or unsupported; names the file."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot load model {self.path}: {reason}")


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one model input or output.

    ``shape`` holds an int per fixed dimension and a string per dynamic one
    (the symbolic name from the model, e.g. ``"batch"``, or ``"?"`` when the
    model gives none). ``dtype`` is a numpy dtype name such as ``"float32"``.
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: str

    def __post_init__(self) -> None:
        dims: list[Dim] = []
        for dim in self.shape:
            if isinstance(dim, (bool, np.bool_)):
                raise TypeError(f"tensor {self.name!r}: shape entries must be int or str, got {dim!r}")
            if isinstance(dim, (int, np.integer)):
                dims.append(int(dim) if int(dim) >= 0 else UNNAMED_DIM)
            elif isinstance(dim, str):
                dims.append(dim or UNNAMED_DIM)
            elif dim is None:
                dims.append(UNNAMED_DIM)
            else:
                raise TypeError(f"tensor {self.name!r}: shape entries must be int or str, got {dim!r}")
        object.__setattr__(self, "shape", tuple(dims))
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_dynamic(self) -> bool:
        return any(isinstance(d, str) for d in self.shape)

    def concrete_shape(self, dynamic_dim: int = 1, known: Mapping[str, int] | None = None) -> tuple[int, ...]:
        """The shape with every dynamic dim replaced (by ``known[name]`` when given, else ``dynamic_dim``)."""
        known = known or {}
        return tuple(
            d if isinstance(d, int) else known.get(d, dynamic_dim) if d != UNNAMED_DIM else dynamic_dim
            for d in self.shape
        )

    def zeros(self, dynamic_dim: int = 1) -> np.ndarray:
        return np.zeros(self.concrete_shape(dynamic_dim), dtype=self.dtype)

    def shape_str(self) -> str:
        return "(" + ", ".join(str(d) for d in self.shape) + ")"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def __str__(self) -> str:
        return f"{self.name} {self.shape_str()} {self.dtype}"


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class TimingSummary:
    """Latency statistics of repeated calls, all in milliseconds."""

    count: int
    min_ms: float
    p50_ms: float
    p95_ms: float
    max_ms: float
    mean_ms: float

    def to_dict(self) -> dict[str, float]:
        return {"count": self.count, "min_ms": self.min_ms, "p50_ms": self.p50_ms, "p95_ms": self.p95_ms,
                "max_ms": self.max_ms, "mean_ms": self.mean_ms}


def time_call_ms(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Run ``fn`` once; return its result and the host wall time it took in ms.

    Uses ``perf_counter_ns`` (a measuring stick, not the media clock). For GPU
    work this is only meaningful when ``fn`` synchronizes before returning.
    """
    start_ns = time.perf_counter_ns()
    result = fn(*args, **kwargs)
    return result, (time.perf_counter_ns() - start_ns) / 1e6


def time_calls_ms(fn: Callable[[], Any], iterations: int) -> list[float]:
    """Call ``fn`` ``iterations`` times; the duration of each call in ms."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    return [time_call_ms(fn)[1] for _ in range(iterations)]


def summarize_ms(samples_ms: Sequence[float]) -> TimingSummary:
    """min / p50 / p95 / max / mean of a list of durations in ms."""
    if not samples_ms:
        raise ValueError("no timing samples to summarize")
    values = np.asarray(samples_ms, dtype=np.float64)
    return TimingSummary(
        count=int(values.size),
        min_ms=float(values.min()),
        p50_ms=float(np.percentile(values, 50)),
        p95_ms=float(np.percentile(values, 95)),
        max_ms=float(values.max()),
        mean_ms=float(values.mean()),
    )


# --------------------------------------------------------------------------- feed checking


def _describe(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(str(s) for s in specs) or "none"


def validate_feeds(model_path: str | Path, specs: Sequence[TensorSpec], feeds: Mapping[str, Any]) -> None:
    """Check feed names, ranks, fixed dims, consistent named dims and dtypes; ``ValueError`` otherwise.

    A feed is anything with ``.shape`` and ``.dtype`` (a numpy array, or a
    device-tensor reference of the TensorRT backend). Nothing is cast: a
    float64 array for a float32 input is an error, not a silent copy.
    """
    if not isinstance(feeds, Mapping):
        raise TypeError(f"model {model_path}: feeds must be a dict of input name -> array, "
                        f"got {type(feeds).__name__}")
    expected = {s.name: s for s in specs}
    missing = [n for n in expected if n not in feeds]
    unknown = [n for n in feeds if n not in expected]
    if unknown:
        raise ValueError(f"model {model_path}: unknown input {unknown[0]!r}; "
                         f"expected inputs: {_describe(specs)}")
    if missing:
        raise ValueError(f"model {model_path}: missing input {missing[0]!r}; "
                         f"expected inputs: {_describe(specs)}")
    named_dims: dict[str, tuple[int, str]] = {}
    for name, spec in expected.items():
        value = feeds[name]
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            raise ValueError(f"model {model_path}: input {name!r} must be a numpy array {spec.shape_str()} "
                             f"{spec.dtype}, got {type(value).__name__}")
        shape = tuple(int(d) for d in value.shape)
        if len(shape) != spec.rank:
            raise ValueError(f"model {model_path}: input {name!r} expected rank {spec.rank} with shape "
                             f"{spec.shape_str()}, got shape {shape} (rank {len(shape)})")
        for axis, (want, got) in enumerate(zip(spec.shape, shape)):
            if isinstance(want, int):
                if want != got:
                    raise ValueError(f"model {model_path}: input {name!r} expected shape {spec.shape_str()} "
                                     f"(dim {axis} = {want}), got {shape}")
            elif want != UNNAMED_DIM:
                seen = named_dims.setdefault(want, (got, name))
                if seen[0] != got:
                    raise ValueError(f"model {model_path}: input {name!r} dim {axis} ({want!r}) is {got}, "
                                     f"but input {seen[1]!r} has {want!r} = {seen[0]}; they must match")
        dtype = np.dtype(value.dtype).name
        if dtype != spec.dtype:
            raise ValueError(f"model {model_path}: input {name!r} expected dtype {spec.dtype}, got {dtype} "
                             f"(convert with .astype(np.{spec.dtype}))")


# --------------------------------------------------------------------------- the interface


class InferenceBackend(abc.ABC):
    """Named numpy inputs in, named numpy outputs out.

    Subclasses set ``name`` and ``model_path``, fill ``_inputs``/``_outputs``
    and implement ``_run`` (feeds already validated). Use as a context manager
    or call ``close()``.
    """

    name: str = "abstract"
    model_path: Path

    def __init__(self, model_path: str | Path) -> None:
        self.model_path = Path(model_path)
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        self._closed = False

    # ---- spec

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._outputs)

    def io_spec(self) -> dict[str, Any]:
        """A printable description: backend, model file, inputs, outputs and backend-specific facts."""
        spec: dict[str, Any] = {
            "backend": self.name,
            "model": str(self.model_path),
            "inputs": [s.to_dict() for s in self._inputs],
            "outputs": [s.to_dict() for s in self._outputs],
        }
        spec.update(self._extra_spec())
        return spec

    def _extra_spec(self) -> dict[str, Any]:
        return {}

    # ---- running

    def validate(self, feeds: Mapping[str, Any]) -> None:
        validate_feeds(self.model_path, self._inputs, feeds)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate ``feeds`` against the input spec, run the model, return outputs by name."""
        if self._closed:
            raise RuntimeError(f"model {self.model_path}: backend {self.name!r} is closed")
        self.validate(feeds)
        return self._run(feeds)

    @abc.abstractmethod
    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on already validated feeds."""

    def example_feeds(self, dynamic_dim: int = 1) -> dict[str, np.ndarray]:
        """Zero inputs that satisfy the spec (dynamic dims -> ``dynamic_dim``)."""
        return {s.name: s.zeros(dynamic_dim) for s in self._inputs}

    def warm_up(self, iterations: int = 3) -> float:
        """Run ``iterations`` times on zero inputs; the mean wall time of a call in ms.

        The first calls pay for lazy allocation, kernel selection and caches;
        do this before telling systemd we are READY.
        """
        feeds = self.example_feeds()
        samples_ms = time_calls_ms(lambda: self.run(feeds), iterations)
        mean_ms = float(np.mean(samples_ms))
        logger.info("warmed up %s (%s): %d runs, mean %.3f ms, last %.3f ms",
                    self.model_path.name, self.name, iterations, mean_ms, samples_ms[-1])
        return mean_ms

    # ---- lifetime

    def close(self) -> None:
        """Release runtime resources; safe to call more than once."""
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.model_path)!r})"


def element_count(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape)
