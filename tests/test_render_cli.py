"""``train renderer``, ``eval renderer`` and ``bench renderer`` are wired into the one command line."""

from __future__ import annotations

import argparse

from edge_avatar.cli import build_parser
from edge_avatar.render.cli import cmd_eval_renderer, cmd_train_renderer, subcommand_group


def test_train_and_eval_renderer_parse():
    parser = build_parser()
    args = parser.parse_args(["train", "renderer", "--quick", "--epochs", "2", "--out", "x"])
    assert args.func is cmd_train_renderer and args.quick and args.epochs == 2 and args.out == "x"
    args = parser.parse_args(["eval", "renderer", "--frames", "4", "--set", "render.width_px=256"])
    assert args.func is cmd_eval_renderer and args.frames == 4 and not args.int8
    assert parser.parse_args(["eval", "renderer", "--int8"]).int8


def test_groups_are_shared_not_added_twice():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    first = subcommand_group(sub, "train", "train")
    first.add_parser("planner")
    second = subcommand_group(sub, "train", "train")
    second.add_parser("renderer")
    assert first is second
    assert parser.parse_args(["train", "planner"]).train_target == "planner"


def test_the_renderer_benchmark_is_registered():
    import importlib

    from edge_avatar.bench import BENCH_MODULES, BENCHMARKS

    assert "edge_avatar.render.bench" in BENCH_MODULES
    importlib.import_module("edge_avatar.render.bench")
    assert "renderer" in BENCHMARKS


def test_widths_are_for_a_student_trained_from_scratch(capsys):
    """A grown 512 px student keeps the 256 px one's decoders: asking for other widths is refused, by name,
    before anything is rendered or trained."""
    parser = build_parser()
    assert parser.parse_args(["train", "renderer"]).widths is None
    assert parser.parse_args(["train", "renderer", "--widths", "wide"]).widths == "wide"
    args = parser.parse_args(["train", "renderer", "--size", "512", "--widths", "wide"])
    assert cmd_train_renderer(args) != 0
    out = capsys.readouterr().out
    assert "--widths" in out and "renderer_256.weights.npz" in out
