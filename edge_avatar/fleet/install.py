"""``edge-avatar service install``: the systemd units, the service account and the /etc/edge-avatar skeleton.

Why this module exists: a kiosk is set up once by someone who is not a
developer, and must then run unattended for years. The unit files are
rendered here from one template (so the files in ``systemd/`` are exactly
what gets installed; a test checks they match) with the path of the
``edge-avatar`` executable and the service account filled in, and written
under a root directory (``--prefix``) so that the whole installation can be
tested in a temporary directory and inspected with ``--dry-run``.

What is written (relative to the root):

- ``etc/systemd/system/edge-avatar.service``: ``Type=notify`` (READY after
  engines are warm), ``WatchdogSec`` (pinged only while frames advance),
  ``Restart=on-failure``, hardened, camera/audio/GPU devices allowed;
- ``etc/systemd/system/edge-avatar-engines.service``: the oneshot engine build
  ordered before it (idempotent: a no-op when the cache matches the board and
  the TensorRT version, so it costs nothing at a normal boot and rebuilds after
  a JetPack upgrade);
- ``etc/sysusers.d/edge-avatar.conf``: the ``edge-avatar`` system user, member
  of video, audio and render;
- ``etc/edge-avatar/site.yaml`` and ``edge-avatar.env`` (kept if present) and
  ``etc/edge-avatar/mqtt/`` for the broker CA, client certificate and password.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_EXEC = "/opt/edge-avatar/.venv/bin/edge-avatar"
DEFAULT_USER = "edge-avatar"
CONFIG_DIR = "/etc/edge-avatar"
UNIT_DIR = "etc/systemd/system"
SYSUSERS_FILE = "etc/sysusers.d/edge-avatar.conf"
MAIN_UNIT = "edge-avatar.service"
ENGINES_UNIT = "edge-avatar-engines.service"
WATCHDOG_S = 20          # systemd kills and restarts the avatar after this long without a new frame
START_TIMEOUT_S = 300    # model loading and warm-up (the engine build has its own unit and timeout)
ENGINE_BUILD_TIMEOUT_S = 7200

# Shared hardening. Every line is a capability the avatar does not need; the comments say why a line is absent.
_HARDENING = """\
# Hardening: no privileges, read-only system, nothing of /home, a private /tmp.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
PrivateMounts=yes
RemoveIPC=yes
UMask=0027
# The usual service system calls; anything else fails with EPERM (visible in the journal) rather than a kill.
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# Not set on purpose: MemoryDenyWriteExecute (CUDA and TensorRT JIT-compile kernels into W+X pages),
# ProcSubset=pid (telemetry reads /proc/stat and /proc/meminfo), PrivateDevices (cameras, sound, GPU).
"""

_GPU_DEVICES = """\
# GPU on a Jetson: nvmap and the host1x channels (nvhost-*, JetPack 5) or nvgpu nodes (JetPack 6), DRM.
DeviceAllow=/dev/nvmap rw
DeviceAllow=/dev/host1x-fence rw
DeviceAllow=char-nvhost* rw
DeviceAllow=char-nvgpu* rw
DeviceAllow=char-drm rw
"""

_MAIN_TEMPLATE = """\
# edge-avatar: the conversational kiosk avatar.
# Rendered by `edge-avatar service install` from edge_avatar/fleet/install.py; edit that, not this file.
[Unit]
Description=edge-avatar conversational kiosk avatar
Wants=network-online.target @ENGINES_UNIT@
After=network-online.target sound.target @ENGINES_UNIT@
StartLimitIntervalSec=600
StartLimitBurst=5

[Service]
# READY=1 is sent once engines are loaded and warmed; WATCHDOG=1 only while frames advance.
Type=notify
NotifyAccess=main
WatchdogSec=@WATCHDOG_S@s
TimeoutStartSec=@START_TIMEOUT_S@s
TimeoutStopSec=20s
Restart=on-failure
RestartSec=5s
# A restart asked for by the fleet (command "restart") exits with 75.
RestartForceExitStatus=75
KillMode=mixed
Environment=EDGE_AVATAR_BOARD=x86-cpu
Environment=HOME=%S/edge-avatar
Environment=PYTHONUNBUFFERED=1
# On a watchdog kill (SIGABRT) Python prints every thread's stack to the journal: where it was stuck.
Environment=PYTHONFAULTHANDLER=1
EnvironmentFile=-@CONFIG_DIR@/edge-avatar.env
ExecStart=@EXEC@ run --board ${EDGE_AVATAR_BOARD} --site @CONFIG_DIR@/site.yaml
User=@USER@
Group=@USER@
SupplementaryGroups=video audio render
WorkingDirectory=%S/edge-avatar
StateDirectory=edge-avatar
StateDirectoryMode=0750
CacheDirectory=edge-avatar
CacheDirectoryMode=0750
ConfigurationDirectory=edge-avatar
StandardOutput=journal
StandardError=journal
SyslogIdentifier=edge-avatar
# The kiosk display: an X11 socket survives PrivateTmp= (ignored when absent).
BindReadOnlyPaths=-/tmp/.X11-unix

@HARDENING@
# Devices: everything closed except cameras (V4L2, RealSense over USB), sound and the GPU.
DevicePolicy=closed
DeviceAllow=char-video4linux rw
DeviceAllow=char-usb_device rw
DeviceAllow=char-alsa rw
@GPU_DEVICES@
[Install]
WantedBy=multi-user.target
"""

_ENGINES_TEMPLATE = """\
# edge-avatar-engines: build the TensorRT engines for this board before the avatar starts.
# Rendered by `edge-avatar service install` from edge_avatar/fleet/install.py; edit that, not this file.
# The build is keyed by model hash, precision, board and TensorRT version: at a normal boot it finds its
# cache and exits at once; at first boot and after a JetPack upgrade it builds (tens of minutes on a Nano).
[Unit]
Description=edge-avatar engine build (first boot, after a JetPack upgrade)
Before=@MAIN_UNIT@
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=@ENGINE_BUILD_TIMEOUT_S@s
Environment=EDGE_AVATAR_BOARD=x86-cpu
Environment=HOME=%S/edge-avatar
Environment=PYTHONUNBUFFERED=1
EnvironmentFile=-@CONFIG_DIR@/edge-avatar.env
ExecStart=@EXEC@ engines build --board ${EDGE_AVATAR_BOARD} --site @CONFIG_DIR@/site.yaml
User=@USER@
Group=@USER@
SupplementaryGroups=video render
WorkingDirectory=%S/edge-avatar
StateDirectory=edge-avatar
StateDirectoryMode=0750
CacheDirectory=edge-avatar
CacheDirectoryMode=0750
ConfigurationDirectory=edge-avatar
StandardOutput=journal
StandardError=journal
SyslogIdentifier=edge-avatar-engines
Nice=5

@HARDENING@
DevicePolicy=closed
@GPU_DEVICES@
[Install]
WantedBy=multi-user.target
"""

_SYSUSERS_TEMPLATE = """\
# The edge-avatar service account (rendered by `edge-avatar service install`).
u @USER@ - "edge-avatar kiosk service" /var/lib/edge-avatar -
m @USER@ video
m @USER@ audio
m @USER@ render
"""

_ENV_TEMPLATE = """\
# Read by edge-avatar.service and edge-avatar-engines.service.
# The board config (board_configs/<name>.yaml): orin-nano-8gb, orin-nx-16gb, agx-orin-64gb, thor, x86-cpu.
EDGE_AVATAR_BOARD=@BOARD@
"""

_SITE_TEMPLATE = """\
# This kiosk's site configuration, merged over board_configs/<board>.yaml.
# Check it with: edge-avatar config show --board @BOARD@ --site @CONFIG_DIR@/site.yaml
site:
  name: @SITE@
  device_id: @DEVICE@
  state_dir: /var/lib/edge-avatar
backend:
  engine_cache_dir: /var/cache/edge-avatar/engines
# camera:
#   uri: "realsense://"            # or "v4l2:///dev/video0", "csi://0"
# microphone:
#   uri: "alsa://default"
# audio_output:
#   uri: "alsa://default"
output:
  uri: "window://?fullscreen=1"
  report_path: /var/lib/edge-avatar/report.json
privacy:
  log_transcripts: false
  publish_transcripts: false
  record_camera: false
  record_microphone: false
fleet:
  enabled: false                   # true once the broker below is set up (until then: /var/lib/edge-avatar/fleet.jsonl)
  broker_host: ""
  broker_port: 8883
  tls: true
  tls_ca_file: @CONFIG_DIR@/mqtt/ca.crt
  tls_cert_file: @CONFIG_DIR@/mqtt/client.crt
  tls_key_file: @CONFIG_DIR@/mqtt/client.key
  username: @DEVICE@
  password_file: @CONFIG_DIR@/mqtt/password
  allowed_operators: []
"""


def _fill(template: str, **values: str) -> str:
    text = template.replace("@HARDENING@", _HARDENING).replace("@GPU_DEVICES@", _GPU_DEVICES)
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = [w for w in text.split() if len(w) > 2 and w.startswith("@") and w.endswith("@")]
    if leftover:  # pragma: no cover - a template bug, caught by the tests
        raise AssertionError(f"unfilled placeholders: {leftover}")
    return text


def render_units(exec_path: str = DEFAULT_EXEC, user: str = DEFAULT_USER,
                 config_dir: str = CONFIG_DIR) -> dict[str, str]:
    """Unit file name -> text."""
    common = dict(EXEC=exec_path, USER=user, CONFIG_DIR=config_dir, MAIN_UNIT=MAIN_UNIT,
                  ENGINES_UNIT=ENGINES_UNIT, WATCHDOG_S=str(WATCHDOG_S), START_TIMEOUT_S=str(START_TIMEOUT_S),
                  ENGINE_BUILD_TIMEOUT_S=str(ENGINE_BUILD_TIMEOUT_S))
    return {MAIN_UNIT: _fill(_MAIN_TEMPLATE, **common), ENGINES_UNIT: _fill(_ENGINES_TEMPLATE, **common)}


def render_sysusers(user: str = DEFAULT_USER) -> str:
    return _fill(_SYSUSERS_TEMPLATE, USER=user)


def render_site_skeleton(site: str, device: str, board: str, config_dir: str = CONFIG_DIR) -> str:
    return _fill(_SITE_TEMPLATE, SITE=site, DEVICE=device, BOARD=board, CONFIG_DIR=config_dir)


def render_env(board: str) -> str:
    return _fill(_ENV_TEMPLATE, BOARD=board)


def default_exec_path() -> str:
    """The ``edge-avatar`` next to this interpreter (a venv), else on PATH, else the documented default."""
    beside = Path(sys.executable).parent / "edge-avatar"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("edge-avatar") or DEFAULT_EXEC


@dataclass(frozen=True)
class Action:
    verb: str      # "write", "keep", "mkdir", "run", "skip"
    target: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.verb:<6} {self.target}" + (f"  ({self.detail})" if self.detail else "")


def install_service(*, prefix: str | Path = "/", exec_path: str | None = None, user: str = DEFAULT_USER,
                    board: str = "x86-cpu", site: str = "dev-site", device: str = "dev-device",
                    dry_run: bool = False, run_systemctl: bool = True, force: bool = False) -> list[Action]:
    """Render and write everything under ``prefix``; returns what was (or, with ``dry_run``, would be) done.

    Unit files and the sysusers entry are always rewritten; ``site.yaml`` and
    ``edge-avatar.env`` are kept if present (``force`` overwrites them). With
    ``prefix`` "/" and not ``dry_run``, ``systemd-sysusers`` and
    ``systemctl daemon-reload`` run afterwards (when present and
    ``run_systemctl``).
    """
    root = Path(prefix)
    exec_path = exec_path or default_exec_path()
    config_dir = Path(CONFIG_DIR)
    files: list[tuple[Path, str, int, bool]] = []  # path, text, mode, overwrite
    for name, text in render_units(exec_path, user).items():
        files.append((root / UNIT_DIR / name, text, 0o644, True))
    files.append((root / SYSUSERS_FILE, render_sysusers(user), 0o644, True))
    files.append((root / config_dir.relative_to("/") / "site.yaml",
                  render_site_skeleton(site, device, board), 0o644, force))
    files.append((root / config_dir.relative_to("/") / "edge-avatar.env", render_env(board), 0o644, force))
    mqtt_dir = root / config_dir.relative_to("/") / "mqtt"

    actions: list[Action] = []
    for path, text, mode, overwrite in files:
        if path.exists() and not overwrite:
            actions.append(Action("keep", str(path), "exists; --force to overwrite"))
            continue
        actions.append(Action("write", str(path), f"mode {mode:o}"))
        if not dry_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.chmod(mode)
            tmp.replace(path)
    if not mqtt_dir.exists():
        actions.append(Action("mkdir", str(mqtt_dir), "mode 750: ca.crt, client.crt, client.key, password"))
        if not dry_run:
            mqtt_dir.mkdir(parents=True, exist_ok=True)
            mqtt_dir.chmod(0o750)

    if root.resolve() == Path("/") and run_systemctl:
        for command in (["systemd-sysusers", str(root / SYSUSERS_FILE)], ["systemctl", "daemon-reload"]):
            if shutil.which(command[0]) is None:
                actions.append(Action("skip", " ".join(command), f"{command[0]} not found"))
                continue
            actions.append(Action("run", " ".join(command)))
            if not dry_run:
                try:
                    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    actions.append(Action("fail", " ".join(command), str(exc)))
                    continue
                if done.returncode != 0:
                    actions.append(Action("fail", " ".join(command), done.stderr.strip()[:200]))
        if not dry_run:
            _chown_group(mqtt_dir, user)
    return actions


def _chown_group(path: Path, group: str) -> None:
    """root:<group> on the credentials directory, so the service can read it and nobody else can."""
    try:
        shutil.chown(path, user="root", group=group)
    except (LookupError, PermissionError, OSError) as exc:
        log.warning("could not chown %s to root:%s (%s); do it once the account exists", path, group, exc)
