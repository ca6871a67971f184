"""KG completion over HTTP: ``POST /complete`` predicts the missing head or tail of each query.

The completer (structural model and re-rankers) is the one ``kgllm complete`` trains for the
same store: loaded from the cache, or trained on the first request and cached.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kgllm.server.graph import state
from kgllm.server.limits import MAX_RESULTS

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


@router.post("/complete", summary="Predict missing facts (KG completion)")
def complete(body: CompleteRequest, request: Request) -> dict[str, Any]:
    """One record per query, in order: its predictions (best first, each with the scores that produced
    it), or an ``error`` naming the unknown entity or relation. Nothing is written to the store."""
    from kgllm.pipelines.completion.jobs import JobSummary, predict_batch

    server = state(request)
    with server.lock:
        completer, known, resolver = server.completion()
        batch = [resolver.query(number, (q.head, q.relation, q.tail)) for number, q in enumerate(body.queries, 1)]
        records = predict_batch(batch, completer, server.session.store, known, JobSummary(), body.top_k, body.min_score)
    return {"model": completer.model_name, "results": records}
