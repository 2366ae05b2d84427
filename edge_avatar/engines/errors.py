"""Errors of the engine build, each naming the file and the field or stage that failed.

Why a module of its own: the build, the cache, the calibration readers and
the CLI all raise and catch these, and ``resolve_model`` (imported by the
loading code at start-up) must be able to import them without pulling in
ONNX, ONNX Runtime or TensorRT. Plain exceptions, no dependencies.
"""

from __future__ import annotations

from pathlib import Path


class EngineError(RuntimeError):
    """Base class: something about one model's engine could not be done; the message says what and where."""


class ManifestError(EngineError):
    """An ONNX file does not match its manifest entry (or cannot be read): names the file and the field."""

    def __init__(self, path: str | Path, field: str, problem: str):
        self.path = Path(path)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.path}: {field}: {problem}")


class CalibrationError(EngineError):
    """No usable calibration data for a model (empty folder, no generator, wrong shapes)."""


class BuildError(EngineError):
    """Quantization or an engine build failed; the previous good artifact is kept."""

    def __init__(self, model: str, stage: str, problem: str):
        self.model = model
        self.stage = stage
        self.problem = problem
        super().__init__(f"{model}: {stage} failed: {problem}")
