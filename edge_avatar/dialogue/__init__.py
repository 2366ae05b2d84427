"""Dialogue, the avatar's "brain": answers from the site's knowledge (or a local LLM), in the persona's voice.

Why this package exists: see ARCHITECTURE.md ("Dialogue"). The public entry
points are small:

- ``build_dialogue(root_config)`` -> ``Dialogue`` (brain.py): ``respond(text)``
  returns a ``Reply`` (reply.py) with text, affect (valence, arousal), gesture
  intents, tier, matched entry and confidence; ``greet()``, ``farewell()``,
  ``start_visit()``, ``end_visit()``, ``erase_memory()``;
  ``persona_vector()`` for the planner.
- ``load_knowledge`` / ``load_persona`` validate the site's files and say
  exactly what is wrong (file, key, expectation).
- ``DialogueConfig`` (options.py) is the ``dialogue`` section of the root config.

Heavy pieces (ONNX Runtime, the tokenizer, VADER) load only when a
``Dialogue`` is built, so ``import edge_avatar.dialogue`` stays cheap.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_avatar.dialogue.knowledge import KnowledgeBase, KnowledgeEntry, KnowledgeError, load_knowledge
from edge_avatar.dialogue.options import DialogueConfig
from edge_avatar.dialogue.persona import Persona, PersonaError, default_persona, load_persona
from edge_avatar.dialogue.reply import Affect, GestureIntent, Reply

if TYPE_CHECKING:
    from edge_avatar.config import RootConfig
    from edge_avatar.dialogue.brain import Dialogue
    from edge_avatar.dialogue.embedding import SentenceEmbedder

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

__all__ = ["Affect", "DialogueConfig", "GestureIntent", "KnowledgeBase", "KnowledgeEntry", "KnowledgeError",
           "Persona", "PersonaError", "Reply", "build_dialogue", "default_persona", "dialogue_config",
           "load_knowledge", "load_persona", "resolve_path"]


def resolve_path(path: str | Path, base_dirs: tuple[Path, ...] = ()) -> Path:
    """A configured file: absolute as given; relative: ``base_dirs`` first, then the current dir, then the repo."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    for base in (*base_dirs, Path.cwd(), REPO_ROOT):
        candidate = base / path
        if candidate.exists():
            return candidate
    return path


def dialogue_config(root: RootConfig | None) -> DialogueConfig:
    """The ``dialogue`` section of a root config (defaults when the root config has none yet)."""
    section = getattr(root, "dialogue", None) if root is not None else None
    return section if isinstance(section, DialogueConfig) else DialogueConfig()


def build_dialogue(root: RootConfig | None = None, config: DialogueConfig | None = None, *,
                   knowledge_file: str | Path | None = None, persona_file: str | Path | None = None,
                   embedder: SentenceEmbedder | None = None, base_dirs: tuple[Path, ...] = ()) -> Dialogue:
    """Load knowledge, persona, the embedding model and (if configured) the LLM client and long-term memory.

    File precedence: the explicit argument, then ``dialogue.*_file``, then ``site.*_file``. Raises
    ``KnowledgeError`` / ``PersonaError`` (both ``ConfigError``) for a missing or invalid file.
    """
    from edge_avatar.dialogue.affect import SentimentReader  # noqa: PLC0415
    from edge_avatar.dialogue.brain import Dialogue  # noqa: PLC0415
    from edge_avatar.dialogue.embedding import SentenceEmbedder  # noqa: PLC0415
    from edge_avatar.dialogue.engine import BuiltinEngine  # noqa: PLC0415
    from edge_avatar.dialogue.llm import OpenAIChatClient, api_key_from_env  # noqa: PLC0415
    from edge_avatar.dialogue.memory import LongTermMemory  # noqa: PLC0415
    from edge_avatar.dialogue.retrieval import HybridRetriever, RetrievalWeights  # noqa: PLC0415

    config = config or dialogue_config(root)
    site = getattr(root, "site", None)
    knowledge_file = knowledge_file or config.knowledge_file or (site.knowledge_file if site else "")
    if not knowledge_file:
        raise KnowledgeError("dialogue.knowledge_file", "",
                             "no knowledge file configured; set dialogue.knowledge_file or site.knowledge_file "
                             "(e.g. examples/hospital-reception/knowledge.yaml)")
    knowledge = load_knowledge(resolve_path(knowledge_file, base_dirs))
    persona_file = persona_file or config.persona_file or (site.persona_file if site else "")
    persona = load_persona(resolve_path(persona_file, base_dirs)) if persona_file else default_persona()

    owns_embedder = embedder is None
    if embedder is None:
        embedder = SentenceEmbedder(
            resolve_path(config.embedding_model_file, base_dirs) if config.embedding_model_file else None,
            resolve_path(config.tokenizer_file, base_dirs) if config.tokenizer_file else None,
            threads=config.embedding_threads)
    weights = RetrievalWeights(config.weight_questions, config.weight_answers, config.weight_lexical)
    retriever = HybridRetriever(knowledge, embedder, weights)
    engine = BuiltinEngine(knowledge, retriever, persona, config, SentimentReader())

    llm = None
    if config.llm_endpoint_url:
        llm = OpenAIChatClient(config.llm_endpoint_url, config.llm_model, api_key_from_env(config.llm_api_key_env),
                               config.llm_max_tokens, config.llm_temperature)
    long_term = None
    if config.long_term_memory:
        state_dir = Path(site.state_dir if site else "~/.local/state/edge-avatar").expanduser()
        long_term = LongTermMemory(state_dir / config.memory_db_file, config.memory_retention_days)
    privacy = getattr(root, "privacy", None)
    log.info("dialogue: %d knowledge entries from %s, persona %s (%s), LLM tier %s, long-term memory %s",
             len(knowledge.entries), knowledge.source, persona.name, persona.fingerprint(),
             config.llm_endpoint_url or "off", "on" if long_term else "off")
    return Dialogue(engine, persona, config, llm=llm, long_term=long_term,
                    log_transcripts=bool(privacy and privacy.log_transcripts), owns_embedder=owns_embedder)


def reply_summary(reply: Reply) -> dict[str, Any]:
    """What ``edge-avatar ask --json`` prints."""
    return {"answer": reply.text, "entry_id": reply.entry_id, "confidence": round(reply.confidence, 4),
            "tier": reply.tier, "kind": reply.kind,
            "affect": {"valence": round(reply.affect.valence, 3), "arousal": round(reply.affect.arousal, 3)},
            "gestures": reply.to_json()["gestures"], "suggested_entry_id": reply.suggested_entry_id,
            "fallback_reason": reply.fallback_reason,
            "timings_ms": {k: round(v, 2) for k, v in reply.timings_ms.items()}}
