"""The machine's CPU shares over a run (runtime/cpu_share.py): parsed from /proc/stat's format, differenced."""

from __future__ import annotations

import sys

import pytest

from edge_avatar.runtime.cpu_share import FIELDS, CpuTimes, share_pct


def test_shares_are_the_differences_of_the_counters_over_their_sum():
    before = CpuTimes.parse("cpu  1000 10 200 5000 5 0 3 40 0 0")
    after = CpuTimes.parse("cpu  1600 10 300 5200 5 0 3 140 0 0")   # 1000 ticks: 600 user, 100 sys, 200 idle, 100 steal
    share = share_pct(before, after)
    assert share == {"user": 60.0, "nice": 0.0, "system": 10.0, "idle": 20.0, "iowait": 0.0, "irq": 0.0,
                     "softirq": 0.0, "steal": 10.0}
    assert list(share) == list(FIELDS)


def test_no_time_or_no_reading_gives_none():
    t = CpuTimes.parse("cpu  1 2 3 4 5 6 7 8")
    assert share_pct(t, t) is None
    assert share_pct(None, t) is None and share_pct(t, None) is None


@pytest.mark.parametrize("line", ["cpu0 1 2 3 4 5 6 7 8", "cpu 1 2 3", "", "intr 1 2 3 4 5 6 7 8"])
def test_a_line_that_is_not_the_cpu_total_is_refused_by_name(line):
    with pytest.raises(ValueError, match="/proc/stat: expected a 'cpu' line"):
        CpuTimes.parse(line)


def test_an_unreadable_source_reads_as_none(tmp_path):
    assert CpuTimes.read(tmp_path / "missing") is None
    bad = tmp_path / "stat"
    bad.write_text("garbage\n")
    assert CpuTimes.read(bad) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_this_machine_counts_forward():
    first = CpuTimes.read()
    sum(i * i for i in range(300_000))   # some CPU time for the counters to see
    second = CpuTimes.read()
    assert first is not None and second is not None
    assert all(b >= a for a, b in zip(first.ticks, second.ticks))


def test_a_counter_that_went_backwards_counts_as_nothing():
    """proc(5): iowait can decrease; no share may come out negative."""
    before = CpuTimes.parse("cpu  100 0 0 100 50 0 0 0")
    after = CpuTimes.parse("cpu  200 0 0 200 40 0 0 0")
    share = share_pct(before, after)
    assert share["iowait"] == 0.0 and share["user"] == 50.0 and share["idle"] == 50.0
