"""Compile query programs to one SPARQL query (rdflib store) or one Cypher query (Neo4j store).

Every id (entity, relation, class, property) and every number is a query parameter: SPARQL
variables bound with initial bindings, Cypher ``$parameters``; the query text is built from
constants and fresh variable names only, so no value can change what the query does. The
queries only read (``SELECT``; Cypher ``MATCH`` / ``WITH`` / ``RETURN``) and the store runs
them under a time limit and a row limit (:meth:`~kgllm.graph.base.GraphStore.read_query`).

Each set is computed once, as a set: in SPARQL a sub-``SELECT`` grouped by its member; in
Cypher a list of ``[id, why]`` pairs built in a ``CALL { }`` subquery and capped at
``max_set_size + 1`` members (a larger set is refused, as the protocol executor refuses it).
``why`` carries the facts that put a member in the set, as the protocol executor keeps them:
the edge of a hop, both sides of an intersection, the link of a ``where``; it is a text of
``head<TAB>relation<TAB>tail`` lines. Rankings keep the ties at the boundary: a member is
chosen when its score is at least the k-th best score.

Example::

    query = compile_program(parse_program("(count (hop border both (entity chad)))"), "cypher")
    query.text        # 'CALL { MATCH (n:Entity {id: $p0}) RETURN ... } ... RETURN s2 AS members, ...'
    query.parameters  # {'p0': 'chad', 'p1': 'border', 'cap': 10001}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kgllm.exceptions import InputError
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
    SetExpr,
    Value,
    Where,
)
from kgllm.types import Triple

QueryLanguage = Literal["sparql", "cypher"]
RDF_TYPE = "<http://www.w3.org/1999/02/22-rdf-syntax-ns#type>"
XSD_DOUBLE = "<http://www.w3.org/2001/XMLSchema#double>"


@dataclass(frozen=True)
class CompiledQuery:
    """A program's query: its ``language``, ``text`` and bound ``parameters``."""

    language: QueryLanguage
    text: str
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"language": self.language, "text": self.text, "parameters": dict(self.parameters)}


@dataclass
class Decoded:
    """What a compiled query returned: each member with the facts that put it there, scores where ranked."""

    members: dict[str, tuple[Triple, ...]]
    scores: dict[str, float]
    set_sizes: list[int]
    scored_sizes: list[int]


def compile_program(program: Program, language: QueryLanguage, max_set_size: int = 10_000) -> CompiledQuery:
    """The program as one read-only query in ``language`` (``"sparql"`` or ``"cypher"``)."""
    if language == "sparql":
        return _Sparql(max_set_size).program(program)
    if language == "cypher":
        return _Cypher(max_set_size).program(program)
    raise InputError(f"no compiler for {language!r}; known: sparql, cypher")


def decode(query: CompiledQuery, rows: list[dict[str, Any]]) -> Decoded:
    """Read the rows a store returned for ``query``."""
    if query.language == "sparql":
        members = {row["x"]: _facts(row.get("w")) for row in rows}
        scores = {row["x"]: float(row["s"]) for row in rows if row.get("s") is not None}
        return Decoded(members, scores, [len(members)], [])
    (row,) = rows  # the Cypher query aggregates into one row
    members = {member: _facts(why) for member, why in row["members"]}
    scores = {}
    if row.get("scores") is not None:
        scores = {member: float(s) for (member, _), s in zip(row["members"], row["scores"]) if s is not None}
    return Decoded(members, scores, list(row["sizes"]), list(row["scored"]))


def _facts(why: str | None) -> tuple[Triple, ...]:
    facts = []
    for line in (why or "").split("\n"):
        parts = line.split("\t")
        if len(parts) == 3 and all(parts):
            facts.append(Triple(*parts))
    return tuple(dict.fromkeys(facts))


def _top(program: Program) -> tuple[SetExpr, Metric | None]:
    """The set a program's query returns, and the metric scored on it (for a ranking or a comparison)."""
    match program:
        case Count(source=s) | Exists(source=s):
            return s, None
        case Compare(metric=m, left=a, right=b):
            return Or(EntityRef(a), EntityRef(b)), m
        case Rank(metric=m):
            return program, m
    return program, None


class _Names:
    def __init__(self, max_set_size: int):
        self.parameters: dict[str, Any] = {}
        self.cap = max_set_size + 1
        self._count = 0

    def param(self, value: Any) -> str:
        name = f"p{len(self.parameters)}"
        self.parameters[name] = value
        return name

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}{self._count}"


# =========================================================================== SPARQL
class _Sparql(_Names):
    """Each set is a group pattern binding a member variable and a ``why`` text variable."""

    def program(self, program: Program) -> CompiledQuery:
        top, metric = _top(program)
        if isinstance(program, Compare):
            pattern, why, score = self.scored(top, "?x", metric)  # type: ignore[arg-type]
        elif isinstance(top, Rank):
            pattern, why, score = self.rank(top, "?x")
        else:
            (pattern, why), score = self.set(top, "?x"), None
        projected = f"?x ({why} AS ?w)" + (f" ({score} AS ?s)" if score else "")
        text = f"SELECT {projected} WHERE {{ {pattern} }} LIMIT {self.cap}"
        return CompiledQuery("sparql", text, self.parameters)

    def set(self, node: SetExpr, x: str) -> tuple[str, str]:
        """(pattern binding ``x`` and a why variable, the why variable)."""
        w = "?" + self.fresh("w")
        match node:
            case EntityRef(id=i):
                return f'{{ SELECT {x} {w} WHERE {{ BIND(?{self.param(i)} AS {x}) BIND("" AS {w}) }} }}', w
            case ClassSet(cls=c):
                body = f'{x} {RDF_TYPE} ?{self.param(c)} . FILTER(isIRI({x})) BIND("" AS {w})'
                return f"{{ SELECT DISTINCT {x} {w} WHERE {{ {body} }} }}", w
            case Hop(relation=r, direction=d, source=s):
                y = "?" + self.fresh("y")
                source, _ = self.set(s, y)
                e = "?" + self.fresh("e")
                edge = self.edge(y, r, d, x, e)
                return f"{{ SELECT {x} (SAMPLE({e}) AS {w}) WHERE {{ {source} {edge} }} GROUP BY {x} }}", w
            case And(left=a, right=b):
                (pa, wa), (pb, wb) = self.set(a, x), self.set(b, x)
                why = f'CONCAT({wa}, "\\n", {wb})'
                return f"{{ SELECT {x} (SAMPLE({why}) AS {w}) WHERE {{ {pa} {pb} }} GROUP BY {x} }}", w
            case Or(left=a, right=b):
                (pa, wa), (pb, wb) = self.set(a, x), self.set(b, x)
                e = "?" + self.fresh("e")
                union = f"{{ {pa} BIND({wa} AS {e}) }} UNION {{ {pb} BIND({wb} AS {e}) }}"
                return f"{{ SELECT {x} (SAMPLE({e}) AS {w}) WHERE {{ {union} }} GROUP BY {x} }}", w
            case Minus(left=a, right=b):
                (pa, wa), (pb, _) = self.set(a, x), self.set(b, x)
                return f"{{ SELECT {x} ({wa} AS {w}) WHERE {{ {pa} MINUS {{ {pb} }} }} }}", w
            case FilterClass(cls=c, source=s):
                ps, ws = self.set(s, x)
                return f"{{ SELECT {x} ({ws} AS {w}) WHERE {{ {ps} {x} {RDF_TYPE} ?{self.param(c)} . }} }}", w
            case Where(relation=r, direction=d, target=t, source=s, negate=negate):
                ps, ws = self.set(s, x)
                y = "?" + self.fresh("y")
                pt, _ = self.set(t, y)
                e = "?" + self.fresh("e")
                link = self.edge(x, r, d, y, e)
                if negate:
                    return f"{{ SELECT {x} ({ws} AS {w}) WHERE {{ {ps} MINUS {{ {pt} {link} }} }} }}", w
                why = f'CONCAT({ws}, "\\n", {e})'
                return f"{{ SELECT {x} (SAMPLE({why}) AS {w}) WHERE {{ {ps} {pt} {link} }} GROUP BY {x} }}", w
            case Rank():
                pattern, why, _ = self.rank(node, x)
                return f"{{ SELECT {x} ({why} AS {w}) WHERE {{ {pattern} }} }}", w
        raise InputError(f"not a set expression: {node!r}")

    def edge(self, a: str, relation: str, direction: str, b: str, e: str) -> str:
        """``a`` to ``b`` by one ``relation`` edge walked in ``direction`` (``out``: ``a -> b``), its text in ``e``."""
        r = "?" + self.param(relation)

        def one(h: str, t: str) -> str:
            return f'{h} {r} {t} . FILTER(isIRI({t})) BIND(CONCAT(STR({h}), "\\t", STR({r}), "\\t", STR({t})) AS {e})'

        if direction == "out":
            return one(a, b)
        if direction == "in":
            return one(b, a)
        return f"{{ {one(a, b)} }} UNION {{ {one(b, a)} }}"

    def scored(self, node: SetExpr, x: str, metric: Metric) -> tuple[str, str, str]:
        """(pattern binding ``x``, its why and its ``metric`` score, the why variable, the score variable)."""
        ps, ws = self.set(node, x)
        w, s = "?" + self.fresh("w"), "?" + self.fresh("s")
        match metric:
            case Degree(relation=r, direction=d, cls=c):
                o, e = "?" + self.fresh("o"), "?" + self.fresh("e")
                edges = self.edge(x, r, d, o, e) + ("" if c is None else f" {o} {RDF_TYPE} ?{self.param(c)} .")
                body = f"{ps} OPTIONAL {{ {edges} }}"
                inner = f"SELECT {x} (SAMPLE({ws}) AS {w}) (COUNT(DISTINCT {o}) AS {s}) WHERE {{ {body} }} GROUP BY {x}"
                return f"{{ {inner} }}", w, s
            case Value(property=p):
                lit, v = "?" + self.fresh("l"), "?" + self.fresh("v")
                body = f"{ps} {x} ?{self.param(p)} {lit} . FILTER(isLiteral({lit})) BIND({XSD_DOUBLE}({lit}) AS {v})"
                inner = f"SELECT {x} (SAMPLE({ws}) AS {w}) (MAX({v}) AS {s}) WHERE {{ {body} }} GROUP BY {x}"
                return f"{{ {inner} }} FILTER(BOUND({s}))", w, s
        raise InputError(f"not a metric: {metric!r}")

    def rank(self, node: Rank, x: str) -> tuple[str, str, str]:
        """The ``k`` best members and the ties at the boundary: a score at least the k-th best score.

        The boundary is the worst of the ``k`` best scores, one aggregate row (rdflib joins it once;
        an ``OPTIONAL`` would be evaluated again for every member).
        """
        pattern, w, s = self.scored(node.source, x, node.metric)
        y = "?" + self.fresh("y")
        again, _, t = self.scored(node.source, y, node.metric)
        b = "?" + self.fresh("b")
        order, worst, at_least = ("DESC", "MIN", ">=") if node.order == "max" else ("ASC", "MAX", "<=")
        best_k = f"SELECT {t} WHERE {{ {again} }} ORDER BY {order}({t}) LIMIT {node.k}"
        boundary = f"{{ SELECT ({worst}({t}) AS {b}) WHERE {{ {{ {best_k} }} }} }}"
        return f"{pattern} {boundary} FILTER({s} {at_least} {b})", w, s


# =========================================================================== Cypher
class _Cypher(_Names):
    """Each set is a list variable of ``[id, why]`` pairs, built by one clause appended to the query."""

    def __init__(self, max_set_size: int):
        super().__init__(max_set_size)
        self.clauses: list[str] = []
        self.sets: list[str] = []
        self.scored_lists: list[str] = []

    def program(self, program: Program) -> CompiledQuery:
        self.parameters["cap"] = self.cap
        top, metric = _top(program)
        scores = "null"
        if isinstance(program, Compare):
            members, scores = self.scored(self.set(top), metric)  # type: ignore[arg-type]
        elif isinstance(top, Rank):
            members, scores = self.rank(top)
        else:
            members = self.set(top)
        sizes = ", ".join(f"size({s})" for s in self.sets)
        scored = ", ".join(f"size({s})" for s in self.scored_lists)
        returned = f"RETURN {members} AS members, {scores} AS scores, [{sizes}] AS sizes, [{scored}] AS scored"
        return CompiledQuery("cypher", "\n".join([*self.clauses, returned]), self.parameters)

    def add(self, clause: str, name: str) -> str:
        self.clauses.append(clause)
        self.sets.append(name)
        return name

    def set(self, node: SetExpr) -> str:
        """The name of the list variable holding the set's ``[id, why]`` pairs."""
        out = self.fresh("s")
        cap = f"[..$cap] AS {out}"
        entity = "n.is_relation IS NULL AND n.is_class IS NULL"
        match node:
            case EntityRef(id=i):
                return self.add(
                    f"CALL {{ MATCH (n:Entity {{id: ${self.param(i)}}}) RETURN collect([n.id, '']) AS {out} }}", out
                )
            case ClassSet(cls=c):
                where = f"${self.param(c)} IN coalesce(n.types, []) AND {entity}"
                return self.add(f"CALL {{ MATCH (n:Entity) WHERE {where} RETURN collect([n.id, '']){cap} }}", out)
            case Hop(relation=r, direction=d, source=s):
                src = self.set(s)
                pattern = self.pattern("a", r, d, "b")
                why = "startNode(e).id + '\\t' + e.id + '\\t' + endNode(e).id"
                body = (
                    f"WITH {src} UNWIND {src} AS p MATCH (a:Entity {{id: p[0]}}){pattern}(b:Entity) "
                    f"WITH b.id AS id, collect({why})[0] AS why RETURN collect([id, why]){cap}"
                )
                return self.add(f"CALL {{ {body} }}", out)
            case And(left=a, right=b):
                sa, sb = self.set(a), self.set(b)
                other = f"head([q IN {sb} WHERE q[0] = p[0] | q[1]])"
                expr = f"[p IN {sa} WHERE p[0] IN [q IN {sb} | q[0]] | [p[0], p[1] + '\\n' + {other}]]"
                return self.add(f"WITH *, {expr} AS {out}", out)
            case Or(left=a, right=b):
                sa, sb = self.set(a), self.set(b)
                expr = f"({sa} + [q IN {sb} WHERE NOT q[0] IN [p IN {sa} | p[0]]])"
                return self.add(f"WITH *, {expr}{cap}", out)
            case Minus(left=a, right=b):
                sa, sb = self.set(a), self.set(b)
                return self.add(f"WITH *, [p IN {sa} WHERE NOT p[0] IN [q IN {sb} | q[0]]] AS {out}", out)
            case FilterClass(cls=c, source=s):
                src = self.set(s)
                body = (
                    f"WITH {src} UNWIND {src} AS p MATCH (n:Entity {{id: p[0]}}) "
                    f"WHERE ${self.param(c)} IN coalesce(n.types, []) RETURN collect(p) AS {out}"
                )
                return self.add(f"CALL {{ {body} }}", out)
            case Where(relation=r, direction=d, target=t, source=s, negate=negate):
                src, target = self.set(s), self.set(t)
                pattern = self.pattern("n", r, d, "m")
                why = "startNode(e).id + '\\t' + e.id + '\\t' + endNode(e).id"
                kept = (
                    "size(links) = 0 RETURN collect(p)"
                    if negate
                    else "size(links) > 0 RETURN collect([p[0], p[1] + '\\n' + links[0]])"
                )
                body = (
                    f"WITH {src}, {target} UNWIND {src} AS p MATCH (n:Entity {{id: p[0]}}) "
                    f"OPTIONAL MATCH (n){pattern}(m:Entity) WHERE m.id IN [q IN {target} | q[0]] "
                    f"WITH p, collect({why}) AS links WHERE {kept} AS {out}"
                )
                return self.add(f"CALL {{ {body} }}", out)
            case Rank():
                chosen, _ = self.rank(node)
                return chosen
        raise InputError(f"not a set expression: {node!r}")

    def pattern(self, a: str, relation: str, direction: str, b: str) -> str:
        """The relationship part of ``(a)...(b)``: one ``relation`` edge in ``direction`` from ``a``."""
        rel = f"[e:REL {{id: ${self.param(relation)}}}]"
        return {"out": f"-{rel}->", "in": f"<-{rel}-", "both": f"-{rel}-"}[direction]

    def scored(self, source: str, metric: Metric, order: str = "DESC") -> tuple[str, str]:
        """Names of two parallel lists: the members of ``source`` that have a score, sorted, and their scores."""
        members, scores = self.fresh("r"), self.fresh("c")
        match metric:
            case Degree(relation=r, direction=d, cls=c):
                pattern = self.pattern("n", r, d, "m")
                of_class = "" if c is None else f" WHERE ${self.param(c)} IN coalesce(m.types, [])"
                score = f"OPTIONAL MATCH (n){pattern}(m:Entity){of_class} WITH p, count(DISTINCT m) AS score"
            case Value(property=prop):
                score = (
                    f"OPTIONAL MATCH (a:Attribute {{subject: p[0], property: ${self.param(prop)}}}) "
                    "WITH p, max(toFloat(a.value)) AS score WHERE score IS NOT NULL"
                )
            case _:
                raise InputError(f"not a metric: {metric!r}")
        body = (
            f"WITH {source} UNWIND {source} AS p MATCH (n:Entity {{id: p[0]}}) {score} "
            f"ORDER BY score {order} RETURN collect(p) AS {members}, collect(score) AS {scores}"
        )
        self.clauses.append(f"CALL {{ {body} }}")
        self.scored_lists.append(members)
        return members, scores

    def rank(self, node: Rank) -> tuple[str, str]:
        """Names of the chosen members' list and their scores' list (ties at the boundary kept)."""
        order, at_least = ("DESC", ">=") if node.order == "max" else ("ASC", "<=")
        members, scores = self.scored(self.set(node.source), node.metric, order)
        k, boundary = self.param(node.k), self.fresh("b")
        self.clauses.append(
            f"WITH *, CASE WHEN size({scores}) >= ${k} THEN {scores}[${k} - 1] ELSE null END AS {boundary}"
        )
        chosen = f"[j IN range(0, size({members}) - 1) WHERE {boundary} IS NULL OR {scores}[j] {at_least} {boundary}"
        out, out_scores = self.fresh("s"), self.fresh("c")
        self.add(f"WITH *, {chosen} | {members}[j]] AS {out}, {chosen} | {scores}[j]] AS {out_scores}", out)
        return out, out_scores
