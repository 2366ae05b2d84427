"""``edge-avatar train planner`` and ``edge-avatar eval planner``.

Why this module exists: training and evaluating the planner are operator
commands (reproducible, with a progress bar, results as JSON), plugged into
the one ``edge-avatar`` entry point like every capability. ``train`` and
``eval`` are *shared* parents: the renderer adds ``train renderer`` and
``eval renderer`` to the same parsers. ``shared_subcommand`` finds the
parent another module already made (or makes it), so the order in
``SUBCOMMAND_MODULES`` does not matter -- a module that calls
``subparsers.add_parser("train")`` a second time would fail in argparse.
Heavy imports (torch, onnxruntime, espeak) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_avatar.cli import add_config_args, config_from_args, progress

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def shared_subcommand(subparsers: Any, name: str, help_text: str) -> Any:
    """The sub-subparsers of the ``name`` command (``train``, ``eval``), creating the command if needed."""
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help_text)
    for action in parser._actions:  # argparse keeps its sub-subparsers only there
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=f"{name}_target", required=True)   # as edge_avatar.render.cli names it


def add_subcommands(subparsers: Any) -> None:
    train = shared_subcommand(subparsers, "train", "train a distilled network (planner, renderer)")
    p = train.add_parser("planner", help="distil the behaviour teacher into the planner network -> "
                                         "engines/planner.onnx + planner.manifest.json")
    p.add_argument("--quick", action="store_true", help="a small run (40 conversations, 300 steps): a smoke test")
    p.add_argument("--data", metavar="DIR", default="",
                   help="also train on recordings in DIR (*.npz with inputs (T,149) and motion (T,64); see "
                        "edge_avatar/planner/train.py); fine-tunes the committed weights unless --from-scratch")
    p.add_argument("--from-scratch", action="store_true", help="with --data: start from random weights")
    p.add_argument("--init", default="", metavar="NPZ", help="start from these weights (planner.weights.npz)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default 3000, --quick 300)")
    p.add_argument("--conversations", type=int, default=None, help="generated conversations (default 240)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="processes generating conversations (default 2)")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write (default: the repository's engines/)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="data cache (default ~/.cache/edge-avatar/planner-data)")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation after training")
    p.set_defaults(func=cmd_train_planner)

    ev = shared_subcommand(subparsers, "eval", "evaluate a distilled network against its teacher")
    e = ev.add_parser("planner", help="the planner against the teacher on held-out generated conversations: "
                                      "error per channel group, lip closure, mouth-audio lead, PNG plots")
    add_config_args(e)
    e.add_argument("--model", default=None, help="the ONNX planner (default engines/planner.onnx)")
    e.add_argument("--conversations", type=int, default=24, help="held-out conversations (default 24)")
    e.add_argument("--seed", type=int, default=1000)
    e.add_argument("--plots", default="out/planner-eval", metavar="DIR",
                   help="PNG plots here (default out/planner-eval)")
    e.add_argument("--cache", default=None, metavar="DIR")
    e.add_argument("--json", action="store_true", help="print the full JSON (default: a summary)")
    e.set_defaults(func=cmd_eval_planner)


def cmd_train_planner(args: argparse.Namespace) -> int:
    from edge_avatar.planner.generate import DEFAULT_CACHE_DIR  # noqa: PLC0415
    from edge_avatar.planner.train import TrainOptions, train_planner, write_manifest  # noqa: PLC0415

    try:
        import torch  # noqa: F401, PLC0415
    except ImportError:
        print("error: training needs torch (the train extra): .venv/bin/python -m pip install torch==2.13.0",
              file=sys.stderr)
        return EXIT_FAILED
    base = TrainOptions.quick_options() if args.quick else TrainOptions()
    overrides: dict[str, Any] = {"seed": args.seed, "jobs": args.jobs, "data_dir": args.data, "init": args.init,
                                 "from_scratch": args.from_scratch}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.conversations is not None:
        overrides["conversations"] = args.conversations
    options = replace(base, **overrides)
    command = "edge-avatar " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["train"] \
        else "edge-avatar train planner" + (" --quick" if args.quick else "")
    cache = args.cache or DEFAULT_CACHE_DIR
    try:
        manifest = train_planner(options, args.out, cache, say=progress, command=command)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if not args.no_eval:
        from edge_avatar.planner.evaluate import EvalOptions, evaluate_planner  # noqa: PLC0415

        onnx_path = Path(args.out or Path(__file__).resolve().parent.parent.parent / "engines") / "planner.onnx"
        evaluation = evaluate_planner(onnx_path, EvalOptions(conversations=8 if args.quick else 24), cache,
                                      say=progress)
        evaluation.pop("model", None)
        manifest = write_manifest(onnx_path, onnx_path.with_name("planner.weights.npz"), options,
                                  manifest["training"], command, evaluation)
        _print_eval(evaluation)
    print(json.dumps({"file": manifest["file"], "sha256": manifest["sha256"], "training": manifest["training"]},
                     indent=2))
    return EXIT_OK


def cmd_eval_planner(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from edge_avatar.planner.evaluate import EvalOptions, evaluate_planner  # noqa: PLC0415
    from edge_avatar.planner.generate import DEFAULT_CACHE_DIR  # noqa: PLC0415
    from edge_avatar.planner.runtime import DEFAULT_MODEL  # noqa: PLC0415

    model = Path(args.model) if args.model else DEFAULT_MODEL
    if not model.is_file():
        print(f"error: {model} not found; train it with: edge-avatar train planner", file=sys.stderr)
        return EXIT_FAILED
    backend = config.backend.name if config.backend.name != "null" else "onnxruntime"
    result = evaluate_planner(model, EvalOptions(seed=args.seed, conversations=args.conversations),
                              args.cache or DEFAULT_CACHE_DIR, plots_dir=args.plots, backend_name=backend,
                              say=progress)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_eval(result)
    return EXIT_OK if all(result["targets"].values()) else EXIT_FAILED


def _print_eval(result: dict[str, Any]) -> None:
    mae = result["mae"]
    closure = result["bilabial_closure"]
    lead = result["mouth_lead_ms"]
    print(f"held-out: {result['conversations']} conversations, {result['ticks']} ticks")
    print("MAE  " + "  ".join(f"{k} {v:.4g}" for k, v in mae.items()))
    print(f"bilabials closed: teacher {closure['teacher']['rate']:.1%}, student {closure['student']['rate']:.1%} "
          f"({closure['student']['closed']}/{closure['student']['total']})")
    print(f"mouth leads the sound: teacher {lead['teacher']} ms, student {lead['student']} ms "
          f"(difference {lead['difference']} ms)")
    print("targets: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in result["targets"].items()))
    for path in result.get("plots", []):
        print(f"plot: {path}")
