"""The one interface every question-answering pipeline implements."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from kgllm.types import Answer


@runtime_checkable
class Answerer(Protocol):
    """Answers a question from the graph, with the evidence that supports the answer.

    ``options`` are per-call settings (limits such as ``max_hops``, a beam width, ...);
    an answerer raises :class:`kgllm.exceptions.InputError` for an option it does not know,
    so a misspelled option is never silently ignored.
    """

    def answer(self, question: str, **options: Any) -> Answer: ...


@runtime_checkable
class StreamingAnswerer(Answerer, Protocol):
    """An answerer that can also hand out its answer as it is written: ``stream`` yields text
    deltas (strings), then the final :class:`~kgllm.types.Answer`, the one ``answer`` returns."""

    def stream(self, question: str, **options: Any) -> Iterator[str | Answer]: ...
