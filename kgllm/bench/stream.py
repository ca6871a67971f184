"""First streamed token, warm: how long after a request the first piece of the answer arrives.

Each prompt is a question of a demo question set with the retriever's facts for it written above
it, numbered, as a generation prompt puts them. Measured two ways, after warm-up requests:
``LanguageModel.stream`` in process, and ``/v1/chat/completions`` with ``stream=true`` over HTTP on
loopback (the server's whole path: request parsing, the worker thread, the model, the event).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm.auto import tqdm

from kgllm.llm.base import GenerationConfig
from kgllm.session import Session

WARM_UP = 3
FACTS = 5  # the default model reads 128 tokens: five facts and the question fit


@dataclass
class LatencyResult:
    """Seconds to the first streamed piece, per prompt, for one way of asking."""

    path: str
    seconds: list[float]

    def row(self) -> dict[str, str]:
        ms = sorted(s * 1000 for s in self.seconds)
        return {
            "path": self.path,
            "prompts": str(len(ms)),
            "median ms": f"{statistics.median(ms):.0f}",
            "p90 ms": f"{ms[int(0.9 * (len(ms) - 1))]:.0f}",
            "max ms": f"{ms[-1]:.0f}",
        }


def fact_prompts(session: Session, questions: Path, limit: int) -> list[str]:
    """Prompts of the first ``limit`` questions, each with its ``FACTS`` retrieved facts, numbered."""
    prompts = []
    for line in questions.read_text(encoding="utf-8").splitlines()[:limit]:
        question = json.loads(line)["question"]
        facts = session.retriever.retrieve(question, k=FACTS).triples
        label = session.store.label
        numbered = [f"[{i}] {label(t.head)} {label(t.relation)} {label(t.tail)}." for i, t in enumerate(facts, 1)]
        prompts.append("Facts:\n" + "\n".join(numbered) + f"\nQuestion: {question}\nAnswer:")
    return prompts


def first_piece_seconds(start: Callable[[str], Iterator[str]], prompts: list[str], label: str) -> list[float]:
    """Seconds until ``start(prompt)`` yields its first piece (or ends, for an empty reply), for
    each prompt (after warm-up)."""
    for prompt in prompts[:WARM_UP]:
        _first(start(prompt))
    seconds = []
    for prompt in tqdm(prompts, desc=label, unit="prompt"):
        began = time.perf_counter()
        _first(start(prompt))
        seconds.append(time.perf_counter() - began)
    return seconds


def _first(pieces: Iterator[str]) -> str:
    try:
        return next(pieces, "")
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


def chat_pieces(url: str, prompt: str, max_tokens: int) -> Iterator[str]:
    """Content pieces of a streamed chat reply from the server at ``url``."""
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line.removeprefix("data: "))["choices"]
                if choices and choices[0]["delta"].get("content"):
                    yield choices[0]["delta"]["content"]


def run_stream_benchmark(session: Session, questions: Path, limit: int, max_tokens: int = 32) -> list[LatencyResult]:
    """First-piece latency in process and over HTTP for the first ``limit`` questions."""
    from kgllm.server import create_app, running_server

    lm = session.lm
    if lm is None:
        raise ValueError("the stream benchmark needs a session with a language model")
    prompts = fact_prompts(session, questions, limit)
    config = GenerationConfig(max_new_tokens=max_tokens, stop=("\n",))
    results = [
        LatencyResult(
            "LanguageModel.stream", first_piece_seconds(lambda p: lm.stream(p, config), prompts, "in process")
        )
    ]
    with running_server(create_app(session)) as url:
        seconds = first_piece_seconds(lambda p: chat_pieces(url, p, max_tokens), prompts, "over HTTP")
    results.append(LatencyResult("/v1/chat/completions stream=true (HTTP)", seconds))
    return results
