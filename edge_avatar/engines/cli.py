"""``edge-avatar engines build|verify|bench`` and ``edge-avatar calibrate capture``.

Why this module exists: the engine build is its own command (systemd runs it
at first boot and after a JetPack upgrade, see
``systemd/edge-avatar-engines.service``); operators and tests drive it the
same way. Progress (one line per model and stage) goes to stderr, results to
stdout (``--json`` for machines). Exit status: 0 when every selected model
validated and built (or was cached), 1 when any failed -- the failing
models keep their previous engines and run fp32 if they have none.
Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edge_avatar.cli import add_config_args, config_from_args, progress

EXIT_OK, EXIT_FAILED = 0, 1


def _add_build_args(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--models", nargs="+", default=[], metavar="NAME", help="only these models (default: all)")
    p.add_argument("--int8", choices=("policy", "all", "none"), default="policy",
                   help="which models get INT8: 'policy' (default: not those measured harmful), 'all', 'none'")
    p.add_argument("--frames", type=int, default=None, help="augmented kiosk frames for perception calibration "
                                                            "(default 48, plus half as many held out)")
    p.add_argument("--calibration-dir", action="append", default=[], metavar="DIR",
                   help="extra folder of site images (its site/ or itself); calibration/site/ is always read")
    p.add_argument("--engines-dir", default=None, help="folder with the ONNX models and manifests "
                                                       "(default: perception.engines_dir, else engines/)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_subcommands(subparsers: Any) -> None:
    p = subparsers.add_parser("engines", help="build, verify and time the INT8 / TensorRT engines")
    sub = p.add_subparsers(dest="engines_command", required=True)
    build = sub.add_parser("build", help="validate, quantize, build, verify, time and choose per model")
    _add_build_args(build)
    build.add_argument("--force", action="store_true", help="rebuild even when the cache matches")
    build.set_defaults(func=cmd_build)
    verify = sub.add_parser("verify", help="check every built model against fp32 on held-out data")
    _add_build_args(verify)
    verify.set_defaults(func=cmd_verify)
    bench = sub.add_parser("bench", help="latency per model, backend and precision (p50/p95)")
    _add_build_args(bench)
    bench.add_argument("--iterations", type=int, default=50, help="timed calls per candidate (default 50)")
    bench.set_defaults(func=cmd_bench)

    c = subparsers.add_parser("calibrate", help="INT8 calibration data")
    csub = c.add_subparsers(dest="calibrate_command", required=True)
    capture = csub.add_parser("capture", help="save frames from the site camera into the local calibration folder")
    add_config_args(capture)
    capture.add_argument("--camera", required=True, help="camera URI (realsense://, v4l2:///dev/video0, csi://0, "
                                                         "file://clip.mp4)")
    capture.add_argument("--count", type=int, default=50, help="frames to save (default 50)")
    capture.add_argument("--out", default="calibration/site/", help="local folder (default calibration/site/)")
    capture.add_argument("--interval", type=float, default=1.0, help="seconds between saved frames (default 1)")
    capture.set_defaults(func=cmd_capture)


def _options(args: argparse.Namespace, **extra: Any) -> Any:
    from edge_avatar.engines.build import BuildOptions  # noqa: PLC0415
    from edge_avatar.engines.calibration import CalibrationOptions  # noqa: PLC0415

    calibration = CalibrationOptions(calibration_dirs=tuple(args.calibration_dir))
    if args.frames is not None:
        calibration = CalibrationOptions(frames=args.frames, held_out_frames=max(2, args.frames // 2),
                                         calibration_dirs=tuple(args.calibration_dir))
    return BuildOptions(models=tuple(args.models), int8_mode=args.int8, calibration=calibration,
                        engines_dir=args.engines_dir, **extra)


def _print_reports(reports: list[Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
        return
    for r in reports:
        choice = r.choice or {}
        status = "ok" if r.ok else "FAILED"
        print(f"{r.name:<17} {status:<6} uses {choice.get('precision', 'fp32'):<5} "
              f"({choice.get('backend', 'onnxruntime')}): {choice.get('reason', '')}")
        for error in r.errors:
            print(f"{'':<17} error: {error}")


def _engine_errors(fn: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        from edge_avatar.engines.errors import EngineError  # noqa: PLC0415

        try:
            return fn(args)
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
    return wrapped


@_engine_errors
def cmd_build(args: argparse.Namespace) -> int:
    from edge_avatar.engines.build import build_engines  # noqa: PLC0415

    reports = build_engines(config_from_args(args), _options(args, force=args.force), progress)
    _print_reports(reports, args.json)
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED


@_engine_errors
def cmd_verify(args: argparse.Namespace) -> int:
    from edge_avatar.engines.build import verify_engines  # noqa: PLC0415

    reports = verify_engines(config_from_args(args), _options(args), progress)
    _print_reports(reports, args.json)
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED


@_engine_errors
def cmd_bench(args: argparse.Namespace) -> int:
    from edge_avatar.engines.build import bench_engines  # noqa: PLC0415

    result = bench_engines(config_from_args(args), _options(args, bench_iterations=args.iterations), progress)
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    print(f"{result['machine']['cpu']} ({result['machine']['cores']} cores), board {result['board']}, "
          f"{result['threads']} thread(s)")
    for name, model in result["models"].items():
        cells = ", ".join(f"{i} p50 {t['p50_ms']:.2f} / p95 {t['p95_ms']:.2f} ms"
                          for i, t in model["timings_ms"].items())
        print(f"{name:<17} {cells}\n{'':<17} uses {model['choice']['precision']}: {model['choice']['reason']}")
    return EXIT_OK


@_engine_errors
def cmd_capture(args: argparse.Namespace) -> int:
    from edge_avatar.engines.capture import capture_site_images  # noqa: PLC0415

    paths = capture_site_images(config_from_args(args), args.camera, args.count, args.out, args.interval,
                                progress=progress)
    print(f"wrote {len(paths)} image(s) to {args.out} (local only); next: edge-avatar engines build")
    return EXIT_OK if paths else EXIT_FAILED
