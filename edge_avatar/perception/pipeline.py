"""The vision perception stage the loop calls once per camera frame: frame in, token out, never an exception.

Why this module exists: it is the one place that orders the models and keeps
their state between frames, so the loop sees a single call,

    stage = VisionPerception.from_config(config)
    token = stage.perceive(frame, voice_rms)     # (TOKEN_SIZE,) float32, layout in perception.token
    stage.last_result                            # PerceptionResult: faces, hands, reason, timings

Per frame: check the frame (dark, overexposed, flat, noise, wrong shape or
dtype -> an empty token with the reason); faces: full-frame detection every
``redetect_interval_frames`` or when a track is lost, otherwise each tracked
face's ROI comes from its previous landmarks (MediaPipe's tracking scheme,
about 10x cheaper than detecting); mesh, blendshapes, head pose, gaze,
emotion for up to ``max_faces`` faces, closest first, the rest reported from
the detector alone; the active visitor and the engagement state; hands the
same way (palm detection every ``hand_detect_interval_frames`` while fewer
than ``max_hands`` are tracked). Any failure inside is caught, logged (rate
limited) and returned as an empty token whose reason names it: a model
glitch must never stop the avatar's face.

Timing uses ``perf_counter_ns`` as a measuring stick only; every decision
that involves time uses the frame's ``pts_ns`` (the media clock).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_avatar.config import BackendConfig, RootConfig
from edge_avatar.frames import VideoFrame
from edge_avatar.perception.face import (
    EmotionClassifier,
    FaceDetector,
    FaceMesh,
    attention,
    blendshapes,
    face_rect_from_detection,
    face_rect_from_landmarks,
    fuse_emotion,
    gaze,
    head_pose,
    yaw_from_detection,
)
from edge_avatar.perception.geometry import RotatedRect, box_iou
from edge_avatar.perception.hands import (
    HandLandmarker,
    PalmDetector,
    WaveDetector,
    fingers_extended,
    hand_rect_from_landmarks,
    hand_rect_from_palm,
    handedness_label,
    static_gesture,
    wave_detector,
)
from edge_avatar.perception.models import ModelSet
from edge_avatar.perception.options import PerceptionConfig
from edge_avatar.perception.token import (
    FaceResult,
    HandResult,
    PerceptionResult,
    empty_token,
    encode_token,
)
from edge_avatar.perception.visitor import (
    EngagementTracker,
    VisitorSelector,
    depth_distance_m,
    size_distance_m,
)

log = logging.getLogger(__name__)

MIN_FRAME_SIDE_PX = 32
ERROR_LOG_INTERVAL_NS = 5_000_000_000  # at most one stack trace per 5 s of wall time


# --------------------------------------------------------------------------- frame checks


def check_frame(image: Any, config: PerceptionConfig) -> str | None:
    """None when the frame can be analysed, else the reason it cannot (the token's ``reason``)."""
    if not isinstance(image, np.ndarray):
        return f"corrupted: image is {type(image).__name__}, expected a numpy array"
    if image.ndim != 3 or image.shape[2] != 3:
        return f"corrupted: image shape {tuple(image.shape)}, expected (H, W, 3) RGB"
    if image.dtype != np.uint8:
        return f"corrupted: image dtype {image.dtype}, expected uint8"
    if min(image.shape[:2]) < MIN_FRAME_SIDE_PX:
        return f"corrupted: image {image.shape[1]}x{image.shape[0]} is smaller than {MIN_FRAME_SIDE_PX} px"
    green = image[::8, ::4, 1].astype(np.float32)               # (H/8, W/4): level statistics
    mean, std = float(green.mean()), float(green.std())
    if mean < config.min_mean_luma:
        return f"too_dark: mean level {mean:.1f} < {config.min_mean_luma:g}"
    if mean > config.max_mean_luma:
        return f"overexposed: mean level {mean:.1f} > {config.max_mean_luma:g}"
    saturated = float(np.count_nonzero(green >= 250.0)) / green.size
    if saturated > config.max_saturated_frac:
        return f"overexposed: {100 * saturated:.0f}% of pixels saturated"
    if std < config.min_luma_std:
        return f"no_contrast: level std {std:.1f} < {config.min_luma_std:g}"
    rows = image[::16, :, 1].astype(np.float32)                 # (H/16, W): horizontal neighbours at full res
    pairs = (rows.shape[1] // 2) * 2
    left, right = rows[:, 0:pairs:2], rows[:, 1:pairs:2]         # (H/16, W/2) each
    left, right = left - left.mean(), right - right.mean()
    corr = float((left * right).sum() / max(math.sqrt(float((left * left).sum() * (right * right).sum())), 1e-6))
    if corr < config.min_neighbour_correlation:
        return f"corrupted: neighbouring pixels uncorrelated ({corr:.2f}), looks like noise"
    return None


def _valid_depth(frame: VideoFrame, image: np.ndarray) -> np.ndarray | None:
    depth = frame.depth_m
    if depth is None:
        return None
    if not isinstance(depth, np.ndarray) or depth.shape != image.shape[:2]:
        return None
    return depth


# --------------------------------------------------------------------------- tracks


@dataclass
class _FaceTrack:
    track_id: int
    rect: RotatedRect
    box: np.ndarray                    # (4,) last box, image pixels
    detector_score: float
    created_ns: int
    emotion_ema: np.ndarray | None = None
    emotion_image: np.ndarray | None = None  # (7,) the image model's last answer
    frames_meshed: int = 0
    fresh: bool = True                 # ROI still from the detector (no landmarks yet)


@dataclass
class _HandTrack:
    track_id: int
    rect: RotatedRect
    box: np.ndarray
    wave: WaveDetector
    last_gesture: str = "none"


@dataclass
class _Timer:
    stages_ms: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, start_ns: int) -> int:
        now = time.perf_counter_ns()
        self.stages_ms[name] = self.stages_ms.get(name, 0.0) + (now - start_ns) / 1e6
        return now


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def _landmark_box(landmarks: np.ndarray) -> np.ndarray:
    pts = landmarks[:, :2]
    return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()], dtype=np.float32)


def _is_partial(box: np.ndarray, width: int, height: int, margin_frac: float) -> bool:
    mx, my = margin_frac * width, margin_frac * height
    return bool(box[0] < mx or box[1] < my or box[2] > width - mx or box[3] > height - my)


# --------------------------------------------------------------------------- the stage


class VisionPerception:
    """Camera frames -> perception tokens (and ``PerceptionResult``), with tracking between frames."""

    def __init__(self, config: PerceptionConfig | None = None, backend: BackendConfig | None = None,
                 models: ModelSet | None = None, root: RootConfig | None = None):
        self.config = config or PerceptionConfig()
        self.models = models or ModelSet(self.config, backend, root=root)
        c = self.config
        self.detector = FaceDetector(self.models["face_detector"], c.face_detection_min_score, c.face_nms_iou,
                                     max_faces=10)
        self.mesh = FaceMesh(self.models["face_landmarks"])
        self.emotion = EmotionClassifier(self.models["emotion"])
        self.hands_enabled = c.hands_enabled and c.max_hands > 0 and self.models.get("palm_detector") is not None
        if self.hands_enabled:
            self.palm_detector = PalmDetector(self.models["palm_detector"], c.palm_detection_min_score,
                                              max_palms=max(c.max_hands, 1) * 2)
            self.hand_landmarker = HandLandmarker(self.models["hand_landmarks"])
        self.selector = VisitorSelector(c)
        self.engagement = EngagementTracker(c)
        self.last_result: PerceptionResult | None = None
        self.last_token: np.ndarray = empty_token()
        self._last_error_log_ns = -ERROR_LOG_INTERVAL_NS
        self.reset()

    @classmethod
    def from_config(cls, config: RootConfig) -> VisionPerception:
        return cls(config.perception, config.backend, root=config)

    def reset(self) -> None:
        """Forget every track (the next frame detects from scratch)."""
        self._tracks: list[_FaceTrack] = []
        self._detector_only: list[FaceResult] = []
        self._hand_tracks: list[_HandTrack] = []
        self._frame_index = 0
        self._next_id = 1
        self._force_detect = True
        self._last_pts_ns: int | None = None
        self._usual_gap_ms: float | None = None      # running mean of the time between frames
        self.gap_redetections = 0
        self._force_hand_detect = True
        self.selector.reset()
        self.engagement.reset()

    def close(self) -> None:
        self.models.close()

    def warm_up(self) -> dict[str, float]:
        return self.models.warm_up()

    # ------------------------------------------------------------------ public calls

    def perceive(self, frame: VideoFrame, voice_rms: float = 0.0) -> np.ndarray:
        """The loop's call: the (TOKEN_SIZE,) float32 token for ``frame``; ``last_result`` has the details."""
        self.process(frame, voice_rms)
        return self.last_token

    def process(self, frame: VideoFrame, voice_rms: float = 0.0, refine: bool = False) -> PerceptionResult:
        """Analyse one frame; never raises (a failure is an invalid result whose reason names it)."""
        pts_ns, seq = _as_int(getattr(frame, "pts_ns", 0)), _as_int(getattr(frame, "seq", 0))
        try:
            voice = float(voice_rms) if np.isfinite(voice_rms) else 0.0
        except (TypeError, ValueError):
            voice = 0.0
        try:
            result = self._process(frame, pts_ns, seq, voice, refine)
        except Exception as exc:  # noqa: BLE001 - the loop must never see a perception exception
            now = time.monotonic_ns()
            if now - self._last_error_log_ns >= ERROR_LOG_INTERVAL_NS:
                self._last_error_log_ns = now
                log.exception("perception failed on frame seq %d; returning an empty token", seq)
            self._tracks.clear()
            self._hand_tracks.clear()
            self._force_detect = self._force_hand_detect = True
            state = self.engagement.update(None, pts_ns)
            result = PerceptionResult(pts_ns, seq, False, f"internal_error: {type(exc).__name__}: {exc}",
                                      engagement=state, state_age_s=self.engagement.age_s(pts_ns), voice_rms=voice)
        self.last_result = result
        try:
            self.last_token = encode_token(result)
        except Exception:  # noqa: BLE001 - same promise for the packing step
            log.exception("perception token encoding failed on frame seq %d", seq)
            self.last_token = empty_token()
        return result

    def analyze_image(self, image: np.ndarray, depth_m: np.ndarray | None = None) -> PerceptionResult:
        """A still image: fresh state, detection, and one refinement pass of every mesh from its own landmarks."""
        self.reset()
        return self.process(VideoFrame(pts_ns=0, seq=0, image=image, depth_m=depth_m, source="image"), refine=True)

    # ------------------------------------------------------------------ the work

    def _process(self, frame: VideoFrame, pts_ns: int, seq: int, voice: float, refine: bool) -> PerceptionResult:
        c = self.config
        timer = _Timer()
        t = time.perf_counter_ns()
        frame_index = self._frame_index
        self._frame_index += 1  # counts every frame offered, so "every N frames" is in camera frames
        if self._last_pts_ns is not None:
            gap_ms = (pts_ns - self._last_pts_ns) / 1e6
            usual_ms = self._usual_gap_ms if self._usual_gap_ms is not None else gap_ms
            if gap_ms > max(c.track_max_gap_ms, 2.0 * usual_ms):
                # A starved worker or a camera hiccup: the visitor moved since the ROIs were made, so detect.
                # (Relative to the usual gap too, so a slow perception rate does not turn tracking off.)
                self._force_detect = self._force_hand_detect = True
                self.gap_redetections += 1
            self._usual_gap_ms = usual_ms + 0.1 * (min(gap_ms, 4.0 * usual_ms) - usual_ms)
        self._last_pts_ns = pts_ns
        image = getattr(frame, "image", None)
        reason = check_frame(image, c)
        t = timer.add("check", t)
        if reason is not None:
            # No usable picture: the visitor is not seen this frame (engagement keeps its grace periods).
            self._force_detect = self._force_hand_detect = True
            state = self.engagement.update(None, pts_ns)
            return PerceptionResult(pts_ns, seq, False, reason, image_size=self._size(image), engagement=state,
                                    state_age_s=self.engagement.age_s(pts_ns), voice_rms=voice,
                                    stages_ms=timer.stages_ms)
        image = np.ascontiguousarray(image)
        height, width = image.shape[:2]
        depth = _valid_depth(frame, image)
        focal_px = c.focal_length_at(width)

        faces, detection_ran = self._faces(image, frame_index, depth, focal_px, pts_ns, refine, timer)
        t = time.perf_counter_ns()
        active_id = self.selector.choose(faces, pts_ns)
        for face in faces:
            face.is_active = face.track_id == active_id
        faces.sort(key=lambda f: (not f.is_active, f.distance_m if f.distance_m > 0 else 1e9))
        active = next((f for f in faces if f.is_active), None)
        state = self.engagement.update(active, pts_ns)
        t = timer.add("visitor", t)

        hands = self._hands(image, frame_index, pts_ns, refine, timer) if self.hands_enabled else []
        reason = "ok" if faces else "no_face"
        return PerceptionResult(pts_ns, seq, True, reason, image_size=(width, height), faces=faces, hands=hands,
                                engagement=state, state_age_s=self.engagement.age_s(pts_ns), voice_rms=voice,
                                detection_ran=detection_ran, stages_ms=timer.stages_ms)

    @staticmethod
    def _size(image: Any) -> tuple[int, int]:
        if isinstance(image, np.ndarray) and image.ndim >= 2:
            return int(image.shape[1]), int(image.shape[0])
        return (0, 0)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    # ---- faces

    def _faces(self, image: np.ndarray, frame_index: int, depth: np.ndarray | None, focal_px: float, pts_ns: int,
               refine: bool, timer: _Timer) -> tuple[list[FaceResult], bool]:
        c = self.config
        height, width = image.shape[:2]
        due = self._force_detect or not self._tracks or frame_index % c.redetect_interval_frames == 0
        t = time.perf_counter_ns()
        if due:
            self._force_detect = False
            dets = self.detector.detect(image)
            t = timer.add("face_detect", t)
            self._assign_detections(dets, depth, focal_px, width, height, pts_ns)

        # Mesh every track; drop the ones the mesh no longer sees.
        meshed: list[tuple[_FaceTrack, np.ndarray, float]] = []
        for track in self._tracks:
            landmarks, presence = self.mesh.run(image, track.rect)
            # A detector ROI can be off for a turned face (the eye-line keypoints are poor in profile): one
            # pass from the mesh's own landmarks usually recovers it. Still images always refine once.
            if refine or (track.fresh and presence < c.landmark_min_presence):
                landmarks, presence = self.mesh.run(image, face_rect_from_landmarks(landmarks, c.face_roi_scale))
            track.fresh = False
            if presence < c.landmark_min_presence:
                self._force_detect = True
                continue
            meshed.append((track, landmarks, presence))
        t = timer.add("face_mesh", t)
        # Two tracks that converged on one face: keep the older.
        kept: list[tuple[_FaceTrack, np.ndarray, float]] = []
        for track, landmarks, presence in sorted(meshed, key=lambda m: m[0].created_ns):
            box = _landmark_box(landmarks[:468])
            if any(box_iou(box, _landmark_box(k[1][:468])[None])[0] > 0.5 for k in kept):
                continue
            kept.append((track, landmarks, presence))
        self._tracks = [k[0] for k in kept]

        faces: list[FaceResult] = []
        for track, landmarks, presence in kept:
            faces.append(self._analyse_face(image, depth, focal_px, track, landmarks, presence, timer))
            track.rect = face_rect_from_landmarks(landmarks, c.face_roi_scale)
            track.box = faces[-1].box_xyxy.copy()
        # Detector-only faces persist until the next detection; drop any a track now covers.
        if self._tracks and self._detector_only:
            boxes = np.stack([tr.box for tr in self._tracks])
            self._detector_only = [f for f in self._detector_only if box_iou(f.box_xyxy, boxes).max() < 0.3]
        faces.extend(self._detector_only)
        return faces, due

    def _assign_detections(self, dets: Any, depth: np.ndarray | None, focal_px: float, width: int, height: int,
                           pts_ns: int) -> None:
        """Match detections to tracks (IoU), start tracks for new faces, keep the ``max_faces`` largest meshed.

        A detection that overlaps a track keeps that track (its landmark ROI is
        better than the detector's box). Tracks the detector missed are kept too
        (the mesh decides whether the face is still there). When there are more
        faces than mesh slots, the smallest (farthest) give way and are reported
        from the detector alone until the next detection.
        """
        c = self.config
        order = np.argsort(-(dets.boxes[:, 2] - dets.boxes[:, 0])) if len(dets) else np.zeros(0, int)
        free = list(self._tracks)
        candidates: list[tuple[float, _FaceTrack | None, int | None]] = []  # (width px, track, detection index)
        for i in order:
            box = dets.boxes[i]
            match = None
            if free:
                ious = box_iou(box, np.stack([tr.box for tr in free]))
                if ious.max() >= c.track_match_iou:
                    match = free.pop(int(np.argmax(ious)))
            candidates.append((float(box[2] - box[0]), match, int(i)))
        candidates += [(float(tr.box[2] - tr.box[0]), tr, None) for tr in free]
        candidates.sort(key=lambda cand: -cand[0])
        self._tracks, self._detector_only = [], []
        for _, track, i in candidates:
            if len(self._tracks) < c.max_faces:
                if track is None:
                    rect = face_rect_from_detection(dets.boxes[i], dets.keypoints[i], c.face_roi_scale)
                    track = _FaceTrack(self._new_id(), rect, dets.boxes[i].copy(), float(dets.scores[i]), pts_ns)
                self._tracks.append(track)
            elif i is not None:
                self._detector_only.append(self._detector_face(dets.boxes[i], dets.keypoints[i],
                                                               float(dets.scores[i]), depth, focal_px,
                                                               width, height))

    def _analyse_face(self, image: np.ndarray, depth: np.ndarray | None, focal_px: float, track: _FaceTrack,
                      landmarks: np.ndarray, presence: float, timer: _Timer) -> FaceResult:
        c = self.config
        height, width = image.shape[:2]
        t = time.perf_counter_ns()
        box = _landmark_box(landmarks[:468])
        bs = blendshapes(self.models["face_blendshapes"], landmarks)
        t = timer.add("blendshapes", t)
        pose = head_pose(landmarks, self.models.geometry)
        g = gaze(landmarks, pose, c.screen_gaze_pitch_deg, c.looking_max_gaze_deg)
        attending = attention(pose.yaw_deg, pose.pitch_deg, g.looking_at_screen, c.attention_max_yaw_deg,
                              c.attention_max_pitch_deg)
        t = timer.add("pose_gaze", t)
        # The image model is slow to change and costs a crop: every N frames; blendshapes fuse in every frame.
        if track.emotion_image is None or track.frames_meshed % c.emotion_interval_frames == 0:
            track.emotion_image = self.emotion.run(image, landmarks)
        track.frames_meshed += 1
        image_probs = track.emotion_image
        fused = fuse_emotion(image_probs, bs, c.emotion_blendshape_weight)
        if track.emotion_ema is not None and c.emotion_smoothing > 0:
            fused = c.emotion_smoothing * track.emotion_ema + (1 - c.emotion_smoothing) * fused
            fused = fused / fused.sum()
        track.emotion_ema = fused
        t = timer.add("emotion", t)
        from_depth = depth_distance_m(depth, box, c.depth_min_valid_m, c.depth_max_valid_m)
        distance = from_depth if from_depth is not None else size_distance_m(focal_px, pose.scale_px_per_cm)
        return FaceResult(
            track_id=track.track_id, box_xyxy=box, score=presence, detector_score=track.detector_score,
            landmarks=landmarks, blendshapes=bs, head_pose_deg=pose.angles_deg, gaze=g, emotion=fused,
            emotion_image=image_probs, distance_m=distance,
            distance_source="depth" if from_depth is not None else "face_size",
            face_scale_px_per_cm=pose.scale_px_per_cm, attending=attending,
            partial=_is_partial(box, width, height, c.face_edge_margin_frac))

    def _detector_face(self, box: np.ndarray, keypoints: np.ndarray, score: float, depth: np.ndarray | None,
                       focal_px: float, width: int, height: int) -> FaceResult:
        c = self.config
        from_depth = depth_distance_m(depth, box, c.depth_min_valid_m, c.depth_max_valid_m)
        distance = from_depth if from_depth is not None else size_distance_m(
            focal_px, box_width_px=float(box[2] - box[0]), face_box_width_m=c.face_box_width_m)
        yaw = yaw_from_detection(keypoints)
        return FaceResult(track_id=self._new_id(), box_xyxy=box.copy(), score=score, detector_score=score,
                          distance_m=distance, distance_source="depth" if from_depth is not None else "face_size",
                          attending=attention(yaw, 0.0, 0.5, c.attention_max_yaw_deg, c.attention_max_pitch_deg),
                          partial=_is_partial(box, width, height, c.face_edge_margin_frac))

    # ---- hands

    def _hands(self, image: np.ndarray, frame_index: int, pts_ns: int, refine: bool,
               timer: _Timer) -> list[HandResult]:
        c = self.config
        t = time.perf_counter_ns()
        # Palm detection is staggered half an interval from face detection so the two never share a frame.
        phase = (frame_index + c.hand_detect_interval_frames // 2) % c.hand_detect_interval_frames
        due = len(self._hand_tracks) < c.max_hands and (self._force_hand_detect or phase == 0)
        if due:
            self._force_hand_detect = False
            palms = self.palm_detector.detect(image)
            t = timer.add("palm_detect", t)
            for i in range(len(palms)):
                if len(self._hand_tracks) >= c.max_hands:
                    break
                rect = hand_rect_from_palm(palms.boxes[i], palms.keypoints[i], c.hand_roi_scale)
                box = rect.bounding_box()
                if self._hand_tracks and box_iou(box, np.stack([h.box for h in self._hand_tracks])).max() > 0.3:
                    continue
                self._hand_tracks.append(_HandTrack(self._new_id(), rect, box, wave_detector(c)))

        results: list[HandResult] = []
        kept: list[_HandTrack] = []
        for track in self._hand_tracks:
            landmarks, presence, right_mirrored = self.hand_landmarker.run(image, track.rect)
            if refine and presence >= c.hand_min_presence:
                landmarks, presence, right_mirrored = self.hand_landmarker.run(image,
                                                                               hand_rect_from_landmarks(landmarks))
            if presence < c.hand_min_presence:
                self._force_hand_detect = True
                continue
            box = _landmark_box(landmarks)
            if any(box_iou(box, r.box_xyxy[None])[0] > 0.5 for r in results):
                continue  # two tracks on one hand
            extended = fingers_extended(landmarks, c.finger_extended_min_deg)
            gesture = static_gesture(landmarks, extended, c.thumbs_up_max_tilt_deg)
            hand_width = float(box[2] - box[0])
            waving = track.wave.update(pts_ns, float((box[0] + box[2]) / 2), hand_width,
                                       sum(extended.values()) >= 4)
            if waving:
                gesture = "wave"
            label, right_prob = handedness_label(right_mirrored, c.camera_mirrored)
            results.append(HandResult(track.track_id, box, presence, landmarks, label, right_prob, gesture,
                                      fingers_extended=extended))
            track.rect, track.box, track.last_gesture = hand_rect_from_landmarks(landmarks), box, gesture
            kept.append(track)
        self._hand_tracks = kept
        timer.add("hand_landmarks", t)
        return results
