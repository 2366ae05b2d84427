"""The optional LLM tier: any OpenAI-compatible streaming chat endpoint on the device, on a strict time budget.

Why this module exists: a site may run a local LLM server (llama.cpp's
``llama-server``, Ollama, vLLM) to phrase answers more naturally. It must
never be needed and never be trusted with facts: the prompt carries the
persona and the retrieved knowledge entries and tells the model to use only
those; the whole reply must arrive within ``dialogue.llm_time_budget_ms``,
or the built-in engine answers instead and the reply says why.

The client is the standard library's ``http.client`` speaking the
``/v1/chat/completions`` protocol with ``"stream": true`` (server-sent
events, ``data: {...}`` lines, ``data: [DONE]``): no SDK, no extra
dependency, and every socket wait is bounded by the time left in the budget,
so a server that accepts the connection and then hangs costs exactly the
budget and no more.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from edge_avatar.dialogue.knowledge import KnowledgeEntry
from edge_avatar.dialogue.persona import Persona

log = logging.getLogger(__name__)

MAX_REPLY_CHARS = 600


class LLMError(RuntimeError):
    """The LLM tier did not produce a usable reply; the message is the fallback reason."""


class LLMTimeout(LLMError):
    pass


@dataclass(frozen=True)
class ChatMessage:
    role: str     # "system" | "user" | "assistant"
    content: str


class OpenAIChatClient:
    """A minimal streaming client for an OpenAI-compatible chat completions endpoint."""

    def __init__(self, url: str, model: str = "", api_key: str = "", max_tokens: int = 120,
                 temperature: float = 0.2):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"LLM endpoint {url!r}: expected an http:// or https:// URL")
        self.url = url
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path or "/v1/chat/completions"
        if path.rstrip("/").endswith("/v1"):
            path = path.rstrip("/") + "/chat/completions"
        self._path = path + (f"?{parts.query}" if parts.query else "")
        self.model = model
        self._api_key = api_key
        self.max_tokens = max_tokens
        self.temperature = temperature

    def stream(self, messages: list[ChatMessage], deadline_s: float) -> Iterator[str]:
        """Yield pieces of the reply as they arrive; ``LLMTimeout`` past ``deadline_s`` (time.monotonic)."""
        body = json.dumps({
            "model": self.model or "default",
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        conn_cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(self._host, self._port, timeout=self._remaining(deadline_s))
        try:
            try:
                conn.request("POST", self._path, body=body, headers=headers)
                sock = conn.sock  # getresponse() hands it to the response (conn.sock becomes None)
                sock.settimeout(self._remaining(deadline_s))
                response = conn.getresponse()
            except (socket.timeout, TimeoutError) as exc:
                raise LLMTimeout("LLM endpoint did not answer within the time budget") from exc
            except OSError as exc:
                raise LLMError(f"LLM endpoint unreachable: {exc.strerror or exc}") from exc
            if response.status != 200:
                detail = response.read(300).decode("utf-8", "replace").strip()
                raise LLMError(f"LLM endpoint answered HTTP {response.status}"
                               + (f": {detail}" if detail else ""))
            content_type = response.getheader("Content-Type", "")
            if "text/event-stream" not in content_type:
                # A server that ignores "stream": one JSON document with the whole message.
                yield self._whole_message(response, deadline_s)
                return
            yield from self._events(sock, response, deadline_s)
        finally:
            conn.close()

    def _events(self, sock: socket.socket, response: http.client.HTTPResponse,
                deadline_s: float) -> Iterator[str]:
        while True:
            sock.settimeout(self._remaining(deadline_s))
            try:
                line = response.readline()
            except (socket.timeout, TimeoutError) as exc:
                raise LLMTimeout("LLM reply did not finish within the time budget") from exc
            except OSError as exc:
                raise LLMError(f"LLM stream broke: {exc}") from exc
            if not line:
                return  # the server closed the stream (some send no [DONE])
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return
            try:
                event = json.loads(payload)
                choice = event["choices"][0]
            except (ValueError, KeyError, IndexError, TypeError):
                raise LLMError(f"LLM stream: unexpected event {payload[:120]!r}") from None
            piece = (choice.get("delta") or {}).get("content") or ""
            if piece:
                yield piece

    def _whole_message(self, response: http.client.HTTPResponse, deadline_s: float) -> str:
        try:
            data = json.loads(response.read().decode("utf-8"))
            return data["choices"][0]["message"]["content"] or ""
        except (socket.timeout, TimeoutError) as exc:
            raise LLMTimeout("LLM reply did not finish within the time budget") from exc
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"LLM endpoint returned an unexpected document: {exc}") from None

    @staticmethod
    def _remaining(deadline_s: float) -> float:
        remaining = deadline_s - time.monotonic()
        if remaining <= 0:
            raise LLMTimeout("LLM time budget used up")
        return remaining

    def complete(self, messages: list[ChatMessage], budget_ms: float) -> str:
        """The whole reply within ``budget_ms``, cleaned for speech; ``LLMError`` otherwise."""
        deadline_s = time.monotonic() + budget_ms / 1000.0
        pieces: list[str] = []
        for piece in self.stream(messages, deadline_s):
            pieces.append(piece)
            if time.monotonic() > deadline_s:
                raise LLMTimeout("LLM reply did not finish within the time budget")
            if sum(len(p) for p in pieces) > MAX_REPLY_CHARS * 2:
                break  # long enough: what follows would be cut anyway
        text = clean_for_speech("".join(pieces))
        if not text:
            raise LLMError("LLM returned an empty reply")
        return text


def api_key_from_env(variable: str) -> str:
    return os.environ.get(variable, "") if variable else ""


def clean_for_speech(text: str) -> str:
    """Strip markdown and role prefixes, collapse whitespace, cut at a sentence end near MAX_REPLY_CHARS."""
    text = re.sub(r"<think>.*?</think>", " ", text, flags=re.DOTALL)  # reasoning models
    text = re.sub(r"[*_#`>|]+", " ", text)
    text = re.sub(r"^\s*(assistant|answer|reply)\s*:\s*", "", text, flags=re.IGNORECASE)
    text = " ".join(text.split())
    if len(text) > MAX_REPLY_CHARS:
        cut = max(text.rfind(". ", 0, MAX_REPLY_CHARS), text.rfind("? ", 0, MAX_REPLY_CHARS),
                  text.rfind("! ", 0, MAX_REPLY_CHARS))
        text = text[:cut + 1] if cut > 0 else text[:MAX_REPLY_CHARS]
    return text.strip()


def grounded_messages(question: str, entries: list[KnowledgeEntry], persona: Persona, site: str = "",
                      visitor_name: str = "") -> list[ChatMessage]:
    """The system prompt (persona + rules + the retrieved facts) and the visitor's question."""
    if persona.formality >= 0.7:
        tone = "formal and courteous"
    elif persona.formality <= 0.3:
        tone = "friendly and casual"
    else:
        tone = "warm and polite"
    facts = "\n".join(f"- {e.facts()}" for e in entries) or "- (no relevant facts)"
    where = f" at {site}" if site else ""
    name = f" The visitor's name is {visitor_name}." if visitor_name else ""
    system = (
        f"You are {persona.name}, {persona.role}{where}. You are speaking aloud to a visitor at a reception "
        f"kiosk. Reply in one or two short, {tone} spoken sentences, with no lists and no formatting. "
        f"Use only the facts below. If they do not answer the question, say you are not sure and suggest "
        f"asking the staff at the reception desk. Never give medical advice. If anyone may be unwell or in "
        f"danger, tell the visitor to tell a member of staff immediately.{name}\n\nFacts:\n{facts}"
    )
    return [ChatMessage("system", system), ChatMessage("user", question)]
