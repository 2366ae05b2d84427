"""The interface every video output implements (window, MP4 file, null).

A sink is given each rendered frame with its pts on the media clock and,
through an audio tap on the speaker, every block of audio that was played;
``close()`` flushes and finalises (an MP4 is muxed and playable after it,
also after SIGTERM).
"""

from __future__ import annotations

import abc

import numpy as np

from edge_avatar.frames import RenderedFrame


class OutputUnavailable(RuntimeError):
    """An output could not be opened (a missing ffmpeg, no display). The message says how to fix it."""


class OutputSink(abc.ABC):
    uri: str

    @abc.abstractmethod
    def present(self, frame: RenderedFrame) -> None:
        """Show or record one frame at ``frame.pts_ns``. Frames arrive once per tick, in pts order."""

    def audio_tap(self, samples: np.ndarray, first_sample: int) -> None:
        """Receives every block the speaker played (registered with AudioOutput.add_tap)."""

    @abc.abstractmethod
    def close(self) -> dict:
        """Flush and finalise; returns facts for the report (path, frames written, audio seconds)."""
