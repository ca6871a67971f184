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
from kgllm.datasets.pathquestion import read_pathquestion
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


WEIGHTS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
FLOORS = (0.6, 0.5, 0.4, 0.3, 0.2)


def trained_reasoner(
    session, train_file: str | Path, minutes: float, settings: Settings, progress: bool = True
) -> PathReasoner:
    """A reasoner whose plans are also ranked by a LoRA planner trained on ``train_file``'s gold
    paths. The planner's weight, and how close a plan must match the question to be answered
    (``min_plan_similarity``), are the best on the dev split next to it (``*.train.*`` -> ``*.dev.*``)."""
    from kgllm.llm.default import ensure_default_model
    from kgllm.pipelines.synergize.planner import (
        PLANNER_RUN,
        PlannerConfig,
        load_planner,
        planning_examples,
        train_planner,
    )

    train_file = Path(train_file)
    base_dir = ensure_default_model(session.store, settings, progress=progress)
    examples = planning_examples(session.store, read_pathquestion(train_file))
    config = PlannerConfig(run=replace(PLANNER_RUN, max_minutes=minutes, threads=settings.threads))
    adapter_dir = _adapter_dir(base_dir, examples, config, settings)

    def build(staging: Path) -> None:
        log.warning(
            "training the planner on %d questions of %s (at most %.1f min); cached in %s",
            len(examples),
            train_file.name,
            minutes,
            adapter_dir,
        )
        train_planner(base_dir, examples, staging, config, progress=progress)

    cached_artifact(adapter_dir, build, marker="adapter_config.json")
    planner = load_planner(base_dir, adapter_dir, threads=settings.threads)
    reasoner = PathReasoner(
        session.store, session.retriever, lm=planner, config=replace(session.reasoner.config, lm_weight=1.0)
    )
    dev_file = train_file.with_name(train_file.name.replace(".train.", ".dev."))
    weight, floor = choose_weight_and_floor(reasoner, dev_file, progress=progress)
    reasoner.config.lm_weight, reasoner.config.min_plan_similarity = weight, floor
    return reasoner


def _adapter_dir(base_dir: Path, examples: list[str], config, settings: Settings) -> Path:
    digest = hashlib.sha256(base_dir.name.encode())
    for text in examples:
        digest.update(text.encode("utf-8") + b"\0")
    digest.update(json.dumps(asdict(config), sort_keys=True).encode())
    return settings.cache_dir / "adapters" / f"planner-{digest.hexdigest()[:16]}"


def choose_weight_and_floor(
    reasoner: PathReasoner, dev_file: Path, weights=WEIGHTS, floors=FLOORS, progress: bool = True
) -> tuple[float, float]:
    """The model weight and answer floor with the most Hits@1 on ``dev_file`` (among ties the smallest
    weight and the highest floor). Each question's plans are scored once with the model at weight 1,
    then re-ranked for every weight."""
    if not dev_file.is_file():
        raise InputError(f"no dev split at {dev_file} to choose the planner's weight on")
    grid = [(w, f) for w in weights for f in floors]
    hits = dict.fromkeys(grid, 0)
    questions = read_pathquestion(dev_file)
    for item in tqdm(questions, desc=f"{dev_file.stem} (weights)", disable=not progress):
        for setting, hit in _hits_by_setting(reasoner, item.question, item.answers, grid).items():
            hits[setting] += hit
    best = max(grid, key=lambda s: (hits[s], -s[0], s[1]))
    log.info("planner weight %s, floor %s: dev Hits@1 %.1f%%", *best, 100 * hits[best] / len(questions))
    log.info("dev Hits@1 by (weight, floor): %s", {s: round(100 * h / len(questions), 1) for s, h in hits.items()})
    return best


def _hits_by_setting(reasoner: PathReasoner, question: str, gold: frozenset[str], grid) -> dict[tuple, bool]:
    """Whether the best plan's first answer is gold, for each (weight, floor), as ``reasoner.answer`` picks it."""
    links = reasoner.retriever.link(question)[: reasoner.config.max_topics]
    plans, named_relations = reasoner.search(question, links)
    if not plans:
        return dict.fromkeys(grid, False)
    allowance = reasoner.config.named_relation_allowance if named_relations else 0
    result = {}
    for weight, floor in grid:
        best = max(plans, key=lambda p: p.score + (weight - 1) * p.scores.get("model", 0.0))
        result[(weight, floor)] = best.scores["encoder"] >= floor - allowance and local_name(best.answers[0]) in gold
    return result
