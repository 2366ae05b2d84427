"""Engines: INT8 Q/DQ and TensorRT builds of every model, verified against fp32, timed, cached per board.

Why this package exists: the product promises INT8 on a Jetson, but an
engine is only worth running if it is still right and actually faster on
the machine it runs on. This package turns each ONNX in ``engines/`` into
its candidates (ONNX Runtime INT8 Q/DQ everywhere; TensorRT INT8/FP16
engines where TensorRT exists), checks each against the fp32 model on
held-out data in the model's own units, times them all, and records the
choice in a cache keyed by everything that makes an engine non-portable.

- ``edge-avatar engines build|verify|bench`` and ``edge-avatar calibrate capture`` (``engines.cli``)
- ``resolve_model(name, config) -> (path, precision, reason)`` for the loading code (``engines.resolve``)

Importing this package imports neither ONNX Runtime, ONNX nor TensorRT;
the modules that need them import them when called.
"""

from __future__ import annotations

from edge_avatar.engines.errors import BuildError, CalibrationError, EngineError, ManifestError
from edge_avatar.engines.resolve import ResolvedModel, resolve_model

__all__ = ["BuildError", "CalibrationError", "EngineError", "ManifestError", "ResolvedModel", "resolve_model"]
