"""A read-only SPARQL 1.1 Protocol endpoint at ``/sparql`` over the session's store.

Queries come as ``GET /sparql?query=...``, as a ``POST`` form (``query=...``) or as a ``POST`` body
of type ``application/sparql-query``. SPARQL Update (``INSERT``, ``DELETE``, ``LOAD``, ``CLEAR``,
...) is refused with 400, as are ``SERVICE`` clauses and ``FROM`` / ``FROM NAMED`` (and the
``default-graph-uri`` / ``named-graph-uri`` parameters), which would make the server fetch other
graphs from the network.

Results follow the ``Accept`` header (or a ``format`` parameter, as SPARQLWrapper sends):
SELECT and ASK as SPARQL JSON (the default), XML, CSV or TSV; CONSTRUCT and DESCRIBE as Turtle
(the default), N-Triples, RDF/XML or JSON-LD. A query returns at most ``MAX_ROWS`` rows (or
triples); a longer result is cut there and the response carries ``X-SPARQL-Truncated: <limit>``.
A query that runs past ``TIME_LIMIT_S`` seconds is stopped and answered 503: the deadline is
checked each time the engine reads the graph.

Over the rdflib store, rdflib's own SPARQL engine runs on the store's graph. A store without
SPARQL (``supports_sparql`` false, such as the Neo4j store) answers 501.

Example::

    from SPARQLWrapper import JSON, SPARQLWrapper

    endpoint = SPARQLWrapper("http://127.0.0.1:8000/sparql")
    endpoint.setQuery("SELECT ?s WHERE { ?s ?p ?o } LIMIT 3")
    endpoint.setReturnFormat(JSON)
    endpoint.query().convert()["results"]["bindings"]
"""

from __future__ import annotations

import threading
import time
from itertools import islice
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from rdflib import Graph
from rdflib.query import Result
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, QueryParams

from kgllm.exceptions import QueryLimitError, QueryRefusedError
from kgllm.graph.queries import UPDATE_REFUSAL, DeadlineGraph, prepare_sparql

router = APIRouter(tags=["SPARQL"])

MAX_ROWS = 10_000  # rows of a SELECT, triples of a CONSTRUCT or DESCRIBE
TIME_LIMIT_S = 10.0
MAX_QUERY_CHARS = 16_000

# media type -> rdflib serializer, in order of preference when the client accepts anything
RESULT_TYPES = {
    "application/sparql-results+json": "json",
    "application/sparql-results+xml": "xml",
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",
}
GRAPH_TYPES = {
    "text/turtle": "turtle",
    "application/n-triples": "nt",
    "application/rdf+xml": "xml",
    "application/ld+json": "json-ld",
}
# what clients ask for that names one of those
ALIASES = {
    "application/json": "application/sparql-results+json",
    "text/javascript": "application/sparql-results+json",
    "application/javascript": "application/sparql-results+json",
    "application/xml": "application/sparql-results+xml",
    "text/xml": "application/sparql-results+xml",
    "text/plain": "application/n-triples",
    "application/x-turtle": "text/turtle",
}
# a graph asked for in a result format's family (rdflib's SPARQLStore does this)
GRAPH_FOR_RESULTS = {
    "application/sparql-results+json": "application/ld+json",
    "application/sparql-results+xml": "application/rdf+xml",
}
FORMAT_PARAMETER = {
    "json": "application/sparql-results+json",
    "xml": "application/sparql-results+xml",
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "turtle": "text/turtle",
    "n3": "text/turtle",
    "nt": "application/n-triples",
    "rdf+xml": "application/rdf+xml",
    "json-ld": "application/ld+json",
}
UPDATE_TYPE = "application/sparql-update"
QUERY_TYPE = "application/sparql-query"
FORM_TYPE = "application/x-www-form-urlencoded"


# rdflib's engine caches state on the graph while it evaluates: queries take turns.
_ONE_QUERY_AT_A_TIME = threading.Lock()


# What a SPARQL client can meet beyond the API's common errors (declared for OpenAPI clients).
SPARQL_RESPONSES: dict[int | str, dict] = {
    200: {"description": "Results as negotiated: SPARQL JSON/XML/CSV/TSV, or an RDF syntax for CONSTRUCT"},
    406: {"description": "No result format the client accepts"},
    415: {"description": "The query was sent in a content type other than a form or application/sparql-query"},
    501: {"description": "This store does not run SPARQL"},
}


@router.get("/sparql", summary="SPARQL 1.1 query (read-only)", responses=SPARQL_RESPONSES)
def sparql_get(request: Request) -> Response:
    """Run the ``query`` parameter; SPARQL 1.1 Protocol, query via GET."""
    params = request.query_params
    if "update" in params:
        _refuse_update()
    return _answer(request, _one(params.getlist("query")), params)


@router.post("/sparql", summary="SPARQL 1.1 query by POST (read-only)", responses=SPARQL_RESPONSES)
async def sparql_post(request: Request) -> Response:
    """Run a query sent as a form (``query=``) or directly (``application/sparql-query``)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    params: QueryParams | FormData = request.query_params
    if kind == UPDATE_TYPE:
        _refuse_update()
    if kind == QUERY_TYPE:
        body = await request.body()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(400, "the query is not UTF-8 text") from None
    elif kind == FORM_TYPE:
        form = await request.form()
        if "update" in form:
            _refuse_update()
        text = _one(form.getlist("query"))
        params = form  # the form's fields are the protocol's parameters
    else:
        raise HTTPException(
            415, f"send the query as {QUERY_TYPE} or as a form ({FORM_TYPE}) with a 'query' field, not {kind!r}"
        )

    return await run_in_threadpool(_answer, request, text, params)


def _one(values: list) -> str:
    if len(values) != 1:
        raise HTTPException(400, "send exactly one 'query' parameter")
    return str(values[0])


def _refuse_update() -> None:
    raise HTTPException(400, UPDATE_REFUSAL)


def _answer(request: Request, text: str, params: Any) -> Response:
    if len(text) > MAX_QUERY_CHARS:
        raise HTTPException(400, f"query longer than {MAX_QUERY_CHARS} characters")
    for name in ("default-graph-uri", "named-graph-uri"):
        if params.get(name):
            raise HTTPException(400, f"parameter {name!r} is not supported: this endpoint serves one graph")
    server = request.app.state.kgllm
    store = server.session.store
    graph = getattr(store, "graph", None) if store.supports_sparql else None

    if not isinstance(graph, Graph):
        raise HTTPException(
            501, f"the {store.name} store does not run SPARQL; this endpoint needs the rdflib store (--store rdflib)"
        )
    query = _prepare(text)
    kind = query.algebra.name.removesuffix("Query").upper()  # SELECT, ASK, CONSTRUCT, DESCRIBE
    media_type = _negotiate(request.headers.get("accept", ""), params.get("format"), kind)
    with _ONE_QUERY_AT_A_TIME:
        deadline = time.monotonic() + TIME_LIMIT_S
        try:
            result = DeadlineGraph(graph, deadline, TIME_LIMIT_S).query(query)
            body, truncated = _serialize(result, kind, media_type)
        except QueryLimitError:
            raise HTTPException(503, f"the query ran past its {TIME_LIMIT_S:g} s time limit") from None
    headers = {"X-SPARQL-Truncated": str(MAX_ROWS)} if truncated else {}
    return Response(body, media_type=f"{media_type}; charset=utf-8", headers=headers)


def _prepare(text: str):
    """The parsed query; 400 for an update, a syntax error, SERVICE or FROM."""
    try:
        return prepare_sparql(text)
    except QueryRefusedError as exc:
        raise HTTPException(400, str(exc)) from None


def _negotiate(accept: str, format_param: str | None, kind: str) -> str:
    """The media type to answer with, from the ``format`` parameter or the ``Accept`` header."""
    graph = kind in ("CONSTRUCT", "DESCRIBE")
    offered = GRAPH_TYPES if graph else RESULT_TYPES
    wanted: list[str] = []
    if format_param:
        named = FORMAT_PARAMETER.get(format_param.lower(), format_param.lower())
        wanted.append(named)
    ranked = []
    for position, item in enumerate(accept.split(",")):
        media, *options = (part.strip() for part in item.split(";"))
        quality = 1.0
        for option in options:
            if option.startswith("q="):
                try:
                    quality = float(option[2:])
                except ValueError:
                    quality = 0.0
        if media and quality > 0:
            ranked.append((-quality, position, media.lower()))
    wanted += [media for _, _, media in sorted(ranked)]
    for media in wanted:
        media = ALIASES.get(media, media)
        if graph:
            media = GRAPH_FOR_RESULTS.get(media, media)
        if media in offered:
            return media
        if media in ("*/*", "application/*", "text/*") or not media:
            return next(iter(offered))
    if not wanted:
        return next(iter(offered))
    raise HTTPException(
        406, f"cannot answer a {kind} query as {', '.join(wanted)}; this endpoint offers {', '.join(offered)}"
    )


def _serialize(result: Any, kind: str, media_type: str) -> tuple[bytes, bool]:
    """The result in ``media_type``, cut at ``MAX_ROWS``; and whether it was cut."""

    if kind == "ASK":
        return _bytes(result.serialize(format=RESULT_TYPES[media_type])), False
    if kind == "SELECT":
        rows = list(islice(result, MAX_ROWS + 1))
        out = Result("SELECT")
        out.vars = result.vars
        out.bindings = [
            {var: value for var, value in zip(result.vars, row) if value is not None} for row in rows[:MAX_ROWS]
        ]
        return _bytes(out.serialize(format=RESULT_TYPES[media_type])), len(rows) > MAX_ROWS
    triples = list(islice(iter(result.graph), MAX_ROWS + 1))
    graph = Graph(namespace_manager=result.graph.namespace_manager)
    for triple in triples[:MAX_ROWS]:
        graph.add(triple)
    return graph.serialize(format=GRAPH_TYPES[media_type], encoding="utf-8"), len(triples) > MAX_ROWS


def _bytes(serialized: bytes | None) -> bytes:
    """What ``serialize`` returns without a destination: always the bytes."""
    assert serialized is not None
    return serialized
