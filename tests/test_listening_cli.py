"""``edge-avatar transcribe`` as an operator runs it, the bench registration, and the session wiring
(microphone worker -> listener worker -> transcriber worker) on a file microphone."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from edge_avatar.listening.bench import BECKETT_TEXT, moonshine_asset
from edge_avatar.listening.metrics import word_error_rate

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_transcribe_json_on_a_real_recording(cli):
    result = cli("transcribe", str(moonshine_asset("beckett.wav")), "--json", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["recognizer"] == "whisper"
    assert len(doc["segments"]) == 6
    first = doc["segments"][0]
    assert set(first) >= {"start_s", "end_s", "text"} and 0.1 < first["start_s"] < first["end_s"] < 1.5
    assert word_error_rate(BECKETT_TEXT, doc["text"]).wer < 0.1
    assert doc["warnings"] == []


def test_transcribe_reports_a_wav_that_is_not_speech(cli):
    result = cli("transcribe", str(moonshine_asset("error.wav")), "--json", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["segments"] == [] and doc["text"] == ""
    assert "no speech found" in doc["warnings"]
    assert doc["resampled_from_hz"] == 48000


def test_transcribe_refuses_an_unreadable_file(cli, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(200))
    result = cli("transcribe", str(bad), "--json")
    assert result.returncode == 1
    assert "bad.wav" in result.stderr and "ffmpeg -i" in result.stderr
    missing = cli("transcribe", str(tmp_path / "nope.wav"))
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_bench_listening_is_registered():
    from edge_avatar.bench import BENCH_MODULES, BENCHMARKS

    assert "edge_avatar.listening.bench" in BENCH_MODULES
    import edge_avatar.listening.bench  # noqa: F401

    assert "listening" in BENCHMARKS


def test_session_wiring_with_a_file_microphone(tmp_path):
    """The wiring a session uses: MicrophoneWorker -> BoundedQueue -> ListenerWorker(listener.process_chunk),
    the transcriber on its own worker, the speaker tapped for the echo reference; accelerated time."""
    import wave

    from edge_avatar.clock import AcceleratedTimeBase, MediaClock
    from edge_avatar.config import MicrophoneConfig
    from edge_avatar.listening import ListeningConfig, build_listening
    from edge_avatar.listening.offline import read_audio
    from edge_avatar.outputs.audio import VirtualAudioOutput
    from edge_avatar.runtime.queues import BoundedQueue, OverflowPolicy
    from edge_avatar.runtime.workers import ListenerWorker, MicrophoneWorker
    from edge_avatar.sensors.microphone import WavFileMicrophone

    x, rate = read_audio(moonshine_asset("beckett.wav"))
    path = tmp_path / "visitor.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.concatenate([x, np.zeros(rate)]) * 32767).astype("<i2").tobytes())

    time_base = AcceleratedTimeBase()
    speaker = VirtualAudioOutput(time_base, 22050)
    clock = MediaClock(speaker, time_base)
    finals, tokens = [], []
    done = threading.Event()

    def on_event(event):
        if event.is_final:
            finals.append(event)
            if len(finals) == 6:
                done.set()

    listening = build_listening(ListeningConfig(), clock, speaker, on_token=tokens.append, on_event=on_event)
    microphone = WavFileMicrophone(MicrophoneConfig(uri=f"file://{path}"), clock, str(path))
    queue = BoundedQueue("mic->listener", 500, OverflowPolicy.DROP_OLDEST)
    workers = [MicrophoneWorker(microphone, [queue]), ListenerWorker(queue, listening.listener.process_chunk),
               *listening.workers]
    speaker.start()
    microphone.start()
    for worker in workers:
        worker.start()
    try:
        for _ in range(600):   # pace the virtual clock like a tick loop would
            clock.sleep_until_ns(clock.now_ns() + 20_000_000)
            if done.wait(0.01):
                break
    finally:
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(5.0)
    text = " ".join(e.text for e in finals)
    assert word_error_rate(BECKETT_TEXT, text).wer < 0.15, text
    assert all(w.errors == 0 for w in workers), [w.last_error for w in workers]
    pts = [t.pts_ns for t in tokens]
    assert pts == sorted(pts) and np.all(np.diff(pts) == 10_000_000)
    assert listening.listener.reference is not None and listening.listener.reference.blocks > 0
    assert all(e.decided_ns >= e.end_ns for e in finals)
    assert queue.stats()["dropped"] == 0


@pytest.mark.slow
def test_bench_listening_quick_runs_and_meets_its_targets():
    from edge_avatar.listening.bench import bench_listening

    result = bench_listening(quick=True)
    print(json.dumps({k: v for k, v in result.items() if k != "asr"}, indent=1))
    assert result["targets"]["wer_real_speech_under_10pct"]
    assert result["targets"]["erle_at_least_25db"]
    assert result["targets"]["double_talk_visitor_transcribed"]
    assert result["capture"]["frame_ms"]["capture_total"]["p50"] < 5.0
