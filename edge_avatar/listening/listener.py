"""The listener: microphone chunks in, one ``AudioToken`` per 10 ms out, transcripts as they come.

Why this module exists: it is the one place where the audio half of
perception is put together, in this order, per 10 ms frame of 16 kHz audio:

    mic chunk -> input check (silent / clipping) -> resample to 16 kHz if needed
      -> echo cancellation against the speaker reference (aligned by the master clock)
      -> webrtcvad gate + Silero window -> segmenter (sample counts)
      -> prosody (energy, pitch, speaking rate) -> AudioToken
      -> recognizer requests (partials, speculative final, final) -> TranscriptEvents

It runs on the worker that consumes the microphone queue (``process_chunk``
is the ``on_chunk`` of ``edge_avatar.runtime.workers.ListenerWorker``); the
recognizer runs on its own ``TranscriberWorker``, or inline for files and
tests. Every position is a sample count; ``pts_ns`` of a token is the master
clock time of the first (echo-cancelled) sample it describes.
"""

from __future__ import annotations

import collections
import logging
from typing import Callable

import numpy as np

from edge_avatar.frames import AudioChunk, ns_to_samples, samples_to_ns
from edge_avatar.listening.aec import EchoCanceller
from edge_avatar.listening.asr import Recognizer, load_recognizer
from edge_avatar.listening.options import FRAME_SAMPLES, PROCESS_RATE_HZ, ListeningConfig
from edge_avatar.listening.prosody import ProsodyTracker
from edge_avatar.listening.resample import ReferenceSignal, StreamResampler
from edge_avatar.listening.token import AudioToken, InputStatus, SpeechSegment, TranscriptEvent
from edge_avatar.listening.transcriber import AsrRequest, InlineTranscriber, TranscriberWorker
from edge_avatar.listening.vad import Segmenter, SegmentEvent, VoiceActivityDetector

log = logging.getLogger(__name__)

SILERO_LAG_SAMPLES = 512  # boundary refinement also looks one Silero window past the model's boundary
MAX_ZERO_FILL_MS = 5000   # a gap in the mic's pts up to this long is filled with silence; longer re-anchors


class InputMonitor:
    """Watches the raw microphone signal for a dead mic (silence, a stuck value) and for clipping."""

    def __init__(self, config: ListeningConfig):
        self.floor_std = 10.0 ** (config.dead_mic_floor_dbfs / 20.0)
        self.report_ms = config.dead_mic_report_ms
        self.clip_level = config.clip_level
        self.clip_fraction = config.clip_report_fraction
        self._silent_ms = 0.0
        self._recent: collections.deque[tuple[int, int]] = collections.deque()   # (samples, clipped)
        self._recent_samples = 0
        self._recent_clipped = 0
        self.status = InputStatus.OK
        self.silent_episodes = 0
        self.clipping_episodes = 0
        self.clipped_samples = 0
        self.samples = 0

    def check(self, samples: np.ndarray, sample_rate_hz: int) -> InputStatus:
        n = len(samples)
        if n == 0:
            return self.status
        self.samples += n
        duration_ms = n * 1000.0 / sample_rate_hz
        dead = float(np.std(samples)) < self.floor_std
        self._silent_ms = self._silent_ms + duration_ms if dead else 0.0
        clipped = int(np.count_nonzero(np.abs(samples) >= self.clip_level))
        self.clipped_samples += clipped
        self._recent.append((n, clipped))
        self._recent_samples += n
        self._recent_clipped += clipped
        while self._recent_samples - self._recent[0][0] >= sample_rate_hz:   # keep the last second
            old_n, old_c = self._recent.popleft()
            self._recent_samples -= old_n
            self._recent_clipped -= old_c
        if self._silent_ms >= self.report_ms:
            status = InputStatus.SILENT
        elif self._recent_clipped > self.clip_fraction * self._recent_samples:
            status = InputStatus.CLIPPING
        else:
            status = InputStatus.OK
        if status is not self.status:
            if status is InputStatus.SILENT:
                self.silent_episodes += 1
                log.warning("microphone: no signal for %.1f s (below %.0f dBFS): muted, unplugged or dead?",
                            self._silent_ms / 1000, 20 * np.log10(self.floor_std))
            elif status is InputStatus.CLIPPING:
                self.clipping_episodes += 1
                log.warning("microphone: clipping (%.2f %% of the last second at full scale): lower the gain",
                            100.0 * self._recent_clipped / max(1, self._recent_samples))
            else:
                log.info("microphone: signal back to normal (was %s)", self.status.value)
            self.status = status
        return status

    def stats(self) -> dict:
        return {"status": self.status.value, "silent_episodes": self.silent_episodes,
                "clipping_episodes": self.clipping_episodes, "clipped_samples": self.clipped_samples}


class _History:
    """The clean 16 kHz stream kept since a given sample index (for the recognizer)."""

    def __init__(self) -> None:
        self._frames: collections.deque[np.ndarray] = collections.deque()
        self.first = 0   # index of the first kept sample
        self.end = 0     # one past the newest

    def append(self, frame: np.ndarray, index: int) -> None:
        if not self._frames:
            self.first = index
        elif index != self.end:   # (cannot happen: frames are contiguous) keep the arithmetic honest
            self._frames.clear()
            self.first = index
        self._frames.append(frame)
        self.end = index + len(frame)

    def trim_before(self, index: int) -> None:
        while self._frames and self.first + len(self._frames[0]) <= index:
            self.first += len(self._frames.popleft())

    def slice(self, a: int, b: int) -> np.ndarray:
        a, b = max(a, self.first), min(b, self.end)
        if b <= a:
            return np.zeros(0, dtype=np.float32)
        data = np.concatenate(list(self._frames))
        return data[a - self.first:b - self.first].copy()


_CONFIG_RECOGNIZER = object()


class Listener:
    """Audio perception for one microphone stream.

    ``recognizer``: a ``Recognizer``, None (no transcripts), or omitted (the
    one named by ``config.asr_recognizer``). ``threaded_asr`` runs it on a
    ``TranscriberWorker`` (start it via ``workers()``); otherwise decodes run
    inline and partials are off unless ``inline_partials``. ``clock`` (the
    media clock) stamps transcript events; without one they carry the end
    time of the newest audio heard.
    """

    def __init__(self, config: ListeningConfig, *, recognizer: Recognizer | None | object = _CONFIG_RECOGNIZER,
                 threaded_asr: bool = False, inline_partials: bool = False, clock=None,
                 on_token: Callable[[AudioToken], None] | None = None,
                 on_event: Callable[[TranscriptEvent], None] | None = None,
                 on_clean_audio: Callable[[np.ndarray, int], None] | None = None,
                 vad: VoiceActivityDetector | None = None):
        self.config = config
        self.clock = clock
        self.on_token = on_token
        self.on_event = on_event
        self.on_clean_audio = on_clean_audio   # (echo-cancelled 16 kHz frame, its first sample's pts_ns)
        self.monitor = InputMonitor(config)
        self.vad = vad or VoiceActivityDetector(config)
        self.segmenter = Segmenter(config)
        self.prosody = ProsodyTracker(config)
        self.aec = EchoCanceller(config) if config.aec_enabled else None
        self.reference: ReferenceSignal | None = None
        self._delay_samples = int(round(config.aec_reference_delay_ms * PROCESS_RATE_HZ / 1000))
        if recognizer is _CONFIG_RECOGNIZER:
            recognizer = load_recognizer(config)
        self.recognizer: Recognizer | None = recognizer  # type: ignore[assignment]
        self.transcriber: InlineTranscriber | TranscriberWorker | None = None
        if self.recognizer is not None:
            if threaded_asr:
                self.transcriber = TranscriberWorker(self.recognizer, self._now_ns, config.asr_max_pending_finals)
            else:
                self.transcriber = InlineTranscriber(self.recognizer, self._now_ns,
                                                     partials=inline_partials and config.asr_partials_enabled)
        self._partials = config.asr_partials_enabled and (threaded_asr or inline_partials)
        self._partial_interval = config.asr_partial_interval_ms * PROCESS_RATE_HZ // 1000
        self._preroll = config.vad_preroll_ms * PROCESS_RATE_HZ // 1000
        # stream bookkeeping (all in 16 kHz samples)
        self._base_pts_ns: int | None = None
        self._base_ref_index = 0
        self._in_index = 0                       # next raw (pre-AEC) sample index
        self._carry = np.zeros(0, dtype=np.float32)
        self._resampler: StreamResampler | None = None
        self.resampled_from_hz: int | None = None
        self._seq = 0
        self._history = _History()
        self._segment_start = 0
        self._next_partial_at = 0
        self._revision = 0
        self._speculation: tuple[int, int] | None = None   # (revision, end sample)
        self._pending_started: SpeechSegment | None = None
        self._pending_ended: SpeechSegment | None = None
        self.partial_text = ""
        self._levels: collections.deque[tuple[int, float]] = collections.deque(maxlen=1000)  # (index, dBFS), 10 s
        self._refined_start = 0
        self._last_end = 0
        self._previous_raw_end = -10**12   # the recognizer's preroll never reaches into the previous segment
        self.segments: list[SpeechSegment] = []
        self.events: list[TranscriptEvent] = []
        self.gaps = 0
        self.frames = 0

    # ------------------------------------------------------------------ wiring

    def attach_speaker(self, speaker) -> ReferenceSignal:
        """Tap ``speaker`` (an ``AudioOutput``) as the echo reference; returns the tap."""
        reference = ReferenceSignal(speaker.sample_rate_hz, PROCESS_RATE_HZ, self.config.aec_reference_history_ms)
        speaker.add_tap(reference)
        self.reference = reference
        return reference

    def attach_reference(self, reference: ReferenceSignal) -> None:
        self.reference = reference

    def workers(self) -> list:
        """Threads to start with the session (the transcriber, when threaded)."""
        return [self.transcriber] if isinstance(self.transcriber, TranscriberWorker) else []

    @property
    def heard_until_ns(self) -> int:
        """Master-clock time of the end of the newest microphone sample processed."""
        if self._base_pts_ns is None:
            return 0
        return self._base_pts_ns + samples_to_ns(self._in_index, PROCESS_RATE_HZ)

    def _now_ns(self) -> int:
        return self.clock.now_ns() if self.clock is not None else self.heard_until_ns

    @property
    def _clean_delay(self) -> int:
        return self.aec.delay_samples if (self.aec is not None and self.reference is not None) else 0

    # ------------------------------------------------------------------ per chunk

    def process_chunk(self, chunk: AudioChunk) -> list[AudioToken]:
        """All tokens completed by this chunk (one per 10 ms of 16 kHz audio)."""
        samples = np.asarray(chunk.samples, dtype=np.float32).reshape(-1)
        status = self.monitor.check(samples, chunk.sample_rate_hz)
        tokens: list[AudioToken] = []
        if self._base_pts_ns is None:
            self._anchor(chunk.pts_ns)
        if chunk.sample_rate_hz != PROCESS_RATE_HZ:
            if self._resampler is None or self.resampled_from_hz != chunk.sample_rate_hz:
                log.warning("microphone delivers %d Hz; resampling to %d Hz", chunk.sample_rate_hz, PROCESS_RATE_HZ)
                self._resampler = StreamResampler(chunk.sample_rate_hz, PROCESS_RATE_HZ)
                self.resampled_from_hz = chunk.sample_rate_hz
            samples = self._resampler.process(samples)
        else:
            tokens += self._fill_gap(chunk.pts_ns, status)
        self._carry = np.concatenate([self._carry, samples]) if len(self._carry) else samples
        while len(self._carry) >= FRAME_SAMPLES:
            frame, self._carry = self._carry[:FRAME_SAMPLES], self._carry[FRAME_SAMPLES:]
            tokens.append(self._process_frame(frame, status))
        return tokens

    def _anchor(self, pts_ns: int) -> None:
        self._base_pts_ns = pts_ns
        self._base_ref_index = ns_to_samples(pts_ns, PROCESS_RATE_HZ)
        self._in_index = 0
        self._carry = np.zeros(0, dtype=np.float32)

    def _fill_gap(self, pts_ns: int, status: InputStatus) -> list[AudioToken]:
        """Chunks lost upstream (a dropped queue entry) are replaced by silence so sample counts stay true."""
        expected = self._in_index + len(self._carry)
        actual = ns_to_samples(pts_ns - self._base_pts_ns, PROCESS_RATE_HZ)
        missing = actual - expected
        if missing < FRAME_SAMPLES // 2:
            return []
        self.gaps += 1
        if missing > MAX_ZERO_FILL_MS * PROCESS_RATE_HZ // 1000:
            log.warning("microphone: %.1f s gap in the stream; re-anchoring", missing / PROCESS_RATE_HZ)
            tokens = self.finish_stream()
            # Keep sample indices continuous; move the index -> time mapping so the next sample has this pts.
            self._base_pts_ns = pts_ns - samples_to_ns(expected, PROCESS_RATE_HZ)
            self._base_ref_index = ns_to_samples(pts_ns, PROCESS_RATE_HZ) - expected
            return tokens
        log.warning("microphone: %d samples missing before pts %d ns; filled with silence", missing, pts_ns)
        self._carry = np.concatenate([self._carry, np.zeros(missing, dtype=np.float32)])
        return []

    def _process_frame(self, mic: np.ndarray, status: InputStatus) -> AudioToken:
        s_in = self._in_index
        self._in_index += FRAME_SAMPLES
        self.frames += 1
        info = None
        if self.aec is not None and self.reference is not None:
            ref = self.reference.read(self._base_ref_index + s_in - self._delay_samples, FRAME_SAMPLES)
            clean, info = self.aec.process(mic, ref)
        else:
            clean = mic
        index = s_in - self._clean_delay        # the clean stream's index of this frame's first sample
        voiced, windows = self.vad.process_frame(clean)
        self._history.append(clean, index)
        if self.on_clean_audio is not None:
            self.on_clean_audio(clean, self._pts(index))
        level, pitch_hz, confidence, rate = self.prosody.process_frame(clean, voiced or self.segmenter.in_speech)
        self._levels.append((index, level))
        for window in windows:
            shifted = type(window)(window.start_sample - self._clean_delay, window.end_sample - self._clean_delay,
                                   window.probability, window.ran_model)
            for event in self.segmenter.push(shifted):
                self._on_segment_event(event)
        end = index + FRAME_SAMPLES
        if (self._partials and self.segmenter.in_speech and self._speculation is None
                and end >= self._next_partial_at and self.vad.last_probability >= self.config.vad_threshold):
            # (only while Silero is sure: a partial started as speech ends would delay the final's decode)
            self._request("partial", self.segmenter.segment_id, self._segment_start, end)
            self._next_partial_at = end + self._partial_interval
        if not self.segmenter.in_speech:
            self._history.trim_before(end - self._preroll - FRAME_SAMPLES)
        far = bool(info.far_end_active) if info else False
        token = AudioToken(
            pts_ns=self._pts(index), seq=self._seq, voice_active=self.segmenter.in_speech,
            speech_probability=self.vad.last_probability, webrtc_voiced=voiced, pitch_hz=pitch_hz,
            pitch_confidence=confidence, energy_dbfs=level, speaking_rate_syl_per_s=rate, far_end_active=far,
            double_talk=far and self.segmenter.in_speech, echo_erle_db=info.erle_db if info else 0.0,
            input_status=status, segment_id=self.segmenter.segment_id if self.segmenter.in_speech else -1,
            segment_started=self._pending_started, segment_ended=self._pending_ended,
            partial_text=self.partial_text, events=tuple(self._collect_events()),
            voice_paused=self.segmenter.pausing)
        self._pending_started = self._pending_ended = None
        self._seq += 1
        if self.on_token is not None:
            self.on_token(token)
        return token

    def _pts(self, index: int) -> int:
        return self._base_pts_ns + (samples_to_ns(index, PROCESS_RATE_HZ) if index >= 0
                                    else -samples_to_ns(-index, PROCESS_RATE_HZ))

    # ------------------------------------------------------------------ segments and recognition

    def _segment(self, segment_id: int, start: int, end: int, discarded: bool = False,
                 forced: bool = False) -> SpeechSegment:
        return SpeechSegment(segment_id, start, end, self._pts(start), self._pts(end), discarded, forced)

    def _request(self, kind: str, segment_id: int, start: int, end: int, revision: int = 0) -> None:
        if self.transcriber is None:
            return
        samples = self._history.slice(max(start - self._preroll, self._previous_raw_end), end)
        self.transcriber.submit(AsrRequest(kind, segment_id, revision, samples, self._pts(start), self._pts(end)))

    def _refine(self, sample: int, first: bool, floor_from: int | None = None) -> int:
        """Move a Silero boundary to the energy envelope (10 ms resolution), at most vad_refine_search_ms.

        The onset goes to the first of two consecutive frames above the noise floor + margin; the offset to
        the end of the last frame above max(floor + margin, segment peak - 40 dB). The floor is the 5th
        percentile of the last 10 s of frame levels.
        """
        search = self.config.vad_refine_search_ms * PROCESS_RATE_HZ // 1000
        if search == 0 or len(self._levels) < 4:
            return sample
        index = np.fromiter((i for i, _ in self._levels), dtype=np.int64, count=len(self._levels))
        level = np.fromiter((v for _, v in self._levels), dtype=np.float64, count=len(self._levels))
        threshold = float(np.percentile(level, 5)) + self.config.vad_refine_margin_db
        pad = self.segmenter.pad_samples
        if first:
            onset = sample + pad
            in_range = (index >= onset - search) & (index < onset + SILERO_LAG_SAMPLES)
            loud = (level >= threshold) & in_range
            after = np.nonzero(loud & (index >= onset))[0]
            before = np.nonzero(loud & (index < onset))[0]
            if len(after):
                k = int(after[0])
            elif len(before):
                k = int(before[-1])
            else:
                return sample
            # walk back over the contiguous loud run (a single quiet frame does not break it)
            while k >= 2 and in_range[k - 1] and (loud[k - 1] or (loud[k - 2] and in_range[k - 2])):
                k -= 1 if loud[k - 1] else 2
            return int(index[k]) - pad
        in_segment = index >= (floor_from if floor_from is not None else sample - search)
        if in_segment.any():
            threshold = max(threshold, float(level[in_segment].max()) - 40.0)
        lo, hi = max(sample - pad - search, floor_from or 0), sample - pad + SILERO_LAG_SAMPLES
        hits = np.nonzero((level >= threshold) & (index >= lo) & (index < hi))[0]
        return int(index[hits[-1]]) + FRAME_SAMPLES + pad if len(hits) else sample

    def _on_segment_event(self, event: SegmentEvent) -> None:
        if event.kind == "start":
            self._segment_start = event.sample
            self._refined_start = max(self._last_end, self._refine(event.sample, first=True))
            self._next_partial_at = event.sample + self._partial_interval
            self._speculation = None
            self.partial_text = ""
            self._pending_started = self._segment(event.segment_id, self._refined_start, self._refined_start)
        elif event.kind == "pause":
            if self.config.asr_speculative_final and self.transcriber is not None:
                self._revision += 1
                self._speculation = (self._revision, event.sample)
                self._request("speculative", event.segment_id, event.start_sample, event.sample, self._revision)
        elif event.kind == "resume":
            if self._speculation is not None and self.transcriber is not None:
                self.transcriber.cancel(event.segment_id, self._speculation[0])
            self._speculation = None
            self._next_partial_at = max(self._next_partial_at, event.sample)
        elif event.kind == "end":
            start = self._refined_start if event.start_sample == self._segment_start else event.start_sample
            end = max(start + FRAME_SAMPLES, self._refine(event.sample, first=False, floor_from=start)) \
                if not event.forced else event.sample
            segment = self._segment(event.segment_id, start, end, event.discarded, event.forced)
            self._last_end = end
            self.segments.append(segment)
            self._pending_ended = segment
            self.partial_text = ""
            if self.transcriber is not None:
                if event.discarded:
                    self.transcriber.cancel(event.segment_id)
                elif not (self._speculation is not None and self._speculation[1] == event.sample
                          and self.transcriber.confirm(event.segment_id, self._speculation[0])):
                    self.transcriber.cancel(event.segment_id)
                    self._request("final", event.segment_id, event.start_sample, event.sample)
            self._speculation = None
            self._previous_raw_end = event.sample

    def _collect_events(self) -> list[TranscriptEvent]:
        if self.transcriber is None:
            return []
        events = self.transcriber.poll_events()
        for event in events:
            if event.kind == "partial":
                if self.segmenter.in_speech and event.segment_id == self.segmenter.segment_id and not event.rejected:
                    self.partial_text = event.text
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)
        return events

    # ------------------------------------------------------------------ end of stream

    def finish_stream(self) -> list[AudioToken]:
        """The stream ended (a file ran out): close an open segment and publish its final transcript."""
        end = self._in_index - self._clean_delay
        for event in self.segmenter.flush(end):
            self._on_segment_event(event)
        if self.transcriber is not None:
            self.transcriber.wait_idle(60.0)
        events = self._collect_events()
        ended, self._pending_ended = self._pending_ended, None
        if not events and ended is None:
            return []
        token = AudioToken(pts_ns=self._pts(end), seq=self._seq, voice_active=False, speech_probability=0.0,
                           webrtc_voiced=False, pitch_hz=0.0, pitch_confidence=0.0, energy_dbfs=-120.0,
                           speaking_rate_syl_per_s=0.0, far_end_active=False, double_talk=False,
                           echo_erle_db=0.0, input_status=self.monitor.status, segment_ended=ended,
                           events=tuple(events))
        self._seq += 1
        if self.on_token is not None:
            self.on_token(token)
        return [token]

    def final_segments(self) -> list[tuple[SpeechSegment, TranscriptEvent | None]]:
        """Every kept segment with its final transcript event (None when none arrived)."""
        finals = {e.segment_id: e for e in self.events if e.kind == "final"}
        return [(s, finals.get(s.segment_id)) for s in self.segments if not s.discarded]

    def stats(self) -> dict:
        out = {"frames": self.frames, "gaps": self.gaps, "segments": len(self.segments),
               "segments_discarded": sum(s.discarded for s in self.segments),
               "resampled_from_hz": self.resampled_from_hz, "input": self.monitor.stats(), "vad": self.vad.stats()}
        if self.aec is not None and self.reference is not None:
            out["aec"] = {**self.aec.stats(), "reference_missing_samples": self.reference.missing_samples,
                          "reference_gaps": self.reference.gaps}
        if self.transcriber is not None:
            out["asr"] = self.transcriber.stats()
            lowered = getattr(self.recognizer, "compute_threads_lowered", None)
            if lowered is not None:
                out["asr"]["compute_threads"] = {"lowered": len(lowered),
                                                 "nice": getattr(self.recognizer, "compute_nice", None)}
        return out
