"""The fleet against a real Mosquitto (password file, per-device ACL, TLS with a test CA) on 127.0.0.1.

Every wait is bounded. The broker is started by the fixture on an ephemeral port
and stopped at the end; the outage test has a broker of its own because it
stops and restarts it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("paho.mqtt")

from edge_avatar.config import load_config  # noqa: E402
from edge_avatar.fleet.agent import FleetAgent  # noqa: E402
from edge_avatar.fleet.commands import DefaultCommandHandlers  # noqa: E402
from edge_avatar.fleet.console import FleetConsole  # noqa: E402
from edge_avatar.fleet.mosquitto import LocalBroker  # noqa: E402
from edge_avatar.fleet.mqtt import BrokerSettings, ConnectionSetupError, MqttConnection  # noqa: E402
from edge_avatar.fleet.telemetry import SysfsProbe, TelemetrySource  # noqa: E402
from tests.conftest import REPO  # noqa: E402

if shutil.which("mosquitto") is None and not os.path.exists("/usr/sbin/mosquitto"):
    pytest.skip("mosquitto not installed (apt-get install mosquitto mosquitto-clients)", allow_module_level=True)

SITE = "st-marys"
PASSWORDS = {"kiosk-1": "pw-kiosk-1", "kiosk-2": "pw-kiosk-2", "kiosk-3": "pw-kiosk-3", "alice": "pw-alice",
             "mallory": "pw-mallory"}
DEVICES = [("kiosk-1", SITE, "kiosk-1"), ("kiosk-2", SITE, "kiosk-2"), ("kiosk-3", SITE, "kiosk-3")]
OPERATORS = ["alice", "mallory"]
WAIT_S = 10.0


def wait_for(predicate, timeout_s: float = WAIT_S, interval_s: float = 0.01):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    return predicate()


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("secrets")
    for user, password in PASSWORDS.items():
        (d / user).write_text(password + "\n")
        (d / user).chmod(0o600)
    return d


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with LocalBroker(tmp_path_factory.mktemp("broker"), users=PASSWORDS, devices=DEVICES, operators=OPERATORS,
                     tls=True) as b:
        yield b


def device_config(broker, secrets_dir, state_dir, device="kiosk-1", *extra, tls=False):
    port = broker.tls_port if tls else broker.port
    overrides = ["fleet.enabled=true", "fleet.broker_host=127.0.0.1", f"fleet.broker_port={port}",
                 f"fleet.username={device}", f"fleet.password_file={secrets_dir / device}", f"site.name={SITE}",
                 f"site.device_id={device}", f"site.state_dir={state_dir}", "fleet.reconnect_backoff_initial_s=0.1",
                 "fleet.reconnect_backoff_max_s=0.5", "fleet.telemetry_interval_s=60"]
    if tls:
        f = broker.tls_files
        overrides += ["fleet.tls=true", f"fleet.tls_ca_file={f.ca_file}", f"fleet.tls_cert_file={f.client_cert}",
                      f"fleet.tls_key_file={f.client_key}"]
    return load_config(overrides=[*overrides, *extra])


def operator_settings(broker, secrets_dir, user="alice", **kw):
    return BrokerSettings("127.0.0.1", broker.port, client_id=f"console-{user}-{random.randrange(1 << 30)}",
                          username=user, password_file=str(secrets_dir / user), backoff_initial_s=0.1,
                          backoff_max_s=0.5, **kw)


class Recorder:
    """Everything a console sees, in arrival order."""

    def __init__(self):
        self.messages = []
        self.lock = threading.Lock()

    def __call__(self, message):
        with self.lock:
            self.messages.append(message)

    def of(self, leaf, device=None):
        with self.lock:
            return [m.payload for m in self.messages if m.leaf == leaf and (device is None or m.device == device)]


def quiet_telemetry(stats=None):
    return TelemetrySource(stats, board=SysfsProbe("/nonexistent"))


@pytest.fixture
def console(broker, secrets_dir):
    recorder = Recorder()
    c = FleetConsole(operator_settings(broker, secrets_dir), operator="alice", on_message=recorder).start()
    c.recorder = recorder
    yield c
    c.stop()


@pytest.fixture
def agent_factory(broker, secrets_dir, tmp_path):
    agents = []

    def make(device="kiosk-1", *extra, handlers=None, telemetry=None, tls=False, **kw):
        config = device_config(broker, secrets_dir, tmp_path / device, device, *extra, tls=tls)
        agent = FleetAgent(config, handlers=handlers, telemetry=telemetry or quiet_telemetry(), **kw)
        agent.start()
        agents.append(agent)
        assert agent.connection.wait_connected(WAIT_S), agent.connection.last_error
        return agent

    yield make
    for agent in agents:
        agent.stop(timeout_s=3)


# --------------------------------------------------------------------------- status and last will


def test_status_is_retained_and_the_last_will_says_offline_when_the_device_is_killed(broker, secrets_dir,
                                                                                      tmp_path):
    site_file = tmp_path / "site.yaml"
    site_file.write_text(
        f"site: {{name: {SITE}, device_id: kiosk-2, state_dir: '{tmp_path / 'state'}'}}\n"
        f"fleet: {{enabled: true, broker_host: 127.0.0.1, broker_port: {broker.port}, username: kiosk-2,\n"
        f"        password_file: '{secrets_dir / 'kiosk-2'}', telemetry_interval_s: 60}}\n")
    device = subprocess.Popen([sys.executable, "-m", "edge_avatar.cli", "fleet", "agent", "--site", str(site_file)],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        watcher = Recorder()
        with FleetConsole(operator_settings(broker, secrets_dir), operator="alice", on_message=watcher):
            online = wait_for(lambda: [s for s in watcher.of("status", "kiosk-2") if s.get("state") == "online"],
                              timeout_s=30)
            assert online, device.stderr.read1().decode() if device.poll() is not None else "no status"
        # A console that connects later still sees "online": the status is retained.
        late = Recorder()
        with FleetConsole(operator_settings(broker, secrets_dir), operator="alice", on_message=late) as c:
            assert wait_for(lambda: late.of("status", "kiosk-2"))
            status = late.of("status", "kiosk-2")[-1]
            assert status["state"] == "online" and status["version"] and status["board"] == "x86-cpu"
            assert {"engines", "persona", "stream_id"} <= set(status)
            assert [m.retain for m in late.messages if m.leaf == "status" and m.device == "kiosk-2"][0]
            device.send_signal(signal.SIGKILL)
            device.wait(WAIT_S)
            offline = wait_for(lambda: [s for s in late.of("status", "kiosk-2") if s.get("state") == "offline"])
            assert offline and offline[-1]["reason"] == "connection lost"
            assert c.devices[(SITE, "kiosk-2")].status["state"] == "offline"
        # ... and the will is retained too.
        after = Recorder()
        with FleetConsole(operator_settings(broker, secrets_dir), operator="alice", on_message=after):
            assert wait_for(lambda: after.of("status", "kiosk-2"))
            assert after.of("status", "kiosk-2")[-1]["state"] == "offline"
    finally:
        if device.poll() is None:
            device.kill()
            device.wait(WAIT_S)
        device.stderr.close()


def test_a_clean_stop_publishes_offline_stopped(agent_factory, console):
    agent = agent_factory("kiosk-3", status={"persona": "calm-nurse", "engines": {"planner": "int8"}})
    online = wait_for(lambda: [s for s in console.recorder.of("status", "kiosk-3") if s["state"] == "online"])
    assert online[-1]["persona"] == "calm-nurse" and online[-1]["engines"] == {"planner": "int8"}
    agent.update_status(persona="cheerful")  # republished, retained
    assert wait_for(lambda: [s for s in console.recorder.of("status", "kiosk-3") if s.get("persona") == "cheerful"])
    agent.stop()
    stopped = wait_for(lambda: [s for s in console.recorder.of("status", "kiosk-3") if s["state"] == "offline"])
    assert stopped[-1]["reason"] == "stopped"


# --------------------------------------------------------------------------- telemetry and events


def test_telemetry_and_events_flow(agent_factory, console):
    frames = {"n": 0}

    def stats():
        frames["n"] += 6
        return {"frames": {"rendered": frames["n"], "dropped": 0},
                "stages_ms": {"renderer": {"count": 5, "p50": 3.0, "p95": 5.0}},
                "turns": [{"response_latency_ms": 640.0}]}

    agent = agent_factory("kiosk-1", "fleet.telemetry_interval_s=0.2", telemetry=quiet_telemetry(stats))
    seqs = [agent.event("visitor_engaged", distance_m=1.2),
            agent.event("turn_done", turn_id=0, response_latency_ms=640.0, end_of_turn_wait_ms=210.0,
                        reply_text="Your appointment is at 3 pm"),
            agent.event("conversation_ended", turns=1, duration_s=34.5)]
    events = wait_for(lambda: [e for e in console.recorder.of("events", "kiosk-1") if e["kind"] != "command"]
                      if len(console.recorder.of("events", "kiosk-1")) >= 3 else None)
    assert [e["seq"] for e in events] == seqs == sorted(seqs)
    assert [e["kind"] for e in events] == ["visitor_engaged", "turn_done", "conversation_ended"]
    assert events[1]["data"] == {"turn_id": 0, "response_latency_ms": 640.0, "end_of_turn_wait_ms": 210.0}
    assert events[1]["redacted"] == ["reply_text"] and "appointment" not in json.dumps(events)
    telemetry = wait_for(lambda: [t for t in console.recorder.of("telemetry", "kiosk-1") if "fps" in t][1:])
    sample = telemetry[-1]
    assert sample["fps"] > 0 and sample["stages_ms"]["renderer"] == {"p50": 3.0, "p95": 5.0}
    assert sample["response_latency_ms"]["p50"] == 640.0
    assert {"cpu_count", "memory_total_mb"} <= set(sample["system"])
    assert sample["fleet"]["connection"]["connected"] is True
    # Everything produced so far is acknowledged and deleted; only telemetry sampled since may still wait.
    assert agent.wait_idle(WAIT_S)
    assert {entry.leaf for entry in agent.spool.read_after(0, 1000)} <= {"telemetry"}


# --------------------------------------------------------------------------- commands


def test_every_command_round_trips(agent_factory, console):
    restarted = threading.Event()
    handlers = DefaultCommandHandlers(version="t", on_restart=restarted.set,
                                      on_reload_config=lambda: {"reloaded": True},
                                      on_rebuild_engines=lambda force: {"scheduled": True, "force": force})
    agent_factory("kiosk-1", handlers=handlers)
    cases = {
        "ping": ({}, {"pong": True, "version": "t"}),
        "say": ({"text": "Welcome. Please take a seat.", "interrupt": False},
                {"queued": True, "characters": 28, "interrupt": False}),
        "set_persona": ({"persona": "calm-nurse"}, {"persona": "calm-nurse", "previous": "default"}),
        "reload_config": ({}, {"reloaded": True}),
        "set_volume": ({"volume": 0.35}, {"volume": 0.35, "previous": 0.8}),
        "rebuild_engines": ({"force": True}, {"scheduled": True, "force": True}),
        "forget_memory": ({"scope": "all"}, {"forgotten": True, "scope": "all"}),
        "restart": ({"reason": "test"}, {"restarting": True, "exit_status": 75}),
    }
    for command, (args, expected) in cases.items():
        answer = console.send(SITE, "kiosk-1", command, args, timeout_s=WAIT_S)
        assert answer["ok"] is True, answer
        assert answer["command"] == command and answer["result"] == expected and answer["operator"] == "alice"
    assert restarted.wait(WAIT_S)  # after its answer was acknowledged
    assert (handlers.volume, handlers.persona, handlers.said_chars) == (0.35, "calm-nurse", [28])
    audit = wait_for(lambda: [e for e in console.recorder.of("events", "kiosk-1") if e["kind"] == "command"]
                     if len([e for e in console.recorder.of("events", "kiosk-1") if e["kind"] == "command"]) >= 8
                     else None)
    assert [e["data"]["command"] for e in audit] == list(cases)
    assert all(e["data"]["ok"] and e["data"]["operator"] == "alice" for e in audit)


def test_malformed_and_unauthorised_commands_are_answered_and_change_nothing(agent_factory, console, broker,
                                                                             secrets_dir):
    handlers = DefaultCommandHandlers()
    agent_factory("kiosk-1", "fleet.allowed_operators=[alice]", handlers=handlers)
    answers = {
        "range": console.send(SITE, "kiosk-1", "set_volume", {"volume": 7}),
        "type": console.send(SITE, "kiosk-1", "set_volume", {"volume": "max"}),
        "unknown": console.send(SITE, "kiosk-1", "format_disk", {}),
        "not_json": console.send_raw(SITE, "kiosk-1", "set_volume", b"volume=1", correlation="c-raw-1"),
        "no_id": console.send_raw(SITE, "kiosk-1", "ping", b'{"operator":"alice"}', correlation="c-raw-2"),
        "impersonation": console.send_raw(
            SITE, "kiosk-1", "set_volume", b'{"id":"x1","operator":"alice","args":{"volume":0.1}}',
            correlation="c-raw-3", user_properties=(("operator", "mallory"),)),
    }
    codes = {name: a["error"]["code"] for name, a in answers.items()}
    assert codes == {"range": "invalid_args", "type": "invalid_args", "unknown": "unknown_command",
                     "not_json": "not_json", "no_id": "invalid_payload", "impersonation": "unauthorized"}
    assert all(a["ok"] is False and a["error"]["message"] for a in answers.values())
    # mallory is an operator account at the broker, but not on this device's allowed list
    with FleetConsole(operator_settings(broker, secrets_dir, "mallory"), operator="mallory") as evil:
        refused = evil.send(SITE, "kiosk-1", "set_volume", {"volume": 0.0})
        assert refused["ok"] is False and refused["error"]["code"] == "unauthorized"
    assert handlers.volume == 0.8 and handlers.persona == "default"


def test_commands_to_an_offline_device_time_out_and_expire(console):
    with pytest.raises(TimeoutError):
        console.send(SITE, "kiosk-3", "ping", {}, timeout_s=0.5)


def test_fuzzed_commands_through_the_broker_are_all_answered(agent_factory, console):
    agent_factory("kiosk-1")
    rng = random.Random(99)
    names = ["ping", "say", "set_volume", "set_persona", "restart", "nope", "a b", "é", "ping/x", "x" * 100]
    waiters = []
    for i in range(300):
        kind = rng.randrange(4)
        if kind == 0:
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
        elif kind == 1:
            payload = json.dumps({"id": f"f{i}", "operator": rng.choice(["alice", "", "+"]),
                                  "args": {rng.choice(["volume", "text", "x"]): rng.choice([1, "s", None, [], 0.5])}
                                  }).encode()
        elif kind == 2:
            payload = json.dumps(rng.choice([[], 1, "x", None, {"id": 5}])).encode()
        else:
            good = json.dumps({"id": f"g{i}", "operator": "alice", "args": {"volume": 0.5}}).encode()
            payload = bytearray(good)
            payload[rng.randrange(len(payload))] = rng.randrange(256)
            payload = bytes(payload)
        correlation = f"fz-{i}"
        waiters.append((correlation, console.submit_raw(SITE, "kiosk-1", rng.choice(names), payload,
                                                        correlation=correlation, timeout_s=WAIT_S)))
    answered = [console.wait(c, w, WAIT_S) for c, w in waiters]
    assert len(answered) == 300 and all("ok" in a for a in answered)
    assert sum(a["ok"] for a in answered) < 300 and sum(not a["ok"] for a in answered) > 150


# --------------------------------------------------------------------------- ACL


def test_a_device_cannot_publish_or_read_outside_its_own_prefix(broker, secrets_dir, console):
    refused = []
    received = []
    kiosk1 = MqttConnection(BrokerSettings("127.0.0.1", broker.port, client_id="rogue-kiosk-1", username="kiosk-1",
                                           password_file=str(secrets_dir / "kiosk-1")), name="rogue",
                            subscriptions=(f"edge-avatar/v1/{SITE}/kiosk-2/cmd/#", "edge-avatar/v1/#"),
                            on_message=received.append, on_acked=lambda g, t, ok, r: refused.append((t, ok)))
    kiosk1.start()
    try:
        assert kiosk1.wait_connected(WAIT_S)
        time.sleep(0.2)  # the (refused) subscriptions are processed
        for token, topic in (("other-device", f"edge-avatar/v1/{SITE}/kiosk-2/events"),
                             ("other-site", "edge-avatar/v1/other-site/kiosk-1/status"),
                             ("own-command", f"edge-avatar/v1/{SITE}/kiosk-1/cmd/restart"),
                             ("outside", "elsewhere/x")):
            assert kiosk1.publish(topic, b'{"kind":"forged","seq":1,"stream_id":"x"}', token=token) is not None
        assert kiosk1.publish(f"edge-avatar/v1/{SITE}/kiosk-1/events",
                              b'{"kind":"marker","seq":1,"stream_id":"m"}', token="own") is not None
        # The marker on its own prefix arrives; the forged ones, published before it on the same connection, never do.
        assert wait_for(lambda: [e for e in console.recorder.of("events", "kiosk-1") if e.get("kind") == "marker"])
        forged = [m for m in console.recorder.messages if isinstance(m.payload, dict)
                  and m.payload.get("kind") == "forged"]
        assert forged == []
        assert wait_for(lambda: len(refused) == 5)
        assert dict(refused) == {"other-device": False, "other-site": False, "own-command": False,
                                 "outside": False, "own": True}  # PUBACK 0x87 "Not authorized"
        # An operator's command for kiosk-2 is not readable by kiosk-1.
        console.connection.publish(f"edge-avatar/v1/{SITE}/kiosk-2/cmd/ping", b'{"id":"p","operator":"alice"}')
        console.connection.publish(f"edge-avatar/v1/{SITE}/kiosk-1/events", b'{"kind":"marker2"}')
        time.sleep(0.3)
        assert [m.topic for m in received if "/cmd/" in m.topic] == []
        assert all("/kiosk-1/cmd/" in m.topic for m in received)
    finally:
        kiosk1.stop()


def test_wrong_password_is_refused_and_retried_with_backoff(broker, secrets_dir, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    conn = MqttConnection(BrokerSettings("127.0.0.1", broker.port, client_id="bad", username="kiosk-1",
                                         password_file=str(wrong), backoff_initial_s=0.05, backoff_max_s=0.2),
                          name="bad")
    conn.start()
    try:
        assert wait_for(lambda: conn.counters["connect_failures"] >= 2, timeout_s=5)
        assert not conn.connected and "refused" in conn.last_error
    finally:
        conn.stop()


# --------------------------------------------------------------------------- TLS


def test_tls_with_a_test_ca_and_client_certificates(agent_factory, broker, secrets_dir):
    agent_factory("kiosk-2", tls=True)
    f = broker.tls_files
    settings = BrokerSettings("127.0.0.1", broker.tls_port, client_id="tls-console", tls=True,
                              ca_file=str(f.ca_file), cert_file=str(f.client_cert), key_file=str(f.client_key),
                              username="alice", password_file=str(secrets_dir / "alice"))
    with FleetConsole(settings, operator="alice") as tls_console:
        answer = tls_console.send(SITE, "kiosk-2", "ping", {}, timeout_s=WAIT_S)
        assert answer["ok"] and answer["result"]["pong"] is True


def test_tls_refuses_an_unknown_ca_and_a_missing_client_certificate(broker, secrets_dir, tmp_path):
    from edge_avatar.fleet.mosquitto import make_test_pki

    other = make_test_pki(tmp_path / "other-ca")
    f = broker.tls_files
    base = dict(host="127.0.0.1", port=broker.tls_port, tls=True, username="alice",
                password_file=str(secrets_dir / "alice"), backoff_initial_s=0.05, backoff_max_s=0.2,
                connect_timeout_s=2.0)
    for name, settings in (
            ("wrong-ca", BrokerSettings(client_id="t1", ca_file=str(other.ca_file), cert_file=str(f.client_cert),
                                        key_file=str(f.client_key), **base)),
            ("no-client-cert", BrokerSettings(client_id="t2", ca_file=str(f.ca_file), **base))):
        conn = MqttConnection(settings, name=name)
        conn.start()
        try:
            assert wait_for(lambda c=conn: c.counters["connect_failures"] >= 1, timeout_s=5), name
            assert not conn.connected, name
        finally:
            conn.stop()
    with pytest.raises(ConnectionSetupError, match="TLS setup failed"):
        MqttConnection(BrokerSettings("127.0.0.1", broker.tls_port, tls=True, ca_file=str(tmp_path / "missing.crt")))


# --------------------------------------------------------------------------- broker outage


def test_broker_outage_under_load_every_event_arrives_exactly_once_in_order(tmp_path, secrets_dir):
    broker = LocalBroker(tmp_path / "broker", users=PASSWORDS, devices=DEVICES, operators=OPERATORS).start()
    agent = None
    consumer = None
    try:
        arrivals = []

        def on_message(message):
            if message.leaf == "events":
                arrivals.append(message.payload["seq"])

        # A consumer that must not miss events: a persistent session the broker keeps across its restart.
        settings = BrokerSettings("127.0.0.1", broker.port, client_id="outage-consumer", username="alice",
                                  password_file=str(secrets_dir / "alice"), clean_start=False,
                                  session_expiry_s=3600, backoff_initial_s=0.1, backoff_max_s=0.3)
        consumer = FleetConsole(settings, operator="alice", on_message=on_message).start()
        config = device_config(broker, secrets_dir, tmp_path / "state", "kiosk-1",
                               "fleet.reconnect_backoff_initial_s=0.1", "fleet.reconnect_backoff_max_s=0.3",
                               "fleet.telemetry_interval_s=0.1")
        agent = FleetAgent(config, telemetry=quiet_telemetry())
        agent.start()
        assert agent.connection.wait_connected(WAIT_S)

        produced = []
        stop_producing = threading.Event()

        def produce():
            while not stop_producing.is_set():
                produced.append(agent.event("turn_done", response_latency_ms=500))
                time.sleep(0.002)

        producer = threading.Thread(target=produce)
        producer.start()
        time.sleep(0.5)
        before_outage = len(produced)
        broker.stop()
        time.sleep(1.0)  # the device keeps producing into its offline queue
        queued_during_outage = len(agent.spool)
        broker.start()
        time.sleep(0.5)
        stop_producing.set()
        producer.join(WAIT_S)

        assert wait_for(lambda: len(arrivals) >= len(produced), timeout_s=20), \
            (len(arrivals), len(produced), agent.fleet_stats(), broker.log_tail())
        time.sleep(0.2)  # anything late (a duplicate) would show up now
        # The console hands on each (stream, seq) once (QoS 1 redeliveries are dropped and counted):
        # every event produced arrives, exactly once, in the order it was produced.
        assert arrivals == produced
        assert consumer.duplicates <= 2 * agent.fleet.inflight_max_messages
        assert before_outage > 50 and queued_during_outage > 100
        assert agent.counters.replays >= 1 and agent.wait_idle(WAIT_S)
    finally:
        if agent is not None:
            agent.stop(timeout_s=3)
        if consumer is not None:
            consumer.stop()
        broker.stop()


def test_a_window_larger_than_the_brokers_receive_maximum_is_respected(broker, secrets_dir, tmp_path):
    """mosquitto allows 20 unacknowledged QoS 1 messages (Receive Maximum); more would get us disconnected."""
    config = device_config(broker, secrets_dir, tmp_path / "state", "kiosk-3", "fleet.inflight_max_messages=300")
    agent = FleetAgent(config, telemetry=quiet_telemetry())
    for i in range(1000):  # a backlog, as after an outage
        agent.event("turn_done", i=i)
    agent.start()
    try:
        assert agent.connection.wait_connected(WAIT_S)
        assert agent.wait_idle(20)
        assert agent.connection.receive_maximum == 20
        assert agent.connection.counters["disconnects"] == 0 and agent.counters.acked >= 1000
    finally:
        agent.stop()


def test_a_full_offline_queue_keeps_its_events_and_reports_the_loss_after_a_restart(broker, secrets_dir, tmp_path,
                                                                                    console):
    """Broker unreachable for long: the queue fills with events, new ones are refused and counted; the
    report survives a restart and arrives once there is room."""
    state = tmp_path / "state"
    unreachable = device_config(broker, secrets_dir, state, "kiosk-3", "fleet.broker_port=9",
                                "fleet.offline_queue_max_mb=0.1", "fleet.telemetry_interval_s=0.1")
    offline = FleetAgent(unreachable, telemetry=quiet_telemetry())
    offline.start()
    for i in range(1000):
        offline.event("turn_done", i=i, pad="x" * 100)
        if i % 100 == 0:
            time.sleep(0.03)
    time.sleep(0.2)
    offline.stop(timeout_s=3)
    dropped = offline.counters.events_dropped
    assert dropped > 300 and offline.counters.telemetry_dropped > 0  # telemetry made room for events first

    online = FleetAgent(device_config(broker, secrets_dir, state, "kiosk-3"), telemetry=quiet_telemetry())
    online.start()
    try:
        assert online.wait_idle(15), online.fleet_stats()
        reports = wait_for(lambda: [e["data"] for e in console.recorder.of("events", "kiosk-3")
                                    if e["kind"] == "queue_overflow"])
        kept = wait_for(lambda: [e["seq"] for e in console.recorder.of("events", "kiosk-3")
                                 if e["kind"] == "turn_done"] if len(reports) else None)
        assert kept == sorted(kept) and len(kept) + dropped == 1000
        # The reports (one while offline, one kept across the restart) account for every missing seq.
        assert sum(r["events_dropped"] for r in reports) == dropped
        produced = set(range(1, max(r["last_seq"] for r in reports) + 1))
        missing = produced - set(kept) - {e["seq"] for e in console.recorder.of("events", "kiosk-3")
                                          if e["kind"] == "queue_overflow"}
        assert len(missing) == dropped
        assert all(any(r["first_seq"] <= seq <= r["last_seq"] for r in reports) for seq in missing)
    finally:
        online.stop()


def test_a_retained_command_is_never_executed(broker, secrets_dir, tmp_path, console):
    """A command published with retain would replay at every reconnect (a retained restart: a restart loop)."""
    topic = f"edge-avatar/v1/{SITE}/kiosk-2/cmd/set_volume"
    body = b'{"id":"retained-1","operator":"alice","args":{"volume":0.1}}'
    console.connection.publish(topic, body, retain=True)
    time.sleep(0.2)
    handlers = DefaultCommandHandlers()
    agent = FleetAgent(device_config(broker, secrets_dir, tmp_path / "s", "kiosk-2"), handlers=handlers,
                       telemetry=quiet_telemetry())
    agent.start()
    try:
        assert agent.connection.wait_connected(WAIT_S)
        time.sleep(0.5)
        assert handlers.volume == 0.8 and agent.processor.counts["received"] == 0
        # and one that arrives live with the retain flag set (retain-as-published) is refused, with an answer
        agent._on_message(type("M", (), {"topic": topic, "payload": body, "retain": True, "user_properties": {},
                                         "correlation": None})())
        answer = wait_for(lambda: [r for r in console.recorder.of("cmd-result", "kiosk-2") if r["id"] is None])
        assert answer[0]["error"]["code"] == "invalid_payload" and handlers.volume == 0.8
    finally:
        console.connection.publish(topic, b"", retain=True)  # clear it
        agent.stop()


def test_reconnect_backoff_grows_with_jitter_and_stays_bounded():
    conn = MqttConnection(BrokerSettings("127.0.0.1", 9, backoff_initial_s=0.5, backoff_max_s=8.0),
                          rng=random.Random(3))
    waits = []
    conn._stop.wait = waits.append  # record instead of sleeping
    for attempt in range(1, 40):
        conn._backoff(attempt)
    for attempt, wait_s in enumerate(waits, start=1):
        assert 0.5 <= wait_s <= min(8.0, 0.5 * 2 ** (attempt - 1)) + 1e-9
    assert max(waits[:2]) <= 1.0 and max(waits[10:]) > 6.0  # grows, then spreads across [initial, max]
    assert len({round(w, 3) for w in waits[10:]}) > 20  # jitter: a fleet does not reconnect in lockstep
    conn.stop()
