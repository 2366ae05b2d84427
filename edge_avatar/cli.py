"""The ``edge-avatar`` command: one entry point for operators, developers and tests.

Subcommands load the one frozen config (``--board``, ``--site``, ``--set``)
and hand it to the code that needs it; a bad config stops here with the
file, the key path and what was expected, and exit status 2. Long work shows
progress on stderr; results go to stdout (``--json`` where asked).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from edge_avatar import __version__
from edge_avatar.config import ConfigError, RootConfig, available_boards, dump_yaml, load_config

log = logging.getLogger("edge_avatar")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

# Capabilities add their own subcommands: each module has ``add_subcommands(subparsers)``
# and is imported only when the parser is built (heavy imports stay inside the handlers).
SUBCOMMAND_MODULES: tuple[str, ...] = ("edge_avatar.fleet.cli", "edge_avatar.perception.cli",
                                       "edge_avatar.dialogue.cli", "edge_avatar.listening.cli",
                                       "edge_avatar.render.cli", "edge_avatar.engines.cli", "edge_avatar.planner.cli")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--board", default=None,
                        help=f"board config name (default x86-cpu; known: {', '.join(available_boards())})")
    parser.add_argument("--site", default=None, help="site YAML merged over the board config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one value, e.g. --set loop.tick_rate_hz=25 (repeatable)")


def config_from_args(args: argparse.Namespace, extra: list[str] | None = None) -> RootConfig:
    return load_config(board=args.board, site_file=args.site, overrides=[*(extra or []), *args.overrides])


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- subcommands


def cmd_config_show(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.json:
        print(json.dumps(config.to_dict(), indent=2))
    else:
        print(dump_yaml(config), end="")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from edge_avatar.doctor import findings_to_json, format_findings, run_doctor  # noqa: PLC0415

    findings = run_doctor(config_from_args(args), broker=args.broker)
    if args.json:
        print(json.dumps(findings_to_json(findings), indent=2))
    else:
        print(format_findings(findings), end="")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_avatar.bench import run_benchmarks  # noqa: PLC0415
    from edge_avatar.bench.markdown import BenchmarkFileError, load_results, render, update_file  # noqa: PLC0415

    try:
        if args.from_json:
            if args.names:
                print("error: --from re-renders a saved run; name no benchmarks with it", file=sys.stderr)
                return EXIT_CONFIG
            results = load_results(args.from_json)
        else:
            results = run_benchmarks(args.names or None, quick=args.quick, progress=progress)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return EXIT_CONFIG
    except BenchmarkFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    text = json.dumps(results, indent=2)
    if args.out and not args.from_json:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    if args.markdown:
        try:
            update_file(args.markdown, render(results, source=args.from_json or args.out or ""))
        except (BenchmarkFileError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        progress(f"wrote the generated block of {args.markdown}")
    if args.json or not (args.out or args.markdown):
        print(text)
    return EXIT_OK


def _run_session(config: RootConfig, duration_s: float | None, report_path: str) -> dict[str, Any]:
    from edge_avatar.runtime.session import Session, SessionOptions, write_report_files  # noqa: PLC0415

    session = Session(config, SessionOptions(duration_s=duration_s))
    previous = {sig: signal.signal(sig, lambda *_: session.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        session.start()
        progress(f"running: camera {config.camera.uri}, mic {config.microphone.uri}, "
                  f"output {config.output.uri}, {config.loop.tick_rate_hz:g} Hz"
                  + (f", {duration_s:g} s" if duration_s else " until stopped (Ctrl-C)"))
        report = session.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    write_report_files(session, report, report_path)
    return report


def _scenario_duration_s(uri: str) -> float | None:
    if not uri.startswith("scenario://"):
        return None
    from edge_avatar.scenario import load_scenario  # noqa: PLC0415

    return float(load_scenario(uri.removeprefix("scenario://")).duration_s)


def cmd_run(args: argparse.Namespace) -> int:
    extra = []
    for key, value in (("camera.uri", args.camera), ("microphone.uri", args.mic), ("output.uri", args.out),
                       ("output.report_path", args.report)):
        if value is not None:
            extra.append(f"{key}={value}")
    config = config_from_args(args, extra)
    duration_s = args.duration if args.duration is not None else _scenario_duration_s(config.camera.uri)
    report = _run_session(config, duration_s, config.output.report_path)
    _print_summary(report, config.output.report_path)
    if report.get("exit_status"):
        return int(report["exit_status"])  # 75: restart requested by the fleet; systemd restarts us
    return EXIT_OK if report.get("error") is None else EXIT_FAILED


DEMO_SITE = Path(__file__).resolve().parent.parent / "examples" / "hospital-reception" / "site.yaml"


def cmd_demo(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    if args.site is None and DEMO_SITE.is_file():
        args.site = str(DEMO_SITE)
    # The demo visitor is a script, not a person: its words may appear in the report.
    extra = [f"output.uri=file://{out_dir / 'demo.mp4'}", f"output.report_path={out_dir / 'report.json'}",
             "camera.uri=scenario://demo", "microphone.uri=scenario://demo", "audio_output.uri=virtual://",
             "privacy.log_transcripts=true", f"fleet.local_log_path={out_dir / 'fleet.jsonl'}",
             "display.fullscreen=false"]
    config = config_from_args(args, extra)
    duration_s = args.duration if args.duration is not None else _scenario_duration_s(config.camera.uri)
    progress(f"edge-avatar demo: the bundled visitor at a hospital reception kiosk -> {out_dir}/")
    report = _run_session(config, duration_s, config.output.report_path)
    _print_summary(report, config.output.report_path)
    return EXIT_OK if report.get("error") is None else EXIT_FAILED


def _print_summary(report: dict[str, Any], report_path: str) -> None:
    frames = report.get("frames", {})
    stages = report.get("stages_ms", {})
    print(f"frames rendered {frames.get('rendered')}, dropped {frames.get('dropped')} "
          f"({frames.get('dropped_pct')}%), {frames.get('fps')} fps")
    for name, summary in stages.items():
        if summary.get("count"):
            print(f"  {name:<11} p50 {summary['p50']:7.3f} ms   p95 {summary['p95']:7.3f} ms")
    for turn in report.get("turns", []):
        print(f"  turn {turn['turn_id']}: end of speech {turn['end_of_speech_s']} s -> first audio "
              f"{turn['first_audio_s']} s ({turn['response_latency_ms']} ms)"
              + (f", A/V offset {turn['av_offset_ms']:+.0f} ms" if turn.get("av_offset_ms") is not None else ""))
    output = report.get("output", {})
    if output.get("path"):
        print(f"video: {output['path']}")
    print(f"report: {report_path}")
    html_path = Path(report_path).with_suffix(".html")
    if html_path.is_file():
        print(f"report with plots: {html_path}")


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-avatar", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edge-avatar {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("config", help="configuration")
    config_sub = p.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print the merged configuration")
    add_config_args(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_config_show)

    p = sub.add_parser("doctor", help="what this machine has and what to do about what is missing")
    add_config_args(p)
    p.add_argument("--broker", default=None, metavar="HOST:PORT", help="also check an MQTT broker is reachable")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("bench", help="run benchmarks (all, or the named ones) and print JSON")
    p.add_argument("names", nargs="*", help="benchmark names (default: all)")
    p.add_argument("--json", action="store_true", help="print the JSON (default when --out is not given)")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    p.add_argument("--quick", action="store_true", help="shorter runs (for CI smoke tests)")
    p.add_argument("--markdown", default=None, metavar="FILE",
                   help="write the figures into FILE's generated block (BENCHMARKS.md); the rest is kept")
    p.add_argument("--from", dest="from_json", default=None, metavar="JSON",
                   help="use a saved `bench --json` document instead of running the benchmarks")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("run", help="run the avatar on any sources")
    add_config_args(p)
    p.add_argument("--camera", default=None, help="camera URI (realsense://, v4l2:///dev/video0, csi://0, "
                                                  "file://clip.mp4, scenario://demo)")
    p.add_argument("--mic", default=None, help="microphone URI (alsa://default, file://x.wav, scenario://demo)")
    p.add_argument("--out", default=None, help="output URI (window://, file://out.mp4, null://)")
    p.add_argument("--report", default=None, help="report JSON path")
    p.add_argument("--duration", type=float, default=None, help="seconds of media time (default: until stopped)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the bundled visitor at a hospital kiosk -> DIR/demo.mp4 + DIR/report.json")
    add_config_args(p)
    p.add_argument("--out", default="out", help="output directory (default: out)")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: the scenario's length)")
    p.set_defaults(func=cmd_demo)

    import importlib  # noqa: PLC0415

    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # noqa: BLE001 - turn known start-up failures into one clear line
        from edge_avatar.outputs.base import OutputUnavailable  # noqa: PLC0415
        from edge_avatar.sensors.base import SourceUnavailable  # noqa: PLC0415

        if isinstance(exc, (SourceUnavailable, OutputUnavailable)):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        if type(exc).__name__ == "AudioOutputError":
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        raise


if __name__ == "__main__":
    sys.exit(main())
