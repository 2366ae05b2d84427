"""The systemd service: units that systemd accepts, the installer, sd_notify, and a watchdog fed only by frames."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from edge_avatar.config import load_config
from edge_avatar.fleet.install import (
    DEFAULT_EXEC,
    ENGINES_UNIT,
    MAIN_UNIT,
    default_exec_path,
    install_service,
    render_sysusers,
    render_units,
)
from edge_avatar.fleet.mosquitto import example_site_files
from edge_avatar.fleet.systemd import SystemdNotifier, Watchdog, watchdog_interval_s
from tests.conftest import REPO

SYSTEMD_DIR = REPO / "systemd"


def _unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


# --------------------------------------------------------------------------- units


def test_the_unit_files_in_the_repository_are_what_install_renders():
    for name, text in render_units().items():
        assert (SYSTEMD_DIR / name).read_text() == text, f"systemd/{name} is stale: re-render it"
    assert (SYSTEMD_DIR / "edge-avatar.sysusers.conf").read_text() == render_sysusers()
    for name, text in example_site_files().items():
        assert (SYSTEMD_DIR / "mosquitto" / name).read_text() == text, f"systemd/mosquitto/{name} is stale"


def test_the_main_unit_has_notify_watchdog_restart_and_hardening():
    main = _unit_settings(render_units()[MAIN_UNIT])
    expected = {
        "Type": ["notify"], "NotifyAccess": ["main"], "WatchdogSec": ["20s"], "Restart": ["on-failure"],
        "NoNewPrivileges": ["yes"], "ProtectSystem": ["strict"], "ProtectHome": ["yes"], "PrivateTmp": ["yes"],
        "CapabilityBoundingSet": [""], "StateDirectory": ["edge-avatar"], "CacheDirectory": ["edge-avatar"],
        "StandardOutput": ["journal"], "StandardError": ["journal"], "DevicePolicy": ["closed"],
        "SupplementaryGroups": ["video audio render"], "RestartForceExitStatus": ["75"],
    }
    for key, value in expected.items():
        assert main.get(key) == value, key
    allowed = " ".join(main["DeviceAllow"])
    for device in ("char-video4linux", "char-alsa", "char-nvhost*", "/dev/nvmap", "char-drm"):
        assert device in allowed
    engines = _unit_settings(render_units()[ENGINES_UNIT])
    assert engines["Type"] == ["oneshot"] and engines["Before"] == [MAIN_UNIT]
    assert ENGINES_UNIT in main["After"][0] and ENGINES_UNIT in main["Wants"][0]


def _verify(paths: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", *map(str, paths)], capture_output=True, text=True,
                          timeout=60, cwd=paths[0].parent)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (apt-get install systemd)")
def test_systemd_analyze_verify_accepts_both_units(tmp_path):
    """Rendered with this venv's edge-avatar as ExecStart (verify insists the binary exists)."""
    exec_path = default_exec_path()
    if not Path(exec_path).exists():
        pytest.skip(f"{exec_path} not installed (pip install -e .)")
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    paths = []
    for name, text in render_units(exec_path=exec_path).items():
        (unit_dir / name).write_text(text)
        paths.append(unit_dir / name)
    result = _verify(paths)
    assert result.returncode == 0, result.stderr
    problems = [line for line in result.stderr.splitlines() if "edge-avatar" in line]
    assert problems == [], result.stderr  # unknown keys and bad values are only warnings: refuse them too
    # and verify does catch mistakes (so a pass means something)
    broken = unit_dir / MAIN_UNIT
    broken.write_text(broken.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    assert "Unknown key" in _verify(paths).stderr


# --------------------------------------------------------------------------- install


def test_service_install_into_a_temporary_root(tmp_path):
    actions = install_service(prefix=tmp_path, exec_path="/opt/ea/bin/edge-avatar", board="orin-nano-8gb",
                              site="st-marys", device="kiosk-7")
    written = {Path(a.target).relative_to(tmp_path).as_posix() for a in actions if a.verb == "write"}
    assert written == {"etc/systemd/system/edge-avatar.service", "etc/systemd/system/edge-avatar-engines.service",
                       "etc/sysusers.d/edge-avatar.conf", "etc/edge-avatar/site.yaml",
                       "etc/edge-avatar/edge-avatar.env"}
    unit = (tmp_path / "etc/systemd/system/edge-avatar.service").read_text()
    assert "ExecStart=/opt/ea/bin/edge-avatar run --board ${EDGE_AVATAR_BOARD}" in unit
    assert (tmp_path / "etc/edge-avatar/edge-avatar.env").read_text().endswith("EDGE_AVATAR_BOARD=orin-nano-8gb\n")
    assert (tmp_path / "etc/edge-avatar/mqtt").is_dir()
    assert oct((tmp_path / "etc/edge-avatar/mqtt").stat().st_mode & 0o777) == "0o750"
    assert "m edge-avatar video" in (tmp_path / "etc/sysusers.d/edge-avatar.conf").read_text()
    assert not any(a.verb == "run" for a in actions)  # systemctl only when installing to /

    site = tmp_path / "etc/edge-avatar/site.yaml"
    config = load_config(board="orin-nano-8gb", site_file=site)  # the skeleton is a valid config
    assert (config.site.name, config.site.device_id) == ("st-marys", "kiosk-7")
    assert config.fleet.username == "kiosk-7" and not config.fleet.enabled and config.fleet.tls
    assert not config.privacy.publish_transcripts

    site.write_text(site.read_text().replace("kiosk-7", "kiosk-7b"))
    again = install_service(prefix=tmp_path, exec_path="/opt/ea/bin/edge-avatar", site="x", device="y")
    assert any(a.verb == "keep" and a.target.endswith("site.yaml") for a in again)
    assert "kiosk-7b" in site.read_text()  # an operator's edits survive a re-install
    install_service(prefix=tmp_path, exec_path="/opt/ea/bin/edge-avatar", site="x", device="y", force=True)
    assert "device_id: y" in site.read_text()


def test_service_install_dry_run_writes_nothing(tmp_path, cli):
    result = cli("service", "install", "--prefix", str(tmp_path / "root"), "--dry-run", "--board", "orin-nx-16gb",
                 "--set", "site.name=st-marys", "--set", "site.device_id=kiosk-2")
    assert result.returncode == 0, result.stderr
    assert "would write" in result.stdout and "edge-avatar.service" in result.stdout
    assert not (tmp_path / "root").exists()
    result = cli("service", "install", "--prefix", str(tmp_path / "root"), "--board", "orin-nx-16gb",
                 "--exec", DEFAULT_EXEC)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "root/etc/systemd/system/edge-avatar.service").exists()
    assert "EDGE_AVATAR_BOARD=orin-nx-16gb" in (tmp_path / "root/etc/edge-avatar/edge-avatar.env").read_text()


# --------------------------------------------------------------------------- sd_notify


@pytest.fixture
def notify_socket():
    """A real NOTIFY_SOCKET, as systemd provides (short path: AF_UNIX paths are limited to 108 bytes)."""
    directory = tempfile.mkdtemp(prefix="ea-", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield path, sock
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def _drain(sock) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2.0)
    return out


def test_sd_notify_sends_ready_status_and_watchdog(notify_socket):
    path, sock = notify_socket
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.ready("engines warm, 30 fps")
    assert sock.recv(4096).decode() == "READY=1\nSTATUS=engines warm, 30 fps"
    notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    notifier.extend_timeout(90)
    assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=90000000"
    notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    notifier.close()


def test_sd_notify_abstract_socket_and_no_socket():
    name = f"edge-avatar-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        assert SystemdNotifier(f"@{name}").notify("READY=1")
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()
    silent = SystemdNotifier.from_env({})
    assert not silent.enabled and silent.ready() is False  # outside systemd: a no-op
    assert SystemdNotifier("/nonexistent/notify").ready() is False  # a dead socket is not an exception


def test_watchdog_interval_comes_from_systemd():
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}) == 10.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, pid=4242) is None
    assert watchdog_interval_s({}) is None and watchdog_interval_s({"WATCHDOG_USEC": "x"}) is None


# --------------------------------------------------------------------------- the watchdog


def test_a_stalled_loop_is_not_pinged(notify_socket):
    path, sock = notify_socket
    frames = {"n": 0}
    now = [0.0]
    stalls = []
    dog = Watchdog(lambda: frames["n"], SystemdNotifier(path), interval_s=1.0, on_stall=stalls.append,
                   monotonic_s=lambda: now[0])
    assert dog.poll() is False  # the baseline
    for _ in range(5):  # frames advance: one ping per poll
        frames["n"] += 30
        now[0] += 1.0
        assert dog.poll() is True
    assert _drain(sock) == ["WATCHDOG=1"] * 5
    for _ in range(10):  # the loop stalls: not a single ping, however often we are asked
        now[0] += 1.0
        assert dog.poll() is False
    assert _drain(sock) == []
    assert dog.pings == 5 and dog.skipped == 10 and len(stalls) == 1  # reported once per stall
    frames["n"] += 1  # it recovers
    now[0] += 1.0
    assert dog.poll() is True and _drain(sock) == ["WATCHDOG=1"]


def test_watchdog_follows_the_real_loop_and_stops_when_it_stalls(notify_socket):
    """The real AvatarLoop (null models) advancing, then stopped: pings, then none."""
    from edge_avatar.runtime.session import Session, SessionOptions

    path, sock = notify_socket
    config = load_config("x86-cpu", overrides=["output.uri=null://", "audio_output.uri=virtual://",
                                               "loop.tick_rate_hz=30"])
    session = Session(config, SessionOptions(duration_s=1.0, null_models=True))
    session.start()
    runner = threading.Thread(target=session.run)
    dog = Watchdog(lambda: session.loop.frames_advanced, SystemdNotifier(path), interval_s=0.1)
    dog.poll()
    runner.start()
    pings_while_running = 0
    while runner.is_alive():
        time.sleep(0.1)
        pings_while_running += dog.poll()
    runner.join(5)
    assert pings_while_running >= 5
    assert session.loop.frames_advanced >= 25
    _drain(sock)
    for _ in range(5):  # the loop has stopped: frames no longer advance
        time.sleep(0.02)
        assert dog.poll() is False
    assert _drain(sock) == []


def test_watchdog_thread_only_runs_under_systemd(notify_socket):
    path, sock = notify_socket
    frames = {"n": 0}
    assert Watchdog(lambda: frames["n"], SystemdNotifier(None), interval_s=0.05).start() is False
    assert Watchdog(lambda: frames["n"], SystemdNotifier(path), interval_s=None).start() is False
    dog = Watchdog(lambda: frames["n"], SystemdNotifier(path), interval_s=0.02)
    assert dog.start() is True
    deadline = time.monotonic() + 2.0
    while dog.pings < 3 and time.monotonic() < deadline:
        frames["n"] += 1
        time.sleep(0.01)
    dog.stop()
    assert dog.pings >= 3
