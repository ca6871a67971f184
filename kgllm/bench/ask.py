"""Accuracy and warm latency of ``ask`` on question sets with gold answer sets.

A question set is JSON lines: ``{"id", "question", "answers": [local names], "hops", "kind"}``;
an answer counts as correct only when its entity set equals the gold set
(an empty gold set means the graph holds no answer and none may be given).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from kgllm.bench.report import percentile
from kgllm.graph.labels import local_name
from kgllm.session import Session

WARM_UP = ("Which countries border Chad?", "In which region is Kenya?")


@dataclass
class AskResult:
    """Outcome of one question set under one configuration."""

    name: str
    mode: str
    total: int = 0
    correct: int = 0
    by_hops: dict[int, list[int]] = field(default_factory=dict)  # hops -> [correct, total]
    seconds: list[float] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def percentile(self, q: float) -> float:
        return percentile(self.seconds, q)

    def row(self) -> dict[str, str]:
        hops = {h: f"{c}/{t}" for h, (c, t) in sorted(self.by_hops.items())}
        return {
            "set": self.name,
            "mode": self.mode,
            "questions": str(self.total),
            "fully correct": f"{100 * self.accuracy:.1f}%",
            "1-hop": hops.get(1, "-"),
            "2-hop": hops.get(2, "-"),
            "no answer": hops.get(0, "-"),
            "p50 ms": f"{1000 * statistics.median(self.seconds):.0f}",
            "p95 ms": f"{1000 * self.percentile(0.95):.0f}",
        }


def read_questions(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def run_ask_benchmark(session: Session, path: Path, mode: str, progress: bool = True) -> AskResult:
    """Ask every question once (after a warm-up on other questions) and score the answer sets."""
    for question in WARM_UP:
        session.ask(question)
    result = AskResult(name=path.stem, mode=mode)
    for item in tqdm(read_questions(path), desc=f"{path.stem} ({mode})", disable=not progress):
        started = time.perf_counter()
        answer = session.ask(item["question"])
        result.seconds.append(time.perf_counter() - started)
        got = sorted(local_name(e.id) for e in answer.entities)
        ok = got == sorted(item["answers"])
        result.total += 1
        result.correct += ok
        tally = result.by_hops.setdefault(int(item.get("hops", 0)), [0, 0])
        tally[0] += ok
        tally[1] += 1
        if not ok:
            result.failures.append(
                {
                    "id": item["id"],
                    "question": item["question"],
                    "gold": item["answers"],
                    "got": got,
                    "plan": answer.metadata.get("path"),
                }
            )
    return result
