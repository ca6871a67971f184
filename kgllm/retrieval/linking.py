"""Entity linking: which entities of the graph a question mentions.

Word n-grams of the question are matched against entity labels and aliases in
three ways, cheapest and surest first:

1. exact (ignoring case, separators and accents; possessive "'s" dropped, a
   plural "-s" / "-ies" tried singular, the adjective of a place tried as the place:
   "European") through ``GraphStore.find_by_label``;
2. fuzzy, for typos: edit-distance similarity against every label;
3. embedding search in the entity-label index, only when 1 and 2 found nothing.

Stop words and the graph's own schema words (the words of relation and class
labels, e.g. "located", "neighbor", "countries") never form a mention on their
own ("us" does not, "US" may), and fuzzy and embedding matches need a minimum mention length and score.
Overlapping candidates are resolved greedily by score times mention length, so
a longer exact match beats a shorter one it contains, and "Souht Africa" (fuzzy)
beats "Africa" (exact) inside it.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein

from kgllm.exceptions import InputError
from kgllm.graph.base import GraphStore
from kgllm.graph.labels import normalize
from kgllm.types import Entity

if TYPE_CHECKING:
    from kgllm.retrieval.encoder import Encoder
    from kgllm.retrieval.index import VectorIndex

log = logging.getLogger(__name__)

Method = Literal["exact", "fuzzy", "embedding"]
LINK_CACHE_SIZE = 4096  # questions whose links are kept
_WORD = re.compile(r"\w+(?:['’-]\w+)*")
_POSSESSIVE = re.compile(r"['’]s$")
STOP_WORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "us",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "list",
        "name",
        "names",
        "give",
        "show",
        "tell",
        "find",
        "many",
        "much",
        "number",
        "one",
        "ones",
    ]
)


@dataclass(frozen=True, slots=True)
class LinkedEntity:
    """An entity a question mentions: the words that mention it, a score in [0, 1], and how it was found."""

    entity: Entity
    mention: str
    score: float
    method: Method


@dataclass(frozen=True, slots=True)
class _Span:
    start: int  # token positions, end exclusive
    end: int
    text: str  # as written in the question
    label: str  # normalized, possessive dropped: what find_by_label is asked
    key: str  # label without accents: what fuzzy matching compares


@dataclass(frozen=True, slots=True)
class _Candidate:
    span: _Span
    entity_ids: tuple[str, ...]
    score: float
    method: Method

    @property
    def weight(self) -> float:
        return self.score * len(self.span.key)


def label_key(entity_id: str, name: str) -> str:
    """Key of one label or alias of an entity in the entity-label index."""
    return f"{entity_id}\t{name}"


def entity_of_label_key(key: str) -> str:
    """The entity id in a :func:`label_key`."""
    return key.split("\t", 1)[0]


def fold(text: str) -> str:
    """Normalized label key without accents: "Curaçao" -> "curacao"."""
    decomposed = unicodedata.normalize("NFKD", normalize(text))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


class EntityLinker:
    """Finds the entities a question mentions (see the module docstring for the method).

    The label table for fuzzy matching is built once by :meth:`rebuild` (the
    retriever calls it whenever it refreshes); exact matches always ask the store.
    ``fuzzy_threshold`` is the least normalized Damerau-Levenshtein similarity
    (0.8: one edit in five letters), ``embedding_threshold`` the least cosine to a
    label in ``label_index``; mentions shorter than ``min_mention_chars`` match
    exactly or not at all; ``max_ngram`` caps the words of a mention.

    Example::

        linker = EntityLinker(store, encoder, label_index)
        linker.link("Which countries border Chad?")  # [LinkedEntity(Chad, "Chad", 1.0, "exact")]
    """

    def __init__(
        self,
        store: GraphStore,
        encoder: Encoder | None = None,
        label_index: VectorIndex | None = None,
        fuzzy_threshold: float = 0.8,
        embedding_threshold: float = 0.8,
        min_mention_chars: int = 4,
        max_ngram: int = 6,
    ):
        if not 0 < fuzzy_threshold <= 1 or not 0 < embedding_threshold <= 1:
            raise InputError("thresholds must be in (0, 1]")
        self.store = store
        self.encoder = encoder
        self.label_index = label_index
        self.fuzzy_threshold = fuzzy_threshold
        self.embedding_threshold = embedding_threshold
        self.min_mention_chars = min_mention_chars
        self.max_ngram = max_ngram
        self._names: list[str] | None = None
        self._ids_by_name: dict[str, tuple[str, ...]] = {}
        self._skip_words: frozenset[str] = STOP_WORDS
        self._longest_name = 1
        self._linked: dict[str, tuple[LinkedEntity, ...]] = {}  # recent questions; cleared by rebuild

    def rebuild(self, entities: Iterable[Entity] | None = None) -> None:
        """(Re)build the label table from ``entities`` (default: every entity of the store)."""
        ids_by_name: dict[str, set[str]] = {}
        types: set[str] = set()
        for e in self.store.entities() if entities is None else entities:
            for name in {e.label, *e.aliases}:
                if key := fold(name):
                    ids_by_name.setdefault(key, set()).add(e.id)
            types.update(e.types)
        self._ids_by_name = {k: tuple(sorted(v)) for k, v in ids_by_name.items()}
        self._names = list(self._ids_by_name)
        self._longest_name = max((len(n.split()) for n in self._names), default=1)
        schema = [self.store.label(r) for r in self.store.relations()] + [self.store.label(t) for t in types]
        self._skip_words = STOP_WORDS | _schema_words(schema)
        self._linked = {}  # links made with the old table
        log.debug("entity linker: %d names, %d skipped words", len(self._names), len(self._skip_words))

    def link(self, question: str) -> list[LinkedEntity]:
        """Entities mentioned in ``question``, best score first (one entry per entity).

        The links of recent questions are kept until the next :meth:`rebuild` (each answerer links
        the question it gets, and an answer often passes through two of them)."""
        if not isinstance(question, str):
            raise InputError("question must be a string")
        if self._names is None:
            self.rebuild()
        if (known := self._linked.get(question)) is None:
            if len(self._linked) >= LINK_CACHE_SIZE:
                self._linked.clear()
            known = self._linked[question] = tuple(self._link(question))
        return list(known)

    def _link(self, question: str) -> list[LinkedEntity]:
        spans = self._spans(question)
        found: dict[str, Entity] = {}
        exact = self._exact(spans, found)
        fuzzy = self._fuzzy([s for s in spans if self._fuzzy_eligible(s)], exact)
        chosen = _select(exact + fuzzy)
        if not chosen:
            chosen = _select(self._embedding([s for s in spans if self._fuzzy_eligible(s) and s.end - s.start <= 3]))
        return self._resolve(chosen, found)

    # ------------------------------------------------------------ candidates
    def _spans(self, question: str) -> list[_Span]:
        tokens = [(m.start(), m.end(), _POSSESSIVE.sub("", m.group())) for m in _WORD.finditer(question)]
        longest = min(self.max_ngram, self._longest_name)
        spans = []
        for i in range(len(tokens)):
            for j in range(i + 1, min(i + longest, len(tokens)) + 1):
                words = [t[2] for t in tokens[i:j]]
                if all(self._skipped(w) for w in words):
                    continue
                label = normalize(" ".join(words))
                spans.append(_Span(i, j, question[tokens[i][0] : tokens[j - 1][1]], label, fold(label)))
        return spans

    def _skipped(self, word: str) -> bool:
        """A stop or schema word, unless written in capitals as an acronym ("US", "WHO")."""
        return fold(word) in self._skip_words and not (word.isupper() and len(word) > 1)

    def _exact(self, spans: list[_Span], entities: dict[str, Entity]) -> list[_Candidate]:
        """Spans that are a label or alias; the entities found are added to ``entities``."""
        found = []
        for span in spans:
            forms = [(span.label, 1.0), (_singular(span.label), 0.95)]
            # a place adjective's bases are checked in the label table first: most are no name, and the
            # store is asked only for one that is
            places = [b for b in _demonym_bases(span.label) if fold(b) in self._ids_by_name]
            for label, score in forms + [(base, DEMONYM_SCORE) for base in places]:
                hits = self.store.find_by_label(label) if label else []
                if hits:
                    entities.update((e.id, e) for e in hits)
                    found.append(_Candidate(span, tuple(e.id for e in hits), score, "exact"))
                    break
        return found

    def _fuzzy_eligible(self, span: _Span) -> bool:
        words = span.key.split()
        return (
            len(span.key) >= self.min_mention_chars
            and words[0] not in self._skip_words
            and words[-1] not in self._skip_words
        )

    def _fuzzy(self, spans: list[_Span], exact: list[_Candidate]) -> list[_Candidate]:
        done = {c.span.key for c in exact}
        spans = [s for s in spans if s.key not in done]
        if not spans or not self._names:
            return []
        # rapidfuzz turns the cutoff into an edit distance with float rounding: 1 edit in 5 letters
        # (0.8) fails a cutoff of exactly 0.8, hence the epsilon
        cutoff = self.fuzzy_threshold - 1e-6
        scores = process.cdist(
            [s.key for s in spans],
            self._names,
            scorer=DamerauLevenshtein.normalized_similarity,
            score_cutoff=cutoff,
            dtype=np.float32,
        )
        found = []
        for span, row in zip(spans, scores):
            best = int(row.argmax())
            if row[best] >= cutoff:
                found.append(_Candidate(span, self._ids_by_name[self._names[best]], float(row[best]), "fuzzy"))
        return found

    def _embedding(self, spans: list[_Span]) -> list[_Candidate]:
        if not spans or self.encoder is None or self.label_index is None or not len(self.label_index):
            return []
        vectors = self.encoder.encode([s.text for s in spans])
        found = []
        for span, hits in zip(spans, self.label_index.search(vectors, 1)):
            if hits and hits[0][1] >= self.embedding_threshold:
                key, score = hits[0]
                found.append(_Candidate(span, (entity_of_label_key(key),), score, "embedding"))
        return found

    def _resolve(self, chosen: list[_Candidate], entities: dict[str, Entity]) -> list[LinkedEntity]:
        best: dict[str, LinkedEntity] = {}
        for c in chosen:
            for entity_id in c.entity_ids:
                if entity_id in best and best[entity_id].score >= c.score:
                    continue
                entity = entities.get(entity_id) or self.store.entity(entity_id)
                if entity is not None:  # it may have left the store since the table was built
                    best[entity_id] = LinkedEntity(entity, c.span.text, c.score, c.method)
        return sorted(best.values(), key=lambda x: (-x.score, x.mention, x.entity.id))


def _select(candidates: list[_Candidate]) -> list[_Candidate]:
    """Non-overlapping candidates, heaviest (score x mention length) first, and among equal weights
    (to float32 precision, as fuzzy scores come) the better score. A fuzzy match that adds words to an
    exact one weighs the same (each added letter costs one edit), so "faith does X" must not win over "X"."""
    taken: set[int] = set()
    chosen = []
    for c in sorted(candidates, key=lambda c: (-round(c.weight, 3), -c.score, c.span.start)):
        positions = set(range(c.span.start, c.span.end))
        if not positions & taken:
            taken |= positions
            chosen.append(c)
    return chosen


def _singular(label: str) -> str:
    """The label with its last word made singular ("" when it does not look plural)."""
    if label.endswith("ies") and len(label) > 4:
        return label[:-3] + "y"
    if label.endswith("s") and not label.endswith("ss") and len(label) > 3:
        return label[:-1]
    return ""


# An adjective of a place names the place ("European countries", "Kenyan cities"): each suffix with the
# endings its place names take, "-ese" China/Japan, "-ian" Nigeria/Brazil/Italy, "-ean" Europe/Chile,
# "-an" Africa/Mexico, "-ish" Turkey/Poland/Sweden, "-i" Pakistan/Iraq
_DEMONYM_ENDINGS = (
    ("ese", ("", "a")),
    ("ian", ("ia", "", "y", "a")),
    ("ean", ("e", "")),
    ("an", ("a", "", "e", "o")),
    ("ish", ("ey", "and", "en")),
    ("i", ("",)),
)
DEMONYM_SCORE = 0.9  # below an exact label or a plural: the adjective may also be a name of its own


def _demonym_bases(label: str) -> list[str]:
    """Place names the label's last word may be the adjective of ("south american" -> "south america");
    "german" -> "germany" too. Stems shorter than three letters are not tried."""
    head, _, word = label.rpartition(" ")
    bases = [word + "y"] if word.endswith("an") else []
    for suffix, endings in _DEMONYM_ENDINGS:
        stem = word.removesuffix(suffix)
        if stem != word and len(stem) >= 3:
            bases += [stem + ending for ending in endings]
    return [f"{head} {base}".strip() for base in dict.fromkeys(bases)]


def _schema_words(labels: Iterable[str]) -> frozenset[str]:
    """Words of relation and class labels with their plurals ("country" -> "countries")."""
    words = {w for label in labels for w in fold(label).split()}
    plurals = {w[:-1] + "ies" if w.endswith("y") else w + "s" for w in words - STOP_WORDS}
    return frozenset(words | plurals)
