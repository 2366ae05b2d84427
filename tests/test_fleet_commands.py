"""Fleet commands without a broker: schemas, authorisation, de-duplication, and fuzzing with thousands of payloads."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_avatar.fleet.commands import (
    BUSY,
    COMMANDS,
    FAILED,
    INVALID_ARGS,
    INVALID_PAYLOAD,
    NOT_JSON,
    NOT_SUPPORTED,
    TOO_LARGE,
    UNAUTHORIZED,
    UNKNOWN_COMMAND,
    Answer,
    CommandError,
    CommandHandlers,
    CommandProcessor,
    DefaultCommandHandlers,
    Reply,
    Request,
)


def _payload(args=None, *, request_id="c-1", operator="alice", **extra) -> bytes:
    body = {"id": request_id, "operator": operator, "args": args if args is not None else {}, **extra}
    return json.dumps(body).encode()


def _processor(**kw) -> tuple[CommandProcessor, DefaultCommandHandlers]:
    restarted = []
    handlers = DefaultCommandHandlers(version="t", on_restart=lambda: restarted.append(True),
                                      on_reload_config=lambda: {"reloaded": True},
                                      on_rebuild_engines=lambda force: {"scheduled": True, "force": force})
    handlers.restarted = restarted
    return CommandProcessor(handlers, **kw), handlers


def _state(h: DefaultCommandHandlers) -> tuple:
    return h.volume, h.persona, tuple(h.said_chars), h.forgotten, tuple(h.restarted)


GOOD = {
    "ping": {},
    "say": {"text": "Welcome to St Mary's. The pharmacy is on the left.", "interrupt": True},
    "set_persona": {"persona": "calm-nurse"},
    "reload_config": {},
    "set_volume": {"volume": 0.25},
    "rebuild_engines": {"force": True},
    "restart": {"reason": "operator request"},
    "forget_memory": {"scope": "conversation"},
}


def test_default_handlers_satisfy_the_protocol():
    assert isinstance(DefaultCommandHandlers(), CommandHandlers)
    assert set(GOOD) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(GOOD))
def test_every_command_with_valid_args_executes(command):
    processor, handlers = _processor()
    answer = processor.handle(command, _payload(GOOD[command], request_id=f"id-{command}"))
    assert isinstance(answer, Answer)
    assert answer.ok, answer
    payload = answer.to_payload()
    assert payload["command"] == command and payload["id"] == f"id-{command}" and payload["ok"] is True
    json.dumps(payload)  # answers are JSON
    if command == "restart":
        assert answer.then is not None and handlers.restarted == []  # the restart waits for the answer
        answer.then()
        assert handlers.restarted == [True]


def test_valid_commands_change_the_state_they_name():
    processor, handlers = _processor()
    processor.handle("set_volume", _payload({"volume": 0.3}, request_id="a"))
    processor.handle("set_persona", _payload({"persona": "cheerful"}, request_id="b"))
    processor.handle("say", _payload({"text": "hello"}, request_id="c"))
    assert (handlers.volume, handlers.persona, handlers.said_chars) == (0.3, "cheerful", [5])


@pytest.mark.parametrize("command, payload, code", [
    ("set_volume", _payload({"volume": 1.5}), INVALID_ARGS),
    ("set_volume", _payload({"volume": "loud"}), INVALID_ARGS),
    ("set_volume", _payload({"volume": True}), INVALID_ARGS),
    ("set_volume", _payload({}), INVALID_ARGS),
    ("set_volume", _payload({"volume": 0.5, "extra": 1}), INVALID_ARGS),
    ("set_volume", b'{"id":"x","operator":"alice","args":{"volume":NaN}}', NOT_JSON),
    ("set_volume", b'{"id":"x","operator":"alice","args":{"volume":1e999}}', INVALID_ARGS),
    ("say", _payload({"text": ""}), INVALID_ARGS),
    ("say", _payload({"text": "x" * 501}), INVALID_ARGS),
    ("say", _payload({"text": "bell\x07"}), INVALID_ARGS),
    ("say", b'{"id":"x","operator":"alice","args":{"text":"\\ud800"}}', INVALID_ARGS),
    ("set_persona", _payload({"persona": "../../etc/passwd"}), INVALID_ARGS),
    ("forget_memory", _payload({"scope": "everything"}), INVALID_ARGS),
    ("restart", _payload({"reason": "x\ny"}), INVALID_ARGS),
    ("ping", _payload([1, 2]), INVALID_ARGS),
    ("ping", b"", NOT_JSON),
    ("ping", b"\xff\xfe", NOT_JSON),
    ("ping", b"[1,2]", INVALID_PAYLOAD),
    ("ping", b'"ping"', INVALID_PAYLOAD),
    ("ping", b'{"operator":"alice"}', INVALID_PAYLOAD),
    ("ping", _payload(request_id="has space"), INVALID_PAYLOAD),
    ("ping", _payload(request_id="x" * 65), INVALID_PAYLOAD),
    ("ping", _payload(sudo=True), INVALID_PAYLOAD),
    ("ping", _payload(operator=""), UNAUTHORIZED),
    ("ping", _payload(operator="+"), UNAUTHORIZED),
    ("ping", b'{"id":"x","args":{}}', UNAUTHORIZED),
    ("self_destruct", _payload(), UNKNOWN_COMMAND),
    ("", _payload(), UNKNOWN_COMMAND),
    ("ping/extra", _payload(), UNKNOWN_COMMAND),
    ("ping", b"{" * 100_000, TOO_LARGE),
    ("ping", b"[" * 10_000, NOT_JSON),
])
def test_malformed_commands_are_answered_with_an_error_and_change_nothing(command, payload, code):
    processor, handlers = _processor()
    before = _state(handlers)
    answer = processor.handle(command, payload)
    assert isinstance(answer, Answer) and not answer.ok
    assert answer.error_code == code, answer
    assert answer.then is None
    assert _state(handlers) == before
    out = answer.to_payload()
    assert out["ok"] is False and out["error"]["code"] == code and out["error"]["message"]
    json.dumps(out)


def test_error_messages_never_echo_the_text_that_was_sent():
    processor, _ = _processor()
    secret = "my name is Jane Doe and my date of birth is"
    answer = processor.handle("say", _payload({"text": secret * 20}))
    assert secret not in json.dumps(answer.to_payload())
    answer = processor.handle("say", _payload({"text": "x", secret: 1}))
    assert answer.error_code == INVALID_ARGS


def test_operators_outside_the_allowed_list_are_refused():
    processor, handlers = _processor(allowed_operators=("alice", "ops-dashboard"))
    answer = processor.handle("set_volume", _payload({"volume": 0.1}, operator="mallory"))
    assert answer.error_code == UNAUTHORIZED and handlers.volume == 0.8
    assert processor.handle("set_volume", _payload({"volume": 0.1}, operator="alice")).ok
    assert handlers.volume == 0.1


def test_operator_field_must_match_the_mqtt_user_property():
    processor, handlers = _processor()
    answer = processor.handle("set_volume", _payload({"volume": 0.1}, operator="alice"), {"operator": "bob"})
    assert answer.error_code == UNAUTHORIZED and handlers.volume == 0.8
    assert processor.handle("set_volume", _payload({"volume": 0.1}), {"operator": "alice"}).ok


def test_unauthorised_operators_learn_nothing_about_the_command_set():
    processor, _ = _processor(allowed_operators=("alice",))
    answer = processor.handle("no_such_command", _payload(operator="mallory"))
    assert answer.error_code == UNAUTHORIZED


def test_a_repeated_id_is_answered_from_the_cache_and_not_executed_twice():
    processor, handlers = _processor()
    first = processor.handle("say", _payload({"text": "hello"}, request_id="same"))
    again = processor.handle("say", _payload({"text": "hello"}, request_id="same"))
    assert first.ok and again.ok and again.duplicate and not first.duplicate
    assert handlers.said_chars == [5]
    assert again.to_payload()["duplicate"] is True


def test_a_duplicate_of_a_running_command_gets_no_second_answer():
    processor, handlers = _processor()
    request = processor.check("say", _payload({"text": "hi"}, request_id="r1"))
    assert isinstance(request, Request)
    assert processor.check("say", _payload({"text": "hi"}, request_id="r1")) is None
    assert processor.execute(request).ok
    assert processor.check("say", _payload({"text": "hi"}, request_id="r1")).duplicate


def test_busy_answer_releases_the_id():
    processor, handlers = _processor()
    request = processor.check("ping", _payload(request_id="b1"))
    answer = processor.busy(request)
    assert answer.error_code == BUSY
    assert isinstance(processor.check("ping", _payload(request_id="b1")), Request)  # may be retried


def test_handler_failures_and_refusals_become_answers():
    class Broken(DefaultCommandHandlers):
        def set_volume(self, volume):
            raise RuntimeError("mixer gone")

        def set_persona(self, persona):
            raise CommandError(INVALID_ARGS, "no such persona")

        def forget_memory(self, scope):
            return ["not", "a", "mapping"]

    processor = CommandProcessor(Broken())
    assert processor.handle("set_volume", _payload({"volume": 0.5}, request_id="1")).error_code == FAILED
    assert processor.handle("set_persona", _payload({"persona": "x"}, request_id="2")).error_code == INVALID_ARGS
    assert processor.handle("forget_memory", _payload(request_id="3")).error_code == FAILED
    # hooks that are not provided are refused honestly
    assert processor.handle("restart", _payload(request_id="4")).error_code == NOT_SUPPORTED
    assert processor.handle("reload_config", _payload(request_id="5")).error_code == NOT_SUPPORTED


def test_reply_carries_a_follow_up():
    class H(DefaultCommandHandlers):
        def rebuild_engines(self, force):
            return Reply({"scheduled": True}, then=lambda: None)

    answer = CommandProcessor(H()).handle("rebuild_engines", _payload(request_id="r"))
    assert answer.ok and answer.result == {"scheduled": True} and answer.then is not None


# --------------------------------------------------------------------------- fuzzing


def _check_answered(processor, command, payload, props=None):
    answer = processor.handle(command, payload, props)
    assert isinstance(answer, Answer)  # every payload is answered (the ids below are unique)
    out = answer.to_payload()
    json.dumps(out)
    assert out["ok"] in (True, False)
    if not out["ok"]:
        assert out["error"]["code"] and isinstance(out["error"]["message"], str)
    return answer


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(command=st.sampled_from(sorted(COMMANDS) + ["", "x", "ping/", "say/../x", "é"]),
       body=st.one_of(
           st.binary(max_size=300),
           st.builds(lambda v: json.dumps(v).encode(), json_values),
           st.builds(lambda i, op, a: json.dumps({"id": i, "operator": op, "args": a}).encode(),
                     st.text(max_size=70), st.sampled_from(["alice", "", "+", "bob", "x" * 70]),
                     st.dictionaries(st.sampled_from(["volume", "text", "persona", "scope", "force", "reason",
                                                      "interrupt", "zzz"]), json_values, max_size=3))),
       props=st.one_of(st.none(), st.dictionaries(st.sampled_from(["operator", "x"]), st.text(max_size=8),
                                                  max_size=2)))
def test_fuzz_random_payloads_never_crash_and_are_always_answered(command, body, props):
    processor, handlers = _processor()
    _check_answered(processor, command, body, props)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:  # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # truncate
            del b[rng.randrange(len(b)):]
        elif op == 2:  # insert a JSON-ish token
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.choice([b"{", b"}", b'"', b",", b":", b"null", b"1e999", b"-0", b"\\u0000", b"[]",
                                 b'"args":', b'"id":"dup"', b"\xff"])
        elif op == 3 and b:  # delete a span
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 8)]
        elif op == 4 and b:  # duplicate a span
            i = rng.randrange(len(b))
            b[i:i] = b[i:i + rng.randint(1, 16)]
        else:  # swap a value type
            text = b.decode("utf-8", "replace")
            for old, new in ((": 0.", ': "0.'), ("true", "1"), ('"', "'"), ("{}", "[]")):
                if old in text and rng.random() < 0.5:
                    text = text.replace(old, new, 1)
            b = bytearray(text.encode())
    return bytes(b)


def test_fuzz_thousands_of_mutated_valid_payloads():
    rng = random.Random(20240609)
    processor, handlers = _processor(allowed_operators=("alice",))
    outcomes = {"ok": 0, "error": 0}
    for i in range(4000):
        command = rng.choice(sorted(GOOD))
        seed = _payload(GOOD[command], request_id=f"m{i}")
        payload = _mutate(seed, rng)
        answer = _check_answered(processor, command if rng.random() > 0.05 else command + "x", payload)
        outcomes["ok" if answer.ok else "error"] += 1
        if answer.then is not None:
            answer.then()
        assert 0.0 <= handlers.volume <= 1.0
        assert handlers.persona == "default" or handlers.persona.replace("-", "").replace("_", "").isalnum()
    assert outcomes["ok"] > 100 and outcomes["error"] > 1000  # the mutations hit both sides


def _random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, -2**63, 0.5, 1.0000001, -0.0, 1e308, rng.uniform(-5, 5)])
    if kind == 3:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x2FFFF)]))
                       for _ in range(rng.randrange(0, 30)))
    if kind == 4:
        return rng.choice(["alice", "", "ping", "volume", "x" * 600])
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    keys = ["id", "operator", "args", "volume", "text", "persona", "scope", "force", "reason", "interrupt", "?"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


def test_fuzz_thousands_of_random_structures():
    rng = random.Random(7)
    processor, handlers = _processor()
    for i in range(3000):
        body = _random_json(rng)
        if isinstance(body, dict) and rng.random() < 0.7:
            body.setdefault("id", f"r{i}")
            body.setdefault("operator", "alice")
        try:
            payload = json.dumps(body).encode("utf-8", "surrogatepass")
        except (UnicodeEncodeError, ValueError):
            payload = repr(body).encode("utf-8", "surrogatepass")
        _check_answered(processor, rng.choice(sorted(GOOD)), payload)
