"""Who the visitor is, how far away, and whether they are engaging: distance, selection, engagement states.

Why this module exists: at a reception desk several faces in view is the
normal case. The avatar must attend to one person -- the closest one who is
looking at it -- without flickering between two people standing side by side,
and must know when that person arrives, engages, leaves and is gone, so the
planner can greet, listen and say goodbye at the right moments. All timing is
on the media clock (the frame's ``pts_ns``), never wall time, so tests run on
synthetic timelines and a slow machine behaves like a fast one.

- distance: median of the aligned depth image (``VideoFrame.depth_m``) inside
  the inner half of the face box when present and valid, else the face size
  -- the Procrustes scale (pixels per cm of the canonical face) with the focal
  length, ``Z = f / scale`` -- or the detector box width for faces that were
  not meshed;
- selection: score = 0.6 closeness + 0.4 attending; the current visitor keeps
  the role until a challenger beats them by ``active_switch_margin`` for
  ``active_switch_hold_ms`` (or they leave the frame);
- engagement: gone -> approaching (within ``approach_distance_m``) ->
  engaged (within ``engage_distance_m`` and attending for ``engage_dwell_ms``)
  -> leaving (beyond ``release_distance_m``, looking away for
  ``disengage_look_away_ms`` or out of view) -> engaged again or, after
  ``leave_timeout_ms``, gone. engage < release is the hysteresis band (a robot
  head: engage at 1.0 m, release at 1.5 m).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_avatar.perception.options import PerceptionConfig
from edge_avatar.perception.token import FaceResult

ATTENDING_THRESHOLD = 0.5


def depth_distance_m(depth_m: np.ndarray | None, box_xyxy: np.ndarray, min_valid_m: float,
                     max_valid_m: float) -> float | None:
    """Median valid depth in the inner half of the face box, or None (no depth, no valid pixels)."""
    if depth_m is None or depth_m.ndim != 2:
        return None
    height, width = depth_m.shape
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
    xa, xb = max(0, int(cx - hw)), min(width, int(math.ceil(cx + hw)))
    ya, yb = max(0, int(cy - hh)), min(height, int(math.ceil(cy + hh)))
    if xb <= xa or yb <= ya:
        return None
    patch = depth_m[ya:yb, xa:xb]
    valid = patch[np.isfinite(patch) & (patch >= min_valid_m) & (patch <= max_valid_m)]
    if valid.size < max(4, patch.size // 10):
        return None
    return float(np.median(valid))


def size_distance_m(focal_px: float, scale_px_per_cm: float = 0.0, box_width_px: float = 0.0,
                    face_box_width_m: float = 0.16) -> float:
    """Distance from face size: the canonical-face scale when meshed, else the detector box width."""
    if scale_px_per_cm > 0:
        return focal_px / (scale_px_per_cm * 100.0)
    if box_width_px > 0:
        return focal_px * face_box_width_m / box_width_px
    return 0.0


def selection_score(face: FaceResult, config: PerceptionConfig) -> float:
    closeness = max(0.0, 1.0 - face.distance_m / (2.0 * config.approach_distance_m)) if face.distance_m > 0 else 0.0
    return 0.6 * closeness + 0.4 * face.attending


@dataclass
class VisitorSelector:
    """Picks the active visitor's track id with hysteresis."""

    config: PerceptionConfig
    active_id: int | None = None
    challenger_id: int | None = None
    challenger_since_ns: int = 0

    def reset(self) -> None:
        self.active_id, self.challenger_id = None, None

    def choose(self, faces: list[FaceResult], pts_ns: int) -> int | None:
        if not faces:
            self.challenger_id = None
            if self.active_id is not None:
                self.active_id = None
            return None
        scores = {f.track_id: selection_score(f, self.config) for f in faces}
        best_id = max(scores, key=scores.get)
        if self.active_id not in scores:
            self.active_id, self.challenger_id = best_id, None
            return self.active_id
        if best_id == self.active_id or scores[best_id] < scores[self.active_id] + self.config.active_switch_margin:
            self.challenger_id = None
            return self.active_id
        if self.challenger_id != best_id:
            self.challenger_id, self.challenger_since_ns = best_id, pts_ns
        if (pts_ns - self.challenger_since_ns) / 1e6 >= self.config.active_switch_hold_ms:
            self.active_id, self.challenger_id = best_id, None
        return self.active_id


@dataclass
class EngagementTracker:
    """approaching / engaged / leaving / gone for the active visitor, on the media clock."""

    config: PerceptionConfig
    state: str = "gone"
    since_ns: int = 0
    last_seen_ns: int | None = None
    missing_since_ns: int | None = None   # the first frame of the current run of frames without the visitor
    attending_since_ns: int | None = None
    looking_away_since_ns: int | None = None

    def reset(self) -> None:
        self.state, self.last_seen_ns, self.missing_since_ns = "gone", None, None
        self.attending_since_ns = self.looking_away_since_ns = None

    def _go(self, state: str, pts_ns: int) -> None:
        if state != self.state:
            self.state, self.since_ns = state, pts_ns

    def age_s(self, pts_ns: int) -> float:
        return max(0.0, (pts_ns - self.since_ns) / 1e9)

    def update(self, visitor: FaceResult | None, pts_ns: int) -> str:
        c = self.config
        # Absent = frames *looked at* without the visitor for lost_grace_ms: a gap with no frames at all
        # (a starved perception worker, a camera hiccup) is not evidence that the visitor left.
        if visitor is not None:
            self.last_seen_ns, self.missing_since_ns = pts_ns, None
        elif self.missing_since_ns is None:
            self.missing_since_ns = pts_ns
        present = self.last_seen_ns is not None and (
            visitor is not None or (pts_ns - self.missing_since_ns) / 1e6 <= c.lost_grace_ms)
        seen_now = visitor is not None
        distance = visitor.distance_m if seen_now else math.inf
        if seen_now and distance <= 0:
            distance = c.approach_distance_m  # unknown distance: treat as at the edge of the approach zone
        attending = seen_now and visitor.attending >= ATTENDING_THRESHOLD
        if attending:
            self.attending_since_ns = self.attending_since_ns if self.attending_since_ns is not None else pts_ns
            self.looking_away_since_ns = None
        else:
            self.attending_since_ns = None
            if seen_now and self.looking_away_since_ns is None:
                self.looking_away_since_ns = pts_ns
        dwell_ok = attending and (pts_ns - self.attending_since_ns) / 1e6 >= c.engage_dwell_ms
        looked_away_long = (self.looking_away_since_ns is not None
                            and (pts_ns - self.looking_away_since_ns) / 1e6 >= c.disengage_look_away_ms)

        if self.state == "gone":
            if seen_now and distance <= c.approach_distance_m:
                self._go("engaged" if dwell_ok and distance <= c.engage_distance_m else "approaching", pts_ns)
        elif self.state == "approaching":
            if not present or (seen_now and distance > c.approach_distance_m * 1.1):
                self._go("gone", pts_ns)
            elif seen_now and distance <= c.engage_distance_m and dwell_ok:
                self._go("engaged", pts_ns)
        elif self.state == "engaged":
            if not present or (seen_now and (distance > c.release_distance_m or looked_away_long)):
                self._go("leaving", pts_ns)
        elif self.state == "leaving":
            if seen_now and distance <= c.release_distance_m and attending:
                self._go("engaged", pts_ns)
            elif (pts_ns - self.since_ns) / 1e6 >= c.leave_timeout_ms:
                near = seen_now and distance <= c.approach_distance_m
                self._go("approaching" if near else "gone", pts_ns)
        return self.state
