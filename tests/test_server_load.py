"""The server under load, for real: a heavy question in flight does not hold up /health or other
questions, and the rdflib store stays consistent under concurrent reads and writes.

The assertions are about order and completion (what answered before what, that nothing failed),
not about how fast this machine is.
"""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import kgllm
from kgllm.bench.reliability import heavy_question
from kgllm.graph.demo import demo_graph_path
from kgllm.graph.loaders import load
from kgllm.graph.rdflib_store import RDFLibStore, ReadWriteLock
from kgllm.pipelines.synergize import PathReasoner
from kgllm.server import create_app, running_server
from kgllm.session import MAX_QUESTION_ENTITIES
from kgllm.types import Triple

CHAD = "https://kgllm.dev/countries/chad"
BORDER = "Which countries border Chad?"
CHAD_NEIGHBOURS = {"Cameroon", "Central African Republic", "Libya", "Niger", "Nigeria", "South Sudan", "Sudan"}
HEAVY_SECONDS = 45  # the heavy question's budget; its full search takes about a minute on 2 cores


@pytest.fixture(scope="module")
def session(encoder):
    with kgllm.connect(use_model=False, encoder=encoder) as session:
        yield session


@pytest.fixture(scope="module")
def heavy(session):
    return heavy_question([e.label for e in session.store.entities()])


def test_a_heavy_question_holds_up_neither_health_nor_other_questions(session, heavy):
    """While one 1,000-character, 4-hop question searches, /health and a burst of questions are
    answered, all of them correctly, and not only once the heavy one is done (as they were when
    one lock serialized every request)."""
    with running_server(create_app(session, time_budget=600)) as url:
        heavy_result, health, burst = asyncio.run(_heavy_with_burst(url, heavy, requests=40, concurrency=10))
    heavy_response, heavy_done = heavy_result
    assert heavy_response.status_code == 200
    heavy_answer = heavy_response.json()
    if heavy_answer["metadata"].get("cut"):  # its budget ran out (on a slow or busy machine)
        assert heavy_answer["entities"] == [] and "cut" in heavy_answer["answer"]
        assert heavy_answer["metadata"]["time_budget_seconds"] <= HEAVY_SECONDS
    else:
        assert heavy_answer["entities"]
    assert health and all(response.status_code == 200 for response, _ in health)
    assert [response.json()["triples"] for response, _ in health] == [1165] * len(health)
    assert min(done for _, done in health) < heavy_done  # /health answered while the heavy one ran
    assert len(burst) == 40 and all(response.status_code == 200 for response, _ in burst)
    assert all(set(response.json()["entities"]) == CHAD_NEIGHBOURS for response, _ in burst)
    assert min(done for _, done in burst) < heavy_done  # questions were answered beside it, not after it


async def _heavy_with_burst(url: str, heavy: str, requests: int, concurrency: int):
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def timed(request):
            response = await request
            return response, time.monotonic()

        heavy_task = asyncio.create_task(
            timed(
                client.post(
                    "/ask", json={"question": heavy, "answerer": "paths", "max_hops": 4, "max_seconds": HEAVY_SECONDS}
                )
            )
        )
        await asyncio.sleep(0.3)  # the heavy question is in the server first
        health = [await timed(client.get("/health"))]
        gate = asyncio.Semaphore(concurrency)

        async def ask():
            async with gate:
                return await timed(client.post("/ask", json={"question": BORDER}))

        async def poll_health():
            while not heavy_task.done():
                health.append(await timed(client.get("/health")))
                await asyncio.sleep(0.1)

        poller = asyncio.create_task(poll_health())
        burst = await asyncio.gather(*(ask() for _ in range(requests)))
        heavy_result = await heavy_task
        await poller
    return heavy_result, health, burst


def test_the_reasoner_stops_at_its_time_budget_and_says_so(session, heavy):
    # a reasoner of its own: the session's may hold every phrase of this search from an earlier test,
    # and then the whole search fits in the budget; uncached it takes minutes
    fresh = PathReasoner(session.store, session.retriever, None, session.reasoner.config)
    started = time.monotonic()
    answer = fresh.answer(heavy, max_hops=4, max_seconds=1.0)
    assert time.monotonic() - started < 60  # stopped long before the full search
    assert answer.metadata["cut"] is True and answer.entities == [] and answer.confidence == 0.0
    assert "time budget of 1 s" in answer.text
    # a budget the search fits in changes nothing
    timed = session.ask(BORDER, max_seconds=600)
    assert {e.label for e in timed.entities} == CHAD_NEIGHBOURS and "cut" not in timed.metadata
    assert timed.text == session.ask(BORDER).text


def test_auto_mode_refuses_a_question_naming_more_entities_than_it_can_combine(session, heavy):
    """The heavy question names dozens of entities: refused after one linking pass, saying how many,
    with neither a program parse nor a path search from only some of them."""
    answer = session.ask(heavy, max_hops=4)
    assert answer.entities == [] and answer.confidence == 0.0 and answer.metadata["found"] is False
    named = answer.metadata["entities_named"]
    assert named > MAX_QUESTION_ENTITIES and f"names {named} entities" in answer.text
    assert "Afghanistan" in answer.text and f"at most {MAX_QUESTION_ENTITIES}" in answer.text
    assert "cut" not in answer.metadata and "shape" not in answer.metadata  # neither answerer ran
    # a question about a few entities still reaches the answerer that combines them
    few = session.ask("Which countries border both Niger and Chad but not Libya?")
    assert few.metadata["shape"] == "list+difference" and [e.label for e in few.entities] == ["Nigeria"]


def test_the_server_answers_the_heavy_question_in_auto_mode_with_the_refusal(session, heavy):
    with running_server(create_app(session)) as url:
        response = httpx.post(f"{url}/ask", json={"question": heavy, "max_hops": 4}, timeout=600)
    assert response.status_code == 200
    body = response.json()
    assert body["found"] is False and body["entities"] == [] and "ask about fewer" in body["answer"]


def test_the_rdflib_store_serves_readers_while_a_writer_adds_facts():
    store = RDFLibStore()  # in memory: the demo file stays as it is
    load(store, demo_graph_path())
    before = store.count_triples()
    new = [Triple(CHAD, "https://kgllm.dev/countries/testedWith", f"https://kgllm.dev/t/{i}") for i in range(150)]
    failures: list[BaseException] = []
    seen: list[list[int]] = [[] for _ in range(4)]
    writing = threading.Event()

    def read(mine: list[int]) -> None:
        try:
            while True:
                written = writing.is_set()
                mine.append(len(store.neighbors(CHAD, "out")))
                assert store.entity(CHAD).label == "Chad"
                assert len(list(store.entities())) >= 271
                assert store.search("chad")
                if written:  # one whole round after the last write
                    return
        except BaseException as exc:
            failures.append(exc)

    def write() -> None:
        try:
            for triple in new:
                store.add([triple])
        except BaseException as exc:
            failures.append(exc)
        finally:
            writing.set()

    threads = [threading.Thread(target=read, args=(mine,)) for mine in seen] + [threading.Thread(target=write)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures
    assert store.count_triples() == before + len(new)
    for mine in seen:  # each reader saw whole writes only, in order
        assert mine == sorted(mine) and mine[-1] == len(store.neighbors(CHAD, "out"))


def test_the_readers_writer_lock_lets_readers_share_and_writers_wait():
    lock = ReadWriteLock()
    inside = threading.Barrier(3, timeout=30)  # three readers can only meet if they hold the lock together
    log: list[str] = []

    def reader() -> None:
        with lock.reading():
            inside.wait()
            with lock.reading():  # re-entrant
                log.append("read")

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join(timeout=30)
    assert log == ["read"] * 3

    def writer() -> None:
        with lock.writing():
            log.append("write")

    with lock.reading():
        waiting = threading.Thread(target=writer)
        waiting.start()
        waiting.join(timeout=0.5)
        assert waiting.is_alive() and log[-1] == "read"  # a writer waits while someone reads
    waiting.join(timeout=30)
    assert log[-1] == "write"
    with pytest.raises(RuntimeError, match="cannot start writing"), lock.reading(), lock.writing():
        pass


def test_questions_scored_by_the_model_side_by_side_get_the_answers_they_get_alone(encoder):
    """The model scores plans for several requests at once (no lock around it): same answers as one by one."""
    questions = [BORDER, "In which region is Kenya?", "Which subregion are the neighbours of Chad located in?"] * 4
    with (
        kgllm.connect(encoder=encoder) as session,
        running_server(create_app(session, time_budget=600)) as url,
        httpx.Client(base_url=url, timeout=600) as api,
    ):
        assert api.get("/health").json()["model"]

        def ask(question: str) -> tuple[str, list[str]]:
            answer = api.post("/ask", json={"question": question, "mode": "model"}).json()
            return answer["answer"], [plan["scores"].get("model") for plan in answer["metadata"]["plans"]]

        alone = [ask(q) for q in questions]
        with ThreadPoolExecutor(6) as pool:
            together = list(pool.map(ask, questions))
    assert together == alone and all(scores[0] is not None for _, scores in alone)
