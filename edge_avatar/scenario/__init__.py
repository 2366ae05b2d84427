"""Scripted visitors: what ``scenario://NAME`` plays as if it came from a camera and a microphone.

Why this package exists: the demo runs on machines with no camera or mic,
and tests need a visitor whose every word and step is known. A scenario is a
small YAML file (``format.py``) describing a real face photo that walks up,
talks (synthesized or real recorded speech), pauses while the avatar answers,
interrupts and leaves; ``render.py`` draws its camera frames, ``audio.py``
builds its microphone track, and ``sources.py`` plays both on the media clock
as a ``CameraSource`` and a ``MicrophoneSource``. ``Scenario.ground_truth()``
says when each utterance starts and ends and where the visitor is.

    scenario = load_scenario("demo")          # bundled: edge_avatar/scenario/data/demo.yaml
    scenario = load_scenario("site/visit.yaml")
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.scenario.audio import AudioTrack, UtteranceTruth, build_audio, resample
from edge_avatar.scenario.format import ScenarioError, ScenarioSpec, read_scenario_file

__all__ = [
    "BUNDLED_DIR", "GroundTruth", "PersonTruth", "Scenario", "ScenarioError", "ScenarioSpec", "UtteranceTruth",
    "bundled_scenarios", "load_scenario",
]

BUNDLED_DIR = Path(__file__).resolve().parent / "data"
URI_SCHEME = "scenario://"


@dataclass(frozen=True)
class PersonTruth:
    """Where a person is at ``t_s``, as the renderer placed them (camera coordinates, metres, degrees)."""

    t_s: float
    role: str                     # "visitor" or "bystander"
    x_m: float
    distance_m: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    face_box_px: tuple[float, float, float, float]   # (x0, y0, x1, y1) projected face box, not clipped
    focal_length_px: float
    width_px: int
    height_px: int
    mouth_open: float = 0.0       # 0 closed .. 1 a stressed vowel's full jaw drop (people with a `mouth`)

    @property
    def face_width_px(self) -> float:
        return self.face_box_px[2] - self.face_box_px[0]

    @property
    def face_in_frame(self) -> bool:
        """The whole face box is inside the image."""
        x0, y0, x1, y1 = self.face_box_px
        return x0 >= 0 and y0 >= 0 and x1 <= self.width_px and y1 <= self.height_px

    @property
    def face_visible(self) -> bool:
        """At least part of the face box is inside the image."""
        x0, y0, x1, y1 = self.face_box_px
        return x1 > 0 and y1 > 0 and x0 < self.width_px and y0 < self.height_px


@dataclass(frozen=True)
class GroundTruth:
    """What really happens in a scenario, for tests of perception, ASR and turn-taking."""

    name: str
    duration_s: float
    sample_rate_hz: int
    utterances: tuple[UtteranceTruth, ...]
    _scenario: Any = field(repr=False, compare=False, default=None)

    def utterance_at(self, t_s: float) -> UtteranceTruth | None:
        """The utterance being spoken at ``t_s`` (start inclusive, end exclusive), if any."""
        for u in self.utterances:
            if u.start_s <= t_s < u.end_s:
                return u
        return None

    @property
    def addressed(self) -> tuple[UtteranceTruth, ...]:
        """What was said to the avatar (the turns it should answer), in order."""
        return tuple(u for u in self.utterances if u.addressed)

    def visitor_at(self, t_s: float, width_px: int = 640, height_px: int = 480) -> PersonTruth | None:
        """The visitor's pose and projected face box at ``t_s`` for a camera of this size; None without one."""
        return self._scenario._person_truth(0, "visitor", t_s, width_px, height_px) \
            if self._scenario.spec.visitor is not None else None

    def bystanders_at(self, t_s: float, width_px: int = 640, height_px: int = 480) -> tuple[PersonTruth, ...]:
        first = 1 if self._scenario.spec.visitor is not None else 0
        return tuple(self._scenario._person_truth(first + i, "bystander", t_s, width_px, height_px)
                     for i in range(len(self._scenario.spec.bystanders)))


class Scenario:
    """A loaded scenario: its validated spec, its built microphone track and a frame renderer.

    Every method is a pure function of time, so two loads give identical
    frames and audio; a camera and a microphone may share one instance.
    """

    def __init__(self, spec: ScenarioSpec, track: AudioTrack):
        self.spec = spec
        self.track = track
        self._renderer = None
        self._video = None
        self._lock = threading.Lock()
        self._resampled: dict[int, np.ndarray] = {track.sample_rate_hz: track.samples}
        if spec.file is None:
            from edge_avatar.scenario.render import FrameRenderer

            self._renderer = FrameRenderer(spec, track.mouth_open)
            self.duration_s = float(spec.duration_s)
        else:
            from edge_avatar.scenario.video import VideoFileReader

            self._video = VideoFileReader(spec.file.video.path, spec.source)
            self.duration_s = float(spec.duration_s if spec.duration_s is not None
                                    else len(track.samples) / track.sample_rate_hz)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def source(self) -> str:
        """The YAML file this scenario came from."""
        return self.spec.source

    def __repr__(self) -> str:
        return f"Scenario({self.name!r}, {self.duration_s:.1f} s, {len(self.track.utterances)} utterances)"

    # ----------------------------------------------------------------- media

    def render_frame(self, t_s: float, width_px: int, height_px: int) -> np.ndarray:
        """The camera image at ``t_s``: (H, W, 3) uint8 RGB."""
        if self._renderer is not None:
            return self._renderer.render(t_s, width_px, height_px)
        with self._lock:
            return self._video.frame_at(t_s, width_px, height_px)

    def background(self, width_px: int, height_px: int) -> np.ndarray:
        """The scene with nobody in it (synthetic scenarios only), (H, W, 3) uint8 RGB, read-only."""
        if self._renderer is None:
            raise ValueError(f"scenario {self.name!r} plays a video file; it has no separate background")
        return self._renderer.background(width_px, height_px)

    def audio(self, sample_rate_hz: int | None = None) -> np.ndarray:
        """The whole microphone track, (N,) float32 read-only, at ``sample_rate_hz`` (default: the built rate)."""
        rate = sample_rate_hz or self.track.sample_rate_hz
        with self._lock:
            samples = self._resampled.get(rate)
            if samples is None:
                samples = resample(self.track.samples, self.track.sample_rate_hz, rate)
                samples.setflags(write=False)
                self._resampled[rate] = samples
            return samples

    def focal_length_px(self, width_px: int) -> float:
        """The simulated camera's focal length for an image ``width_px`` wide (pinhole model)."""
        return self.spec.camera.focal_length_px(width_px)

    # ----------------------------------------------------------------- truth

    def ground_truth(self) -> GroundTruth:
        return GroundTruth(name=self.name, duration_s=self.duration_s, sample_rate_hz=self.track.sample_rate_hz,
                           utterances=self.track.utterances, _scenario=self)

    def _person_truth(self, index: int, role: str, t_s: float, width_px: int, height_px: int) -> PersonTruth:
        if self._renderer is None:
            raise ValueError(f"scenario {self.name!r} plays a video file: no person ground truth")
        pose = self._renderer.pose(index, t_s)
        return PersonTruth(
            t_s=t_s, role=role, x_m=pose.x_m, distance_m=pose.distance_m, yaw_deg=pose.yaw_deg,
            pitch_deg=pose.pitch_deg, roll_deg=pose.roll_deg,
            face_box_px=self._renderer.face_box(index, t_s, width_px, height_px),
            focal_length_px=self.focal_length_px(width_px), width_px=width_px, height_px=height_px,
            mouth_open=self._renderer.mouth_open(index, t_s))


def bundled_scenarios() -> list[str]:
    """Names that ``load_scenario`` finds without a path."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml"))


def scenario_path(ref: str) -> Path:
    """The YAML file a reference names: a bundled name, ``scenario://NAME`` or a path."""
    if ref.startswith(URI_SCHEME):
        ref = ref[len(URI_SCHEME):]
    if not ref:
        raise ScenarioError("scenario", "", f"empty scenario reference; bundled: {', '.join(bundled_scenarios())}")
    looks_like_path = "/" in ref or ref.endswith((".yaml", ".yml")) or ref.startswith(".")
    if looks_like_path:
        return Path(ref).expanduser()
    path = BUNDLED_DIR / f"{ref}.yaml"
    if not path.is_file():
        raise ScenarioError(ref, "", f"no bundled scenario named {ref!r}; bundled: "
                                     f"{', '.join(bundled_scenarios()) or 'none'}; or give a path to a YAML file")
    return path


def load_scenario(ref: str, *, cache_dir: str | Path | None = None) -> Scenario:
    """Read, validate and build a scenario; the microphone track comes from the cache after the first load.

    ``ref`` is a bundled name (``"demo"``), ``"scenario://demo"`` or a path to a
    YAML file. Every problem raises ``ScenarioError`` naming the file, the key
    path and what was expected (a missing package names the pip command).
    """
    spec = read_scenario_file(scenario_path(ref))
    track = build_audio(spec, cache_dir)
    if len(track.samples) == 0:
        raise ScenarioError(spec.source, "", "the scenario has no audio samples")
    return Scenario(spec, track)
