"""Review of derived facts: the queue file over a real rdflib store, and the HTTP routes in front of it
(predictions from a really trained completer queued by ``POST /complete``, accepted or rejected)."""

import json
import time

import httpx
import pytest

import kgllm
from kgllm.exceptions import EntityNotFoundError, InputError
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.graph.review import REVIEW_FILE, ReviewQueue
from kgllm.server import create_app, running_server
from kgllm.settings import Settings
from kgllm.types import Entity, Provenance, Triple

COUNTRIES = "https://kgllm.dev/countries/"
CHAD, NIGER = COUNTRIES + "chad", COUNTRIES + "niger"
NEIGHBOR = COUNTRIES + "neighborOf"
TIMEOUT = 600


def predicted(model: str, score: float) -> Provenance:
    return Provenance("kgllm complete", "predicted", model, score)


# ============================================================ the queue


def test_accepted_facts_are_written_with_provenance_and_rejected_ones_never_come_back(copy_demo_graph, tmp_path):
    store = RDFLibStore(copy_demo_graph(tmp_path))
    queue = ReviewQueue.for_store(store, tmp_path / "cache")
    assert queue.path == tmp_path / "countries.ttl.index" / REVIEW_FILE
    france, spain = Triple(CHAD, NEIGHBOR, COUNTRIES + "france"), Triple(CHAD, NEIGHBOR, COUNTRIES + "spain")
    known = Triple(CHAD, NEIGHBOR, NIGER)
    records = [predicted("distmult", 0.4), predicted("distmult", 0.7), predicted("distmult", 0.9)]
    proposed = queue.propose(store, [france, spain, known], records)
    assert [p.triple for p in proposed] == [france, spain]  # the store already holds Chad-Niger
    assert [p.labels for p in queue.pending()] == [("Chad", "neighbor of", "Spain"), ("Chad", "neighbor of", "France")]
    triples_before = store.count_triples()

    accepted = queue.accept(queue.pending()[1].id, store)
    assert accepted.triple == france and store.count_triples() == triples_before + 1
    assert not store.is_asserted(france)  # derived, not asserted
    (record,) = store.provenance(france)
    assert (record.source, record.method, record.model, record.score) == (
        "kgllm complete",
        "predicted",
        "distmult",
        0.4,
    )
    assert RDFLibStore(store.path).provenance(france) == [record]  # saved in the graph file

    rejected = queue.reject(queue.pending()[0].id)
    assert rejected.triple == spain and not list(store.triples(spain.head, spain.relation, spain.tail))
    assert queue.pending() == [] and queue.rejected() == [spain]
    assert store.count_triples() == triples_before + 1
    # neither comes back: one is in the graph, the other was rejected
    assert queue.propose(store, [france, spain], [predicted("transe", 0.9)] * 2) == []
    assert ReviewQueue(queue.path).rejected() == [spain]  # the file is the queue

    with pytest.raises(EntityNotFoundError, match="no-such-id"):
        queue.accept("no-such-id", store)
    with pytest.raises(InputError, match="one provenance record"):
        queue.propose(store, [france], [])


def test_one_fact_from_two_sources_is_one_proposal_with_both_records(copy_demo_graph, tmp_path):
    store = RDFLibStore(copy_demo_graph(tmp_path))
    queue = ReviewQueue.for_store(store, tmp_path / "cache")
    ghost = Entity(COUNTRIES + "atlantis", "Atlantis", ("Atlantida",))
    fact = Triple(ghost.id, NEIGHBOR, CHAD)
    first = Provenance("/docs/a.txt@1", "extracted", "extractor", 0.6, span=(0, 22))
    second = Provenance("/docs/b.txt@2", "extracted", "extractor", 0.8, span=(5, 30))
    queue.propose(store, [fact], [first], [ghost], ["Atlantis borders Chad."])
    queue.propose(store, [fact], [second], [ghost], ["Atlantis is next to Chad"])
    queue.propose(store, [fact], [first], [ghost], ["Atlantis borders Chad."])  # the same record again: kept once
    (proposal,) = queue.pending()
    assert proposal.labels == ("Atlantis", "neighbor of", "Chad") and proposal.score == 0.8
    assert [r["text"] for r in proposal.to_dict()["records"]] == ["Atlantis borders Chad.", "Atlantis is next to Chad"]
    queue.accept(proposal.id, store)
    assert [r.source for r in store.provenance(fact)] == ["/docs/a.txt@1", "/docs/b.txt@2"]
    assert [r.span for r in store.provenance(fact)] == [(0, 22), (5, 30)]
    assert store.entity(ghost.id).aliases == ("Atlantida",)  # the new entity came with its fact


@pytest.fixture(params=["rdflib", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def empty_store(request):
    return request.getfixturevalue("neo4j_store") if request.param == "neo4j" else RDFLibStore()


def test_every_store_takes_accepted_facts_with_their_provenance(empty_store, tmp_path):
    store = empty_store
    chad, niger, mali = (Entity(COUNTRIES + n, n.title()) for n in ("chad", "niger", "mali"))
    store.add([Triple(chad.id, NEIGHBOR, niger.id)], [chad, niger, mali])
    queue = ReviewQueue(tmp_path / REVIEW_FILE)
    kept, dropped = Triple(niger.id, NEIGHBOR, mali.id), Triple(chad.id, NEIGHBOR, mali.id)
    queue.propose(store, [kept, dropped], [predicted("distmult", 0.9), predicted("distmult", 0.2)])
    queue.accept(queue.pending()[0].id, store)
    queue.reject(queue.pending()[0].id)
    assert set(store.triples()) == {Triple(chad.id, NEIGHBOR, niger.id), kept}
    (record,) = store.provenance(kept)
    assert (record.method, record.model, record.score) == ("predicted", "distmult", 0.9) and record.created
    assert not store.is_asserted(kept) and queue.rejected() == [dropped]


def test_an_unreadable_queue_file_gets_a_clear_error(tmp_path):
    path = tmp_path / REVIEW_FILE
    path.write_text("{not json")
    with pytest.raises(InputError, match="not a review queue"):
        ReviewQueue(path).pending()


# ============================================================ the HTTP routes


@pytest.fixture(scope="module")
def review_server(encoder, copy_demo_graph, tmp_path_factory):
    """A server over a copy of the demo graph with a small completer trained on first use, and its API key."""
    from kgllm.pipelines.completion.completer import CompletionConfig
    from kgllm.pipelines.completion.kge import KGEConfig

    folder = tmp_path_factory.mktemp("review")
    config = CompletionConfig(
        kge=KGEConfig(dim=64, max_epochs=40, seconds=30), kge_models=("distmult",), scorers=("rules",)
    )
    with (
        kgllm.connect(
            copy_demo_graph(folder), use_model=False, encoder=encoder, settings=Settings(cache_dir=folder / "cache")
        ) as session,
        running_server(create_app(session, api_key="s3cret", completion_config=config, time_budget=TIMEOUT)) as url,
        httpx.Client(base_url=url, timeout=TIMEOUT, headers={"Authorization": "Bearer s3cret"}) as api,
    ):
        yield session, api


def finished(api: httpx.Client, response: httpx.Response) -> dict:
    """The reply of ``POST /complete``: at once, or once its background job is done."""
    if response.status_code == 200:
        return response.json()
    assert response.status_code == 202, response.text
    job = response.json()
    deadline = time.monotonic() + TIMEOUT
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
        job = api.get(f"/jobs/{job['id']}").json()
    assert job["status"] == "done", job
    return job["result"]


def test_predictions_queued_by_complete_are_accepted_into_the_graph_or_rejected(review_server):
    session, api = review_server
    store = session.store
    query = {"queries": [{"head": "Chad", "relation": "neighbor of", "tail": "?"}], "top_k": 3, "review": True}
    result = finished(api, api.post("/complete", json=query))
    predictions = result["results"][0]["predictions"]
    assert result["proposed"] == 3 == len(predictions)

    review = api.get("/review").json()
    assert review["writable"] is True and review["rejected"] == 0
    pending = review["pending"]
    assert sorted(p["triple"][2] for p in pending) == sorted(p["tail"] for p in predictions)
    first, second = pending[0], pending[1]
    assert first["score"] >= second["score"]
    assert first["records"][0]["method"] == "predicted" and first["records"][0]["source"] == "kgllm complete"
    assert first["records"][0]["model"] == result["model"]
    triples_before = store.count_triples()

    accepted = api.post(f"/review/{first['id']}/accept")
    assert accepted.status_code == 200 and accepted.json()["accepted"]["id"] == first["id"]
    fact = Triple(*first["triple"])
    assert store.count_triples() == triples_before + 1 and not store.is_asserted(fact)
    (record,) = store.provenance(fact)
    assert (record.method, record.model, record.score) == ("predicted", result["model"], first["score"])
    # the entity's facts carry their provenance
    around = api.get("/neighbors", params={"id": CHAD, "limit": 100}).json()
    edge = "\t".join(first["triple"])
    assert around["provenance"][edge]["asserted"] is False
    assert around["provenance"][edge]["records"][0]["score"] == first["score"]
    assert all(
        e["id"] in around["provenance"] or store.is_asserted(Triple(*e["id"].split("\t")))
        for e in around["graph"]["edges"]
    )

    rejected = api.post(f"/review/{second['id']}/reject")
    assert rejected.status_code == 200
    assert not list(store.triples(*second["triple"])) and store.count_triples() == triples_before + 1
    review = api.get("/review").json()
    assert [p["id"] for p in review["pending"]] == [pending[2]["id"]] and review["rejected"] == 1
    # asked again: the accepted fact is in the graph, the rejected one was refused, the third is pending
    again = finished(api, api.post("/complete", json=query))
    tails = {p["tail"] for p in again["results"][0]["predictions"]}
    assert again["proposed"] == len(tails - {p["triple"][2] for p in pending})
    assert second["id"] not in [p["id"] for p in api.get("/review").json()["pending"]]

    for action in ("accept", "reject"):
        missing = api.post(f"/review/{first['id']}/{action}")  # no longer pending
        assert missing.status_code == 404 and first["id"] in missing.json()["error"]["message"]


def test_review_routes_need_the_api_key(review_server):
    _, api = review_server
    base = str(api.base_url)
    assert httpx.get(f"{base}/review").status_code == 401
    pending = api.get("/review").json()["pending"]
    target = pending[0]["id"] if pending else "0123456789abcdef"
    for action in ("accept", "reject"):
        response = httpx.post(f"{base}/review/{target}/{action}", headers={"Authorization": "Bearer wrong"})
        assert response.status_code == 401
    assert api.get("/review").json()["pending"] == pending  # nothing changed


def test_the_bundled_demo_graph_takes_no_review(encoder):
    with (
        kgllm.connect(use_model=False, encoder=encoder) as session,
        running_server(create_app(session)) as url,
        httpx.Client(base_url=url, timeout=TIMEOUT) as api,
    ):
        assert api.get("/review").json()["writable"] is False
        refused = api.post("/review/0123456789abcdef/accept")
        assert refused.status_code == 400 and "read-only" in refused.json()["error"]["message"]
        query = {"queries": [{"head": "Chad", "relation": "neighbor of", "tail": "?"}], "review": True}
        assert api.post("/complete", json=query).status_code == 400


def test_the_queue_file_is_plain_json(copy_demo_graph, tmp_path):
    store = RDFLibStore(copy_demo_graph(tmp_path))
    queue = ReviewQueue.for_store(store, tmp_path / "cache")
    queue.propose(store, [Triple(CHAD, NEIGHBOR, COUNTRIES + "peru")], [predicted("distmult", 0.3)])
    data = json.loads(queue.path.read_text())
    assert data["version"] == 1 and data["rejected"] == []
    assert data["pending"][0]["labels"] == ["Chad", "neighbor of", "Peru"]
