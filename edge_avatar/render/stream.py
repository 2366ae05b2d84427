"""Motion frames out over WebSocket, so a Unity, Unreal or three.js avatar can be driven from the planner.

Why this module exists: the same motion frames that the neural renderer
draws can drive a 3D avatar on another screen or machine. Each frame goes
out as one JSON text message with the ARKit blendshape names, the head's and
eyes' rotation in degrees and the frame's pts on the media clock.

Why our own small server instead of a package: what is needed is the
server half of RFC 6455 for text messages (handshake, unmasked frames out,
close/ping in) -- about two hundred lines on the standard library -- and it
must never be able to stall the tick. A dependency such as ``websockets``
would bring asyncio into a threaded loop for no gain.

Safety rules:

- off by default; bound to 127.0.0.1 unless the site config says otherwise,
  and then a token is required (``?token=...`` in the URL, which browsers can
  send, or ``Authorization: Bearer ...``), compared in constant time;
- ``publish()`` is called by the tick and never blocks: each client has a
  bounded queue (``stream_queue_frames``) that drops its oldest frame when
  full (counted); a client thread sends with a timeout and a client that
  cannot take a frame for ``stream_send_timeout_ms`` is disconnected;
- at most ``stream_max_clients`` clients; handshakes time out.

Message (``"v": 1``), one per sent frame::

    {"v": 1, "type": "motion", "seq": 42, "pts_ns": 1400000000, "pts_s": 1.4,
     "blendshapes": {"browDownLeft": 0.0, ..., "tongueOut": 0.0},
     "head": {"yaw_deg": 3.1, "pitch_deg": -1.0, "roll_deg": 0.0},
     "eyes": {"left": {"yaw_deg": 2.0, "pitch_deg": 0.0}, "right": {"yaw_deg": 2.0, "pitch_deg": 0.0}},
     "gestures": {"nod": 0.0, "shake": 0.0, "tilt": 0.0, "point": 0.0, "open_hands": 0.0}}

A ``hello`` message on connect names the layout version and the sign
conventions (see ``edge_avatar.render.layout``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import select
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import numpy as np

from edge_avatar.motion import ARKIT_BLENDSHAPES, GESTURE_NAMES, MOTION_FRAME_VERSION, MotionFrame
from edge_avatar.render.options import AvatarOutputConfig

log = logging.getLogger(__name__)

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC11B65"
HANDSHAKE_TIMEOUT_S = 3.0
MAX_HEADER_BYTES = 8192
MAX_CLIENT_FRAME_BYTES = 65536
# Kernel send buffer per client: ~2 s of 30 Hz motion. Bounded so a stalled client shows up as a send
# timeout within seconds instead of megabytes (and seconds of latency) later.
CLIENT_SEND_BUFFER_BYTES = 65536
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
CONVENTIONS = {
    "angles": "degrees",
    "head_yaw": "+ turns the face to the avatar's left (the viewer's right)",
    "head_pitch": "+ raises the chin",
    "head_roll": "+ tilts the head towards the avatar's left shoulder",
    "eye_yaw": "+ towards the avatar's left", "eye_pitch": "+ up",
    "blendshapes": "ARKit names; Left/Right are the avatar's own sides; 0..1",
    "pts": "presentation time on the device's audio clock",
}


def encode_frame(payload: bytes, opcode: int = OP_TEXT, mask: bool = False) -> bytes:
    """One final WebSocket frame. Servers send unmasked frames; clients must mask theirs."""
    head = bytearray([0x80 | opcode])
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head.append(mask_bit | n)
    elif n < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + key + body


def parse_frame(buffer: bytearray) -> tuple[int, bytes] | None:
    """Take one complete frame off the front of ``buffer``: (opcode, payload), or None if incomplete."""
    if len(buffer) < 2:
        return None
    opcode = buffer[0] & 0x0F
    masked = bool(buffer[1] & 0x80)
    n = buffer[1] & 0x7F
    pos = 2
    if n == 126:
        if len(buffer) < 4:
            return None
        n = struct.unpack("!H", buffer[2:4])[0]
        pos = 4
    elif n == 127:
        if len(buffer) < 10:
            return None
        n = struct.unpack("!Q", buffer[2:10])[0]
        pos = 10
    if n > MAX_CLIENT_FRAME_BYTES:
        raise ValueError(f"frame of {n} bytes is too large")
    key = b""
    if masked:
        if len(buffer) < pos + 4:
            return None
        key = bytes(buffer[pos:pos + 4])
        pos += 4
    if len(buffer) < pos + n:
        return None
    payload = bytes(buffer[pos:pos + n])
    del buffer[:pos + n]
    if masked:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def motion_message(frame: MotionFrame) -> bytes:
    """The JSON text of one motion frame (values rounded to 1e-4)."""
    v = np.asarray(frame.values, np.float64)
    r = [round(float(x), 4) for x in v]
    message = {
        "v": MOTION_FRAME_VERSION, "type": "motion", "seq": int(frame.seq), "pts_ns": int(frame.pts_ns),
        "pts_s": round(frame.pts_ns / 1e9, 6),
        "blendshapes": dict(zip(ARKIT_BLENDSHAPES, r[:52])),
        "head": {"yaw_deg": r[52], "pitch_deg": r[53], "roll_deg": r[54]},
        "eyes": {"left": {"yaw_deg": r[55], "pitch_deg": r[56]}, "right": {"yaw_deg": r[57], "pitch_deg": r[58]}},
        "gestures": dict(zip(GESTURE_NAMES, r[59:64])),
    }
    return json.dumps(message, separators=(",", ":")).encode()


def hello_message() -> bytes:
    return json.dumps({"v": MOTION_FRAME_VERSION, "type": "hello", "blendshapes": list(ARKIT_BLENDSHAPES),
                       "gestures": list(GESTURE_NAMES), "conventions": CONVENTIONS},
                      separators=(",", ":")).encode()


@dataclass
class StreamCounters:
    frames_published: int = 0
    frames_skipped_rate: int = 0
    messages_dropped: int = 0       # oldest frames dropped from full client queues
    clients_accepted: int = 0
    clients_rejected: int = 0       # full, bad handshake
    auth_failures: int = 0
    clients_dropped_slow: int = 0   # could not take a frame within the send timeout
    clients_disconnected: int = 0


class _Client:
    def __init__(self, sock: socket.socket, address: tuple, queue_frames: int):
        self.sock = sock
        self.address = address
        self.queue: deque[bytes] = deque()
        self.queue_frames = queue_frames
        self.cond = threading.Condition()
        self.closed = False
        self.thread: threading.Thread | None = None


class MotionStream:
    """The WebSocket server. ``start()``, then ``publish(frame)`` every tick, then ``close()``."""

    def __init__(self, options: AvatarOutputConfig):
        problems = options.validate()
        if problems:
            raise ValueError(f"avatar.{problems[0][0]}: {problems[0][1]}")
        self.options = options
        self.counters = StreamCounters()
        self._clients: list[_Client] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._running = False
        self._period_ns = int(1e9 / options.stream_rate_hz)
        self._next_pts_ns: int | None = None

    # ------------------------------------------------------------------ lifetime

    def start(self) -> tuple[str, int]:
        """Bind and listen; returns (host, port) actually bound."""
        family = socket.AF_INET6 if ":" in self.options.stream_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.options.stream_host, self.options.stream_port))
        sock.listen(8)
        sock.settimeout(0.2)
        self._listener = sock
        self._running = True
        self._accept_thread = threading.Thread(target=self._accept_loop, name="motion-stream accept", daemon=True)
        self._accept_thread.start()
        host, port = sock.getsockname()[:2]
        log.info("motion stream on ws://%s:%d%s (%s)", host, port, self.options.stream_path,
                 "token required" if self.options.stream_token else "loopback, no token")
        return host, port

    @property
    def address(self) -> tuple[str, int]:
        if self._listener is None:
            raise RuntimeError("motion stream not started")
        return self._listener.getsockname()[:2]

    def close(self) -> None:
        self._running = False
        if self._listener is not None:
            self._listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=2.0)
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            self._drop(c, reason=None)
        for c in clients:
            if c.thread is not None:
                c.thread.join(timeout=2.0)

    def __enter__(self) -> "MotionStream":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the tick's side

    def publish(self, frame: MotionFrame) -> None:
        """Queue ``frame`` for every client. Never blocks: full queues drop their oldest message."""
        if self._next_pts_ns is not None and frame.pts_ns < self._next_pts_ns:
            self.counters.frames_skipped_rate += 1
            return
        self._next_pts_ns = frame.pts_ns + self._period_ns - self._period_ns // 10  # a little slack for jitter
        with self._lock:
            clients = list(self._clients)
        self.counters.frames_published += 1
        if not clients:
            return
        message = encode_frame(motion_message(frame))
        for c in clients:
            with c.cond:
                if len(c.queue) >= c.queue_frames:
                    c.queue.popleft()
                    self.counters.messages_dropped += 1
                c.queue.append(message)
                c.cond.notify()

    def stats(self) -> dict[str, int]:
        with self._lock:
            connected = len(self._clients)
        return {"clients_connected": connected, **self.counters.__dict__}

    # ------------------------------------------------------------------ server threads

    def _accept_loop(self) -> None:
        while self._running:
            try:
                sock, address = self._listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SEND_BUFFER_BYTES)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(sock, address, self.options.stream_queue_frames)
            client.thread = threading.Thread(target=self._serve, args=(client,), daemon=True,
                                             name=f"motion-stream {address[0]}:{address[1]}")
            client.thread.start()

    def _serve(self, c: _Client) -> None:
        try:
            if not self._handshake(c):
                c.sock.close()
                return
        except OSError:
            c.sock.close()
            return
        c.sock.settimeout(self.options.stream_send_timeout_ms / 1000.0)
        buffer = bytearray()
        try:
            c.sock.sendall(encode_frame(hello_message()))
            while self._running and not c.closed:
                with c.cond:
                    if not c.queue:
                        c.cond.wait(timeout=0.1)
                    pending = list(c.queue)
                    c.queue.clear()
                for message in pending:
                    c.sock.sendall(message)
                if not self._read_control(c, buffer):
                    self._drop(c, reason="disconnected")
                    return
        except (TimeoutError, socket.timeout):
            self._drop(c, reason="slow")
        except (OSError, ValueError):
            self._drop(c, reason="disconnected")

    def _read_control(self, c: _Client, buffer: bytearray) -> bool:
        """Answer pings and closes without blocking; False when the client has gone."""
        while True:
            readable, _, _ = select.select([c.sock], [], [], 0)
            if not readable:
                return True
            data = c.sock.recv(4096)
            if not data:
                return False
            buffer += data
            while (frame := parse_frame(buffer)) is not None:
                opcode, payload = frame
                if opcode == OP_CLOSE:
                    try:
                        c.sock.sendall(encode_frame(payload[:2], OP_CLOSE))
                    except OSError:
                        pass
                    return False
                if opcode == OP_PING:
                    c.sock.sendall(encode_frame(payload, OP_PONG))

    def _handshake(self, c: _Client) -> bool:
        c.sock.settimeout(HANDSHAKE_TIMEOUT_S)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = c.sock.recv(1024)
            if not chunk or len(request) > MAX_HEADER_BYTES:
                self.counters.clients_rejected += 1
                return False
            request += chunk
        head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if len(parts) != 3 or parts[0] != "GET" or headers.get("upgrade", "").lower() != "websocket" \
                or "sec-websocket-key" not in headers:
            self.counters.clients_rejected += 1
            c.sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return False
        url = urlsplit(parts[1])
        if url.path != self.options.stream_path:
            self.counters.clients_rejected += 1
            c.sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return False
        token = self.options.stream_token
        if token:
            given = parse_qs(url.query).get("token", [""])[0]
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = given or auth[7:].strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                self.counters.auth_failures += 1
                log.warning("motion stream: refused %s: bad or missing token", c.address[0])
                c.sock.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                return False
        with self._lock:
            if len(self._clients) >= self.options.stream_max_clients:
                self.counters.clients_rejected += 1
                c.sock.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                return False
            self._clients.append(c)
            self.counters.clients_accepted += 1
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + WS_GUID).encode()).digest())
        c.sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        log.info("motion stream: client %s:%d connected", *c.address[:2])
        return True

    def _drop(self, c: _Client, reason: str | None) -> None:
        with self._lock:
            if c in self._clients:
                self._clients.remove(c)
            else:
                reason = None
        with c.cond:
            c.closed = True
            c.queue.clear()
            c.cond.notify()
        if reason == "slow":
            self.counters.clients_dropped_slow += 1
            log.warning("motion stream: dropped %s: it could not take a frame within %d ms", c.address[0],
                        self.options.stream_send_timeout_ms)
        elif reason == "disconnected":
            self.counters.clients_disconnected += 1
        try:
            c.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------- a minimal client (tests, diagnostics)


class StreamClient:
    """A tiny blocking WebSocket client for tests and ``nc``-style checks; not used by the device."""

    def __init__(self, host: str, port: int, path: str = "/motion", token: str | None = None,
                 timeout_s: float = 5.0, handshake: bool = True):
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.buffer = bytearray()
        self.status = 0
        if handshake:
            self.status = self._handshake(host, port, path, token)

    def _handshake(self, host: str, port: int, path: str, token: str | None) -> int:
        key = base64.b64encode(os.urandom(16)).decode()
        target = path + (f"?token={token}" if token is not None else "")
        self.sock.sendall((f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(1024)
            if not chunk:
                break
            response += chunk
        head, _, rest = response.partition(b"\r\n\r\n")
        self.buffer += rest
        status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0
        if status == 101:
            expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest())
            if b"Sec-WebSocket-Accept: " + expected not in head:
                raise ValueError("bad Sec-WebSocket-Accept")
        return status

    def receive(self) -> dict:
        """The next text message as JSON (blocks up to the socket timeout)."""
        while True:
            frame = parse_frame(self.buffer)
            if frame is not None:
                opcode, payload = frame
                if opcode == OP_TEXT:
                    return json.loads(payload)
                if opcode == OP_CLOSE:
                    raise ConnectionError("server closed the stream")
                continue
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed")
            self.buffer += data

    def close(self) -> None:
        try:
            self.sock.sendall(encode_frame(b"\x03\xe8", OP_CLOSE, mask=True))
        except OSError:
            pass
        self.sock.close()
