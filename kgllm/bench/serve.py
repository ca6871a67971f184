"""Concurrent ``POST /ask`` requests against a real ``kgllm serve`` app on loopback.

All requests are sent at once (up to ``concurrency`` in flight) by an async httpx client;
an error is any response other than 200 or a failed connection. Latency is per request,
from sending to the full response, so it includes the time spent queued behind others.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tqdm.auto import tqdm

from kgllm.bench.ask import WARM_UP, read_questions
from kgllm.bench.report import percentile
from kgllm.server import create_app, running_server
from kgllm.session import Session


@dataclass
class ServeResult:
    """Latencies and errors of one burst of requests."""

    mode: str
    concurrency: int
    seconds: list[float] = field(default_factory=list)
    errors: int = 0
    wall_seconds: float = 0.0

    def percentile(self, q: float) -> float:
        return percentile(self.seconds, q)

    def row(self) -> dict[str, str]:
        return {
            "mode": self.mode,
            "requests": str(len(self.seconds)),
            "concurrency": str(self.concurrency),
            "errors": str(self.errors),
            "p50 ms": f"{1000 * statistics.median(self.seconds):.0f}",
            "p95 ms": f"{1000 * self.percentile(0.95):.0f}",
            "max ms": f"{1000 * max(self.seconds):.0f}",
            "requests/s": f"{len(self.seconds) / self.wall_seconds:.1f}",
        }


def run_serve_benchmark(
    session: Session, questions: Path, mode: str, requests: int = 50, concurrency: int = 50, progress: bool = True
) -> ServeResult:
    """Serve ``session`` on loopback, warm it up, then send ``requests`` questions from the set at once."""
    texts = [item["question"] for item in read_questions(questions)]
    batch = list(itertools.islice(itertools.cycle(texts), requests))
    with running_server(create_app(session)) as url:
        for question in WARM_UP:
            httpx.post(f"{url}/ask", json={"question": question}, timeout=120).raise_for_status()
        return asyncio.run(_burst(url, batch, mode, concurrency, progress))


async def _burst(url: str, questions: list[str], mode: str, concurrency: int, progress: bool) -> ServeResult:
    result = ServeResult(mode=mode, concurrency=concurrency)
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(questions), desc=f"/ask x {len(questions)} ({mode})", disable=not progress)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def ask(question: str) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    response = await client.post("/ask", json={"question": question})
                    result.errors += response.status_code != 200
                except httpx.HTTPError:
                    result.errors += 1
                result.seconds.append(time.perf_counter() - started)
                bar.update()

        started = time.perf_counter()
        await asyncio.gather(*(ask(q) for q in questions))
        result.wall_seconds = time.perf_counter() - started
    bar.close()
    return result
