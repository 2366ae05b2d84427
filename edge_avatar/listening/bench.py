"""``bench listening``: what hearing costs and how well it hears, on this machine.

Why this module exists: the figures the issue asks for, measured the same
way every time and printed as one JSON document (``edge-avatar bench
listening --json``):

- cost per 10 ms frame of each capture-side stage (webrtcvad gate + Silero,
  echo canceller with and without the residual suppressor, prosody), warmed
  up, repeated, min/p50/p95;
- recognizer real-time factor on the real recording (decode time / audio
  time) and its word error rate there;
- final-transcript latency: a 3 s utterance played in real time through the
  listener with the recognizer on its own worker; latency = the media time
  the final transcript became available minus the true end of speech
  (target: within 400 ms);
- echo return loss enhancement on the simulated kiosk room with the avatar
  talking and the visitor silent, and the visitor's words during double talk.

The test material is the same as the tests': moonshine-voice's real
recordings and espeak-ng voices.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.bench import register

log = logging.getLogger(__name__)

# A Tale of Two Cities, chapter 1 (public domain), as far as moonshine-voice's two_cities.wav reads it.
TWO_CITIES_TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it "
    "was the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything "
    "before us, we had nothing before us, we were all going direct to Heaven, we were all going direct the "
    "other way - in short, the period was so far like the present period, that some of its noisiest "
    "authorities insisted on its being received, for good or for evil, in the superlative degree of "
    "comparison only.")
# Samuel Beckett, Worstward Ho (1983), as read in moonshine-voice's beckett.wav.
BECKETT_TEXT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
AVATAR_REPLY = ("Cardiology is on the second floor. Take the lift on your left, then follow the red signs to "
                "the waiting area. A nurse will meet you there and take your details. Please have your "
                "appointment letter ready.")
VISITOR_BARGE_IN = "Sorry, is it on the second floor?"
LATENCY_UTTERANCES = (
    "Where can I find the cardiology department, please?",
    "I have an appointment with the eye clinic at ten.",
    "Is there a pharmacy open on the ground floor?",
    "My husband is waiting in the car park outside.",
    "Could you call a porter with a wheelchair for me?",
)
TARGET_FINAL_LATENCY_MS = 400.0
TARGET_ERLE_DB = 25.0


def moonshine_asset(name: str) -> Path:
    """A real recording shipped inside moonshine-voice (found without importing the package)."""
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("moonshine-voice is not installed: pip install --no-deps moonshine-voice==0.1.5")
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from moonshine-voice")
    return path


def espeak_utterance(text: str, voice: str = "en-us+m3", rate_wpm: int = 140,
                     level_dbfs: float = -24.0) -> np.ndarray:
    """espeak-ng speech at 16 kHz, trimmed to its exact sounding extent, at ``level_dbfs`` RMS."""
    from edge_avatar.listening.resample import resample  # noqa: PLC0415
    from edge_avatar.scenario.audio import synthesize_espeak  # noqa: PLC0415

    raw, rate = synthesize_espeak(text, voice=voice, rate_wpm=rate_wpm, pitch=50)
    x = resample(raw, rate, 16000)
    sounding = np.nonzero(np.abs(x) > 1e-3)[0]
    x = x[sounding[0]:sounding[-1] + 1]
    return (x * (10.0 ** (level_dbfs / 20.0) / np.sqrt(np.mean(x * x)))).astype(np.float32)


def _summary_ms(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"count": int(arr.size), "min": round(float(arr.min()), 4), "p50": round(float(np.percentile(arr, 50)), 4),
            "p95": round(float(np.percentile(arr, 95)), 4), "max": round(float(arr.max()), 4)}


def stage_costs(seconds: float = 10.0) -> dict[str, Any]:
    """Per-10 ms-frame cost of VAD, AEC and prosody on real speech with echo."""
    from edge_avatar.listening.aec import EchoCanceller  # noqa: PLC0415
    from edge_avatar.listening.offline import read_audio  # noqa: PLC0415
    from edge_avatar.listening.options import ListeningConfig  # noqa: PLC0415
    from edge_avatar.listening.prosody import ProsodyTracker  # noqa: PLC0415
    from edge_avatar.listening.resample import ReferenceSignal, resample  # noqa: PLC0415
    from edge_avatar.listening.vad import VoiceActivityDetector  # noqa: PLC0415

    x, rate = read_audio(moonshine_asset("two_cities.wav"))
    speech = resample(x, rate, 16000)[:int(seconds * 16000)]
    frames = len(speech) // 160
    config = ListeningConfig()
    vad = VoiceActivityDetector(config)
    reference = ReferenceSignal(22050, 16000)
    played = np.roll(resample(speech, 16000, 22050), 5000) * 0.5
    reference(played, 0)
    out: dict[str, Any] = {}
    costs: dict[str, list[float]] = {"vad": [], "aec_linear": [], "aec_with_suppressor": [], "reference_read": [],
                                     "prosody": []}
    aec_lin = EchoCanceller(ListeningConfig(aec_residual_suppression=False))
    aec_res = EchoCanceller(config)
    prosody = ProsodyTracker(config)
    for warm in (True, False):
        for i in range(frames if not warm else 50):
            frame = speech[i * 160:(i + 1) * 160]
            t0 = time.perf_counter_ns()
            ref = reference.read(i * 160, 160)
            t1 = time.perf_counter_ns()
            aec_lin.process(frame, ref)
            t2 = time.perf_counter_ns()
            aec_res.process(frame, ref)
            t3 = time.perf_counter_ns()
            voiced, _ = vad.process_frame(frame)
            t4 = time.perf_counter_ns()
            prosody.process_frame(frame, True)
            t5 = time.perf_counter_ns()
            if not warm:
                costs["reference_read"].append((t1 - t0) / 1e6)
                costs["aec_linear"].append((t2 - t1) / 1e6)
                costs["aec_with_suppressor"].append((t3 - t2) / 1e6)
                costs["vad"].append((t4 - t3) / 1e6)
                costs["prosody"].append((t5 - t4) / 1e6)
    out["frame_ms"] = {k: _summary_ms(v) for k, v in costs.items()}
    total = [a + b + c + d for a, b, c, d in zip(costs["reference_read"], costs["aec_with_suppressor"], costs["vad"],
                                                  costs["prosody"])]
    out["frame_ms"]["capture_total"] = _summary_ms(total)
    out["capture_cpu_fraction_p50"] = round(float(np.percentile(total, 50)) / 10.0, 4)
    out["vad"] = vad.stats()
    return out


def asr_accuracy_and_speed(recognizer, config) -> dict[str, Any]:
    """WER and real-time factor of the recognizer through the whole listener on the real recordings."""
    from edge_avatar.listening.metrics import word_error_rate  # noqa: PLC0415
    from edge_avatar.listening.offline import read_audio, transcribe_samples  # noqa: PLC0415

    out = {}
    for name, truth in (("two_cities.wav", TWO_CITIES_TEXT), ("beckett.wav", BECKETT_TEXT)):
        x, rate = read_audio(moonshine_asset(name))
        start = time.perf_counter()
        result = transcribe_samples(x, rate, config, recognizer=recognizer)
        wall_s = time.perf_counter() - start
        asr = result.stats.get("asr", {})
        decode_s = asr.get("compute_ms_mean", 0.0) * asr.get("decodes", 0) / 1000.0
        out[name] = {"audio_s": round(result.duration_s, 2), "segments": len(result.segments),
                     "wer": word_error_rate(truth, result.text).to_json(),
                     "asr_real_time_factor": round(decode_s / result.duration_s, 4),
                     "pipeline_real_time_factor": round(wall_s / result.duration_s, 4),
                     "text": result.text}
    return out


def final_latency(recognizer, config, utterances: tuple[str, ...] = LATENCY_UTTERANCES) -> dict[str, Any]:
    """Real-time run: speech then silence through the listener; the final transcript's lateness."""
    from edge_avatar.clock import MediaClock, RealTimeBase  # noqa: PLC0415
    from edge_avatar.frames import AudioChunk, samples_to_ns  # noqa: PLC0415
    from edge_avatar.listening.listener import Listener  # noqa: PLC0415
    from edge_avatar.listening.metrics import word_error_rate  # noqa: PLC0415
    from edge_avatar.outputs.audio import VirtualAudioOutput  # noqa: PLC0415

    rows = []
    for text in utterances:
        speech = espeak_utterance(text)
        lead = np.zeros(8000, dtype=np.float32)
        track = np.concatenate([lead, speech, np.zeros(16000, dtype=np.float32)])
        noise = np.random.default_rng(3).standard_normal(len(track)).astype(np.float32) * 10 ** (-65 / 20)
        track = track + noise
        time_base = RealTimeBase()
        speaker = VirtualAudioOutput(time_base, 22050)
        clock = MediaClock(speaker, time_base)
        listener = Listener(config, recognizer=recognizer, threaded_asr=True, clock=clock)
        finals: list = []
        partials: list = []
        got_final = threading.Event()

        def on_event(event, finals=finals, partials=partials, got_final=got_final):
            (finals if event.is_final else partials).append(event)
            if event.is_final:
                got_final.set()

        listener.on_event = on_event
        worker = listener.workers()[0]
        worker.start()
        speaker.start()
        origin_ns = clock.now_ns()
        try:
            for seq, first in enumerate(range(0, len(track) - 159, 160)):
                chunk_end_ns = origin_ns + samples_to_ns(first + 160, 16000)
                clock.sleep_until_ns(chunk_end_ns)   # a real microphone delivers the chunk once it is complete
                listener.process_chunk(AudioChunk(origin_ns + samples_to_ns(first, 16000), seq,
                                                  track[first:first + 160], 16000))
                if got_final.is_set():
                    break
        finally:
            worker.stop()
            worker.join(2.0)
        truth_end_ns = origin_ns + samples_to_ns(len(lead) + len(speech), 16000)
        final = finals[0] if finals else None
        rows.append({
            "text": text, "speech_s": round(len(speech) / 16000, 2),
            "final_text": final.text if final else None,
            "wer": word_error_rate(text, final.text).wer if final else 1.0,
            "final_latency_ms": round((final.decided_ns - truth_end_ns) / 1e6, 1) if final else None,
            "vad_end_error_ms": round((listener.segments[0].end_ns - truth_end_ns) / 1e6, 1)
            if listener.segments else None,
            "partials": len(partials),
            "first_partial_after_onset_ms": round((partials[0].decided_ns - origin_ns - samples_to_ns(len(lead), 16000))
                                                  / 1e6, 1) if partials else None,
            "speculation_used": worker.speculations_used > 0,
            "final_compute_ms": round(final.compute_ms, 1) if final else None,
        })
    latencies = [r["final_latency_ms"] for r in rows if r["final_latency_ms"] is not None]
    return {"utterances": rows, "final_latency_ms": _summary_ms(latencies) if latencies else {},
            "hangover_ms": config.vad_hangover_ms, "partial_interval_ms": config.asr_partial_interval_ms,
            "target_ms": TARGET_FINAL_LATENCY_MS}


def echo_cancellation(recognizer, config) -> dict[str, Any]:
    """ERLE on the simulated kiosk room (avatar only) and the visitor's words during double talk."""
    from edge_avatar.listening.listener import Listener  # noqa: PLC0415
    from edge_avatar.listening.metrics import erle_db, word_error_rate  # noqa: PLC0415
    from edge_avatar.listening.simulate import build_echo_scene, kiosk_room_responses, play_scene  # noqa: PLC0415
    from edge_avatar.scenario.audio import synthesize_espeak  # noqa: PLC0415

    responses = kiosk_room_responses()
    avatar = synthesize_espeak(AVATAR_REPLY, voice="en-gb", rate_wpm=165, pitch=50)[0]
    scene = build_echo_scene(avatar, 22050, responses, noise_dbfs=-70.0)
    clean: list[np.ndarray] = []
    listener = Listener(config, recognizer=recognizer, on_clean_audio=lambda frame, pts: clean.append(frame))
    play_scene(listener, scene)
    out_signal = np.concatenate(clean)
    delay = listener.aec.delay_samples
    residual = out_signal[delay:delay + len(scene.mic)]
    mic = scene.mic[:len(residual)]
    converged = slice(3 * 16000, len(residual))
    visitor = espeak_utterance(VISITOR_BARGE_IN)
    scene2 = build_echo_scene(avatar, 22050, responses, visitor=visitor, visitor_start_s=7.0, noise_dbfs=-70.0)
    listener2 = Listener(config, recognizer=recognizer)
    play_scene(listener2, scene2)
    texts = [e.text for e in listener2.events if e.is_final and e.start_ns >= 6.5e9]
    return {
        "room": {"rt60_s": responses.rt60_s, "echo_tail_after_filter_db":
                 round(responses.tail_energy_db(config.aec_filter_length_ms), 1)},
        "erle_db": round(erle_db(mic, residual), 2),
        "erle_after_3s_db": round(erle_db(mic[converged], residual[converged]), 2),
        "false_segments_avatar_only": len([s for s in listener.segments if not s.discarded]),
        "double_talk_visitor_text": " ".join(texts),
        "double_talk_wer": round(word_error_rate(VISITOR_BARGE_IN, " ".join(texts)).wer, 4),
        "aec": listener.stats().get("aec", {}),
        "target_erle_db": TARGET_ERLE_DB,
    }


@register("listening", "VAD/AEC/prosody cost per 10 ms, ASR speed and WER, final-transcript latency, ERLE")
def bench_listening(quick: bool = False) -> dict[str, Any]:
    import os  # noqa: PLC0415

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from edge_avatar.listening.asr import WhisperRecognizer  # noqa: PLC0415
    from edge_avatar.listening.options import ListeningConfig  # noqa: PLC0415

    config = ListeningConfig()
    recognizer = WhisperRecognizer(config)
    recognizer.warm_up()
    result: dict[str, Any] = {"recognizer": f"whisper {recognizer.model_name} ({config.asr_compute_type}, "
                                            f"beam {config.asr_beam_size}, {config.asr_cpu_threads} threads)"}
    result["capture"] = stage_costs(4.0 if quick else 20.0)
    result["asr"] = asr_accuracy_and_speed(recognizer, config)
    result["final_transcript"] = final_latency(recognizer, config,
                                               LATENCY_UTTERANCES[:2] if quick else LATENCY_UTTERANCES)
    result["echo"] = echo_cancellation(recognizer, config)
    p50 = result["final_transcript"]["final_latency_ms"].get("p50", 1e9)
    result["targets"] = {
        "wer_real_speech_under_10pct": result["asr"]["two_cities.wav"]["wer"]["wer"] < 0.10,
        "final_transcript_p50_within_400ms": p50 <= TARGET_FINAL_LATENCY_MS,
        "erle_at_least_25db": result["echo"]["erle_after_3s_db"] >= TARGET_ERLE_DB,
        "double_talk_visitor_transcribed": result["echo"]["double_talk_wer"] < 0.2,
    }
    return result
