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
import logging
from collections.abc import Iterable, Sequence
from dataclasses import field
from pathlib import Path

from kgllm.datasets.pathquestion import PathQuestionItem
from kgllm.exceptions import ConfigurationError, InputError
from kgllm.graph.base import GraphStore
from kgllm.graph.rdflib_store import to_iri
from kgllm.llm.adapters import LLAMA_LINEAR, AdaptedLM, AdapterConfig, load_adapted
from kgllm.llm.configs import ConfigMixin, check_config, config
from kgllm.llm.corpus import path_text, plan_prompt
from kgllm.llm.tasks import TaskExample, TaskSplits
from kgllm.llm.tuning import RunConfig, finetune

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
