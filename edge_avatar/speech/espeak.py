"""espeak-ng through its C API (ctypes): speech plus timed phoneme and word events, in process, in milliseconds.

Why this module exists: lip sync needs to know *when* each phoneme is heard.
espeak-ng (Debian's libespeak-ng1, 1.51; GPL-3.0, used as a system library)
reports that only through its C API: with ``espeakINITIALIZE_PHONEME_EVENTS``
each synthesis callback carries PHONEME, WORD and SENTENCE events with their
``audio_position`` in ms (the command line's ``--pho`` prints nothing without
MBROLA). It synthesises ~1.7 s of speech in a few ms on one core, which makes
it the embedded default. ctypes, not a binding package: the API is small and
stable (speak_lib.h revision 12), and no binding on PyPI exposes the events.

Struct layouts (speak_lib.h, espeak-ng 1.51, API revision 12):

    typedef struct {
        espeak_EVENT_TYPE type;          // int enum
        unsigned int unique_identifier;
        int text_position;               // characters from the start of the text (1-based)
        int length;                      // word length in characters (WORD events)
        int audio_position;              // ms within the generated speech
        int sample;                      // internal
        void* user_data;
        union { int number; const char *name; char string[8]; } id;  // string: phoneme mnemonic
    } espeak_EVENT;
    int espeak_Initialize(espeak_AUDIO_OUTPUT output, int buflength, const char *path, int options);
    typedef int (t_espeak_callback)(short*, int, espeak_EVENT*);

espeak-ng is a process-wide singleton: one lock serialises every call.
Phoneme events carry no stress, so stress is read from
``espeak_TextToPhonemes`` (stress marks before syllables) and matched to the
event vowels in order.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import re
import threading

import numpy as np

from edge_avatar.speech.base import PAUSE, PhonemeEvent, SpeechSynthesizer, TTSError, TTSUnavailable, WordTiming

log = logging.getLogger(__name__)

# speak_lib.h constants
AUDIO_OUTPUT_SYNCHRONOUS = 2
espeakINITIALIZE_PHONEME_EVENTS = 0x0001
espeakCHARS_UTF8 = 1
POS_CHARACTER = 1
espeakRATE = 1
espeakEVENT_LIST_TERMINATED = 0
espeakEVENT_WORD = 1
espeakEVENT_SENTENCE = 2
espeakEVENT_END = 5
espeakEVENT_MSG_TERMINATED = 6
espeakEVENT_PHONEME = 7
espeakEVENT_SAMPLERATE = 8
EE_OK = 0

LIBRARY_NAMES = ("libespeak-ng.so.1", "libespeak-ng.so")
INSTALL_HINT = "sudo apt-get install libespeak-ng1 espeak-ng-data (Debian/Ubuntu, espeak-ng 1.51)"
_VOWEL_START = frozenset("aAeEiIoOuUV03@")   # espeak's English vowel mnemonics start with one of these
RATE_RANGE_WPM = (80, 450)


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.POINTER(_Event))


class _Library:
    """The one initialised libespeak-ng of this process."""

    _instance: _Library | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        lib = None
        errors = []
        for name in (*LIBRARY_NAMES, ctypes.util.find_library("espeak-ng")):
            if not name:
                continue
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError as exc:
                errors.append(str(exc))
        if lib is None:
            raise TTSUnavailable(f"espeak-ng: libespeak-ng.so.1 not found ({'; '.join(errors) or 'not installed'}); "
                                 f"install with: {INSTALL_HINT}")
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        self.lib = lib
        self.sample_rate_hz = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                                    espeakINITIALIZE_PHONEME_EVENTS)
        if self.sample_rate_hz <= 0:
            raise TTSUnavailable(f"espeak-ng: espeak_Initialize failed ({self.sample_rate_hz}); is espeak-ng-data "
                                 f"installed? ({INSTALL_HINT})")
        self.version = (lib.espeak_Info(None) or b"?").decode("ascii", "replace")
        self.lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, int, bytes]] = []
        self._callback = _SYNTH_CALLBACK(self._on_synth)  # keep a reference: C holds only the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._voice = b""
        self._rate = -1

    @classmethod
    def get(cls) -> _Library:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_synth(self, wav, n_samples, events) -> int:
        if n_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).astype(np.float32) / 32768.0)
        i = 0
        while events[i].type != espeakEVENT_LIST_TERMINATED:
            e = events[i]
            name = bytes(e.id.string) if e.type == espeakEVENT_PHONEME else b""
            self._events.append((e.type, e.text_position, e.length, e.audio_position, name))
            i += 1
        return 0  # continue synthesis

    def synthesize(self, text: str, voice: str, rate_wpm: int):
        """(audio float32, events [(type, text_position, length, audio_position_ms, phoneme bytes)], stresses)."""
        data = text.encode("utf-8")
        with self.lock:
            if voice.encode() != self._voice:
                if self.lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
                    raise TTSError(f"espeak-ng: unknown voice {voice!r} (list them with: espeak-ng --voices)")
                self._voice = voice.encode()
            if rate_wpm != self._rate:
                self.lib.espeak_SetParameter(espeakRATE, int(rate_wpm), 0)
                self._rate = rate_wpm
            self._chunks, self._events = [], []
            status = self.lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, espeakCHARS_UTF8, None, None)
            if status != EE_OK:
                raise TTSError(f"espeak-ng: espeak_Synth failed with status {status}")
            self.lib.espeak_Synchronize()
            chunks, events = self._chunks, self._events
            self._chunks, self._events = [], []
            stresses = self._vowel_stresses(data)
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return audio, events, stresses

    def _vowel_stresses(self, data: bytes) -> list[int]:
        """Stress of each vowel in order (2 primary, 1 secondary, 0 none), from espeak_TextToPhonemes."""
        buffer = ctypes.create_string_buffer(data)
        pointer = ctypes.c_void_p(ctypes.addressof(buffer))
        separator_mode = ord("|") << 8  # phoneme names separated by "|", stress marks kept
        stresses: list[int] = []
        for _ in range(1000):  # clauses; bounded in case the library misbehaves
            if not pointer.value:
                break
            result = self.lib.espeak_TextToPhonemes(ctypes.byref(pointer), espeakCHARS_UTF8, separator_mode)
            if not result:
                break
            for word in result.decode("utf-8", "replace").split():
                for token in word.split("|"):
                    stress = 2 if "'" in token else 1 if "," in token else 0
                    token = token.replace("'", "").replace(",", "")
                    if token[:1] in _VOWEL_START:
                        stresses.append(stress)
        return stresses


class EspeakTTS(SpeechSynthesizer):
    """espeak-ng voice; phoneme symbols are espeak's ASCII mnemonics (Kirshenbaum-like), pauses are ``_``."""

    name = "espeak"

    def __init__(self, sample_rate_hz: int = 22050, voice: str = "en-us", speaking_rate_wpm: int = 160):
        super().__init__(sample_rate_hz, speaking_rate_wpm)
        lo, hi = RATE_RANGE_WPM
        if not lo <= speaking_rate_wpm <= hi:
            raise ValueError(f"espeak-ng speaking rate {speaking_rate_wpm} wpm out of range [{lo}, {hi}]")
        self._lib = _Library.get()
        self.voice = voice
        self.native_rate_hz = self._lib.sample_rate_hz
        self.version = self._lib.version
        self._lib.synthesize("", voice, speaking_rate_wpm)  # fail now on a bad voice, not at the first visitor

    def _synthesize(self, sentence: str):
        audio, events, stresses = self._lib.synthesize(sentence, self.voice, self.speaking_rate_wpm)
        duration_ms = len(audio) * 1000.0 / self.native_rate_hz
        phonemes = _phoneme_timeline(events, stresses, duration_ms)
        words = _word_timings(sentence, events, phonemes, duration_ms)
        return audio, self.native_rate_hz, phonemes, words, "espeak"


def _phoneme_timeline(events, stresses: list[int], duration_ms: float) -> list[PhonemeEvent]:
    starts: list[tuple[str, float]] = []
    for etype, _pos, _len, audio_ms, name in events:
        if etype != espeakEVENT_PHONEME:
            continue
        symbol = name.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
        if symbol == ";":
            continue  # espeak's palatalisation mark: part of the phoneme before it
        if not symbol or symbol.startswith("_"):
            symbol = PAUSE
        if starts and symbol == PAUSE and starts[-1][0] == PAUSE:
            continue  # merge consecutive pauses
        starts.append((symbol, float(audio_ms)))
    if starts and starts[0][1] > 0.0:
        starts.insert(0, (PAUSE, 0.0))  # the few ms of silence before the first phoneme
    vowel_stress = iter(stresses)
    out: list[PhonemeEvent] = []
    for i, (symbol, start_ms) in enumerate(starts):
        end_ms = starts[i + 1][1] if i + 1 < len(starts) else duration_ms
        stress = next(vowel_stress, 0) if symbol[:1] in _VOWEL_START else 0
        out.append(PhonemeEvent(symbol, start_ms, max(start_ms, end_ms), stress))
    return out


_TEXT_WORD = re.compile(r"[\w][\w'’.\-]*", re.UNICODE)


def _word_timings(text: str, events, phonemes: list[PhonemeEvent], duration_ms: float) -> list[WordTiming]:
    """Every word of the text with its time. espeak sends one WORD event per *spoken* word group: it merges
    unstressed function words ("the first") and numbers into neighbours, so each text word is assigned to the
    last event at or before it, and words sharing an event share its span in proportion to their length."""
    marks = sorted({(pos, float(audio_ms)) for etype, pos, length, audio_ms, _ in events
                    if etype == espeakEVENT_WORD and length > 0 and pos > 0})
    text_words = [(m.start(), m.group(0).rstrip(".-")) for m in _TEXT_WORD.finditer(text)]
    text_words = [(start, word) for start, word in text_words if word]
    if not marks or not text_words:
        return []
    groups: list[list[tuple[int, str]]] = [[] for _ in marks]
    for char_start, word in text_words:
        index = 0
        for i, (pos, _ms) in enumerate(marks):
            if pos - 1 <= char_start:
                index = i
        groups[index].append((char_start, word))
    out: list[WordTiming] = []
    previous_end_ms = 0.0
    for i, ((_pos, start_ms), group) in enumerate(zip(marks, groups)):
        if not group:
            continue
        next_start = marks[i + 1][1] if i + 1 < len(marks) else duration_ms
        # the group ends where its last sounding phoneme ends (the pause after it is not part of the words)
        sounding = [p for p in phonemes if start_ms <= p.start_ms < next_start and not p.is_pause]
        end_ms = sounding[-1].end_ms if sounding else next_start
        start_ms = max(start_ms, previous_end_ms)  # WORD events can precede the last phoneme of the word before
        end_ms = max(start_ms, end_ms)
        total_chars = sum(len(w) for _, w in group)
        t = start_ms
        for _, word in group:
            dt = (end_ms - start_ms) * len(word) / total_chars
            out.append(WordTiming(word, t, t + dt))
            t += dt
        previous_end_ms = end_ms
    return out


def check_available() -> str:
    """The espeak-ng version, or ``TTSUnavailable`` with the install hint."""
    return _Library.get().version
