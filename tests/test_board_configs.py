"""Board files load, say where their numbers come from, and config errors tell the operator what to fix.

Why: a board file is the first thing a field engineer edits. Every value must
validate against the schema, carry a comment with its source, and a mistake in
any layer (board, site, --set) must name the file, the dotted key and what was
expected, never a traceback.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from edge_avatar.config import BOARD_CONFIG_DIR, ConfigError, available_boards, load_config

BOARDS = ["orin-nano-8gb", "orin-nx-16gb", "agx-orin-64gb", "thor", "x86-cpu"]
JETSON_BOARDS = [b for b in BOARDS if b != "x86-cpu"]
# `key: value` on one line (a section header such as `board:` has no value and needs no comment).
KEY_VALUE_LINE = re.compile(r"^\s*[A-Za-z_][\w-]*\s*:\s*[^\s#]")


def _site(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the board files


def test_the_expected_boards_are_present():
    assert sorted(available_boards()) == sorted(BOARDS)


@pytest.mark.parametrize("board", BOARDS)
def test_board_loads_validates_and_is_named_after_its_file(board):
    config = load_config(board=board)
    assert config.board.name == board
    assert config.board.thermal.throttle_c < config.board.thermal.shutdown_c
    assert config.board.description


@pytest.mark.parametrize("board", JETSON_BOARDS)
def test_jetson_boards_use_tensorrt_int8_and_a_real_speaker(board):
    config = load_config(board=board)
    assert config.backend.name == "tensorrt"
    # Every Jetson GPU here (Ampere, Blackwell) runs INT8 Q/DQ engines; no board needs an exception.
    assert config.board.precision == "int8"
    assert config.board.nvpmodel_id >= 0 and config.board.power_mode != "none"
    assert config.board.gpu_memory_mb > 0
    assert config.audio_output.uri == "alsa://default"


@pytest.mark.parametrize("board", ["orin-nano-8gb", "thor"])
def test_boards_without_a_dla_do_not_ask_for_one(board):
    assert load_config(board=board).board.use_dla is False


@pytest.mark.parametrize(("board", "render_px"), [
    ("orin-nano-8gb", 256), ("orin-nx-16gb", 256), ("x86-cpu", 256), ("agx-orin-64gb", 512), ("thor", 512)])
def test_render_size_per_board(board, render_px):
    config = load_config(board=board)
    assert (config.render.width_px, config.render.height_px) == (render_px, render_px)


def test_dev_board_keeps_the_cpu_defaults():
    config = load_config(board="x86-cpu")
    assert config.backend.name == "onnxruntime"
    assert config.board.precision == "fp32"
    assert config.loop.tick_rate_hz == 30.0
    assert config.loop.perception_stride_ticks == 3   # 10 Hz perception: what 2 CPU cores hold beside the tick
    assert config.audio_output.uri == "virtual://"
    assert config.board.nvpmodel_id == -1 and config.board.gpu_memory_mb == 0
    assert load_config() == config  # x86-cpu is the default board


@pytest.mark.parametrize("board", BOARDS)
def test_every_value_in_a_board_file_carries_a_comment(board):
    lines = (BOARD_CONFIG_DIR / f"{board}.yaml").read_text(encoding="utf-8").splitlines()
    value_lines = [(n, line) for n, line in enumerate(lines, 1)
                   if KEY_VALUE_LINE.match(line) and not line.lstrip().startswith("#")]
    assert value_lines, f"{board}.yaml has no values"
    uncommented = [f"{board}.yaml:{n}: {line.strip()}" for n, line in value_lines if " #" not in line]
    assert not uncommented, "values without a source comment:\n" + "\n".join(uncommented)


# --------------------------------------------------------------------------- clear errors


def test_unknown_key_in_site_file_names_the_file_and_the_dotted_path(tmp_path):
    site = _site(tmp_path, "loop:\n  tick_rate_hz: 25\n  tick_rate: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(site_file=site)
    message = str(info.value)
    assert str(site) in message
    assert "loop.tick_rate" in message
    assert "tick_rate_hz" in message  # lists what is allowed


def test_unknown_nested_key_names_the_full_path(tmp_path):
    site = _site(tmp_path, "board:\n  thermal:\n    throttle: 80\n")
    with pytest.raises(ConfigError) as info:
        load_config(site_file=site)
    assert info.value.key_path == "board.thermal.throttle"
    assert info.value.source == str(site)


def test_unknown_section_names_the_file(tmp_path):
    site = _site(tmp_path, "speaker:\n  uri: alsa://default\n")
    with pytest.raises(ConfigError, match=r"speaker: unknown key; expected one of: .*audio_output"):
        load_config(site_file=site)


def test_wrong_type_names_the_key_and_the_expected_type(tmp_path):
    site = _site(tmp_path, 'loop:\n  tick_rate_hz: "fast"\n')
    with pytest.raises(ConfigError) as info:
        load_config(site_file=site)
    message = str(info.value)
    assert "loop.tick_rate_hz" in message and "'fast'" in message and "expected a number" in message
    assert str(site) in message


def test_out_of_range_value_names_the_key_and_the_range():
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["loop.tick_rate_hz=500"])
    message = str(info.value)
    assert info.value.source == "--set"
    assert "loop.tick_rate_hz" in message and "500" in message and "[1.0, 120.0]" in message


def test_wrong_literal_lists_the_choices():
    with pytest.raises(ConfigError, match=r"backend\.name: got 'cuda'; expected one of: onnxruntime, tensorrt, null"):
        load_config(overrides=["backend.name=cuda"])


def test_bad_value_in_a_board_file_names_that_file(tmp_path):
    board = _site(tmp_path, "board:\n  name: kiosk-x\n  dla_core: 3\n", name="kiosk-x.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(board="kiosk-x", board_dir=tmp_path)
    assert info.value.source == str(board)
    assert info.value.key_path == "board.dla_core"


def test_board_file_named_for_another_board_is_refused(tmp_path):
    _site(tmp_path, "board:\n  name: thor\n", name="kiosk-x.yaml")
    with pytest.raises(ConfigError, match="board.name.*'thor'.*'kiosk-x'"):
        load_config(board="kiosk-x", board_dir=tmp_path)


def test_cross_field_rules_name_the_key(tmp_path):
    site = _site(tmp_path, "board:\n  thermal:\n    throttle_c: 99\n    shutdown_c: 90\n")
    with pytest.raises(ConfigError, match=r"board\.thermal\.throttle_c.*below shutdown_c"):
        load_config(site_file=site)
    with pytest.raises(ConfigError, match=r"board\.use_dla.*fp16 or int8"):
        load_config(overrides=["board.use_dla=true"])  # the dev board is fp32


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        load_config(board="jetson-nano-2gb")
    message = str(info.value)
    assert "jetson-nano-2gb" in message
    for board in BOARDS:
        assert board in message


def test_missing_site_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="site config file not found"):
        load_config(site_file=tmp_path / "absent.yaml")


def test_malformed_override_shows_the_expected_form():
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        load_config(overrides=["loop.tick_rate_hz"])


# --------------------------------------------------------------------------- merge order and freezing


def test_merge_order_defaults_then_board_then_site_then_overrides(tmp_path):
    site = _site(tmp_path, "loop:\n  tick_rate_hz: 25\ndisplay:\n  show_captions: true\n")

    board_only = load_config(board="orin-nano-8gb")
    assert board_only.loop.perception_stride_ticks == 3          # board beats the default of 1
    assert board_only.loop.late_tick_skip_perception_ms == 8.0   # untouched default survives

    with_site = load_config(board="orin-nano-8gb", site_file=site)
    assert with_site.loop.tick_rate_hz == 25.0                   # site beats board (30)
    assert with_site.loop.perception_stride_ticks == 3           # a sibling key from the board survives
    assert with_site.display.show_captions is True
    assert with_site.render.width_px == 256                      # sections the site leaves alone stay the board's

    with_set = load_config(board="orin-nano-8gb", site_file=site,
                           overrides=["loop.tick_rate_hz=20", "loop.perception_stride_ticks=2"])
    assert with_set.loop.tick_rate_hz == 20.0                    # --set beats site
    assert with_set.loop.perception_stride_ticks == 2            # --set beats board
    assert with_set.display.show_captions is True


def test_later_override_wins_and_values_are_yaml():
    config = load_config(overrides=["loop.tick_rate_hz=20", "loop.tick_rate_hz=24", "display.fullscreen=true"])
    assert config.loop.tick_rate_hz == 24.0
    assert config.display.fullscreen is True


def test_config_is_frozen():
    config = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.loop.tick_rate_hz = 60.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.board = config.board  # type: ignore[misc]
    faster = config.replace(loop=dataclasses.replace(config.loop, tick_rate_hz=60.0))
    assert faster.loop.tick_rate_hz == 60.0 and config.loop.tick_rate_hz == 30.0


def test_nan_is_refused(tmp_path):
    site = _site(tmp_path, "loop:\n  tick_rate_hz: .nan\n")
    with pytest.raises(ConfigError, match="loop.tick_rate_hz.*finite"):
        load_config(site_file=site)


def test_board_name_is_chosen_only_by_the_board_option(tmp_path):
    with pytest.raises(ConfigError, match="board.name is chosen by --board"):
        load_config("x86-cpu", overrides=["board.name=thor"])
    site = _site(tmp_path, "board:\n  name: thor\n")
    with pytest.raises(ConfigError, match=str(site)):
        load_config("x86-cpu", site_file=site)


def test_exponent_override_is_a_number():
    assert load_config(overrides=["board.engine_workspace_mb=2048", "loop.tick_rate_hz=3e1"]).loop.tick_rate_hz == 30.0
