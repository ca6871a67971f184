"""Shared pytest fixtures, one section per back-end or resource."""

from __future__ import annotations

import itertools
import logging
import os
import sys

import pytest

from kgllm.testing import arcadedb_bolt_server

log = logging.getLogger(__name__)


# =========================================================================
# Sentence encoder: the real MiniLM, loaded once
# =========================================================================


@pytest.fixture(scope="session")
def encoder():
    from kgllm.retrieval.encoder import SentenceTransformerEncoder

    return SentenceTransformerEncoder()


@pytest.fixture(scope="session")
def copy_demo_graph():
    """``copy_demo_graph(folder)``: the demo graph copied into a writable folder, with its saved indexes
    (so nothing is encoded again); returns the copy's path."""
    import shutil

    from kgllm.graph.demo import demo_graph_path

    def copy(folder):
        graph = folder / "countries.ttl"
        shutil.copy(demo_graph_path(), graph)
        index = demo_graph_path().with_name("countries.ttl.index")
        if index.is_dir():
            shutil.copytree(index, folder / "countries.ttl.index")
        return graph

    return copy


# =========================================================================
# Bolt server (ArcadeDB with its Bolt plugin) for the Neo4j store
# =========================================================================
# One real server per test session; each test gets its own empty database on
# it (creating one takes ~30 ms).

BOLT_FIXTURES = {"bolt_server", "neo4j_store"}
_database_numbers = itertools.count(1)
_bolt_timings: dict[str, float] = {}


@pytest.fixture(scope="session")
def bolt_server(tmp_path_factory):
    """A real ArcadeDB server speaking Bolt on a free loopback port, for the whole session."""
    pytest.importorskip("arcadedb_embedded", reason='needs arcadedb-embedded: pip install "kgllm[test]"')
    with arcadedb_bolt_server(tmp_path_factory.mktemp("arcadedb")) as server:
        _bolt_timings.update(start=server.start_seconds, warm_up=server.warm_up_seconds)
        yield server


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
        terminalreporter.write_line(
            "ArcadeDB Bolt server started in {start:.2f} s, first query took {warm_up:.2f} s".format(**_bolt_timings)
        )


# =========================================================================
# Exit
# =========================================================================
# Once every test has run and the summary is printed, the interpreter's own teardown
# (the embedded ArcadeDB JVM and native library threads finalizing in no set order)
# has crashed with a segmentation fault now and then, turning a green run red. The
# process therefore ends right after pytest is done, with pytest's own exit status.

_exit_status: dict[str, int] = {}


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    _exit_status["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if "code" in _exit_status:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status["code"])
