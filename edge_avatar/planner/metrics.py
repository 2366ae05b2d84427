"""How well a motion stream does what the issue asks: channel-group error, lip closure, mouth-audio offset, calm.

Why this module exists: the student's targets (issue 6) are measured the
same way in the tests, ``edge-avatar eval planner`` and ``bench planner``,
so they live in one place, in numpy only (no torch, no plotting).

- ``group_mae``: mean absolute error per channel group -- mouth, brows, eyes
  (blendshapes, 0..1), cheeks/nose, head (degrees), gaze (degrees),
  gestures (0..1).
- ``lip_gap``: how far apart the lips are in a frame, from the channels the
  renderer opens them with (jaw minus mouthClose, relieved by mouthPress,
  plus the lip raisers/lowerers and the funnel). ``LIPS_CLOSED_GAP`` is
  the threshold for "closed".
- ``bilabial_closure``: the share of bilabial phonemes (p, b, m) during
  which the lips close: some tick in [start - ``BILABIAL_EARLY_MS``, end]
  (the mouth may lead the sound) has a gap below the threshold.
- ``mouth_lead_ms``: the lag that maximises the cross-correlation of
  jawOpen with the speech envelope (parabolic interpolation between ticks);
  positive when the mouth moves before the sound.
- ``motion_energy``: mean squared tick-to-tick change of the normalised
  frame (blendshapes as they are, angles / 10 deg): "calm" is small.
"""

from __future__ import annotations

import numpy as np

from edge_avatar.motion import ARKIT_BLENDSHAPES, BLENDSHAPE_INDEX, EYES_SLICE, GESTURE_SLICE, HEAD_SLICE

B = BLENDSHAPE_INDEX
LIPS_CLOSED_GAP = 0.08
BILABIAL_EARLY_MS = 80.0
MAX_LAG_MS = 200.0


def _names(predicate) -> np.ndarray:
    return np.array([i for i, n in enumerate(ARKIT_BLENDSHAPES) if predicate(n)], np.int64)


CHANNEL_GROUPS: dict[str, np.ndarray] = {
    "mouth": _names(lambda n: n.startswith(("jaw", "mouth", "tongue")) or n == "cheekPuff"),
    "brows": _names(lambda n: n.startswith("brow")),
    "eyes": _names(lambda n: n.startswith("eye")),
    "cheeks_nose": _names(lambda n: n.startswith(("cheekSquint", "noseSneer"))),
    "head_deg": np.arange(HEAD_SLICE.start, HEAD_SLICE.stop),
    "gaze_deg": np.arange(EYES_SLICE.start, EYES_SLICE.stop),
    "gestures": np.arange(GESTURE_SLICE.start, GESTURE_SLICE.stop),
}


def group_mae(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Mean absolute error per channel group over (T, 64) streams."""
    err = np.abs(np.asarray(predicted, np.float64) - np.asarray(reference, np.float64))
    return {name: float(err[:, idx].mean()) for name, idx in CHANNEL_GROUPS.items()}


def lip_gap(motion: np.ndarray) -> np.ndarray:
    """(T,) lip opening of each frame (0 = lips together)."""
    m = np.atleast_2d(np.asarray(motion, np.float64))
    press = 0.5 * (m[:, B["mouthPressLeft"]] + m[:, B["mouthPressRight"]])
    jaw_gap = np.maximum(m[:, B["jawOpen"]] - m[:, B["mouthClose"]], 0.0) * (1.0 - 0.85 * np.clip(press, 0, 1))
    lower = 0.5 * (m[:, B["mouthLowerDownLeft"]] + m[:, B["mouthLowerDownRight"]])
    upper = 0.5 * (m[:, B["mouthUpperUpLeft"]] + m[:, B["mouthUpperUpRight"]])
    return jaw_gap + 0.5 * lower + 0.5 * upper + 0.3 * m[:, B["mouthFunnel"]]


def bilabial_closure(motion: np.ndarray, pts_ns: np.ndarray, bilabials_ns: np.ndarray) -> tuple[int, int]:
    """(closed, total) bilabial phonemes: closed when a tick in [start - early, end] has closed lips."""
    gap = lip_gap(motion)
    pts_ns = np.asarray(pts_ns)
    closed = total = 0
    for start, end in np.asarray(bilabials_ns).reshape(-1, 2):
        lo = int(np.searchsorted(pts_ns, start - BILABIAL_EARLY_MS * 1e6))
        hi = int(np.searchsorted(pts_ns, end, side="right"))
        if lo >= len(pts_ns):
            continue
        total += 1
        if hi > lo and float(gap[lo:hi].min()) < LIPS_CLOSED_GAP:
            closed += 1
    return closed, total


def xcorr_sums(jaw: np.ndarray, envelope: np.ndarray, max_lag: int) -> np.ndarray:
    """(2 * max_lag + 1,) sum over t of jaw[t] * envelope[t + lag] (mean-removed), lag = -max..max ticks."""
    j = np.asarray(jaw, np.float64) - float(np.mean(jaw))
    e = np.asarray(envelope, np.float64) - float(np.mean(envelope))
    n = len(j)
    out = np.zeros(2 * max_lag + 1)
    for k, lag in enumerate(range(-max_lag, max_lag + 1)):
        if lag >= 0:
            out[k] = float(np.dot(j[: n - lag], e[lag:]))
        else:
            out[k] = float(np.dot(j[-lag:], e[: n + lag]))
    return out


def peak_lag_ms(sums: np.ndarray, tick_ms: float) -> float:
    """The lag of the cross-correlation peak in ms, interpolated by a parabola through its neighbours."""
    max_lag = (len(sums) - 1) // 2
    k = int(np.argmax(sums))
    frac = 0.0
    if 0 < k < len(sums) - 1:
        a, b, c = sums[k - 1], sums[k], sums[k + 1]
        denom = a - 2 * b + c
        if denom < 0:
            frac = 0.5 * (a - c) / denom
    return (k - max_lag + frac) * tick_ms


def mouth_lead_ms(streams: list[tuple[np.ndarray, np.ndarray]], tick_rate_hz: float = 30.0) -> float:
    """How far jawOpen leads the speech envelope (ms, positive = mouth first), pooled over (motion, envelope)."""
    tick_ms = 1000.0 / tick_rate_hz
    max_lag = int(round(MAX_LAG_MS / tick_ms))
    total = np.zeros(2 * max_lag + 1)
    for motion, envelope in streams:
        if len(envelope) > 2 * max_lag and np.ptp(envelope) > 0:
            total += xcorr_sums(np.asarray(motion)[:, B["jawOpen"]], envelope, max_lag)
    return peak_lag_ms(total, tick_ms)


def motion_energy(motion: np.ndarray) -> float:
    """Mean squared tick-to-tick change of the frame, angles in units of 10 degrees."""
    m = np.asarray(motion, np.float64).copy()
    m[:, HEAD_SLICE.start:EYES_SLICE.stop] /= 10.0
    if len(m) < 2:
        return 0.0
    return float(np.mean(np.diff(m, axis=0) ** 2))
