"""A small typed query-program language over a knowledge graph, with a text form that parses back.

A program is a tree of frozen dataclasses. Set expressions denote sets of entity ids;
the top of a program may also be a count, a yes/no check, a ranking or a comparison.
The text form is an S-expression, one node per parenthesis; ids are written bare when
they hold no space, parenthesis or quote, and as double-quoted strings otherwise::

    (count (hop neighborOf both (entity chad)))
    (exists (and (hop neighborOf both (entity spain)) (entity norway)))
    (argmax 1 (degree neighborOf both) (filter-class Country (hop locatedIn in (entity south_america))))
    (where-not locatedIn out (entity western_africa) (hop neighborOf both (entity niger)))

``parse_program(format_program(p)) == p`` for every program ``p``.

Node meanings (``direction`` is ``out``: from head to tail, ``in``: from tail to head, ``both``):

- ``(entity ID)``: the one entity; ``(class ID)``: every entity of a class;
- ``(hop REL DIR SET)``: the entities one ``REL`` edge away from any member of ``SET``;
- ``(and A B)``, ``(or A B)``, ``(minus A B)``: intersection, union, difference;
- ``(filter-class CLASS SET)``: the members of a class;
- ``(where REL DIR TARGET SET)`` / ``(where-not ...)``: members with (without) a ``REL`` edge
  in ``DIR`` to a member of ``TARGET``;
- ``(count SET)``, ``(exists SET)``;
- ``(argmax K METRIC SET)`` / ``(argmin ...)``: the ``K`` best members (ties at the boundary kept);
- ``(compare more|fewer|same METRIC A B)``: whether entity ``A`` has more (fewer, as many) than ``B``;
- metrics: ``(degree REL DIR)``, the number of distinct entities one ``REL`` edge away
  (``(degree REL DIR CLASS)``: only those of ``CLASS``);
  ``(value PROPERTY)``, a numeric literal of the entity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Union

from kgllm.exceptions import ParseError

Direction = Literal["out", "in", "both"]
DIRECTIONS = ("out", "in", "both")
COMPARISONS = ("more", "fewer", "same")


# ---------------------------------------------------------------- set expressions
@dataclass(frozen=True, slots=True)
class EntityRef:
    """The set holding one entity."""

    id: str


@dataclass(frozen=True, slots=True)
class ClassSet:
    """Every entity of a class."""

    cls: str


@dataclass(frozen=True, slots=True)
class Hop:
    """The entities one ``relation`` edge away from any member of ``source``."""

    relation: str
    direction: Direction
    source: SetExpr


@dataclass(frozen=True, slots=True)
class And:
    """Intersection."""

    left: SetExpr
    right: SetExpr


@dataclass(frozen=True, slots=True)
class Or:
    """Union."""

    left: SetExpr
    right: SetExpr


@dataclass(frozen=True, slots=True)
class Minus:
    """Difference: the members of ``left`` not in ``right``."""

    left: SetExpr
    right: SetExpr


@dataclass(frozen=True, slots=True)
class FilterClass:
    """The members of ``source`` that belong to class ``cls``."""

    cls: str
    source: SetExpr


@dataclass(frozen=True, slots=True)
class Where:
    """The members of ``source`` with (``negate``: without) a ``relation`` edge to a member of ``target``."""

    relation: str
    direction: Direction
    target: SetExpr
    source: SetExpr
    negate: bool = False


@dataclass(frozen=True, slots=True)
class Rank:
    """The ``k`` members of ``source`` with the highest (``order="max"``) or lowest ``metric``."""

    order: Literal["max", "min"]
    k: int
    metric: Metric
    source: SetExpr


SetExpr = Union[EntityRef, ClassSet, Hop, And, Or, Minus, FilterClass, Where, Rank]


# ---------------------------------------------------------------- metrics
@dataclass(frozen=True, slots=True)
class Degree:
    """How many distinct entities are one ``relation`` edge away (e.g. the number of neighbours);
    with ``cls``, only those of that class (a region's countries, not its subregions)."""

    relation: str
    direction: Direction
    cls: str | None = None


@dataclass(frozen=True, slots=True)
class Value:
    """A numeric literal of the entity (``property`` is the predicate's id)."""

    property: str


Metric = Union[Degree, Value]


# ---------------------------------------------------------------- top-level forms
@dataclass(frozen=True, slots=True)
class Count:
    """The number of members of ``source``."""

    source: SetExpr


@dataclass(frozen=True, slots=True)
class Exists:
    """Whether ``source`` has any member."""

    source: SetExpr


@dataclass(frozen=True, slots=True)
class Compare:
    """Whether entity ``left`` has more (``fewer``, the ``same``) ``metric`` than entity ``right``."""

    op: Literal["more", "fewer", "same"]
    metric: Metric
    left: str
    right: str


Program = Union[SetExpr, Count, Exists, Compare]
SET_TYPES = (EntityRef, ClassSet, Hop, And, Or, Minus, FilterClass, Where, Rank)


# ---------------------------------------------------------------- text form
_BARE = re.compile(r'^[^\s()"\\]+$')
_TOKEN = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|([^\s()"]+))')


def _atom(value: str) -> str:
    if _BARE.match(value) and value not in DIRECTIONS:
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_program(program: Program | Metric) -> str:
    """The program's text form (see the module docstring); :func:`parse_program` reads it back."""
    match program:
        case EntityRef(id=i):
            return f"(entity {_atom(i)})"
        case ClassSet(cls=c):
            return f"(class {_atom(c)})"
        case Hop(relation=r, direction=d, source=s):
            return f"(hop {_atom(r)} {d} {format_program(s)})"
        case And(left=a, right=b):
            return f"(and {format_program(a)} {format_program(b)})"
        case Or(left=a, right=b):
            return f"(or {format_program(a)} {format_program(b)})"
        case Minus(left=a, right=b):
            return f"(minus {format_program(a)} {format_program(b)})"
        case FilterClass(cls=c, source=s):
            return f"(filter-class {_atom(c)} {format_program(s)})"
        case Where(relation=r, direction=d, target=t, source=s, negate=n):
            return f"({'where-not' if n else 'where'} {_atom(r)} {d} {format_program(t)} {format_program(s)})"
        case Rank(order=o, k=k, metric=m, source=s):
            return f"(arg{o} {k} {format_program(m)} {format_program(s)})"
        case Degree(relation=r, direction=d, cls=c):
            return f"(degree {_atom(r)} {d}{'' if c is None else ' ' + _atom(c)})"
        case Value(property=p):
            return f"(value {_atom(p)})"
        case Count(source=s):
            return f"(count {format_program(s)})"
        case Exists(source=s):
            return f"(exists {format_program(s)})"
        case Compare(op=o, metric=m, left=a, right=b):
            return f"(compare {o} {format_program(m)} {_atom(a)} {_atom(b)})"
    raise ParseError(f"not a program node: {program!r}")


class _Quoted(str):
    """An atom that was written in quotes (so ``"both"`` is an id, not a direction)."""


def _tokens(text: str) -> list[str]:
    pos = 0
    out: list[str] = []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ParseError(f"cannot read the program at character {pos}: {text[pos : pos + 20]!r}")
        pos = m.end()
        if m.group(1):
            out.append("(")
        elif m.group(2):
            out.append(")")
        elif m.group(3) is not None:
            out.append(_Quoted(re.sub(r"\\(.)", r"\1", m.group(3))))
        else:
            out.append(m.group(4))
    return out


def _tree(tokens: list[str], i: int = 0) -> tuple[object, int]:
    if i >= len(tokens):
        raise ParseError("the program ends early: a parenthesis is not closed")
    token = tokens[i]
    if token == ")" and not isinstance(token, _Quoted):
        raise ParseError("unexpected ')' in the program")
    if token != "(" or isinstance(token, _Quoted):
        return token, i + 1
    items, i = [], i + 1
    while i < len(tokens) and not (tokens[i] == ")" and not isinstance(tokens[i], _Quoted)):
        item, i = _tree(tokens, i)
        items.append(item)
    if i >= len(tokens):
        raise ParseError("the program ends early: a parenthesis is not closed")
    return items, i + 1


def parse_program(text: str) -> Program:
    """Read a program from its text form; raises :class:`ParseError` on malformed text.

    Example: ``parse_program("(count (hop neighborOf both (entity chad)))")``.
    """
    if not isinstance(text, str) or not text.strip():
        raise ParseError("the program text is empty")
    tokens = _tokens(text)
    tree, end = _tree(tokens)
    if end != len(tokens):
        raise ParseError("text after the end of the program")
    program = _build(tree)
    if isinstance(program, (Degree, Value)):
        raise ParseError(f"expected a program, found the metric {format_program(program)}")
    return program


def _id(x: object, what: str) -> str:
    if not isinstance(x, str) or (x in ("(", ")") and not isinstance(x, _Quoted)):
        raise ParseError(f"expected {what}, found {x!r}")
    return str(x)


def _direction(x: object) -> Direction:
    if isinstance(x, _Quoted) or x not in DIRECTIONS:
        raise ParseError(f"expected a direction (out, in, both), found {x!r}")
    return x  # type: ignore[return-value]


def _set(x: object) -> SetExpr:
    node = _build(x)
    if not isinstance(node, SET_TYPES):
        raise ParseError(f"expected a set expression, found {format_program(node)}")
    return node


def _metric(x: object) -> Metric:
    node = _build(x)
    if not isinstance(node, (Degree, Value)):
        raise ParseError("expected a metric: (degree REL DIR [CLASS]) or (value PROPERTY)")
    return node


_ARITY = {
    "entity": 1,
    "class": 1,
    "hop": 3,
    "and": 2,
    "or": 2,
    "minus": 2,
    "filter-class": 2,
    "where": 4,
    "where-not": 4,
    "argmax": 3,
    "argmin": 3,
    "degree": 2,
    "value": 1,
    "count": 1,
    "exists": 1,
    "compare": 4,
}


def _build(tree: object) -> Program | Metric:
    if not isinstance(tree, list) or not tree:
        raise ParseError(f"expected a parenthesized form, found {tree!r}")
    head, args = tree[0], tree[1:]
    if not isinstance(head, str) or isinstance(head, _Quoted) or head not in _ARITY:
        raise ParseError(f"unknown form {head!r}; known: {', '.join(sorted(_ARITY))}")
    if len(args) != _ARITY[head] and not (head == "degree" and len(args) == 3):  # (degree REL DIR [CLASS])
        raise ParseError(f"({head} ...) takes {_ARITY[head]} argument(s), found {len(args)}")
    match head:
        case "entity":
            return EntityRef(_id(args[0], "an entity id"))
        case "class":
            return ClassSet(_id(args[0], "a class id"))
        case "hop":
            return Hop(_id(args[0], "a relation id"), _direction(args[1]), _set(args[2]))
        case "and":
            return And(_set(args[0]), _set(args[1]))
        case "or":
            return Or(_set(args[0]), _set(args[1]))
        case "minus":
            return Minus(_set(args[0]), _set(args[1]))
        case "filter-class":
            return FilterClass(_id(args[0], "a class id"), _set(args[1]))
        case "where" | "where-not":
            return Where(
                _id(args[0], "a relation id"), _direction(args[1]), _set(args[2]), _set(args[3]), head == "where-not"
            )
        case "argmax" | "argmin":
            k = args[0]
            if not isinstance(k, str) or isinstance(k, _Quoted) or not k.isdigit() or int(k) < 1:
                raise ParseError(f"({head} K ...) needs a positive whole K, found {k!r}")
            return Rank("max" if head == "argmax" else "min", int(k), _metric(args[1]), _set(args[2]))
        case "degree":
            cls = _id(args[2], "a class id") if len(args) == 3 else None
            return Degree(_id(args[0], "a relation id"), _direction(args[1]), cls)
        case "value":
            return Value(_id(args[0], "a property id"))
        case "count":
            return Count(_set(args[0]))
        case "exists":
            return Exists(_set(args[0]))
        case "compare":
            op = args[0]
            if isinstance(op, _Quoted) or op not in COMPARISONS:
                raise ParseError(f"(compare OP ...) needs one of {', '.join(COMPARISONS)}, found {op!r}")
            return Compare(op, _metric(args[1]), _id(args[2], "an entity id"), _id(args[3], "an entity id"))
    raise ParseError(f"unknown form {head!r}")  # pragma: no cover
