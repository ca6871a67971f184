"""Training text built from a graph: verbalized facts, questions with answers,
and questions with the relation path that answers them.

The relation-path format here is the one the reasoner scores at question time
(``plan_prompt`` + ``path_text``), so a model trained on this corpus plans paths.
Everything is deterministic under a seed.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from kgllm.graph.base import GraphStore
from kgllm.types import Triple

INVERSE_MARK = "^"
_TOKENIZED_POSSESSIVE = re.compile(r" 's\b")


@dataclass(frozen=True)
class Hop:
    """One step of a relation path: follow ``relation`` from head to tail (forward) or back."""

    relation: str
    forward: bool = True


def plan_prompt(question: str) -> str:
    """The question as the planner reads it; tokenized text ("Chad 's neighbours") is joined back."""
    question = _TOKENIZED_POSSESSIVE.sub("'s", " ".join(question.split()))
    return f"Question: {question}\nPath:"


def path_text(relation_labels: Sequence[str], forward: Sequence[bool], classes: Sequence[str | None]) -> str:
    """`` ^neighbor of > country > located in > subregion``: relations (``^`` when walked backwards),
    each followed by the class it reaches; the continuation scored after ``plan_prompt``."""
    steps = []
    for label, fwd, cls in zip(relation_labels, forward, classes):
        steps.append(label if fwd else INVERSE_MARK + label)
        steps.append(cls or "thing")
    return " " + " > ".join(steps)


def plural(word: str) -> str:
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def clause(phrase: str, noun: str, relation: str, forward: bool, plural_subject: bool) -> str:
    """``the regions that Chad is located in`` (forward) or ``the countries that border Chad`` (inverse)."""
    first = relation.split()[0]
    verb = relation if first in ("is", "are") or first.endswith("s") else f"is {relation}"
    if forward:
        if plural_subject:
            verb = re.sub(r"^is ", "are ", verb)
        return f"the {noun} that {phrase} {verb}"
    return f"the {noun} that {re.sub(r'^is ', 'are ', verb)} {phrase}"


def noun_chain(topic: str, relations: Sequence[str]) -> str | None:
    """``the neighbors of the neighbors of Chad`` when every relation reads as a noun (``neighbor of``)."""
    if not all(r.endswith(" of") for r in relations):
        return None
    return " ".join(f"the {plural(r[: -len(' of')])} of" for r in reversed(relations)) + f" {topic}"


QUESTION_FORMS = ("Which {rest}?", "What are {np}?", "{np}", "Name {np}.", "List {np}.", "Tell me {np}.")


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
        """Question -> relation path examples: walks of one and two steps, either way along each edge."""
        touching: dict[str, list[Triple]] = defaultdict(list)
        for t in triples:
            touching[t.head].append(t)
            touching[t.tail].append(t)
        starts = sorted(touching)
        for _ in range(min(self.max_per_kind, 4 * len(triples))):
            node = self.rng.choice(starts)
            walk: list[tuple[Triple, bool]] = []
            for _ in range(self.rng.choice((1, 1, 2))):
                t = self.rng.choice(touching[node])
                forward = t.head == node
                walk.append((t, forward))
                node = t.tail if forward else t.head
            yield self._plan_example(walk)

    def _plan_example(self, walk: list[tuple[Triple, bool]]) -> str:
        question, relations, classes = self.walk_question(walk)
        return plan_prompt(question) + path_text(relations, [f for _, f in walk], classes)

    def walk_question(self, walk: list[tuple[Triple, bool]]) -> tuple[str, list[str], list[str]]:
        """A question whose answers are where ``walk`` ends (each step a triple and whether it is walked
        forward), with the relation labels walked and the class named at each step."""
        start = walk[0][0].head if walk[0][1] else walk[0][0].tail
        phrase = self._name(start, entity=True)
        relations, classes = [], []
        for i, (t, forward) in enumerate(walk):
            reached = t.tail if forward else t.head
            cls = self.answer_class(reached) or "thing"
            relation = self.label(t.relation)
            relations.append(relation)
            classes.append(cls)
            phrase = clause(phrase, plural(cls), self._name(t.relation), forward, i > 0)
        chain = noun_chain(self._name(start, entity=True), relations) if all(f for _, f in walk) else None
        np_ = chain if chain and self.rng.random() < 0.5 else phrase
        form = self.rng.choice(QUESTION_FORMS)
        return form.format(np=np_, rest=np_.removeprefix("the ")), relations, classes

    def _name(self, node: str, entity: bool = False) -> str:
        """The label, or one of the aliases, of a node."""
        described = self.store.describe(node)
        return self.rng.choice((described.label, described.label, *described.aliases))

    def _sample(self, items: list) -> list:
        return items if len(items) <= self.max_per_kind else self.rng.sample(items, self.max_per_kind)
