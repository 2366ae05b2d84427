"""BENCHMARKS.md's generated block: made from a bench JSON, rewritten in place, the prose around it kept."""

from __future__ import annotations

import json

import pytest

from edge_avatar.bench.markdown import BEGIN, END, BenchmarkFileError, figures, load_results, render, update_file

RESULTS = {
    "machine": {"cpu": "Test CPU @ 1 GHz", "cores": 2, "memory_gib": 23.5, "machine": "x86_64", "python": "3.11.7",
                "edge_avatar": "0.1.0"},
    "generated_utc": "2026-12-07 01:00 UTC",
    "quick": False,
    "benchmarks": {
        "demo": {"frames": {"rendered": 1140, "dropped": 0, "dropped_pct": 0.0},
                 "response_latency_ms": {"p50": 277.8, "p95": 475.2},
                 "av_offset_ms_per_turn": [-15.0, -10.0, -20.0],
                 "turns": [{"text": "x"}] * 12,
                 "targets": {"dropped_pct_max": 1.0},
                 "targets_met": {"dropped_pct": True, "peak_memory": True}},
        "perception": {"runs": {"intra_op_threads=1": {"per_frame_ms": {"p50_ms": 15.36}}},
                       "targets": {"p50_under_15ms_board_threads": False, "target_p50_ms": 15.0}},
    },
}


def test_the_block_names_the_machine_the_targets_and_every_scalar_figure():
    block = render(RESULTS, source="all.json")
    assert block.startswith(BEGIN) and block.rstrip().endswith(END)
    assert "Test CPU @ 1 GHz, 2 cores, 23.5 GiB" in block and "2026-12-07 01:00 UTC" in block
    assert "met: `dropped_pct`, `peak_memory`" in block
    assert "**not met**: `p50_under_15ms_board_threads`" in block
    assert "| frames.dropped_pct | 0 |" in block
    assert "| response_latency_ms.p95 | 475.2 |" in block
    assert "| runs.intra_op_threads=1.per_frame_ms.p50_ms | 15.36 |" in block
    assert "| av_offset_ms_per_turn | -15, -10, -20 |" in block
    assert "turns" not in block                                # long per-item lists stay in the JSON
    assert ("targets.target_p50_ms", "15") not in figures(RESULTS["benchmarks"]["perception"])


def test_the_block_replaces_itself_and_keeps_the_prose(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nIntro.\n\n## Machines\n\nA table.\n\n## demo\n\nWhat we learnt.\n")
    update_file(path, render(RESULTS))
    first = path.read_text()
    assert first.index("Intro.") < first.index(BEGIN) < first.index("## Machines")
    changed = json.loads(json.dumps(RESULTS))
    changed["benchmarks"]["demo"]["frames"]["dropped_pct"] = 0.44
    update_file(path, render(changed))
    second = path.read_text()
    assert second.count(BEGIN) == 1 and second.count(END) == 1
    assert "| frames.dropped_pct | 0.44 |" in second and "| frames.dropped_pct | 0 |" not in second
    for prose in ("Intro.", "A table.", "What we learnt."):
        assert prose in second


def test_a_file_with_one_marker_is_refused_untouched(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\n\n{BEGIN}\nhalf a block\n")
    with pytest.raises(BenchmarkFileError, match="markers"):
        update_file(path, render(RESULTS))
    assert path.read_text() == f"# Benchmarks\n\n{BEGIN}\nhalf a block\n"


@pytest.mark.parametrize("content, reason", [("{not json", "not JSON"), ('{"benchmarks": {}}', "machine"),
                                             ("[]", "machine")])
def test_a_bad_bench_json_names_the_file_and_the_problem(tmp_path, content, reason):
    path = tmp_path / "all.json"
    path.write_text(content)
    with pytest.raises(BenchmarkFileError, match=reason) as info:
        load_results(path)
    assert str(path) in str(info.value)


def test_the_command_renders_a_saved_run(cli, tmp_path):
    saved = tmp_path / "all.json"
    saved.write_text(json.dumps(RESULTS))
    target = tmp_path / "BENCHMARKS.md"
    result = cli("bench", "--from", str(saved), "--markdown", str(target))
    assert result.returncode == 0, result.stderr
    assert "| frames.rendered | 1140 |" in target.read_text()
    refused = cli("bench", "--from", str(tmp_path / "missing.json"), "--markdown", str(target))
    assert refused.returncode == 2 and "missing.json" in refused.stderr
