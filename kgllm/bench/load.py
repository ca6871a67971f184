"""Load and index time per 1,000 triples on both stores, and batched against one-MERGE-per-triple writes."""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kgllm.graph.loaders import read_file
from kgllm.graph.neo4j_store import Neo4jStore, merge_one_per_triple
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.retrieval.encoder import Encoder
from kgllm.retrieval.retriever import KGRetriever
from kgllm.testing import BoltServer
from kgllm.types import Triple


@dataclass
class Timing:
    store: str
    what: str
    triples: int
    seconds: float

    def row(self) -> dict[str, str]:
        return {
            "store": self.store,
            "operation": self.what,
            "triples": str(self.triples),
            "seconds": f"{self.seconds:.2f}",
            "s / 1k triples": f"{1000 * self.seconds / self.triples:.3f}",
            "triples / s": f"{self.triples / self.seconds:,.0f}",
        }


def _timed(fn) -> tuple[object, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def load_and_index(store, name: str, graph: Path, encoder: Encoder, index_dir: Path) -> list[Timing]:
    """Parse and write ``graph`` into ``store``, then build its FAISS indexes from scratch."""
    data = read_file(graph)
    _, load_seconds = _timed(lambda: store.add(data.triples, data.entities))
    _, index_seconds = _timed(lambda: KGRetriever(store, encoder, index_dir=index_dir).build(force=True))
    n = len(data.triples)
    return [
        Timing(name, "load (parse + write)", n, load_seconds),
        Timing(name, "index (encode + FAISS)", n, index_seconds),
    ]


def synthetic_triples(n: int) -> list[Triple]:
    """``n`` distinct triples over a few hundred entities and a dozen relations."""
    base = "https://kgllm.dev/bench/"
    return [Triple(f"{base}e{i % 997}", f"{base}r{i % 13}", f"{base}e{(i * 7 + 1) % 991}") for i in range(n)]


def neo4j_write_modes(server: BoltServer, n: int) -> list[Timing]:
    """The same ``n`` triples written batched (UNWIND, one transaction) and one MERGE per triple."""
    timings: list[Timing] = []
    writes: tuple[tuple[str, Callable[[Neo4jStore, list[Triple]], int]], ...] = (
        ("write, batched UNWIND", lambda s, t: s.add(t)),
        ("write, one MERGE per triple", merge_one_per_triple),
    )
    for mode, write in writes:
        database = "bench" + str(len(timings))
        server.create_database(database)
        with Neo4jStore(server.uri, server.user, server.password, database=database) as store:
            store.count_triples()  # connect and create the schema outside the timing
            triples = synthetic_triples(n)
            added, seconds = _timed(functools.partial(write, store, triples))
            assert added == n, f"{mode} wrote {added} of {n} triples"
            timings.append(Timing("neo4j (ArcadeDB Bolt)", mode, n, seconds))
        server.drop_database(database)
    return timings


def run_load_benchmark(graph: Path, encoder: Encoder, server: BoltServer, write_triples: int) -> list[Timing]:
    with tempfile.TemporaryDirectory() as tmp:
        timings = load_and_index(RDFLibStore(), "rdflib (memory)", graph, encoder, Path(tmp) / "rdflib")
        server.create_database("benchload")
        with Neo4jStore(server.uri, server.user, server.password, database="benchload") as neo:
            timings += load_and_index(neo, "neo4j (ArcadeDB Bolt)", graph, encoder, Path(tmp) / "neo4j")
        timings += neo4j_write_modes(server, write_triples)
    return timings
