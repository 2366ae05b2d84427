"""``edge-avatar fleet ls|watch|send|agent`` and ``edge-avatar service install``.

Why this module exists: the operator's view of the fleet and the installer
of the service are commands, not library calls. They load the same frozen
config as every other subcommand (the operator's own site YAML names the
broker, their account and password file) and import paho only inside the
handlers, so ``edge-avatar --help`` stays fast without it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import secrets
import signal
import sys
import threading
import time
from typing import Any

from edge_avatar.cli import add_config_args, config_from_args, progress
from edge_avatar.config import ConfigError

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def add_subcommands(subparsers: Any) -> None:
    fleet = subparsers.add_parser("fleet", help="the fleet over MQTT: list devices, watch, send commands")
    fleet_sub = fleet.add_subparsers(dest="fleet_command", required=True)

    p = fleet_sub.add_parser("ls", help="table of devices from retained status and latest telemetry")
    add_config_args(p)
    _add_console_args(p)
    p.add_argument("--wait", type=float, default=1.0, metavar="S", help="seconds to collect retained messages")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fleet_ls)

    p = fleet_sub.add_parser("watch", help="print status, telemetry, events and command results as they arrive")
    add_config_args(p)
    _add_console_args(p)
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_fleet_watch)

    p = fleet_sub.add_parser("send", help="send a command to a device and wait for its answer")
    add_config_args(p)
    _add_console_args(p)
    p.add_argument("device", help="DEVICE (in this config's site.name) or SITE/DEVICE")
    p.add_argument("command", help="ping, say, set_persona, reload_config, set_volume, rebuild_engines, "
                                   "restart, forget_memory")
    p.add_argument("args", nargs="*", metavar="KEY=VALUE",
                   help="arguments; VALUE is read as JSON when it parses (0.5, true), else as text")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S")
    p.set_defaults(func=cmd_fleet_send)

    p = fleet_sub.add_parser("agent", help="run only the device's fleet agent (status, telemetry, commands), "
                                           "e.g. to check broker, TLS and ACL set-up on a kiosk")
    add_config_args(p)
    p.add_argument("--duration", type=float, default=None, metavar="S")
    p.set_defaults(func=cmd_fleet_agent)

    service = subparsers.add_parser("service", help="systemd service")
    service_sub = service.add_subparsers(dest="service_command", required=True)
    p = service_sub.add_parser("install", help="write the systemd units, the service account and /etc/edge-avatar/")
    add_config_args(p)
    p.add_argument("--prefix", default="/", help="root directory to install under (default /)")
    p.add_argument("--dry-run", action="store_true", help="print what would be written, write nothing")
    p.add_argument("--exec", dest="exec_path", default=None,
                   help="path of the edge-avatar executable for ExecStart (default: the one running)")
    p.add_argument("--user", default="edge-avatar", help="service account (default edge-avatar)")
    p.add_argument("--force", action="store_true", help="overwrite an existing site.yaml and edge-avatar.env")
    p.add_argument("--no-systemctl", action="store_true",
                   help="do not run systemd-sysusers and systemctl daemon-reload afterwards")
    p.set_defaults(func=cmd_service_install)


def _add_console_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--operator", default=None,
                   help="operator identity sent with commands (default: fleet.username, else the login name)")
    p.add_argument("--all-sites", action="store_true", help="every site on the broker, not only site.name")


# ---------------------------------------------------------------------------- helpers


def _console(args: argparse.Namespace, on_message=None, events: bool = True):
    from edge_avatar.fleet.console import FleetConsole  # noqa: PLC0415 - paho only when used
    from edge_avatar.fleet.mqtt import BrokerSettings, ConnectionSetupError  # noqa: PLC0415
    from edge_avatar.fleet.options import valid_name  # noqa: PLC0415

    config = config_from_args(args)
    fleet = config.fleet
    if not fleet.broker_host:
        raise ConfigError("--set", "fleet.broker_host", "no broker configured; set fleet.broker_host "
                                                        "(and fleet.broker_port, fleet.username, fleet.password_file)")
    operator = args.operator or fleet.username or getpass.getuser()
    if not valid_name(operator):
        raise ConfigError("--operator", "", f"{operator!r} is not a valid operator identity")
    client_id = f"console-{operator}-{secrets.token_hex(4)}"
    try:
        settings = BrokerSettings.from_config(fleet, client_id, backoff_initial_s=0.2, backoff_max_s=2.0)
        console = FleetConsole(settings, operator=operator, site="+" if args.all_sites else config.site.name,
                               on_message=on_message, events=events)
    except ConnectionSetupError as exc:
        raise ConfigError("fleet", "", str(exc)) from None
    return config, console


def _connect(console, timeout_s: float) -> bool:
    try:
        console.start(timeout_s)
    except ConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    return True


def _parse_kv(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError("fleet send", item, "expected KEY=VALUE, e.g. volume=0.5 or text='Hello'")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


# ---------------------------------------------------------------------------- fleet ls / watch / send


def cmd_fleet_ls(args: argparse.Namespace) -> int:
    _config, console = _console(args, events=False)
    if not _connect(console, 10.0):
        return EXIT_FAILED
    try:
        time.sleep(max(0.0, args.wait))
        views = console.snapshot()
    finally:
        console.stop()
    now = time.time()
    rows = []
    for v in views:
        status, tele = v.status or {}, v.telemetry or {}
        temps = _dig(tele, "system", "temperatures_c") or {}
        rows.append({
            "site": v.site, "device": v.device, "state": status.get("state", "?"),
            "version": status.get("version"), "board": status.get("board"), "persona": status.get("persona"),
            "fps": tele.get("fps"), "response_p95_ms": _dig(tele, "response_latency_ms", "p95"),
            "cpu_pct": _dig(tele, "system", "cpu_pct"),
            "temp_max_c": max(temps.values()) if temps else None,
            "telemetry_age_s": round(now - tele["ts"], 1) if isinstance(tele.get("ts"), (int, float)) else None,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    header = f"{'SITE':<16} {'DEVICE':<18} {'STATE':<8} {'VERSION':<9} {'BOARD':<14} {'PERSONA':<12} " \
             f"{'FPS':>6} {'RESP95ms':>9} {'CPU%':>5} {'TEMP°C':>6} {'AGE s':>7}"
    print(header)
    for r in rows:
        print(f"{r['site']:<16} {r['device']:<18} {r['state']:<8} {_fmt(r['version']):<9} {_fmt(r['board']):<14} "
              f"{_fmt(r['persona']):<12} {_fmt(r['fps'], '.1f'):>6} {_fmt(r['response_p95_ms'], '.0f'):>9} "
              f"{_fmt(r['cpu_pct'], '.0f'):>5} {_fmt(r['temp_max_c'], '.0f'):>6} {_fmt(r['telemetry_age_s']):>7}")
    if not rows:
        progress("no devices seen (none has published status to this broker and site yet)")
    return EXIT_OK


def _summary(message: Any) -> str:
    p = message.payload if isinstance(message.payload, dict) else {}
    if message.leaf == "status":
        return f"{p.get('state')} version={p.get('version')} persona={p.get('persona')}" + \
            (f" reason={p['reason']}" if p.get("reason") else "")
    if message.leaf == "telemetry":
        return f"fps={_fmt(p.get('fps'), '.1f')} cpu={_fmt(_dig(p, 'system', 'cpu_pct'))}% " \
               f"resp_p95={_fmt(_dig(p, 'response_latency_ms', 'p95'))}ms"
    if message.leaf == "events":
        return f"#{p.get('seq')} {p.get('kind')} {json.dumps(p.get('data', {}), separators=(',', ':'))[:160]}"
    if message.leaf == "cmd-result":
        outcome = "ok" if p.get("ok") else f"error {_dig(p, 'error', 'code')}"
        return f"{p.get('command')} id={p.get('id')} {outcome}"
    return json.dumps(p)[:160]


def cmd_fleet_watch(args: argparse.Namespace) -> int:
    lock = threading.Lock()

    def show(message: Any) -> None:
        with lock:
            if args.json:
                print(json.dumps({"site": message.site, "device": message.device, "leaf": message.leaf,
                                  "retained": message.retain, "payload": message.payload}), flush=True)
            else:
                stamp = time.strftime("%H:%M:%S")
                print(f"{stamp} {message.site}/{message.device} {message.leaf:<10} {_summary(message)}", flush=True)

    _config, console = _console(args, on_message=show)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if not _connect(console, 10.0):
            return EXIT_FAILED
        stop.wait(args.duration)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        console.stop()
    return EXIT_OK


def cmd_fleet_send(args: argparse.Namespace) -> int:
    config, console = _console(args, events=False)
    site, _, device = args.device.rpartition("/")
    site = site or config.site.name
    command_args = _parse_kv(args.args)
    if not _connect(console, min(10.0, args.timeout)):
        return EXIT_FAILED
    try:
        answer = console.send(site, device, args.command, command_args, timeout_s=args.timeout)
    except TimeoutError as exc:
        print(f"error: {site}/{device}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:  # a device name that cannot be a topic
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        console.stop()
    print(json.dumps(answer, indent=2))
    if not answer.get("ok"):
        error = answer.get("error") or {}
        print(f"error: {error.get('code')}: {error.get('message')}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# ---------------------------------------------------------------------------- fleet agent


def cmd_fleet_agent(args: argparse.Namespace) -> int:
    from edge_avatar import __version__  # noqa: PLC0415
    from edge_avatar.config import load_config  # noqa: PLC0415
    from edge_avatar.fleet.agent import FleetAgent  # noqa: PLC0415
    from edge_avatar.fleet.commands import EXIT_RESTART_REQUESTED, DefaultCommandHandlers  # noqa: PLC0415
    from edge_avatar.fleet.systemd import SystemdNotifier  # noqa: PLC0415

    config = config_from_args(args)
    stop = threading.Event()
    exit_status = [EXIT_OK]

    def restart() -> None:
        exit_status[0] = EXIT_RESTART_REQUESTED
        stop.set()

    def reload_config() -> dict[str, Any]:
        fresh = load_config(board=args.board, site_file=args.site, overrides=args.overrides)
        old, new = config.to_dict(), fresh.to_dict()
        changed = sorted(k for k in new if new[k] != old.get(k))
        return {"reloaded": True, "changed_sections": changed, "applied": False,
                "note": "the standalone agent only validates; restart to apply"}

    handlers = DefaultCommandHandlers(version=__version__, on_restart=restart, on_reload_config=reload_config)
    agent = FleetAgent(config, handlers=handlers)
    notifier = SystemdNotifier.from_env()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            agent.start(strict=True)
        except ValueError as exc:  # ConnectionSetupError: a password file or certificate that cannot be read
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        notifier.ready(f"fleet agent {agent.mode}")
        progress(f"fleet agent for {config.site.name}/{config.site.device_id}: "
                 + (f"broker {config.fleet.broker_host}:{config.fleet.broker_port}" if agent.mode == "mqtt"
                    else f"no broker, writing {agent.local_log_path}"))
        stop.wait(args.duration)
        notifier.stopping()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        agent.stop()
    return exit_status[0]


# ---------------------------------------------------------------------------- service install


def cmd_service_install(args: argparse.Namespace) -> int:
    from edge_avatar.fleet.install import install_service  # noqa: PLC0415

    config = config_from_args(args)
    actions = install_service(prefix=args.prefix, exec_path=args.exec_path, user=args.user,
                              board=config.board.name, site=config.site.name, device=config.site.device_id,
                              dry_run=args.dry_run, run_systemctl=not args.no_systemctl, force=args.force)
    for action in actions:
        print(("would " if args.dry_run else "") + str(action))
    failed = [a for a in actions if a.verb == "fail"]
    if not args.dry_run:
        progress("next: put the broker CA, client certificate/key and password in /etc/edge-avatar/mqtt/, "
                 "edit /etc/edge-avatar/site.yaml, then: systemctl enable --now edge-avatar.service")
    return EXIT_FAILED if failed else EXIT_OK
