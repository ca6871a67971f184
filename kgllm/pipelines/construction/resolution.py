"""Entity resolution and relation normalization for extracted triples.

A mention is matched against the store first, then against the other mentions of
the batch, by the first tier that decides, strictest first:

1. ``exact`` - the label or an alias, ignoring case and separators (``sherlock_holmes``);
2. ``acronym`` - an upper-case mention equal to the initials of one name (``USA``);
3. ``fuzzy`` - one name a typo away (one edit per five letters of each word) or in another word order;
4. ``partial`` - the mention's words are part of exactly one longer name (``Holmes``);
5. ``embedding`` - one name whose sentence vector is close enough, clearly closer than the next.

A tier decides only when exactly one entity qualifies: ambiguous evidence leaves
the mention a new entity. Every merge is returned as a :class:`Merge` (logged by
the caller) and can be undone by keeping that mention apart from that entity.

Relations are normalized to the store's vocabulary the same way (exact label, then
embedding similarity); a new relation is minted only when nothing matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from rapidfuzz import fuzz
from rapidfuzz.distance import OSA

from kgllm.graph.base import GraphStore
from kgllm.graph.labels import normalize
from kgllm.graph.rdflib_store import to_iri
from kgllm.retrieval.encoder import Encoder

_NAME_WORDS = re.compile(r"[^\W_]+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_STOP = frozenset({"of", "the", "and", "de", "la", "le", "du", "des", "for", "in", "on", "at", "a", "an"})


@dataclass(frozen=True, slots=True)
class Merge:
    """A mention resolved to an entity it is not written as, and the evidence."""

    mention: str
    entity: str
    method: str
    score: float


@dataclass
class ResolverConfig:
    """Thresholds of the tiers (scores: rapidfuzz 0-100, cosine -1..1)."""

    reorder_threshold: float = 95.0  # rapidfuzz token_sort_ratio for the same words in another order
    min_fuzzy_length: int = 5  # shorter names differ by one letter too easily (Mali, Bali)
    letters_per_edit: int = 5  # one typo allowed per this many letters (Kenia -> Kenya, not Niger -> Nigeria)
    min_partial_length: int = 4
    embedding_threshold: float = 0.92
    embedding_margin: float = 0.03
    keep_apart: set[tuple[str, str]] = field(default_factory=set)  # (normalized mention, entity id)


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where a mention went: an entity id, its label, and the merge when it joined another name."""

    entity: str
    label: str
    merge: Merge | None = None


def new_entity_id(name: str) -> str:
    return str(to_iri(name))


def new_relation_id(name: str) -> str:
    """A camelCase id minted in the default namespace (``birth place`` -> ``birthPlace``)."""
    words = _NAME_WORDS.findall(_CAMEL.sub(" ", name))
    return str(to_iri(words[0].lower() + "".join(w[:1].upper() + w[1:] for w in words[1:]) if words else name))


def acronym(name: str) -> str:
    return "".join(w[0] for w in _NAME_WORDS.findall(name) if w.lower() not in _STOP).upper()


def _typos_apart(key: str, name: str, letters_per_edit: int) -> bool:
    """Word by word, each word at most one edit per ``letters_per_edit`` letters from the name's
    (South Africa is not South America); names of other word counts may differ by one edit."""
    words, name_words = key.split(), name.split()
    if len(words) != len(name_words):
        return OSA.distance(key, name) <= 1
    return all(OSA.distance(w, n) <= len(n) // letters_per_edit for w, n in zip(words, name_words))


class NameTable:
    """Names (label or alias) of candidate entities, with the lookups the tiers need."""

    def __init__(self, names: Iterable[tuple[str, str]], encode: Callable[[list[str]], np.ndarray] | None):
        self.names = list(dict.fromkeys(names))  # (name, entity id)
        self.keys = [normalize(n) for n, _ in self.names]
        self.encode = encode
        self._vectors: np.ndarray | None = None

    def by_tier(self, mention: str, config: ResolverConfig) -> tuple[str, str, float] | None:
        """(entity id, tier, score) of the first tier that singles out one entity."""
        key = normalize(mention)
        if not key:
            return None
        tiers = (
            ("exact", self._exact),
            ("acronym", self._acronym),
            ("fuzzy", self._fuzzy),
            ("partial", self._partial),
            ("embedding", self._embedding),
        )
        for tier, lookup in tiers:
            found = {i: s for i, s in lookup(mention, key, config).items() if (key, i) not in config.keep_apart}
            if len(found) == 1:
                [(entity, score)] = found.items()
                return entity, tier, score
            if len(found) > 1:
                return None  # ambiguous: the strictest tier that matched says no
        return None

    def _exact(self, mention, key, config) -> dict[str, float]:
        return {i: 1.0 for k, (_, i) in zip(self.keys, self.names) if k == key}

    def _acronym(self, mention, key, config) -> dict[str, float]:
        if not (mention.isupper() and mention.isalpha() and 3 <= len(mention) <= 6):  # two letters say too little
            return {}
        return {i: 1.0 for n, i in self.names if len(n.split()) > 1 and acronym(n) == mention}

    def _fuzzy(self, mention, key, config) -> dict[str, float]:
        if len(key) < config.min_fuzzy_length:
            return {}
        found: dict[str, float] = {}
        for k, (_, i) in zip(self.keys, self.names):
            if len(k) < config.min_fuzzy_length:
                continue
            if (
                _typos_apart(key, k, config.letters_per_edit)
                or fuzz.token_sort_ratio(key, k) >= config.reorder_threshold
            ):
                found[i] = max(found.get(i, 0.0), 1 - OSA.distance(key, k) / max(len(key), len(k)))
        return found

    def _partial(self, mention, key, config) -> dict[str, float]:
        words = set(key.split()) - _STOP
        if len(key) < config.min_partial_length or not words:
            return {}
        return {
            i: len(key) / len(k) for k, (_, i) in zip(self.keys, self.names) if k != key and words <= set(k.split())
        }

    def _embedding(self, mention, key, config) -> dict[str, float]:
        if self.encode is None or not self.names:
            return {}
        if self._vectors is None:
            self._vectors = self.encode([n for n, _ in self.names])
        scores = self._vectors @ self.encode([mention])[0]
        best: dict[str, float] = {}
        for (_, i), score in zip(self.names, scores.tolist()):
            best[i] = max(best.get(i, -1.0), score)
        ranked = sorted(best.items(), key=lambda x: -x[1])
        if not ranked or ranked[0][1] < config.embedding_threshold:
            return {}
        if len(ranked) > 1 and ranked[0][1] - ranked[1][1] < config.embedding_margin:
            return dict(ranked[:2])  # too close to call: reported as ambiguous
        return dict(ranked[:1])


class EntityResolver:
    """Resolves the mentions of a batch against a store and against each other."""

    def __init__(self, store: GraphStore, encoder: Encoder | None = None, config: ResolverConfig | None = None):
        self.store = store
        self.encoder = encoder
        self.config = config or ResolverConfig()
        self._table: NameTable | None = None
        self._vectors: dict[str, np.ndarray] = {}

    def _encode(self, names: list[str]) -> np.ndarray:
        """Vectors of names, each encoded once per resolver."""
        missing = [n for n in dict.fromkeys(names) if n not in self._vectors]
        if missing:
            assert self.encoder is not None, "names are encoded only when the resolver has an encoder"
            self._vectors.update(zip(missing, self.encoder.encode(missing)))
        return np.stack([self._vectors[n] for n in names])

    def _store_table(self) -> NameTable:
        if self._table is None:
            names = ((n, e.id) for e in self.store.entities() for n in (e.label, *e.aliases) if n)
            self._table = NameTable(names, self._encode if self.encoder is not None else None)
        return self._table

    def resolve(self, mentions: Sequence[str]) -> dict[str, Resolved]:
        """Each distinct mention -> where it goes (an entity of the store, or a new one shared within the batch)."""
        resolved: dict[str, Resolved] = {}
        unknown = []
        for mention in dict.fromkeys(m.strip() for m in mentions if m.strip()):
            hit = self._store_table().by_tier(mention, self.config)
            if hit is None:
                unknown.append(mention)
                continue
            entity, tier, score = hit
            label = self.store.label(entity)
            merge = Merge(mention, entity, tier, score) if mention != label else None
            resolved[mention] = Resolved(entity, label, merge)
        resolved.update(self._within_batch(unknown))
        return resolved

    def _within_batch(self, mentions: list[str]) -> dict[str, Resolved]:
        """New entities: each mention joins the longest earlier name it resolves to, else starts its own."""
        result: dict[str, Resolved] = {}
        canonical: list[str] = []
        for mention in sorted(mentions, key=lambda m: (-len(m), m)):
            table = NameTable(((c, c) for c in canonical), self._encode if self.encoder is not None else None)
            hit = table.by_tier(mention, self.config)
            if hit is None:
                canonical.append(mention)
                result[mention] = Resolved(new_entity_id(mention), mention)
            else:
                name, tier, score = hit
                target = result[name]
                result[mention] = Resolved(target.entity, target.label, Merge(mention, target.entity, tier, score))
        return result


class RelationNormalizer:
    """Maps relation names to the store's relations (exact label, then embedding), minting new ones otherwise."""

    def __init__(self, store: GraphStore, encoder: Encoder | None = None, threshold: float = 0.75):
        self.store = store
        self.encoder = encoder
        self.threshold = threshold
        self._vocabulary: list[tuple[str, str]] | None = None
        self._vectors: np.ndarray | None = None

    def _vocab(self) -> list[tuple[str, str]]:
        if self._vocabulary is None:
            self._vocabulary = [(r, self.store.label(r)) for r in self.store.relations()]
        return self._vocabulary

    def normalize(self, relation: str) -> tuple[str, str, float]:
        """(relation id, 'exact' | 'embedding' | 'new', score)."""
        key = normalize(_CAMEL.sub(" ", relation))
        for rid, label in self._vocab():
            if normalize(label) == key or normalize(rid.rsplit("/", 1)[-1]) == normalize(relation):
                return rid, "exact", 1.0
        if self.encoder is not None and self._vocab():
            if self._vectors is None:
                self._vectors = self.encoder.encode([label for _, label in self._vocab()])
            scores = self._vectors @ self.encoder.encode([key])[0]
            best = int(np.argmax(scores))
            if scores[best] >= self.threshold:
                return self._vocab()[best][0], "embedding", float(scores[best])
        return new_relation_id(relation), "new", 0.0
