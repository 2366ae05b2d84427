"""The null backend: right-shaped zeros, instantly, for pipeline tests.

Why this module exists: tests of the loop, the queues and the telemetry must
not depend on a model's numbers or on how fast a CPU runs it. This backend
has a real I/O spec (given as ``TensorSpec`` lists, or read from an ONNX
file's declared inputs and outputs without running it), checks feeds exactly
like the real backends, returns zeros of the output specs and counts calls.

Reading an ONNX file uses the ``onnx`` package (already a core dependency)
rather than a runtime session: it only parses the graph's declared I/O, so a
model that no runtime on this machine could execute still gives its spec.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.backends.base import UNNAMED_DIM, InferenceBackend, ModelLoadError, TensorSpec


def _value_info_spec(value_info: Any, path: Path) -> TensorSpec:
    import onnx

    if not value_info.type.HasField("tensor_type"):
        raise ModelLoadError(path, f"unsupported: I/O {value_info.name!r} is not a tensor")
    tensor_type = value_info.type.tensor_type
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(path, f"unsupported: tensor {value_info.name!r} has ONNX element type "
                                   f"{tensor_type.elem_type}") from exc
    dims: list[int | str] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or UNNAMED_DIM)
    return TensorSpec(value_info.name, tuple(dims), dtype)


def read_onnx_io(path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The declared graph inputs (initializers excluded) and outputs of an ONNX file, without running it."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(path, "file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise ModelLoadError(path, "the file is empty (truncated download or interrupted write?)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(path, f"the file is truncated or corrupt (not a valid ONNX protobuf): {exc}") from exc
    graph = model.graph
    if not graph.output:
        raise ModelLoadError(path, "the file is truncated or corrupt: the graph declares no outputs")
    initializers = {init.name for init in graph.initializer}
    inputs = [_value_info_spec(v, path) for v in graph.input if v.name not in initializers]
    outputs = [_value_info_spec(v, path) for v in graph.output]
    return inputs, outputs


class NullBackend(InferenceBackend):
    """Returns zeros of the output specs; ``calls`` counts runs, ``last_feeds`` keeps the latest feeds.

    An output's dynamic dim takes the value of the input dim with the same
    symbolic name in the call (``"batch"`` follows the batch fed), else
    ``dynamic_dim``.
    """

    name = "null"

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 model_path: str | Path = "null.onnx", dynamic_dim: int = 1) -> None:
        super().__init__(model_path)
        self._inputs = list(inputs)
        self._outputs = list(outputs)
        self.dynamic_dim = dynamic_dim
        self.calls = 0
        self.last_feeds: dict[str, np.ndarray] | None = None

    @classmethod
    def from_onnx(cls, path: str | Path, dynamic_dim: int = 1) -> NullBackend:
        inputs, outputs = read_onnx_io(path)
        return cls(inputs, outputs, model_path=path, dynamic_dim=dynamic_dim)

    def _extra_spec(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        self.last_feeds = dict(feeds)
        known: dict[str, int] = {}
        for spec in self._inputs:
            for want, got in zip(spec.shape, feeds[spec.name].shape):
                if isinstance(want, str) and want != UNNAMED_DIM:
                    known.setdefault(want, int(got))
        return {s.name: np.zeros(s.concrete_shape(self.dynamic_dim, known), dtype=s.dtype)
                for s in self._outputs}
