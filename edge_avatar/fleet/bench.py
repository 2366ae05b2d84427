"""``bench fleet``: 200 simulated kiosks on one local Mosquitto; event and telemetry latency, loss, duplicates.

Why this benchmark exists: an operator runs a hundred kiosks or more against
one site broker, and needs to know that events arrive, how late, and that
none are lost, before a ward finds out. Everything is the real thing: the real
``mosquitto`` with a password file and the per-device ACL, real
``FleetAgent`` objects (each with its own SQLite offline queue, MQTT thread
and command thread), and the real ``FleetConsole`` as the consumer.

The devices run in worker processes (one Python process per 100 devices, so
that the GIL of one process does not become the bottleneck of all), the
consumer in this one. Each event carries its send time (``time.time_ns()``
at ``FleetAgent.event()``); latency is receive time minus that: it includes
the in-memory queue, the SQLite offline queue, the broker and the consumer.
Loss is per device: events produced minus distinct seqs received after a
bounded drain. Two phases:

1. configured rates: ``fleet.telemetry_interval_s`` (default 10 s) and one
   event per device every 5 s (a busy kiosk: engaged, turns, ended);
2. stress: 25x the event rate (1000 events/s across the fleet).

All processes share one machine with the broker, so the figures are an
upper bound for a fleet of real devices.
"""

from __future__ import annotations

import heapq
import logging
import multiprocessing
import random
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edge_avatar.bench import register

log = logging.getLogger(__name__)

SITE = "bench"
PASSWORD = "bench-password"
OPERATOR = "bench-console"
DEVICES_PER_PROCESS = 100
DRAIN_TIMEOUT_S = 30.0


def _device_names(count: int) -> list[str]:
    return [f"dev-{i:03d}" for i in range(count)]


def _summary_ms(values_ns: list[int]) -> dict[str, float | int]:
    if not values_ns:
        return {"count": 0}
    ordered = sorted(values_ns)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] / 1e6, 2)

    return {"count": len(ordered), "min": pct(0), "p50": pct(50), "p95": pct(95), "p99": pct(99),
            "max": pct(100)}


def _device_worker(port: int, devices: list[str], password_file: str, state_root: str,
                   phases: list[tuple[str, float, float]], telemetry_interval_s: float, seed: int,
                   commands: Any, results: Any) -> None:
    """One process: its devices' agents; runs the phases when told, reports events produced per phase."""
    logging.basicConfig(level=logging.WARNING)
    from edge_avatar.config import load_config  # noqa: PLC0415 - a fresh (spawned) interpreter
    from edge_avatar.fleet.agent import FleetAgent  # noqa: PLC0415
    from edge_avatar.fleet.telemetry import SysfsProbe, TelemetrySource  # noqa: PLC0415

    rng = random.Random(seed)
    agents = []
    for name in devices:
        config = load_config(overrides=[
            "fleet.enabled=true", "fleet.broker_host=127.0.0.1", f"fleet.broker_port={port}",
            f"fleet.username={name}", f"fleet.password_file={password_file}", f"site.name={SITE}",
            f"site.device_id={name}", f"site.state_dir={state_root}/{name}",
            f"fleet.telemetry_interval_s={telemetry_interval_s}", "fleet.reconnect_backoff_initial_s=0.2",
            "fleet.reconnect_backoff_max_s=2.0"])
        frames = {"n": 0}

        def stats(frames: dict = frames) -> dict[str, Any]:
            frames["n"] += 300
            return {"frames": {"rendered": frames["n"], "dropped": 0},
                    "stages_ms": {"renderer": {"count": 1, "p50": 9.0, "p95": 12.0}}}

        telemetry = TelemetrySource(stats, board=SysfsProbe("/nonexistent"))
        agents.append(FleetAgent(config, telemetry=telemetry, rng=random.Random(rng.random())))
    for agent in agents:
        agent.start()
    deadline = time.monotonic() + 60
    connected = all(a.connection.wait_connected(max(0.0, deadline - time.monotonic())) for a in agents)
    results.put(("ready", connected))
    for phase_name, duration_s, rate_hz in phases:
        start_wall = commands.get()  # the coordinator's go, with a common start time
        while time.time() < start_wall:
            time.sleep(0.001)
        produced = [0] * len(agents)
        heap = [(rng.expovariate(rate_hz), i) for i in range(len(agents))]
        heapq.heapify(heap)
        t0 = time.monotonic()
        while heap:
            due_s, i = heapq.heappop(heap)
            if due_s >= duration_s:
                continue
            wait_s = t0 + due_s - time.monotonic()
            if wait_s > 0:
                time.sleep(wait_s)
            agents[i].event("turn_done", sent_ns=time.time_ns(), response_latency_ms=round(rng.uniform(300, 900)),
                            phase=phase_name)
            produced[i] += 1
            heapq.heappush(heap, (due_s + rng.expovariate(rate_hz), i))
        idle = all(a.wait_idle(DRAIN_TIMEOUT_S) for a in agents)
        results.put(("phase", phase_name, dict(zip(devices, produced)), idle,
                     sum(a.counters.replays for a in agents)))
    commands.get()  # stop
    for agent in agents:
        agent.stop(timeout_s=2.0)
    results.put(("stopped",))


@register("fleet", "200 simulated devices on one local mosquitto (auth + ACL): message latency p50/p95, loss")
def bench_fleet(quick: bool = False, devices: int = 200) -> dict[str, Any]:
    from edge_avatar.fleet.console import FleetConsole  # noqa: PLC0415
    from edge_avatar.fleet.mosquitto import LocalBroker  # noqa: PLC0415
    from edge_avatar.fleet.mqtt import BrokerSettings  # noqa: PLC0415
    from edge_avatar.fleet.options import FleetConfig  # noqa: PLC0415

    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        return {"skipped": "mosquitto not installed (apt-get install mosquitto mosquitto-clients)"}
    telemetry_interval_s = FleetConfig().telemetry_interval_s
    configured_rate_hz = 0.2
    phases = [("configured_rates", 10.0 if quick else 60.0, configured_rate_hz),
              ("stress_x25", 5.0 if quick else 20.0, configured_rate_hz * 25)]
    names = _device_names(devices)
    work = Path(tempfile.mkdtemp(prefix="edge-avatar-bench-fleet-"))
    received: dict[str, list[tuple[int, int, str, int, str]]] = {"events": [], "telemetry": []}
    broker = console = None
    workers: list[Any] = []
    lock = threading.Lock()

    def on_message(message: Any) -> None:
        now_ns = time.time_ns()
        p = message.payload if isinstance(message.payload, dict) else {}
        with lock:
            if message.leaf == "events" and p.get("kind") == "turn_done":
                data = p.get("data") or {}
                received["events"].append((now_ns, int(data.get("sent_ns", now_ns)), message.device,
                                           int(p.get("seq", -1)), str(data.get("phase"))))
            elif message.leaf == "telemetry" and not message.retain:
                received["telemetry"].append((now_ns, int(float(p.get("ts", 0)) * 1e9), message.device, 0, ""))

    try:
        users = {n: PASSWORD for n in names}
        users[OPERATOR] = PASSWORD
        broker = LocalBroker(work / "broker", users=users, devices=[(n, SITE, n) for n in names],
                             operators=[OPERATOR], persistence=False).start()
        password_file = work / "password"
        password_file.write_text(PASSWORD + "\n", encoding="utf-8")
        console = FleetConsole(BrokerSettings("127.0.0.1", broker.port, client_id="bench-console",
                                              username=OPERATOR, password_file=str(password_file)),
                               operator=OPERATOR, site=SITE, on_message=on_message).start()
        ctx = multiprocessing.get_context("spawn")
        commands = [ctx.Queue() for _ in range(0, devices, DEVICES_PER_PROCESS)]
        results = ctx.Queue()
        for k, first in enumerate(range(0, devices, DEVICES_PER_PROCESS)):
            proc = ctx.Process(target=_device_worker, daemon=True, args=(
                broker.port, names[first:first + DEVICES_PER_PROCESS], str(password_file), str(work / "state"),
                phases, telemetry_interval_s, 1000 + k, commands[k], results))
            proc.start()
            workers.append(proc)
        ready = [results.get(timeout=120) for _ in workers]
        all_connected = all(r[1] for r in ready)
        phase_results: dict[str, Any] = {}
        for phase_name, duration_s, rate_hz in phases:
            with lock:
                received["events"].clear()
                received["telemetry"].clear()
            start_wall = time.time() + 0.5
            for q in commands:
                q.put(start_wall)
            reports = [results.get(timeout=duration_s + DRAIN_TIMEOUT_S + 60) for _ in workers]
            produced: dict[str, int] = {}
            for report in reports:
                produced.update(report[2])
            expected = sum(produced.values())
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while time.monotonic() < deadline:
                with lock:
                    if len({(d, s) for _, _, d, s, ph in received["events"] if ph == phase_name}) >= expected:
                        break
                time.sleep(0.05)
            time.sleep(0.2)
            with lock:
                events = [e for e in received["events"] if e[4] == phase_name]
                telemetry = list(received["telemetry"])
            unique = {(d, s) for _, _, d, s, _ in events}
            lost = expected - len(unique)
            phase_results[phase_name] = {
                "duration_s": duration_s,
                "events_per_device_per_s": rate_hz,
                "telemetry_interval_s": telemetry_interval_s,
                "events_sent": expected,
                "events_received_unique": len(unique),
                "events_lost": lost,
                "loss_pct": round(100.0 * lost / expected, 4) if expected else 0.0,
                "duplicates_delivered": len(events) - len(unique),
                "fleet_events_per_s": round(expected / duration_s, 1),
                "event_latency_ms": _summary_ms([r - s for r, s, _, _, _ in events]),
                "telemetry_latency_ms": _summary_ms([r - s for r, s, _, _, _ in telemetry]),
                "queues_drained": all(r[3] for r in reports),
                "replays": sum(r[4] for r in reports),
            }
        for q in commands:
            q.put(None)
        for _ in workers:
            try:
                results.get(timeout=30)
            except Exception:  # noqa: BLE001 - a worker that does not say goodbye is terminated below
                break
        for proc in workers:
            proc.join(10)
        version = subprocess.run([broker.binary, "-h"], capture_output=True, text=True, timeout=10).stdout
        configured = phase_results["configured_rates"]
        stress = phase_results["stress_x25"]
        return {
            "devices": devices,
            "device_processes": len(workers),
            "broker": version.splitlines()[0] if version else "mosquitto",
            "auth": "password file + per-device ACL, MQTT 5, QoS 1, SQLite offline queue per device",
            "all_connected": all_connected,
            "phases": phase_results,
            "targets": {
                "no_loss_at_configured_rates": configured["events_lost"] == 0,
                "no_loss_under_stress": stress["events_lost"] == 0,
                "event_p95_under_100ms_at_configured_rates":
                    configured["event_latency_ms"].get("p95", 1e9) < 100.0,
            },
        }
    finally:
        for proc in workers:
            if proc.is_alive():
                proc.terminate()
        if console is not None:
            console.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
