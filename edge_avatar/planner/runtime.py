"""``NeuralPlanner``: the distilled planner behind the loop's ``Planner`` protocol, one engine call per tick.

Why this module exists: the loop calls ``planner.step(pts_ns, token)`` once
per tick and wants a motion frame back, with no torch and nothing slow on
the tick. This class owns the ``PlannerInputs`` the session feeds (speech
timelines, audio tokens, reply, persona, turn state), builds the input
vector for the tick's pts, runs ``engines/planner.onnx`` through
``edge_avatar.backends`` (ONNX Runtime here; TensorRT on a Jetson once the
engine build exists) and carries the GRU state from tick to tick.

The engine's I/O (``planner.manifest.json``)::

    features  (T, 1, 149) float32   input vector v1 (``inputs``), time-major, T = 1 per tick
    state_in  (1, 1, H)   float32   zeros at start / after ``reset()``
    motion    (T, 1, 64)  float32   motion frame v1, already clamped to its ranges
    state_out (1, 1, H)   float32   feed back as the next state_in

A NaN that still reached the engine output (it should not: inputs are
sanitised) resets the state and returns the neutral frame, counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.backends import load_backend
from edge_avatar.config import BackendConfig
from edge_avatar.motion import MOTION_FRAME_SIZE, neutral_motion
from edge_avatar.planner.inputs import INPUT_SIZE, INPUT_VERSION, PlannerInputs
from edge_avatar.planner.options import PlannerConfig

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_MODEL = REPO_ROOT / "engines" / "planner.onnx"
MANIFEST_NAME = "planner.manifest.json"


class PlannerModelError(RuntimeError):
    """The planner engine does not match what this code expects (hash, layout version, I/O)."""


def read_manifest(model_path: str | Path) -> dict[str, Any] | None:
    path = Path(model_path).with_name(MANIFEST_NAME)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class NeuralPlanner:
    """The student planner: ``step(pts_ns, token) -> (64,) float32``; ``reset()`` starts a new session."""

    def __init__(self, inputs: PlannerInputs | None = None, model_path: str | Path = DEFAULT_MODEL,
                 backend_name: str = "onnxruntime", backend_config: BackendConfig | None = None,
                 verify_sha256: bool = True, stream: Any = None):
        self.inputs = inputs if inputs is not None else PlannerInputs()
        self.model_path = Path(model_path)
        manifest = read_manifest(self.model_path)
        if manifest is not None:
            if manifest.get("input_version") != INPUT_VERSION:
                raise PlannerModelError(f"{self.model_path}: trained on input layout v{manifest.get('input_version')}"
                                        f", this code builds v{INPUT_VERSION}; retrain (edge-avatar train planner)")
            if verify_sha256 and backend_name != "tensorrt" and self.model_path.suffix == ".onnx":
                digest = sha256_file(self.model_path)
                if digest != manifest.get("sha256"):
                    raise PlannerModelError(f"{self.model_path}: sha256 {digest[:12]}... differs from "
                                            f"{MANIFEST_NAME} ({str(manifest.get('sha256'))[:12]}...)")
        self.manifest = manifest or {}
        self.backend = load_backend(backend_name, self.model_path, backend_config, stream=stream)
        specs = {s.name: s for s in self.backend.inputs}
        if set(specs) != {"features", "state_in"}:
            raise PlannerModelError(f"{self.model_path}: expected inputs features, state_in; got {sorted(specs)}")
        self.state_size = int(specs["state_in"].shape[-1])
        self._state = np.zeros((1, 1, self.state_size), np.float32)
        self._features = np.zeros((1, 1, INPUT_SIZE), np.float32)
        self._feeds = {"features": self._features, "state_in": self._state}   # reused every tick
        self.counters = {"ticks": 0, "nan_outputs": 0, "resets": 0}
        self.engine: dict[str, Any] | None = None   # which build runs, and why (set by from_config)
        self.last_inputs: np.ndarray | None = None

    @classmethod
    def from_config(cls, config: Any, inputs: PlannerInputs | None = None, stream: Any = None) -> NeuralPlanner:
        """From the root config: ``config.planner`` (defaults when the section is absent) and ``config.backend``."""
        pc: PlannerConfig = getattr(config, "planner", None) or PlannerConfig()
        if inputs is None:
            inputs = PlannerInputs(seed=pc.seed, camera_hfov_deg=pc.camera_hfov_deg, camera_aspect=pc.camera_aspect,
                                   stale_after_ms=pc.stale_perception_ms)
        backend = getattr(config, "backend", None) or BackendConfig()
        path, backend_name = Path(pc.model) if pc.model else DEFAULT_MODEL, "onnxruntime"
        engine = {"precision": "fp32", "reason": "the fp32 ONNX (no engine build consulted)"}
        if pc.model:
            backend_name = "tensorrt" if path.suffix.lower() in (".engine", ".plan", ".trt") else "onnxruntime"
            engine = {"precision": "as built", "reason": f"planner.model = {pc.model}"}
        else:
            try:  # the engine build's choice (INT8 / TensorRT when built and verified here), else the fp32 ONNX
                from edge_avatar.engines import EngineError, resolve_model  # noqa: PLC0415

                resolved = resolve_model("planner", config)
                path, backend_name = resolved.path, resolved.backend
                engine = {"precision": resolved.precision, "reason": resolved.reason}
                log.info("planner: %s %s (%s)", resolved.precision, path.name, resolved.reason)
            except ImportError as exc:
                log.info("planner: %s (engine builds unavailable: %s)", path, exc)
            except (KeyError, EngineError) as exc:
                log.warning("planner: using %s (no engine build choice: %s)", path, exc)
        planner = cls(inputs, path, backend_name, backend, pc.verify_sha256, stream)
        planner.engine = {"model": "planner", "backend": backend_name, **engine}
        return planner

    def warm_up(self, iterations: int = 5) -> float:
        """Run on zero inputs (state untouched); mean ms per call."""
        return self.backend.warm_up(iterations)

    def reset(self) -> None:
        """Forget the GRU state and every input (a new session or a new visitor)."""
        self.reset_state()
        self.inputs.reset()
        self.counters["resets"] += 1

    def reset_state(self) -> None:
        """Forget only the network's memory (inputs kept)."""
        self._state = np.zeros((1, 1, self.state_size), np.float32)
        self._feeds["state_in"] = self._state

    def step(self, pts_ns: int, token: np.ndarray | None) -> np.ndarray:
        self.inputs.observe_token(token, pts_ns)
        x = self.inputs.vector(pts_ns)
        self.last_inputs = x
        return self.step_vector(x)

    def step_vector(self, x: np.ndarray) -> np.ndarray:
        """One tick on an assembled input vector: (149,) -> (64,) float32."""
        self._features[0, 0] = x
        out = self.backend.run(self._feeds)
        self.counters["ticks"] += 1
        state = out["state_out"]
        if not math.isfinite(float(state.sum())):   # NaN anywhere in the state poisons every later tick
            self.counters["nan_outputs"] += 1
            self.reset_state()
            return neutral_motion()
        self._state = state
        self._feeds["state_in"] = state
        return out["motion"].reshape(MOTION_FRAME_SIZE)

    def run_sequence(self, features: np.ndarray, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A whole (T, 149) stream in one call -> ((T, 64) motion, final state). Does not touch the live state."""
        state = np.zeros((1, 1, self.state_size), np.float32) if state is None else state
        out = self.backend.run({"features": np.ascontiguousarray(features, np.float32)[:, None, :],
                                "state_in": state.astype(np.float32)})
        return out["motion"][:, 0], out["state_out"]

    def close(self) -> None:
        self.backend.close()


def build_planner(config: Any) -> Any:
    """The planner the config asks for: ``NeuralPlanner`` (default) or the reference ``TeacherPlanner``.

    Both implement the loop's ``Planner`` protocol and expose ``.inputs`` (the ``PlannerInputs`` the
    session feeds).
    """
    pc: PlannerConfig = getattr(config, "planner", None) or PlannerConfig()
    if pc.engine == "teacher":
        from edge_avatar.planner.teacher import TeacherPlanner  # noqa: PLC0415

        return TeacherPlanner(PlannerInputs(seed=pc.seed, camera_hfov_deg=pc.camera_hfov_deg,
                                            camera_aspect=pc.camera_aspect, stale_after_ms=pc.stale_perception_ms))
    return NeuralPlanner.from_config(config)
