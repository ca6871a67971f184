"""The core LLM module: the ``LanguageModel`` protocol, the Hugging Face backend and training from scratch.

``HFCausalLM`` and the training functions import torch and transformers on first
use, so ``import kgllm.llm`` stays cheap for code that only needs the protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kgllm.llm.base import GenerationConfig, LanguageModel
from kgllm.registry import Registry

if TYPE_CHECKING:
    from kgllm.llm.hf import HFCausalLM
    from kgllm.llm.training import TrainingConfig, TrainResult, train_causal_lm, train_tokenizer

models: Registry[LanguageModel] = Registry("language model", LanguageModel)
models.register("hf", "kgllm.llm.hf:HFCausalLM")
models.register("openai", "kgllm.llm.openai_compat:OpenAICompatibleLM")

_LAZY = {
    "HFCausalLM": "kgllm.llm.hf",
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
    "GenerationConfig",
    "HFCausalLM",
    "LanguageModel",
    "TrainResult",
    "TrainingConfig",
    "models",
    "train_causal_lm",
    "train_tokenizer",
]
