"""The session's answers to fleet commands: each does its job or refuses with a reason, never blocks."""

from __future__ import annotations

import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from edge_avatar.clock import ManualTimeBase
from edge_avatar.config import load_config
from edge_avatar.fleet.commands import EXIT_RESTART_REQUESTED, CommandError, Reply
from edge_avatar.outputs.audio import VirtualAudioOutput
from edge_avatar.runtime.fleet_handlers import SessionCommandHandlers
from tests.conftest import REPO


class FakeDialogue:
    def __init__(self):
        self.persona = SimpleNamespace(name="Ava")
        self.calls = []

    def end_visit(self):
        self.calls.append("end_visit")

    def erase_memory(self, key):
        self.calls.append(("erase", key))
        return 3


class FakeConversation:
    def __init__(self):
        self.dialogue = FakeDialogue()
        self.said = []
        self.tts = None
        from edge_avatar.planner.inputs import PlannerInputs

        self.motion = PlannerInputs()    # what the planner reads: the persona shapes the face too

    def say(self, text, interrupt=False):
        self.said.append((text, interrupt))
        return 7


def make_session(tmp_path, with_conversation=True):
    library = tmp_path / "personas"
    library.mkdir()
    shutil.copy(REPO / "examples/hospital-reception/persona.yaml", library / "ava.yaml")
    shutil.copy(REPO / "examples/robot-head/persona.yaml", library / "robot.yaml")
    config = load_config(overrides=[f"site.persona_file={library / 'ava.yaml'}"])
    stopped = []
    session = SimpleNamespace(config=config, conversation=FakeConversation() if with_conversation else None,
                              speaker=VirtualAudioOutput(ManualTimeBase(), 22050), fleet=None, loop=None,
                              stop=lambda: stopped.append(True), restart_exit_status=None)
    return session, stopped


def test_say_set_volume_ping_and_forget(tmp_path):
    session, _ = make_session(tmp_path)
    handlers = SessionCommandHandlers(session)
    assert handlers.ping()["pong"] is True
    assert handlers.say("Please wait here", True) == {"queued": True, "turn_id": 7, "interrupted": True}
    assert session.conversation.said == [("Please wait here", True)]
    assert handlers.set_volume(0.3) == {"volume": 0.3}
    assert session.speaker.volume == 0.3
    assert handlers.forget_memory("conversation")["long_term_records_erased"] == 0
    assert handlers.forget_memory("all")["long_term_records_erased"] == 3
    assert session.conversation.dialogue.calls == ["end_visit", "end_visit", ("erase", None)]


def test_set_persona_switches_name_and_voice_from_the_persona_library(tmp_path):
    session, _ = make_session(tmp_path)
    result = SessionCommandHandlers(session).set_persona("robot")
    assert result["file"].endswith("robot.yaml")
    assert session.conversation.dialogue.persona.name == result["persona"] != "Ava"
    assert session.conversation.tts is not None
    from edge_avatar.dialogue.persona import load_persona

    robot = load_persona(tmp_path / "personas" / "robot.yaml")
    assert np.allclose(session.conversation.motion._persona, robot.persona_vector())
    with pytest.raises(CommandError, match="nobody.yaml"):
        SessionCommandHandlers(session).set_persona("nobody")
    assert session.conversation.dialogue.persona.name == result["persona"]  # a refusal changes nothing


def test_restart_answers_first_then_stops_with_exit_75(tmp_path):
    session, stopped = make_session(tmp_path)
    reply = SessionCommandHandlers(session).restart("operator request")
    assert isinstance(reply, Reply) and reply.result["exit_status"] == EXIT_RESTART_REQUESTED
    assert stopped == []  # nothing happens before the answer is published
    reply.then()
    assert stopped == [True] and session.restart_exit_status == EXIT_RESTART_REQUESTED


def test_commands_that_need_speech_refuse_clearly_without_it(tmp_path):
    session, _ = make_session(tmp_path, with_conversation=False)
    handlers = SessionCommandHandlers(session)
    with pytest.raises(CommandError, match="without speech"):
        handlers.say("hello", False)
    with pytest.raises(CommandError, match="without speech"):
        handlers.set_persona("robot")


def test_rebuild_engines_runs_the_build_beside_the_avatar_then_restarts(tmp_path):
    session, stopped = make_session(tmp_path)
    events = []
    session.fleet = SimpleNamespace(event=lambda kind, **fields: events.append((kind, fields)))
    script = tmp_path / "fake_build.py"
    script.write_text("import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(' '.join(sys.argv[2:]))\n")
    seen = tmp_path / "seen.txt"
    handlers = SessionCommandHandlers(session, build_command=[sys.executable, str(script), str(seen)])
    assert handlers.rebuild_engines(True)["started"] is True
    handlers._rebuild.join(10)
    assert seen.read_text() == f"engines build --board {session.config.board.name} --force"
    assert events and events[0][0] == "engines_rebuilt" and events[0][1]["exit_status"] == 0
    assert stopped == [True] and session.restart_exit_status == EXIT_RESTART_REQUESTED


def test_a_failed_rebuild_is_reported_and_the_avatar_keeps_running(tmp_path):
    session, stopped = make_session(tmp_path)
    events = []
    session.fleet = SimpleNamespace(event=lambda kind, **fields: events.append((kind, fields)))
    handlers = SessionCommandHandlers(session, build_command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    handlers.rebuild_engines(False)
    handlers._rebuild.join(10)
    assert events[0][1]["exit_status"] == 3 and stopped == []
