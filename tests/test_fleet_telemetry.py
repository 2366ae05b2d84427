"""Telemetry: the loop's stats summarised per interval, the host from /proc, a Jetson's sensors from sysfs."""

from __future__ import annotations

import pytest

from edge_avatar.config import ConfigError, load_config
from edge_avatar.fleet.options import FleetConfig
from edge_avatar.fleet.telemetry import HostProbe, JtopProbe, SysfsProbe, TelemetrySource


def _fake_orin_sysfs(root):
    """The files an Orin Nano exposes (values from a real board's sysfs layout; JetPack 6)."""
    zones = [("cpu-thermal", 48500), ("gpu-thermal", 47250), ("soc0-thermal", 46000), ("tj-thermal", 49000),
             ("cv0-thermal", -256000)]
    for i, (kind, milli) in enumerate(zones):
        z = root / f"class/thermal/thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(f"{milli}\n")
    hw = root / "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    hw.mkdir(parents=True)
    for ch, label, mv, ma in ((1, "VDD_IN", 5080, 1240), (2, "VDD_CPU_GPU_CV", 5072, 380),
                              (3, "VDD_SOC", 5076, 420)):
        (hw / f"in{ch}_label").write_text(label + "\n")
        (hw / f"in{ch}_input").write_text(f"{mv}\n")
        (hw / f"curr{ch}_input").write_text(f"{ma}\n")
    (hw / "in7_label").write_text("sum of shunt voltages\n")
    gpu = root / "devices/platform/17000000.ga10b"
    gpu.mkdir(parents=True)
    (gpu / "load").write_text("312\n")


def test_sysfs_probe_reads_thermal_zones_ina3221_rails_and_gpu_load(tmp_path):
    _fake_orin_sysfs(tmp_path)
    sample = SysfsProbe(tmp_path).sample()
    assert sample["source"] == "sysfs"
    assert sample["temperatures_c"] == {"cpu-thermal": 48.5, "gpu-thermal": 47.2, "soc0-thermal": 46.0,
                                        "tj-thermal": 49.0}  # the disabled zone (-256 C) is left out
    assert sample["power_mw"] == {"VDD_IN": pytest.approx(6299.2), "VDD_CPU_GPU_CV": pytest.approx(1927.4),
                                  "VDD_SOC": pytest.approx(2131.9)}
    assert sample["gpu_load_pct"] == 31.2


def test_sysfs_probe_on_a_machine_without_any_of_it(tmp_path):
    assert SysfsProbe(tmp_path).sample() == {"source": "sysfs"}


def test_jtop_is_used_only_when_installed_and_running():
    try:
        import jtop  # noqa: F401
    except ImportError:
        assert JtopProbe.open() is None
    else:  # pragma: no cover - only on a Jetson with jetson-stats
        pytest.skip("jetson-stats installed; covered on the device")


def test_host_probe_reads_proc(tmp_path):
    proc = tmp_path
    (proc / "self").mkdir()
    (proc / "stat").write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 1 1 1\n")
    (proc / "loadavg").write_text("0.52 0.40 0.30 1/100 42\n")
    (proc / "meminfo").write_text("MemTotal:        7999000 kB\nMemFree:  1 kB\nMemAvailable:    5951000 kB\n")
    (proc / "self/statm").write_text("1000 2560 0 0 0 0 0\n")
    probe = HostProbe(proc)
    (proc / "stat").write_text("cpu  150 0 150 900 0 0 0 0 0 0\n")
    sample = probe.sample()
    assert sample["cpu_pct"] == 50.0 and sample["load_1m"] == 0.52
    assert sample["memory_total_mb"] == pytest.approx(7811.5, abs=0.1)
    assert sample["memory_used_mb"] == pytest.approx(2000.0, abs=0.1)
    assert sample["process_rss_mb"] > 0


def test_telemetry_source_summarises_the_interval_from_the_session_stats(tmp_path):
    now = [100.0]
    state = {"rendered": 0, "dropped": 0}
    turns = [{"turn_id": i, "response_latency_ms": float(v), "reply_text": "..."} for i, v in
             enumerate([900, 400, 500, 600, 700])]

    def stats():
        return {"frames": {"rendered": state["rendered"], "dropped": state["dropped"], "fps": 30.0},
                "stages_ms": {"perception": {"count": 10, "p50": 7.5, "p95": 9.0, "max": 20},
                              "planner": {"count": 0}},
                "tick_ms": {"count": 10, "p50": 20.0, "p95": 25.0},
                "turns": turns, "av_offset_ms": 12.5, "ticks": {"late": 3}}

    _fake_orin_sysfs(tmp_path)
    source = TelemetrySource(stats, recent_turns=4, sysfs_root=tmp_path, use_jtop=False,
                             monotonic_s=lambda: now[0])
    first = source.sample()
    assert first["fps"] == 30.0 and first["dropped_frames"] == 0
    state.update(rendered=299, dropped=2)
    now[0] += 10.0
    sample = source.sample()
    assert sample["fps"] == 29.9 and sample["dropped_frames"] == 2
    assert sample["stages_ms"] == {"perception": {"p50": 7.5, "p95": 9.0}}
    assert sample["tick_ms"] == {"p50": 20.0, "p95": 25.0}
    assert sample["response_latency_ms"] == {"turns": 4, "p50": 550.0, "p95": 685.0, "last": 700.0}
    assert sample["av_offset_ms"] == 12.5 and sample["late_ticks_total"] == 3
    assert sample["uptime_s"] == 10.0
    assert sample["system"]["gpu_load_pct"] == 31.2 and "cpu_count" in sample["system"]
    assert "reply_text" not in str(sample)


def test_a_failing_stats_function_still_yields_a_sample():
    def stats():
        raise RuntimeError("loop not built yet")

    sample = TelemetrySource(stats, use_jtop=False, sysfs_root="/nonexistent").sample()
    assert "loop not built yet" in sample["stats_error"] and "system" in sample


# --------------------------------------------------------------------------- the fleet config section


def test_fleet_defaults_are_the_embedded_local_mode():
    fleet = load_config().fleet
    assert fleet == FleetConfig() and not fleet.enabled and fleet.validate() == []


@pytest.mark.parametrize("overrides, key, words", [
    (["fleet.enabled=true"], "fleet.broker_host", "required"),
    (["fleet.broker_host=mqtt://x"], "fleet.broker_host", "host name"),
    (["fleet.tls=true", "fleet.tls_cert_file=/c.pem"], "fleet.tls_key_file", "both"),
    (["fleet.tls_ca_file=/ca.pem"], "fleet.tls_ca_file", "fleet.tls is false"),
    (["fleet.password_file=/p"], "fleet.password_file", "username"),
    (["fleet.reconnect_backoff_initial_s=30", "fleet.reconnect_backoff_max_s=5"],
     "fleet.reconnect_backoff_initial_s", "must not exceed"),
    (["fleet.allowed_operators=[alice, 'ops/#']"], "fleet.allowed_operators[1]", "wildcards"),
    (["fleet.client_id=a b"], "fleet.client_id", "expected"),
    (["fleet.broker_port=0"], "fleet.broker_port", "expected a value in"),
    (["fleet.telemetry_interval_s=0"], "fleet.telemetry_interval_s", "expected a value in"),
    (["fleet.password=hunter2"], "fleet.password", "unknown key"),
])
def test_bad_fleet_settings_are_refused_with_the_key(overrides, key, words):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    assert info.value.key_path == key and words in info.value.problem


def test_a_complete_tls_fleet_section_loads():
    fleet = load_config(overrides=["fleet.enabled=true", "fleet.broker_host=broker.st-marys.local",
                                   "fleet.broker_port=8883", "fleet.tls=true", "fleet.tls_ca_file=/etc/ca.crt",
                                   "fleet.tls_cert_file=/etc/c.crt", "fleet.tls_key_file=/etc/c.key",
                                   "fleet.username=kiosk-1", "fleet.password_file=/etc/pw",
                                   "fleet.allowed_operators=[ops-alice]"]).fleet
    assert fleet.enabled and fleet.allowed_operators == ("ops-alice",)
