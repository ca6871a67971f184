"""KG completion over HTTP: ``POST /complete`` predicts the missing head or tail of each query;
``GET /jobs/{id}`` polls a background job.

The completer (structural model and re-rankers) is the one ``kgllm complete`` trains for the
same store. When it is built, or the cache holds one, ``/complete`` answers at once (200).
Otherwise the request starts a background job that trains it (and caches it) and then answers
the queries: the reply is 202 with the job's id, and ``GET /jobs/{id}`` has the result once
its status is ``done``. Jobs run one at a time, on a thread of their own.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kgllm.exceptions import EntityNotFoundError
from kgllm.server.graph import state
from kgllm.server.limits import MAX_JOBS_KEPT, MAX_RESULTS
from kgllm.server.review import check_writable

router = APIRouter(tags=["completion"])
Name = Field(min_length=1, max_length=2000)


class CompletionQuery(BaseModel):
    """``head, relation, ?`` or ``?, relation, tail``; entities and relations by id or label."""

    model_config = ConfigDict(extra="forbid")

    head: str = Name
    relation: str = Name
    tail: str = Name

    @model_validator(mode="after")
    def one_wildcard(self) -> CompletionQuery:
        if (self.head == "?") == (self.tail == "?") or self.relation == "?":
            raise ValueError("exactly one of head and tail must be '?'")
        return self


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queries: list[CompletionQuery] = Field(
        min_length=1, max_length=MAX_RESULTS, examples=[[{"head": "Chad", "relation": "neighbor of", "tail": "?"}]]
    )
    top_k: int = Field(10, ge=1, le=100, description="Predictions per query.")
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="Keep predictions scoring at least this.")
    review: bool = Field(
        False,
        description="Also queue the predictions for review (GET /review), where a person accepts them into "
        "the graph or rejects them; the reply's ``proposed`` counts the facts queued.",
    )


class JobError(BaseModel):
    message: str
    type: str


class JobStatus(BaseModel):
    """A background job: ``result`` once ``status`` is ``done``, ``error`` once it is ``failed``."""

    id: str
    kind: str
    status: Literal["queued", "running", "done", "failed"]
    seconds: float = Field(description="Since the job was created (until it finished).")
    result: dict[str, Any] | None = None
    error: JobError | None = None


@router.post(
    "/complete",
    summary="Predict missing facts (KG completion)",
    response_model=dict[str, Any],
    responses={202: {"model": JobStatus, "description": "The model is being trained; poll GET /jobs/{id}."}},
)
async def complete(body: CompleteRequest, request: Request) -> Response:
    """One record per query, in order: its predictions (best first, each with the scores that produced
    it), or an ``error`` naming the unknown entity or relation. Nothing is written to the store
    (with ``review``, the predictions are queued for review instead).
    With no trained model yet: 202 and a job that trains one, then answers (``GET /jobs/{id}``)."""
    server = state(request)
    if body.review:
        check_writable(server)
    queries = [(q.head, q.relation, q.tail) for q in body.queries]
    if await server.run(lambda: server.completion_ready):  # looking in the cache reads the store: off the loop
        return await server.run_json(server.complete, queries, body.top_k, body.min_score, body.review)
    job = server.jobs.submit("complete", lambda: server.complete(queries, body.top_k, body.min_score, body.review))
    return JSONResponse(job.to_dict(), status_code=202, headers={"Location": f"/jobs/{job.id}"})


@router.get("/jobs/{job_id}", summary="A background job's status, and its result once done")
async def job_status(request: Request, job_id: str = Path(min_length=1, max_length=64)) -> JobStatus:
    job = state(request).jobs.get(job_id)
    if job is None:
        raise EntityNotFoundError(
            f"no job with id {job_id!r} (the server keeps its last {MAX_JOBS_KEPT} jobs while it runs)"
        )
    return JobStatus(**job.to_dict())
