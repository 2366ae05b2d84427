"""The persona: who the avatar is, how it sounds and how much it moves -- one file, strictly checked.

Why this module exists: a visitor should meet the same character every time,
across visits and restarts, so everything that defines it lives in one YAML
file that is validated at start-up (an unknown field is refused, not
ignored: a typo such as ``expresiveness`` must not silently reset the
character to defaults). The dialogue uses the name, greeting style and
formality; speech uses the voice and speaking rate; the planner receives
``persona_vector()``, a fixed numeric layout.

Format (examples/hospital-reception/persona.yaml)::

    name: Ava
    role: the reception assistant of Riverside General Hospital
    tts_engine: espeak            # espeak | piper
    voice: en-us+f3               # engine-specific voice name
    speaking_rate_wpm: 160
    greeting_style: warm          # warm | brief | formal
    greeting: "Hello, I'm {name}. How can I help you today?"   # optional
    farewell: "Take care, goodbye."                             # optional
    expressiveness: {smile: 0.6, nod: 0.5, motion: 0.4}        # each 0..1
    formality: 0.5                # 0 casual .. 1 formal
    language: en
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edge_avatar.errors import ConfigError

GREETING_STYLES = ("warm", "brief", "formal")
TTS_ENGINES = ("espeak", "piper")
SUPPORTED_LANGUAGES = ("en",)
# persona_vector() layout, version 1 (the planner's input; append only, bump the version on change).
PERSONA_VECTOR_VERSION = 1
PERSONA_VECTOR_FIELDS = ("speaking_rate_norm", "smile", "nod", "motion", "formality",
                         "style_warm", "style_brief", "style_formal")
SPEAKING_RATE_RANGE_WPM = (80, 300)


class PersonaError(ConfigError):
    """A persona file problem: names the file, the field and what was expected."""


@dataclass(frozen=True)
class Expressiveness:
    smile: float = 0.5   # how readily it smiles, 0..1
    nod: float = 0.5     # how often and how deeply it nods
    motion: float = 0.5  # overall head and body motion


@dataclass(frozen=True)
class Persona:
    name: str = "Alex"
    role: str = "the information assistant here"
    tts_engine: str = "espeak"
    voice: str = "en-us"
    speaking_rate_wpm: int = 160
    greeting_style: str = "warm"
    greeting: str = ""
    farewell: str = ""
    expressiveness: Expressiveness = field(default_factory=Expressiveness)
    formality: float = 0.5
    language: str = "en"
    source: str = "<built-in default persona>"

    def greeting_text(self, site: str = "") -> str:
        if self.greeting:
            return self.greeting.format(name=self.name, site=site or "here")
        if self.greeting_style == "brief":
            return f"Hi, I'm {self.name}. How can I help?"
        if self.greeting_style == "formal":
            return f"Good day. I am {self.name}, {self.role}. How may I assist you?"
        return f"Hello! I'm {self.name}, {self.role}. How can I help you today?"

    def farewell_text(self) -> str:
        if self.farewell:
            return self.farewell.format(name=self.name)
        if self.greeting_style == "formal":
            return "Thank you for visiting. Goodbye."
        if self.greeting_style == "brief":
            return "Bye, take care."
        return "Take care, and I hope everything goes well. Goodbye!"

    def persona_vector(self) -> np.ndarray:
        """(8,) float32 in ``PERSONA_VECTOR_FIELDS`` order, all in [0, 1]."""
        lo, hi = SPEAKING_RATE_RANGE_WPM
        rate = (self.speaking_rate_wpm - lo) / (hi - lo)
        e = self.expressiveness
        style = [1.0 if self.greeting_style == s else 0.0 for s in GREETING_STYLES]
        return np.array([rate, e.smile, e.nod, e.motion, self.formality, *style], dtype=np.float32)

    def fingerprint(self) -> str:
        """A short hash of everything that defines the character (for reports: same persona, same hash)."""
        data = {k: v for k, v in asdict(self).items() if k != "source"}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


_FIELDS = {"name", "role", "tts_engine", "voice", "speaking_rate_wpm", "greeting_style", "greeting", "farewell",
           "expressiveness", "formality", "language"}
_EXPRESSIVENESS_FIELDS = ("smile", "nod", "motion")


def default_persona() -> Persona:
    return Persona()


def load_persona(path: str | Path) -> Persona:
    """Read and validate a persona file; ``PersonaError`` names the file and field on any problem."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise PersonaError(source, "", "persona file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise PersonaError(source, "", f"{where}not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PersonaError(source, "", f"cannot read: {exc}") from None
    return persona_from_dict(data, source)


def persona_from_dict(data: Any, source: str = "<persona>") -> Persona:
    if not isinstance(data, dict) or not data:
        raise PersonaError(source, "", "expected a mapping of persona fields (name, voice, ...)")
    unknown = sorted(set(map(str, data)) - _FIELDS)
    if unknown:
        raise PersonaError(source, unknown[0], f"unknown field; expected one of: {', '.join(sorted(_FIELDS))}")
    kwargs: dict[str, Any] = {"source": source}
    for key in ("name", "role", "voice", "greeting", "farewell"):
        if key in data:
            value = data[key]
            if not isinstance(value, str) or (key in ("name", "voice") and not value.strip()):
                raise PersonaError(source, key, f"got {value!r}; expected a non-empty string")
            kwargs[key] = value.strip()
    for key, allowed in (("tts_engine", TTS_ENGINES), ("greeting_style", GREETING_STYLES),
                         ("language", SUPPORTED_LANGUAGES)):
        if key in data:
            if data[key] not in allowed:
                raise PersonaError(source, key, f"got {data[key]!r}; expected one of: {', '.join(allowed)}")
            kwargs[key] = data[key]
    if "speaking_rate_wpm" in data:
        rate = data["speaking_rate_wpm"]
        lo, hi = SPEAKING_RATE_RANGE_WPM
        if isinstance(rate, bool) or not isinstance(rate, int) or not lo <= rate <= hi:
            raise PersonaError(source, "speaking_rate_wpm", f"got {rate!r}; expected an integer in [{lo}, {hi}]")
        kwargs["speaking_rate_wpm"] = rate
    if "formality" in data:
        kwargs["formality"] = _unit(data["formality"], "formality", source)
    if "expressiveness" in data:
        raw = data["expressiveness"]
        if not isinstance(raw, dict):
            raise PersonaError(source, "expressiveness", f"got {raw!r}; expected a mapping with smile, nod, motion")
        unknown = sorted(set(map(str, raw)) - set(_EXPRESSIVENESS_FIELDS))
        if unknown:
            raise PersonaError(source, f"expressiveness.{unknown[0]}",
                               f"unknown field; expected one of: {', '.join(_EXPRESSIVENESS_FIELDS)}")
        kwargs["expressiveness"] = Expressiveness(
            **{k: _unit(raw[k], f"expressiveness.{k}", source) for k in _EXPRESSIVENESS_FIELDS if k in raw})
    for key in ("greeting", "farewell"):
        if kwargs.get(key):
            try:
                kwargs[key].format(name="x", site="x")
            except (KeyError, IndexError, ValueError) as exc:
                raise PersonaError(source, key, f"bad placeholder {exc}; only {{name}} and {{site}} may be used") \
                    from None
    return Persona(**kwargs)


def _unit(value: Any, key: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise PersonaError(source, key, f"got {value!r}; expected a number in [0, 1]")
    return float(value)
