"""Claims checked against the graph: what a text says, marked supported, contradicted or not in the graph.

The text is cut into claims (sentences, and clauses joined by "and" / "but" that name a relation
of their own); each claim's triples are read two ways and merged:

- **patterns over the schema**, always: a relation is named by one of its labels or aliases (or a
  form of one: "borders", "bordered by", "neighbours"), else by the phrase between two entities
  when a sentence encoder finds it close to one; the entities on either side are linked with the
  retriever's entity linker; a capitalized name no entity matches is an entity the graph lacks;
- **the construction extractor**, when a trained one is given (its surface triples are linked the
  same way).

A triple is **supported** when the graph holds it (either way round for a symmetric relation) or a
chain of the same relation leads from subject to object; **contradicted** when the relation takes
one value per class of object in the graph's own data (each country is located in one region and
one subregion) and the graph holds a different one, or when the claim denies a fact the graph
holds; otherwise (an entity the graph does not hold included) it is **not in the graph**. A claim
is contradicted when one of its triples is, supported when all are.

Example::

    checker = ClaimChecker(session.store, session.retriever)
    report = checker.check("Chad borders Niger and is located in Western Africa.")
    [(c.text, c.status) for c in report.claims]
    # [('Chad borders Niger', 'supported'), ('is located in Western Africa.', 'contradicted')]
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kgllm.exceptions import InputError
from kgllm.graph.base import GraphStore
from kgllm.pipelines.programs.schema import Schema
from kgllm.retrieval.linking import STOP_WORDS, fold
from kgllm.types import Triple

if TYPE_CHECKING:
    from kgllm.pipelines.construction.extraction import Extractor
    from kgllm.retrieval.retriever import KGRetriever

MAX_TEXT_CHARS = 20_000
_SENTENCE = re.compile(r"[^.!?;\n]+[.!?;]*")
_JOINER = re.compile(r",?\s+(?:and|but|while|whereas)\s+", re.IGNORECASE)
_CITATION = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
_WORD = re.compile(r"[\w'’-]+")
_NAME = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of|and|the)?\s*[A-Z][\w'’-]*)*")
_NEGATION = re.compile(r"\b(?:not|never|no longer)\b|n[’']t\b", re.IGNORECASE)
_PRONOUNS = frozenset({"it", "its", "they", "this", "that", "which", "who", "he", "she", "the country", "both"})


class ClaimStatus(StrEnum):
    """What the graph says about a claim."""

    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    NOT_IN_GRAPH = "not_in_graph"


@dataclass(frozen=True, slots=True)
class CheckedTriple:
    """One triple read from a claim: the words, the graph ids they link to (None: the graph lacks
    the entity), whether the claim denies it, its status, and the graph facts behind the status."""

    subject: str
    relation: str
    object: str
    subject_id: str | None
    relation_id: str
    object_id: str | None
    negated: bool
    status: ClaimStatus
    evidence: tuple[Triple, ...] = ()
    reason: str = ""


@dataclass(slots=True)
class Claim:
    """A sentence or clause of the text (``span``: its character offsets) and what the graph says of it."""

    text: str
    span: tuple[int, int]
    status: ClaimStatus
    triples: list[CheckedTriple] = field(default_factory=list)
    reason: str = ""


@dataclass(slots=True)
class ClaimReport:
    """Every claim of a text with its status; ``labels`` names the ids of the evidence."""

    text: str
    claims: list[Claim]
    labels: dict[str, str] = field(default_factory=dict)

    def count(self, status: ClaimStatus) -> int:
        return sum(c.status == status for c in self.claims)

    @property
    def all_supported(self) -> bool:
        """Whether every claim is supported by the graph (False for a text with no claim)."""
        return bool(self.claims) and all(c.status == ClaimStatus.SUPPORTED for c in self.claims)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: each claim with its status, triples and the facts (as labels) behind them."""
        return {
            "claims": [self._claim_dict(c) for c in self.claims],
            "counts": {s.value: self.count(s) for s in ClaimStatus},
        }

    def _claim_dict(self, claim: Claim) -> dict[str, Any]:
        return {
            "text": claim.text,
            "span": list(claim.span),
            "status": claim.status.value,
            "reason": claim.reason,
            "triples": [
                {
                    "subject": t.subject,
                    "relation": self.labels.get(t.relation_id, t.relation),
                    "object": t.object,
                    "negated": t.negated,
                    "status": t.status.value,
                    "reason": t.reason,
                    "evidence": [[self._label(x) for x in (f.head, f.relation, f.tail)] for f in t.evidence],
                }
                for t in claim.triples
            ],
        }

    def _label(self, node: str) -> str:
        return self.labels.get(node, node)


@dataclass(frozen=True, slots=True)
class _Mention:
    start: int
    end: int
    text: str
    entity_id: str | None  # None: a name the graph does not hold


@dataclass(frozen=True, slots=True)
class _RelationMention:
    start: int
    end: int
    text: str
    relation_id: str
    pair: bool = False  # "A and B are neighbours": a symmetric relation between the subjects


@dataclass(frozen=True, slots=True)
class _Reading:
    subject: _Mention
    relation: _RelationMention
    object: _Mention


class ClaimChecker:
    """Reads claims and checks them against ``store`` (see the module docstring).

    ``retriever`` links entities (a link scored under ``min_link_score`` is a name the graph does
    not hold) and its encoder matches relation phrases named in other words (above
    ``relation_similarity``); ``extractor`` adds the construction model's triples;
    a relation counts as single-valued for a class of object when at least ``functional_share``
    of its subjects (and at least ``min_subjects``) have exactly one such object.
    """

    def __init__(
        self,
        store: GraphStore,
        retriever: KGRetriever,
        extractor: Extractor | None = None,
        relation_similarity: float = 0.6,
        min_link_score: float = 0.9,
        functional_share: float = 0.95,
        min_subjects: int = 3,
        max_chain: int = 3,
    ):
        self.store = store
        self.retriever = retriever
        self.extractor = extractor
        self.relation_similarity = relation_similarity
        self.min_link_score = min_link_score
        self.functional_share = functional_share
        self.min_subjects = min_subjects
        self.max_chain = max_chain
        self._schema: Schema | None = None
        self._phrases: list[tuple[tuple[str, ...], str, bool]] | None = None
        self._functional: dict[tuple[str, str], bool] | None = None
        self._types: dict[str, tuple[str, ...]] = {}
        self._name_vectors: tuple[list[str], np.ndarray] | None = None

    # ------------------------------------------------------------ public
    def check(self, text: str) -> ClaimReport:
        """Every claim of ``text`` with its status and evidence."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("text to check must be a non-empty string")
        if len(text) > MAX_TEXT_CHARS:
            raise InputError(f"text to check is longer than {MAX_TEXT_CHARS} characters")
        claims: list[Claim] = []
        for start, end in self.claim_spans(text):
            previous = claims[-1] if claims and claims[-1].span[1] <= start else None
            claims.append(self._check_claim(text, start, end, previous))
        nodes = {x for c in claims for t in c.triples for f in t.evidence for x in (f.head, f.relation, f.tail)}
        nodes |= {t.relation_id for c in claims for t in c.triples}
        return ClaimReport(text, claims, {n: self.store.label(n) for n in nodes})

    def claim_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the claims: sentences, cut again where "and" (or "but", ...) joins a
        clause that names a relation of its own."""
        spans = []
        for sentence in _SENTENCE.finditer(text):
            start = sentence.start()
            words = sentence.group()
            names = [(m.start, m.end) for m in self._mentions(words)]  # "Wallis and Futuna" is one name
            cuts = [
                m
                for m in _JOINER.finditer(words)
                if not any(s < m.end() and m.start() < e for s, e in names)
                and self._names_relation(words[: m.start()])
                and self._names_relation(words[m.end() :])
            ]
            for cut in cuts:
                spans.append((start, sentence.start() + cut.start()))
                start = sentence.start() + cut.end()
            spans.append((start, sentence.end()))
        return [(s, e) for s, e in (_stripped(text, s, e) for s, e in spans) if e > s]

    # ------------------------------------------------------------ one claim
    def _check_claim(self, text: str, start: int, end: int, previous: Claim | None) -> Claim:
        words = _CITATION.sub("", text[start:end])
        negated = bool(_NEGATION.search(words))
        readings = self._readings(words, previous)
        if not readings:
            return Claim(
                text[start:end], (start, end), ClaimStatus.NOT_IN_GRAPH, [], "no fact about the graph could be read"
            )
        checked = list(dict.fromkeys(self._check_reading(r, negated) for r in readings))
        statuses = {t.status for t in checked}
        if ClaimStatus.CONTRADICTED in statuses:
            status = ClaimStatus.CONTRADICTED
        elif statuses == {ClaimStatus.SUPPORTED}:
            status = ClaimStatus.SUPPORTED
        else:
            status = ClaimStatus.NOT_IN_GRAPH
        reason = next((t.reason for t in checked if t.status == status), "")
        return Claim(text[start:end], (start, end), status, checked, reason)

    def _readings(self, words: str, previous: Claim | None) -> list[_Reading]:
        readings = self._pattern_readings(words, previous)
        if self.extractor is not None:
            readings += self._extracted_readings(words)
        return list(dict.fromkeys(readings))

    def _pattern_readings(self, words: str, previous: Claim | None) -> list[_Reading]:
        """Triples of one clause: its subject (the names before the first relation phrase, else the
        previous claim's for "it" or no words) with each relation phrase and the names after it, up
        to the next phrase ("Chad, located in Middle Africa, borders Niger")."""
        mentions = self._mentions(words)
        relations = self._relation_mentions(words, mentions)
        if not relations:
            return []
        first = relations[0]
        subjects = [m for m in mentions if m.end <= first.start]
        if not subjects and previous is not None and _refers_back(words[: first.start]):
            subjects = _subjects_of(previous)
        readings = []
        for relation, following in zip(relations, relations[1:] + [None], strict=True):
            end = following.start if following is not None else len(words)
            objects = [m for m in mentions if m.start >= relation.end and m.end <= end]
            readings += self._relation_readings(relation, subjects, objects)
        return readings

    def _relation_readings(
        self, relation: _RelationMention, subjects: list[_Mention], objects: list[_Mention]
    ) -> list[_Reading]:
        if not subjects and len(objects) > 1:  # "the neighbours of Chad are Niger and Libya"
            subjects, objects = objects[:1], objects[1:]
        if relation.pair or (not objects and len(subjects) > 1 and self._symmetric(relation.relation_id)):
            return [_Reading(subjects[0], relation, other) for other in subjects[1:] + objects]
        return [_Reading(s, relation, o) for s in subjects for o in objects]

    def _extracted_readings(self, words: str) -> list[_Reading]:
        assert self.extractor is not None
        readings = []
        for raw in self.extractor.extract([words])[0]:
            relation = self._relation_named(raw.relation)
            subject, obj = self._mention_of(raw.subject), self._mention_of(raw.object)
            if relation is not None:
                readings.append(_Reading(subject, _RelationMention(0, 0, raw.relation, relation), obj))
        return readings

    def _check_reading(self, reading: _Reading, negated: bool) -> CheckedTriple:
        s, r, o = reading.subject, reading.relation.relation_id, reading.object
        status, evidence, reason = self._status(s, r, o)
        if negated and status == ClaimStatus.SUPPORTED:
            status, reason = ClaimStatus.CONTRADICTED, "the claim denies a fact the graph holds"
        elif negated and status == ClaimStatus.CONTRADICTED:
            status, reason = ClaimStatus.SUPPORTED, "the graph holds another value, and only one"
        return CheckedTriple(
            s.text, reading.relation.text, o.text, s.entity_id, r, o.entity_id, negated, status, evidence, reason
        )

    def _status(self, s: _Mention, r: str, o: _Mention) -> tuple[ClaimStatus, tuple[Triple, ...], str]:
        missing = [m.text for m in (s, o) if m.entity_id is None]
        if missing:
            return ClaimStatus.NOT_IN_GRAPH, (), f"the graph holds no entity named {missing[0]!r}"
        assert s.entity_id is not None and o.entity_id is not None
        if support := self._support(s.entity_id, r, o.entity_id):
            return ClaimStatus.SUPPORTED, support, "the graph holds this"
        if conflict := self._conflict(s.entity_id, r, o.entity_id):
            facts, cls = conflict
            others = ", ".join(self.store.label(t.tail) for t in facts)
            reason = f"in the graph, {s.text} is {self.store.label(r)} one {self.store.label(cls)} only: {others}"
            return ClaimStatus.CONTRADICTED, facts, reason
        return ClaimStatus.NOT_IN_GRAPH, (), "the graph does not hold this"

    # ------------------------------------------------------------ against the graph
    def _support(self, head: str, relation: str, tail: str) -> tuple[Triple, ...]:
        """The fact (or the chain of the same relation) from ``head`` to ``tail``; empty when none."""
        for triple in (Triple(head, relation, tail), Triple(tail, relation, head)):
            if triple.head == tail and not self._symmetric(relation):
                continue
            if next(iter(self.store.triples(triple.head, relation, triple.tail)), None) is not None:
                return (triple,)
        if self._symmetric(relation):
            return ()
        for path in self.store.paths(head, tail, max_hops=self.max_chain, limit=20):
            nodes = path.nodes
            forward = all(t.relation == relation and t.head == n for t, n in zip(path.triples, nodes, strict=False))
            if forward:
                return path.triples
        return ()

    def _conflict(self, head: str, relation: str, tail: str) -> tuple[tuple[Triple, ...], str] | None:
        """Facts giving ``head`` another value of a relation that takes one per class of ``tail``
        (and that class); None when there are none."""
        held = self.store.neighbors(head, "out", relation=relation)
        for cls in self._types_of(tail):
            if self._is_functional(relation, cls):
                others = tuple(t for t in held if cls in self._types_of(t.tail) and t.tail != tail)
                if others:
                    return others, cls
        return None

    def _is_functional(self, relation: str, cls: str) -> bool:
        if self._functional is None:
            self._functional = self._functional_pairs()
        return self._functional.get((relation, cls), False)

    def _functional_pairs(self) -> dict[tuple[str, str], bool]:
        """(relation, class of object) -> whether nearly every subject has exactly one such object."""
        objects: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for relation in self.schema.relations:
            if self._symmetric(relation):
                continue
            for t in self.store.triples(relation=relation):
                for cls in self._types_of(t.tail):
                    objects[(relation, cls)][t.head].add(t.tail)
        result = {}
        for key, by_subject in objects.items():
            single = sum(len(tails) == 1 for tails in by_subject.values())
            result[key] = len(by_subject) >= self.min_subjects and single >= self.functional_share * len(by_subject)
        return result

    def _types_of(self, node: str) -> tuple[str, ...]:
        if node not in self._types:
            entity = self.store.entity(node)
            self._types[node] = entity.types if entity is not None else ()
        return self._types[node]

    def _symmetric(self, relation: str) -> bool:
        info = self.schema.relations.get(relation)
        return bool(info and info.symmetric)

    @property
    def schema(self) -> Schema:
        if self._schema is None:
            self._schema = Schema.from_store(self.store)
        return self._schema

    # ------------------------------------------------------------ reading the words
    def _mentions(self, words: str) -> list[_Mention]:
        """Linked entities (left to right), and capitalized names that no entity matches."""
        found: list[_Mention] = []
        for link in sorted(self.retriever.link(words), key=lambda link: -len(link.mention)):  # "Middle Africa" first
            at = _find_words(words, link.mention, [(m.start, m.end) for m in found])
            if at is not None:
                # a name one or two letters away from an entity's ("Ruritania", "Mauritania") is
                # another name in a claim, not a typo: only close links count
                entity = link.entity.id if link.score >= self.min_link_score else None
                found.append(_Mention(at, at + len(link.mention), link.mention, entity))
        taken = [(m.start, m.end) for m in found]
        for name in _NAME.finditer(words):
            free = not any(s < name.end() and name.start() < e for s, e in taken)
            if free and _is_name(name.group()) and not self._schema_word(name.group()):
                found.append(_Mention(name.start(), name.end(), name.group(), None))
        return sorted(found, key=lambda m: m.start)

    def _relation_mentions(self, words: str, mentions: list[_Mention]) -> list[_RelationMention]:
        """The schema's relation phrases in ``words`` (longest first, not overlapping each other or a
        name), left to right; else the words between the first two names when the encoder finds them
        close to a relation name (or, in a clause whose subject is left out, "and lies in Western
        Africa", the words before the first name)."""
        tokens = [(m.start(), m.end(), fold(m.group())) for m in _WORD.finditer(words)]
        found: list[tuple[int, int, int, str, bool]] = []  # (-length, start, end, relation, pair)
        for phrase, relation, pair in self.phrases:
            n = len(phrase)
            for i in range(len(tokens) - n + 1):
                if tuple(t[2] for t in tokens[i : i + n]) == phrase:
                    found.append((-n, tokens[i][0], tokens[i + n - 1][1], relation, pair))
        taken = [(m.start, m.end) for m in mentions]
        chosen = []
        for _, start, end, relation, pair in sorted(found):
            if not any(s < end and start < e for s, e in taken):
                taken.append((start, end))
                chosen.append(_RelationMention(start, end, words[start:end], relation, pair))
        if chosen or not mentions:
            return sorted(chosen, key=lambda r: r.start)
        start, end = (mentions[0].end, mentions[1].start) if len(mentions) > 1 else (0, mentions[0].start)
        between = words[start:end].strip(" ,")
        joined = _JOINER.search(f" {between} ")  # "Sudan and lies in": two clauses, not one relation
        meant = self._relation_by_meaning(between) if between and not joined else None
        return [_RelationMention(start, end, between, meant)] if meant is not None else []

    def _relation_named(self, name: str) -> str | None:
        key = tuple(fold(w) for w in _WORD.findall(name))
        for phrase, relation, _ in self.phrases:
            if phrase == key:
                return relation
        return self._relation_by_meaning(name)

    def _relation_by_meaning(self, phrase: str) -> str | None:
        content = [w for w in _WORD.findall(phrase) if fold(w) not in STOP_WORDS or fold(w) in ("in", "of", "to")]
        if not content or len(content) > 6:
            return None
        relations, vectors = self._relation_vectors()
        scores = vectors @ self.retriever.encoder.encode([" ".join(content)])[0]
        best = int(np.argmax(scores))
        return relations[best] if scores[best] >= self.relation_similarity else None

    def _relation_vectors(self) -> tuple[list[str], np.ndarray]:
        if self._name_vectors is None:
            names = [(r, n) for r, info in self.schema.relations.items() for n in info.names]
            vectors = self.retriever.encoder.encode([n for _, n in names])
            self._name_vectors = ([r for r, _ in names], vectors)
        return self._name_vectors

    def _mention_of(self, surface: str) -> _Mention:
        links = self.retriever.link(surface)
        best = next((link for link in links if link.score >= self.min_link_score), None)
        best = best if best and len(fold(best.mention)) >= 0.6 * len(fold(surface)) else None
        return _Mention(0, 0, surface, best.entity.id if best else None)

    def _names_relation(self, words: str) -> bool:
        return bool(self._relation_mentions(words, self._mentions(words)))

    def _schema_word(self, name: str) -> bool:
        """A capitalized word that names a class or relation ("Country"), not an entity."""
        return fold(name) in {fold(n) for c in self.schema.classes.values() for n in c.names}

    @property
    def phrases(self) -> list[tuple[tuple[str, ...], str, bool]]:
        """(folded words, relation id, names a pair) for every form of every relation name."""
        if self._phrases is None:
            self._phrases = [
                (tuple(form.split()), r, pair)
                for r, info in self.schema.relations.items()
                for name in info.names
                for form, pair in _forms(fold(name), info.symmetric)
            ]
        return self._phrases


def check_claims(
    text: str, store: GraphStore, retriever: KGRetriever, extractor: Extractor | None = None
) -> ClaimReport:
    """Check every claim of ``text`` against the graph (a one-off :class:`ClaimChecker`)."""
    return ClaimChecker(store, retriever, extractor).check(text)


def read_text(source: str) -> str:
    """``source`` itself, or the contents of the file it names."""
    path = Path(source)
    if len(source) < 4096 and "\n" not in source and path.is_file():
        return path.read_text(encoding="utf-8")
    return source


# ---------------------------------------------------------------- words
def _forms(name: str, symmetric: bool) -> Iterable[tuple[str, bool]]:
    """A relation name and the forms text writes it in: "borders" -> "border", "bordered by",
    "bordering"; "neighbor of" -> "neighbour of", "neighbors of"; a symmetric relation's noun in
    the plural names a pair ("Chad and Niger are neighbours")."""
    spellings = {name, " ".join(_british(w) for w in name.split())}
    for spelling in spellings:
        words = spelling.split()
        yield spelling, False
        first, rest = words[0], words[1:]
        if first.endswith("s") and not first.endswith("ss") and len(first) > 3:
            stem = first[:-1]
            for variant in (stem, stem + "ed by", stem + "ing", stem + "ed"):
                yield " ".join([variant, *rest]), False
        if rest and rest[-1] in ("of", "to", "with"):
            yield " ".join([_plural(first), *rest]), False
            if symmetric:
                yield _plural(first), True
                yield first + "ing", False


def _british(word: str) -> str:
    return word[:-2] + "our" if word.endswith("or") and len(word) > 5 else word


def _plural(word: str) -> str:
    return word[:-1] + "ies" if word.endswith("y") else word + "s"


def _is_name(text: str) -> bool:
    words = [w for w in text.split() if fold(w) not in STOP_WORDS]
    return bool(words) and fold(text) not in _PRONOUNS


def _refers_back(words: str) -> bool:
    """Whether the words before the relation are empty or a pronoun ("it", "the country")."""
    key = fold(words).strip(" ,")
    return not key or key in _PRONOUNS or all(w in STOP_WORDS for w in key.split())


def _subjects_of(claim: Claim) -> list[_Mention]:
    found = {(t.subject, t.subject_id) for t in claim.triples}
    return [_Mention(0, 0, text, entity) for text, entity in sorted(found, key=lambda x: x[0])]


def _find_words(text: str, mention: str, taken: Sequence[tuple[int, int]]) -> int | None:
    """Where ``mention`` occurs in ``text`` as whole words, outside the ``taken`` spans."""
    for match in re.finditer(rf"(?<!\w){re.escape(mention)}(?!\w)", text):
        if not any(s < match.end() and match.start() < e for s, e in taken):
            return match.start()
    return None


def _stripped(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in " \t,":
        start += 1
    while end > start and text[end - 1] in " \t\n":
        end -= 1
    return start, end
