"""The renderer the loop runs: the distilled student, through the project's inference backends.

Why this module exists: the loop's ``Renderer`` protocol is one call,
``render(motion (64,) float32) -> (H, W, 3) uint8``; this class makes that
call with the trained ONNX model (``engines/renderer_<size>.onnx``) on
whatever backend the config names, and nothing else: numpy and the backend
are its only dependencies (no torch, no OpenCV, no teacher).

Motion from a planner or from a network is untrusted: every frame is passed
through ``edge_avatar.motion.sanitize_motion`` (NaN to neutral, values
clamped to their ranges) and what was changed is counted, so a bad upstream
shows up in the report instead of as a glitch on the kiosk's screen.

The display's background colour is an input of the model, so the frame
comes out already composited (the student's output is premultiplied RGBA
inside the graph).

    renderer = NeuralRenderer.from_config(config)
    image = renderer.render(motion)          # (256, 256, 3) uint8
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.backends import load_backend
from edge_avatar.config import BackendConfig
from edge_avatar.motion import MOTION_FRAME_SIZE, sanitize_motion

log = logging.getLogger(__name__)

ENGINES_DIR = Path(__file__).resolve().parent.parent.parent / "engines"
TRAINED_SIZES_PX = (256, 512)   # sizes with a committed model; others are upscaled from the nearest below
# Where the head and its chin shadow can be, at 256 px, as (row, col, size). Measured with the teacher over the
# 108 combinations of yaw -45/0/45, pitch and roll -30/0/30 deg, jaw closed/open and cheeks flat/puffed: the head
# covers rows 37-183 and cols 46-209, the chin's shadow rows 122-200 and cols 73-182. The exported model
# (``render.export``) runs its per-pixel stage only in this square (43 % of the frame); elsewhere it shows the body
# layer over the background. (Not in ``layout``: that module's code keys the teacher's cached renders.)
EXPORT_WINDOW_256 = (36, 44, 168)


def model_path_for(size_px: int, engines_dir: str | Path | None = None) -> Path:
    return Path(engines_dir or ENGINES_DIR) / f"renderer_{size_px}.onnx"


def renderer_size_for(width_px: int, sizes: Any) -> int | None:
    """The renderer a ``width_px`` frame uses among ``sizes``: its own size, else the largest smaller one (scaled
    up); None if there is none. The runtime and ``engines build`` choose by this one rule."""
    return max((s for s in sizes if s <= width_px), default=None)


def sizes_on_disk(engines_dir: str | Path | None = None, also: tuple[int, ...] = ()) -> list[int]:
    """The trained sizes (and ``also``) that have a model file in ``engines_dir``."""
    return [s for s in sorted({*TRAINED_SIZES_PX, *also}) if model_path_for(s, engines_dir).is_file()]


class NeuralRenderer:
    """Motion frame -> image with the student network; counts the motion values it had to repair."""

    def __init__(self, width_px: int, height_px: int, background_rgb: tuple[int, int, int],
                 backend: BackendConfig | None = None, model_path: str | Path | None = None,
                 engines_dir: str | Path | None = None):
        if width_px != height_px:
            raise ValueError(f"the neural renderer draws square frames; got render size {width_px}x{height_px}")
        self.width_px, self.height_px = width_px, height_px
        backend = backend or BackendConfig()
        path = Path(model_path) if model_path else model_path_for(width_px, engines_dir)
        if not path.is_file() and model_path is None:
            size = renderer_size_for(width_px, sizes_on_disk(engines_dir))
            if size is None:
                raise FileNotFoundError(f"no renderer model for {width_px}px: {path} is missing; "
                                        f"train one with: edge-avatar train renderer --size {width_px}")
            log.warning("no %dpx renderer model (%s); rendering at %dpx and scaling up -- train one with "
                        "`edge-avatar train renderer --size %d`", width_px, path, size, width_px)
            path = model_path_for(size, engines_dir)
        name = backend.name
        if name == "tensorrt" and path.suffix == ".onnx":
            log.warning("renderer: %s is ONNX; running it in onnxruntime until an engine is built", path)
            name = "onnxruntime"
        self.model_path = path
        self.backend = load_backend(name, path, backend)
        spec = {s.name: s for s in self.backend.inputs}
        if "motion" not in spec or "background_rgb" not in spec:
            raise ValueError(f"{path} is not a renderer model: inputs are {list(spec)}")
        out = self.backend.outputs[0]
        self.native_px = int(out.shape[1]) if isinstance(out.shape[1], int) else width_px
        self._background = np.asarray(background_rgb, np.float32).reshape(3)
        self._feeds = {"motion": np.zeros((1, MOTION_FRAME_SIZE), np.float32), "background_rgb": self._background}
        self.frames = 0
        self.values_clamped = 0
        self.frames_clamped = 0
        self.engine: dict[str, Any] = {"model": path.stem.split(".")[0], "backend": self.backend.name,
                                       "precision": ("int8" if ".int8." in path.name else "fp32")
                                       if path.suffix == ".onnx" else "as built",
                                       "reason": "model file given directly"}
        self.backend.warm_up()

    @classmethod
    def from_config(cls, config: Any, model_path: str | Path | None = None) -> "NeuralRenderer":
        """From a RootConfig: render size, display background, backend, and the engine build's choice.

        Without ``model_path`` the file is what ``edge-avatar engines build`` chose and verified on
        this machine for ``renderer_<size>`` (``edge_avatar.engines.resolve_model``): a TensorRT
        engine or an INT8 Q/DQ ONNX where one verified and was faster, else the fp32 ONNX. Which one,
        and why, is in ``stats()["engine"]``.
        """
        engines_dir = getattr(config.perception, "engines_dir", "") or None
        engine = {"precision": "fp32", "reason": "the fp32 ONNX (no engine build consulted)"}
        if model_path:
            engine = {"precision": "as built", "reason": f"avatar.model_file = {model_path}"}
        else:
            width = config.render.width_px
            size = renderer_size_for(width, sizes_on_disk(engines_dir, also=(width,))) or width
            try:
                from edge_avatar.engines import EngineError, resolve_model  # noqa: PLC0415

                resolved = resolve_model(f"renderer_{size}", config)
                if size != width:
                    log.warning("no %dpx renderer model; rendering at %dpx and scaling up -- train one with "
                                "`edge-avatar train renderer --size %d`", width, size, width)
                model_path = resolved.path
                engine = {"precision": resolved.precision, "reason": resolved.reason}
                log.info("renderer: %s %s (%s)", resolved.precision, resolved.path.name, resolved.reason)
            except ImportError as exc:
                log.info("renderer: engine builds unavailable (%s); the fp32 ONNX", exc)
            except (KeyError, EngineError) as exc:
                log.warning("renderer: no engine build choice (%s); the fp32 ONNX", exc)
        renderer = cls(width_px=config.render.width_px, height_px=config.render.height_px,
                       background_rgb=tuple(config.display.background_rgb), backend=config.backend,
                       model_path=model_path, engines_dir=engines_dir)
        renderer.engine.update(engine)
        return renderer

    def render(self, motion: np.ndarray) -> np.ndarray:
        """(64,) motion frame -> (H, W, 3) uint8 RGB over the background colour."""
        values = np.asarray(motion, dtype=np.float32).reshape(-1)
        if values.shape[0] != MOTION_FRAME_SIZE:
            raise ValueError(f"motion frame must have {MOTION_FRAME_SIZE} values, got {values.shape[0]}")
        clean, changed = sanitize_motion(values)
        if changed:
            self.values_clamped += changed
            self.frames_clamped += 1
        self._feeds["motion"][0] = clean
        image = self.backend.run(self._feeds)["image"][0]                  # (S, S, 3) uint8
        self.frames += 1
        if self.native_px != self.width_px:
            image = _resize_bilinear(image, self.width_px, self.height_px)
        return image

    def stats(self) -> dict[str, Any]:
        return {"model": str(self.model_path), "backend": self.backend.name, "engine": self.engine,
                "frames": self.frames,
                "motion_values_clamped": self.values_clamped, "frames_with_clamped_values": self.frames_clamped}

    def close(self) -> None:
        self.backend.close()


def _resize_bilinear(image: np.ndarray, width_px: int, height_px: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (height_px, width_px, 3), bilinear with pixel centres aligned (numpy only)."""
    h, w = image.shape[:2]

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1.0)
        i0 = np.floor(src).astype(np.intp)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (src - i0).astype(np.float32)

    r0, r1, fr = axis(height_px, h)
    c0, c1, fc = axis(width_px, w)
    img = image.astype(np.float32)
    rows = img[r0] * (1.0 - fr)[:, None, None] + img[r1] * fr[:, None, None]
    out = rows[:, c0] * (1.0 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]
    return (out + 0.5).astype(np.uint8)
