"""What a graph's schema offers a question parser: relations and classes, their names, and how they are used.

Read once from any :class:`~kgllm.graph.base.GraphStore` through its read methods: the
relations (``relations``), the classes (the types of ``entities``), the names of both
(``describe``: label and aliases), and, from a sample of each relation's facts, the classes
of their heads and tails and whether the relation is stored symmetrically.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from kgllm.graph.base import GraphStore
from kgllm.llm.corpus import plural
from kgllm.types import Triple


@dataclass
class RelationInfo:
    """A relation: its names, the classes its heads and tails belong to, and whether it is symmetric."""

    id: str
    names: tuple[str, ...]
    head_classes: Counter = field(default_factory=Counter)
    tail_classes: Counter = field(default_factory=Counter)
    symmetric: bool = False


@dataclass
class ClassInfo:
    """A class: its names (singular and plural) and how many entities it has."""

    id: str
    names: tuple[str, ...]
    size: int = 0


@dataclass
class Schema:
    """Relations and classes of one graph (see the module docstring)."""

    relations: dict[str, RelationInfo]
    classes: dict[str, ClassInfo]

    @classmethod
    def from_store(cls, store: GraphStore, sample: int = 5000) -> Schema:
        """Profile ``store``: every class and relation, and up to ``sample`` facts per relation."""
        sizes: Counter = Counter()
        types_of: dict[str, tuple[str, ...]] = {}
        for entity in store.entities():
            sizes.update(entity.types)
            types_of[entity.id] = entity.types
        classes = {}
        for c in sizes:
            d = store.describe(c)
            names = tuple(dict.fromkeys(n for n in (d.label, *d.aliases) if n))
            classes[c] = ClassInfo(c, names, sizes[c])
        relations = {}
        for r in store.relations():
            d = store.describe(r)
            info = RelationInfo(r, tuple(dict.fromkeys(n for n in (d.label, *d.aliases) if n)))
            facts = set(itertools.islice(store.triples(relation=r), sample))
            for t in facts:
                info.head_classes.update(types_of.get(t.head, ()))
                info.tail_classes.update(types_of.get(t.tail, ()))
            reversed_ = sum(1 for t in facts if Triple(t.tail, t.relation, t.head) in facts)
            info.symmetric = bool(facts) and reversed_ >= 0.9 * len(facts)
            relations[r] = info
        return cls(relations, classes)

    def class_words(self) -> dict[str, str]:
        """Every class name, singular and plural, lower case -> class id."""
        words: dict[str, str] = {}
        for c in sorted(self.classes.values(), key=lambda c: -c.size):
            for name in c.names:
                words.setdefault(name.lower(), c.id)
                words.setdefault(plural(name.lower()), c.id)
        return words
