"""The core LLM module: the ``LanguageModel`` protocol, the Hugging Face backend, training from scratch,
knowledge-injection pre-training, PEFT adapters per task and task data built from a graph.

``HFCausalLM`` and the training functions import torch and transformers on first
use, so ``import kgllm.llm`` stays cheap for code that only needs the protocol.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from kgllm.exceptions import ConfigurationError
from kgllm.llm.base import GenerationConfig, LanguageModel
from kgllm.registry import Registry

if TYPE_CHECKING:
    from kgllm.graph.base import GraphStore
    from kgllm.llm.adapters import AdaptedLM, AdapterConfig
    from kgllm.llm.hf import HFCausalLM
    from kgllm.llm.tasks import build_task
    from kgllm.llm.training import TrainingConfig, TrainResult, train_causal_lm, train_tokenizer
    from kgllm.llm.tuning import RunConfig, finetune, pretrain
    from kgllm.settings import Settings

models: Registry[LanguageModel] = Registry("language model", LanguageModel, entry_points="kgllm.llms")
models.register("hf", "kgllm.llm.hf:HFCausalLM")
models.register("openai", "kgllm.llm.openai_compat:OpenAICompatibleLM")


def open_model(
    model: str | os.PathLike | LanguageModel | None = None,
    *,
    store: GraphStore | None = None,
    settings: Settings | None = None,
    progress: bool = True,
) -> LanguageModel:
    """The language model to use: a ready one, a local directory or served model name for the
    backend ``settings.llm`` names, or, with no model given to the local backend, the small model
    trained on ``store`` (trained on first use and cached).
    """
    if isinstance(model, LanguageModel):
        return model
    from kgllm.settings import Settings

    settings = settings or Settings()
    backend = models.get(settings.backend_name())
    if model is None and settings.model is None and settings.backend_name() == "hf":
        if store is None:
            raise ConfigurationError("no model directory given and no graph to train the default model on")
        from kgllm.llm.default import ensure_default_model

        model = ensure_default_model(store, settings, progress=progress)
    return backend.from_settings(settings, model)


_LAZY = {
    "AdaptedLM": "kgllm.llm.adapters",
    "AdapterConfig": "kgllm.llm.adapters",
    "HFCausalLM": "kgllm.llm.hf",
    "RunConfig": "kgllm.llm.tuning",
    "build_task": "kgllm.llm.tasks",
    "finetune": "kgllm.llm.tuning",
    "pretrain": "kgllm.llm.tuning",
    "TrainingConfig": "kgllm.llm.training",
    "TrainResult": "kgllm.llm.training",
    "train_causal_lm": "kgllm.llm.training",
    "train_tokenizer": "kgllm.llm.training",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AdaptedLM",
    "AdapterConfig",
    "GenerationConfig",
    "HFCausalLM",
    "LanguageModel",
    "RunConfig",
    "TrainResult",
    "TrainingConfig",
    "build_task",
    "finetune",
    "models",
    "open_model",
    "pretrain",
    "train_causal_lm",
    "train_tokenizer",
]
