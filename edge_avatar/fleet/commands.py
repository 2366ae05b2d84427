"""Fleet commands: schemas, authorisation, de-duplication, and the handlers a session provides.

Why this module exists: a command arrives from the network, so it is hostile
until proven otherwise. Every payload is checked here against a schema before
anything is called: unknown commands, malformed JSON, wrong or extra fields,
out-of-range values and unauthorised operators are answered with an error and
change nothing. This module never touches MQTT (``agent`` does), so it can be
fuzzed directly with thousands of payloads. The schemas are a few lines of
plain Python rather than ``jsonschema``: eight small commands do not justify a
dependency on every device, and our error messages never echo what was sent
(a payload may carry anything, including personal data).

A command payload on ``.../cmd/<name>``::

    {"id": "c-123", "operator": "alice", "args": {"volume": 0.5}}

``id`` (1-64 characters) makes retries safe: a repeated id is answered from a
cache and not executed again (QoS 1 may deliver a message twice). ``operator``
must match the MQTT 5 user property ``operator`` when that is present, and
must be in ``fleet.allowed_operators`` when that list is not empty. The
authoritative gate is the broker's ACL (device accounts cannot publish
commands); the operator check is defence in depth and goes into the audit
event. Every command gets one answer on ``cmd-result``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from edge_avatar.fleet.options import valid_name

log = logging.getLogger(__name__)

# Error codes on cmd-result (stable: operators' tooling matches on them).
TOO_LARGE, NOT_JSON, INVALID_PAYLOAD = "too_large", "not_json", "invalid_payload"
UNAUTHORIZED, UNKNOWN_COMMAND, INVALID_ARGS = "unauthorized", "unknown_command", "invalid_args"
BUSY, FAILED, NOT_SUPPORTED = "busy", "failed", "not_supported"

EXIT_RESTART_REQUESTED = 75  # EX_TEMPFAIL: systemd restarts on it (Restart=on-failure, RestartForceExitStatus)

_PERSONA_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ID_RE = re.compile(r"[\x21-\x7e]{1,64}")  # printable ASCII, no spaces
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class CommandError(Exception):
    """Raised by a handler for an expected refusal; becomes ``{"ok": false, "error": {code, message}}``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Reply:
    """A handler's result plus something to do *after* the answer has been published (e.g. restart)."""

    result: Mapping[str, Any]
    then: Callable[[], None] | None = None


@runtime_checkable
class CommandHandlers(Protocol):
    """What the device does for each command. Called on the fleet's command thread, one at a time.

    Return a JSON-able mapping (or a ``Reply``); raise ``CommandError`` to
    refuse. Handlers must return promptly (queue the work, do not do it):
    while one runs, further commands wait and, beyond
    ``fleet.command_queue_max``, are answered ``busy``.
    """

    def ping(self) -> Mapping[str, Any] | Reply: ...
    def say(self, text: str, interrupt: bool) -> Mapping[str, Any] | Reply: ...
    def set_persona(self, persona: str) -> Mapping[str, Any] | Reply: ...
    def reload_config(self) -> Mapping[str, Any] | Reply: ...
    def set_volume(self, volume: float) -> Mapping[str, Any] | Reply: ...
    def rebuild_engines(self, force: bool) -> Mapping[str, Any] | Reply: ...
    def restart(self, reason: str) -> Mapping[str, Any] | Reply: ...
    def forget_memory(self, scope: str) -> Mapping[str, Any] | Reply: ...


# --------------------------------------------------------------------------- schemas


@dataclass(frozen=True)
class Arg:
    """One argument: its JSON type and the values it may take."""

    kind: str                      # "str", "bool", "number"
    required: bool = False
    default: Any = None
    min_value: float | None = None
    max_value: float | None = None
    min_len: int = 0
    max_len: int | None = None
    pattern: re.Pattern | None = None
    choices: tuple[str, ...] | None = None
    single_line: bool = True

    def check(self, name: str, value: Any) -> Any:
        """The value to pass to the handler, or raise ``CommandError(INVALID_ARGS)``."""
        where = f"args.{name}"
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise CommandError(INVALID_ARGS, f"{where}: expected true or false, got {_type_name(value)}")
            return value
        if self.kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CommandError(INVALID_ARGS, f"{where}: expected a finite number, got {_type_name(value)}")
            if (self.min_value is not None and value < self.min_value) or \
               (self.max_value is not None and value > self.max_value):
                raise CommandError(INVALID_ARGS, f"{where}: {value!r} is outside [{self.min_value}, {self.max_value}]")
            return float(value)
        if self.kind == "str":
            if not isinstance(value, str):
                raise CommandError(INVALID_ARGS, f"{where}: expected a string, got {_type_name(value)}")
            if len(value) < self.min_len:
                raise CommandError(INVALID_ARGS, f"{where}: must have at least {self.min_len} characters")
            if self.max_len is not None and len(value) > self.max_len:
                raise CommandError(INVALID_ARGS, f"{where}: too long ({len(value)} > {self.max_len} characters)")
            if _CONTROL_RE.search(value) or (self.single_line and ("\n" in value or "\t" in value)):
                raise CommandError(INVALID_ARGS, f"{where}: contains control characters")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise CommandError(INVALID_ARGS, f"{where}: not valid Unicode (unpaired surrogate)") from None
            if self.choices is not None and value not in self.choices:
                raise CommandError(INVALID_ARGS, f"{where}: expected one of {', '.join(self.choices)}")
            if self.pattern is not None and not self.pattern.fullmatch(value):
                raise CommandError(INVALID_ARGS, f"{where}: expected {self.pattern.pattern}")
            return value
        raise AssertionError(f"schema error: kind {self.kind!r}")  # pragma: no cover


COMMANDS: dict[str, dict[str, Arg]] = {
    "ping": {},
    "say": {"text": Arg("str", required=True, min_len=1, max_len=500, single_line=False),
            "interrupt": Arg("bool", default=False)},
    "set_persona": {"persona": Arg("str", required=True, pattern=_PERSONA_RE)},
    "reload_config": {},
    "set_volume": {"volume": Arg("number", required=True, min_value=0.0, max_value=1.0)},
    "rebuild_engines": {"force": Arg("bool", default=False)},
    "restart": {"reason": Arg("str", default="", max_len=200)},
    "forget_memory": {"scope": Arg("str", default="all", choices=("conversation", "all"))},
}

_TOP_LEVEL_KEYS = frozenset({"id", "operator", "args"})


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def safe_label(text: str, limit: int = 64) -> str:
    """A topic level or id made safe to echo in an answer or a log line."""
    cleaned = "".join(ch if ch.isascii() and ch.isprintable() else "?" for ch in text[:limit])
    return cleaned + ("..." if len(text) > limit else "")


# --------------------------------------------------------------------------- requests and answers


@dataclass
class Request:
    """A command that passed every check and may be executed."""

    command: str
    id: str
    operator: str
    args: dict[str, Any]
    correlation: bytes | None = None


@dataclass
class Answer:
    command: str
    id: str | None
    ok: bool
    result: Mapping[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    operator: str | None = None
    duplicate: bool = False
    correlation: bytes | None = None
    then: Callable[[], None] | None = field(default=None, repr=False)

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"command": self.command, "id": self.id, "ok": self.ok}
        if self.ok:
            payload["result"] = dict(self.result or {})
        else:
            payload["error"] = {"code": self.error_code, "message": self.error_message}
        if self.operator is not None:
            payload["operator"] = self.operator
        if self.duplicate:
            payload["duplicate"] = True
        return payload


def _error(command: str, request_id: str | None, code: str, message: str, operator: str | None = None,
           correlation: bytes | None = None) -> Answer:
    return Answer(command, request_id, False, error_code=code, error_message=message, operator=operator,
                  correlation=correlation)


class CommandProcessor:
    """Checks, authorises, de-duplicates and executes commands; answers every one.

    ``check`` is cheap and runs on the MQTT thread; ``execute`` calls the
    handler and runs on the command thread. ``handle`` does both (tests, fuzzing).
    """

    def __init__(self, handlers: CommandHandlers, *, allowed_operators: tuple[str, ...] = (),
                 max_payload_bytes: int = 16384, remember_answers: int = 256):
        self.handlers = handlers
        self.allowed_operators = frozenset(allowed_operators)
        self.max_payload_bytes = max_payload_bytes
        self._answers: OrderedDict[tuple[str, str], Answer] = OrderedDict()
        self._in_progress: set[tuple[str, str]] = set()
        self._remember = remember_answers
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {"received": 0, "executed": 0, "rejected": 0, "duplicates": 0}

    # ------------------------------------------------------------------ checking

    def check(self, command: str, payload: bytes, user_properties: Mapping[str, str] | None = None,
              correlation: bytes | None = None) -> Request | Answer | None:
        """A ``Request`` to execute, an ``Answer`` to publish now, or None (a duplicate still running)."""
        self.counts["received"] += 1
        name = safe_label(command)
        answer_or_request = self._check(command, name, payload, user_properties or {}, correlation)
        if isinstance(answer_or_request, Answer):
            self.counts["rejected"] += 1
            answer_or_request.correlation = correlation
            return answer_or_request
        request = answer_or_request
        key = (request.operator, request.id)
        with self._lock:
            cached = self._answers.get(key)
            if cached is not None:
                self.counts["duplicates"] += 1
                again = Answer(**{**cached.__dict__, "duplicate": True, "then": None, "correlation": correlation})
                return again
            if key in self._in_progress:
                self.counts["duplicates"] += 1
                return None
            self._in_progress.add(key)
        return request

    def _check(self, command: str, name: str, payload: bytes, user_properties: Mapping[str, str],
               correlation: bytes | None) -> Request | Answer:
        if len(payload) > self.max_payload_bytes:
            return _error(name, None, TOO_LARGE, f"payload is {len(payload)} bytes; the limit is "
                                                 f"{self.max_payload_bytes}")
        try:
            body = json.loads(payload.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return _error(name, None, NOT_JSON, "payload is not UTF-8 JSON")
        if not isinstance(body, dict):
            return _error(name, None, INVALID_PAYLOAD, f"expected a JSON object, got {_type_name(body)}")
        request_id = body.get("id")
        if not isinstance(request_id, str) or not _ID_RE.fullmatch(request_id):
            return _error(name, None, INVALID_PAYLOAD, "id: expected 1-64 printable ASCII characters, no spaces")
        extra = sorted(str(k) for k in body if k not in _TOP_LEVEL_KEYS)
        if extra:
            return _error(name, request_id, INVALID_PAYLOAD,
                          f"unexpected field {safe_label(extra[0], 32)!r}; expected id, operator, args")
        operator = body.get("operator")
        if not isinstance(operator, str) or not valid_name(operator):
            return _error(name, request_id, UNAUTHORIZED, "operator: expected an operator identity")
        claimed = user_properties.get("operator")
        if claimed is not None and claimed != operator:
            return _error(name, request_id, UNAUTHORIZED, "operator does not match the MQTT user property",
                          operator=operator)
        if self.allowed_operators and operator not in self.allowed_operators:
            return _error(name, request_id, UNAUTHORIZED, f"operator {operator!r} may not command this device",
                          operator=operator)
        schema = COMMANDS.get(command)
        if schema is None:
            return _error(name, request_id, UNKNOWN_COMMAND,
                          f"unknown command {name!r}; expected one of: {', '.join(COMMANDS)}", operator=operator)
        raw_args = body.get("args", {})
        if raw_args is None:
            raw_args = {}
        if not isinstance(raw_args, dict):
            return _error(name, request_id, INVALID_ARGS, f"args: expected an object, got {_type_name(raw_args)}",
                          operator=operator)
        unknown = sorted(str(k) for k in raw_args if k not in schema)
        if unknown:
            allowed = ", ".join(schema) or "none"
            return _error(name, request_id, INVALID_ARGS,
                          f"args.{safe_label(unknown[0], 32)}: unknown argument; expected: {allowed}",
                          operator=operator)
        args: dict[str, Any] = {}
        try:
            for arg_name, spec in schema.items():
                if arg_name in raw_args:
                    args[arg_name] = spec.check(arg_name, raw_args[arg_name])
                elif spec.required:
                    raise CommandError(INVALID_ARGS, f"args.{arg_name}: required")
                else:
                    args[arg_name] = spec.default
        except CommandError as exc:
            return _error(name, request_id, exc.code, exc.message, operator=operator)
        return Request(command, request_id, operator, args, correlation)

    # ------------------------------------------------------------------ executing

    def execute(self, request: Request) -> Answer:
        key = (request.operator, request.id)
        try:
            answer = self._execute(request)
        finally:
            with self._lock:
                self._in_progress.discard(key)
        with self._lock:
            self._answers[key] = answer
            while len(self._answers) > self._remember:
                self._answers.popitem(last=False)
        return answer

    def _execute(self, request: Request) -> Answer:
        handler = getattr(self.handlers, request.command, None)
        if handler is None:
            return _error(request.command, request.id, NOT_SUPPORTED, "this device does not implement it",
                          request.operator, request.correlation)
        try:
            outcome = handler(**request.args)
        except CommandError as exc:
            return _error(request.command, request.id, exc.code, exc.message, request.operator, request.correlation)
        except Exception as exc:  # noqa: BLE001 - a handler bug must become an answer, not a dead thread
            log.exception("command %s failed", request.command)
            return _error(request.command, request.id, FAILED, f"{type(exc).__name__} in the handler",
                          request.operator, request.correlation)
        then = None
        if isinstance(outcome, Reply):
            outcome, then = outcome.result, outcome.then
        if outcome is None:
            outcome = {}
        if not isinstance(outcome, Mapping):
            return _error(request.command, request.id, FAILED, "the handler returned no mapping",
                          request.operator, request.correlation)
        self.counts["executed"] += 1
        return Answer(request.command, request.id, True, result=dict(outcome), operator=request.operator,
                      correlation=request.correlation, then=then)

    def busy(self, request: Request) -> Answer:
        """The answer for a request that found the command queue full (it was not executed)."""
        with self._lock:
            self._in_progress.discard((request.operator, request.id))
        self.counts["rejected"] += 1
        return _error(request.command, request.id, BUSY, "too many commands pending; try again",
                      request.operator, request.correlation)

    def handle(self, command: str, payload: bytes, user_properties: Mapping[str, str] | None = None,
               correlation: bytes | None = None) -> Answer | None:
        outcome = self.check(command, payload, user_properties, correlation)
        if isinstance(outcome, Request):
            return self.execute(outcome)
        return outcome


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# --------------------------------------------------------------------------- a default device


class DefaultCommandHandlers:
    """Handlers that keep their state in memory: the standalone ``fleet agent`` and the tests use them.

    A session provides its own (speech queue, persona, memory, config
    reload). Hooks that are not given answer ``not_supported``; nothing is
    pretended. ``say`` records only the length of the text (it may be
    personal data, and this object's state can end up in a log).
    """

    def __init__(self, *, version: str = "", on_restart: Callable[[], None] | None = None,
                 on_reload_config: Callable[[], Mapping[str, Any]] | None = None,
                 on_rebuild_engines: Callable[[bool], Mapping[str, Any]] | None = None,
                 volume: float = 0.8, persona: str = "default"):
        self.version = version
        self.on_restart = on_restart
        self.on_reload_config = on_reload_config
        self.on_rebuild_engines = on_rebuild_engines
        self.volume = volume
        self.persona = persona
        self.said_chars: list[int] = []
        self.forgotten = 0
        self.lock = threading.Lock()

    def ping(self) -> Mapping[str, Any]:
        return {"pong": True, "version": self.version}

    def say(self, text: str, interrupt: bool) -> Mapping[str, Any]:
        with self.lock:
            self.said_chars.append(len(text))
        log.info("say: %d characters (interrupt=%s)", len(text), interrupt)
        return {"queued": True, "characters": len(text), "interrupt": interrupt}

    def set_persona(self, persona: str) -> Mapping[str, Any]:
        with self.lock:
            previous, self.persona = self.persona, persona
        return {"persona": persona, "previous": previous}

    def reload_config(self) -> Mapping[str, Any]:
        if self.on_reload_config is None:
            raise CommandError(NOT_SUPPORTED, "this device has no config reload hook")
        return self.on_reload_config()

    def set_volume(self, volume: float) -> Mapping[str, Any]:
        with self.lock:
            previous, self.volume = self.volume, volume
        return {"volume": volume, "previous": previous}

    def rebuild_engines(self, force: bool) -> Mapping[str, Any]:
        if self.on_rebuild_engines is None:
            raise CommandError(NOT_SUPPORTED, "this device has no engine builder hook")
        return self.on_rebuild_engines(force)

    def restart(self, reason: str) -> Mapping[str, Any] | Reply:
        if self.on_restart is None:
            raise CommandError(NOT_SUPPORTED, "this device has no restart hook")
        return Reply({"restarting": True, "exit_status": EXIT_RESTART_REQUESTED}, then=self.on_restart)

    def forget_memory(self, scope: str) -> Mapping[str, Any]:
        with self.lock:
            self.forgotten += 1
        return {"forgotten": True, "scope": scope}
