"""Relation-chain questions generated from a graph's own facts and schema, to train the planner
on any graph without benchmark questions.

Walks of 1 to ``max_hops`` stored facts are drawn with relations spread evenly (each step picks
a relation, then a fact of it), so a rare relation is asked about as often as a common one. A
walk is said in English from its relations' phrases: the relation's label and its aliases in
the graph, and for relations common to graphs of people, places and works, the phrase bank
below. A label that reads as a verb ("located in") is said as a clause ("the subregion that
Chad is located in").

Question frames come in families. ``train`` draws from the first two, ``dev`` from the third
only, so the settings chosen on ``dev`` are chosen on phrasings the planner never saw::

    items = chain_questions(store, 4000, max_hops=2, split="train")
    examples = planning_examples(store, items)
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from kgllm.datasets.pathquestion import PathQuestionItem
from kgllm.exceptions import InputError
from kgllm.graph.base import GraphStore
from kgllm.graph.labels import local_name
from kgllm.llm.corpus import clause

SPLITS = ("train", "dev")


@dataclass(frozen=True)
class RelationPhrases:
    """How English names a relation: nouns for its object ("the spouse of X"), and questions that
    ask for the object without a noun, with ``{x}`` for the subject ("what does {x} do")."""

    nouns: tuple[str, ...]
    questions: tuple[str, ...] = ()


# Keyed by the relation's label (lower case, "_" read as a space). Written for relations that
# graphs of people, places, organisations and works commonly hold; any other relation is said
# by its own label and aliases.
PHRASE_BANK: dict[str, RelationPhrases] = {
    "spouse": RelationPhrases(
        ("spouse", "wife", "husband", "partner", "other half", "consort", "significant other", "better half"),
        ("who is {x} married to", "who did {x} marry"),
    ),
    "children": RelationPhrases(
        ("children", "child", "son", "daughter", "kid", "offspring", "descendant", "successor"),
        ("who are the children of {x}",),
    ),
    "parents": RelationPhrases(
        ("parents", "parent", "father", "mother", "dad", "mom", "mum"), ("who are the parents of {x}",)
    ),
    "gender": RelationPhrases(("gender", "sex"), ("is {x} male or female",)),
    "nationality": RelationPhrases(
        ("nationality", "citizenship", "country", "home country"), ("which country is {x} from", "where is {x} from")
    ),
    "profession": RelationPhrases(
        ("profession", "occupation", "job", "career", "line of work", "trade", "work"),
        ("what does {x} do", "what does {x} do for a living", "what is {x} working as", "what is {x}'s job"),
    ),
    "religion": RelationPhrases(
        ("religion", "faith", "belief", "religious affiliation"), ("what does {x} believe in",)
    ),
    "ethnicity": RelationPhrases(("ethnicity", "ethnic group", "race", "ethnic background", "origin")),
    "place of birth": RelationPhrases(
        ("place of birth", "birthplace", "hometown", "birth place", "native place"),
        ("where was {x} born", "where does {x} come from"),
    ),
    "place of death": RelationPhrases(
        ("place of death", "death place", "final resting place"), ("where did {x} die", "where did {x} pass away")
    ),
    "cause of death": RelationPhrases(
        ("cause of death", "death cause", "reason of death"),
        ("how did {x} die", "what killed {x}", "what did {x} die of", "what caused {x}'s death"),
    ),
    "institution": RelationPhrases(
        ("institution", "employer", "university", "school", "workplace", "college"),
        ("where does {x} work", "where did {x} study", "which institution is {x} with"),
    ),
    "location": RelationPhrases(
        ("location", "residence", "home", "address", "place of residence", "current location"),
        ("where does {x} live", "where is {x} located", "where is {x} now"),
    ),
    "capital": RelationPhrases(("capital", "capital city", "seat of government")),
    "neighbor of": RelationPhrases(
        ("neighbors", "neighbours", "neighbouring countries", "bordering countries"),
        ("which countries border {x}", "what does {x} border"),
    ),
    "located in": RelationPhrases(("location", "region", "area"), ("where is {x}", "where is {x} located")),
    "language": RelationPhrases(("language", "official language", "tongue"), ("what language does {x} speak",)),
    "currency": RelationPhrases(("currency", "money"), ("what money is used in {x}",)),
    "author": RelationPhrases(("author", "writer"), ("who wrote {x}",)),
    "director": RelationPhrases(("director", "filmmaker"), ("who directed {x}",)),
    "genre": RelationPhrases(("genre", "style", "kind")),
    "employer": RelationPhrases(("employer", "company", "workplace"), ("who does {x} work for", "where does {x} work")),
    "educated at": RelationPhrases(("alma mater", "school", "university"), ("where did {x} study",)),
    "member of": RelationPhrases(("organisation", "group", "membership"), ("what is {x} a member of",)),
    "award": RelationPhrases(("award", "prize", "honour"), ("what award did {x} win",)),
}

# Frames around the noun phrase of the whole chain ({np}: "the wife of Chad's king"). Family 2 is dev only.
NOUN_FRAMES: tuple[tuple[str, ...], ...] = (
    ("what is {np}?", "who is {np}?", "{np}?", "what is {np} ?"),
    ("tell me {np}.", "name {np}.", "which is {np}?", "give me {np}"),
    ("what's {np}?", "do you know {np}?", "I want to know {np}", "{np} is?"),
)
# A relation's own question ("what does {x} do") is used by family 1 and 2, split by its position.
_PREPOSITION_END = re.compile(r"\b(in|of|by|at|on|to|from|for|with|as|into)$")


def chain_questions(
    store: GraphStore, count: int, max_hops: int = 2, split: str = "train", seed: int = 0, max_facts: int = 200_000
) -> list[PathQuestionItem]:
    """``count`` questions, each asking for the end of a walk of 1 to ``max_hops`` stored facts,
    with its gold path and every entity the same relations reach from the walk's start."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    if not 1 <= max_hops <= 4:
        raise InputError("max_hops must be between 1 and 4")
    walker = _Walker(store, max_facts, random.Random(f"{seed}-{split}"))
    families = (0, 1) if split == "train" else (2,)
    items: list[PathQuestionItem] = []
    attempts = 0
    while len(items) < count and attempts < 20 * count:
        attempts += 1
        path = walker.walk(walker.rng.randint(1, max_hops))
        if path:
            items.append(walker.item(path, walker.rng.choice(families)))
    if not items:
        raise InputError("the graph has no facts between entities to generate questions from")
    return items


def chain_question_splits(
    store: GraphStore, count: int, max_hops: int = 2
) -> tuple[list[PathQuestionItem], list[PathQuestionItem]]:
    """``count`` train questions, and a tenth as many (at least 50) dev questions in the frames
    train never uses: what the planner trains on and has its weight chosen on."""
    train = chain_questions(store, count, max_hops=max_hops, split="train")
    return train, chain_questions(store, max(count // 10, 50), max_hops=max_hops, split="dev")


class _Walker:
    def __init__(self, store: GraphStore, max_facts: int, rng: random.Random):
        self.store = store
        self.rng = rng
        self.out: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        by_relation: dict[str, list[str]] = defaultdict(list)
        for n, triple in enumerate(store.triples()):
            if n >= max_facts:
                break
            self.out[triple.head][triple.relation].append(triple.tail)
            by_relation[triple.relation].append(triple.head)
        for edges in self.out.values():  # the store's order may change from run to run; the questions may not
            for tails in edges.values():
                tails.sort()
        self.starts = {r: sorted(set(heads)) for r, heads in by_relation.items()}
        self.relations = sorted(self.starts)
        self._labels: dict[str, str] = {}

    def label(self, node: str) -> str:
        if node not in self._labels:
            self._labels[node] = self.store.label(node)
        return self._labels[node]

    def walk(self, hops: int) -> list[str] | None:
        """``[e0, r1, e1, ...]``: each step a relation chosen evenly, then one of its facts."""
        if not self.relations:
            return None
        relation = self.rng.choice(self.relations)
        path = [self.rng.choice(self.starts[relation])]
        for _ in range(hops):
            if len(path) > 1:
                choices = sorted(self.out[path[-1]])
                if not choices:
                    return None
                relation = self.rng.choice(choices)
            tail = self.rng.choice(self.out[path[-1]][relation])
            if tail in path[0::2]:
                return None
            path += [relation, tail]
        return path

    def reached(self, start: str, relations: list[str]) -> set[str]:
        nodes = {start}
        for relation in relations:
            nodes = {t for n in nodes for t in self.out[n].get(relation, ())}
        return nodes

    def item(self, path: list[str], family: int) -> PathQuestionItem:
        relations = path[1::2]
        question = self.say(self.label(path[0]), relations, path[2::2], family)
        answers = frozenset(local_name(n) for n in self.reached(path[0], relations))
        return PathQuestionItem(question, answers, tuple(local_name(p) for p in path))

    def say(self, topic: str, relations: list[str], reached: list[str], family: int) -> str:
        """The chain as a noun phrase, each hop said in a randomly chosen form, inside a frame of ``family``."""
        subject = topic
        for relation, node in zip(relations[:-1], reached):
            subject = self.hop(relation, node)(subject)
        last = self.phrases(relations[-1])
        own = [q for i, q in enumerate(last.questions) if family and i % 2 == family - 1]
        if own and self.rng.random() < 0.4:
            return self.rng.choice(own).format(x=subject) + "?"
        return self.rng.choice(NOUN_FRAMES[family]).format(np=self.hop(relations[-1], reached[-1])(subject))

    def hop(self, relation: str, node: str) -> Callable[[str], str]:
        """A function from the subject's phrase to the phrase of the relation's object."""
        types = (self.store.entity(node) or self.store.describe(node)).types
        kind = self.label(types[0]).lower() if types else None
        nouns = self.phrases(relation).nouns + ((kind,) if kind else ())
        if not nouns:
            verb = self.label(relation)
            return lambda x: clause(x, "thing", verb, forward=True, plural_subject=False)
        noun = self.rng.choice(nouns)
        if self.rng.random() < 0.5:
            return lambda x: f"the {noun} of {x}" if x.startswith("the ") else f"{_possessive(x)} {noun}"
        return lambda x: f"the {noun} of {x}"

    def phrases(self, relation: str) -> RelationPhrases:
        label = self.label(relation).replace("_", " ").lower().strip()
        known = PHRASE_BANK.get(label)
        if known:
            return known
        names = [label, *(a.lower() for a in self.store.describe(relation).aliases)]
        nouns = tuple(n for n in dict.fromkeys(names) if not _PREPOSITION_END.search(n) and not n.startswith("has "))
        return RelationPhrases(nouns)


def _possessive(phrase: str) -> str:
    return phrase + ("'" if phrase.endswith("s") and " " in phrase else "'s")
