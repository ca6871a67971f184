"""The HTTP API over the demo graph, through a real uvicorn server on loopback (no language model)."""

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import kgllm
from kgllm.server import create_app, running_server
from kgllm.server.app import PUBLIC_PATHS
from kgllm.server.limits import MAX_BODY_BYTES
from kgllm.server.run import check_exposure
from kgllm.settings import Settings

QUESTION = "Which subregion are the neighbours of Chad located in?"
CHAD = "https://kgllm.dev/countries/chad"
ROOT = Path(__file__).resolve().parents[1]
BUDGET = 300  # seconds: generous, so that a slow machine answers these questions in full


@pytest.fixture(scope="module")
def session(encoder):
    with kgllm.connect(use_model=False, encoder=encoder) as session:
        yield session


@pytest.fixture(scope="module")
def api(session):
    with (
        running_server(create_app(session, time_budget=BUDGET)) as url,
        httpx.Client(base_url=url, timeout=600) as client,
    ):
        yield client


def error_message(response: httpx.Response) -> str:
    message = response.json()["error"]["message"]
    assert isinstance(message, str) and message
    return message


def test_ask_returns_the_answer_its_paths_and_the_evidence_graph(api):
    response = api.post("/ask", json={"question": QUESTION})
    assert response.status_code == 200
    answer = response.json()
    assert answer["answer"] == "Middle Africa, Northern Africa and Western Africa."
    assert sorted(answer["entities"]) == ["Middle Africa", "Northern Africa", "Western Africa"]
    assert len(answer["evidence"]) == answer["paths_total"] == 7
    assert ["Niger", "neighbor of", "Chad"] in [fact for path in answer["evidence"] for fact in path]
    assert 0 < answer["confidence"] <= 1
    nodes = {node["id"]: node for node in answer["graph"]["nodes"]}
    assert nodes[CHAD]["role"] == "question" and nodes[CHAD]["label"] == "Chad"
    assert sorted(n["label"] for n in nodes.values() if n["role"] == "answer") == sorted(answer["entities"])
    edges = answer["graph"]["edges"]
    assert len(edges) == 14 and all(e["source"] in nodes and e["target"] in nodes for e in edges)


def test_ask_limits_paths_and_hops(api):
    limited = api.post("/ask", json={"question": QUESTION, "max_paths": 2}).json()
    assert len(limited["evidence"]) == 2 and limited["paths_total"] == 7
    assert len(limited["graph"]["edges"]) <= 4
    one_hop = api.post("/ask", json={"question": QUESTION, "max_hops": 1, "mode": "graph"}).json()
    assert one_hop["evidence"] and all(len(path) == 1 for path in one_hop["evidence"])


def test_a_question_the_graph_cannot_answer_gets_context_not_an_answer(api):
    answer = api.post("/ask", json={"question": "What is the capital of France?"}).json()
    assert answer["entities"] == [] and answer["confidence"] <= 0.2
    assert answer["facts"] and all(n["role"] == "other" for n in answer["graph"]["nodes"])


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"question": ""}, 422, "question"),
        ({"question": "x" * 1001}, 422, "at most 1000"),
        ({"question": QUESTION, "max_paths": 100000}, 422, "max_paths"),
        ({"question": QUESTION, "mode": "sql"}, 422, "mode"),
        ({"question": QUESTION, "cypher": "MATCH (n) DETACH DELETE n"}, 422, "cypher"),
        ({"question": QUESTION, "mode": "model"}, 400, "without a language model"),
    ],
)
def test_bad_requests_get_a_json_error_that_says_why(api, body, status, words):
    response = api.post("/ask", json=body)
    assert response.status_code == status
    assert words in error_message(response)


def test_request_bodies_are_bounded_declared_or_streamed(api):
    big = b'{"question": "' + b"x" * MAX_BODY_BYTES + b'"}'
    assert api.post("/ask", content=big, headers={"content-type": "application/json"}).status_code == 413
    streamed = api.post(
        "/ask", content=iter([big[:40_000], big[40_000:]]), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413 and "larger than" in error_message(streamed)
    assert api.post("/ask", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422


def test_browsing_search_entity_and_neighbours(api):
    hits = api.get("/search", params={"q": "chad"}).json()["results"]
    assert hits[0] == {"id": CHAD, "label": "Chad", "aliases": [], "types": ["https://kgllm.dev/countries/Country"]}
    entity = api.get("/entity", params={"id": CHAD}).json()
    assert entity["label"] == "Chad" and entity["type_labels"] == ["country"]
    around = api.get("/neighbors", params={"id": CHAD}).json()
    assert ["Niger", "neighbor of", "Chad"] in around["facts"] and not around["more"]
    assert {e["source"] for e in around["graph"]["edges"]} | {e["target"] for e in around["graph"]["edges"]} >= {CHAD}
    few = api.get("/neighbors", params={"id": CHAD, "limit": 3}).json()
    assert len(few["facts"]) == 3 and few["more"]
    assert api.get("/neighbors", params={"id": CHAD, "limit": 10_000}).status_code == 422


def test_unknown_entities_are_404_with_a_message(api):
    response = api.get("/neighbors", params={"id": "https://kgllm.dev/countries/atlantis"})
    assert response.status_code == 404 and "atlantis" in error_message(response)
    assert api.get("/entity", params={"id": "nope"}).status_code == 404
    assert api.get("/no/such/route").status_code == 404


def test_health_and_openapi(api):
    health = api.get("/health").json()
    assert health == {"status": "ok", "store": "rdflib", "triples": 1165, "entities": 271, "model": None}
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/ask", "/search", "/entity", "/neighbors", "/health", "/v1/chat/completions", "/v1/completions"} <= set(
        paths
    )
    assert "cytoscape.min.js" in api.get("/").text


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_pages_load_every_asset_from_the_server_itself(api, path):
    html = api.get(path).text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"""url: ?['"]([^'"]+)['"]""", html)
    assert assets and all(a.startswith("/") or a.startswith("data:") for a in assets), assets
    for asset in assets:
        if not asset.startswith("data:"):
            assert api.get(asset).status_code == 200, asset


def test_model_endpoints_say_when_no_model_is_loaded(api):
    assert api.get("/v1/models").json() == {"object": "list", "data": []}
    response = api.post("/v1/completions", json={"prompt": "Question:"})
    assert response.status_code == 503 and "--no-model" in error_message(response)


def test_concurrent_questions_get_the_same_answers(api):
    questions = [QUESTION, "Which countries border Chad?", "In which region is Kenya?"] * 4
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda q: api.post("/ask", json={"question": q}).json()["answer"], questions))
    assert answers == [api.post("/ask", json={"question": q}).json()["answer"] for q in questions]


def test_an_api_key_guards_the_api_but_not_the_page_or_health(session):
    with running_server(create_app(session, api_key="s3cret")) as url:
        missing = httpx.post(f"{url}/ask", json={"question": QUESTION})
        assert missing.status_code == 401 and "Authorization: Bearer" in error_message(missing)
        wrong = httpx.get(f"{url}/search", params={"q": "chad"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert httpx.get(f"{url}/v1/models").status_code == 401
        right = httpx.post(
            f"{url}/ask", json={"question": QUESTION}, headers={"Authorization": "Bearer s3cret"}, timeout=60
        )
        assert right.status_code == 200 and right.json()["entities"]
        assert httpx.get(f"{url}/health").status_code == 200 and httpx.get(f"{url}/").status_code == 200
        for path in PUBLIC_PATHS:  # the page, its assets, the docs and the health check stay open
            target = path + "style.css" if path.endswith("/") and path != "/" else path
            assert httpx.get(f"{url}{target}").status_code == 200, target
        assert httpx.get(f"{url}/jobs/0123").status_code == 401
        assert httpx.post(f"{url}/complete", json={"queries": []}).status_code == 401


def test_serve_refuses_a_public_address_without_an_api_key():
    environment = {key: value for key, value in os.environ.items() if key != "KGLLM_API_KEY"}
    environment["PYTHONPATH"] = str(ROOT)
    refused = subprocess.run(
        [sys.executable, "-c", "from kgllm.cli import main; main()", "serve", "--host", "0.0.0.0", "--no-model"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1 and "refusing to serve on 0.0.0.0 without an API key" in refused.stderr
    assert "--insecure" in refused.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_only_loopback_is_served_without_a_key_unless_insecure(host, caplog):
    from kgllm.exceptions import ConfigurationError

    for loopback in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_exposure(loopback, api_key=None)
    with pytest.raises(ConfigurationError, match="without an API key"):
        check_exposure(host, api_key=None)
    check_exposure(host, api_key="s3cret")
    with caplog.at_level("WARNING"):
        check_exposure(host, api_key=None, insecure=True)
    assert "WITHOUT AN API KEY" in caplog.text


def test_serve_benchmark_sends_every_request_and_counts_errors(session):
    from kgllm.bench.serve import run_serve_benchmark
    from kgllm.graph.demo import demo_question_sets

    result = run_serve_benchmark(
        session, demo_question_sets()[0], "graph + encoder", requests=6, concurrency=3, progress=False
    )
    assert len(result.seconds) == 6 and result.errors == 0 and result.wall_seconds > 0
    row = result.row()
    assert row["requests"] == "6" and row["errors"] == "0" and float(row["requests/s"]) > 0


def test_complete_trains_in_the_background_then_answers_directly(encoder, tmp_path):
    """No completer cached: 202 and a job to poll, the API answering meanwhile; then 200 at once."""
    from kgllm.pipelines.completion.completer import CompletionConfig
    from kgllm.pipelines.completion.kge import KGEConfig

    config = CompletionConfig(
        kge=KGEConfig(dim=64, max_epochs=40, seconds=30), kge_models=("distmult",), scorers=("rules",)
    )
    queries = [
        {"head": "Chad", "relation": "neighbor of", "tail": "?"},
        {"head": "Atlantis", "relation": "neighbor of", "tail": "?"},
    ]
    settings = Settings(cache_dir=tmp_path / "cache")  # nothing cached: the first request must train
    with (
        kgllm.connect(use_model=False, encoder=encoder, settings=settings) as session,
        running_server(create_app(session, completion_config=config, time_budget=BUDGET)) as url,
        httpx.Client(base_url=url, timeout=600) as api,
    ):
        started = api.post("/complete", json={"queries": queries, "top_k": 3})
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["status"] in ("queued", "running") and started.headers["location"] == f"/jobs/{job['id']}"
        assert api.get("/health").status_code == 200  # the server answers while the job trains
        deadline = time.monotonic() + 600
        while job["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = api.get(f"/jobs/{job['id']}").json()
        assert job["status"] == "done" and job["error"] is None, job
        chad, atlantis = job["result"]["results"]
        known = {t.tail for t in session.store.triples(head=CHAD, relation="https://kgllm.dev/countries/neighborOf")}
        predicted = [p["tail"] for p in chad["predictions"]]
        assert len(predicted) == 3 and not set(predicted) & known and CHAD not in predicted
        assert all(session.store.entity(t) for t in predicted)
        scores = [p["score"] for p in chad["predictions"]]
        assert scores == sorted(scores, reverse=True)
        assert atlantis["predictions"] == [] and "Atlantis" in atlantis["error"]
        direct = api.post("/complete", json={"queries": queries, "top_k": 3})
        assert direct.status_code == 200 and direct.json() == job["result"]
        bad = api.post("/complete", json={"queries": [{"head": "?", "relation": "neighbor of", "tail": "?"}]})
        assert bad.status_code == 422 and "exactly one" in error_message(bad)
        missing = api.get("/jobs/no-such-job")
        assert missing.status_code == 404 and "no-such-job" in error_message(missing)
        assert session.store.count_triples() == 1165  # nothing written


def test_a_complete_answer_is_reused_for_the_same_request_and_a_cut_one_is_not(api):
    fresh = api.post("/ask", json={"question": "Which countries border Niger?", "max_paths": 3})
    again = api.post("/ask", json={"question": "Which countries border Niger?", "max_paths": 3, "max_seconds": 60})
    assert "x-answer-cache" not in fresh.headers and again.headers["x-answer-cache"] == "hit"
    assert again.json() == fresh.json() and len(fresh.json()["entities"]) == 7
    other = api.post("/ask", json={"question": "Which countries border Niger?", "max_paths": 4})
    assert "x-answer-cache" not in other.headers  # another request, answered afresh
    heavy = {"question": "Which countries border Chad, Niger and Mali?", "answerer": "paths", "max_seconds": 0.001}
    for _ in range(2):
        cut = api.post("/ask", json=heavy)
        assert cut.json()["metadata"]["cut"] is True and "x-answer-cache" not in cut.headers


def test_the_answer_cache_keeps_its_newest_answers_for_its_time():
    from kgllm.server.state import AnswerCache

    cache = AnswerCache(seconds=3600, size=2)
    for key in "abc":
        cache.put(key, key.encode())
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, b"b", b"c")
    expired = AnswerCache(seconds=-1)  # every answer is older than that
    expired.put("a", b"a")
    assert expired.get("a") is None
