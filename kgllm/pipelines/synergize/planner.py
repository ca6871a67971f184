"""The trained relation-path planner: a LoRA adapter over the graph's base model.

Training examples are ``plan_prompt(question) + path_text(gold path)``, exactly the
text the reasoner scores for a plan, so the adapter learns to rank plans::

    examples = planning_examples(store, read_pathquestion("PQ-2H.train.txt"))
    train_planner(base_dir, examples, out_dir, PlannerConfig(max_minutes=3))
    reasoner = PathReasoner(store, retriever, lm=load_planner(base_dir, out_dir))

Each path ends with the tokenizer's end-of-sequence token, in training and in scoring,
so a plan that stops early (a prefix of the gold path) is not as likely as the gold one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kgllm.datasets.pathquestion import PathQuestionItem
from kgllm.exceptions import InputError
from kgllm.graph.base import GraphStore
from kgllm.graph.rdflib_store import to_iri
from kgllm.llm.adapters import LLAMA_LINEAR, AdaptedLM, AdapterConfig, load_adapted
from kgllm.llm.corpus import path_text, plan_prompt
from kgllm.llm.tasks import TaskExample, TaskSplits
from kgllm.llm.tuning import RunConfig, finetune

log = logging.getLogger(__name__)


@dataclass
class PlannerConfig:
    """LoRA and training settings of the planner (trained by :func:`kgllm.llm.tuning.finetune`)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LINEAR))
    learning_rate: float = 2e-3
    batch_size: int = 16
    epochs: float = 16
    max_minutes: float = 3.0
    warmup_steps: int = 20
    weight_decay: float = 0.01
    max_grad_norm: float = 0.0
    """AdamW's usual decay and no clipping (the gradient norms stay under 1 here)."""
    threads: int = 2
    seed: int = 0


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
    adapter = AdapterConfig(
        method="lora",
        rank=config.rank,
        alpha=config.alpha,
        dropout=config.dropout,
        target_modules=list(config.target_modules),
    )
    run = RunConfig(
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        epochs=config.epochs,
        max_minutes=config.max_minutes,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        threads=config.threads,
        seed=config.seed,
        save_steps=10_000,
    )
    split = [
        TaskExample(prompt + "\nPath:", path, (path.strip(),))
        for prompt, path in (text.split("\nPath:", 1) for text in examples)
    ]
    result = finetune(base_dir, TaskSplits("plan", split, [], []), out_dir, adapter, run, progress=progress)
    log.info("planner: %s", result.summary())
    return {
        "steps": result.steps,
        "seconds": result.seconds,
        "loss": result.final_loss,
        "trainable_parameters": result.trainable_parameters,
        "trainable_percent": result.trainable_percent,
    }
