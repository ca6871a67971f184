"""Training text built from a graph: verbalized facts, questions with answers,
and questions with the relation path that answers them.

The relation-path format here is the one the reasoner scores at question time
(``plan_prompt`` + ``path_text``), so a model trained on this corpus plans paths.
Everything is deterministic under a seed.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from kgllm.graph.base import GraphStore
from kgllm.types import Triple

INVERSE_MARK = "^"


@dataclass(frozen=True)
class Hop:
    """One step of a relation path: follow ``relation`` from head to tail (forward) or back."""

    relation: str
    forward: bool = True


def plan_prompt(question: str) -> str:
    return f"Question: {question.strip()}\nPath:"


def path_text(relation_labels: Sequence[str], forward: Sequence[bool], answer_class: str | None) -> str:
    """`` neighbor of > located in > subregion``: the continuation scored after ``plan_prompt``."""
    steps = [label if fwd else INVERSE_MARK + label for label, fwd in zip(relation_labels, forward)]
    if answer_class:
        steps.append(answer_class)
    return " " + " > ".join(steps)


def plural(word: str) -> str:
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


# Generic question shapes over relation and class labels; {s}: subject label, {r}: relation label,
# {c}/{cs}: answer class label, singular/plural.
FORWARD_1 = ("What is {s} {r}?", "Which {c} is {s} {r}?", "{s} is {r} which {c}?", "What {c} is {s} {r}?")
INVERSE_1 = ("Which {cs} are {r} {s}?", "What is {r} {s}?", "Name the {cs} {r} {s}.", "Which {c} is {r} {s}?")
TWO_HOP = ("Which {c} is {r2} the things {s} is {r1}?", "What {cs} are {r2} what {s} is {r1}?",
           "{s} is {r1} things that are {r2} which {cs}?")


class CorpusBuilder:
    """Builds training texts from a store; labels and classes are read once."""

    def __init__(self, store: GraphStore, seed: int = 0, max_per_kind: int = 20_000):
        self.store = store
        self.rng = random.Random(seed)
        self.max_per_kind = max_per_kind
        self._labels: dict[str, str] = {}
        self._class_of: dict[str, str | None] = {}

    def label(self, node: str) -> str:
        if node not in self._labels:
            self._labels[node] = self.store.label(node)
        return self._labels[node]

    def answer_class(self, node: str) -> str | None:
        if node not in self._class_of:
            entity = self.store.entity(node)
            self._class_of[node] = self.label(entity.types[0]) if entity and entity.types else None
        return self._class_of[node]

    def texts(self) -> list[str]:
        """Facts, one-hop QA and path-planning examples, shuffled."""
        # sorted: a store's iteration order may change between processes, the corpus must not
        triples = sorted(self.store.triples(), key=lambda t: (t.head, t.relation, t.tail))
        texts = list(self.facts(triples)) + list(self.question_answers(triples)) + list(self.plans(triples))
        self.rng.shuffle(texts)
        return texts

    def facts(self, triples: list[Triple]) -> Iterator[str]:
        for t in triples:
            yield f"{self.label(t.head)} {self.label(t.relation)} {self.label(t.tail)}."
        for entity in sorted(self.store.entities(), key=lambda e: e.id):
            if entity.types:
                yield f"{entity.label} is a {self.label(entity.types[0])}."
            for alias in entity.aliases:
                yield f"{alias} is another name for {entity.label}."

    def question_answers(self, triples: list[Triple]) -> Iterator[str]:
        grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
        for t in triples:
            grouped[(t.head, t.relation)].append(t.tail)
        for (head, relation), tails in self._sample(sorted(grouped.items())):
            answers = ", ".join(sorted(self.label(t) for t in tails))
            yield f"Question: What is {self.label(head)} {self.label(relation)}?\nAnswer: {answers}"

    def plans(self, triples: list[Triple]) -> Iterator[str]:
        """Question -> relation path examples for one- and two-hop paths."""
        for t in self._sample(triples):
            yield from self._one_hop(t)
        by_head: dict[str, list[Triple]] = defaultdict(list)
        for t in triples:
            by_head[t.head].append(t)
        for first in self._sample(triples):
            follow = by_head.get(first.tail)
            if follow:
                yield self._two_hop(first, self.rng.choice(follow))

    def _one_hop(self, t: Triple) -> Iterator[str]:
        r = self.label(t.relation)
        for subject, answer, forward, shapes in ((t.head, t.tail, True, FORWARD_1), (t.tail, t.head, False, INVERSE_1)):
            c = self.answer_class(answer) or "thing"
            question = self.rng.choice(shapes).format(s=self.label(subject), r=r, c=c, cs=plural(c))
            yield plan_prompt(question) + path_text([r], [forward], c)

    def _two_hop(self, first: Triple, second: Triple) -> str:
        r1, r2 = self.label(first.relation), self.label(second.relation)
        c = self.answer_class(second.tail) or "thing"
        question = self.rng.choice(TWO_HOP).format(s=self.label(first.head), r1=r1, r2=r2, c=c, cs=plural(c))
        return plan_prompt(question) + path_text([r1, r2], [True, True], c)

    def _sample(self, items: list) -> list:
        return items if len(items) <= self.max_per_kind else self.rng.sample(items, self.max_per_kind)
