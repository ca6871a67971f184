"""The ``LanguageModel`` protocol: generate text (optionally constrained, with token log-probabilities),
and score candidate continuations."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from kgllm.exceptions import ConfigurationError, InputError


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings. ``num_beams > 1`` is beam search; ``do_sample`` uses top-k / top-p / temperature."""

    max_new_tokens: int = 32
    min_new_tokens: int = 0
    """End-of-sequence is suppressed until this many tokens are generated."""
    num_beams: int = 1
    num_return_sequences: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    """When positive, no n-gram of this size is generated twice (0: off)."""
    stop: tuple[str, ...] = field(default=("\n",))
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise InputError("max_new_tokens must be at least 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise InputError("min_new_tokens must be between 0 and max_new_tokens")
        if self.num_beams < 1 or self.num_return_sequences < 1:
            raise InputError("num_beams and num_return_sequences must be at least 1")
        if self.num_return_sequences > max(self.num_beams, 1) and not self.do_sample:
            raise InputError("num_return_sequences cannot exceed num_beams without sampling")
        if self.temperature <= 0:
            raise InputError("temperature must be positive")
        if not 0 < self.top_p <= 1:
            raise InputError("top_p must be in (0, 1]")
        if self.no_repeat_ngram_size < 0:
            raise InputError("no_repeat_ngram_size must be non-negative")


@runtime_checkable
class Constraint(Protocol):
    """A token-level rule for constrained decoding, built against the model's tokenizer
    (:attr:`HFCausalLM.tokenizer <kgllm.llm.hf.HFCausalLM.tokenizer>`): a prefix trie over
    candidates (:class:`~kgllm.llm.constrained.TokenTrie`), a grammar, one rule per prompt
    (:class:`~kgllm.llm.constrained.PerPrompt`), ...
    """

    def prefix_allowed_tokens(self, batch_id: int, generated: Sequence[int]) -> Sequence[int]:
        """Token ids that may follow ``generated``, the ids generated so far for the prompt at index
        ``batch_id`` of the batch (the prompt and its padding excluded). Never empty."""
        ...


@dataclass(frozen=True, slots=True)
class Generation:
    """One continuation: its text (cut at the first stop string), the generated token ids (up to and
    including end-of-sequence; empty where the backend does not expose tokens) and, when asked for,
    each token's log-probability under the decoding distribution (after constraints and penalties)."""

    text: str
    token_ids: tuple[int, ...] = ()
    token_logprobs: tuple[float, ...] | None = None


class LanguageModel(ABC):
    """A causal language model as the pipelines use it.

    A new backend is one subclass (``_generate``, ``_score`` and ``from_settings``) and one
    registration in :data:`kgllm.llm.models` or the ``kgllm.llms`` entry-point group.
    """

    name: str = "model"
    supports_constraints: bool = False
    """Whether ``constraint`` and ``logprobs`` work (a local model); ``allowed`` works on every backend."""

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Any, model: str | os.PathLike | None = None) -> LanguageModel:
        """The model ``model`` names (a local directory, a served model name), else the settings' one."""

    def generate(
        self,
        prompts: str | Sequence[str],
        config: GenerationConfig | None = None,
        allowed: Sequence[str] | None = None,
        constraint: Constraint | None = None,
    ) -> list[list[str]]:
        """Continuations of each prompt: one list of ``num_return_sequences`` strings per prompt,
        cut at the first stop string (which is not included).

        With ``allowed`` (entity labels, relation names, ...), every continuation is one of
        those strings, decoded through a prefix trie; stop strings are not applied then and
        ``max_new_tokens`` grows to fit the longest candidate. Give candidates their leading
        space (``" Paris"``) as they would follow the prompt in text. With ``constraint``, every
        token is one the constraint allows (see :class:`Constraint`). Prompts of different
        lengths run as one left-padded batch.

        Example::

            lm.generate(["The capital of Peru is"], GenerationConfig(stop=(".",)))  # [[" Lima"]]
        """
        return [
            [g.text for g in row]
            for row in self.generate_tokens(prompts, config, allowed=allowed, constraint=constraint)
        ]

    def generate_tokens(
        self,
        prompts: str | Sequence[str],
        config: GenerationConfig | None = None,
        *,
        allowed: Sequence[str] | None = None,
        constraint: Constraint | None = None,
        logprobs: bool = False,
    ) -> list[list[Generation]]:
        """As :meth:`generate`, with each continuation's token ids and, when ``logprobs``, each
        token's log-probability (:class:`Generation`)."""
        batch = [prompts] if isinstance(prompts, str) else list(prompts)
        if allowed is not None:
            allowed = list(allowed)
            if not allowed or any(not a for a in allowed):
                raise InputError("allowed must be a non-empty list of non-empty strings")
            if constraint is not None:
                raise InputError("give allowed or constraint, not both")
        if (constraint is not None or logprobs) and not self.supports_constraints:
            raise ConfigurationError(
                f"{type(self).__name__} cannot constrain tokens or return their log-probabilities; use a local model"
            )
        if constraint is not None and not isinstance(constraint, Constraint):
            raise InputError("constraint must have a prefix_allowed_tokens(batch_id, generated) method")
        if not batch:
            return []
        return self._generate(batch, config or GenerationConfig(), allowed, constraint, logprobs)

    def stream(
        self, prompt: str, config: GenerationConfig | None = None, constraint: Constraint | None = None
    ) -> Iterator[str]:
        """The continuation of ``prompt`` piece by piece as it is generated, cut at the first stop
        string (not included): joined, the pieces are what :meth:`generate` returns. One sequence
        only (``num_beams`` and ``num_return_sequences`` 1). Leaving the loop (or ``close()``)
        stops the generation.

        Example::

            for piece in lm.stream("Question: Where is Kenya located?\\nAnswer:"):
                print(piece, end="", flush=True)
        """
        if not isinstance(prompt, str):
            raise InputError("stream takes one prompt, a string")
        config = config or GenerationConfig()
        if config.num_beams > 1 or config.num_return_sequences > 1:
            raise InputError("streaming decodes one sequence: num_beams and num_return_sequences must be 1")
        if constraint is not None and not self.supports_constraints:
            raise InputError(f"{self.name} cannot hold its decoding to a constraint")
        return until_stop(self._stream(prompt, config, constraint), config.stop)

    def _stream(self, prompt: str, config: GenerationConfig, constraint: Constraint | None) -> Iterator[str]:
        """Pieces of the continuation as they are generated (stop strings may be left in: :meth:`stream`
        cuts them). This default yields the whole continuation at once; a backend that can hand out
        tokens as it makes them overrides it."""
        yield self._generate([prompt], config, None, constraint, False)[0][0].text

    @abstractmethod
    def _generate(
        self,
        prompts: list[str],
        config: GenerationConfig,
        allowed: list[str] | None,
        constraint: Constraint | None,
        logprobs: bool,
    ) -> list[list[Generation]]: ...

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


def until_stop(pieces: Iterator[str], stops: Sequence[str]) -> Iterator[str]:
    """``pieces`` up to the earliest stop string: text that may begin a stop string is held back
    until the next piece shows it does not. Closing the result closes ``pieces``."""
    stops = [s for s in stops if s]
    hold = max((len(s) for s in stops), default=1) - 1
    text, sent = "", 0
    try:
        for piece in pieces:
            text += piece
            end = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
            if end >= 0:
                if end > sent:
                    yield text[sent:end]
                return
            if len(text) - hold > sent:
                yield text[sent : len(text) - hold]
                sent = len(text) - hold
        if len(text) > sent:
            yield text[sent:]
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


def trimmed(pieces: Iterator[str]) -> Iterator[str]:
    """``pieces`` with the whitespace around their joined text left out, as ``"".join(pieces).strip()``
    would leave it: trailing whitespace is held back until text follows it. Closing the result
    closes ``pieces``."""
    pending, started = "", False
    try:
        for piece in pieces:
            pending += piece
            if not started:
                pending = pending.lstrip()
            if text := pending.rstrip():
                yield text
                pending, started = pending[len(text) :], True
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
