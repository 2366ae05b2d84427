"""The motion WebSocket stream, over real sockets on 127.0.0.1: frames arrive, tokens are enforced,
and neither a slow nor a vanished client can hold up the tick that publishes."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from edge_avatar.motion import BLENDSHAPE_INDEX, MotionFrame, neutral_motion
from edge_avatar.render.options import AvatarOutputConfig
from edge_avatar.render.stream import MotionStream, StreamClient

TOKEN = "s3cret-token-for-tests"


def _frame(seq: int, jaw: float = 0.0) -> MotionFrame:
    values = neutral_motion()
    values[BLENDSHAPE_INDEX["jawOpen"]] = jaw
    values[52] = 12.5
    return MotionFrame(pts_ns=seq * 33_333_333, seq=seq, values=values)


def _options(**kw) -> AvatarOutputConfig:
    base = dict(stream_enabled=True, stream_port=0, stream_send_timeout_ms=300, stream_queue_frames=4,
                stream_rate_hz=120.0)
    base.update(kw)
    return AvatarOutputConfig(**base)


def _wait_for(predicate, timeout_s: float = 3.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_a_client_receives_hello_then_motion_with_arkit_names_and_pts():
    with MotionStream(_options()) as stream:
        host, port = stream.address
        client = StreamClient(host, port)
        assert client.status == 101
        hello = client.receive()
        assert hello["type"] == "hello" and len(hello["blendshapes"]) == 52
        assert _wait_for(lambda: stream.stats()["clients_connected"] == 1)
        stream.publish(_frame(3, jaw=0.5))
        msg = client.receive()
        assert msg["type"] == "motion" and msg["seq"] == 3 and msg["pts_ns"] == 3 * 33_333_333
        assert msg["blendshapes"]["jawOpen"] == 0.5 and len(msg["blendshapes"]) == 52
        assert msg["head"]["yaw_deg"] == 12.5 and set(msg["eyes"]) == {"left", "right"}
        client.close()
        assert _wait_for(lambda: stream.stats()["clients_connected"] == 0)


def test_the_stream_binds_to_loopback_by_default():
    options = AvatarOutputConfig()
    assert options.stream_enabled is False and options.stream_host == "127.0.0.1"


def test_an_exposed_stream_refuses_to_start_without_a_token():
    assert AvatarOutputConfig(stream_enabled=True, stream_host="0.0.0.0").validate()
    with pytest.raises(ValueError, match="token"):
        MotionStream(_options(stream_host="0.0.0.0", stream_token=""))
    assert not AvatarOutputConfig(stream_enabled=True, stream_host="0.0.0.0", stream_token=TOKEN).validate()


def test_the_token_is_required_when_set():
    with MotionStream(_options(stream_token=TOKEN)) as stream:
        host, port = stream.address
        assert StreamClient(host, port).status == 401
        assert StreamClient(host, port, token="wrong-token-of-length").status == 401
        good = StreamClient(host, port, token=TOKEN)
        assert good.status == 101 and good.receive()["type"] == "hello"
        assert stream.stats()["auth_failures"] == 2
        good.close()


def test_a_slow_client_never_blocks_publishing_and_is_dropped():
    with MotionStream(_options()) as stream:
        host, port = stream.address
        slow = StreamClient(host, port)          # never reads after the handshake
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        fast = StreamClient(host, port)
        assert _wait_for(lambda: stream.stats()["clients_connected"] == 2)
        worst_ms = 0.0
        big = np.linspace(0, 1, 52)
        deadline = time.monotonic() + 6.0
        seq = 0
        # Publish like a fast tick until the server gives up on the client that never reads.
        while stream.stats()["clients_dropped_slow"] == 0 and time.monotonic() < deadline:
            frame = MotionFrame(seq * 10_000_000, seq, np.concatenate([big, np.zeros(12)]).astype(np.float32))
            start = time.perf_counter()
            stream.publish(frame)
            worst_ms = max(worst_ms, (time.perf_counter() - start) * 1e3)
            seq += 1
            if seq % 20 == 0:
                fast.sock.recv(1 << 20)          # the healthy client keeps reading
                time.sleep(0.002)
        assert worst_ms < 50.0, f"publish() took {worst_ms:.1f} ms: it must never wait for a client"
        assert stream.stats()["clients_dropped_slow"] == 1
        assert stream.stats()["messages_dropped"] > 0
        fast.buffer.clear()
        # The healthy client is still connected and served.
        assert stream.stats()["clients_connected"] == 1
        stream.publish(MotionFrame((seq + 100) * 10_000_000, seq + 100, neutral_motion()))
        assert fast.sock.recv(1 << 20)
        fast.close()
        slow.sock.close()


def test_a_vanished_client_is_forgotten_and_publishing_goes_on():
    with MotionStream(_options()) as stream:
        host, port = stream.address
        client = StreamClient(host, port)
        assert _wait_for(lambda: stream.stats()["clients_connected"] == 1)
        client.sock.close()                       # no close frame: the cable was pulled
        for seq in range(200):
            stream.publish(_frame(seq))
            time.sleep(0.001)
        assert _wait_for(lambda: stream.stats()["clients_connected"] == 0)
        stream.publish(_frame(500))


def test_publishing_follows_the_stream_rate_on_the_media_clock():
    with MotionStream(_options(stream_rate_hz=15.0)) as stream:
        for seq in range(30):                      # 1 s of 30 Hz ticks
            stream.publish(_frame(seq))
        assert stream.stats()["frames_published"] == 15
