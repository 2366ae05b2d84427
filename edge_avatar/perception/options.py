"""The ``perception`` section of the root config (models, tracking, visitor selection, engagement).

Why this module exists: everything an operator may tune about how the avatar
sees -- which model files, how often to re-detect, how far away a visitor
counts as engaged -- is one frozen dataclass, merged once with the rest of
the config (defaults < board < site < CLI), with units in every name and the
allowed range in each field's metadata (checked by ``edge_avatar.config``).
``validate()`` adds the rules that span fields (engage < release <= approach).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _range(lo: float | None, hi: float | None, default: Any) -> Any:
    return field(default=default, metadata={"min": lo, "max": hi})


@dataclass(frozen=True)
class PerceptionConfig:
    """How the avatar sees the visitor (vision half; the audio half lands separately)."""

    enabled: bool = True

    # ---- model files (relative to engines_dir; see engines/manifest.json)
    engines_dir: str = ""                 # "" = the repository's engines/
    face_detector_model: str = "face_detection_full_range.onnx"
    face_landmarks_model: str = "face_landmarks_detector.onnx"
    face_blendshapes_model: str = "face_blendshapes.onnx"
    emotion_model: str = "emotion_mini_xception.onnx"
    palm_detector_model: str = "palm_detection_lite.onnx"
    hand_landmarks_model: str = "hand_landmark_lite.onnx"
    face_geometry_file: str = "face_geometry.json"
    verify_sha256: bool = True            # refuse a model whose hash differs from the manifest

    # ---- faces: detection and tracking
    face_detection_min_score: float = _range(0.05, 0.99, 0.5)
    face_nms_iou: float = _range(0.05, 0.95, 0.3)
    max_faces: int = _range(1, 10, 3)                       # faces meshed per frame (closest first)
    redetect_interval_frames: int = _range(1, 300, 10)      # full-frame detection every N frames, or on loss
    track_max_gap_ms: float = _range(10.0, 10000.0, 250.0)  # a gap this long (and 2x the usual): detect
    face_roi_scale: float = _range(1.0, 3.0, 1.5)           # mesh crop = face box x this (MediaPipe: 1.5)
    landmark_min_presence: float = _range(0.05, 0.99, 0.5)  # below: the track is lost, re-detect
    track_match_iou: float = _range(0.05, 0.95, 0.3)        # detection <-> track association
    face_edge_margin_frac: float = _range(0.0, 0.5, 0.02)   # a face box this close to the border is "partial"

    # ---- distance
    focal_length_px: float = _range(0.0, 20000.0, 0.0)      # 0 = from camera_hfov_deg; calibrated value wins
    focal_length_ref_width_px: int = _range(16, 8192, 640)  # frame width at which focal_length_px holds
    camera_hfov_deg: float = _range(20.0, 170.0, 69.0)      # RealSense D435 colour: 69 deg
    face_box_width_m: float = _range(0.05, 0.4, 0.16)       # detector box width of an adult face (no-mesh faces)
    depth_min_valid_m: float = _range(0.05, 5.0, 0.2)
    depth_max_valid_m: float = _range(0.5, 20.0, 8.0)

    # ---- engagement (the active visitor's state machine)
    approach_distance_m: float = _range(0.3, 20.0, 3.0)     # nearer than this: approaching
    engage_distance_m: float = _range(0.2, 10.0, 1.2)       # nearer than this and attending: engaged
    release_distance_m: float = _range(0.3, 15.0, 1.6)      # farther than this: leaving (hysteresis)
    engage_dwell_ms: float = _range(0.0, 10000.0, 300.0)    # attending this long before engaged
    disengage_look_away_ms: float = _range(0.0, 60000.0, 4000.0)  # engaged but looking away this long: leaving
    leave_timeout_ms: float = _range(0.0, 60000.0, 2000.0)  # leaving this long (not back): gone
    lost_grace_ms: float = _range(0.0, 10000.0, 600.0)      # face unseen this long counts as absent

    # ---- attention and gaze
    attention_max_yaw_deg: float = _range(5.0, 90.0, 30.0)     # head turned further: not attending
    attention_max_pitch_deg: float = _range(5.0, 90.0, 25.0)
    looking_max_gaze_deg: float = _range(2.0, 45.0, 15.0)      # gaze within this cone of the screen: looking
    screen_gaze_pitch_deg: float = _range(-45.0, 45.0, -5.0)   # gaze pitch toward the screen centre (camera above)
    eye_yaw_range_deg: float = _range(10.0, 60.0, 35.0)        # eye-in-head yaw at full iris deflection

    # ---- active visitor selection
    active_switch_margin: float = _range(0.0, 1.0, 0.15)   # a challenger must score this much higher ...
    active_switch_hold_ms: float = _range(0.0, 10000.0, 800.0)  # ... for this long to take over

    # ---- emotion
    emotion_blendshape_weight: float = _range(0.0, 1.0, 0.35)  # log-linear weight of the blendshape evidence
    emotion_smoothing: float = _range(0.0, 0.99, 0.5)          # EMA per frame on a tracked face (0 = none)
    emotion_interval_frames: int = _range(1, 30, 2)            # image model every N frames per tracked face

    # ---- hands and gestures
    hands_enabled: bool = True
    max_hands: int = _range(0, 4, 2)
    palm_detection_min_score: float = _range(0.05, 0.99, 0.5)
    hand_detect_interval_frames: int = _range(1, 300, 10)   # palm detection every N frames while hands < max
    hand_roi_scale: float = _range(1.0, 4.0, 2.6)           # hand crop = palm box x this (MediaPipe: 2.6)
    hand_min_presence: float = _range(0.05, 0.99, 0.5)
    camera_mirrored: bool = False          # the hand model assumes a mirrored (selfie) image; kiosks are not
    finger_extended_min_deg: float = _range(90.0, 180.0, 150.0)  # joint straightness of an extended finger
    thumbs_up_max_tilt_deg: float = _range(5.0, 90.0, 40.0)      # thumb within this of straight up
    wave_window_ms: float = _range(200.0, 5000.0, 1500.0)
    wave_min_reversals: int = _range(1, 10, 2)
    wave_min_amplitude_hand_widths: float = _range(0.05, 3.0, 0.25)

    # ---- frame checks (bad input gives an empty token with a reason)
    min_mean_luma: float = _range(0.0, 128.0, 12.0)        # 0..255; darker: "too_dark"
    max_mean_luma: float = _range(128.0, 255.0, 243.0)     # brighter: "overexposed"
    max_saturated_frac: float = _range(0.05, 1.0, 0.6)     # more pixels at >= 250: "overexposed"
    min_luma_std: float = _range(0.0, 64.0, 4.0)           # flatter: "no_contrast"
    min_neighbour_correlation: float = _range(-1.0, 1.0, 0.25)  # lower: "corrupted" (noise, scrambled rows)

    def validate(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if not self.engage_distance_m < self.release_distance_m:
            problems.append(("engage_distance_m", f"{self.engage_distance_m} must be below release_distance_m "
                                                  f"({self.release_distance_m}): the gap is the hysteresis"))
        if not self.release_distance_m <= self.approach_distance_m:
            problems.append(("release_distance_m", f"{self.release_distance_m} must not exceed "
                                                   f"approach_distance_m ({self.approach_distance_m})"))
        if not self.depth_min_valid_m < self.depth_max_valid_m:
            problems.append(("depth_min_valid_m", "must be below depth_max_valid_m"))
        if not self.min_mean_luma < self.max_mean_luma:
            problems.append(("min_mean_luma", "must be below max_mean_luma"))
        return problems

    def focal_length_at(self, width_px: int) -> float:
        """Focal length in pixels for a frame ``width_px`` wide (calibrated value scaled, else from the FOV)."""
        import math  # noqa: PLC0415

        if self.focal_length_px > 0:
            return self.focal_length_px * width_px / self.focal_length_ref_width_px
        return (width_px / 2.0) / math.tan(math.radians(self.camera_hfov_deg) / 2.0)
