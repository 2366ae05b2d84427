"""The ``planner`` section of the root config: which engine drives the face and how its inputs are read.

Why this module exists: like every capability, the planner's knobs live
beside its code as one frozen dataclass with units in the names and ranges
in the metadata, checked by ``edge_avatar.config`` once the lead adds the
section to ``RootConfig`` (``planner: PlannerConfig``). Until then
``NeuralPlanner.from_config`` falls back to these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


def _range(lo: float | None, hi: float | None, default: Any) -> Any:
    return field(default=default, metadata={"min": lo, "max": hi})


@dataclass(frozen=True)
class PlannerConfig:
    """How the avatar decides its motion each tick."""

    engine: Literal["student", "teacher"] = "student"  # teacher: the reference engine in Python (slower)
    model: str = ""                         # "" = the repository's engines/planner.onnx
    verify_sha256: bool = True              # refuse a model whose hash differs from planner.manifest.json
    seed: int = _range(0, 2**31 - 1, 0)     # blinks, breathing, micro-motion (BehaviourDrivers)
    stale_perception_ms: float = _range(50.0, 10000.0, 1000.0)  # an older perception token = no visitor
    camera_hfov_deg: float = _range(20.0, 170.0, 69.0)           # maps the visitor's face box to a gaze angle
    camera_aspect: float = _range(0.5, 3.0, 4 / 3)
