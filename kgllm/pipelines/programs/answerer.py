"""Answer counting, yes/no, set, superlative and comparison questions with query programs.

:class:`ProgramAnswerer` parses a question into a program (:mod:`.parser`), runs it on the
store (:mod:`.executor`) and words the result in the question's shape: a number with the
members counted, "Yes: ..." with the fact found, "No — ..." with the facts checked, a list,
or the winner of a ranking with its score. A question the parser cannot read with confidence,
or a program the executor refuses (too broad, incomparable things), gets a refusal with the
reason, never an answer to another question. :func:`route` tells such questions from
relation chains, which the path reasoner answers.
"""

from __future__ import annotations

import re
import time
from dataclasses import fields, replace
from typing import Any

from rdflib import RDF

from kgllm.exceptions import InputError
from kgllm.graph.base import GraphStore
from kgllm.llm.corpus import plural
from kgllm.pipelines.programs.executor import Executor, ExecutorConfig, ProgramError, ProgramTimeError, Result
from kgllm.pipelines.programs.language import (
    And,
    Compare,
    Count,
    Degree,
    EntityRef,
    Exists,
    FilterClass,
    Hop,
    Or,
    Program,
    Rank,
    SetExpr,
    format_program,
)
from kgllm.pipelines.programs.parser import REQUEST_FRAME, ParserConfig, QuestionParser, quote_words
from kgllm.types import Answer, Entity, Evidence, GraphPath, Triple

SOURCE = "programs"
PROGRAM_OPTIONS = frozenset({f.name for f in fields(ExecutorConfig)} | {"min_confidence"})

_ROUTE_CUES = re.compile(
    r"\b(how many|number of|count|both|in common|not|neither|except|excluding|besides|other than|apart from|"
    r"outside|most|fewest|least|top|more|fewer|less)\b|n['’]t\b",  # "isn't": no word boundary before its n't
    re.IGNORECASE,
)
_YES_NO = re.compile(r"^\s*(does|do|did|is|are|was|were|has|have|can|whether)\b", re.IGNORECASE)


def route(question: str, linked_entities: int | None = None) -> str:
    """``"programs"`` for a question with a non-chain shape (count, yes/no, set operations,
    superlative, comparison), else ``"paths"``.

    ``linked_entities`` (how many entities the question mentions), when known, also sends a
    list question about two or more entities ("which neighbours of Chad are in Western Africa")
    to programs. Example: ``route("How many neighbours does Mali have?") == "programs"``.
    """
    if not isinstance(question, str):
        raise InputError("question must be a string")
    if _ROUTE_CUES.search(question) or _YES_NO.match(REQUEST_FRAME.sub("", question.strip())):
        return "programs"
    if linked_entities is not None and linked_entities >= 2:
        return "programs"
    return "paths"


class ProgramAnswerer:
    """Answers questions by query programs over ``store`` (an :class:`~kgllm.pipelines.base.Answerer`).

    ``retriever`` is the shared :class:`~kgllm.retrieval.retriever.KGRetriever` (entity linking and
    the sentence encoder). ``executor_config`` bounds every run; ``min_confidence`` is the least
    parse confidence answered (below it the answer is a refusal).

    Example::

        answerer = ProgramAnswerer(store, retriever)
        answerer.answer("How many neighbours does Chad have?").text
        # '7 countries border Chad: Cameroon, Central African Republic, ...'
    """

    def __init__(
        self,
        store: GraphStore,
        retriever,
        executor_config: ExecutorConfig | None = None,
        parser_config: ParserConfig | None = None,
        min_confidence: float = 0.5,
    ):
        self.store = store
        self.retriever = retriever
        self.executor_config = executor_config or ExecutorConfig()
        self.parser = QuestionParser(store, retriever, parser_config)
        self.min_confidence = min_confidence

    def answer(self, question: str, **options: Any) -> Answer:
        """Answer ``question`` with a program; the program's text is in ``metadata["program"]``.

        ``options``: any field of :class:`ExecutorConfig` (``time_limit``, ``max_set_size``, ...)
        and ``min_confidence``; an unknown name raises :class:`InputError`.
        """
        unknown = sorted(set(options) - PROGRAM_OPTIONS)
        if unknown:
            raise InputError(f"unknown program option(s) {unknown}; known: {sorted(PROGRAM_OPTIONS)}")
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty")
        min_confidence = options.pop("min_confidence", self.min_confidence)
        config = replace(self.executor_config, **options) if options else self.executor_config
        started = time.perf_counter()
        parse = self.parser.parse(question)
        metadata: dict[str, Any] = {"shape": parse.shape, "parse_confidence": round(parse.confidence, 4)}
        if parse.program is None:
            answer = self._refusal(question, parse.reason, metadata)
        elif parse.confidence < min_confidence:
            metadata["program"] = format_program(parse.program)
            answer = self._refusal(
                question, f"I am not confident I read the question right ({parse.confidence:.2f})", metadata
            )
        else:
            metadata["program"] = format_program(parse.program)
            executor = Executor(self.store, config)
            try:
                result = executor.run(parse.program)
            except ProgramError as error:
                if isinstance(error, ProgramTimeError):
                    metadata["cut"] = True  # as the path reasoner says of a search cut by its budget
                metadata.update(_query_metadata(executor, parse.program))
                answer = self._refusal(question, str(error), metadata)
            else:
                metadata.update(_query_metadata(executor, parse.program))
                answer = self._answer(question, parse.program, result, parse.confidence, metadata)
        answer.metadata["seconds"] = round(time.perf_counter() - started, 4)
        return answer

    def unmapped_modifier_refusal(self, question: str) -> Answer | None:
        """A refusal when the question narrows the class it asks for by a word the graph has nothing
        for ("Which African countries are landlocked?"), for any answerer; else None."""
        words = self.parser.unmapped_class_modifiers(question)
        if not words:
            return None
        reason = f"I could not map {quote_words(words)} to anything in this graph"
        return self._refusal(question, reason, {"shape": "list"})

    def run(self, program: Program, **options: Any) -> Result:
        """Run a ready program (no parsing) under this answerer's bounds."""
        config = replace(self.executor_config, **options) if options else self.executor_config
        return Executor(self.store, config).run(program)

    # ------------------------------------------------------------ wording
    def _answer(self, question: str, program: Program, result: Result, confidence: float, metadata) -> Answer:
        label = self.store.label
        metadata.update(found=True, kind=result.kind, value=result.value)
        entities: list[Entity] = []
        match program:
            case Count(source=s):
                members = result.members
                noun = self._noun(members, len(members))
                listed = _join([label(m) for m in members])
                text = self._count_text(s, len(members), noun) + (f": {listed}." if members else ".")
                entities = self._entities(members)
            case Exists(source=And(left=Hop(relation=r, source=subjects), right=objects)) if _named(
                subjects
            ) and _named(objects):
                if result.value:
                    text = f"Yes: {_join([self._fact_text(f) for f in result.support])}."
                else:
                    a, b = (_join([label(e) for e in _named(x)], conjunction="or") for x in (subjects, objects))
                    text = f"No — the graph has no “{label(r)}” fact between {a} and {b}."
            case Exists(source=FilterClass(cls=cls, source=EntityRef(id=entity))):
                kind = _with_article(self.parser.class_name(cls).lower())
                # the evidence is the entity's class facts: the one that holds, or those checked
                types = [Triple(entity, str(RDF.type), t) for t in self.store.describe(entity).types]
                if result.value:
                    text = f"Yes: {label(entity)} is {kind}."
                    result = replace(result, support=[t for t in types if t.tail == cls])
                else:
                    text = f"No — the graph does not list {label(entity)} as {kind}."
                    result = replace(result, checked=types)
            case Exists():
                text = "Yes." if result.value else "No — the graph holds no such thing."
                if result.value:
                    text = f"Yes: {_join([label(m) for m in result.members])}."
                    entities = self._entities(result.members)
            case Compare(metric=metric, left=a, right=b):
                va, vb = result.scores[a], result.scores[b]
                facts = f"{label(a)} has {va:g} {self._metric_noun(metric, va)}, {label(b)} has {vb:g}"
                text = f"Yes: {facts}." if result.value else f"No — {facts}."
                metadata["scores"] = {label(a): va, label(b): vb}
            case Rank(order=o, metric=metric, source=source) if len(_named(source)) == len(result.value) > 1:
                v = result.scores[result.value[0]]  # "which has more, A or B" with a tie
                tied = _join([label(m) for m in result.value])
                text = f"Neither: {tied} each have {v:g} {self._metric_noun(metric, v)}."
                entities = self._entities(result.value)
            case Rank(order=o, metric=metric):
                text = self._ranking(result, o, metric)
                entities = self._entities(result.value)
            case _:
                inner = self._rank_inside(program)
                entities = self._entities(result.value)
                if not result.value:
                    text = "None: the graph holds nothing that fits" + f"{self._scope(program)}."
                else:
                    text = _join([label(m) for m in result.value]) + "."
                if inner is not None and result.value:
                    rank, ranked = inner
                    best = "most" if rank.order == "max" else "fewest"
                    text = text[:-1] + f", from {self._ranking_phrase(ranked, rank.order, rank.metric)}: the {best}."
                    metadata["ranking"] = {label(m): v for m, v in ranked.scores.items()}
        return self._build(question, text, entities, result, confidence, metadata)

    def _rank_inside(self, program: Program) -> tuple[Rank, Result] | None:
        node: object = program
        while node is not None and not isinstance(node, Rank):
            node = getattr(node, "source", None)
        if node is None:
            return None
        return node, Executor(self.store, self.executor_config).run(node)

    def _ranking(self, result: Result, order: str, metric) -> str:
        if not result.value:
            return "None: nothing in the set has a value to rank by."
        return self._ranking_phrase(result, order, metric) + "."

    def _ranking_phrase(self, result: Result, order: str | None = None, metric=None) -> str:
        label = self.store.label
        ranked = sorted(result.scores.items(), key=lambda kv: (-kv[1] if order != "min" else kv[1], label(kv[0])))
        return ", ".join(f"{label(m)} ({v:g} {self._metric_noun(metric, v)})" for m, v in ranked)

    def _metric_noun(self, metric, n: float) -> str:
        """What ``n`` counts: "countries", "“neighbor of” link"."""
        if isinstance(metric, Degree):
            noun = self.parser.class_name(metric.cls).lower() if metric.cls else "link"
            noun = noun if n == 1 else plural(noun)
            return noun if metric.cls else f"“{self.store.label(metric.relation)}” {noun}"
        return "as value" if metric is not None else "facts"

    def _verb(self, relation: str) -> str | None:
        """The relation as a verb phrase for a singular subject: "borders", "is located in" (None if none reads so)."""
        entity = self.store.describe(relation)
        for name in (entity.label, *entity.aliases):
            first = name.split()[0] if name.split() else ""
            if first in ("is", "has"):
                return name
            if first.endswith("ed"):
                return f"is {name}"
        for name in (entity.label, *entity.aliases):
            first = name.split()[0] if name.split() else ""
            if first.endswith("s") and not first.endswith("ss"):
                return name
        return None

    def _fact_text(self, t: Triple) -> str:
        label = self.store.label
        verb = self._verb(t.relation)
        return f"{label(t.head)} {verb or label(t.relation)} {label(t.tail)}"

    def _count_text(self, expr, n: int, noun: str) -> str:
        """ "7 countries border Chad" where the set is one relation away from an entity."""
        label = self.store.label
        if isinstance(expr, FilterClass) and isinstance(expr.source, Hop):
            expr = expr.source  # the noun already names the class
        if isinstance(expr, Hop) and isinstance(expr.source, EntityRef):
            verb = self._verb(expr.relation)
            who = label(expr.source.id)
            if verb and expr.direction != "out":
                if n != 1:
                    verb = _plural_verb(verb)
                return f"{n} {noun} {verb} {who}"
            if verb:
                return f"{who} {verb} {n} {noun}"
        return f"{n} {noun}{self._scope(expr)}"

    def _scope(self, expr) -> str:
        """`` (neighbor of Chad)`` for the members one relation away from an entity; else empty."""
        label = self.store.label
        while not isinstance(expr, (Hop, EntityRef)) and hasattr(expr, "source"):
            expr = expr.source
        if isinstance(expr, Hop) and isinstance(expr.source, EntityRef):
            who = label(expr.source.id)
            if expr.direction == "out":
                return f" ({who} {label(expr.relation)} these)"
            return f" ({label(expr.relation)} {who})"
        return ""

    def _noun(self, members: list[str], n: int) -> str:
        types = [t for m in members[:50] for t in self.store.describe(m).types]
        if not types:
            return "entity" if n == 1 else "entities"
        common = max(set(types), key=types.count)
        name = self.store.label(common).lower()
        return name if n == 1 else plural(name)

    def _entities(self, ids) -> list[Entity]:
        return [self.store.entity(i) or Entity(i, self.store.label(i)) for i in ids]

    def _build(self, question, text, entities, result: Result, confidence, metadata) -> Answer:
        support = result.support
        checked = result.checked if not support or (result.kind == "bool" and not result.value) else []
        triples = list(dict.fromkeys([*support, *checked]))
        labels = {x: self.store.label(x) for t in triples for x in (t.head, t.relation, t.tail)}
        for e in entities:
            labels.setdefault(e.id, e.label)
        paths = [GraphPath(t.head, (t,), score=confidence) for t in support[:200]]
        metadata["facts_counted" if metadata.get("kind") == "count" else "facts_used"] = len(support)
        metadata["facts_checked"] = len(checked)
        evidence = Evidence(triples=triples, paths=paths, score=confidence, source=f"{SOURCE}:query-program")
        return Answer(question, text, entities, evidence, confidence, labels, metadata)

    def _refusal(self, question: str, reason: str, metadata) -> Answer:
        metadata.update(found=False, reason=reason)
        text = f"I cannot answer this from the graph: {reason}."
        return Answer(question, text, [], Evidence(source=f"{SOURCE}:refused"), 0.0, {}, metadata)


def _query_metadata(executor: Executor, program: Program) -> dict[str, Any]:
    """Which engine ran the program, and its compiled query (``ran``: whether the store ran that query)."""
    language = executor.query_language(program)
    compiled = executor.compile(program)
    engine = {"engine": language or "protocol"}
    return engine | ({"query": {**compiled.to_dict(), "ran": language is not None}} if compiled else {})


def _plural_verb(verb: str) -> str:
    """ "borders" -> "border", "is located in" -> "are located in"."""
    first, _, rest = verb.partition(" ")
    first = {"is": "are", "has": "have"}.get(first, first[:-1] if first.endswith("s") else first)
    return f"{first} {rest}".strip()


def _with_article(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _join(labels: list[str], limit: int = 25, conjunction: str = "and") -> str:
    labels = sorted(labels)
    if not labels:
        return ""
    if len(labels) > limit:
        return ", ".join(labels[:limit]) + f" and {len(labels) - limit} more"
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + f" {conjunction} " + labels[-1]


def _named(expr: SetExpr) -> list[str]:
    """The entities of a set named outright (``A`` or ``Or(A, B)``, as "A or B"); empty for any other set."""
    match expr:
        case EntityRef(id=entity):
            return [entity]
        case Or(left=a, right=b):
            left, right = _named(a), _named(b)
            return left + right if left and right else []
    return []
