"""Shared pytest fixtures, one section per back-end or resource."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import socket
import time
import urllib.request
from dataclasses import dataclass

import pytest

log = logging.getLogger(__name__)


# =========================================================================
# Sentence encoder: the real MiniLM, loaded once
# =========================================================================

@pytest.fixture(scope="session")
def encoder():
    from kgllm.retrieval.encoder import SentenceTransformerEncoder

    return SentenceTransformerEncoder()


# =========================================================================
# Bolt server (ArcadeDB with its Bolt plugin) for the Neo4j store
# =========================================================================
# One real server per test session, started in-process from arcadedb-embedded;
# each test gets its own empty database on it (creating one takes ~30 ms).

BOLT_FIXTURES = {"bolt_server", "neo4j_store"}
_BOLT_USER = "root"  # ArcadeDB's administrator, the only user a fresh server has
_BOLT_PASSWORD = "kgllm-test-password"
_database_numbers = itertools.count(1)
_bolt_timings: dict[str, float] = {}


@dataclass(frozen=True)
class BoltServer:
    """Where the test Bolt server listens, and how to make and drop databases on it."""

    uri: str
    user: str
    password: str
    database: str
    http_port: int
    start_seconds: float

    def create_database(self, name: str) -> None:
        self._server_command(f"create database {name}")

    def drop_database(self, name: str) -> None:
        self._server_command(f"drop database {name}")

    def _server_command(self, command: str) -> None:
        # ArcadeDB's HTTP server API; Bolt has no way to create a database
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/api/v1/server", data=json.dumps({"command": command}).encode(),
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def bolt_server(tmp_path_factory):
    """A real ArcadeDB server speaking Bolt on a free loopback port, for the whole session."""
    arcadedb = pytest.importorskip("arcadedb_embedded", reason='needs arcadedb-embedded: pip install "kgllm[test]"')
    root = tmp_path_factory.mktemp("arcadedb")
    bolt_port, http_port = _free_port(), _free_port()
    started = time.perf_counter()
    # ArcadeDB writes its logs to ./log: keep them in the temporary root, not the checkout
    with contextlib.chdir(root):
        server = arcadedb.ArcadeDBServer(str(root), _BOLT_PASSWORD, config={
            "server_plugins": "Bolt:com.arcadedb.bolt.BoltProtocolPlugin",
            "bolt_port": bolt_port, "http_port": http_port})
        server.start()
    seconds = time.perf_counter() - started
    info = BoltServer(uri=f"bolt://127.0.0.1:{bolt_port}", user=_BOLT_USER, password=_BOLT_PASSWORD,
                      database="kgllm", http_port=http_port, start_seconds=seconds)
    try:
        info.create_database(info.database)
        warm_up = _warm_up(info)
        _bolt_timings.update(start=seconds, warm_up=warm_up)
        log.info("ArcadeDB Bolt server on port %d started in %.2f s, first query %.2f s", bolt_port, seconds, warm_up)
        yield info
    finally:
        server.stop()


def _warm_up(server: BoltServer) -> float:
    """Run the first Cypher query (about a second of engine start-up) here rather than in the first test."""
    import neo4j

    started = time.perf_counter()
    with neo4j.GraphDatabase.driver(server.uri, auth=(server.user, server.password)) as driver:
        driver.execute_query("UNWIND range(1, 10) AS i MERGE (n:WarmUp {i: i}) RETURN count(n)",
                             database_=server.database)
    return time.perf_counter() - started


@pytest.fixture
def neo4j_store(bolt_server):
    """A ``Neo4jStore`` on a fresh, empty database of the test Bolt server."""
    from kgllm.graph.neo4j_store import Neo4jStore

    name = f"test{next(_database_numbers)}"
    bolt_server.create_database(name)
    store = Neo4jStore(bolt_server.uri, bolt_server.user, bolt_server.password, database=name)
    try:
        yield store
    finally:
        store.close()
        try:
            bolt_server.drop_database(name)
        except OSError as exc:  # a leftover database only costs disk in the temporary root
            log.warning("could not drop test database %s: %s", name, exc)


def pytest_collection_modifyitems(items):
    """Mark every test that uses the Bolt server ``neo4j``, so ``-m "not neo4j"`` skips them."""
    for item in items:
        if BOLT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.neo4j)


def pytest_terminal_summary(terminalreporter):
    if _bolt_timings:
        terminalreporter.write_line("ArcadeDB Bolt server started in {start:.2f} s, first query took {warm_up:.2f} s"
                                    .format(**_bolt_timings))
