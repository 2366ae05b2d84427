"""The session's avatar outputs: the motion stream carries the loop's frames; the face is the configured one."""

from __future__ import annotations

import threading

import pytest

from edge_avatar.config import load_config
from edge_avatar.runtime.session import Session, SessionOptions


def _config(*overrides: str):
    return load_config("x86-cpu", None, ["camera.uri=scenario://demo", "output.uri=null://",
                                         "audio_output.uri=virtual://", *overrides])


def test_the_motion_stream_sends_the_frames_the_loop_renders():
    from edge_avatar.render.stream import StreamClient

    config = _config("avatar.stream_enabled=true", "avatar.stream_port=0")
    session = Session(config, SessionOptions(duration_s=2.0, listen=False, placeholder_perception=True,
                                             fleet=False, systemd=False))
    session.start()
    host, port = session.motion_stream.address
    client = StreamClient(host, port, config.avatar.stream_path)
    assert client.status == 101
    result = {}
    runner = threading.Thread(target=lambda: result.update(report=session.run()))
    runner.start()
    try:
        hello = client.receive()
        assert hello["type"] == "hello"
        frames = [client.receive() for _ in range(10)]
    finally:
        client.close()
        runner.join(30)
    assert all(f["type"] == "motion" for f in frames)
    pts = [f["pts_ns"] for f in frames]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert set(frames[0]["blendshapes"]) >= {"jawOpen", "eyeBlinkLeft"} and "yaw_deg" in frames[0]["head"]
    report = result["report"]
    assert report["motion_stream"]["frames_published"] >= 10 and report["motion_stream"]["clients_accepted"] == 1
    assert report["planner"]["kind"] == "NeuralPlanner" and report["renderer"]["kind"] == "NeuralRenderer"


@pytest.mark.parametrize("renderer, kind", [("sketch", "SketchRenderer"), ("neural", "NeuralRenderer")])
def test_the_configured_face_is_the_one_that_runs(renderer, kind):
    session = Session(_config(f"avatar.renderer={renderer}"),
                      SessionOptions(duration_s=0.5, listen=False, placeholder_perception=True, fleet=False,
                                     systemd=False))
    report = session.run()
    assert report["renderer"]["kind"] == kind and report["frames"]["rendered"] > 0
