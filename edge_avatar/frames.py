"""The small dataclasses that flow through the loop.

Everything that moves between stages carries a presentation timestamp on the
one media clock (``pts_ns``, derived from sample or frame counts, never from
wall time) and a sequence number, so a late or dropped item can be seen and
counted rather than guessed at.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class CaptureStatus(enum.Enum):
    """Result of asking a source for its next item (after jetson-utils' videoSource)."""

    OK = "ok"            # an item was returned
    TIMEOUT = "timeout"  # nothing new within the timeout; the source is still alive
    EOS = "eos"          # end of stream (a file or scenario ran out)
    ERROR = "error"      # the device failed; the source will try to reconnect


@dataclass(frozen=True)
class VideoFrame:
    """One camera frame. ``image`` is (H, W, 3) uint8 RGB; ``depth_m`` is (H, W) float32 metres aligned to it."""

    pts_ns: int
    seq: int
    image: np.ndarray
    depth_m: np.ndarray | None = None
    source: str = ""


@dataclass(frozen=True)
class AudioChunk:
    """A block of mono audio. ``samples`` is (N,) float32 in [-1, 1]; pts is the first sample's time."""

    pts_ns: int
    seq: int
    samples: np.ndarray
    sample_rate_hz: int

    @property
    def duration_ns(self) -> int:
        return len(self.samples) * 1_000_000_000 // self.sample_rate_hz


@dataclass(frozen=True)
class RenderedFrame:
    """An avatar image ready to present at ``pts_ns``. ``image`` is (H, W, 3) uint8 RGB."""

    pts_ns: int
    seq: int
    image: np.ndarray
    repeated: bool = False  # True when a late tick re-presented the previous image


@dataclass
class ControlMessage:
    """Control jumps ahead of media in every queue (barge-in must overtake queued audio)."""

    kind: str  # "interrupt", "stop", ...
    payload: dict = field(default_factory=dict)


def samples_to_ns(sample_count: int, sample_rate_hz: int) -> int:
    """Exact integer conversion of a sample count to nanoseconds (floor)."""
    return sample_count * 1_000_000_000 // sample_rate_hz


def ns_to_samples(time_ns: int, sample_rate_hz: int) -> int:
    """Exact integer conversion of nanoseconds to a sample count (floor)."""
    return time_ns * sample_rate_hz // 1_000_000_000
