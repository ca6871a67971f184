"""The default language model: trained from scratch on the graph, cached by what it was trained on."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

from kgllm.cache import cached_artifact
from kgllm.graph.base import GraphStore
from kgllm.llm.corpus import CorpusBuilder
from kgllm.settings import Settings

log = logging.getLogger(__name__)

CORPUS_SEED = 0


def default_training_config(settings: Settings):
    """Sizes that train in the time budget on two CPU cores and learn the demo graph."""
    from kgllm.llm.training import TrainingConfig

    return TrainingConfig(
        hidden_size=256,
        num_layers=4,
        num_heads=4,
        vocab_size=2048,
        max_seq_len=128,
        batch_size=32,
        learning_rate=2e-3,
        epochs=None,
        max_minutes=settings.train_minutes,
        threads=settings.threads,
        device=settings.device,
        seed=CORPUS_SEED,
    )


def default_model_dir(texts: list[str], config, settings: Settings) -> Path:
    """Cache folder named by a hash of the corpus and the training configuration (but not of the
    thread count, which changes how fast the model trains, not what it is)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    digest.update(json.dumps({**asdict(config), "threads": None}, sort_keys=True, default=str).encode())
    return settings.cache_dir / "models" / f"graph-lm-{digest.hexdigest()[:16]}"


def ensure_default_model(store: GraphStore, settings: Settings, progress: bool = True) -> Path:
    """The default model's directory, training it first when it is not cached yet.

    Two processes asking at once train it once: the second waits, then reads the cache.
    """
    from kgllm.llm.training import train_causal_lm

    texts = CorpusBuilder(store, seed=CORPUS_SEED).texts()
    config = default_training_config(settings)
    out_dir = default_model_dir(texts, config, settings)

    def build(staging: Path) -> None:
        log.warning(
            "training the default model on %d texts from the graph (at most %.1f min); cached in %s",
            len(texts),
            settings.train_minutes,
            out_dir,
        )
        train_causal_lm(texts, staging, config, progress=progress)

    return cached_artifact(out_dir, build, marker="config.json")
