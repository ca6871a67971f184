"""Review of derived facts: ``GET /review`` lists the facts awaiting review, ``POST /review/{id}/accept``
writes one into the graph with its provenance, ``POST /review/{id}/reject`` drops it for good.

Facts join the queue from ``POST /complete`` with ``review: true``, from ``kgllm complete --review``
and from ``kgllm extract --dry-run --review`` (the queue is a file in the graph's index folder, so
the CLI and the server share it). Accepting and rejecting take turns with the server's other
writes (``ServerState.write_lock``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request, Response

from kgllm.server.graph import state

router = APIRouter(tags=["review"])
ProposalId = Path(min_length=1, max_length=64, description="The id GET /review gives the fact.")


def check_writable(server) -> None:
    """Refuses review on the bundled demo graph, which is read-only (a 400 that says so)."""
    server.review  # noqa: B018 - raises for the demo graph


@router.get("/review", summary="The facts awaiting review, best score first", response_model=dict[str, Any])
async def pending(request: Request) -> Response:
    """Each fact with its ids and labels, its best ``score``, and every provenance record that
    proposed it (source, method, model, score, time, span and the span's text when known).
    ``writable`` is false for the bundled demo graph, which takes no review."""
    from kgllm.graph.demo import is_bundled_demo

    server = state(request)

    def work() -> dict[str, Any]:
        if is_bundled_demo(server.session.store):
            return {"pending": [], "rejected": 0, "writable": False}
        queue = server.review
        return {"pending": [p.to_dict() for p in queue.pending()], "rejected": len(queue.rejected()), "writable": True}

    return await server.run_json(work)


@router.post(
    "/review/{proposal_id}/accept",
    summary="Add a fact awaiting review to the graph, with its provenance",
    response_model=dict[str, Any],
)
async def accept(request: Request, proposal_id: str = ProposalId) -> Response:
    server = state(request)

    def work() -> dict[str, Any]:
        check_writable(server)
        with server.write_lock:
            accepted = server.review.accept(proposal_id, server.session.store).to_dict()
            server.answers.clear()  # answers given before the write may be out of date
            return {"accepted": accepted}

    return await server.run_json(work)


@router.post(
    "/review/{proposal_id}/reject",
    summary="Drop a fact awaiting review; it is not proposed again",
    response_model=dict[str, Any],
)
async def reject(request: Request, proposal_id: str = ProposalId) -> Response:
    server = state(request)

    def work() -> dict[str, Any]:
        check_writable(server)
        with server.write_lock:
            return {"rejected": server.review.reject(proposal_id).to_dict()}

    return await server.run_json(work)
