"""Word-timed captions under the avatar, for visitors who cannot hear well (``display.show_captions``).

Why this module exists: in a hospital lobby some visitors are hard of
hearing and the room is loud. The avatar already knows, for every sentence
on the speaker, when each word is heard (the TTS timeline the planner lip
syncs to, on the media clock), so the caption can follow the voice word by
word: words already spoken in white, the rest of the sentence in grey, held
for ``HOLD_AFTER_MS`` after the sentence ends. A sentence that barge-in cut
off disappears with it (the planner's timeline is truncated then).

``CaptionedSink`` wraps any output (window, MP4): it letterboxes the frame
to the display size itself, so the text is drawn at display resolution
(sharp, not scaled up from the renderer's 256 px) and the wrapped sink's own
letterbox becomes a no-op. Drawing uses OpenCV's Hershey font (OpenCV is in
the ``vision`` extra every device installs); without OpenCV captions are
switched off with one warning, never a crash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edge_avatar.frames import RenderedFrame
from edge_avatar.outputs.base import OutputSink

log = logging.getLogger(__name__)

HOLD_AFTER_MS = 1200.0          # a caption stays this long after its sentence's last word
BAND_HEIGHT_FRAC = 0.2          # the caption band: the bottom fifth of the display
SPOKEN_RGB = (255, 255, 255)
PENDING_RGB = (150, 156, 168)
BAND_RGB = (12, 14, 20)
BAND_ALPHA = 0.72


@dataclass(frozen=True)
class Caption:
    """What to show at one pts: the sentence's words and how many of them have been heard."""

    words: tuple[str, ...]
    spoken: int

    @property
    def text(self) -> str:
        return " ".join(self.words)


def caption_at(tracks: list[Any], pts_ns: int) -> Caption | None:
    """The caption for ``pts_ns`` from the planner's speech tracks (``planner.inputs.SpeechTrack``)."""
    current = None
    for track in tracks:
        if track.start_ns > pts_ns or not track.words:
            continue
        t_ms = (pts_ns - track.start_ns) / 1e6
        last_end_ms = max(end for _, _, end in track.words)
        if t_ms <= last_end_ms + HOLD_AFTER_MS and (current is None or track.start_ns >= current[0].start_ns):
            current = (track, t_ms)
    if current is None:
        return None
    track, t_ms = current
    words = tuple(word for word, _, _ in track.words)
    spoken = sum(1 for _, start_ms, _ in track.words if start_ms <= t_ms)
    return Caption(words, spoken)


def planner_captions(inputs: Any) -> Callable[[int], Caption | None]:
    """A caption source reading the live ``PlannerInputs`` (the conversation thread edits its timeline)."""
    def source(pts_ns: int) -> Caption | None:
        return caption_at(inputs.speech_tracks(), pts_ns)

    return source


class CaptionedSink(OutputSink):
    """Letterbox to the display size, draw the caption band, hand the frame to ``inner``."""

    def __init__(self, inner: OutputSink, source: Callable[[int], Caption | None], width_px: int, height_px: int,
                 background_rgb: tuple[int, int, int]):
        from edge_avatar.outputs.video import Letterbox, _cv2  # noqa: PLC0415

        self.inner = inner
        self.uri = inner.uri
        self.source = source
        self._letterbox = Letterbox(width_px, height_px, background_rgb)
        self._cv2 = _cv2()
        if self._cv2 is None:
            log.warning("captions are on but OpenCV is not installed (pip install opencv-python-headless); "
                        "showing the avatar without captions")
        self.width_px, self.height_px = width_px, height_px
        self.captions_drawn = 0
        self._layout_cache: dict[tuple[str, ...], list[list[tuple[int, str]]]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)   # quit_requested, frames_dropped, ... of the wrapped sink

    def present(self, frame: RenderedFrame) -> None:
        caption = self.source(frame.pts_ns) if self._cv2 is not None else None
        if caption is None:
            self.inner.present(frame)
            return
        image = self._letterbox(frame.image)
        if image is frame.image or not image.flags.writeable:
            image = image.copy()
        self.draw(image, caption)
        self.captions_drawn += 1
        self.inner.present(RenderedFrame(frame.pts_ns, frame.seq, image))

    def audio_tap(self, samples: np.ndarray, first_sample: int) -> None:
        self.inner.audio_tap(samples, first_sample)

    def close(self) -> dict:
        info = self.inner.close() or {}
        return {**info, "captions_drawn": self.captions_drawn}

    # ------------------------------------------------------------------ drawing

    def _scale(self) -> float:
        return max(0.4, self.height_px / 720.0)

    def _lines(self, words: tuple[str, ...]) -> list[list[tuple[int, str]]]:
        """Words (with their index) wrapped to the display width; at most the last two lines are shown."""
        cached = self._layout_cache.get(words)
        if cached is not None:
            return cached
        cv2, scale = self._cv2, self._scale()
        max_w = int(self.width_px * 0.92)
        lines: list[list[tuple[int, str]]] = [[]]
        for i, word in enumerate(words):
            trial = " ".join(w for _, w in lines[-1] + [(i, word)])
            width = cv2.getTextSize(trial, cv2.FONT_HERSHEY_DUPLEX, scale, 1)[0][0]
            if lines[-1] and width > max_w:
                lines.append([])
            lines[-1].append((i, word))
        if len(self._layout_cache) > 64:
            self._layout_cache.clear()
        self._layout_cache[words] = lines
        return lines

    def draw(self, image: np.ndarray, caption: Caption) -> None:
        cv2, scale = self._cv2, self._scale()
        lines = self._lines(caption.words)
        # Show the line being spoken and the one before it (long sentences scroll by line).
        current = next((n for n, line in enumerate(lines) if line and line[-1][0] >= caption.spoken - 1), 0)
        shown = lines[max(0, current - 1):current + 1]
        band_h = int(self.height_px * BAND_HEIGHT_FRAC)
        y0 = self.height_px - band_h
        region = image[y0:].astype(np.float32)
        region = region * (1 - BAND_ALPHA) + np.asarray(BAND_RGB, np.float32) * BAND_ALPHA
        image[y0:] = region.astype(np.uint8)
        line_h = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_DUPLEX, scale, 1)[0][1] * 1.9
        top = y0 + (band_h - line_h * len(shown)) / 2 + line_h * 0.75
        thickness = max(1, int(round(scale * 1.5)))
        for n, line in enumerate(shown):
            text = " ".join(w for _, w in line)
            width = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, thickness)[0][0]
            x = (self.width_px - width) // 2
            y = int(top + n * line_h)
            for index, word in line:
                colour = SPOKEN_RGB if index < caption.spoken else PENDING_RGB
                cv2.putText(image, word, (x, y), cv2.FONT_HERSHEY_DUPLEX, scale, colour, thickness, cv2.LINE_AA)
                x += cv2.getTextSize(word + " ", cv2.FONT_HERSHEY_DUPLEX, scale, thickness)[0][0]
