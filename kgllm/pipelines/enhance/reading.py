"""Teaching kgllm's own small model to read numbered facts and cite them, instead of recalling.

The training data is generated from the graph alone, never from an evaluation set: a walk of
one or two relations from a random entity gives a question (phrased as the default corpus
phrases its planning questions) and its complete answer set; the prompt holds the facts of
every walk to an answer, other facts about the same entities as distractors, and random facts,
numbered in random order (:data:`READER_TEMPLATE`). The target names each answer once, in the
order its fact appears, citing the fact that reaches it: `` Libya [4], Niger [9]``. A share of
the questions ask for something the graph does not hold (an anthem, a time zone), and their
target is :data:`NO_ANSWER`.

The reader is the default model (:func:`kgllm.llm.default.ensure_default_model`) with a longer
context, fine-tuned on these examples for a few minutes and cached by what it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from kgllm.cache import cached_artifact
from kgllm.graph.base import GraphStore
from kgllm.llm.corpus import CorpusBuilder
from kgllm.llm.tasks import TaskExample, TaskSplits, fact_text
from kgllm.pipelines.enhance.prompt import NO_ANSWER, READER_TEMPLATE, number_facts
from kgllm.settings import Settings
from kgllm.types import Triple

log = logging.getLogger(__name__)

READER_CONTEXT = 512
"""Positions of the reader model (the default model has 128): room for two dozen facts and a long answer."""

MOST_ANSWERS = 16
MOST_FACTS = 20
UNANSWERABLE_SHARE = 0.1
ABSENT_ATTRIBUTES = (
    "anthem",
    "national animal",
    "highest mountain",
    "time zone",
    "calling code",
    "national dish",
    "longest river",
    "flag colours",
)
"""Things a question may ask that no graph of kgllm's demo kind holds (the reader learns to decline)."""
ABSENT_FORMS = ("What is the {a} of {e}?", "{e} {a}", "Tell me the {a} of {e}.", "Which {a} does {e} have?")


@dataclass(frozen=True)
class ReaderConfig:
    """How the reader is trained: examples generated, minutes of training, batch and learning rate."""

    examples: int = 6000
    minutes: float = 5.0
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0


class _Walks:
    """The graph's facts indexed for walking either way along a relation."""

    def __init__(self, builder: CorpusBuilder, triples: list[Triple]):
        self.builder = builder
        self.touching: dict[str, list[Triple]] = defaultdict(list)
        for t in triples:
            self.touching[t.head].append(t)
            self.touching[t.tail].append(t)
        self.nodes = sorted(self.touching)

    def step(self, frontier: set[str], relation: str, forward: bool, cls: str) -> dict[str, list[Triple]]:
        """Nodes of class ``cls`` one ``relation`` step from ``frontier``, with the facts that reach each."""
        reached: dict[str, list[Triple]] = defaultdict(list)
        for node in sorted(frontier):
            for t in self.touching[node]:
                if t.relation != relation or (t.head if forward else t.tail) != node:
                    continue
                other = t.tail if forward else t.head
                if (self.builder.answer_class(other) or "thing") == cls:
                    reached[other].append(t)
        return reached


def reading_examples(store: GraphStore, count: int, seed: int = 0) -> list[TaskExample]:
    """``count`` reading examples (prompt with numbered facts and a question -> cited answers)."""
    builder = CorpusBuilder(store, seed=seed)
    rng = random.Random(seed)
    triples = sorted(store.triples(), key=lambda t: (t.head, t.relation, t.tail))
    walks = _Walks(builder, triples)
    examples: list[TaskExample] = []
    while len(examples) < count:
        if rng.random() < UNANSWERABLE_SHARE:
            example = _unanswerable(builder, walks, triples, rng)
        else:
            example = _answerable(builder, walks, triples, rng)
        if example is not None:
            examples.append(example)
    return examples


def _answerable(builder: CorpusBuilder, walks: _Walks, triples: list[Triple], rng: random.Random) -> TaskExample | None:
    node = rng.choice(walks.nodes)
    walk: list[tuple[Triple, bool]] = []
    for _ in range(rng.choice((1, 1, 2))):
        t = rng.choice(walks.touching[node])
        walk.append((t, t.head == node))
        node = t.tail if t.head == node else t.head
    question, _, classes = builder.walk_question(walk)
    start = walk[0][0].head if walk[0][1] else walk[0][0].tail
    frontier, support = {start}, set()
    reaching: dict[str, list[Triple]] = {}
    for (t, forward), cls in zip(walk, classes, strict=True):
        reaching = walks.step(frontier, t.relation, forward, cls)
        support |= {f for facts in reaching.values() for f in facts}
        frontier = set(reaching)
    if not reaching or len(reaching) > MOST_ANSWERS or len(support) > MOST_FACTS - 2:
        return None
    nearby = {t for n in {start, *frontier} for t in walks.touching[n]} - support
    shown = _with_distractors(sorted(support, key=_order), nearby, triples, rng)
    number = {t: i for i, t in enumerate(shown, 1)}
    cited = sorted((min(number[t] for t in facts), answer) for answer, facts in reaching.items())
    target = " " + ", ".join(f"{builder.label(answer)} [{n}]" for n, answer in cited)
    return _example(builder, shown, question, target)


def _unanswerable(
    builder: CorpusBuilder, walks: _Walks, triples: list[Triple], rng: random.Random
) -> TaskExample | None:
    node = rng.choice(walks.nodes)
    form = rng.choice(ABSENT_FORMS)
    question = form.format(a=rng.choice(ABSENT_ATTRIBUTES), e=builder.label(node))
    shown = _with_distractors([], set(walks.touching[node]), triples, rng)
    return _example(builder, shown, question, " " + NO_ANSWER)


def _with_distractors(
    support: list[Triple], nearby: set[Triple], triples: list[Triple], rng: random.Random
) -> list[Triple]:
    """The supporting facts, facts about the same entities and random facts, in random order."""
    total = min(rng.randint(max(8, len(support) + 2), MOST_FACTS), len(triples))  # a small graph has few facts
    near = rng.sample(sorted(nearby, key=_order), min(len(nearby), total - len(support)))
    chosen = set(support) | set(near)
    while len(chosen) < total:
        chosen.add(rng.choice(triples))
    shown = sorted(chosen, key=_order)
    rng.shuffle(shown)
    return shown


def _order(t: Triple) -> tuple[str, str, str]:
    return (t.head, t.relation, t.tail)


def _example(builder: CorpusBuilder, shown: list[Triple], question: str, target: str) -> TaskExample:
    facts = number_facts([fact_text(builder, t) for t in shown])
    prompt = READER_TEMPLATE.format(facts=facts, question=question)
    return TaskExample(prompt, target, (target.strip(),))


# ------------------------------------------------------------------ the cached reader


def reader_model_dir(base_dir: Path, examples: list[TaskExample], config: ReaderConfig, settings: Settings) -> Path:
    """Cache folder named by the base model, the training examples and the reader's settings."""
    digest = hashlib.sha256(base_dir.name.encode())
    for example in examples:
        digest.update(f"{example.prompt}\0{example.target}\0".encode())
    digest.update(json.dumps({**config.__dict__, "context": READER_CONTEXT}, sort_keys=True).encode())
    return settings.cache_dir / "models" / f"graph-reader-{digest.hexdigest()[:16]}"


def ensure_reader_model(
    store: GraphStore, settings: Settings, config: ReaderConfig | None = None, progress: bool = True
) -> Path:
    """The reader's directory, training it first (from the default model) when it is not cached yet."""
    from kgllm.llm.default import ensure_default_model

    config = config or ReaderConfig()
    base_dir = ensure_default_model(store, settings, progress=progress)
    examples = reading_examples(store, config.examples, seed=config.seed)
    out_dir = reader_model_dir(base_dir, examples, config, settings)

    def build(staging: Path) -> None:
        log.warning(
            "training the default model to read facts on %d generated questions (%.1f min); cached in %s",
            len(examples),
            config.minutes,
            out_dir,
        )
        train_reader(base_dir, examples, staging, config, settings.threads, progress)

    return cached_artifact(out_dir, build, marker="config.json")


def train_reader(
    base_dir: Path, examples: list[TaskExample], out_dir: Path, config: ReaderConfig, threads: int, progress: bool
) -> None:
    """Full fine-tuning of ``base_dir``, widened to :data:`READER_CONTEXT` positions, on ``examples``."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kgllm.llm.tuning import RunConfig, finetune

    widened = out_dir / "widened-base"
    model = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
    model.config.max_position_embeddings = READER_CONTEXT  # rotary positions: only the limit changes
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    tokenizer.model_max_length = READER_CONTEXT
    model.save_pretrained(widened)
    tokenizer.save_pretrained(widened)
    n_dev = min(100, len(examples) // 10)
    splits = TaskSplits("read", examples[n_dev:], examples[:n_dev], [])
    run = RunConfig(
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        epochs=None,
        max_minutes=config.minutes,
        warmup_steps=30,
        lr_schedule="cosine",
        min_lr_ratio=0.1,
        length_buckets=True,
        seed=config.seed,
        threads=threads,
    )
    result = finetune(widened, splits, out_dir, adapter=None, run=run, progress=progress)
    shutil.rmtree(widened)
    log.info("%s", result.summary())
