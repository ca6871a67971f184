"""A real Bolt server for tests and benchmarks: ArcadeDB with its Bolt plugin, from ``arcadedb-embedded``.

The neo4j driver talks to it as to Neo4j, so the Neo4j store is exercised over
real Bolt on machines without Neo4j (``pip install "kgllm[test]"``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from kgllm.exceptions import MissingDependencyError

log = logging.getLogger(__name__)

USER = "root"  # ArcadeDB's administrator, the only user a fresh server has
PASSWORD = "kgllm-test-password"


@dataclass(frozen=True)
class BoltServer:
    """Where the Bolt server listens, and how to make and drop databases on it."""

    uri: str
    user: str
    password: str
    database: str
    http_port: int
    start_seconds: float
    warm_up_seconds: float = 0.0

    def create_database(self, name: str) -> None:
        self._server_command(f"create database {name}")

    def drop_database(self, name: str) -> None:
        self._server_command(f"drop database {name}")

    def _server_command(self, command: str) -> None:
        # ArcadeDB's HTTP server API; Bolt has no way to create a database
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/api/v1/server",
            data=json.dumps({"command": command}).encode(),
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def arcadedb_bolt_server(root: str | os.PathLike, database: str = "kgllm") -> Iterator[BoltServer]:
    """Start ArcadeDB speaking Bolt on free loopback ports, with ``database`` created; stop it on exit."""
    try:
        import arcadedb_embedded
    except ImportError as exc:
        raise MissingDependencyError('a test Bolt server needs arcadedb-embedded: pip install "kgllm[test]"') from exc
    bolt_port, http_port = free_port(), free_port()
    started = time.perf_counter()
    # ArcadeDB writes its logs to ./log: keep them in the server's root, not the working directory
    with contextlib.chdir(root):
        server = arcadedb_embedded.ArcadeDBServer(
            str(root),
            PASSWORD,
            config={
                "server_plugins": "Bolt:com.arcadedb.bolt.BoltProtocolPlugin",
                "bolt_port": bolt_port,
                "http_port": http_port,
            },
        )
        server.start()
    try:
        info = BoltServer(
            uri=f"bolt://127.0.0.1:{bolt_port}",
            user=USER,
            password=PASSWORD,
            database=database,
            http_port=http_port,
            start_seconds=time.perf_counter() - started,
        )
        info.create_database(database)
        info = BoltServer(**{**info.__dict__, "warm_up_seconds": _warm_up(info)})
        log.info(
            "ArcadeDB Bolt server on port %d started in %.2f s, first query %.2f s",
            bolt_port,
            info.start_seconds,
            info.warm_up_seconds,
        )
        yield info
    finally:
        server.stop()


def _warm_up(server: BoltServer) -> float:
    """Run the first Cypher query (about a second of engine start-up) before the server is used."""
    import neo4j

    started = time.perf_counter()
    with neo4j.GraphDatabase.driver(server.uri, auth=(server.user, server.password)) as driver:
        driver.execute_query(
            "UNWIND range(1, 10) AS i MERGE (n:WarmUp {i: i}) RETURN count(n)", database_=server.database
        )
    return time.perf_counter() - started
