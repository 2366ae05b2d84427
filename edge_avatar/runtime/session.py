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
from edge_avatar.outputs.audio import AudioOutput, open_audio_output
from edge_avatar.runtime import placeholders
from edge_avatar.runtime.cpu_share import CpuTimes, share_pct
from edge_avatar.runtime.loop import AvatarLoop, TickState, queue_stats
from edge_avatar.runtime.queues import BoundedQueue, OverflowPolicy
from edge_avatar.runtime.workers import ListenerWorker, MicrophoneWorker

log = logging.getLogger(__name__)

REPORT_VERSION = 1


@dataclass
class SessionOptions:
    """What differs between a device run, the demo, a benchmark and a test (not site configuration)."""

    duration_s: float | None = None
    time_base: TimeBase | None = None
    null_models: bool = False               # bench: no perception, constant planner and renderer
    listen: bool = True                     # run the microphone / listening / conversation workers
    placeholder_perception: bool = False    # tests: the luminance stand-in instead of the vision models
    placeholder_motion: bool = False        # tests: the envelope planner and sketch face instead of the networks
    fleet: bool = True                      # report over MQTT (or the local JSON-lines file)
    systemd: bool = True                    # sd_notify READY / WATCHDOG when started by systemd
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
        self.perception = None
        self.listening = None
        self.conversation = None
        self.fleet = None
        self.planner = None
        self.renderer = None
        self.motion_stream = None
        self.notifier = None
        self.watchdog = None
        self.loop: AvatarLoop | None = None
        self._last_result_seq = -1
        self.restart_exit_status: int | None = None  # set when the fleet asks for a restart (exit 75)
        self._last_camera_event = 0
        self._stopped = threading.Event()
        self.output_info: dict[str, Any] = {}
        self.lip_sync: dict[str, Any] | None = None
        self.mouth_track = None                  # lipsync.MouthTrack of the finished file (for report.html)
        self.error: str | None = None
        self.machine_cpu_pct: dict[str, float] | None = None   # the whole machine's CPU time while the loop ran

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
            if self.options.listen and not self.options.null_models:
                self._build_listening(open_microphone)

            if self.options.null_models:
                perception, planner = None, _NullPlanner()
                renderer = _NullRenderer(cfg.render.width_px, cfg.render.height_px)
            else:
                perception = self._build_perception()
                planner = self._build_planner(envelope)
                renderer = self._build_renderer()
            self.planner, self.renderer = planner, renderer
            inputs = getattr(planner, "inputs", None)
            if cfg.display.show_captions and inputs is not None:
                from edge_avatar.outputs.captions import CaptionedSink, planner_captions  # noqa: PLC0415

                self.sink = CaptionedSink(self.sink, planner_captions(inputs), cfg.display.width_px,
                                          cfg.display.height_px, tuple(cfg.display.background_rgb))
            if cfg.avatar.stream_enabled and not self.options.null_models:
                from edge_avatar.render.stream import MotionStream  # noqa: PLC0415

                self.motion_stream = MotionStream(cfg.avatar)
                host, port = self.motion_stream.start()
                log.info("motion stream on ws://%s:%d%s", host, port, cfg.avatar.stream_path)

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
                voice_level=(lambda: self._listener_worker.voice_rms) if self.workers else None,
                stats_window_ticks=cfg.loop.stats_window_ticks,
                on_tick=self._on_tick,
                perception_mode=cfg.loop.perception_mode,
                perception_worker_nice=cfg.loop.perception_worker_nice,
            )
            self._build_fleet()
            self.speaker.start()
            if self.camera is not None:
                self.camera.start()
            if self.microphone is not None:
                self.microphone.start()
            for worker in self.workers:
                worker.start()
            # Everything is loaded and warm: tell systemd, then feed its watchdog only while frames advance.
            if self.options.systemd:
                from edge_avatar.fleet.systemd import SystemdNotifier, Watchdog  # noqa: PLC0415

                self.notifier = SystemdNotifier.from_env()
                self.notifier.ready(f"running at {cfg.loop.tick_rate_hz:g} Hz")
                self.watchdog = Watchdog(lambda: self.loop.frames_advanced, self.notifier)
                if self.watchdog.enabled:
                    self.watchdog.start()
        except BaseException:
            self._close_devices()
            raise

    def _build_planner(self, envelope):
        """The distilled planner (or the reference engine) fed by the conversation; the stand-in for tests."""
        if self.options.placeholder_motion:
            voice = (lambda: self._listener_worker.voice_rms) if self.workers else (lambda: 0.0)
            return placeholders.EnvelopePlanner(envelope, voice_level=voice)
        from edge_avatar.planner.runtime import build_planner  # noqa: PLC0415

        planner = build_planner(self.config)
        if hasattr(planner, "warm_up"):
            planner.warm_up()
        feed = planner.inputs
        if self.conversation is not None:
            self.conversation.motion = feed
            feed.set_persona(self.conversation.dialogue.persona.persona_vector())
        feed.set_turn_state("idle", 0)
        return planner

    def _build_renderer(self):
        """The face the config asks for: the neural student, the reference teacher, or the sketch."""
        cfg = self.config
        choice = "sketch" if self.options.placeholder_motion else cfg.avatar.renderer
        if choice == "sketch":
            return placeholders.SketchRenderer(cfg.render.width_px, cfg.render.height_px)
        if choice == "teacher":
            from edge_avatar.render.teacher import TeacherRenderer  # noqa: PLC0415

            return TeacherRenderer(cfg.render.width_px, cfg.render.height_px, 3, tuple(cfg.display.background_rgb))
        from edge_avatar.render.neural import NeuralRenderer  # noqa: PLC0415

        return NeuralRenderer.from_config(cfg, model_path=cfg.avatar.model_file or None)

    def _build_perception(self):
        if self.options.placeholder_perception or not self.config.perception.enabled:
            return placeholders.LuminancePerception()
        from edge_avatar.perception.pipeline import VisionPerception  # noqa: PLC0415

        self.perception = VisionPerception.from_config(self.config)
        self.perception.warm_up()
        return self.perception

    def _build_listening(self, open_microphone) -> None:
        """Microphone -> listening (AEC, VAD, ASR) -> turn-taking -> the brain -> speech."""
        from edge_avatar.dialogue import build_dialogue, dialogue_config  # noqa: PLC0415
        from edge_avatar.dialogue.turns import TurnTaker  # noqa: PLC0415
        from edge_avatar.listening import build_listening  # noqa: PLC0415
        from edge_avatar.runtime.conversation import Conversation  # noqa: PLC0415
        from edge_avatar.speech import open_tts  # noqa: PLC0415

        cfg = self.config
        self.microphone = open_microphone(cfg.microphone, self.clock)
        dialogue = build_dialogue(cfg)
        tts = open_tts(dialogue.persona, cfg.audio_output.sample_rate_hz, dialogue_config(cfg))
        self.conversation = Conversation(
            clock=self.clock, speaker=self.speaker, dialogue=dialogue, tts=tts,
            turn_taker=TurnTaker(dialogue_config(cfg)), include_user_text=cfg.privacy.log_transcripts)
        # The echo canceller's reference is tapped from the speaker here, before it starts.
        self.listening = build_listening(cfg.listening, self.clock, self.speaker,
                                         on_token=self.conversation.on_audio_token)
        attach_echo = getattr(self.microphone, "attach_speaker", None)
        if attach_echo is not None:  # a scripted room: the mic also hears the avatar, as a kiosk's would
            attach_echo(self.speaker)
        listen_queue = BoundedQueue("mic->listener", cfg.microphone.queue_chunks, OverflowPolicy.DROP_OLDEST)
        self.queues += [listen_queue, self.conversation.requests]
        self._listener_worker = ListenerWorker(listen_queue, self.listening.listener.process_chunk)
        self.workers = [MicrophoneWorker(self.microphone, [listen_queue]), self._listener_worker,
                        *self.listening.workers, self.conversation.worker]

    def _build_fleet(self) -> None:
        if not self.options.fleet:
            return
        from edge_avatar.fleet.agent import FleetAgent  # noqa: PLC0415
        from edge_avatar.fleet.telemetry import TelemetrySource  # noqa: PLC0415
        from edge_avatar.runtime.fleet_handlers import SessionCommandHandlers  # noqa: PLC0415

        cfg = self.config
        persona = self.conversation.dialogue.persona.name if self.conversation else ""
        self.fleet = FleetAgent(cfg, handlers=SessionCommandHandlers(self),
                                telemetry=TelemetrySource(self.live_stats, recent_turns=cfg.fleet.recent_turns),
                                status={"persona": persona, "board": cfg.board.name})
        self.fleet.start()
        if self.conversation is not None:
            self.conversation.event_listeners.append(self.fleet.event)

    # ------------------------------------------------------------------ run

    def run(self) -> dict[str, Any]:
        """Tick until the duration, ``stop()`` or a signal; always finalises and returns the report."""
        if self.loop is None:
            self.start()
        cpu_before = CpuTimes.read()
        try:
            self.loop.run(self.options.duration_s)
        except BaseException as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.machine_cpu_pct = share_pct(cpu_before, CpuTimes.read())
            self._close_devices()
        self._measure_lip_sync()
        return self.report()

    def _measure_lip_sync(self) -> None:
        """Lip sync from the finished file's pixels and audio (``edge_avatar.render.lipsync``), per turn."""
        path = self.output_info.get("path")
        if not self.config.output.measure_lip_sync or not path or self.options.null_models or self.error:
            return
        from edge_avatar.render.lipsync import LipSyncError, analyse_mp4, measure_turns  # noqa: PLC0415

        starts = [t["first_audio_s"] for t in self.conversation.turns_json()] if self.conversation else []
        try:
            from edge_avatar.perception.pipeline import VisionPerception  # noqa: PLC0415

            # A fresh instance: the live one keeps the visitor's last state for the report.
            track = analyse_mp4(path, VisionPerception.from_config(self.config),
                                progress=lambda m: log.info("%s", m))
            self.lip_sync = measure_turns(track, starts)
            self.mouth_track = track
        except LipSyncError as exc:
            log.warning("lip sync not measured: %s", exc)
            self.lip_sync = {"error": str(exc)}

    def stop(self) -> None:
        """Safe from a signal handler: asks the loop to finish its tick and return."""
        self._stopped.set()
        if self.loop is not None:
            self.loop.stop()

    def _on_tick(self, state: TickState) -> None:
        """After each tick: hand perception's view of the visitor to the conversation; report camera changes."""
        result = getattr(self.perception, "last_result", None)
        if self.conversation is not None and result is not None and result.seq != self._last_result_seq:
            self._last_result_seq = result.seq
            face = result.active
            blend = face.blendshapes if face is not None else None
            # jawOpen: about 0.01 for closed lips, 0.04-0.3 while speaking (measured on the demo visitor)
            mouth_closed = True if blend is None else float(blend[24]) < 0.07
            self.conversation.set_visual_cues(face is not None, bool(face is not None and face.attending > 0.5),
                                              mouth_closed)
            self.conversation.on_engagement(result.engagement, state.pts_ns)
        if self.motion_stream is not None and state.motion is not None:
            self.motion_stream.publish(state.motion)
        if self.fleet is not None and self.loop is not None:
            # The perception worker may append camera events meanwhile: advance by what was read, not len().
            new_events = self.loop.counters.events[self._last_camera_event:]
            self._last_camera_event += len(new_events)
            for event in new_events:
                kind = {"camera_lost": "degraded", "camera_recovered": "recovered"}.get(event.kind)
                if kind:
                    self.fleet.event(kind, component="camera", detail=event.detail, pts_s=round(event.pts_ns / 1e9, 3))
        if self.options.on_tick is not None:
            self.options.on_tick(state)

    def live_stats(self) -> dict[str, Any]:
        """A cheap snapshot for telemetry (called from the fleet thread)."""
        report = self.loop.report() if self.loop else {}
        report["turns"] = self.conversation.turns_json() if self.conversation else []
        return report

    # ------------------------------------------------------------------ shutdown and report

    def _close_devices(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.notifier is not None:
            self.notifier.stopping("finishing the output")
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
        if self.motion_stream is not None:
            self.motion_stream.close()
        if self.speaker is not None:
            self.speaker.close()
        if self.sink is not None and not self.output_info:
            try:
                self.output_info = self.sink.close() or {}
            except Exception as exc:  # noqa: BLE001 - e.g. ffmpeg died: report it, keep the report
                self.output_info = {"error": str(exc)}
                self.error = self.error or f"output: {exc}"
                log.error("output %s failed: %s", self.sink.uri, exc)
        if self.fleet is not None:
            self.fleet.stop()
            self.fleet = None

    @staticmethod
    def _component_stats(component: Any) -> dict[str, Any]:
        if component is None:
            return {}
        out: dict[str, Any] = {"kind": type(component).__name__}
        stats = getattr(component, "stats", None)
        if callable(stats):
            out.update(stats())
        counters = getattr(component, "counters", None)
        if isinstance(counters, dict):
            out["counters"] = dict(counters)
        inputs = getattr(component, "inputs", None)
        if inputs is not None and isinstance(getattr(inputs, "counters", None), dict):
            out["input_counters"] = dict(inputs.counters)
        model = getattr(component, "model_path", None)
        if model is not None:
            out.setdefault("model", str(model))
        engine = getattr(component, "engine", None)
        if isinstance(engine, dict):
            out.setdefault("engine", engine)
        return out

    def _engines_summary(self, perception: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Backend, precision and the reason, per model that ran: what ``engines build`` chose, or fp32 and why."""
        out: dict[str, dict[str, Any]] = dict(perception.get("engines") or {})
        for component in (self.planner, self.renderer):
            engine = getattr(component, "engine", None)
            if isinstance(engine, dict) and engine.get("model"):
                out[engine["model"]] = {k: v for k, v in engine.items() if k != "model"}
        return out

    def _perception_summary(self) -> dict[str, Any]:
        if self.perception is None:
            return {"models": "placeholder" if not self.options.null_models else "none"}
        result = self.perception.last_result
        return {"models": "vision", "engines": self.perception.models.choices,
                "last_reason": result.reason if result else None,
                "last_engagement": result.engagement if result else None}

    def report(self) -> dict[str, Any]:
        cfg = self.config
        loop_report = self.loop.report() if self.loop else {}
        turns = self.conversation.turns_json() if self.conversation else []
        sync = self.lip_sync or {}
        for turn, offset in zip(turns, sync.get("turns", [])):
            turn["av_offset_ms"] = offset
        latencies = [t["response_latency_ms"] for t in turns if t["response_latency_ms"] is not None]
        perception = self._perception_summary()
        speaker = self.speaker
        return {
            "report_version": REPORT_VERSION,
            "edge_avatar_version": __version__,
            "board": cfg.board.name,
            "backend": cfg.backend.name,
            "tick_rate_hz": cfg.loop.tick_rate_hz,
            "sources": {"camera": cfg.camera.uri, "microphone": cfg.microphone.uri,
                        "output": cfg.output.uri, "audio_output": cfg.audio_output.uri},
            **loop_report,
            "turns": turns,
            "response_latency_ms": _summary(latencies),
            "end_of_turn_wait_ms": _summary([t["end_of_turn_wait_ms"] for t in turns
                                             if t.get("end_of_turn_wait_ms") is not None]),
            # What the avatar itself adds once the turn is over: the final words, the answer, the first sentence.
            "response_latency_excluding_wait_ms": _summary([
                t["response_latency_ms"] - t["end_of_turn_wait_ms"] for t in turns
                if t["response_latency_ms"] is not None and t.get("end_of_turn_wait_ms") is not None]),
            "av_offset_ms": _offset_summary([t["av_offset_ms"] for t in turns if t.get("av_offset_ms") is not None]),
            "lip_sync": {k: v for k, v in sync.items() if k not in ("turns",)} if sync else None,
            "conversation_events": self.conversation.events if self.conversation else [],
            "engines": self._engines_summary(perception),
            "perception": perception,
            "planner": self._component_stats(self.planner),
            "renderer": self._component_stats(self.renderer),
            "motion_stream": self.motion_stream.stats() if self.motion_stream is not None else None,
            "listening": self.listening.listener.stats() if self.listening else {},
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
            "machine_cpu_pct": self.machine_cpu_pct,
            "error": self.error,
            "exit_status": self.restart_exit_status,
            **self.options.extra_report,
        }


def _summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    arr = np.asarray(values, dtype=np.float64)
    return {"count": len(values), "p50": round(float(np.percentile(arr, 50)), 1),
            "p95": round(float(np.percentile(arr, 95)), 1), "max": round(float(arr.max()), 1)}


def _offset_summary(offsets_ms: list[float]) -> dict[str, float | int]:
    """Lip-sync offsets: p50/p95/max of their size (the target is on |offset|), and the signed median."""
    summary = _summary([abs(v) for v in offsets_ms])
    if offsets_ms:
        summary["signed_p50"] = round(float(np.median(offsets_ms)), 1)
    return summary


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_report_files(session: "Session", report: dict[str, Any], path: str | Path) -> list[Path]:
    """report.json, and report.html beside it when the config asks (with the lip-sync traces if measured)."""
    written = [write_report(report, path)]
    if session.config.output.write_html_report:
        from edge_avatar.runtime.report_html import write_report_html  # noqa: PLC0415

        track = session.mouth_track
        opening = envelope = None
        fps = float(session.config.loop.tick_rate_hz)
        if track is not None:
            opening, fps = track.opening, track.fps
            envelope = track.envelope(track.times_s)
        written.append(write_report_html(report, Path(path).with_suffix(".html"), opening, envelope, fps))
    return written


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a report
    return path
