"""Multi-hop KGQA in the PathQuestion format: Hits@1, latency, and answers backed by a path.

A question file has one ``question<TAB>answer(a1/a2/...)<TAB>gold path`` a line; the
gold path (third column) is never shown to the system. The KB is ``head<TAB>relation<TAB>tail``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from kgllm.cache import cached_artifact
from kgllm.datasets.pathquestion import PathQuestionItem, read_pathquestion
from kgllm.exceptions import InputError
from kgllm.graph.labels import local_name
from kgllm.pipelines.synergize.reasoner import PathReasoner
from kgllm.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class KGQAResult:
    name: str
    mode: str
    hits: int = 0
    with_path: int = 0
    total: int = 0
    seconds: list[float] = field(default_factory=list)

    def row(self) -> dict[str, str]:
        return {
            "set": self.name,
            "mode": self.mode,
            "questions": str(self.total),
            "Hits@1": f"{100 * self.hits / self.total:.1f}%",
            "answered with a path": f"{100 * self.with_path / self.total:.1f}%",
            "mean ms": f"{1000 * statistics.mean(self.seconds):.0f}",
            "p95 ms": f"{1000 * sorted(self.seconds)[int(0.95 * (len(self.seconds) - 1))]:.0f}",
        }


def run_kgqa_benchmark(
    reasoner, questions: Path, mode: str, limit: int | None = None, progress: bool = True
) -> KGQAResult:
    """Hits@1: the first answer entity (by label order of the best plan) is in the gold set."""
    result = KGQAResult(name=questions.stem, mode=mode)
    for item in tqdm(read_pathquestion(questions)[:limit], desc=questions.stem, disable=not progress):
        question, gold = item.question, item.answers
        started = time.perf_counter()
        answer = reasoner.answer(question)
        result.seconds.append(time.perf_counter() - started)
        result.total += 1
        result.hits += bool(answer.entities) and local_name(answer.entities[0].id) in gold
        result.with_path += bool(answer.entities) and bool(answer.evidence.paths)
    return result


def trained_reasoner(
    session,
    train: list[PathQuestionItem],
    dev: list[PathQuestionItem],
    minutes: float,
    settings: Settings,
    progress: bool = True,
) -> PathReasoner:
    """A reasoner whose plans are also ranked by a LoRA planner trained on the gold paths of ``train``.
    The planner's weight, and how close a plan must match the question to be answered
    (``min_plan_similarity``), are the best on ``dev``."""
    from kgllm.llm.default import ensure_default_model
    from kgllm.pipelines.synergize.planner import (
        PLANNER_RUN,
        PlannerConfig,
        planning_examples,
        train_planner,
        tuned_reasoner,
    )

    base_dir = ensure_default_model(session.store, settings, progress=progress)
    examples = planning_examples(session.store, train)
    config = PlannerConfig(run=replace(PLANNER_RUN, max_minutes=minutes, threads=settings.threads))
    adapter_dir = _adapter_dir(base_dir, examples, config, settings)

    def build(staging: Path) -> None:
        log.warning(
            "training the planner on %d questions (at most %.1f min); cached in %s", len(examples), minutes, adapter_dir
        )
        train_planner(base_dir, examples, staging, config, progress=progress)

    cached_artifact(adapter_dir, build, marker="adapter_config.json")
    return tuned_reasoner(session.reasoner, base_dir, adapter_dir, dev, threads=settings.threads, progress=progress)


def split_files(train_file: str | Path) -> tuple[list[PathQuestionItem], list[PathQuestionItem]]:
    """A train split's questions and those of the dev split beside it (``*.train.*`` -> ``*.dev.*``)."""
    train_file = Path(train_file)
    dev_file = train_file.with_name(train_file.name.replace(".train.", ".dev."))
    if not dev_file.is_file():
        raise InputError(f"no dev split at {dev_file} to choose the planner's weight on")
    return read_pathquestion(train_file), read_pathquestion(dev_file)


def _adapter_dir(base_dir: Path, examples: list[str], config, settings: Settings) -> Path:
    digest = hashlib.sha256(base_dir.name.encode())
    for text in examples:
        digest.update(text.encode("utf-8") + b"\0")
    digest.update(json.dumps(asdict(config), sort_keys=True).encode())
    return settings.cache_dir / "adapters" / f"planner-{digest.hexdigest()[:16]}"
