"""Questions, claim checks and graph browsing: ``POST /ask``, ``POST /check``, ``GET /entity``, ``GET /search``,
``GET /neighbors``, ``GET /health``.

``POST /ask`` with ``"stream": true`` answers in server-sent events: ``token`` events
(``{"text": ...}``) while the answerer writes, then one ``answer`` event (the usual JSON), or an
``error`` event (``{"message", "type"}``). A client that disconnects stops the work.

``/neighbors`` also gives the provenance of the derived facts it lists (predicted or extracted).

Everything a request sends reaches the store as a method argument, and the stores pass
it to SPARQL or Cypher as a bound parameter only. The work of each request runs on the
server's worker threads (``ServerState.run``); ``/health`` reads a snapshot and never waits.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from kgllm.exceptions import ConfigurationError, EntityNotFoundError, InputError, KGLLMError
from kgllm.server.limits import MAX_PROMPT_CHARS, MAX_QUESTION_CHARS, MAX_RESULTS
from kgllm.types import Answer, Entity, Triple

log = logging.getLogger(__name__)
# with ``stream``: server-sent events, ``token`` ({"text": ...}) while written, then ``answer`` or ``error``
ANSWER_EVENT = {
    "type": "object",
    "properties": {"event": {"type": "string", "enum": ["token", "answer", "error"]}, "data": {"type": "string"}},
    "required": ["event", "data"],
}
router = APIRouter(tags=["graph"])
health_router = APIRouter(tags=["health"])

EntityId = Query(min_length=1, max_length=2000, description="Entity id (an IRI for RDF graphs).")


class AskRequest(BaseModel):
    """A question and, optionally, how to answer it."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, examples=["Which countries border Chad?"])
    mode: Literal["auto", "graph", "model"] = Field(
        "auto",
        description="'graph': encoder and graph only; 'model': also the language model (the server must "
        "have loaded one); 'auto': the model when one is loaded.",
    )
    answerer: str = Field(
        "auto",
        max_length=64,
        description="'paths': follow relation chains; 'programs': query programs (counts, yes/no, set "
        "operations, superlatives, comparisons); 'generate': the language model writes the answer from "
        "retrieved facts and cites them as [n]; any other answerer the session has by its name; "
        "'auto': paths or programs, chosen from the question's shape.",
    )
    max_hops: int | None = Field(
        None, ge=1, le=4, description="Longest relation path followed (default: the server's setting)."
    )
    max_paths: int = Field(20, ge=1, le=MAX_RESULTS, description="Most evidence paths (and facts) returned.")
    max_seconds: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="Time budget of the search (at most the server's). A search that runs out of it "
        "answers nothing and says so: metadata.cut is true.",
    )
    stream: bool = Field(
        False,
        description="Answer as server-sent events: 'token' events ({\"text\"}) as the answer is written, "
        "then one 'answer' event (the usual JSON), or an 'error' event ({\"message\", \"type\"}).",
    )


class CheckRequest(BaseModel):
    """A text whose claims are checked against the graph."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        min_length=1, max_length=MAX_PROMPT_CHARS, examples=["Chad borders Niger and lies in Western Africa."]
    )


def state(request: Request):
    return request.app.state.kgllm


@router.post(
    "/ask",
    summary="Answer a question with the graph paths that support it",
    response_model=dict[str, Any],
    responses={200: {"content": {"text/event-stream": {"schema": ANSWER_EVENT}}}},
)
async def ask(body: AskRequest, request: Request) -> Response:
    """The answer as ``kgllm ask --json`` prints it, plus ``found`` (False: the graph holds no answer,
    and the facts are only the closest context) and ``graph``: the evidence subgraph as nodes
    (``role``: question, answer or other) and edges, for drawing. The search has the server's
    time budget; one cut short answers nothing and says so (``metadata.cut``). The same request
    within a few seconds of a complete answer gets that answer again (``X-Answer-Cache: hit``)."""
    arrived = time.monotonic()
    server = state(request)
    if (body.mode == "model" or body.answerer == "generate") and server.session.lm is None:
        raise ConfigurationError("this server runs without a language model; ask with mode 'graph' or 'auto'")
    if body.answerer != "auto" and body.answerer not in server.session.answerers:
        known = ", ".join(sorted(server.session.answerers))
        raise InputError(f"unknown answerer {body.answerer!r}; choose auto or one of: {known}")
    if body.stream:
        return StreamingResponse(_answer_events(server, body, arrived), media_type="text/event-stream")
    key = body.model_dump_json(exclude={"max_seconds"})  # a complete answer does not depend on the budget
    if (cached := server.answers.get(key)) is not None:
        return Response(cached, media_type="application/json", headers={"X-Answer-Cache": "hit"})

    def work() -> JSONResponse:
        answer = server.session.ask(body.question, body.answerer, **_ask_options(server, body, arrived))
        response = JSONResponse(answer_json(answer, body.max_paths))  # rendered here, off the event loop
        if not answer.metadata.get("cut"):
            server.answers.put(key, bytes(response.body))
        return response

    return await server.run(work)


def _ask_options(server, body: AskRequest, arrived: float) -> dict[str, Any]:
    """The answerer's options for ``body``, with what is left of the time budget."""
    seconds = server.seconds_left(arrived, body.max_seconds)  # queueing counts against the budget
    if body.answerer == "programs":
        return {"time_limit": seconds}
    if body.answerer not in ("auto", "paths"):
        return {}  # another answerer's options are its own
    options: dict[str, Any] = {"use_model": body.mode != "graph", "max_seconds": seconds}
    if body.answerer == "auto":  # auto hands each answerer only the options it knows
        options["time_limit"] = seconds
    if body.max_hops is not None:
        options["max_hops"] = body.max_hops
    return options


async def _answer_events(server, body: AskRequest, arrived: float) -> AsyncIterator[str]:
    """``token`` events while the answer is written, then ``answer``; ``error`` when it fails."""

    def produce() -> Iterator[tuple[str, dict[str, Any]]]:
        for item in server.session.ask_stream(body.question, body.answerer, **_ask_options(server, body, arrived)):
            if isinstance(item, str):
                yield "token", {"text": item}
            else:
                yield "answer", answer_json(item, body.max_paths)

    try:
        async for event, data in server.stream(produce):
            yield server_sent_event(event, data)
    except KGLLMError as exc:
        yield server_sent_event("error", {"message": " ".join(str(exc).split()), "type": type(exc).__name__})
    except HTTPException as exc:
        yield server_sent_event("error", {"message": str(exc.detail), "type": "http_error"})
    except Exception as exc:
        log.exception("POST /ask (streamed) failed")
        message = f"internal error ({type(exc).__name__}); the server log has the details"
        yield server_sent_event("error", {"message": message, "type": "internal_error"})


def server_sent_event(event: str, data: dict[str, Any]) -> str:
    """One server-sent event with a JSON payload."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post("/check", summary="Check a text's claims against the graph", response_model=dict[str, Any])
async def check(body: CheckRequest, request: Request) -> Response:
    """Each claim (sentence or clause) of the text with its status: ``supported`` (the graph holds
    it), ``contradicted`` (the graph holds another value of a single-valued relation, or the claim
    denies a fact it holds) or ``not_in_graph``, with its triples and the facts behind the status,
    as ``kgllm check --json`` prints them."""
    session = state(request).session
    return await state(request).run_json(lambda: session.check(body.text).to_dict())


def answer_json(answer: Answer, max_paths: int) -> dict[str, Any]:
    """``Answer.to_dict`` with at most ``max_paths`` paths and facts, the evidence subgraph, and ``found``.

    ``found`` is False when the graph holds no answer: ``facts`` and ``graph`` are then the facts
    closest to the question, context for the reader and not an answer.
    """
    evidence = answer.evidence
    shown = dataclasses.replace(
        answer,
        evidence=dataclasses.replace(evidence, paths=evidence.paths[:max_paths], triples=evidence.triples[:max_paths]),
    )
    triples = [t for p in shown.evidence.paths for t in p.triples] or shown.evidence.triples
    return {
        **shown.to_dict(),
        "found": bool(answer.metadata.get("found", bool(answer.entities))),
        "paths_total": len(evidence.paths),
        "graph": graph_json(
            triples,
            answer.label,
            question={p.start for p in shown.evidence.paths},
            answers={e.id for e in answer.entities},
        ),
    }


@router.get("/entity", summary="One entity: label, other names, classes", response_model=dict[str, Any])
async def entity(request: Request, id: str = EntityId) -> Response:
    store = state(request).session.store

    def work() -> dict[str, Any]:
        found = store.entity(id)
        if found is None:
            raise EntityNotFoundError(f"no entity with id {id!r}")
        return {**entity_json(found), "type_labels": [store.label(t) for t in found.types]}

    return await state(request).run_json(work)


@router.get("/search", summary="Entities whose label or another name contains the text", response_model=dict[str, Any])
async def search(
    request: Request, q: str = Query(min_length=1, max_length=200), limit: int = Query(10, ge=1, le=MAX_RESULTS)
) -> Response:
    store = state(request).session.store
    return await state(request).run_json(lambda: {"results": [entity_json(e) for e in store.search(q, limit)]})


@router.get(
    "/neighbors", summary="The facts touching an entity, as a list and as a graph", response_model=dict[str, Any]
)
async def neighbors(
    request: Request,
    id: str = EntityId,
    direction: Literal["out", "in", "both"] = "both",
    limit: int = Query(50, ge=1, le=MAX_RESULTS),
) -> Response:
    store = state(request).session.store

    def work() -> dict[str, Any]:
        found = store.entity(id)
        if found is None:
            raise EntityNotFoundError(f"no entity with id {id!r}")
        # one more than asked, to say whether there are more
        triples = store.neighbors(id, direction, limit=limit + 1)
        labels = {x: store.label(x) for t in triples[:limit] for x in (t.head, t.relation, t.tail)}
        return {
            "entity": entity_json(found),
            "more": len(triples) > limit,
            "facts": [[labels[t.head], labels[t.relation], labels[t.tail]] for t in triples[:limit]],
            "graph": graph_json(triples[:limit], labels.__getitem__),
            "provenance": provenance_json(store, triples[:limit]),
        }

    return await state(request).run_json(work)


@health_router.get("/health", summary="Whether the store answers, and what it holds")
async def health(request: Request) -> dict[str, Any]:
    """Counts from the latest background check of the store (a few seconds old at most): this
    endpoint never waits for the store or for other requests. 503 when the store does not answer."""
    server = state(request)
    counts = server.health.report()
    session = server.session
    return {
        "status": "ok",
        "store": session.store.name,
        **counts,
        "model": session.lm.name if session.lm is not None else None,
    }


def provenance_json(store, triples: Iterable[Triple]) -> dict[str, dict[str, Any]]:
    """For each fact with provenance records (derived ones have some), keyed by its edge id:
    ``asserted`` (False: predicted or extracted only) and its records, oldest first."""
    from kgllm.graph.review import provenance_json as record_json

    found = {}
    for t in triples:
        records = store.provenance(t)
        if records:
            found[edge_id(t)] = {"asserted": store.is_asserted(t), "records": [record_json(r) for r in records]}
    return found


def edge_id(t: Triple) -> str:
    return f"{t.head}\t{t.relation}\t{t.tail}"


def entity_json(entity: Entity) -> dict[str, Any]:
    return {"id": entity.id, "label": entity.label, "aliases": list(entity.aliases), "types": list(entity.types)}


def graph_json(
    triples: Iterable[Triple], label: Callable[[str], str], question: Iterable[str] = (), answers: Iterable[str] = ()
) -> dict[str, list[dict[str, str]]]:
    """Nodes and edges (Cytoscape's element fields) of a set of triples."""
    question, answers = set(question), set(answers)
    triples = list(dict.fromkeys(triples))
    nodes = dict.fromkeys(x for t in triples for x in (t.head, t.tail))

    def role(node: str) -> str:
        return "question" if node in question else "answer" if node in answers else "other"

    return {
        "nodes": [{"id": n, "label": label(n), "role": role(n)} for n in nodes],
        "edges": [{"id": edge_id(t), "source": t.head, "target": t.tail, "label": label(t.relation)} for t in triples],
    }
