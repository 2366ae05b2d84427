"""The offline queue, the local JSON-lines fallback, the privacy filter, and that publishing never blocks."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import numpy as np
import pytest

from edge_avatar.config import load_config
from edge_avatar.fleet.agent import FleetAgent
from edge_avatar.fleet.messages import DeviceTopics, PrivacyPolicy, TopicError, parse_topic
from edge_avatar.fleet.spool import SPOOL_FILE, MemorySpool, Outgoing, SqliteSpool
from edge_avatar.fleet.telemetry import SysfsProbe, TelemetrySource


def _spool(kind, tmp_path, max_bytes):
    return SqliteSpool(tmp_path / "q", max_bytes) if kind == "sqlite" else MemorySpool(max_bytes)


def _event(i: int, size: int = 100) -> Outgoing:
    return Outgoing("events", json.dumps({"seq": i, "pad": "e" * size}).encode(), tag=i)


def _telemetry(i: int, size: int = 100) -> Outgoing:
    return Outgoing("telemetry", json.dumps({"sample": i, "pad": "t" * size}).encode(), retain=True, droppable=True)


def _seqs(spool) -> list[tuple[str, int]]:
    out = []
    for e in spool.read_after(0, 10**6):
        body = json.loads(e.payload)
        out.append((e.leaf, body.get("seq", body.get("sample"))))
    return out


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_queue_keeps_order_and_deletes_on_ack(kind, tmp_path):
    spool = _spool(kind, tmp_path, 10**6)
    spool.append([_event(1), _telemetry(1), _event(2)])
    entries = spool.read_after(0, 2)
    assert [e.leaf for e in entries] == ["events", "telemetry"]
    assert spool.read_after(entries[-1].id, 10)[0].leaf == "events"
    spool.delete([entries[0].id])
    assert _seqs(spool) == [("telemetry", 1), ("events", 2)]
    assert len(spool) == 2 and spool.size_bytes == sum(e.size_bytes for e in spool.read_after(0, 10))
    spool.delete([entries[0].id])  # acknowledging twice is harmless
    assert len(spool) == 2
    assert spool.first_id() == entries[1].id and spool.last_id == spool.read_after(0, 10)[-1].id
    spool.delete([e.id for e in spool.read_after(0, 10)])
    assert spool.first_id() is None and spool.last_id == entries[0].id + 2  # the newest id is remembered


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_full_queue_drops_oldest_telemetry_first_and_keeps_events(kind, tmp_path):
    batch = []
    for i in range(5):
        batch += [_telemetry(i), _event(i)]
    spool = _spool(kind, tmp_path, sum(m.size_bytes for m in batch))
    result = spool.append(batch)
    assert not result.refused and result.dropped_telemetry == 0  # exactly full
    result = spool.append([_event(5), _event(6)])
    assert result.dropped_telemetry == 2 and not result.refused
    assert _seqs(spool)[:3] == [("events", 0), ("events", 1), ("telemetry", 2)]  # telemetry 0, 1 went first
    assert [s for leaf, s in _seqs(spool) if leaf == "events"] == [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_events_are_refused_only_at_the_hard_cap(kind, tmp_path):
    first = [_telemetry(0), _event(1), _event(2)]
    spool = _spool(kind, tmp_path, sum(m.size_bytes for m in first))
    spool.append(first)
    result = spool.append([_event(3), _event(4), _telemetry(5)])
    assert result.dropped_telemetry == 1
    assert [m.tag for m in result.refused if not m.droppable] == [4]
    assert [m.droppable for m in result.refused] == [False, True]
    assert [s for _, s in _seqs(spool)] == [1, 2, 3]


def test_sqlite_queue_survives_a_restart_with_its_meta(tmp_path):
    spool = SqliteSpool(tmp_path, 10**6)
    spool.append([_event(1), _event(2)], meta={"event_seq": "2"})
    first = spool.read_after(0, 1)[0]
    spool.delete([first.id])
    spool.close()
    again = SqliteSpool(tmp_path, 10**6)
    assert _seqs(again) == [("events", 2)]
    assert again.get_meta("event_seq") == "2"
    assert again.last_id == first.id + 1  # the newest id survives the restart
    again.append([_event(3)])
    assert again.read_after(0, 10)[-1].id > first.id  # ids never go backwards
    again.close()


def test_a_corrupt_queue_file_is_moved_aside_and_a_fresh_one_started(tmp_path):
    (tmp_path / SPOOL_FILE).write_bytes(b"this is not a database" * 100)
    spool = SqliteSpool(tmp_path, 10**6)
    assert len(spool) == 0
    spool.append([_event(1)])
    assert len(spool) == 1
    assert list(tmp_path.glob(f"{SPOOL_FILE}.corrupt-*"))


# --------------------------------------------------------------------------- topics and privacy


def test_topics_and_parsing():
    t = DeviceTopics("st-marys", "kiosk-1")
    assert t.status == "edge-avatar/v1/st-marys/kiosk-1/status"
    assert t.cmd("say") == "edge-avatar/v1/st-marys/kiosk-1/cmd/say"
    assert parse_topic(t.cmd("say")).command == "say"
    assert parse_topic(t.topic("events")).leaf == "events"
    assert parse_topic("other/v1/a/b/status") is None
    assert parse_topic("edge-avatar/v1/a/b/events/extra") is None
    for bad in ("a/b", "+", "#", "", "x" * 65, "sp ace"):
        with pytest.raises(TopicError):
            DeviceTopics(bad, "kiosk")


def test_privacy_policy_strips_transcripts_audio_images_and_buffers():
    fields = {"response_latency_ms": 512.0, "text": "I have chest pain", "reply_text": "Please sit down",
              "partial_transcript": "I have", "nested": {"transcript": "x", "ok": 1, "jpeg_b64": "..."},
              "audio": "UklGR...", "image": [1, 2], "frame_jpeg": "abc", "raw": b"\x00\x01",
              "arr": np.zeros(3), "n": np.float32(2.5), "bad": float("nan"), "turns": [{"utterance": "hi", "ms": 3}]}
    clean, removed = PrivacyPolicy().scrub(fields)
    text = json.dumps(clean)
    for secret in ("chest pain", "Please sit", "I have", "UklGR", "abc"):
        assert secret not in text
    assert clean["response_latency_ms"] == 512.0 and clean["nested"] == {"ok": 1, "jpeg_b64": "..."}
    assert clean["n"] == 2.5 and clean["bad"] is None and clean["turns"] == [{"ms": 3}]
    assert {"text", "reply_text", "partial_transcript", "nested.transcript", "audio", "image", "frame_jpeg",
            "raw", "arr", "turns[0].utterance"} <= set(removed)

    allowed = PrivacyPolicy(transcripts=True)
    clean, _ = allowed.scrub(fields)
    assert clean["text"] == "I have chest pain" and "audio" not in clean and "image" not in clean
    clean, _ = PrivacyPolicy(transcripts=True, audio=True, images=True).scrub(fields)
    assert clean["audio"] == "UklGR..." and clean["image"] == [1, 2] and "raw" not in clean and "arr" not in clean


# --------------------------------------------------------------------------- the agent without a broker


def _local_config(tmp_path, *extra: str):
    return load_config(overrides=[f"site.state_dir={tmp_path}", "site.name=st-marys", "site.device_id=kiosk-9",
                                  "fleet.telemetry_interval_s=0.1", *extra])


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _quiet_telemetry(stats=None):
    return TelemetrySource(stats, board=SysfsProbe("/nonexistent"))


def test_without_a_broker_the_same_messages_go_to_a_jsonl_file(tmp_path):
    frames = {"rendered": 0}

    def stats():
        frames["rendered"] += 30
        return {"frames": {"rendered": frames["rendered"], "dropped": 1},
                "stages_ms": {"renderer": {"count": 9, "p50": 4.0, "p95": 6.0}},
                "turns": [{"response_latency_ms": 700.0, "reply_text": "never published"}]}

    agent = FleetAgent(_local_config(tmp_path), telemetry=_quiet_telemetry(stats), status={"persona": "calm"})
    agent.start()
    assert agent.mode == "local"
    for i in range(5):
        agent.event("turn_done", turn_id=i, response_latency_ms=500 + i, reply_text="Hello, Mrs Smith")
    time.sleep(0.35)
    agent.stop()
    lines = _read_jsonl(tmp_path / "fleet.jsonl")
    topics = [line["topic"].rsplit("/", 1)[-1] for line in lines]
    assert topics[0] == "status" and lines[0]["payload"]["state"] == "online" and lines[0]["retain"]
    assert lines[0]["payload"]["persona"] == "calm"
    assert topics[-1] == "status" and lines[-1]["payload"]["state"] == "offline"
    events = [line["payload"] for line in lines if line["topic"].endswith("/events")]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["data"] == {"turn_id": 0, "response_latency_ms": 500} and events[0]["redacted"] == ["reply_text"]
    telemetry = [line["payload"] for line in lines if line["topic"].endswith("/telemetry")]
    assert len(telemetry) >= 2
    assert telemetry[-1]["fps"] > 0 and telemetry[-1]["stages_ms"]["renderer"] == {"p50": 4.0, "p95": 6.0}
    assert telemetry[-1]["response_latency_ms"]["p50"] == 700.0
    assert "Mrs Smith" not in (tmp_path / "fleet.jsonl").read_text()
    assert "never published" not in (tmp_path / "fleet.jsonl").read_text()


def test_transcripts_are_published_only_when_the_site_says_so(tmp_path):
    agent = FleetAgent(_local_config(tmp_path, "privacy.publish_transcripts=true"), telemetry=_quiet_telemetry())
    agent.start()
    agent.event("turn_done", reply_text="Hello, Mrs Smith", audio=b"RIFF", image="jpeg")
    agent.stop()
    text = (tmp_path / "fleet.jsonl").read_text()
    assert "Mrs Smith" in text and "RIFF" not in text and "jpeg" not in text


def test_the_local_file_is_rotated_at_its_size_limit(tmp_path):
    agent = FleetAgent(_local_config(tmp_path, "fleet.local_log_max_mb=0.1", "fleet.telemetry_interval_s=60"),
                       telemetry=_quiet_telemetry())
    agent.start()
    for i in range(1500):
        agent.event("degraded", detail="x" * 100, i=i)
    agent.stop()
    assert (tmp_path / "fleet.jsonl.1").exists()
    assert (tmp_path / "fleet.jsonl").stat().st_size < 0.2 * 2**20


def test_publishing_never_blocks_even_when_the_sender_is_stuck(tmp_path, monkeypatch):
    """The tick's call returns in microseconds; overflow drops telemetry first and reports lost events."""
    config = _local_config(tmp_path, "fleet.publish_queue_max_messages=100", "fleet.telemetry_interval_s=60")
    agent = FleetAgent(config, telemetry=_quiet_telemetry())
    gate = threading.Event()
    original = agent._drain

    def stuck_drain():
        gate.wait(10)
        original()

    monkeypatch.setattr(agent, "_drain", stuck_drain)
    agent.start()
    durations = []
    for i in range(5000):
        t0 = time.perf_counter()
        agent.event("turn_done", i=i)
        durations.append(time.perf_counter() - t0)
    assert max(durations) < 0.05 and sorted(durations)[len(durations) // 2] < 1e-4
    assert agent.counters.events_dropped >= 4800  # bounded: the inbox never grew past its limit
    gate.set()
    agent.stop()
    events = [line["payload"] for line in _read_jsonl(tmp_path / "fleet.jsonl") if line["topic"].endswith("/events")]
    overflow = [e for e in events if e["kind"] == "queue_overflow"]
    assert overflow and overflow[0]["data"]["events_dropped"] == agent.counters.events_dropped
    kept = [e["seq"] for e in events if e["kind"] == "turn_done"]
    assert kept == sorted(kept) and len(kept) <= 101


def test_overflow_in_memory_drops_queued_telemetry_before_events(tmp_path):
    config = _local_config(tmp_path, "fleet.publish_queue_max_messages=16", "fleet.telemetry_interval_s=60")
    agent = FleetAgent(config, telemetry=_quiet_telemetry())  # not started: nothing drains
    for _ in range(10):
        agent._sample_telemetry()
    for i in range(10):
        agent.event("turn_done", i=i)
    kinds = [item.kind for item in agent._inbox]
    assert kinds.count("event") == 10 and kinds.count("telemetry") == 6
    assert agent.counters.telemetry_dropped == 4 and agent.counters.events_dropped == 0


def test_the_offline_queue_falls_back_to_memory_when_the_disk_is_unusable(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    config = load_config(overrides=[f"site.state_dir={tmp_path}", "fleet.enabled=true",
                                    "fleet.broker_host=127.0.0.1", "fleet.broker_port=9",
                                    f"fleet.offline_queue_dir={blocker}/q", "fleet.connect_timeout_s=0.5"])
    agent = FleetAgent(config, telemetry=_quiet_telemetry())
    agent.start()
    try:
        assert isinstance(agent.spool, MemorySpool)
        agent.event("turn_done")
        assert "memory only" in caplog.text
    finally:
        agent.stop(timeout_s=2)


def test_event_seq_continues_across_restarts(tmp_path):
    config = load_config(overrides=[f"site.state_dir={tmp_path}", "fleet.enabled=true",
                                    "fleet.broker_host=127.0.0.1", "fleet.broker_port=9",
                                    "fleet.connect_timeout_s=0.5", "fleet.telemetry_interval_s=60"])
    first = FleetAgent(config, telemetry=_quiet_telemetry())
    first.start()
    seqs = [first.event("turn_done") for _ in range(3)]
    first.stop(timeout_s=2)
    second = FleetAgent(config, telemetry=_quiet_telemetry())
    second.start()
    try:
        assert second.stream_id == first.stream_id
        assert second.event("turn_done") == seqs[-1] + 1
        assert len(second.spool) >= 3  # nothing was acknowledged: everything waits for the broker
    finally:
        second.stop(timeout_s=2)
    db = sqlite3.connect(tmp_path / "fleet" / SPOOL_FILE)
    assert db.execute("SELECT COUNT(*) FROM messages WHERE leaf='events'").fetchone()[0] == 4


def test_fleet_settings_that_can_never_connect_fall_back_to_the_local_file(tmp_path):
    from edge_avatar.fleet.mqtt import ConnectionSetupError

    config = load_config(overrides=[f"site.state_dir={tmp_path}", "fleet.enabled=true",
                                    "fleet.broker_host=127.0.0.1", "fleet.username=kiosk-1",
                                    f"fleet.password_file={tmp_path}/missing-password"])
    with pytest.raises(ConnectionSetupError, match="missing-password"):
        FleetAgent(config, telemetry=_quiet_telemetry()).start(strict=True)
    agent = FleetAgent(config, telemetry=_quiet_telemetry())
    agent.start()  # the avatar keeps running; the fleet reports locally and says why
    agent.event("turn_done")
    agent.stop()
    assert agent.mode == "local" and "missing-password" in agent.setup_error
    assert any(line["topic"].endswith("/events") for line in _read_jsonl(tmp_path / "fleet.jsonl"))
