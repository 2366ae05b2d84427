"""Running the recognizer for the listener: inline (files, tests) or on its own worker thread (the device).

Why this module exists: a Whisper decode takes a few hundred milliseconds,
so on the device it must never run on the thread that consumes microphone
chunks. The listener hands the transcriber three kinds of request:

- *partial*: the segment so far, every ``asr_partial_interval_ms`` while the
  visitor speaks. Overflow policy: latest wins -- a newer partial of the
  growing segment replaces one still waiting (counted in ``partials_dropped``);
- *speculative final*: the whole segment, sent the moment a pause begins.
  It is decoded ahead of the hangover so that, when the pause turns out to
  be the end of speech, the final text is already there (or nearly);
  ``cancel`` discards it when the visitor goes on talking;
- *final*: confirmed finals are never dropped (at most
  ``asr_max_pending_finals`` wait; beyond that the oldest is dropped, counted
  and logged, because a recognizer that slow is already a failure).

Finals go first, then speculation, then the partial. Each result becomes a
``TranscriptEvent`` stamped with ``decided_ns`` from the injected ``now_ns``
(the media clock on the device; the end of the newest heard audio offline),
never from wall time; the decode's own duration is measured separately as
``compute_ms``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edge_avatar.listening.asr import Recognition, Recognizer
from edge_avatar.listening.token import TranscriptEvent
from edge_avatar.runtime.workers import Worker

log = logging.getLogger(__name__)


@dataclass
class AsrRequest:
    kind: str                 # "partial", "speculative" or "final"
    segment_id: int
    revision: int             # which pause of the segment a speculative request belongs to
    samples: np.ndarray       # (N,) float32 16 kHz, preroll included
    start_ns: int
    end_ns: int
    confirmed: bool = False   # a speculative request that turned out to be the final
    cancelled: bool = False
    result: Recognition | None = field(default=None, repr=False)
    compute_ms: float = 0.0


class _TranscriberBase:
    def __init__(self, recognizer: Recognizer, now_ns: Callable[[], int]):
        self.recognizer = recognizer
        self.now_ns = now_ns
        self._events: list[TranscriptEvent] = []
        self._events_lock = threading.Lock()
        self.decodes = 0
        self.finals = 0
        self.partials = 0
        self.compute_ms_total = 0.0
        self.compute_ms_max = 0.0

    def _decode(self, request: AsrRequest) -> None:
        start = time.perf_counter_ns()   # measures the decode itself, not media time
        request.result = self.recognizer.transcribe(request.samples)
        request.compute_ms = (time.perf_counter_ns() - start) / 1e6
        self.decodes += 1
        self.compute_ms_total += request.compute_ms
        self.compute_ms_max = max(self.compute_ms_max, request.compute_ms)

    def _emit(self, request: AsrRequest, kind: str) -> None:
        assert request.result is not None
        r = request.result
        event = TranscriptEvent(kind=kind, segment_id=request.segment_id, text="" if r.rejected else r.text,
                                start_ns=request.start_ns, end_ns=request.end_ns, decided_ns=self.now_ns(),
                                recognizer=self.recognizer.name, compute_ms=request.compute_ms,
                                avg_logprob=r.avg_logprob, no_speech_prob=r.no_speech_prob, rejected=r.rejected)
        if kind == "final":
            self.finals += 1
        else:
            self.partials += 1
        with self._events_lock:
            self._events.append(event)

    def poll_events(self) -> list[TranscriptEvent]:
        with self._events_lock:
            events, self._events = self._events, []
        return events

    def stats(self) -> dict:
        return {"recognizer": self.recognizer.name, "decodes": self.decodes, "finals": self.finals,
                "partials": self.partials,
                "compute_ms_mean": round(self.compute_ms_total / self.decodes, 1) if self.decodes else 0.0,
                "compute_ms_max": round(self.compute_ms_max, 1)}


class InlineTranscriber(_TranscriberBase):
    """Decodes on the caller's thread; speculation is skipped (the final is decoded when confirmed)."""

    threaded = False

    def __init__(self, recognizer: Recognizer, now_ns: Callable[[], int], partials: bool = False):
        super().__init__(recognizer, now_ns)
        self.partials_enabled = partials
        self._speculative: AsrRequest | None = None

    def submit(self, request: AsrRequest) -> None:
        if request.kind == "speculative":
            self._speculative = request
            return
        if request.kind == "partial" and not self.partials_enabled:
            return
        self._decode(request)
        self._emit(request, "final" if request.kind == "final" else "partial")

    def confirm(self, segment_id: int, revision: int) -> bool:
        spec = self._speculative
        if spec is None or (spec.segment_id, spec.revision) != (segment_id, revision):
            return False
        self._speculative = None
        self._decode(spec)
        self._emit(spec, "final")
        return True

    def cancel(self, segment_id: int, revision: int | None = None) -> None:
        spec = self._speculative
        if spec is not None and spec.segment_id == segment_id and revision in (None, spec.revision):
            self._speculative = None

    def wait_idle(self, timeout_s: float = 0.0) -> bool:
        return True


class TranscriberWorker(Worker, _TranscriberBase):
    """The recognizer on its own thread (see the module docstring for the queueing rules)."""

    threaded = True

    def __init__(self, recognizer: Recognizer, now_ns: Callable[[], int], max_pending_finals: int = 32):
        Worker.__init__(self, "transcriber")
        _TranscriberBase.__init__(self, recognizer, now_ns)
        self.max_pending_finals = max_pending_finals
        self._cond = threading.Condition()
        self._finals: collections.deque[AsrRequest] = collections.deque()
        self._speculative: dict[tuple[int, int], AsrRequest] = {}   # pending or decoded, not yet confirmed
        self._partial: AsrRequest | None = None
        self._busy: AsrRequest | None = None
        self.partials_dropped = 0
        self.finals_dropped = 0
        self.speculations = 0
        self.speculations_used = 0
        self.speculations_cancelled = 0

    # ---- called from the listener's thread

    def submit(self, request: AsrRequest) -> None:
        with self._cond:
            if request.kind == "partial":
                if self._partial is not None:
                    self.partials_dropped += 1
                self._partial = request
            elif request.kind == "speculative":
                self.speculations += 1
                self._speculative[(request.segment_id, request.revision)] = request
            else:
                if len(self._finals) >= self.max_pending_finals:
                    dropped = self._finals.popleft()
                    self.finals_dropped += 1
                    log.error("transcriber: %d finals waiting; dropped segment %d (recognizer too slow)",
                              self.max_pending_finals, dropped.segment_id)
                self._finals.append(request)
                self._drop_partial(request.segment_id)
            self._cond.notify_all()

    def confirm(self, segment_id: int, revision: int) -> bool:
        """The pause of a speculative request was the end of speech: publish its text as the final."""
        emit = None
        with self._cond:
            request = self._speculative.pop((segment_id, revision), None)
            if request is None:
                return False
            request.confirmed = True
            self.speculations_used += 1
            self._drop_partial(segment_id)
            if request is self._busy:
                pass                    # being decoded: the worker publishes it when done
            elif request.result is not None:
                emit = request          # already decoded: publish now
            else:
                self._finals.appendleft(request)   # still waiting: it is a final now (front of the line)
            self._cond.notify_all()
        if emit is not None:
            self._emit(emit, "final")
        return True

    def cancel(self, segment_id: int, revision: int | None = None) -> None:
        with self._cond:
            for key in [k for k in self._speculative if k[0] == segment_id and revision in (None, k[1])]:
                self._speculative.pop(key).cancelled = True
                self.speculations_cancelled += 1
            if revision is None:
                self._drop_partial(segment_id)

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Block until every confirmed final has been decoded (for end of file / tests)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._finals and not (self._busy is not None and
                                                  (self._busy.kind == "final" or self._busy.confirmed)),
                timeout_s)

    def _drop_partial(self, segment_id: int) -> None:
        if self._partial is not None and self._partial.segment_id == segment_id:
            self._partial = None

    # ---- the worker thread

    def _next(self) -> AsrRequest | None:
        if self._finals:
            return self._finals.popleft()
        pending = [r for r in self._speculative.values() if r.result is None]
        if pending:
            return pending[-1]
        request, self._partial = self._partial, None
        return request

    def step(self) -> None:
        with self._cond:
            request = self._next()
            if request is None:
                self._cond.wait(0.05)
                return
            self._busy = request
        try:
            self._decode(request)
            self.timer.add_ns(int(request.compute_ms * 1e6))
        finally:
            with self._cond:
                self._busy = None
                confirmed = request.kind == "final" or request.confirmed
                cancelled = request.cancelled
                self._cond.notify_all()
        if cancelled:
            return
        if confirmed:
            self._emit(request, "final")
        elif request.kind == "partial":
            self._emit(request, "partial")
        # an unconfirmed speculative result waits in self._speculative for confirm()

    def stats(self) -> dict:
        return {**Worker.stats(self), **_TranscriberBase.stats(self), "partials_dropped": self.partials_dropped,
                "finals_dropped": self.finals_dropped, "speculations": self.speculations,
                "speculations_used": self.speculations_used,
                "speculations_cancelled": self.speculations_cancelled}
