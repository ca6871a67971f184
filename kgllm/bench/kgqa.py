"""Multi-hop KGQA in the PathQuestion format: Hits@1, latency, and answers backed by a path.

A question file has one ``question<TAB>answer(a1/a2/...)<TAB>gold path`` a line; the
gold path (third column) is never shown to the system. The KB is ``head<TAB>relation<TAB>tail``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from kgllm.exceptions import ParseError
from kgllm.graph.labels import local_name


@dataclass
class KGQAResult:
    name: str
    mode: str
    hits: int = 0
    with_path: int = 0
    total: int = 0
    seconds: list[float] = field(default_factory=list)

    def row(self) -> dict[str, str]:
        return {"set": self.name, "mode": self.mode, "questions": str(self.total),
                "Hits@1": f"{100 * self.hits / self.total:.1f}%",
                "answered with a path": f"{100 * self.with_path / self.total:.1f}%",
                "mean ms": f"{1000 * statistics.mean(self.seconds):.0f}",
                "p95 ms": f"{1000 * sorted(self.seconds)[int(0.95 * (len(self.seconds) - 1))]:.0f}"}


def read_pathquestion(path: str | Path) -> list[tuple[str, set[str]]]:
    """``(question, gold answers)`` pairs; the gold path column is dropped here."""
    items = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        answer = parts[1] if len(parts) >= 2 else ""
        if "(" not in answer or not answer.endswith(")"):
            raise ParseError("expected question<TAB>answer(a1/a2/)<TAB>path", path=str(path), line=number)
        gold = {a for a in answer[answer.index("(") + 1:-1].split("/") if a}
        items.append((parts[0], gold))
    return items


def run_kgqa_benchmark(reasoner, questions: Path, mode: str, limit: int | None = None,
                       progress: bool = True) -> KGQAResult:
    """Hits@1: the first answer entity (by label order of the best plan) is in the gold set."""
    result = KGQAResult(name=questions.stem, mode=mode)
    for question, gold in tqdm(read_pathquestion(questions)[:limit], desc=questions.stem, disable=not progress):
        started = time.perf_counter()
        answer = reasoner.answer(question)
        result.seconds.append(time.perf_counter() - started)
        result.total += 1
        result.hits += bool(answer.entities) and local_name(answer.entities[0].id) in gold
        result.with_path += bool(answer.entities) and bool(answer.evidence.paths)
    return result
