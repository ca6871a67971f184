"""Fine-tuning data built from any graph in a store, one builder per task, split train/dev/test.

Tasks (prompt -> target):

- ``qa``: facts retrieved from the topic entity's neighbourhood, then a question -> its answers;
- ``path``: a question -> the relation path that answers it (the reasoner's plan text);
- ``tail``: ``head | relation |`` -> a tail entity (link prediction as text);
- ``kg2text``: facts about one entity -> one sentence stating them;
- ``text2kg``: that sentence -> the facts (extraction).

Every builder is deterministic under its seed (the store's order does not matter: triples
are sorted first) and the split is by example, 80/10/10 by default.

Example::

    splits = build_task(store, "tail", seed=0)
    splits.train[0]   # TaskExample(prompt="Kenya | located in |", target=" Eastern Africa", answers=(...))
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kgllm.exceptions import ConfigurationError, InputError
from kgllm.graph.base import GraphStore
from kgllm.llm.corpus import CorpusBuilder
from kgllm.types import Triple


@dataclass(frozen=True)
class TaskExample:
    """A prompt, the continuation trained on, and every continuation counted correct (stripped)."""

    prompt: str
    target: str
    answers: tuple[str, ...]

    def is_correct(self, prediction: str) -> bool:
        return prediction.strip() in self.answers


@dataclass(frozen=True)
class TaskSplits:
    task: str
    train: list[TaskExample]
    dev: list[TaskExample]
    test: list[TaskExample]


def fact_text(builder: CorpusBuilder, t: Triple) -> str:
    return f"{builder.label(t.head)} {builder.label(t.relation)} {builder.label(t.tail)}"


def _grouped(triples: list[Triple]) -> dict[tuple[str, str], list[str]]:
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for t in triples:
        grouped[(t.head, t.relation)].append(t.tail)
    return grouped


def qa_examples(builder: CorpusBuilder, triples: list[Triple], facts_in_prompt: int = 6) -> Iterator[TaskExample]:
    """The answer facts and other facts about the same entity, shuffled, before the question."""
    by_head: dict[str, list[Triple]] = defaultdict(list)
    for t in triples:
        by_head[t.head].append(t)
    for (head, relation), tails in sorted(_grouped(triples).items()):
        answers = sorted(builder.label(t) for t in tails)
        gold = [t for t in by_head[head] if t.relation == relation]
        others = [t for t in by_head[head] if t.relation != relation]
        shown = gold[:facts_in_prompt] + builder.rng.sample(
            others, min(len(others), max(0, facts_in_prompt - len(gold)))
        )
        builder.rng.shuffle(shown)
        facts = " ".join(fact_text(builder, t) + "." for t in shown)
        question = f"What is {builder.label(head)} {builder.label(relation)}?"
        joined = ", ".join(answers)
        yield TaskExample(
            f"Facts: {facts}\nQuestion: {question}\nAnswer:", " " + joined, tuple(dict.fromkeys((joined, *answers)))
        )


def path_examples(builder: CorpusBuilder, triples: list[Triple]) -> Iterator[TaskExample]:
    """The corpus's question -> relation-path examples, split at ``Path:``."""
    for text in dict.fromkeys(builder.plans(triples)):
        prompt, path = text.split("\nPath:", 1)
        yield TaskExample(prompt + "\nPath:", path, (path.strip(),))


def tail_examples(builder: CorpusBuilder, triples: list[Triple]) -> Iterator[TaskExample]:
    for (head, relation), tails in sorted(_grouped(triples).items()):
        answers = tuple(sorted(builder.label(t) for t in tails))
        yield TaskExample(f"{builder.label(head)} | {builder.label(relation)} |", " " + answers[0], answers)


def _sentences(builder: CorpusBuilder, triples: list[Triple], most: int = 3) -> Iterator[tuple[list[Triple], str]]:
    """Up to ``most`` facts about one head and one sentence stating them all."""
    by_head: dict[str, list[Triple]] = defaultdict(list)
    for t in triples:
        by_head[t.head].append(t)
    for head in sorted(by_head):
        facts = builder.rng.sample(by_head[head], min(most, len(by_head[head])))
        clauses = [f"{builder.label(t.relation)} {builder.label(t.tail)}" for t in facts]
        yield facts, f"{builder.label(head)} {' and '.join(clauses)}."


def _facts_text(builder: CorpusBuilder, facts: list[Triple]) -> str:
    return "; ".join(
        f"({builder.label(t.head)} | {builder.label(t.relation)} | {builder.label(t.tail)})" for t in facts
    )


def kg2text_examples(builder: CorpusBuilder, triples: list[Triple]) -> Iterator[TaskExample]:
    for facts, sentence in _sentences(builder, triples):
        yield TaskExample(f"Facts: {_facts_text(builder, facts)}\nSentence:", " " + sentence, (sentence,))


def text2kg_examples(builder: CorpusBuilder, triples: list[Triple]) -> Iterator[TaskExample]:
    for facts, sentence in _sentences(builder, triples):
        target = _facts_text(builder, facts)
        yield TaskExample(f"Sentence: {sentence}\nFacts:", " " + target, (target,))


BUILDERS: dict[str, Callable[[CorpusBuilder, list[Triple]], Iterator[TaskExample]]] = {
    "qa": qa_examples,
    "path": path_examples,
    "tail": tail_examples,
    "kg2text": kg2text_examples,
    "text2kg": text2kg_examples,
}
TASKS = tuple(BUILDERS)


def build_task(
    store: GraphStore, task: str, seed: int = 0, dev: float = 0.1, test: float = 0.1, limit: int | None = None
) -> TaskSplits:
    """Examples of ``task`` from every fact in ``store``, shuffled under ``seed`` and split
    train/dev/test (``limit``: keep only that many examples before splitting)."""
    if task not in BUILDERS:
        raise ConfigurationError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if not (0 <= dev < 1 and 0 <= test < 1 and dev + test < 1):
        raise ConfigurationError(f"dev and test fractions must be in [0, 1) and sum below 1, got {dev} and {test}")
    builder = CorpusBuilder(store, seed=seed)
    triples = sorted(store.triples(), key=lambda t: (t.head, t.relation, t.tail))
    if not triples:
        raise InputError("the store holds no facts to build task data from")
    examples = list(BUILDERS[task](builder, triples))
    random.Random(seed).shuffle(examples)
    examples = examples[:limit] if limit else examples
    n_dev, n_test = round(dev * len(examples)), round(test * len(examples))
    n_train = len(examples) - n_dev - n_test
    return TaskSplits(task, examples[:n_train], examples[n_train : n_train + n_dev], examples[n_train + n_dev :])
