"""Assemble one running avatar from a frozen config: clock, devices, workers, loop; then report.

Why this module exists: ``edge-avatar demo``, ``edge-avatar run``, the
benchmarks and the tests must all build the *same* pipeline, so the wiring
lives in one place. Devices that cannot be opened fail here, before anything
starts, with the source's own message (what was tried, how to fix it).
Shutdown is orderly whatever stops the loop (duration reached, SIGTERM,
SIGINT, an exception): workers stop, the speaker drains, the output is
finalised (the MP4 muxed) and the report is written.
"""

from __future__ import annotations

import json
import logging
import resource
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_avatar import __version__
from edge_avatar.clock import MediaClock, RealTimeBase, TimeBase
from edge_avatar.config import RootConfig
from edge_avatar.frames import ControlMessage
from edge_avatar.outputs.audio import AudioOutput, open_audio_output
from edge_avatar.runtime import placeholders
from edge_avatar.runtime.loop import AvatarLoop, queue_stats
from edge_avatar.runtime.queues import BoundedQueue, OverflowPolicy
from edge_avatar.runtime.workers import ListenerWorker, MicrophoneWorker, SpeakRequest, SpeechWorker

log = logging.getLogger(__name__)

REPORT_VERSION = 1


@dataclass
class Turn:
    """One visitor turn and the avatar's reply, all times in media ns."""

    turn_id: int
    end_of_speech_ns: int
    decided_ns: int
    reply_text: str
    first_audio_ns: int | None = None

    def to_json(self) -> dict[str, Any]:
        latency_ms = None if self.first_audio_ns is None else (self.first_audio_ns - self.end_of_speech_ns) / 1e6
        return {
            "turn_id": self.turn_id,
            "reply_text": self.reply_text,
            "end_of_speech_s": round(self.end_of_speech_ns / 1e9, 3),
            "decided_s": round(self.decided_ns / 1e9, 3),
            "first_audio_s": None if self.first_audio_ns is None else round(self.first_audio_ns / 1e9, 3),
            "end_of_turn_wait_ms": round((self.decided_ns - self.end_of_speech_ns) / 1e6, 1),
            "response_latency_ms": None if latency_ms is None else round(latency_ms, 1),
        }


@dataclass
class SessionOptions:
    """What differs between a device run, the demo, a benchmark and a test (not site configuration)."""

    duration_s: float | None = None
    time_base: TimeBase | None = None
    null_models: bool = False               # bench: no perception, constant planner and renderer
    listen: bool = True                     # run the microphone / turn-taking / speech workers
    on_tick: Callable | None = None
    extra_report: dict[str, Any] = field(default_factory=dict)


class _NullPlanner:
    def step(self, pts_ns: int, token: np.ndarray | None) -> np.ndarray:
        return np.zeros(64, dtype=np.float32)


class _NullRenderer:
    def __init__(self, width_px: int, height_px: int):
        self._image = np.zeros((height_px, width_px, 3), dtype=np.uint8)

    def render(self, motion: np.ndarray) -> np.ndarray:
        return self._image


class Session:
    """One avatar run. ``start()`` opens everything, ``run()`` ticks, ``close()`` reports."""

    def __init__(self, config: RootConfig, options: SessionOptions | None = None):
        self.config = config
        self.options = options or SessionOptions()
        self.time_base = self.options.time_base or RealTimeBase()
        self.speaker: AudioOutput | None = None
        self.clock: MediaClock | None = None
        self.sink = None
        self.camera = None
        self.microphone = None
        self.workers: list = []
        self.queues: list[BoundedQueue] = []
        self.turns: list[Turn] = []
        self._turns_lock = threading.Lock()
        self.loop: AvatarLoop | None = None
        self._stopped = threading.Event()
        self.output_info: dict[str, Any] = {}
        self.error: str | None = None

    # ------------------------------------------------------------------ build

    def start(self) -> None:
        from edge_avatar.outputs.video import open_output  # noqa: PLC0415 - keeps import edge_avatar light
        from edge_avatar.sensors.camera import open_camera  # noqa: PLC0415
        from edge_avatar.sensors.microphone import open_microphone  # noqa: PLC0415

        cfg = self.config
        out = cfg.audio_output
        self.speaker = open_audio_output(out.uri, self.time_base, out.sample_rate_hz, out.block_ms,
                                         out.buffer_ms, out.volume)
        self.clock = MediaClock(self.speaker, self.time_base)
        try:
            self.sink = open_output(cfg.output, cfg.display, cfg.loop.tick_rate_hz, out.sample_rate_hz,
                                    clock=self.clock)
            self.speaker.add_tap(self.sink.audio_tap)
            envelope = placeholders.SpeechEnvelope(out.sample_rate_hz)
            self.speaker.add_tap(envelope)

            if not self.options.null_models:
                self.camera = open_camera(cfg.camera, self.clock)
            listener = None
            if self.options.listen and not self.options.null_models:
                self.microphone = open_microphone(cfg.microphone, self.clock)
                listen_queue = BoundedQueue("mic->listener", cfg.microphone.queue_chunks,
                                            OverflowPolicy.DROP_OLDEST)
                speech_queue = BoundedQueue("listener->speech", 16, OverflowPolicy.BLOCK, put_timeout_s=5.0)
                self.queues += [listen_queue, speech_queue]
                self._speech_queue = speech_queue
                responder = placeholders.EnergyResponder(self._on_turn_end)
                listener = ListenerWorker(listen_queue, responder.on_chunk)
                self.workers = [
                    MicrophoneWorker(self.microphone, [listen_queue]),
                    listener,
                    SpeechWorker(placeholders.synthesize_espeak, self.speaker, speech_queue,
                                 self._on_first_audio),
                ]

            if self.options.null_models:
                perception, planner = None, _NullPlanner()
                renderer = _NullRenderer(cfg.render.width_px, cfg.render.height_px)
            else:
                perception = placeholders.LuminancePerception()
                planner = placeholders.EnvelopePlanner(envelope)
                renderer = placeholders.SketchRenderer(cfg.render.width_px, cfg.render.height_px)

            self.loop = AvatarLoop(
                clock=self.clock,
                tick_rate_hz=cfg.loop.tick_rate_hz,
                perception_stride_ticks=cfg.loop.perception_stride_ticks,
                late_tick_skip_perception_ms=cfg.loop.late_tick_skip_perception_ms,
                camera=self.camera,
                sink=self.sink,
                perception=perception,
                planner=planner,
                renderer=renderer,
                voice_level=(lambda: listener.voice_rms) if listener else None,
                stats_window_ticks=cfg.loop.stats_window_ticks,
                on_tick=self.options.on_tick,
            )
            self.speaker.start()
            if self.camera is not None:
                self.camera.start()
            if self.microphone is not None:
                self.microphone.start()
            for worker in self.workers:
                worker.start()
        except BaseException:
            self._close_devices()
            raise

    # ------------------------------------------------------------------ run

    def run(self) -> dict[str, Any]:
        """Tick until the duration, ``stop()`` or a signal; always finalises and returns the report."""
        if self.loop is None:
            self.start()
        try:
            self.loop.run(self.options.duration_s)
        except BaseException as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._close_devices()
        return self.report()

    def stop(self) -> None:
        """Safe from a signal handler: asks the loop to finish its tick and return."""
        self._stopped.set()
        if self.loop is not None:
            self.loop.stop()

    def interrupt_speech(self) -> None:
        """Barge-in: drop queued replies and speaker audio at once."""
        if getattr(self, "_speech_queue", None) is not None:
            self._speech_queue.put(ControlMessage("interrupt"))

    # ------------------------------------------------------------------ callbacks from workers

    def _on_turn_end(self, end_of_speech_ns: int, decided_ns: int) -> None:
        with self._turns_lock:
            turn = Turn(len(self.turns), end_of_speech_ns, decided_ns, "Thank you. One moment, please.")
            self.turns.append(turn)
        self._speech_queue.put(SpeakRequest(turn.reply_text, turn.turn_id))

    def _on_first_audio(self, turn_id: int, first_audio_ns: int) -> None:
        with self._turns_lock:
            self.turns[turn_id].first_audio_ns = first_audio_ns

    # ------------------------------------------------------------------ shutdown and report

    def _close_devices(self) -> None:
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            if worker.is_alive():
                worker.join(timeout=2.0)
        for device in (self.microphone, self.camera):
            if device is not None:
                try:
                    device.close()
                except Exception:  # noqa: BLE001 - closing must go on
                    log.exception("closing %s", getattr(device, "uri", device))
        if self.speaker is not None:
            self.speaker.close()
        if self.sink is not None and not self.output_info:
            try:
                self.output_info = self.sink.close() or {}
            except Exception as exc:  # noqa: BLE001 - e.g. ffmpeg died: report it, keep the report
                self.output_info = {"error": str(exc)}
                self.error = self.error or f"output: {exc}"
                log.error("output %s failed: %s", self.sink.uri, exc)

    def report(self) -> dict[str, Any]:
        cfg = self.config
        loop_report = self.loop.report() if self.loop else {}
        with self._turns_lock:
            turns = [t.to_json() for t in self.turns]
        latencies = [t["response_latency_ms"] for t in turns if t["response_latency_ms"] is not None]
        speaker = self.speaker
        return {
            "report_version": REPORT_VERSION,
            "edge_avatar_version": __version__,
            "board": cfg.board.name,
            "backend": cfg.backend.name,
            "sources": {"camera": cfg.camera.uri, "microphone": cfg.microphone.uri,
                        "output": cfg.output.uri, "audio_output": cfg.audio_output.uri},
            **loop_report,
            "turns": turns,
            "response_latency_ms": _summary(latencies),
            "workers": {w.worker_name: w.stats() for w in self.workers},
            "queues": queue_stats(self.queues),
            "camera_source": self.camera.stats() if self.camera is not None else {},
            "speaker": {} if speaker is None else {
                "sample_rate_hz": speaker.sample_rate_hz,
                "speech_s": round(speaker.speech_samples_played / speaker.sample_rate_hz, 3),
                "discarded_s": round(speaker.samples_discarded / speaker.sample_rate_hz, 3),
            },
            "output": self.output_info,
            "memory_mb": {"peak_rss": round(peak_rss_mb(), 1)},
            "error": self.error,
            **self.options.extra_report,
        }


def _summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    arr = np.asarray(values, dtype=np.float64)
    return {"count": len(values), "p50": round(float(np.percentile(arr, 50)), 1),
            "p95": round(float(np.percentile(arr, 95)), 1), "max": round(float(arr.max()), 1)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a report
    return path
