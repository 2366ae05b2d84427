"""Mosquitto for a site: per-device ACLs and broker config rendered from one place, and a local broker for tests.

Why this module exists: the ACL is the real security boundary of the fleet
(a device may publish only under its own prefix and read only its own
commands; only operator accounts may command), so it is generated, not
hand-written per site, and the very same text is what the test suite runs a
real ``mosquitto`` with. ``systemd/mosquitto/`` holds an example rendered
from here.

``LocalBroker`` starts the real ``mosquitto`` binary (Debian/Ubuntu package
``mosquitto``) on an ephemeral 127.0.0.1 port with a password file and that
ACL, optionally a TLS listener with a throw-away CA made by ``openssl``; the
tests and ``bench fleet`` use it. Nothing here is needed on a device.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from edge_avatar.fleet.messages import CMD, CMD_RESULT, EVENTS, STATUS, TELEMETRY, TOPIC_ROOT, DeviceTopics
from edge_avatar.fleet.options import valid_name

START_TIMEOUT_S = 10.0


def render_acl(devices: Iterable[tuple[str, str, str]], operators: Iterable[str]) -> str:
    """Mosquitto ACL text. ``devices`` are (username, site, device_id); operators are usernames.

    Devices: write their own status/telemetry/events/cmd-result, read their
    own cmd/#; nothing else (not even their own commands: they cannot
    impersonate an operator). Operators: read everything under the fleet
    root, write commands to any device.
    """
    lines = ["# edge-avatar fleet ACL (rendered by edge_avatar.fleet.mosquitto.render_acl).",
             "# Anything not granted here is denied. One block per device account, one per operator.", ""]
    for username, site, device in devices:
        _check(username, "device username")
        topics = DeviceTopics(site, device)
        lines.append(f"user {username}")
        for leaf in (STATUS, TELEMETRY, EVENTS, CMD_RESULT):
            lines.append(f"topic write {topics.topic(leaf)}")
        lines.append(f"topic read {topics.topic(CMD)}/#")
        lines.append("")
    for username in operators:
        _check(username, "operator username")
        lines.append(f"user {username}")
        lines.append(f"topic read {TOPIC_ROOT}/#")
        lines.append(f"topic write {TOPIC_ROOT}/+/+/{CMD}/#")
        lines.append("")
    return "\n".join(lines)


def _check(name: str, what: str) -> None:
    if not valid_name(name):
        raise ValueError(f"{what} {name!r}: expected 1-64 of A-Z a-z 0-9 . _ @ -")


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def render_broker_conf(*, port: int | None, password_file: str, acl_file: str, bind: str = "127.0.0.1",
                       tls_port: int | None = None, tls: TlsFiles | None = None, tls_bind: str | None = None,
                       persistence_dir: str | None = None, run_as: str | None = None,
                       max_queued_messages: int = 10000, log_dest: str = "stdout") -> str:
    """A mosquitto.conf: no anonymous access, password file, ACL, optional TLS listener requiring client certs.

    ``port`` is a plain listener on ``bind`` (keep it on 127.0.0.1 in production);
    the TLS listener binds ``tls_bind`` (None: all interfaces).
    """
    lines = ["# edge-avatar site broker (rendered by edge_avatar.fleet.mosquitto.render_broker_conf).",
             "# Listener settings are global (per_listener_settings false): every listener needs",
             "# a password (allow_anonymous false) and obeys the same ACL.",
             "per_listener_settings false",
             "allow_anonymous false",
             f"password_file {password_file}",
             f"acl_file {acl_file}",
             "# QoS 1 messages held per offline persistent client (a console that must not miss events).",
             f"max_queued_messages {max_queued_messages}",
             f"log_dest {log_dest}",
             "log_type error", "log_type warning", "log_type notice",
             "connection_messages true"]
    if run_as:
        lines.append(f"user {run_as}")
    if persistence_dir:
        lines += ["# Retained status/telemetry and persistent sessions survive a broker restart.",
                  "persistence true", f"persistence_location {persistence_dir.rstrip('/')}/", "autosave_interval 60"]
    if port is not None:
        lines += ["", f"listener {port} {bind}".rstrip()]
    if tls_port is not None and tls is not None:
        lines += ["", "# Devices and operators: TLS 1.2+, the broker's certificate signed by the site CA,",
                  "# and a client certificate from the same CA in addition to the password.",
                  f"listener {tls_port} {tls_bind or ''}".rstrip(),
                  f"cafile {tls.ca_file}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}",
                  "tls_version tlsv1.2",
                  "require_certificate true",
                  "use_identity_as_username false"]
    return "\n".join(lines) + "\n"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def make_test_pki(directory: str | Path, client_cn: str = "test-device", valid_days: int = 2) -> TlsFiles:
    """A throw-away CA, a server certificate for localhost/127.0.0.1 and a client certificate (EC P-256)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl not found (apt-get install openssl)")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30, cwd=d)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(valid_days),
        "-subj", "/CN=edge-avatar test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-addext", "subjectKeyIdentifier=hash")
    for name, cn, usage, san in (("server", "localhost", "serverAuth", "DNS:localhost,IP:127.0.0.1"),
                                 ("client", client_cn, "clientAuth", f"DNS:{client_cn}")):
        (d / f"{name}.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n"
            f"extendedKeyUsage={usage}\nsubjectAltName={san}\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n", encoding="ascii")
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", str(valid_days), "-extfile", f"{name}.ext")
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return TlsFiles(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")


class LocalBroker:
    """A real mosquitto on 127.0.0.1, ephemeral port(s), auth + ACL; restartable on the same port."""

    def __init__(self, directory: str | Path, *, users: Mapping[str, str],
                 devices: Iterable[tuple[str, str, str]] = (), operators: Iterable[str] = (),
                 tls: bool = False, persistence: bool = True, acl_text: str | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.users = dict(users)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.tls_files = make_test_pki(self.dir / "pki") if tls else None
        self.password_file = self.dir / "passwd"
        self.acl_file = self.dir / "acl"
        self.conf_file = self.dir / "mosquitto.conf"
        self.log_file = self.dir / "mosquitto.log"
        self._process: subprocess.Popen | None = None
        self._log = None
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto")
                                                else None)
        passwd = shutil.which("mosquitto_passwd")
        if binary is None or passwd is None:
            raise FileNotFoundError("mosquitto not found (apt-get install mosquitto)")
        self.binary = binary
        self.password_file.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()), encoding="utf-8")
        self.password_file.chmod(0o600)
        subprocess.run([passwd, "-U", str(self.password_file)], check=True, capture_output=True, timeout=60)
        self.acl_file.write_text(acl_text if acl_text is not None else render_acl(devices, operators),
                                 encoding="utf-8")
        persistence_dir = self.dir / "db"
        persistence_dir.mkdir(exist_ok=True)
        self.conf_file.write_text(render_broker_conf(
            port=self.port, password_file=str(self.password_file), acl_file=str(self.acl_file),
            tls_port=self.tls_port, tls=self.tls_files,
            persistence_dir=str(persistence_dir) if persistence else None, run_as=getpass.getuser(),
            max_queued_messages=100000), encoding="utf-8")

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "LocalBroker":
        if self.running:
            return self
        self._log = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen([self.binary, "-c", str(self.conf_file)], stdout=self._log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        ports = [p for p in (self.port, self.tls_port) if p is not None]
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._process.returncode}: {self.log_tail()}")
            if all(_accepts(p) for p in ports):
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"mosquitto did not listen on {ports} within {timeout_s} s: {self.log_tail()}")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM (mosquitto saves its persistence database), then SIGKILL if it lingers."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
                try:
                    self._process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(timeout_s)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> "LocalBroker":
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


EXAMPLE_SITE = "st-marys"
EXAMPLE_DEVICES = ("kiosk-01", "kiosk-02", "robot-01")
EXAMPLE_OPERATORS = ("ops-alice", "ops-dashboard")


def example_site_files() -> dict[str, str]:
    """The files in ``systemd/mosquitto/`` (a test keeps them equal to this)."""
    tls = TlsFiles(Path("/etc/mosquitto/certs/ca.crt"), Path("/etc/mosquitto/certs/broker.crt"),
                   Path("/etc/mosquitto/certs/broker.key"), Path(), Path())
    conf = render_broker_conf(port=1883, bind="127.0.0.1", password_file="/etc/mosquitto/edge-avatar.passwd",
                              acl_file="/etc/mosquitto/edge-avatar.acl", tls_port=8883, tls=tls, tls_bind=None,
                              persistence_dir="/var/lib/mosquitto", max_queued_messages=10000,
                              log_dest="syslog")
    acl = render_acl([(d, EXAMPLE_SITE, d) for d in EXAMPLE_DEVICES], EXAMPLE_OPERATORS)
    return {"edge-avatar.conf": conf, "edge-avatar.acl": acl}
