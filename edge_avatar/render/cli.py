"""``edge-avatar train renderer`` and ``edge-avatar eval renderer``.

Why this module exists: training and evaluating the renderer are operator
commands like any other, so they plug into the one ``edge-avatar`` parser
(``SUBCOMMAND_MODULES`` in ``edge_avatar.cli``). ``train`` and ``eval`` are
groups shared with other capabilities (the planner has its own ``train
planner``), so the group is found or created rather than added twice, which
argparse refuses. Heavy imports (torch, OpenCV, the teacher) happen inside
the handlers: building the parser stays free.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from edge_avatar.cli import EXIT_FAILED, EXIT_OK, add_config_args, config_from_args, progress

log = logging.getLogger(__name__)

EVAL_SEED = 2024            # held-out motion frames: a seed no training set uses
DEFAULT_EVAL_FRAMES = 32
DEFAULT_EVAL_OUT = "out/renderer-eval"


def subcommand_group(subparsers: Any, name: str, help_text: str) -> Any:
    """The sub-subparsers of group ``name`` (``train``, ``eval``), created on first use."""
    parser = subparsers._name_parser_map.get(name)  # argparse keeps no public lookup
    if parser is None:
        parser = subparsers.add_parser(name, help=help_text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=f"{name}_target", required=True)


def add_subcommands(subparsers: Any) -> None:
    train = subcommand_group(subparsers, "train", "train a model (renderer, ...)")
    p = train.add_parser("renderer", help="distil the reference renderer into the neural one; export ONNX")
    add_config_args(p)
    p.add_argument("--quick", action="store_true", help="a tiny run (a minute) to check the pipeline")
    p.add_argument("--epochs", type=int, default=None, help="passes over the cached teacher frames")
    p.add_argument("--out", default=None, help="where renderer_<size>.onnx and the manifest go (default engines/)")
    p.add_argument("--size", type=int, default=256, choices=(256, 512), help="frame size in pixels")
    p.add_argument("--data-dir", default=None, help="cache of the teacher's renders "
                                                    "(default ~/.cache/edge-avatar/renderer-data)")
    p.add_argument("--workers", type=int, default=2, help="processes rendering the teacher's frames")
    p.add_argument("--from-scratch", action="store_true",
                   help="512 px: train from scratch (about three hours here) instead of growing the 256 px student")
    p.add_argument("--export-only", action="store_true",
                   help="no training: re-make renderer_<size>.onnx from the committed renderer_<size>.weights.npz")
    p.add_argument("--widths", default=None, choices=("slim", "wide"),
                   help="the decoders' sizes when training from scratch (default slim; a grown student keeps the "
                        "smaller one's)")
    p.set_defaults(func=cmd_train_renderer)

    evaluate = subcommand_group(subparsers, "eval", "evaluate a model against its reference (renderer, ...)")
    p = evaluate.add_parser("renderer", help="student vs teacher on held-out motion: PNG sheets + PSNR/SSIM JSON")
    add_config_args(p)
    p.add_argument("--frames", type=int, default=DEFAULT_EVAL_FRAMES, help="held-out motion frames")
    p.add_argument("--out", default=DEFAULT_EVAL_OUT, help="output directory for sheets and metrics.json")
    p.add_argument("--model", default=None, help="ONNX file (default engines/renderer_<render size>.onnx)")
    p.add_argument("--supersample", type=int, default=3, help="the teacher's supersampling")
    p.add_argument("--int8", action="store_true",
                   help="also quantize the student to INT8 (ONNX Runtime, Q/DQ) and measure what it costs "
                        "(int8.json: PSNR/SSIM vs the teacher next to fp32, CPU ms)")
    p.set_defaults(func=cmd_eval_renderer)


def cmd_train_renderer(args: argparse.Namespace) -> int:
    from dataclasses import replace  # noqa: PLC0415

    from edge_avatar.render.train import DEFAULT_DATA_DIR, DEFAULT_OUT_DIR, TrainOptions, train_renderer  # noqa: PLC0415

    config_from_args(args)  # a bad config stops here, like every other command
    if args.export_only:
        from edge_avatar.render.train import export_renderer  # noqa: PLC0415

        try:
            path = export_renderer(args.size, Path(args.out) if args.out else DEFAULT_OUT_DIR)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}")
            return EXIT_FAILED
        progress(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB) from {path.stem}.weights.npz")
        return EXIT_OK
    if args.size == 512 and not args.from_scratch:   # grown from the committed 256 px student
        options = TrainOptions.grown_512()
        if args.quick:
            quick = TrainOptions.quick()
            options = replace(quick, size_px=512, epochs=0, grow_from=options.grow_from)
    else:
        options = TrainOptions.quick() if args.quick else TrainOptions()
    options = replace(options, size_px=args.size, workers=max(1, args.workers))
    if args.widths:
        if options.grow_from:
            print(f"error: --widths: a grown {args.size}px student keeps the widths of {options.grow_from}; "
                  "train from scratch (--from-scratch) to choose them")
            return EXIT_FAILED
        options = replace(options, widths=args.widths)
    if args.epochs is not None:
        options = replace(options, epochs=max(1, args.epochs))
    out = Path(args.out) if args.out else DEFAULT_OUT_DIR
    record = train_renderer(options, out, args.data_dir or DEFAULT_DATA_DIR, progress=progress)
    print(json.dumps({k: record[k] for k in ("train_s", "steps", "parameters", "val_psnr_db_ss2")}, indent=2))
    return EXIT_OK


def cmd_eval_renderer(args: argparse.Namespace) -> int:
    from edge_avatar.render.evaluate import evaluate_renderer  # noqa: PLC0415

    config = config_from_args(args)
    size = config.render.width_px
    started = time.monotonic()
    try:
        result = evaluate_renderer(config, frames=args.frames, out_dir=Path(args.out), model=args.model,
                                   supersample=args.supersample, seed=EVAL_SEED, progress=progress,
                                   int8=args.int8)
    except FileNotFoundError as exc:
        print(f"error: {exc}")
        return EXIT_FAILED
    progress(f"eval renderer ({size}px): PSNR {result['psnr_db']['mean']:.2f} dB, "
             f"SSIM {result['ssim']['mean']:.4f} over {result['frames']} held-out frames "
             f"in {time.monotonic() - started:.0f} s -> {args.out}/")
    for name, v in result.get("int8", {}).get("variants", {}).items():
        progress(f"eval renderer: INT8 ({name}) costs {v['cpu_kernels']['psnr_cost_db']:.2f} dB on the CPU kernels, "
                 f"{v['exact_qdq']['psnr_cost_db']:.2f} dB as exact Q/DQ")
    print(json.dumps(result, indent=2))
    return EXIT_OK
