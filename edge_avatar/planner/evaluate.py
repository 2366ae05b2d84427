"""``edge-avatar eval planner``: the student against the teacher on held-out conversations, with figures and plots.

Why this module exists: "the student matches the teacher" has to be a
number anyone can reproduce, and a picture a person can look at. The
held-out conversations use sentences the student never heard in training
(``generate.held_out``) and a different seed; the student runs them through
``NeuralPlanner.run_sequence`` -- the same engine file and backend the loop
uses. The figures (``metrics``): mean absolute error per channel group,
bilabial closure of teacher and student, mouth-audio lead of both and their
difference, motion energy. Targets (issue 6): closure >= 95 %, lead within
20 ms of the teacher's.

Plots are drawn with OpenCV (already a dependency of perception) rather
than matplotlib, which the project does not install: a panel per channel,
teacher and student traces over a conversation, speech shaded, bilabials
marked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.motion import BLENDSHAPE_INDEX as B
from edge_avatar.planner.generate import DEFAULT_CACHE_DIR, Conversation, GeneratorOptions, generate_dataset
from edge_avatar.planner.inputs import INPUT_INDEX, TURN_STATES
from edge_avatar.planner.metrics import bilabial_closure, group_mae, motion_energy, mouth_lead_ms
from edge_avatar.planner.progress import ProgressBar
from edge_avatar.planner.runtime import DEFAULT_MODEL, NeuralPlanner

log = logging.getLogger(__name__)

CLOSURE_TARGET = 0.95
LEAD_TOLERANCE_MS = 20.0


@dataclass(frozen=True)
class EvalOptions:
    seed: int = 1000               # not a training seed
    conversations: int = 24
    target_s: float = 40.0
    jobs: int = 2


def student_motion(planner: NeuralPlanner, conversations: list[Conversation]) -> list[np.ndarray]:
    return [planner.run_sequence(c.inputs)[0] for c in conversations]


def compare(conversations: list[Conversation], student: list[np.ndarray], tick_rate_hz: float = 30.0) -> dict[str, Any]:
    """Every figure of the issue, teacher vs student, over these conversations."""
    teacher_all = np.concatenate([c.motion for c in conversations])
    student_all = np.concatenate(student)
    closure = {}
    for name, streams in (("teacher", [c.motion for c in conversations]), ("student", student)):
        closed = total = 0
        for conv, motion in zip(conversations, streams):
            a, b = bilabial_closure(motion, conv.pts_ns, conv.bilabials_ns)
            closed, total = closed + a, total + b
        closure[name] = {"closed": closed, "total": total, "rate": closed / total if total else float("nan")}
    lead_teacher = mouth_lead_ms([(c.motion, c.envelope) for c in conversations], tick_rate_hz)
    lead_student = mouth_lead_ms([(s, c.envelope) for c, s in zip(conversations, student)], tick_rate_hz)
    states = np.concatenate([c.turn_state for c in conversations])
    by_state = {}
    for k, name in enumerate(TURN_STATES):
        sel = states == k
        if sel.any():
            by_state[name] = {g: round(v, 4) for g, v in group_mae(student_all[sel], teacher_all[sel]).items()}
    result = {
        "conversations": len(conversations),
        "ticks": int(len(teacher_all)),
        "mae": {g: round(v, 4) for g, v in group_mae(student_all, teacher_all).items()},
        "mae_by_turn_state": by_state,
        "bilabial_closure": closure,
        "mouth_lead_ms": {"teacher": round(lead_teacher, 1), "student": round(lead_student, 1),
                          "difference": round(lead_student - lead_teacher, 1)},
        "motion_energy": {"teacher": round(float(np.mean([motion_energy(c.motion) for c in conversations])), 6),
                          "student": round(float(np.mean([motion_energy(s) for s in student])), 6)},
    }
    result["targets"] = {
        "student_closure_ge_95pct": bool(closure["student"]["rate"] >= CLOSURE_TARGET),
        "lead_within_20ms_of_teacher": bool(abs(lead_student - lead_teacher) <= LEAD_TOLERANCE_MS),
    }
    return result


def evaluate_planner(model_path: str | Path = DEFAULT_MODEL, options: EvalOptions = EvalOptions(),
                     cache_dir: str | Path = DEFAULT_CACHE_DIR, plots_dir: str | Path | None = None,
                     backend_name: str = "onnxruntime", say: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Generate (or reuse) held-out conversations, run the student, compare, optionally plot."""
    gen = GeneratorOptions(seed=options.seed, conversations=options.conversations, target_s=options.target_s,
                           held_out=True)
    bar = ProgressBar(gen.conversations, "held-out conversations")
    conversations = generate_dataset(gen, cache_dir, jobs=options.jobs,
                                     on_progress=lambda done, _total: bar.update(done), say=say)
    planner = NeuralPlanner(model_path=model_path, backend_name=backend_name)
    student = student_motion(planner, conversations)
    result = {"model": str(model_path), "options": asdict(options), **compare(conversations, student)}
    if plots_dir is not None:
        result["plots"] = [str(p) for p in write_plots(Path(plots_dir), conversations, student)]
    planner.close()
    return result


# ---------------------------------------------------------------------------------------------- plots

TEACHER_BGR = (180, 110, 40)    # blue
STUDENT_BGR = (30, 130, 240)    # orange
PLOT_CHANNELS: tuple[tuple[str, Callable[[np.ndarray], np.ndarray], str], ...] = (
    ("jawOpen", lambda m: m[:, B["jawOpen"]], ""),
    ("mouthClose", lambda m: m[:, B["mouthClose"]], ""),
    ("mouthPress (mean)", lambda m: 0.5 * (m[:, B["mouthPressLeft"]] + m[:, B["mouthPressRight"]]), ""),
    ("mouthPucker", lambda m: m[:, B["mouthPucker"]], ""),
    ("mouthSmile (mean)", lambda m: 0.5 * (m[:, B["mouthSmileLeft"]] + m[:, B["mouthSmileRight"]]), ""),
    ("browInnerUp", lambda m: m[:, B["browInnerUp"]], ""),
    ("eyeBlink (mean)", lambda m: 0.5 * (m[:, B["eyeBlinkLeft"]] + m[:, B["eyeBlinkRight"]]), ""),
    ("head yaw", lambda m: m[:, 52], "deg"),
    ("head pitch", lambda m: m[:, 53], "deg"),
    ("head roll", lambda m: m[:, 54], "deg"),
    ("eye yaw (left)", lambda m: m[:, 55], "deg"),
    ("eye pitch (left)", lambda m: m[:, 56], "deg"),
    ("gesture nod", lambda m: m[:, 59], ""),
    ("gesture point", lambda m: m[:, 62], ""),
)


def plot_channels(path: Path, conv: Conversation, student: np.ndarray, t0: int = 0, t1: int | None = None,
                  channels=PLOT_CHANNELS, title: str = "", width_px: int = 1500, panel_px: int = 92) -> Path:
    """Teacher (blue) and student (orange) per channel over ticks [t0, t1); speech shaded, bilabials marked."""
    import cv2  # noqa: PLC0415 - OpenCV: the project's drawing library (perception already needs it)

    t1 = len(conv.motion) if t1 is None else min(t1, len(conv.motion))
    n = t1 - t0
    left, right, top = 150, 20, 40
    height = top + panel_px * len(channels) + 30
    img = np.full((height, width_px, 3), 255, np.uint8)
    cv2.putText(img, title or f"teacher (blue) vs student (orange), {n / 30:.1f} s", (left, 26),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    xs = left + np.arange(n) * (width_px - left - right) / max(n - 1, 1)
    speaking = conv.inputs[t0:t1, INPUT_INDEX["speaking"]] > 0.5
    bil = conv.bilabials_ns
    for row, (name, fn, unit) in enumerate(channels):
        y0 = top + row * panel_px
        y1 = y0 + panel_px - 14
        for k in np.flatnonzero(speaking):   # speech: light shading
            x = int(xs[k])
            cv2.line(img, (x, y0), (x, y1), (235, 245, 235), 3)
        for s, _e in bil:                     # bilabial onsets: grey ticks at the top
            k = int(np.searchsorted(conv.pts_ns, s)) - t0
            if 0 <= k < n:
                cv2.line(img, (int(xs[k]), y0), (int(xs[k]), y0 + 6), (120, 120, 120), 1)
        a, b = fn(conv.motion[t0:t1]), fn(student[t0:t1])
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        if unit == "" and lo >= 0:
            lo, hi = 0.0, max(hi, 0.2)
        if hi - lo < 1e-3:
            hi = lo + 1.0
        cv2.rectangle(img, (left, y0), (width_px - right, y1), (200, 200, 200), 1)
        cv2.putText(img, name, (8, y0 + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{hi:.2f}{unit}", (8, y0 + 40), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (90, 90, 90), 1,
                    cv2.LINE_AA)
        cv2.putText(img, f"{lo:.2f}{unit}", (8, y1 - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (90, 90, 90), 1,
                    cv2.LINE_AA)
        for series, color in ((a, TEACHER_BGR), (b, STUDENT_BGR)):
            ys = y1 - (series - lo) / (hi - lo) * (y1 - y0)
            pts = np.stack([xs, ys], axis=1).round().astype(np.int32)
            cv2.polylines(img, [pts], False, color, 1, cv2.LINE_AA)
    for s in range(int(t0 / 30) + 1, int(t1 / 30) + 1):  # time axis, one tick per second
        x = int(xs[min(s * 30 - t0, n - 1)])
        cv2.line(img, (x, height - 30), (x, height - 24), (0, 0, 0), 1)
        if s % 5 == 0:
            cv2.putText(img, f"{s}s", (x - 10, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                        cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


def write_plots(out_dir: Path, conversations: list[Conversation], student: list[np.ndarray]) -> list[Path]:
    """A whole conversation, and a 6 s close-up of lip sync where the avatar talks the most."""
    conv, motion = conversations[0], student[0]
    paths = [plot_channels(out_dir / "planner_conversation.png", conv, motion,
                           title="a held-out conversation: teacher (blue) vs student (orange); "
                                 "green = avatar speaking")]
    k_conv, k_tick, best = 0, 0, -1.0
    for i, c in enumerate(conversations[:4]):
        s = np.convolve(c.inputs[:, INPUT_INDEX["speaking"]], np.ones(180), "valid")
        if len(s) and s.max() > best:
            best, k_conv, k_tick = float(s.max()), i, int(s.argmax())
    mouth = PLOT_CHANNELS[:5] + (("eyeBlink (mean)", PLOT_CHANNELS[6][1], ""), PLOT_CHANNELS[8])
    paths.append(plot_channels(out_dir / "planner_lipsync.png", conversations[k_conv], student[k_conv], k_tick,
                               k_tick + 180, channels=mouth,
                               title="lip sync close-up (6 s): teacher (blue) vs student (orange); "
                                     "grey ticks = bilabial onsets"))
    return paths
