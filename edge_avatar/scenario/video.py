"""Frames of an existing video clip for the file form of a scenario (``file: {video: ...}``).

Why this module exists: a recorded visit (a real person at a real kiosk) is
the best test material there is; the file form plays it through the same
``ScenarioCamera`` as a synthetic scenario. OpenCV decodes it (FFmpeg
backend); frames are read forward and the decoder is re-opened only when
asked for an earlier time, which is how a camera asks.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edge_avatar.scenario.format import ScenarioError


class VideoFileReader:
    """The frame showing at time ``t_s`` of a video file, resized to the camera size, RGB."""

    def __init__(self, path: Path, source: str = ""):
        try:
            import cv2
        except ImportError:  # pragma: no cover - the venv always has it
            raise ScenarioError(source, "file.video", "playing a video needs OpenCV; install it with: "
                                                      "pip install opencv-python-headless") from None
        self._cv2 = cv2
        self.path = path
        self._source = source
        self._capture = None
        self._next_index = 0
        self._last: np.ndarray | None = None
        self._last_index = -1
        self._open()
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not math.isfinite(fps) or fps <= 0:
            raise ScenarioError(source, "file.video", f"{path}: cannot tell the frame rate")
        self.fps = fps
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def _open(self) -> None:
        if self._capture is not None:
            self._capture.release()
        self._capture = self._cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            raise ScenarioError(self._source, "file.video", f"OpenCV cannot open {self.path} as a video")
        self._next_index = 0

    def frame_at(self, t_s: float, width_px: int, height_px: int) -> np.ndarray:
        index = max(0, int(math.floor(t_s * self.fps + 1e-9)))
        if index < self._last_index or (self._last is None and index < self._next_index):
            self._open()
        while self._next_index <= index:
            ok, bgr = self._capture.read()
            if not ok:
                break  # past the end: keep showing the last frame
            self._last, self._last_index = bgr, self._next_index
            self._next_index += 1
        if self._last is None:
            return np.zeros((height_px, width_px, 3), dtype=np.uint8)
        frame = self._last
        if frame.shape[1] != width_px or frame.shape[0] != height_px:
            frame = self._cv2.resize(frame, (width_px, height_px), interpolation=self._cv2.INTER_AREA)
        return self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
