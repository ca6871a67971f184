"""Run query programs on any :class:`~kgllm.graph.base.GraphStore`, read-only and bounded.

Where the store runs a query language (``supports_sparql``: the rdflib store; ``supports_cypher``:
the Neo4j store), the program is compiled to one query (:mod:`.compiler`) and the store runs it
with :meth:`~kgllm.graph.base.GraphStore.read_query`, under the same time limit and set size
bound. Elsewhere, and for what a store cannot run (a numeric value on a store that keeps no
attributes), the program is evaluated here over the protocol's read methods (``neighbors``,
``entities``, ``describe``, ``attribute_values``). Either way the store is only read.

Bounds: a wall-clock ``time_limit``, ``max_set_size`` members per set (checked while a set
is being built, so a set that would be larger is refused before it fills memory) and
``max_fanout`` edges read per entity and step (protocol evaluation). A bound that is hit raises
:class:`ProgramLimitError` with what was being computed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from kgllm.exceptions import InputError, QueryLimitError
from kgllm.graph.base import GraphStore
from kgllm.pipelines.programs.compiler import CompiledQuery, QueryLanguage, compile_program, decode
from kgllm.pipelines.programs.language import (
    And,
    ClassSet,
    Compare,
    Count,
    Degree,
    EntityRef,
    Exists,
    FilterClass,
    Hop,
    Metric,
    Minus,
    Or,
    Program,
    Rank,
    Value,
    Where,
    format_program,
)
from kgllm.types import Triple


class ProgramError(InputError):
    """A program that cannot be run as asked (an unknown entity, incomparable things, ...)."""


class ProgramLimitError(ProgramError):
    """A program that would exceed a bound (time, set size)."""


class ProgramTimeError(ProgramLimitError):
    """A program that ran past its time limit: with more time, it may have an answer."""


@dataclass(frozen=True)
class ExecutorConfig:
    """Bounds of one program run."""

    time_limit: float = 10.0  # seconds
    max_set_size: int = 10_000  # members of any one set
    max_fanout: int = 5_000  # edges read per entity and step
    max_checked: int = 5_000  # facts kept as "checked" evidence
    engine: Engine = "auto"  # "query": the store runs the compiled query; "protocol": evaluated here

    def __post_init__(self) -> None:
        if self.time_limit <= 0 or min(self.max_set_size, self.max_fanout, self.max_checked) < 1:
            raise InputError("time_limit, max_set_size, max_fanout and max_checked must be positive")
        if self.engine not in ENGINES:
            raise InputError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")


Engine = Literal["auto", "query", "protocol"]
ENGINES = ("auto", "query", "protocol")

# members -> the facts that put each member in the set (empty for an entity named or a class member)
Members = dict[str, tuple[Triple, ...]]


@dataclass
class Result:
    """What a program computed.

    ``kind`` is ``set``, ``count``, ``bool`` or ``ranking``; ``value`` is the member ids (sorted),
    the number, the truth value, or the chosen ids. ``support`` are the facts that make the
    value true (for a count: the facts counted); ``checked`` the other facts read on the way
    (for a "no": the facts looked at). ``scores`` holds a metric per entity where one was computed.
    ``query`` is the compiled query the store ran, or None where the program was evaluated over
    the store protocol.
    """

    kind: str
    value: Any
    support: list[Triple] = field(default_factory=list)
    checked: list[Triple] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    query: CompiledQuery | None = None


class Executor:
    """Evaluates programs against a store (see the module docstring for the bounds).

    Example::

        result = Executor(store).run(parse_program("(count (hop neighborOf both (entity chad)))"))
        result.value  # 7
    """

    def __init__(self, store: GraphStore, config: ExecutorConfig | None = None):
        self.store = store
        self.config = config or ExecutorConfig()
        self._deadline = 0.0
        self._checked: dict[Triple, None] = {}

    def run(self, program: Program) -> Result:
        """Evaluate ``program``; raises :class:`ProgramError` or :class:`ProgramLimitError`."""
        self._deadline = time.perf_counter() + self.config.time_limit
        self._checked = {}
        self._last_scores: dict[str, float] = {}
        language = self.query_language(program)
        if language is not None:
            return self._run_query(program, language)
        match program:
            case Count(source=s):
                members = self._set(s)
                return self._result("count", len(members), members)
            case Exists(source=s):
                members = self._set(s)
                return self._result("bool", bool(members), members)
            case Compare():
                return self._compare(program)
            case Rank():
                members = self._set(program)
                return self._result("ranking", sorted(members), members, scores=self._last_scores)
            case _:
                members = self._set(program)
                return self._result("set", sorted(members), members)

    def query_language(self, program: Program) -> QueryLanguage | None:
        """The language the store runs ``program`` in, or None where it is evaluated here.

        ``engine="auto"`` sends programs to a Cypher server (one query instead of a round trip per
        step) and evaluates them here over an rdflib graph, which the protocol reads in the same
        memory faster than rdflib's SPARQL engine runs the compiled query.
        """
        language = self.compiled_language()
        if language is None or self.config.engine == "protocol":
            return None
        if self.config.engine == "auto" and language == "sparql":
            return None
        if _uses_values(program) and not self.store.supports_attributes:
            return None  # evaluated here, which says the store has no numeric values
        return language

    def compiled_language(self) -> QueryLanguage | None:
        """The store's query language (None: it runs none)."""
        if self.store.supports_cypher:
            return "cypher"
        if self.store.supports_sparql:
            return "sparql"
        return None

    def compile(self, program: Program) -> CompiledQuery | None:
        """``program`` in the store's query language (None where the store runs none)."""
        language = self.compiled_language()
        return compile_program(program, language, self.config.max_set_size) if language else None

    # ------------------------------------------------------------ compiled queries
    def _run_query(self, program: Program, language: QueryLanguage) -> Result:
        for entity in _named_entities(program):
            if self.store.entity(entity) is None:
                raise ProgramError(f"the graph has no entity {entity!r}")
        if isinstance(program, Compare):
            self._check_comparable(program.left, program.right)
        query = compile_program(program, language, self.config.max_set_size)
        try:
            rows = self.store.read_query(
                query.text,
                query.parameters,
                time_limit=max(self._deadline - time.perf_counter(), 1e-3),
                max_rows=self.config.max_set_size + 1,
            )
        except QueryLimitError as error:
            raise ProgramLimitError(f"{error}; the program is too broad to run") from None
        decoded = decode(query, rows)
        if max(decoded.set_sizes, default=0) > self.config.max_set_size:
            raise ProgramLimitError(
                f"a set would hold more than {self.config.max_set_size} members; refused to bound memory"
            )
        result = self._decoded_result(program, decoded.members, decoded.scores, decoded.scored_sizes)
        result.query = query
        return result

    def _decoded_result(
        self, program: Program, members: Members, scores: dict[str, float], scored_sizes: list[int]
    ) -> Result:
        ranks = not isinstance(program, Compare) and _has_rank(program)
        if ranks and (0 in scored_sizes or not members):
            # a ranking over nothing scored is refused, as evaluation here refuses it (with the same reason)
            return Executor(self.store, replace(self.config, engine="protocol")).run(program)
        match program:
            case Count():
                return self._result("count", len(members), members)
            case Exists():
                if not members:  # a "no" shows the facts checked, read here
                    checked = Executor(self.store, replace(self.config, engine="protocol")).run(program).checked
                    return Result("bool", False, [], checked, {}, [])
                return self._result("bool", True, members)
            case Compare(metric=metric, left=a, right=b):
                measured = {m: self._measure(m, metric)[1] for m in (a, b)}
                return self._compared(program, scores.get(a), scores.get(b), measured)
            case Rank(metric=metric):
                chosen = {m: why + self._measure(m, metric)[1] for m, why in members.items()}
                return self._result("ranking", sorted(chosen), chosen, scores=scores)
        return self._result("set", sorted(members), members)

    # ------------------------------------------------------------ sets
    def _set(self, node) -> Members:
        self._tick()
        match node:
            case EntityRef(id=i):
                if self.store.entity(i) is None:
                    raise ProgramError(f"the graph has no entity {i!r}")
                return {i: ()}
            case ClassSet(cls=c):
                return self._class_members(c)
            case Hop(relation=r, direction=d, source=s):
                out: Members = {}
                for member in self._set(s):
                    for other, t in self._edges(member, r, d):
                        if other not in out:
                            out[other] = (t,)
                            self._check_size(len(out), node)
                return out
            case And(left=a, right=b):
                left, right = self._set(a), self._set(b)
                return {m: left[m] + right[m] for m in left if m in right}
            case Or(left=a, right=b):
                out = dict(self._set(a))
                for m, why in self._set(b).items():
                    out[m] = out.get(m, ()) + why
                    self._check_size(len(out), node)
                return out
            case Minus(left=a, right=b):
                left, right = self._set(a), self._set(b)
                for m in left:
                    if m in right:
                        self._note(right[m])
                return {m: why for m, why in left.items() if m not in right}
            case FilterClass(cls=c, source=s):
                return {m: why for m, why in self._set(s).items() if c in self._types(m)}
            case Where(relation=r, direction=d, target=t, source=s, negate=negate):
                source, target = self._set(s), self._set(t)
                out = {}
                for m, why in source.items():
                    links = tuple(edge for other, edge in self._edges(m, r, d) if other in target)
                    if bool(links) != negate:
                        out[m] = why + links
                    else:
                        self._note(links)
                return out
            case Rank(order=o, k=k, metric=metric, source=s):
                source = self._set(s)
                measured = {m: self._measure(m, metric) for m in source}
                scored = {m: v for m, (v, _) in measured.items() if v is not None}
                if not scored:
                    raise ProgramError("no member of the set has a value to rank by")
                sign = -1.0 if o == "max" else 1.0
                ranked = sorted(scored, key=lambda m: (sign * scored[m], m))
                # ties at the boundary are kept: with k=1 every entity sharing the best value is chosen
                chosen = _top_with_ties(ranked, scored, k)
                self._last_scores = {m: scored[m] for m in chosen}
                return {m: source[m] + self._measure(m, metric)[1] for m in chosen}
        raise ProgramError(f"not a set expression: {node!r}")

    def _class_members(self, cls: str) -> Members:
        out: Members = {}
        for entity in self.store.entities():  # streamed; stops at the size bound
            self._tick()
            if cls in entity.types:
                out[entity.id] = ()
                self._check_size(len(out), ClassSet(cls))
        return out

    def _edges(self, member: str, relation: str, direction: str) -> Iterable[tuple[str, Triple]]:
        limit = self.config.max_fanout + 1
        triples = self.store.neighbors(member, direction, relation=relation, limit=limit)  # type: ignore[arg-type]
        if len(triples) > self.config.max_fanout:
            raise ProgramLimitError(
                f"{member} has more than {self.config.max_fanout} {relation!r} edges; the program is too broad to run"
            )
        seen = set()
        for t in triples:
            if t.head == member and t.tail == member:
                other = member
            else:
                other = t.tail if t.head == member else t.head
            self._note((t,))
            if other not in seen:
                seen.add(other)
                yield other, t

    def _types(self, node: str) -> tuple[str, ...]:
        return self.store.describe(node).types

    # ------------------------------------------------------------ metrics
    def _measure(self, entity: str, metric: Metric) -> tuple[float | None, tuple[Triple, ...]]:
        self._tick()
        match metric:
            case Degree(relation=r, direction=d, cls=c):
                edges = [(o, t) for o, t in self._edges(entity, r, d) if c is None or c in self._types(o)]
                return float(len(edges)), tuple(t for _, t in edges)
            case Value(property=p):
                return self._numeric(entity, p), ()
        raise ProgramError(f"not a metric: {metric!r}")

    def _numeric(self, entity: str, prop: str) -> float | None:
        if not self.store.supports_attributes:
            raise ProgramError(f"the {self.store.name} store offers no numeric values to rank or compare by")
        values = []
        for v in self.store.attribute_values(entity, prop):
            try:
                values.append(float(v))
            except (TypeError, ValueError):
                continue
        return max(values) if values else None

    def _compare(self, program: Compare) -> Result:
        a, b = program.left, program.right
        for x in (a, b):
            if self.store.entity(x) is None:
                raise ProgramError(f"the graph has no entity {x!r}")
        self._check_comparable(a, b)
        (va, why_a), (vb, why_b) = self._measure(a, program.metric), self._measure(b, program.metric)
        return self._compared(program, va, vb, {a: why_a, b: why_b})

    def _check_comparable(self, a: str, b: str) -> None:
        if not set(self._types(a)) & set(self._types(b)):
            raise ProgramError(
                f"{self.store.label(a)} and {self.store.label(b)} are different kinds of thing; they cannot be compared"
            )

    def _compared(self, program: Compare, va: float | None, vb: float | None, members: Members) -> Result:
        a, b = program.left, program.right
        if va is None or vb is None:
            missing = self.store.label(a if va is None else b)
            raise ProgramError(f"the graph has no value of {format_program(program.metric)} for {missing}")
        if isinstance(program.metric, Degree) and va == 0 and vb == 0:
            raise ProgramError(
                f"neither {self.store.label(a)} nor {self.store.label(b)} has any "
                f"{self.store.label(program.metric.relation)!r} fact; they cannot be compared by it"
            )
        value = {"more": va > vb, "fewer": va < vb, "same": va == vb}[program.op]
        return self._result("bool", value, members, scores={a: va, b: vb})

    # ------------------------------------------------------------ bounds and results
    def _tick(self) -> None:
        if time.perf_counter() > self._deadline:
            raise ProgramTimeError(f"the program ran past its time limit of {self.config.time_limit:g} s")

    def _check_size(self, size: int, node) -> None:
        if size > self.config.max_set_size:
            raise ProgramLimitError(
                f"a set would hold more than {self.config.max_set_size} members ({format_program(node)[:120]}); "
                "refused to bound memory"
            )

    def _note(self, triples: Iterable[Triple]) -> None:
        for t in triples:
            if len(self._checked) >= self.config.max_checked:
                return
            self._checked.setdefault(t, None)

    def _result(self, kind: str, value: Any, members: Members, scores: dict[str, float] | None = None) -> Result:
        support = list(dict.fromkeys(t for why in members.values() for t in why))
        used = set(support)
        checked = [t for t in self._checked if t not in used]
        return Result(kind, value, support, checked, dict(scores or {}), sorted(members))


def _top_with_ties(chosen: list[str], scored: dict[str, float], k: int) -> list[str]:
    if len(chosen) <= k:
        return chosen
    boundary = scored[chosen[k - 1]]
    return [m for i, m in enumerate(chosen) if i < k or scored[m] == boundary]


def _children(node: object) -> list[object]:
    match node:
        case Hop(source=s) | FilterClass(source=s) | Count(source=s) | Exists(source=s):
            return [s]
        case And(left=a, right=b) | Or(left=a, right=b) | Minus(left=a, right=b):
            return [a, b]
        case Where(target=t, source=s):
            return [t, s]
        case Rank(metric=m, source=s):
            return [m, s]
        case Compare(metric=m):
            return [m]
    return []


def _nodes(program: object) -> Iterable[object]:
    yield program
    for child in _children(program):
        yield from _nodes(child)


def _named_entities(program: Program) -> list[str]:
    named = [n.id for n in _nodes(program) if isinstance(n, EntityRef)]
    if isinstance(program, Compare):
        named += [program.left, program.right]
    return list(dict.fromkeys(named))


def _uses_values(program: Program) -> bool:
    return any(isinstance(n, Value) for n in _nodes(program))


def _has_rank(program: Program) -> bool:
    return any(isinstance(n, Rank) for n in _nodes(program))
