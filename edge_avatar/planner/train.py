"""``edge-avatar train planner``: distil the teacher into the student, export ONNX, write the manifest.

Why this module exists: the planner that ships is a trained artefact, so
how it was made must be one command anyone can rerun and get the same file:
seeded data (``generate``, cached by content), seeded initialisation and
batch order, deterministic torch kernels on a fixed thread count, torch
pinned (2.13.0, CPU build) and recorded in the manifest.

Losses per batch of windows (``window`` ticks after ``burn_in`` ticks run
without gradient, so the GRU starts from a realistic state; every tenth
batch starts at a conversation's first tick from zero state instead):

- L1 + 4 x squared error on the normalised motion frame (angles / 10 deg).
  L1 alone learns the median, and the median of a blink, a nod or a
  pointing gesture -- rare events, 2-5 % of ticks -- is "nothing": the
  squared term makes the rare large errors count. Mouth channels weigh x2,
  and x4 where the teacher's lips are closed during speech (bilabials: the
  95 % closure target); blink and gesture channels weigh x4 while the
  teacher's event is under way, head pitch too during a nod;
- the same on the tick-to-tick change (x0.5): same dynamics, no jitter.

Recorded data (``--data DIR``): ``*.npz`` files, each one recording, with

    inputs  (T, 149) float32  the input vector v1 per tick (``PlannerInputs``)
    motion  (T, 64)  float32  the motion frame v1 per tick (e.g. extracted by
                              perception from a video of a real person)
    mask    (T, 64) or (64,) float32, optional: 1 where ``motion`` is known
                              (a face tracker knows no gesture channels)
    tick_rate_hz  ()  float, optional (must be 30)

With ``--data`` the committed weights (``engines/planner.weights.npz``) are
fine-tuned unless ``--from-scratch``; batches alternate recorded and
generated windows so the generated behaviour is not forgotten.

torch is imported here and in ``model`` only (the ``train`` extra).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.motion import BLENDSHAPE_INDEX
from edge_avatar.planner.generate import (
    DEFAULT_CACHE_DIR,
    GENERATOR_VERSION,
    GeneratorOptions,
    dataset_path,
    generate_dataset,
)
from edge_avatar.planner.inputs import INPUT_SIZE, INPUT_VERSION, describe_layout
from edge_avatar.planner.metrics import CHANNEL_GROUPS, LIPS_CLOSED_GAP, lip_gap
from edge_avatar.planner.progress import ProgressBar
from edge_avatar.planner.runtime import DEFAULT_MODEL, MANIFEST_NAME, sha256_file

log = logging.getLogger(__name__)

PINNED_TORCH = "2.13.0"
SQUARED_WEIGHT = 4.0
EVENT_THRESHOLD = 0.05
EVENT_CHANNELS = np.array([BLENDSHAPE_INDEX["eyeBlinkLeft"], BLENDSHAPE_INDEX["eyeBlinkRight"], *range(59, 64)])
HEAD_PITCH, GESTURE_NOD = 53, 59
WEIGHTS_NAME = "planner.weights.npz"
OPSET = 17


@dataclass(frozen=True)
class TrainOptions:
    """Everything that decides the trained weights (recorded in the manifest)."""

    seed: int = 0
    conversations: int = 240
    target_s: float = 40.0
    steps: int = 3000
    batch: int = 24
    window: int = 240
    burn_in: int = 60
    lr: float = 2e-3
    finetune_lr: float = 5e-4    # starting from trained weights: smaller steps, or the behaviour is forgotten
    hidden: int = 128
    mid: int = 128
    threads: int = 1            # one: on a shared 2-core box a second OpenMP thread waits on the other jobs
    jobs: int = 2                # data generation processes
    quick: bool = False
    data_dir: str = ""           # recorded data (see the module docstring)
    init: str = ""               # weights to start from ("" = random; with data_dir: the committed ones)
    from_scratch: bool = False   # with data_dir: random weights instead of the committed ones

    @classmethod
    def quick_options(cls, **overrides: Any) -> TrainOptions:
        base = cls(conversations=40, steps=300, quick=True)
        return replace(base, **overrides)


def _prepare(conversations) -> dict[str, Any]:
    """Stack conversations into flat arrays + their extents; targets normalised; per-channel weights."""
    from edge_avatar.planner.model import output_scale  # noqa: PLC0415

    scale = output_scale()
    xs, ys, ws, extents, offset = [], [], [], [], 0
    mouth = np.zeros(64, np.float32)
    mouth[CHANNEL_GROUPS["mouth"]] = 1.0
    for conv in conversations:
        x = np.asarray(conv.inputs, np.float32)
        y = np.asarray(conv.motion, np.float32)
        mask = np.asarray(getattr(conv, "mask", None) if getattr(conv, "mask", None) is not None
                          else np.ones_like(y), np.float32)
        mask = np.broadcast_to(mask, y.shape)
        closed = (lip_gap(y) < LIPS_CLOSED_GAP) & (x[:, _speaking_index()] > 0.5)
        w = mask * (1.0 + 1.0 * mouth[None, :] + 3.0 * closed[:, None] * mouth[None, :])
        w[:, EVENT_CHANNELS] *= 1.0 + 3.0 * (y[:, EVENT_CHANNELS] > EVENT_THRESHOLD)
        w[:, HEAD_PITCH] *= 1.0 + 3.0 * (y[:, GESTURE_NOD] > EVENT_THRESHOLD)
        xs.append(x)
        ys.append(y / scale)
        ws.append(w.astype(np.float32))
        extents.append((offset, len(x)))
        offset += len(x)
    return {"x": np.concatenate(xs), "y": np.concatenate(ys), "w": np.concatenate(ws), "extents": extents}


def _speaking_index() -> int:
    from edge_avatar.planner.inputs import INPUT_INDEX  # noqa: PLC0415

    return INPUT_INDEX["speaking"]


def _batch(data: dict[str, Any], rng: np.random.Generator, batch: int, window: int, burn_in: int,
           from_start: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    extents = [(o, n) for o, n in data["extents"] if n >= window + burn_in]
    lengths = np.array([n for _, n in extents], np.float64)
    picks = rng.choice(len(extents), size=batch, p=lengths / lengths.sum())
    total = window + (0 if from_start else burn_in)
    xb = np.zeros((batch, total, INPUT_SIZE), np.float32)
    yb = np.zeros((batch, window, 64), np.float32)
    wb = np.zeros((batch, window, 64), np.float32)
    for b, k in enumerate(picks):
        offset, n = extents[k]
        start = 0 if from_start else int(rng.integers(burn_in, n - window + 1))
        lo = start - (0 if from_start else burn_in)
        xb[b] = data["x"][offset + lo: offset + start + window]
        yb[b] = data["y"][offset + start: offset + start + window]
        wb[b] = data["w"][offset + start: offset + start + window]
    return xb, yb, wb


@dataclass
class RecordedConversation:
    inputs: np.ndarray
    motion: np.ndarray
    mask: np.ndarray | None = None


def load_recorded(data_dir: str | Path) -> list[RecordedConversation]:
    """The ``*.npz`` recordings of ``data_dir`` (format in the module docstring); ``ValueError`` on a bad file."""
    out = []
    files = sorted(Path(data_dir).expanduser().glob("*.npz"))
    if not files:
        raise ValueError(f"{data_dir}: no *.npz recordings (see edge_avatar/planner/train.py for the format)")
    for path in files:
        with np.load(path) as d:
            if "inputs" not in d or "motion" not in d:
                raise ValueError(f"{path}: needs arrays 'inputs' (T, {INPUT_SIZE}) and 'motion' (T, 64)")
            x = np.nan_to_num(np.asarray(d["inputs"], np.float32))
            y = np.nan_to_num(np.asarray(d["motion"], np.float32))
            if x.ndim != 2 or x.shape[1] != INPUT_SIZE or y.shape != (len(x), 64):
                raise ValueError(f"{path}: inputs {x.shape} / motion {y.shape}; expected (T, {INPUT_SIZE}) / (T, 64)")
            if "tick_rate_hz" in d and abs(float(d["tick_rate_hz"]) - 30.0) > 1e-3:
                raise ValueError(f"{path}: recorded at {float(d['tick_rate_hz'])} Hz; the planner runs at 30 Hz")
            mask = np.asarray(d["mask"], np.float32) if "mask" in d else None
        out.append(RecordedConversation(x, y, mask))
    return out


def train_planner(options: TrainOptions, out_dir: str | Path | None = None, cache_dir: str | Path = DEFAULT_CACHE_DIR,
                  say: Callable[[str], None] = log.info, command: str = "edge-avatar train planner") -> dict[str, Any]:
    """Generate (or reuse) data, train, export ``planner.onnx`` + weights + manifest into ``out_dir``."""
    import torch  # noqa: PLC0415

    from edge_avatar.planner.model import (
        PlannerNet,
        export_onnx,
        load_numpy_state,
        parameter_count,
        state_dict_to_numpy,  # noqa: PLC0415
    )

    if not torch.__version__.startswith(PINNED_TORCH):
        say(f"warning: torch {torch.__version__} is not the pinned {PINNED_TORCH}; the weights will differ")
    out_dir = Path(out_dir) if out_dir else DEFAULT_MODEL.parent
    torch.manual_seed(options.seed)
    torch.set_num_threads(options.threads)
    torch.use_deterministic_algorithms(True)
    started = time.monotonic()

    gen = GeneratorOptions(seed=options.seed, conversations=options.conversations, target_s=options.target_s)
    data_cached = dataset_path(gen, cache_dir).is_file()
    bar = ProgressBar(gen.conversations, "generate conversations")
    conversations = generate_dataset(gen, cache_dir, jobs=options.jobs,
                                     on_progress=lambda done, _total: bar.update(done), say=say)
    generated_s = time.monotonic() - started
    data = _prepare(conversations)
    recorded = None
    if options.data_dir:
        recorded = _prepare(load_recorded(options.data_dir))
        say(f"recorded data: {len(recorded['extents'])} recordings, {len(recorded['x'])} ticks")
    ticks = len(data["x"])
    say(f"data: {len(conversations)} conversations, {ticks} ticks ({ticks / 30 / 60:.1f} min at 30 Hz), "
        f"generated in {generated_s:.0f} s")

    net = PlannerNet(hidden=options.hidden, mid=options.mid)
    committed = DEFAULT_MODEL.parent / WEIGHTS_NAME
    init = options.init or (str(committed) if options.data_dir and not options.from_scratch else "")
    if init and not Path(init).is_file():
        raise ValueError(f"{init}: no weights to start from (pass --init NPZ, or --from-scratch)")
    if init:
        with np.load(init) as arrays:
            load_numpy_state(net, dict(arrays))
        say(f"starting from {init}")
    base_lr = options.finetune_lr if init else options.lr
    optimiser = torch.optim.Adam(net.parameters(), lr=base_lr)
    rng = np.random.default_rng(options.seed)
    warmup = min(100, options.steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return base_lr * (step + 1) / warmup
        progress = (step - warmup) / max(options.steps - warmup, 1)
        return base_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    bar = ProgressBar(options.steps, "train planner")
    train_started = time.monotonic()
    running = None
    net.train()
    for step in range(options.steps):
        source = recorded if (recorded is not None and step % 2 == 1) else data
        from_start = step % 10 == 9
        xb, yb, wb = _batch(source, rng, options.batch, options.window, options.burn_in, from_start)
        x, y, w = torch.from_numpy(xb), torch.from_numpy(yb), torch.from_numpy(wb)
        state = net.zero_state(options.batch)
        if not from_start:
            with torch.no_grad():
                _, state = net(x[:, : options.burn_in], state)
            x = x[:, options.burn_in:]
        pred, _ = net(x, state)
        err = pred - y
        derr = (pred[:, 1:] - pred[:, :-1]) - (y[:, 1:] - y[:, :-1])
        loss = ((err.abs() + SQUARED_WEIGHT * err.square()) * w).mean() \
            + 0.5 * ((derr.abs() + SQUARED_WEIGHT * derr.square()) * w[:, 1:]).mean()
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimiser.step()
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.update(step + 1, f"loss {running:.4f}")
    train_s = time.monotonic() - train_started
    net.eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "planner.onnx"
    weights_path = out_dir / WEIGHTS_NAME
    export_onnx(net, str(onnx_path), OPSET)
    np.savez(weights_path, **state_dict_to_numpy(net))
    # The exported graph must compute what the trained network computes.
    check = data["x"][: min(600, ticks)]
    with torch.no_grad():
        ref, _ = net.motion(torch.from_numpy(check)[None], net.zero_state(1))
    import onnxruntime as ort  # noqa: PLC0415

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"features": check[:, None, :],
                                  "state_in": np.zeros((1, 1, options.hidden), np.float32)})[0]
    export_err = float(np.abs(onnx_out[:, 0] - ref[0].numpy()).max())

    record = {
        "options": asdict(options),
        "generator": {**asdict(gen), "version": GENERATOR_VERSION, "ticks": ticks},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "parameters": parameter_count(net),
        "final_loss": round(running or 0.0, 5),
        "generate_s": round(generated_s, 1),
        "data_from_cache": data_cached,
        "train_s": round(train_s, 1),
        "export_max_abs_diff": export_err,
    }
    manifest = write_manifest(onnx_path, weights_path, options, record, command)
    say(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB, {record['parameters']} parameters) after "
        f"{train_s / 60:.1f} min of training; export check max |diff| {export_err:.2e}")
    return manifest


def write_manifest(onnx_path: Path, weights_path: Path, options: TrainOptions, record: dict[str, Any],
                   command: str, evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    manifest = {
        "manifest_version": 1,
        "model": "planner",
        "file": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "bytes": onnx_path.stat().st_size,
        "weights_file": weights_path.name,
        "weights_sha256": sha256_file(weights_path),
        "kind": "onnx",
        "opset": OPSET,
        "source": "trained by this project (distilled from edge_avatar.planner.teacher)",
        "licence": "Apache-2.0",
        "training_command": command,
        "input_version": INPUT_VERSION,
        "motion_frame_version": 1,
        "tick_rate_hz": 30.0,
        "inputs": [
            {"name": "features", "shape": ["ticks", 1, INPUT_SIZE], "dtype": "float32",
             "meaning": "planner input vector v1 per tick (edge_avatar.planner.inputs), time-major"},
            {"name": "state_in", "shape": [1, 1, options.hidden], "dtype": "float32",
             "meaning": "GRU state; zeros at start"},
        ],
        "outputs": [
            {"name": "motion", "shape": ["ticks", 1, 64], "dtype": "float32",
             "meaning": "motion frame v1 per tick (edge_avatar.motion), clamped"},
            {"name": "state_out", "shape": [1, 1, options.hidden], "dtype": "float32",
             "meaning": "GRU state after the last tick; feed back as state_in"},
        ],
        "calibration": "edge_avatar.planner.calibration:calibration_feeds",
        "input_layout": describe_layout(),
        "training": record,
    }
    if evaluation is not None:
        manifest["evaluation"] = evaluation
    path = onnx_path.with_name(MANIFEST_NAME)
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
