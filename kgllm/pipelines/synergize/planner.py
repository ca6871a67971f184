"""The trained relation-path planner: a LoRA adapter over the graph's base model.

Training examples are ``plan_prompt(question) + path_text(gold path)``, exactly the
text the reasoner scores for a plan, so the adapter learns to rank plans::

    examples = planning_examples(store, read_pathquestion("PQ-2H.train.txt"))
    train_planner(base_dir, examples, out_dir, PlannerConfig(run=replace(PLANNER_RUN, max_minutes=3)))
    reasoner = PathReasoner(store, retriever, lm=load_planner(base_dir, out_dir))

Each path ends with the tokenizer's end-of-sequence token, in training and in scoring,
so a plan that stops early (a prefix of the gold path) is not as likely as the gold one.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from kgllm.datasets.pathquestion import PathQuestionItem
from kgllm.exceptions import ConfigurationError, InputError
from kgllm.graph.base import GraphStore
from kgllm.graph.labels import local_name
from kgllm.graph.rdflib_store import to_iri
from kgllm.llm.adapters import LLAMA_LINEAR, AdaptedLM, AdapterConfig, load_adapted
from kgllm.llm.configs import ConfigMixin, check_config, config
from kgllm.llm.corpus import path_text, plan_prompt
from kgllm.llm.tasks import TaskExample, TaskSplits
from kgllm.llm.tuning import RunConfig, finetune

if TYPE_CHECKING:
    from kgllm.pipelines.synergize.reasoner import PathReasoner

log = logging.getLogger(__name__)


PLANNER_LORA = AdapterConfig(method="lora", rank=8, alpha=16, dropout=0.05, target_modules=list(LLAMA_LINEAR))
"""The planner's adapter by default: LoRA r=8 on every linear layer of the Llama blocks."""
PLANNER_RUN = RunConfig(
    learning_rate=2e-3,
    batch_size=16,
    epochs=16,
    max_minutes=3.0,
    warmup_steps=20,
    weight_decay=0.01,
    max_grad_norm=0.0,  # AdamW's usual decay and no clipping (the gradient norms stay under 1 here)
    threads=2,
    seed=0,
    save_steps=10_000,
)
"""The planner's run by default: 16 epochs or 3 minutes, whichever ends first."""


@config
class PlannerConfig(ConfigMixin):
    """The planner's adapter and run, trained by :func:`kgllm.llm.tuning.finetune`.

    Built from the two configs it is made of; change one setting with ``dataclasses.replace``
    of the defaults. A saved config (``to_dict``) loads back with ``PlannerConfig.from_dict``.

    Example::

        PlannerConfig(run=replace(PLANNER_RUN, max_minutes=10, threads=4))
        PlannerConfig(adapter=AdapterConfig(rank=4, alpha=8), run=RunConfig(epochs=300, learning_rate=1e-2))
    """

    adapter: AdapterConfig = field(default_factory=lambda: copy.deepcopy(PLANNER_LORA))
    """The LoRA adapter (the planner is merged into the base to score plans, so LoRA only)."""
    run: RunConfig = field(default_factory=lambda: copy.deepcopy(PLANNER_RUN))
    """Optimisation settings of the planner's training run."""

    def __post_init__(self) -> None:
        self.adapter = check_config(self.adapter, AdapterConfig, "PlannerConfig.adapter")
        self.run = check_config(self.run, RunConfig, "PlannerConfig.run")
        if self.adapter.method != "lora":
            raise ConfigurationError(
                f"the planner is a LoRA adapter (merged into the base to score plans), got {self.adapter.method!r}"
            )


def planning_examples(store: GraphStore, items: Iterable[PathQuestionItem]) -> list[str]:
    """``plan_prompt(question) + path_text(...)`` of each question's gold path."""
    examples = []
    for item in items:
        if not item.path:
            raise InputError(f"{item.question!r} has no gold path to train the planner on")
        examples.append(plan_prompt(item.question) + gold_path_text(store, item.path))
    return examples


def gold_path_text(store: GraphStore, path: Sequence[str]) -> str:
    """A gold path (``subject, r1, e1, r2, e2``) as the reasoner's plan text: relation labels, each step
    forward unless only the reverse fact is in the store, and the first class of each node reached."""
    nodes = [str(to_iri(n)) for n in path[0::2]]
    relations = [str(to_iri(r)) for r in path[1::2]]
    forward = [_is_forward(store, h, r, t) for h, r, t in zip(nodes, relations, nodes[1:])]
    classes = []
    for node in nodes[1:]:
        entity = store.entity(node)
        classes.append(store.label(entity.types[0]) if entity and entity.types else None)
    return path_text([store.label(r) for r in relations], forward, classes)


def _is_forward(store: GraphStore, head: str, relation: str, tail: str) -> bool:
    return any(True for _ in store.triples(head, relation, tail)) or not any(
        True for _ in store.triples(tail, relation, head)
    )


PLANNER_SETTINGS = "planner.json"
"""Written beside a planner adapter trained for a graph: its base model and the weight and floor chosen on dev."""


def save_planner_settings(adapter_dir: str | Path, base_dir: str | Path, weight: float, floor: float, **facts) -> None:
    """Record how to use the planner in ``adapter_dir``, so ``open_planner`` needs nothing else."""
    settings = {"base": str(Path(base_dir).resolve()), "lm_weight": weight, "min_plan_similarity": floor, **facts}
    (Path(adapter_dir) / PLANNER_SETTINGS).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def tuned_reasoner(
    reasoner: PathReasoner,
    base_dir: str | Path,
    adapter_dir: str | Path,
    dev: list[PathQuestionItem],
    threads: int | None = None,
    progress: bool = True,
) -> PathReasoner:
    """A copy of ``reasoner`` whose plans the planner in ``adapter_dir`` also ranks, at the weight and
    answer floor best on ``dev``; both are recorded beside the adapter for :func:`open_planner`."""
    from kgllm.pipelines.synergize.reasoner import PathReasoner

    planner = load_planner(base_dir, adapter_dir, threads=threads)
    tuned = PathReasoner(reasoner.store, reasoner.retriever, lm=planner, config=replace(reasoner.config, lm_weight=1.0))
    weight, floor = choose_weight_and_floor(tuned, dev, progress=progress)
    tuned.config.lm_weight, tuned.config.min_plan_similarity = weight, floor
    save_planner_settings(adapter_dir, base_dir, weight, floor, dev_questions=len(dev))
    return tuned


def open_planner(adapter_dir: str | Path, threads: int | None = None) -> tuple[AdaptedLM, float, float]:
    """A planner trained by ``kgllm train planner``, with the reasoner's ``lm_weight`` and
    ``min_plan_similarity`` chosen for it."""
    path = Path(adapter_dir) / PLANNER_SETTINGS
    if not path.is_file():
        raise ConfigurationError(
            f"{adapter_dir} is not a trained planner (no {PLANNER_SETTINGS}); make one with `kgllm train planner`"
        )
    saved = json.loads(path.read_text(encoding="utf-8"))
    lm = load_planner(saved["base"], adapter_dir, threads=threads)
    return lm, float(saved["lm_weight"]), float(saved["min_plan_similarity"])


def load_planner(base_dir: str | Path, adapter_dir: str | Path, threads: int | None = None) -> AdaptedLM:
    """The base model with the planner adapter (:func:`~kgllm.llm.adapters.load_adapted`); each plan is
    scored followed by the end token, as it was trained."""
    lm = load_adapted(base_dir, adapter_dir, threads=threads, complete_candidates=True)
    lm.name = f"{Path(base_dir).name}+{Path(adapter_dir).name}"
    return lm


def train_planner(
    base_dir: str | Path,
    examples: list[str],
    out_dir: str | Path,
    config: PlannerConfig | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train a LoRA adapter over the frozen base model on ``examples`` (loss on the path and the end
    token only) and save the adapter alone in ``out_dir``; returns steps, seconds, loss and trainable share."""
    config = config or PlannerConfig()
    split = [
        TaskExample(prompt + "\nPath:", path, (path.strip(),))
        for prompt, path in (text.split("\nPath:", 1) for text in examples)
    ]
    result = finetune(
        base_dir, TaskSplits("plan", split, [], []), out_dir, config.adapter, config.run, progress=progress
    )
    log.info("planner: %s", result.summary())
    return {
        "steps": result.steps,
        "seconds": result.seconds,
        "loss": result.final_loss,
        "trainable_parameters": result.trainable_parameters,
        "trainable_percent": result.trainable_percent,
    }


WEIGHTS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
FLOORS = (0.6, 0.5, 0.4, 0.3, 0.2)


def choose_weight_and_floor(
    reasoner: PathReasoner, questions: list[PathQuestionItem], weights=WEIGHTS, floors=FLOORS, progress: bool = True
) -> tuple[float, float]:
    """The model weight and answer floor with the most Hits@1 on the dev ``questions`` (among ties the
    smallest weight and the highest floor). Each question's plans are scored once with the model at
    weight 1, then re-ranked for every weight."""
    grid = [(w, f) for w in weights for f in floors]
    hits = dict.fromkeys(grid, 0)
    for item in tqdm(questions, desc="dev (weights)", disable=not progress):
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
