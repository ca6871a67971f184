"""The core LLM module: the ``LanguageModel`` protocol, the Hugging Face backend, training from scratch,
knowledge-injection pre-training, PEFT adapters per task and task data built from a graph.

``HFCausalLM`` and the training functions import torch and transformers on first
use, so ``import kgllm.llm`` stays cheap for code that only needs the protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kgllm.llm.base import GenerationConfig, LanguageModel
from kgllm.registry import Registry

if TYPE_CHECKING:
    from kgllm.llm.adapters import AdaptedLM, AdapterConfig
    from kgllm.llm.hf import HFCausalLM
    from kgllm.llm.tasks import build_task
    from kgllm.llm.training import TrainingConfig, TrainResult, train_causal_lm, train_tokenizer
    from kgllm.llm.tuning import RunConfig, finetune, pretrain

models: Registry[LanguageModel] = Registry("language model", LanguageModel)
models.register("hf", "kgllm.llm.hf:HFCausalLM")
models.register("openai", "kgllm.llm.openai_compat:OpenAICompatibleLM")

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
    "pretrain",
    "train_causal_lm",
    "train_tokenizer",
]
