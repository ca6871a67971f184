"""Read-only, bounded query execution shared by the stores and the ``/sparql`` endpoint.

:func:`prepare_sparql` parses a SPARQL query and refuses anything that is not a plain read of
the one graph (SPARQL Update, ``SERVICE``, ``FROM``); :class:`DeadlineGraph` is a view of an
rdflib graph whose reads stop a query once its time is up (rdflib's engine has no timeout of
its own, but it reads the graph throughout). :func:`check_cypher` refuses Cypher that writes,
calls procedures or loads files, before it reaches a server.
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, overload

from pyparsing import ParseException
from rdflib import Graph
from rdflib.plugins.sparql import prepareQuery
from rdflib.plugins.sparql.algebra import traverse
from rdflib.plugins.sparql.parser import parseUpdate
from rdflib.plugins.sparql.sparql import Query

from kgllm.exceptions import QueryLimitError, QueryRefusedError

if TYPE_CHECKING:
    from rdflib.graph import (
        _TripleOrTriplePathType,
        _TriplePathPatternType,
        _TriplePathType,
        _TriplePatternType,
        _TripleSelectorType,
        _TripleType,
    )

UPDATE_REFUSAL = "this SPARQL endpoint is read-only: SPARQL Update is not accepted"


def prepare_sparql(text: str) -> Query:
    """The parsed query; :class:`QueryRefusedError` for an update, a syntax error, ``SERVICE`` or ``FROM``."""
    try:
        query = prepareQuery(text)
    except ParseException as exc:
        try:
            parseUpdate(text)
        except Exception:  # not an update either: report the query's syntax error
            raise QueryRefusedError(f"SPARQL syntax error: {exc}") from None
        raise QueryRefusedError(UPDATE_REFUSAL) from None
    except Exception as exc:  # rdflib raises others for bad IRIs, unknown prefixes, ...
        raise QueryRefusedError(f"invalid SPARQL query: {exc}") from None
    if query.algebra.get("datasetClause"):
        raise QueryRefusedError("FROM and FROM NAMED are not supported: this endpoint serves one graph")
    services: list = []
    traverse(query.algebra, visitPre=lambda node: services.append(node) if _is_service(node) else None)
    if services:
        raise QueryRefusedError("SERVICE is not supported: this endpoint does not query other endpoints")
    return query


def _is_service(node: Any) -> bool:
    return getattr(node, "name", None) == "ServiceGraphPattern"


class DeadlineGraph(Graph):
    """The same graph (same store) whose reads raise :class:`QueryLimitError` once ``deadline`` has passed.

    ``deadline`` is a :func:`time.monotonic` instant; ``time_limit`` (seconds) only words the error.
    """

    def __init__(self, graph: Graph, deadline: float, time_limit: float = 0.0):
        super().__init__(store=graph.store, identifier=graph.identifier, namespace_manager=graph.namespace_manager)
        self._deadline = deadline
        self._time_limit = time_limit

    def _expired(self) -> None:
        if time.monotonic() > self._deadline:
            raise QueryLimitError(f"the query ran past its time limit of {self._time_limit:g} s")

    @overload
    def triples(self, triple: _TriplePatternType) -> Generator[_TripleType, None, None]: ...

    @overload
    def triples(self, triple: _TriplePathPatternType) -> Generator[_TriplePathType, None, None]: ...

    @overload
    def triples(self, triple: _TripleSelectorType) -> Generator[_TripleOrTriplePathType, None, None]: ...

    def triples(self, triple: _TripleSelectorType) -> Generator[_TripleOrTriplePathType, None, None]:
        for count, found in enumerate(super().triples(triple)):
            if count % 256 == 0:
                self._expired()
            yield found
        self._expired()


# Cypher clauses and procedures that change data or the schema, or reach outside the database.
# A word after a dot is a property name (``n.set``), not a clause.
_CYPHER_WRITES = re.compile(
    r"(?<![.\w$])(CREATE|MERGE|SET|DELETE|DETACH|REMOVE|DROP|LOAD\s+CSV|FOREACH|CALL(?!\s*\{)|USE|GRANT|DENY|"
    r"REVOKE|IN\s+TRANSACTIONS)\b",
    re.IGNORECASE,
)
_CYPHER_STRINGS = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|//[^\n]*|/\*.*?\*/", re.DOTALL)


def check_cypher(text: str) -> str:
    """``text`` if it is one read-only Cypher query; :class:`QueryRefusedError` otherwise.

    Refused: clauses that write (``CREATE``, ``MERGE``, ``SET``, ``DELETE``, ``REMOVE``, ...),
    procedure calls (``CALL db.*``, ``CALL apoc.*``, ``CALL dbms.*``; a ``CALL { ... }`` subquery
    is allowed), ``LOAD CSV``, ``USE`` of another database, and several statements at once.
    Words inside string literals and comments do not count.
    """
    if not isinstance(text, str) or not text.strip():
        raise QueryRefusedError("the Cypher query is empty")
    code = _CYPHER_STRINGS.sub("''", text)
    if ";" in code.strip().rstrip(";"):
        raise QueryRefusedError("send one Cypher statement, not several")
    found = _CYPHER_WRITES.search(code)
    if found:
        word = " ".join(found.group(0).split()).upper()
        raise QueryRefusedError(f"the Cypher query is not read-only: {word} is not allowed")
    if not re.search(r"\bRETURN\b", code, re.IGNORECASE):
        raise QueryRefusedError("the Cypher query returns nothing (no RETURN)")
    return text
