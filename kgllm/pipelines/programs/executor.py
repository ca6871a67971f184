"""Run query programs on any :class:`~kgllm.graph.base.GraphStore`, read-only and bounded.

Only the store's read methods are called (``neighbors``, ``entities``, ``describe``, and
``query`` for numeric values where the store speaks SPARQL), so a program never writes.
Bounds: a wall-clock ``time_limit``, ``max_set_size`` members per set (checked while a set
is being built, so a set that would be larger is refused before it fills memory) and
``max_fanout`` edges read per entity and step. A bound that is hit raises
:class:`ProgramLimitError` with what was being computed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from kgllm.exceptions import InputError
from kgllm.graph.base import GraphStore
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


class _SparqlStore(Protocol):
    """A store whose ``supports_sparql`` is true: it answers SPARQL with bindings."""

    def query(self, sparql: str, **bindings: str) -> Any: ...


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

    def __post_init__(self) -> None:
        if self.time_limit <= 0 or min(self.max_set_size, self.max_fanout, self.max_checked) < 1:
            raise InputError("time_limit, max_set_size, max_fanout and max_checked must be positive")


# members -> the facts that put each member in the set (empty for an entity named or a class member)
Members = dict[str, tuple[Triple, ...]]


@dataclass
class Result:
    """What a program computed.

    ``kind`` is ``set``, ``count``, ``bool`` or ``ranking``; ``value`` is the member ids (sorted),
    the number, the truth value, or the chosen ids. ``support`` are the facts that make the
    value true (for a count: the facts counted); ``checked`` the other facts read on the way
    (for a "no": the facts looked at). ``scores`` holds a metric per entity where one was computed.
    """

    kind: str
    value: Any
    support: list[Triple] = field(default_factory=list)
    checked: list[Triple] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)


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
            case Degree(relation=r, direction=d):
                edges = list(self._edges(entity, r, d))
                return float(len(edges)), tuple(t for _, t in edges)
            case Value(property=p):
                return self._numeric(entity, p), ()
        raise ProgramError(f"not a metric: {metric!r}")

    def _numeric(self, entity: str, prop: str) -> float | None:
        if not getattr(self.store, "supports_sparql", False):
            raise ProgramError(f"the {self.store.name} store offers no numeric values to rank or compare by")
        rows = cast(_SparqlStore, self.store).query("SELECT ?v WHERE { ?s ?p ?v }", s=entity, p=prop)
        values = []
        for (v,) in rows:
            try:
                values.append(float(v.toPython()))
            except (TypeError, ValueError, AttributeError):
                continue
        return max(values) if values else None

    def _compare(self, program: Compare) -> Result:
        a, b = program.left, program.right
        for x in (a, b):
            if self.store.entity(x) is None:
                raise ProgramError(f"the graph has no entity {x!r}")
        shared = set(self._types(a)) & set(self._types(b))
        if not shared:
            raise ProgramError(
                f"{self.store.label(a)} and {self.store.label(b)} are different kinds of thing; they cannot be compared"
            )
        (va, why_a), (vb, why_b) = self._measure(a, program.metric), self._measure(b, program.metric)
        if va is None or vb is None:
            missing = self.store.label(a if va is None else b)
            raise ProgramError(f"the graph has no value of {format_program(program.metric)} for {missing}")
        if isinstance(program.metric, Degree) and va == 0 and vb == 0:
            raise ProgramError(
                f"neither {self.store.label(a)} nor {self.store.label(b)} has any "
                f"{self.store.label(program.metric.relation)!r} fact; they cannot be compared by it"
            )
        value = {"more": va > vb, "fewer": va < vb, "same": va == vb}[program.op]
        members = {a: why_a, b: why_b}
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
