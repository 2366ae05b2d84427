"""Lip sync measured from the finished video: how far the mouth in the pixels trails (or leads) the voice.

Why this module exists: a lip-sync figure computed from the motion data would
only show that the planner asked for the right shapes; what the visitor sees
is the rendered mouth on screen next to the sound out of the speaker. So the
measurement works on the output file alone, as an outside reviewer would:

1. ffmpeg decodes the MP4's video (RGB at its own size) and its audio (mono,
   16 kHz) -- the very streams a viewer gets after encoding and muxing;
2. the face landmark model the product ships for perception (MediaPipe face
   mesh, ``edge_avatar.perception``) finds the avatar's face in every frame
   and gives the inner-lip gap (landmarks 13 and 14) divided by the face
   height (10 to 152): the mouth opening, from pixels, in face units;
3. the speech envelope is the RMS of the audio in a one-frame window centred
   on each frame's time shifted by a lag; for lags from -``max_lag_ms`` to
   +``max_lag_ms`` (``lag_step_ms`` apart, so the answer is finer than a
   frame) the Pearson correlation of opening and envelope is taken over the
   frames where speech is near; the best lag is the offset.

Sign: a positive ``av_offset_ms`` means the mouth moves *after* the sound
that goes with it (video late); negative means it moves first. Speech
physiology puts the lips a few tens of ms ahead of the sound they shape, so a
small negative offset is natural; the product target is |offset| <= 40 ms.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

AUDIO_RATE_HZ = 16_000
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14     # MediaPipe face mesh indices
FOREHEAD_TOP, CHIN_BOTTOM = 10, 152
SPEECH_NEAR_S = 0.25                          # frames this close to audible speech take part
SPEECH_FLOOR_DBFS = -45.0                     # quieter than this (relative to full scale) is silence


class LipSyncError(RuntimeError):
    """The file cannot be measured (no video, no audio, no face, no speech); the message says which."""


def probe_stream(path: Path) -> dict[str, Any]:
    """Video size and rate, and whether there is audio (``ffprobe``)."""
    cmd = ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width,height,avg_frame_rate",
           "-of", "json", str(path)]
    try:
        info = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout)
    except FileNotFoundError as exc:
        raise LipSyncError("ffprobe is not installed (apt-get install ffmpeg)") from exc
    except subprocess.CalledProcessError as exc:
        raise LipSyncError(f"{path}: ffprobe could not read it: {exc.stderr.strip()[-200:]}") from exc
    video = next((s for s in info.get("streams", []) if s.get("codec_type") == "video"), None)
    if video is None:
        raise LipSyncError(f"{path}: no video stream")
    num, _, den = str(video.get("avg_frame_rate", "0/1")).partition("/")
    fps = float(num) / float(den or 1) if float(den or 1) else 0.0
    has_audio = any(s.get("codec_type") == "audio" for s in info["streams"])
    return {"width": int(video["width"]), "height": int(video["height"]), "fps": fps, "has_audio": has_audio}


def decode_audio(path: Path) -> np.ndarray:
    """The file's audio as mono float32 at ``AUDIO_RATE_HZ``."""
    cmd = ["ffmpeg", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(AUDIO_RATE_HZ),
           "-f", "f32le", "-"]
    result = subprocess.run(cmd, capture_output=True, check=False, timeout=300)
    if result.returncode != 0:
        raise LipSyncError(f"{path}: ffmpeg could not decode the audio: {result.stderr.decode()[-200:]}")
    return np.frombuffer(result.stdout, dtype=np.float32)


def iter_video_frames(path: Path, width: int, height: int):
    """Yield (index, (H, W, 3) uint8 RGB) for every frame, streamed (never the whole video in memory)."""
    cmd = ["ffmpeg", "-v", "error", "-i", str(path), "-an", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = width * height * 3
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        index = 0
        while True:
            data = proc.stdout.read(frame_bytes)
            if len(data) < frame_bytes:
                break
            yield index, np.frombuffer(data, np.uint8).reshape(height, width, 3)
            index += 1


def mouth_opening_from_landmarks(landmarks: np.ndarray) -> float:
    """Inner-lip gap over face height (both in image pixels): 0.004 closed, about 0.12 wide open."""
    gap = float(np.linalg.norm(landmarks[LOWER_INNER_LIP, :2] - landmarks[UPPER_INNER_LIP, :2]))
    face = float(np.linalg.norm(landmarks[CHIN_BOTTOM, :2] - landmarks[FOREHEAD_TOP, :2]))
    return gap / face if face > 1.0 else float("nan")


def cumulative_power(audio: np.ndarray) -> np.ndarray:
    """(N + 1,) running sum of squared samples: any window's energy is two lookups."""
    return np.concatenate([[0.0], np.cumsum(np.asarray(audio, np.float64) ** 2)])


def envelope_at(audio: np.ndarray, times_s: np.ndarray, window_s: float,
                power: np.ndarray | None = None) -> np.ndarray:
    """RMS of ``audio`` in a ``window_s`` window centred on each time (zero outside the recording).

    ``power``: ``cumulative_power(audio)`` when the caller asks many times about the same audio.
    """
    power = cumulative_power(audio) if power is None else power
    half = window_s / 2.0
    a = np.clip(np.round((times_s - half) * AUDIO_RATE_HZ).astype(np.int64), 0, len(audio))
    b = np.clip(np.round((times_s + half) * AUDIO_RATE_HZ).astype(np.int64), 0, len(audio))
    n = np.maximum(b - a, 1)
    return np.sqrt((power[b] - power[a]) / n)


class MouthTrack:
    """Mouth opening per video frame (NaN where no face was found) and the file's audio."""

    def __init__(self, opening: np.ndarray, fps: float, audio: np.ndarray):
        self.opening = np.asarray(opening, dtype=np.float64)
        self.fps = float(fps)
        self.audio = np.asarray(audio, dtype=np.float32)
        self.times_s = np.arange(len(self.opening)) / self.fps
        self._power = cumulative_power(self.audio)       # every lag of every window reads it
        self._speech_mask: np.ndarray | None = None

    def envelope(self, times_s: np.ndarray) -> np.ndarray:
        """Audio RMS in a one-frame window centred on each time."""
        return envelope_at(self.audio, times_s, 1.0 / self.fps, self._power)

    @property
    def duration_s(self) -> float:
        return len(self.opening) / self.fps

    def speech_mask(self) -> np.ndarray:
        """Frames within ``SPEECH_NEAR_S`` of audible sound (computed once per track)."""
        if self._speech_mask is None:
            loud = self.envelope(self.times_s) > 10 ** (SPEECH_FLOOR_DBFS / 20.0)
            near = np.zeros(len(self.opening), bool)
            reach = int(round(SPEECH_NEAR_S * self.fps))
            for i in np.flatnonzero(loud):
                near[max(0, i - reach):i + reach + 1] = True
            self._speech_mask = near
        return self._speech_mask

    def best_offset(self, start_s: float = 0.0, end_s: float | None = None, max_lag_ms: float = 200.0,
                    lag_step_ms: float = 5.0) -> dict[str, Any]:
        """Correlate opening with the audio envelope at each lag over [start_s, end_s); the best lag wins."""
        end_s = self.duration_s if end_s is None else end_s
        window = (self.times_s >= start_s) & (self.times_s < end_s)
        use = window & np.isfinite(self.opening) & self.speech_mask()
        if use.sum() < 10:
            raise LipSyncError(f"only {int(use.sum())} frames with a face near speech between {start_s:.2f} s and "
                               f"{end_s:.2f} s; need at least 10")
        lags_ms = np.arange(-max_lag_ms, max_lag_ms + lag_step_ms / 2, lag_step_ms)
        x = self.opening[use]
        correlations = np.zeros(len(lags_ms))
        for i, lag_ms in enumerate(lags_ms):
            env = self.envelope(self.times_s[use] - lag_ms / 1000.0)
            if x.std() > 0 and env.std() > 0:
                correlations[i] = float(np.corrcoef(x, env)[0, 1])
        best = int(np.argmax(correlations))
        return {"av_offset_ms": float(lags_ms[best]), "correlation": round(float(correlations[best]), 4),
                "correlation_at_0_ms": round(float(correlations[np.argmin(np.abs(lags_ms))]), 4),
                "frames_used": int(use.sum()), "lags_ms": lags_ms.tolist(),
                "correlations": [round(float(c), 4) for c in correlations]}


def analyse_mp4(path: str | Path, perception: Any = None,
                progress: Callable[[str], None] | None = None) -> MouthTrack:
    """Decode a finished MP4 and measure the avatar's mouth opening in every frame (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise LipSyncError(f"{path}: no such file")
    info = probe_stream(path)
    if not info["has_audio"]:
        raise LipSyncError(f"{path}: no audio stream to compare the mouth with")
    if info["fps"] <= 0:
        raise LipSyncError(f"{path}: the video has no frame rate")
    if perception is None:
        from edge_avatar.perception.pipeline import VisionPerception  # noqa: PLC0415

        perception = VisionPerception()
    from edge_avatar.frames import VideoFrame  # noqa: PLC0415

    perception.reset()
    openings: list[float] = []
    for index, image in iter_video_frames(path, info["width"], info["height"]):
        pts_ns = int(round(index * 1e9 / info["fps"]))
        result = perception.process(VideoFrame(pts_ns=pts_ns, seq=index, image=image, source=str(path)))
        face = result.active
        landmarks = getattr(face, "landmarks", None) if face is not None else None
        openings.append(mouth_opening_from_landmarks(landmarks) if landmarks is not None else float("nan"))
        if progress is not None and index % 300 == 0:
            progress(f"lip sync: frame {index} of {path.name}")
    opening = np.asarray(openings, dtype=np.float64)
    if not np.isfinite(opening).any():
        raise LipSyncError(f"{path}: the face landmark model found no face in any frame")
    return MouthTrack(opening, info["fps"], decode_audio(path))


def measure_turns(track: MouthTrack, turn_starts_s: list[float | None]) -> dict[str, Any]:
    """The offset over the whole file and per turn (from a turn's first audio to the next turn's).

    Returns ``{"overall": {...}, "turns": [offset ms or None per turn], "summary": {p50, p95, max of |offset|}}``.
    """
    overall = track.best_offset()
    starts = [s for s in turn_starts_s if s is not None]
    per_turn: list[float | None] = []
    details: list[dict[str, Any] | None] = []
    for start in turn_starts_s:
        if start is None:
            per_turn.append(None)
            details.append(None)
            continue
        later = [s for s in starts if s > start]
        end = min(later) if later else track.duration_s
        try:
            found = track.best_offset(start, end)
        except LipSyncError as exc:
            log.info("lip sync: turn at %.2f s not measured (%s)", start, exc)
            per_turn.append(None)
            details.append(None)
            continue
        per_turn.append(found["av_offset_ms"])
        details.append({k: found[k] for k in ("av_offset_ms", "correlation", "frames_used")})
    magnitudes = np.abs([v for v in per_turn if v is not None])
    summary: dict[str, Any] = {"count": int(magnitudes.size)}
    if magnitudes.size:
        summary.update({"p50": float(np.percentile(magnitudes, 50)), "p95": float(np.percentile(magnitudes, 95)),
                        "max": float(magnitudes.max())})
    return {"overall": overall, "turns": per_turn, "turn_details": details, "abs_summary_ms": summary,
            "fps": track.fps, "frames": len(track.opening),
            "frames_with_face": int(np.isfinite(track.opening).sum()),
            "method": "face-mesh inner-lip gap / face height vs audio RMS (edge_avatar.render.lipsync)"}


def measure_mp4(path: str | Path, perception: Any = None, max_lag_ms: float = 200.0, lag_step_ms: float = 5.0,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The lip-sync offset of a whole finished MP4."""
    track = analyse_mp4(path, perception, progress)
    result = track.best_offset(max_lag_ms=max_lag_ms, lag_step_ms=lag_step_ms)
    result.update({"frames": len(track.opening), "frames_with_face": int(np.isfinite(track.opening).sum()),
                   "fps": track.fps, "opening_p95": round(float(np.nanpercentile(track.opening, 95)), 4)})
    return result
