"""``edge-avatar fleet ls|watch|send`` as an operator runs them, against a real Mosquitto and a live device."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

pytest.importorskip("paho.mqtt")

from edge_avatar.config import load_config  # noqa: E402
from edge_avatar.fleet.agent import FleetAgent  # noqa: E402
from edge_avatar.fleet.commands import DefaultCommandHandlers  # noqa: E402
from edge_avatar.fleet.mosquitto import LocalBroker  # noqa: E402
from edge_avatar.fleet.telemetry import SysfsProbe, TelemetrySource  # noqa: E402

if shutil.which("mosquitto") is None and not os.path.exists("/usr/sbin/mosquitto"):
    pytest.skip("mosquitto not installed (apt-get install mosquitto mosquitto-clients)", allow_module_level=True)

SITE = "st-marys"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet-cli")
    (root / "kiosk-5.pw").write_text("pw-5\n")
    (root / "alice.pw").write_text("pw-alice\n")
    broker = LocalBroker(root / "broker", users={"kiosk-5": "pw-5", "alice": "pw-alice"},
                         devices=[("kiosk-5", SITE, "kiosk-5")], operators=["alice"]).start()
    config = load_config(overrides=[
        "fleet.enabled=true", "fleet.broker_host=127.0.0.1", f"fleet.broker_port={broker.port}",
        "fleet.username=kiosk-5", f"fleet.password_file={root / 'kiosk-5.pw'}", f"site.name={SITE}",
        "site.device_id=kiosk-5", f"site.state_dir={root / 'state'}", "fleet.telemetry_interval_s=0.3"])
    handlers = DefaultCommandHandlers(version="9.9")
    stats = {"frames": {"rendered": 0, "dropped": 0}}

    def live_stats():
        stats["frames"]["rendered"] += 9
        return stats

    agent = FleetAgent(config, handlers=handlers, status={"persona": "calm-nurse"},
                       telemetry=TelemetrySource(live_stats, board=SysfsProbe("/nonexistent")))
    agent.start()
    assert agent.connection.wait_connected(10)
    operator_site = root / "operator.yaml"
    operator_site.write_text(f"site: {{name: {SITE}}}\nfleet: {{broker_host: 127.0.0.1, broker_port: {broker.port}, "
                             f"username: alice, password_file: '{root / 'alice.pw'}'}}\n")
    yield {"site": str(operator_site), "agent": agent, "handlers": handlers}
    agent.stop()
    broker.stop()


def test_fleet_send_waits_for_the_answer(cli, fleet):
    result = cli("fleet", "send", f"{SITE}/kiosk-5", "set_volume", "volume=0.4", "--site", fleet["site"], timeout=60)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["ok"] and answer["result"] == {"volume": 0.4, "previous": 0.8} and answer["operator"] == "alice"
    assert fleet["handlers"].volume == 0.4

    refused = cli("fleet", "send", "kiosk-5", "set_volume", "volume=11", "--site", fleet["site"])
    assert refused.returncode == 1 and "invalid_args" in refused.stderr and fleet["handlers"].volume == 0.4

    offline = cli("fleet", "send", "kiosk-404", "ping", "--site", fleet["site"], "--timeout", "0.5")
    assert offline.returncode == 1 and "no answer" in offline.stderr and "Traceback" not in offline.stderr


def test_fleet_ls_lists_devices_from_retained_status_and_telemetry(cli, fleet):
    # The agent publishes status at once and telemetry every 0.3 s; on a loaded box the first
    # telemetry may take a while to reach the broker, so ask again (bounded) until it is there.
    deadline = time.monotonic() + 30
    while True:
        result = cli("fleet", "ls", "--json", "--wait", "0.5", "--site", fleet["site"])
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)
        kiosk = next((r for r in rows if r["device"] == "kiosk-5"), None)
        if kiosk is not None and kiosk["telemetry_age_s"] is not None or time.monotonic() > deadline:
            break
    assert kiosk is not None, rows
    assert kiosk["state"] == "online" and kiosk["version"] and kiosk["persona"] == "calm-nurse"
    assert kiosk["telemetry_age_s"] is not None and kiosk["cpu_pct"] is not None
    table = cli("fleet", "ls", "--wait", "0.3", "--site", fleet["site"])
    assert table.returncode == 0 and "kiosk-5" in table.stdout and "online" in table.stdout


def test_fleet_watch_prints_live_messages(cli, fleet):
    fleet["agent"].event("visitor_engaged", distance_m=0.9)
    result = cli("fleet", "watch", "--json", "--duration", "0.7", "--site", fleet["site"])
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {line["leaf"] for line in lines} >= {"status", "telemetry"}
    assert all(line["site"] == SITE for line in lines)


def test_fleet_commands_without_a_broker_say_how_to_configure_one(cli):
    result = cli("fleet", "ls")
    assert result.returncode == 2 and "fleet.broker_host" in result.stderr and "Traceback" not in result.stderr
