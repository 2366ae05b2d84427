"""Calibration and held-out data for each model, shaped exactly like what the model sees on the device.

Why this module exists: INT8 ranges are measured, not computed. A model
calibrated on inputs unlike the deployment's (studio portraits instead of a
dim lobby, a face filling the frame instead of one at 3 m) clips the values
that matter at the kiosk. So the data is made the way the device makes it:

- perception: real photographs (MODELS.md's material: scikit-image's
  astronaut, cameraman, coffee and 100 LFW faces; Debian opencv-doc's
  portrait, group, hand and street photos) placed in a 640x480 kiosk view at
  visitor distances of 0.5-3.5 m (face width from the pinhole model), under
  dim, bright, backlit and tinted light, with focus blur and sensor noise,
  plus every image captured at the site (``calibration/site/``, see
  ``calibration/README.md``). Each frame goes through the real fp32
  perception pipeline and the exact tensors fed to each network are
  recorded: the detector gets letterboxed frames, the mesh gets its rotated
  face crops, the blendshape model its 146 landmark points, and so on.
- planner: token streams from the generator its manifest names
  (``"calibration": "module:function"``, called as ``fn(count=N, seed=S)``
  and returning a list of feed dicts).
- renderer: motion frames from ``edge_avatar.render.sampler.MotionSampler``
  (moments of conversation: visemes, expressions, blinks, head and gaze)
  with varied backgrounds, unless its manifest names its own generator.

Calibration and held-out data never share a frame: they are drawn with
different seeds (and site images are split 3:1). OpenCV (already the
perception dependency) does the image work; scikit-image and opencv-doc
come through ``edge_avatar.perception.material``, which fetches them from
the registries by package name.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.engines.errors import CalibrationError
from edge_avatar.engines.manifest import ModelEntry

log = logging.getLogger(__name__)

REPO_CALIBRATION_DIR = Path(__file__).resolve().parents[2] / "calibration"
SITE_SUBDIR = "site"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
CALIBRATION_SEED, HELD_OUT_SEED = 1001, 2002
AUGMENT_RECIPE_VERSION = 1

# Kiosk geometry (ARCHITECTURE.md, demo scenario): an adult face is about 15 cm wide.
FACE_WIDTH_M = 0.15
VISITOR_DISTANCE_M = (0.5, 3.5)


@dataclass
class CalibrationData:
    """Feed dicts for one model: ``calibration`` sets the INT8 ranges, ``held_out`` checks the result."""

    model: str
    calibration: list[dict[str, np.ndarray]]
    held_out: list[dict[str, np.ndarray]]
    description: str
    fingerprint: str


@dataclass(frozen=True)
class CalibrationOptions:
    """How much data to make; tests use a few frames, a device build the defaults."""

    frames: int = 48                 # augmented kiosk frames for calibration
    held_out_frames: int = 24        # and, drawn separately, for verification
    max_samples: int = 96            # per model, calibration
    max_held_out: int = 48           # per model, verification
    sequence_samples: int = 128      # planner / renderer calibration samples (held-out: half)
    calibration_dirs: tuple[str, ...] = ()  # extra folders with a site/ of captured images

    def fingerprint_fields(self) -> dict[str, Any]:
        return {"frames": self.frames, "held_out_frames": self.held_out_frames, "max_samples": self.max_samples,
                "max_held_out": self.max_held_out, "sequence_samples": self.sequence_samples,
                "recipe": AUGMENT_RECIPE_VERSION}


def site_image_dirs(options: CalibrationOptions) -> list[Path]:
    """``calibration/site`` of the repository, of the working directory (a device's state dir) and of each extra dir."""
    candidates = [REPO_CALIBRATION_DIR / SITE_SUBDIR, Path.cwd() / "calibration" / SITE_SUBDIR]
    for extra in options.calibration_dirs:
        base = Path(extra).expanduser()
        candidates += [base / SITE_SUBDIR, base] if base.name != SITE_SUBDIR else [base]
    seen: list[Path] = []
    for path in candidates:
        resolved = path.resolve()
        if resolved.is_dir() and resolved not in seen:
            seen.append(resolved)
    return seen


def site_images(options: CalibrationOptions) -> list[Path]:
    return sorted(p for d in site_image_dirs(options) for p in d.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


# --------------------------------------------------------------------------- the real material


@dataclass
class SourceImage:
    label: str
    image: np.ndarray                     # (H, W, 3) uint8 RGB
    face_width_px: float = 0.0            # widest face the fp32 detector finds (0: none)
    kind: str = "photo"                   # "photo" | "far_faces" | "site"


def _real_material() -> list[SourceImage]:
    """The photos of MODELS.md that can be had here; each missing one is logged and skipped."""
    from edge_avatar.perception.material import MaterialUnavailable, opencv_doc_image, skimage_image  # noqa: PLC0415

    sources: list[SourceImage] = []
    for name in ("astronaut", "camera", "coffee"):
        try:
            sources.append(SourceImage(f"skimage:{name}", skimage_image(name)))
        except (MaterialUnavailable, AttributeError, OSError) as exc:
            log.warning("calibration: skipping scikit-image %s: %s", name, exc)
    for name in ("messi5.jpg", "example.jpg", "handSrc.jpg", "person_multi_det.jpg"):
        try:
            sources.append(SourceImage(f"opencv-doc:{name}", opencv_doc_image(name)))
        except (MaterialUnavailable, OSError) as exc:
            log.warning("calibration: skipping opencv-doc %s: %s", name, exc)
    try:
        from skimage import data  # noqa: PLC0415

        faces = np.asarray(data.lfw_subset())[:100]  # (100, 25, 25) gray 0..1: the face half of the subset
        gray = np.clip(faces * 255.0, 0, 255).astype(np.uint8)
        sources.append(SourceImage("skimage:lfw_subset", np.repeat(gray[..., None], 3, axis=3), kind="far_faces"))
    except Exception as exc:  # noqa: BLE001 - optional material; any failure only narrows the data
        log.warning("calibration: skipping scikit-image lfw_subset: %s", exc)
    return sources


def _read_site_image(path: Path) -> np.ndarray | None:
    from edge_avatar.perception.material import MaterialUnavailable, read_rgb  # noqa: PLC0415

    try:
        return read_rgb(path)
    except MaterialUnavailable as exc:
        log.warning("calibration: cannot read site image %s: %s", path, exc)
        return None


def perception_fingerprint(options: CalibrationOptions, sources: list[SourceImage] | None = None) -> str:
    """Changes whenever the material, the site images or the recipe change (cheap: hashes pixels, runs no model)."""
    digest = hashlib.sha256(json.dumps(options.fingerprint_fields(), sort_keys=True).encode())
    for source in sources if sources is not None else _real_material():
        digest.update(source.label.encode())
        digest.update(np.ascontiguousarray(source.image[::4, ::4]).tobytes())
    for path in site_images(options):
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


# --------------------------------------------------------------------------- kiosk frames


def _focal_px(width_px: int, hfov_deg: float) -> float:
    return (width_px / 2) / math.tan(math.radians(hfov_deg) / 2)


def _background(sources: list[SourceImage], rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A lobby: a blurred real photo, or a wall-to-floor gradient."""
    cv2 = _cv2()
    width, height = size
    photos = [s for s in sources if s.kind == "photo"]
    if photos and rng.random() < 0.6:
        photo = photos[int(rng.integers(len(photos)))].image
        bg = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(bg, (0, 0), float(rng.uniform(2.0, 6.0)))
    top, bottom = rng.uniform(120, 225, 3), rng.uniform(60, 170, 3)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]      # (H, 1, 1)
    return np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)).astype(np.uint8).copy()


def _paste(canvas: np.ndarray, patch: np.ndarray, x0: int, y0: int) -> None:
    h, w = canvas.shape[:2]
    ph, pw = patch.shape[:2]
    x1, y1 = max(x0, 0), max(y0, 0)
    x2, y2 = min(x0 + pw, w), min(y0 + ph, h)
    if x2 > x1 and y2 > y1:
        canvas[y1:y2, x1:x2] = patch[y1 - y0:y2 - y0, x1 - x0:x2 - x0]


def _light_and_lens(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lobby light (gain, gamma, tint), focus blur and sensor noise (more when dark)."""
    cv2 = _cv2()
    x = frame.astype(np.float32) / 255.0
    gain = float(rng.uniform(0.45, 1.35))
    gamma = float(rng.uniform(0.7, 1.4))
    tint = rng.uniform(0.92, 1.08, 3).astype(np.float32)
    x = np.clip(np.power(np.clip(x, 0, 1), gamma) * gain * tint, 0.0, 1.0)
    sigma_blur = float(rng.uniform(0.0, 1.8))
    if sigma_blur > 0.3:
        x = cv2.GaussianBlur(x, (0, 0), sigma_blur)
    noise_sigma = float(rng.uniform(0.0, 4.0) + (1.0 - min(gain, 1.0)) * 8.0) / 255.0
    if noise_sigma > 0:
        x = x + rng.normal(0.0, noise_sigma, x.shape).astype(np.float32)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def kiosk_frame(source: SourceImage, sources: list[SourceImage], rng: np.random.Generator, size: tuple[int, int],
                hfov_deg: float) -> np.ndarray:
    """One (H, W, 3) uint8 frame: ``source`` seen by the kiosk camera from a visitor distance, in some light."""
    cv2 = _cv2()
    width, height = size
    canvas = _background(sources, rng, size)
    focal = _focal_px(width, hfov_deg)
    if source.kind == "far_faces":  # a lobby with several small faces (LFW crops are 25 px: about 3 m away)
        for _ in range(int(rng.integers(2, 6))):
            face = source.image[int(rng.integers(len(source.image)))]
            distance_m = rng.uniform(1.2, VISITOR_DISTANCE_M[1])
            side = max(12, int(focal * FACE_WIDTH_M / distance_m * 1.6))  # the crop is wider than the face
            patch = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
            _paste(canvas, patch, int(rng.integers(0, max(1, width - side))), int(rng.integers(0, max(1, height // 2))))
        return _light_and_lens(canvas, rng)
    image = source.image
    if source.face_width_px > 0:
        distance_m = rng.uniform(*VISITOR_DISTANCE_M)
        scale = focal * FACE_WIDTH_M / distance_m / source.face_width_px
    else:
        scale = rng.uniform(0.5, 1.1) * min(width / image.shape[1], height / image.shape[0])
    scale = float(np.clip(scale, 0.03, 4.0))
    new_w, new_h = max(8, int(image.shape[1] * scale)), max(8, int(image.shape[0] * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    patch = cv2.resize(image, (new_w, new_h), interpolation=interp)
    if rng.random() < 0.3:
        patch = np.ascontiguousarray(patch[:, ::-1])  # mirrored camera
    x0 = int(rng.integers(min(0, width - new_w), max(1, width - new_w + 1)))
    y0 = int(rng.integers(min(0, height - new_h), max(1, height - new_h + 1)))
    _paste(canvas, patch, x0, y0)
    return _light_and_lens(canvas, rng)


def _cv2() -> Any:
    from edge_avatar.perception.geometry import import_cv2  # noqa: PLC0415

    return import_cv2()


# --------------------------------------------------------------------------- recording the pipeline's feeds


class _Recorder:
    """Stands in for one model's backend: copies every feed, then runs the real model."""

    def __init__(self, name: str, inner: Any, sink: dict[str, list[dict[str, np.ndarray]]], cap: int) -> None:
        self.name, self.inner, self.sink, self.cap = name, inner, sink, cap

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        bucket = self.sink.setdefault(self.name, [])
        if len(bucket) < self.cap:
            bucket.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self.inner.run(feeds)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)


class _RecordingModels:
    """Duck-types ``perception.models.ModelSet`` for ``VisionPerception(models=...)``."""

    def __init__(self, models: Any, sink: dict[str, list[dict[str, np.ndarray]]], cap: int) -> None:
        self._models = models
        self._wrapped = {n: _Recorder(n, models[n], sink, cap) for n in models.names()}
        self.geometry = models.geometry

    def __getitem__(self, name: str) -> Any:
        return self._wrapped[name]

    def get(self, name: str) -> Any:
        return self._wrapped.get(name)

    def names(self) -> list[str]:
        return list(self._wrapped)

    def warm_up(self, iterations: int = 2) -> dict[str, float]:
        return self._models.warm_up(iterations)

    def close(self) -> None:
        self._models.close()


def _perception_stage(root_config: Any, sink: dict[str, list[dict[str, np.ndarray]]], cap: int) -> Any:
    import dataclasses  # noqa: PLC0415

    from edge_avatar.config import BackendConfig  # noqa: PLC0415
    from edge_avatar.perception.models import ModelSet  # noqa: PLC0415
    from edge_avatar.perception.pipeline import VisionPerception  # noqa: PLC0415

    # The reference: the fp32 ONNX files on the CPU, whatever the board runs.
    backend = BackendConfig(name="onnxruntime", onnxruntime_providers=("CPUExecutionProvider",),
                            intra_op_threads=root_config.backend.intra_op_threads,
                            engine_cache_dir=root_config.backend.engine_cache_dir)
    perception = dataclasses.replace(root_config.perception, hands_enabled=True,
                                     max_hands=max(root_config.perception.max_hands, 2))
    return VisionPerception(perception, backend, models=_RecordingModels(ModelSet(perception, backend), sink, cap))


def make_perception_data(root_config: Any, options: CalibrationOptions, models: Iterable[str],
                         progress: Callable[[str], None] | None = None) -> dict[str, CalibrationData]:
    """Calibration + held-out feeds for each perception model in ``models`` (one pipeline pass for all)."""
    wanted = list(models)
    sources = _real_material()
    site = [(p, img) for p in site_images(options) if (img := _read_site_image(p)) is not None]
    if not sources and not site:
        raise CalibrationError(
            "no calibration images: the real material (scikit-image, Debian opencv-doc) is unavailable and "
            f"no site images were found in {', '.join(str(d) for d in site_image_dirs(options)) or 'calibration/site/'}"
            "; install the 'media' extra or capture site images with `edge-avatar calibrate capture`")
    fingerprint = perception_fingerprint(options, sources)
    size = (root_config.camera.width_px, root_config.camera.height_px)
    hfov = root_config.perception.camera_hfov_deg

    sinks: dict[str, dict[str, list[dict[str, np.ndarray]]]] = {"calibration": {}, "held_out": {}}
    probe_sink: dict[str, list[dict[str, np.ndarray]]] = {}
    probe = _perception_stage(root_config, probe_sink, cap=0)
    try:
        for source in sources:
            if source.kind == "photo":
                faces = probe.analyze_image(source.image).faces
                source.face_width_px = max((float(f.box_xyxy[2] - f.box_xyxy[0]) for f in faces), default=0.0)
    finally:
        probe.close()

    for split, seed, count in (("calibration", CALIBRATION_SEED, options.frames),
                               ("held_out", HELD_OUT_SEED, options.held_out_frames)):
        cap = options.max_samples if split == "calibration" else options.max_held_out
        stage = _perception_stage(root_config, sinks[split], cap)
        rng = np.random.default_rng(seed)
        try:
            frames: list[np.ndarray] = []
            # Site images: 3 of 4 calibrate, every 4th is held out; each is used as captured and once augmented.
            for index, (_, image) in enumerate(site):
                if (index % 4 == 3) == (split == "held_out"):
                    frames.append(image)
                    frames.append(_light_and_lens(image, rng))
            for index in range(count if sources else 0):
                frames.append(kiosk_frame(sources[index % len(sources)], sources, rng, size, hfov))
            for index, frame in enumerate(frames):
                stage.analyze_image(frame)
                if progress and (index + 1) % 16 == 0:
                    progress(f"  calibration data ({split}): {index + 1}/{len(frames)} frames")
        finally:
            stage.close()

    description = (f"{len(sources)} real photos x augmentation (distance {VISITOR_DISTANCE_M[0]}-"
                   f"{VISITOR_DISTANCE_M[1]} m, light, blur, noise) + {len(site)} site images")
    out: dict[str, CalibrationData] = {}
    for name in wanted:
        cal, held = sinks["calibration"].get(name, []), sinks["held_out"].get(name, [])
        out[name] = CalibrationData(name, cal, held, description, fingerprint)
    return out


# --------------------------------------------------------------------------- planner and renderer


def _call_hook(hook: str, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    module_name, _, function_name = hook.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name or "calibration_feeds")
    except (ImportError, AttributeError) as exc:
        raise CalibrationError(f"calibration generator {hook!r} cannot be imported: {exc}") from exc
    feeds = function(count=count, seed=seed)
    return [{k: np.asarray(v) for k, v in f.items()} for f in feeds]


def renderer_feeds(entry: ModelEntry, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Motion frames from the renderer's own sampler, on varied backgrounds."""
    from edge_avatar.render.sampler import MotionSampler  # noqa: PLC0415

    names = {t.name: t for t in entry.inputs}
    if "motion" not in names:
        raise CalibrationError(f"{entry.name}: no input named 'motion' (inputs: {', '.join(names) or 'none'}); "
                               "name a generator in its manifest (\"calibration\": \"module:function\")")
    motion_shape = tuple(d if isinstance(d, int) else 1 for d in names["motion"].shape)
    motions = MotionSampler(seed).batch(count)                        # (count, 64)
    rng = np.random.default_rng(seed + 1)
    feeds = []
    for motion in motions:
        feed = {"motion": motion.reshape(motion_shape).astype(np.float32)}
        for tensor in entry.inputs:
            if tensor.name == "motion":
                continue
            shape = tuple(d if isinstance(d, int) else 1 for d in tensor.shape)
            feed[tensor.name] = rng.uniform(0.0, 255.0, shape).astype(tensor.dtype)  # background colours
        feeds.append(feed)
    return feeds


PLANNER_DEFAULT_HOOK = "edge_avatar.planner.calibration:calibration_feeds"


def make_sequence_data(entry: ModelEntry, options: CalibrationOptions) -> CalibrationData:
    """Planner or renderer data: from the manifest's generator, else the family default."""
    count, held = options.sequence_samples, max(1, options.sequence_samples // 2)
    hook = entry.calibration_hook
    if hook is None and entry.family == "planner":
        hook = PLANNER_DEFAULT_HOOK
    if hook is None and entry.family != "renderer":
        raise CalibrationError(f"{entry.name}: no calibration data: its manifest names no generator "
                               "(add \"calibration\": \"package.module:function\", called as fn(count=N, seed=S))")
    if hook is not None:
        calibration, held_out = _call_hook(hook, count, CALIBRATION_SEED), _call_hook(hook, held, HELD_OUT_SEED)
        source = f"generator {hook}"
    else:
        calibration = renderer_feeds(entry, count, CALIBRATION_SEED)
        held_out = renderer_feeds(entry, held, HELD_OUT_SEED)
        source = "edge_avatar.render.sampler.MotionSampler"
    return CalibrationData(entry.name, calibration, held_out, f"{len(calibration)} samples from {source}",
                           sequence_fingerprint(entry, options))


def sequence_fingerprint(entry: ModelEntry, options: CalibrationOptions) -> str:
    """The fingerprint ``make_sequence_data`` would give, without generating anything."""
    hook = entry.calibration_hook or (PLANNER_DEFAULT_HOOK if entry.family == "planner" else None)
    source = f"generator {hook}" if hook else "edge_avatar.render.sampler.MotionSampler"
    module = hook.partition(":")[0] if hook else "edge_avatar.render.sampler"
    digest = hashlib.sha256(json.dumps({**options.fingerprint_fields(), "source": source}, sort_keys=True).encode())
    try:  # the generator's code decides its data
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin and Path(spec.origin).is_file():
        digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()


def check_data(data: CalibrationData, entry: ModelEntry) -> None:
    """Empty or mis-shaped data is an error naming the model and the tensor."""
    if not data.calibration:
        raise CalibrationError(f"{entry.name}: no calibration samples ({data.description}); "
                               "nothing reached this model, so its INT8 ranges cannot be measured")
    if not data.held_out:
        raise CalibrationError(f"{entry.name}: no held-out samples to verify INT8 against fp32 ({data.description})")
    inputs = {t.name: t for t in entry.inputs}
    for feed in data.calibration[:1] + data.held_out[:1]:
        if inputs and set(feed) != set(inputs):
            raise CalibrationError(f"{entry.name}: calibration feeds have inputs {sorted(feed)}, "
                                   f"the model has {sorted(inputs)}")
        for name, value in feed.items():
            want = inputs.get(name)
            if want is not None and len(want.shape) != value.ndim:
                raise CalibrationError(f"{entry.name}: calibration input {name!r} has shape {value.shape}, "
                                       f"the model expects {list(want.shape)}")


__all__ = ["CalibrationData", "CalibrationOptions", "check_data", "make_perception_data",
           "make_sequence_data", "perception_fingerprint", "sequence_fingerprint", "site_images"]
