"""The ``LanguageModel`` protocol: generate text, and score candidate continuations."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kgllm.exceptions import InputError


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings. ``num_beams > 1`` is beam search; ``do_sample`` uses top-k / top-p / temperature."""

    max_new_tokens: int = 32
    num_beams: int = 1
    num_return_sequences: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = field(default=("\n",))
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise InputError("max_new_tokens must be at least 1")
        if self.num_beams < 1 or self.num_return_sequences < 1:
            raise InputError("num_beams and num_return_sequences must be at least 1")
        if self.num_return_sequences > max(self.num_beams, 1) and not self.do_sample:
            raise InputError("num_return_sequences cannot exceed num_beams without sampling")
        if self.temperature <= 0:
            raise InputError("temperature must be positive")
        if not 0 < self.top_p <= 1:
            raise InputError("top_p must be in (0, 1]")


class LanguageModel(ABC):
    """A causal language model as the pipelines use it.

    A new backend is one subclass (``_generate``, ``_score`` and ``from_settings``) and one
    registration in :data:`kgllm.llm.models` or the ``kgllm.llms`` entry-point group.
    """

    name: str = "model"

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Any, model: str | os.PathLike | None = None) -> LanguageModel:
        """The model ``model`` names (a local directory, a served model name), else the settings' one."""

    def generate(
        self, prompts: str | Sequence[str], config: GenerationConfig | None = None, allowed: Sequence[str] | None = None
    ) -> list[list[str]]:
        """Continuations of each prompt: one list of ``num_return_sequences`` strings per prompt,
        cut at the first stop string (which is not included).

        With ``allowed`` (entity labels, relation names, ...), every continuation is one of
        those strings, decoded through a prefix trie; stop strings are not applied then and
        ``max_new_tokens`` grows to fit the longest candidate. Give candidates their leading
        space (``" Paris"``) as they would follow the prompt in text.
        """
        batch = [prompts] if isinstance(prompts, str) else list(prompts)
        if not batch:
            return []
        if allowed is not None:
            allowed = list(allowed)
            if not allowed or any(not a for a in allowed):
                raise InputError("allowed must be a non-empty list of non-empty strings")
        return self._generate(batch, config or GenerationConfig(), allowed)

    @abstractmethod
    def _generate(
        self, prompts: list[str], config: GenerationConfig, allowed: list[str] | None = None
    ) -> list[list[str]]: ...

    def score(self, prompt: str, candidates: Sequence[str], normalize: bool = False) -> list[float]:
        """Log-likelihood of each candidate continuing ``prompt`` (summed over its tokens;
        divided by the token count when ``normalize``). Higher is more likely."""
        candidates = list(candidates)
        if not candidates:
            return []
        if any(not c for c in candidates):
            raise InputError("candidates must be non-empty strings")
        return self._score(prompt, candidates, normalize)

    @abstractmethod
    def _score(self, prompt: str, candidates: list[str], normalize: bool) -> list[float]: ...
