"""Is a built model still right? Its outputs against the fp32 ONNX on held-out data, in the units that matter.

Why this module exists: "INT8 is close" means nothing to the avatar; a face
box that moved, a landmark a few pixels off, a smile that became a frown
does. So each model is judged by what its output is used for, with a
tolerance per model (``TOLERANCES``), on held-out calibration data (never
the frames the ranges were measured on):

- face and palm detectors: decoded, NMS'd boxes matched by IoU (mean and 5th
  percentile), the score change on every anchor that either model finds
  likely, and whether both find the same number of detections;
- face mesh and hand landmarks: landmark error in pixels of the model's crop
  (only where the fp32 model says a face/hand is present), presence and
  handedness probability changes;
- blendshapes: mean and worst absolute coefficient error;
- emotion: top-1 agreement and probability MAE;
- planner: motion MAE (blendshapes, and head/eye angles in degrees);
- renderer: PSNR of the image;
- anything else: worst relative error.

A model that misses any tolerance is not usable, and the reason names the
metric, its value and the limit. Numpy only; the decoding reuses the
perception package's own SSD functions, so the metric sees what the
pipeline sees.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Tolerance:
    metric: str
    limit: float
    higher_is_better: bool
    unit: str = ""

    def passes(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return value >= self.limit if self.higher_is_better else value <= self.limit

    def describe(self) -> str:
        return f"{self.metric} {'>=' if self.higher_is_better else '<='} {self.limit:g}{self.unit}"


@dataclass
class VerifyResult:
    model: str
    precision: str
    backend: str
    passed: bool
    samples: int
    metrics: dict[str, float] = field(default_factory=dict)
    tolerances: dict[str, str] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "precision": self.precision, "backend": self.backend, "passed": self.passed,
                "samples": self.samples, "metrics": {k: round(float(v), 6) for k, v in self.metrics.items()},
                "tolerances": dict(self.tolerances), "reason": self.reason}


def _t(metric: str, limit: float, higher: bool, unit: str = "") -> Tolerance:
    return Tolerance(metric, limit, higher, unit)


DETECTOR_TOLERANCES = (_t("box_iou_mean", 0.90, True), _t("box_iou_p5", 0.75, True),
                       _t("score_abs_diff_p95", 0.10, False), _t("detection_count_agreement", 0.90, True))
TOLERANCES: dict[str, tuple[Tolerance, ...]] = {
    "face_detector": DETECTOR_TOLERANCES,
    "palm_detector": DETECTOR_TOLERANCES,
    "face_landmarks": (_t("landmark_error_mean_px", 1.5, False, " px"), _t("landmark_error_p95_px", 4.0, False, " px"),
                       _t("presence_abs_diff_max", 0.10, False)),
    "hand_landmarks": (_t("landmark_error_mean_px", 2.0, False, " px"), _t("landmark_error_p95_px", 5.0, False, " px"),
                       _t("presence_abs_diff_max", 0.10, False), _t("handedness_abs_diff_max", 0.10, False)),
    "face_blendshapes": (_t("blendshape_mae", 0.02, False), _t("blendshape_abs_diff_max", 0.10, False)),
    "emotion": (_t("top1_agreement", 0.90, True), _t("probability_mae", 0.03, False)),
    "planner": (_t("blendshape_mae", 0.03, False), _t("angle_mae_deg", 1.0, False, " deg")),
    "renderer": (_t("psnr_db_mean", 35.0, True, " dB"), _t("psnr_db_min", 30.0, True, " dB")),
    "generic": (_t("relative_error_max", 0.05, False),),
}


def tolerances_for(name: str, family: str) -> tuple[Tolerance, ...]:
    return TOLERANCES.get(name) or TOLERANCES.get(family) or TOLERANCES["generic"]


# --------------------------------------------------------------------------- metrics per kind of model


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -100.0, 100.0)))


def _detector_metrics(anchor_strides: tuple[int, ...], anchors_per_cell: tuple[int, ...], input_px: int,
                      keypoints: int, min_score: float = 0.5) -> Callable[[list[Outputs], list[Outputs]], dict]:
    def metrics(refs: list[Outputs], tests: list[Outputs]) -> dict[str, float]:
        from edge_avatar.perception.geometry import (  # noqa: PLC0415
            box_iou,
            decode_ssd,
            ssd_anchor_centres,
            weighted_nms,
        )

        anchors = ssd_anchor_centres(input_px, anchor_strides, anchors_per_cell)
        ious: list[float] = []
        score_diffs: list[float] = []
        agree = 0
        for ref, test in zip(refs, tests):
            dets = []
            for out in (ref, test):
                decoded = decode_ssd(out["regressors"][0], out["scores"][0, :, 0], anchors, input_px, keypoints,
                                     min_score)
                dets.append(weighted_nms(decoded, 0.3, 10))
            a, b = dets
            ious += [float(box_iou(box, b.boxes).max()) if len(b) else 0.0 for box in a.boxes]
            ious += [0.0] * max(0, len(b) - len(a))  # an extra detection is as wrong as a missed one
            agree += int(len(a) == len(b))
            pa, pb = _sigmoid(ref["scores"].ravel()), _sigmoid(test["scores"].ravel())
            likely = np.maximum(pa, pb) >= 0.05
            score_diffs.append(float(np.abs(pa - pb)[likely].max()) if likely.any() else 0.0)
        return {"box_iou_mean": float(np.mean(ious)) if ious else 1.0,
                "box_iou_p5": float(np.percentile(ious, 5)) if ious else 1.0,
                "score_abs_diff_p95": float(np.percentile(score_diffs, 95)),
                "detection_count_agreement": agree / max(len(refs), 1),
                "detections_compared": float(len(ious))}
    return metrics


def _landmark_metrics(points: int, presence_is_logit: bool, handedness: bool) -> Callable:
    def metrics(refs: list[Outputs], tests: list[Outputs]) -> dict[str, float]:
        errors: list[np.ndarray] = []
        presence_diffs, hand_diffs = [], []
        for ref, test in zip(refs, tests):
            to_prob = _sigmoid if presence_is_logit else (lambda v: v)
            pa, pb = float(to_prob(ref["presence"].ravel())[0]), float(to_prob(test["presence"].ravel())[0])
            presence_diffs.append(abs(pa - pb))
            if pa < 0.5:
                continue  # no face/hand in this crop: its landmarks are not used
            la = ref["landmarks"].reshape(points, 3)[:, :2]
            lb = test["landmarks"].reshape(points, 3)[:, :2]
            errors.append(np.linalg.norm(la - lb, axis=1))           # (points,) crop pixels
            if handedness:
                hand_diffs.append(abs(float(ref["handedness"].ravel()[0]) - float(test["handedness"].ravel()[0])))
        all_errors = np.concatenate(errors) if errors else np.array([np.nan])
        out = {"landmark_error_mean_px": float(np.mean(all_errors)),
               "landmark_error_p95_px": float(np.percentile(all_errors, 95)),
               "presence_abs_diff_max": float(max(presence_diffs, default=np.nan)),
               "samples_with_presence": float(len(errors))}
        if handedness:
            out["handedness_abs_diff_max"] = float(max(hand_diffs, default=np.nan))
        return out
    return metrics


def _blendshape_metrics(refs: list[Outputs], tests: list[Outputs]) -> dict[str, float]:
    diffs = np.stack([np.abs(r["blendshapes"].ravel() - t["blendshapes"].ravel()) for r, t in zip(refs, tests)])
    return {"blendshape_mae": float(diffs.mean()), "blendshape_abs_diff_max": float(diffs.max())}


def _emotion_metrics(refs: list[Outputs], tests: list[Outputs]) -> dict[str, float]:
    a = np.stack([r["probabilities"].ravel() for r in refs])
    b = np.stack([t["probabilities"].ravel() for t in tests])
    return {"top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
            "probability_mae": float(np.abs(a - b).mean())}


def _first_output(out: Outputs) -> np.ndarray:
    return next(iter(out.values()))


def _planner_metrics(refs: list[Outputs], tests: list[Outputs]) -> dict[str, float]:
    from edge_avatar.motion import MOTION_FRAME_SIZE  # noqa: PLC0415

    a = np.stack([_first_output(r).reshape(-1, _first_output(r).shape[-1]) for r in refs]).astype(np.float64)
    b = np.stack([_first_output(t).reshape(-1, _first_output(t).shape[-1]) for t in tests]).astype(np.float64)
    if a.shape[-1] != MOTION_FRAME_SIZE:
        return {"blendshape_mae": float(np.abs(a - b).mean()), "angle_mae_deg": 0.0}
    return {"blendshape_mae": float(np.abs(a[..., :52] - b[..., :52]).mean()),
            "angle_mae_deg": float(np.abs(a[..., 52:59] - b[..., 52:59]).mean()),
            "gesture_mae": float(np.abs(a[..., 59:] - b[..., 59:]).mean())}


def psnr_db(reference: np.ndarray, test: np.ndarray, peak: float) -> float:
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def _renderer_metrics(refs: list[Outputs], tests: list[Outputs]) -> dict[str, float]:
    values = []
    for r, t in zip(refs, tests):
        a, b = _first_output(r), _first_output(t)
        peak = 255.0 if a.dtype == np.uint8 else max(float(np.abs(a).max()), 1e-6)
        values.append(min(psnr_db(a, b, peak), 99.0))
    return {"psnr_db_mean": float(np.mean(values)), "psnr_db_min": float(np.min(values))}


def _generic_metrics(refs: list[Outputs], tests: list[Outputs]) -> dict[str, float]:
    worst = 0.0
    for r, t in zip(refs, tests):
        for name, a in r.items():
            b = t[name].astype(np.float64)
            a = a.astype(np.float64)
            worst = max(worst, float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-6)))
    return {"relative_error_max": worst}


METRICS: dict[str, Callable[[list[Outputs], list[Outputs]], dict[str, float]]] = {
    "face_detector": _detector_metrics((4,), (1,), 192, 6),
    "palm_detector": _detector_metrics((8, 16, 16, 16), (2, 2, 2, 2), 192, 7),
    "face_landmarks": _landmark_metrics(478, presence_is_logit=True, handedness=False),
    "hand_landmarks": _landmark_metrics(21, presence_is_logit=False, handedness=True),
    "face_blendshapes": _blendshape_metrics,
    "emotion": _emotion_metrics,
    "planner": _planner_metrics,
    "renderer": _renderer_metrics,
    "generic": _generic_metrics,
}


def compare(name: str, family: str, precision: str, backend: str, refs: Sequence[Outputs],
            tests: Sequence[Outputs]) -> VerifyResult:
    """Judge ``tests`` (the built model) against ``refs`` (fp32) with the model's tolerances."""
    refs, tests = list(refs), list(tests)
    tolerances = tolerances_for(name, family)
    result = VerifyResult(name, precision, backend, False, len(refs),
                          tolerances={t.metric: t.describe() for t in tolerances})
    if not refs:
        result.reason = "no held-out samples to verify on"
        return result
    metric_fn = METRICS.get(name) or METRICS.get(family) or METRICS["generic"]
    result.metrics = metric_fn(refs, tests)
    failures = []
    for tolerance in tolerances:
        value = result.metrics.get(tolerance.metric, float("nan"))
        if not tolerance.passes(value):
            shown = "n/a (no usable sample)" if not math.isfinite(value) else f"{value:.4g}{tolerance.unit}"
            failures.append(f"{tolerance.metric} {shown} (limit {tolerance.describe()})")
    result.passed = not failures
    result.reason = "within tolerance" if result.passed else "fails " + "; ".join(failures)
    return result
