"""The two source interfaces every camera and microphone implements.

Why: the same loop must run from a RealSense in a kiosk, a webcam on a
laptop, a file in CI and a scripted scenario in the demo. Sources are opened
by URI and answer every read with a ``CaptureStatus`` (OK / TIMEOUT / EOS /
ERROR) instead of raising, so a lost device degrades the loop rather than
crashing it; a device that cannot be opened at all raises ``SourceUnavailable``
naming what was tried and how to fix it.
"""

from __future__ import annotations

import abc

from edge_avatar.frames import AudioChunk, CaptureStatus, VideoFrame


class SourceUnavailable(RuntimeError):
    """A source could not be opened. The message names the URI, what was tried and the fix."""


class CameraSource(abc.ABC):
    """A camera. Capture runs on its own thread; the loop takes the latest frame (latest wins)."""

    uri: str

    @abc.abstractmethod
    def start(self) -> None:
        """Open the device and begin capturing; raises SourceUnavailable if it cannot be opened."""

    @abc.abstractmethod
    def read_latest(self) -> tuple[CaptureStatus, VideoFrame | None]:
        """The newest frame not yet returned (OK), or TIMEOUT / EOS / ERROR with None. Never blocks long."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def stats(self) -> dict:
        """Counters for the report: frames captured, frames replaced before being read, reconnects."""
        return {}


class MicrophoneSource(abc.ABC):
    """A microphone delivering mono float32 chunks with sample-count timestamps."""

    uri: str
    sample_rate_hz: int

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def read(self, timeout_ms: int) -> tuple[CaptureStatus, AudioChunk | None]:
        """The next chunk in order (OK), or TIMEOUT / EOS / ERROR with None."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def stats(self) -> dict:
        """Counters for the report: chunks captured, chunks dropped on overflow (never silently), reconnects."""
        return {}
