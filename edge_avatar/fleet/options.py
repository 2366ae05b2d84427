"""The ``fleet`` section of the root config: broker, credentials, cadence, offline queue, operators.

Why this module exists: every knob the fleet code reads lives here, with its
unit in its name and its range in its metadata, so that ``config.py`` refuses
a bad value with the file and key it came from. It imports nothing heavy:
``config.py`` imports it at start-up on every machine, broker or not.

Secrets are never inline: the broker password comes from ``password_file``
(read at each connect, so it can be rotated without a restart), the TLS key
from ``tls_key_file``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Topic levels and operator names: no MQTT wildcards, separators or control characters.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def _range(lo: float, hi: float, default: float | int) -> object:
    return field(default=default, metadata={"min": lo, "max": hi})


@dataclass(frozen=True)
class FleetConfig:
    """How this device reports to, and takes commands from, the fleet.

    With ``enabled: false`` (the default) nothing is sent anywhere: the same
    status, telemetry and event messages are appended to ``local_log_path``
    as JSON lines.
    """

    enabled: bool = False  # off by default: messages go to a local JSON-lines file instead of a broker

    # -- broker ------------------------------------------------------------------------------
    broker_host: str = ""
    broker_port: int = _range(1, 65535, 1883)  # 8883 is the usual TLS port
    tls: bool = False
    tls_ca_file: str = ""       # CA bundle that signed the broker's certificate; "" = the system trust store
    tls_cert_file: str = ""     # this device's client certificate (PEM), with tls_key_file
    tls_key_file: str = ""
    username: str = ""
    password_file: str = ""     # one line, the broker password; never put the password itself in YAML
    client_id: str = ""         # "" = "<site.name>.<site.device_id>"
    keepalive_s: int = _range(5, 3600, 30)
    connect_timeout_s: float = _range(0.5, 120.0, 10.0)
    reconnect_backoff_initial_s: float = _range(0.05, 60.0, 1.0)
    reconnect_backoff_max_s: float = _range(0.1, 3600.0, 60.0)  # full jitter below this: no thundering herd

    # -- what is sent and how often -----------------------------------------------------------
    telemetry_interval_s: float = _range(0.1, 3600.0, 10.0)
    recent_turns: int = _range(1, 1000, 20)      # response latency is summarised over this many recent turns
    inflight_max_messages: int = _range(1, 1000, 20)  # QoS 1 messages awaiting PUBACK at once

    # -- never block the media loop: bounded memory, then a bounded disk queue -------------------
    publish_queue_max_messages: int = _range(16, 1_000_000, 4096)  # in memory, drained by the fleet thread
    offline_queue_dir: str = ""     # "" = "<site.state_dir>/fleet"; survives restarts
    offline_queue_max_mb: float = _range(0.1, 100_000.0, 64.0)  # telemetry dropped oldest first, then events

    # -- embedded default: no broker ---------------------------------------------------------
    local_log_path: str = ""        # "" = "<site.state_dir>/fleet.jsonl"
    local_log_max_mb: float = _range(0.1, 100_000.0, 16.0)  # then rotated to .1 (one old file kept)

    # -- commands ----------------------------------------------------------------------------
    # Operator identities allowed to command this device; empty = any identity the broker let publish
    # (the broker ACL is the real gate: device accounts cannot publish commands at all).
    allowed_operators: tuple[str, ...] = ()
    command_max_bytes: int = _range(64, 1_048_576, 16384)
    command_queue_max: int = _range(1, 1000, 16)  # pending commands; more are answered "busy"

    def validate(self) -> list[tuple[str, str]]:
        """Cross-field rules (called by config.py); (field, problem) pairs, first one wins."""
        problems: list[tuple[str, str]] = []
        host = self.broker_host.strip()
        if self.enabled and not host:
            problems.append(("broker_host", "is required when fleet.enabled is true "
                                            "(or set fleet.enabled: false to log to fleet.local_log_path)"))
        if host and (host != self.broker_host or "://" in host or "/" in host or " " in host):
            problems.append(("broker_host", f"got {self.broker_host!r}; expected a host name or IP address only "
                                            "(the port is fleet.broker_port, TLS is fleet.tls)"))
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            problems.append(("tls_cert_file" if not self.tls_cert_file else "tls_key_file",
                             "a client certificate needs both tls_cert_file and tls_key_file"))
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            if getattr(self, name) and not self.tls:
                problems.append((name, "is set but fleet.tls is false; set fleet.tls: true"))
        if self.password_file and not self.username:
            problems.append(("password_file", "is set but fleet.username is empty"))
        if self.reconnect_backoff_initial_s > self.reconnect_backoff_max_s:
            problems.append(("reconnect_backoff_initial_s",
                             f"{self.reconnect_backoff_initial_s} must not exceed reconnect_backoff_max_s "
                             f"({self.reconnect_backoff_max_s})"))
        if self.client_id and not _NAME_RE.fullmatch(self.client_id):
            problems.append(("client_id", f"got {self.client_id!r}; expected 1-64 of A-Z a-z 0-9 . _ @ -"))
        for i, name in enumerate(self.allowed_operators):
            if not _NAME_RE.fullmatch(name):
                problems.append((f"allowed_operators[{i}]",
                                 f"got {name!r}; expected 1-64 of A-Z a-z 0-9 . _ @ - (no MQTT wildcards)"))
        return problems


def valid_name(name: str) -> bool:
    """Whether ``name`` is usable as a topic level or operator identity."""
    return bool(_NAME_RE.fullmatch(name))
