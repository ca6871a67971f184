"""``kgllm mcp`` as an agent meets it: a real server process, the official MCP SDK's client.

Over stdio on the demo graph (no language model), and over streamable HTTP on a small graph
with a derived fact and a completion model trained at start-up with a tiny budget.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("mcp", reason='needs the MCP SDK: pip install "kgllm[mcp]"')

import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
START_SECONDS = 300  # the first start encodes the demo graph's labels and facts on a slow CPU
CALL_SECONDS = 120
TOOLS = {"ask", "search", "entity", "neighbours", "complete"}


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mcp-cache")


def kgllm_mcp(*args: str) -> list[str]:
    """The ``kgllm mcp`` command line, importing kgllm from this checkout."""
    return [sys.executable, "-c", "from kgllm.cli import main; main()", "mcp", *args]


def environment(cache: Path) -> dict[str, str]:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "KGLLM_CACHE_DIR": str(cache), "PYTHONPATH": pythonpath}


@pytest.fixture(scope="module")
async def demo(cache, anyio_backend):
    """A client session with ``kgllm mcp --no-model`` on the demo graph, over stdio."""
    command, *args = kgllm_mcp("--no-model")
    params = StdioServerParameters(command=command, args=args, env=environment(cache), cwd=str(ROOT))
    with (cache / "stdio-server.log").open("w") as log:
        async with (
            stdio_client(params, errlog=log) as (read, write),
            ClientSession(read, write, read_timeout_seconds=START_SECONDS) as session,
        ):
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, **arguments):
    return await session.call_tool(tool, arguments, read_timeout_seconds=CALL_SECONDS)


def content(result) -> dict:
    """The tool's JSON result; its text form says the same for clients without structured content."""
    assert not result.is_error, result.content[0].text
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


def error(result) -> str:
    assert result.is_error, result.structured_content
    return result.content[0].text


async def test_the_server_lists_its_tools_with_descriptions_and_schemas(demo):
    tools = {tool.name: tool for tool in (await demo.list_tools()).tools}
    assert set(tools) == TOOLS
    assert all(tool.description and tool.input_schema["type"] == "object" for tool in tools.values())
    assert tools["ask"].input_schema["required"] == ["question"]
    assert tools["complete"].input_schema["required"] == ["relation"]
    assert all(tool.annotations.read_only_hint for tool in tools.values())


async def test_ask_answers_with_the_paths_that_support_the_answer(demo):
    answer = content(await call(demo, "ask", question="Which countries border Chad?"))
    assert answer["found"] is True
    assert "Cameroon" in answer["entities"] and "Cameroon" in answer["answer"]
    assert [["Chad", "neighbor of", "Cameroon"]] in answer["evidence"]
    assert len(answer["evidence"]) == len(answer["entities"]) == answer["paths_total"]
    assert 0 < answer["confidence"] <= 1 and "neighbor" in answer["plan"]


async def test_ask_says_when_the_graph_holds_no_answer(demo):
    answer = content(await call(demo, "ask", question="What is the capital of France?"))
    assert answer["found"] is False and answer["entities"] == [] and answer["evidence"] == []
    assert answer["facts"] and answer["confidence"] <= 0.2


async def test_ask_follows_max_hops(demo):
    question = "Which subregion are the neighbours of Chad located in?"
    two = content(await call(demo, "ask", question=question, max_hops=2))
    assert two["found"] and "Middle Africa" in two["entities"]
    assert all(len(path) == 2 for path in two["evidence"])
    one = content(await call(demo, "ask", question=question, max_hops=1))
    assert all(len(path) == 1 for path in one["evidence"])


@pytest.mark.parametrize(
    "arguments, words",
    [
        ({"question": ""}, "question is empty"),
        ({"question": "   "}, "question is empty"),
        ({"question": "Which countries border Chad?", "max_hops": 9}, "max_hops"),
        ({}, "question"),
    ],
)
async def test_a_bad_question_is_a_tool_error_that_says_why(demo, arguments, words):
    assert words in error(await call(demo, "ask", **arguments))


async def test_search_finds_entities_by_name_and_the_closest_facts(demo):
    found = content(await call(demo, "search", text="Chad", k=3))
    assert found["entities"][0]["label"] == "Chad" and found["entities"][0]["match"] == "name"
    assert len(found["entities"]) == 3 and len(found["facts"]) == 3
    assert all("Chad" in fact["fact"] for fact in found["facts"])
    scores = [fact["score"] for fact in found["facts"]]
    assert scores == sorted(scores, reverse=True)
    misspelt = content(await call(demo, "search", text="Untied Kingdom", k=5))
    assert "United Kingdom" in [e["label"] for e in misspelt["entities"]]


async def test_entity_has_names_classes_and_facts_by_name_or_id(demo):
    chad = content(await call(demo, "entity", name_or_id="chad"))
    assert chad["label"] == "Chad" and chad["id"] == "https://kgllm.dev/countries/chad"
    assert chad["type_labels"] == ["country"]
    facts = [fact["fact"] for fact in chad["facts"]]
    assert ["Chad", "neighbor of", "Cameroon"] in facts and ["Chad", "located in", "Middle Africa"] in facts
    assert not any(fact.get("derived") for fact in chad["facts"]) and chad["more"] is False
    by_id = content(await call(demo, "entity", name_or_id=chad["id"], limit=2))
    assert by_id["label"] == "Chad" and len(by_id["facts"]) == 2 and by_id["more"] is True


async def test_an_unknown_entity_is_an_error_naming_the_closest_names(demo):
    message = error(await call(demo, "entity", name_or_id="Chadd"))
    assert "no entity named 'Chadd'" in message and "Chad" in message.split("closest names:")[1]
    message = error(await call(demo, "neighbours", name_or_id="Untied Kingdom"))
    assert "United Kingdom" in message.split("closest names:")[1]


async def test_neighbours_of_one_relation_and_direction(demo):
    near = content(await call(demo, "neighbours", name_or_id="Chad", relation="neighbor of", limit=3))
    assert near["relation"] == "neighbor of" and len(near["facts"]) == 3 and near["more"] is True
    assert all(fact["fact"][1] == "neighbor of" for fact in near["facts"])
    every = content(await call(demo, "neighbours", name_or_id="Chad", relation="neighbor of", limit=50))
    others = {fact["fact"][2] if fact["fact"][0] == "Chad" else fact["fact"][0] for fact in every["facts"]}
    assert {"Cameroon", "Niger", "Libya", "Sudan"} <= others and every["more"] is False
    into = content(await call(demo, "neighbours", name_or_id="Middle Africa", direction="in", limit=100))
    assert into["facts"] and all(fact["fact"][2] == "Middle Africa" for fact in into["facts"])
    assert ["Chad", "located in", "Middle Africa"] in [fact["fact"] for fact in into["facts"]]


async def test_neighbours_of_an_unknown_relation_lists_the_entitys_relations(demo):
    message = error(await call(demo, "neighbours", name_or_id="Chad", relation="capital of"))
    assert "unknown relation 'capital of'" in message and "neighbor of" in message and "located in" in message


async def test_complete_without_a_trained_model_fails_at_once_saying_how_to_train_it(demo):
    started = time.monotonic()
    message = error(await call(demo, "complete", head="Chad", relation="neighbor of"))
    assert "no completion model is trained" in message
    assert "--train-completion --scorers rules,encoder --kge-seconds 60" in message
    assert time.monotonic() - started < 30
    assert "exactly one of head and tail" in error(await call(demo, "complete", relation="neighbor of"))
    both = await call(demo, "complete", head="Chad", relation="neighbor of", tail="Niger")
    assert "exactly one of head and tail" in error(both)


def test_the_completion_configuration_is_the_one_kgllm_complete_caches():
    from kgllm.integrations.mcp import completion_config
    from kgllm.pipelines.completion.jobs import job_config, job_from_options

    for scorers, seconds in ((["rules", "lm", "encoder"], 60.0), (["rules"], 2.5)):
        job = job_from_options(queries="all", output=Path("out.jsonl"), scorers=scorers, kge_seconds=seconds)
        assert completion_config(scorers, seconds) == job_config(job)


def test_an_unknown_transport_is_refused_before_anything_loads(tmp_path):
    result = subprocess.run(
        kgllm_mcp("--transport", "pigeon"), env=environment(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "--transport must be stdio or http" in result.stderr


# ------------------------------------------------------------------ streamable HTTP
API_KEY = "a-test-key"
FRIENDS = ["ann", "bob", "cal", "dee", "eve", "fay", "gus", "hal"]


def small_graph(path: Path) -> Path:
    """A ring of friends (each friendship both ways but one), where they live, and one extracted fact."""
    from kgllm.graph.loaders import load
    from kgllm.graph.rdflib_store import RDFLibStore
    from kgllm.types import Provenance, Triple

    rows = []
    for a, b in zip(FRIENDS, FRIENDS[1:] + FRIENDS[:1]):
        rows += [f"{a}\tfriendOf\t{b}", f"{b}\tfriendOf\t{a}"]
        rows.append(f"{a}\tlivesIn\t{'paris' if FRIENDS.index(a) % 2 else 'lyon'}")
    rows.remove("dee\tfriendOf\tcal")  # the missing fact completion should find
    table = path.with_suffix(".tsv")
    table.write_text("\n".join(rows) + "\n")
    with RDFLibStore(path) as store:
        load(store, table)
        base = "https://kgllm.dev/kg/"
        store.add_derived(
            [Triple(f"{base}ann", f"{base}livesIn", f"{base}paris")],
            [Provenance(source="letters.txt", method="extracted", model="test model", score=0.75, span=(3, 17))],
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"kgllm mcp exited with {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)  # poll again; the server is still loading
    pytest.fail(f"kgllm mcp did not listen on port {port} within {START_SECONDS} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def http_server(cache, tmp_path_factory):
    graph = small_graph(tmp_path_factory.mktemp("graph") / "friends.ttl")
    port = free_port()
    log = cache / "http-server.log"
    command = kgllm_mcp(
        *("--transport", "http", "--port", str(port), "--graph", str(graph), "--no-model"),
        *("--train-completion", "--scorers", "rules", "--kge-seconds", "3"),
    )
    env = {**environment(cache), "KGLLM_API_KEY": API_KEY}
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_listening(process, port, log)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_over_http_a_request_without_the_api_key_is_refused(http_server):
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.post(http_server, json=initialize, headers=headers, timeout=30)
        assert response.status_code == 401 and "API key" in response.json()["error"]["message"]


async def test_over_http_entity_facts_show_provenance_and_complete_predicts(http_server):
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=CALL_SECONDS) as http,
        streamable_http_client(http_server, http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=CALL_SECONDS) as session,
    ):
        await session.initialize()
        assert {tool.name for tool in (await session.list_tools()).tools} == TOOLS

        ann = content(await call(session, "entity", name_or_id="Ann"))
        facts = {tuple(fact["fact"]): fact for fact in ann["facts"]}
        derived = facts[("Ann", "lives in", "Paris")]
        assert derived["derived"] is True
        [record] = derived["provenance"]
        assert record["source"] == "letters.txt" and record["method"] == "extracted" and record["span"] == [3, 17]
        assert record["model"] == "test model" and record["score"] == 0.75 and record["created"]
        assert "derived" not in facts[("Ann", "lives in", "Lyon")]

        completed = content(await call(session, "complete", head="Dee", relation="friend of", top_k=3))
        assert completed["query"] == ["Dee", "friend of", "?"]
        assert completed["model"].startswith(("complex", "distmult"))
        predictions = completed["predictions"]
        assert 1 <= len(predictions) <= 3
        assert all(p["fact"][:2] == ["Dee", "friend of"] for p in predictions)
        assert not {p["fact"][2] for p in predictions} & {"Eve", "Dee"}  # known, or the anchor itself
        assert predictions[0]["fact"][2] == "Cal"  # each friendship goes both ways
        scores = [p["score"] for p in predictions]
        assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
        heads = content(await call(session, "complete", tail="Cal", relation="friendOf", top_k=2))
        assert heads["query"] == ["?", "friend of", "Cal"] and heads["predictions"]
        assert "Atlantis" in error(await call(session, "complete", head="Atlantis", relation="friend of"))
