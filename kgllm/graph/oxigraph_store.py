"""A persisted graph on Oxigraph (RocksDB on disk, through rdflib): a write costs what it adds.

The graph is a folder. Everything the rdflib store reads and writes works the same here (the
rdflib graph sits on ``oxrdflib``), only persistence differs:

- **One process holds the folder.** RocksDB opens it for one process at a time; the store
  holds an inter-process lock (``<folder>.lock``) from first use until :meth:`close`, and
  another process that opens the same graph waits for it (``lock_timeout``). Two writer
  processes therefore take turns and neither loses the other's write. Within a process, every
  store object on the folder shares one handle and one readers-writer lock.
- **All or nothing.** A write is staged in memory (reads inside it see it), then applied.
  Before a staged batch reaches Oxigraph, its undo record (the statements it adds and the ones
  it removes) is appended to ``<folder>/kgllm-undo.log`` and synced; the log is deleted once
  the write is complete. A write that fails is undone from the log, and so is one cut short
  by a crash, the next time the graph is opened. A load of a large file is one such write in
  many batches, so memory holds one batch, not the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import pyoxigraph as ox
from oxrdflib import OxigraphStore as OxigraphBackend
from oxrdflib._converter import to_ox
from rdflib import RDF, SKOS, Graph, URIRef
from rdflib.graph import DATASET_DEFAULT_GRAPH_ID
from rdflib.store import Store
from rdflib.term import Node

from kgllm.cache import file_lock, fsync_dir
from kgllm.exceptions import ConfigurationError, GraphStoreError
from kgllm.graph.base import Direction
from kgllm.graph.labels import readable
from kgllm.graph.rdflib_store import (
    DEFAULT_BASE,
    DERIVED_ENTITY,
    KGLLM,
    LABEL_PREDICATES,
    NON_RELATIONS,
    RDFLibStore,
    ReadWriteLock,
    edge_patterns,
)
from kgllm.types import Entity, Triple

log = logging.getLogger(__name__)

UNDO_LOG = "kgllm-undo.log"
_NON_RELATION_IRIS = frozenset(str(p) for p in NON_RELATIONS)
_RDF_TYPE = ox.NamedNode(str(RDF.type))
_LABELS = tuple(ox.NamedNode(str(p)) for p in LABEL_PREDICATES)
_ALT_LABEL = ox.NamedNode(str(SKOS.altLabel))
Statement = tuple[Node, Node, Node]


@dataclass
class _Handle:
    """One open Oxigraph folder, shared by the store objects of a process."""

    oxigraph: ox.Store
    graph: Graph
    release: contextlib.ExitStack
    users: int = 0
    version: int = 0  # bumped by every write, so each store object knows when its caches are stale
    undo: list[bytes] = field(default_factory=list)


_handles: dict[Path, _Handle] = {}
_locks: dict[Path, ReadWriteLock] = {}  # one per folder, shared by the store objects on it
_handles_lock = threading.Lock()


class OxigraphStore(RDFLibStore):
    """The rdflib store's graph, persisted in an Oxigraph folder instead of a file."""

    name = "oxigraph"
    lock_timeout = 600.0
    """Seconds to wait for another process that holds the graph folder before giving up."""

    def __init__(self, path: str | os.PathLike, base: str = DEFAULT_BASE):
        super().__init__(None, base=base)
        self.folder = Path(path).resolve()
        self._handle: _Handle | None = None
        self._seen_version = 0
        with _handles_lock:
            self._lock = _locks.setdefault(self.folder, ReadWriteLock())

    @classmethod
    def from_settings(
        cls, settings, graph: str | os.PathLike | None = None, *, writable: bool = False, **kwargs
    ) -> OxigraphStore:
        """The graph folder ``graph`` (else ``settings.graph``); created when writing and missing."""
        path = Path(graph) if graph is not None else settings.graph
        if path is None:
            raise ConfigurationError("the oxigraph store needs a graph folder: --graph FOLDER")
        if path.exists() and not path.is_dir():
            raise ConfigurationError(f"{path}: the oxigraph store keeps a graph in a folder; this is a file")
        if not writable and not path.is_dir():
            raise ConfigurationError(f"{path}: no such graph folder")
        return cls(path, **kwargs)

    @property
    def location(self) -> str:
        return str(self.folder)

    def index_dir(self, cache_dir: Path) -> Path:
        if os.access(self.folder.parent, os.W_OK):
            return self.folder.with_name(self.folder.name + ".index")
        return super().index_dir(cache_dir)

    # -------------------------------------------------------------- opening
    @property
    def graph(self) -> Graph:
        if self._graph is None:
            self._graph = self._open().graph
        return self._graph

    def _open(self) -> _Handle:
        if self._handle is None:
            with _handles_lock:
                handle = _handles.get(self.folder) or _open_folder(self.folder, self.lock_timeout)
                _handles[self.folder] = handle
                handle.users += 1
            self._handle = handle
        return self._handle

    def close(self) -> None:
        """Let go of the folder; the last store object of the process closes it for other processes."""
        handle, self._handle, self._graph = self._handle, None, None
        if handle is None:
            return
        with _handles_lock:
            handle.users -= 1
            if handle.users == 0:
                del _handles[self.folder]
                handle.oxigraph.flush()
                handle.graph.close()  # drops the rdflib side's reference to the Oxigraph store
                del handle.oxigraph, handle.graph  # the last references: RocksDB lets go of the folder
                handle.release.close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        self._open()
        with self._lock.reading():
            yield

    def _cached(self, key: str, build):
        if self._handle is not None and self._handle.version != self._seen_version:
            self._cache.clear()
            self._seen_version = self._handle.version
        return super()._cached(key, build)

    # --------------------------------------------------------------- writes
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Stage the write, apply it with its undo record logged, and undo it all if anything fails.

        A write inside another one (a load's batches) is part of it.
        """
        if self._flush is not None:
            yield
            return
        handle = self._open()
        stored = handle.graph
        staging = _Staged(stored)
        self._graph = Graph(store=staging)
        try:
            with _UndoLog(self.folder / UNDO_LOG) as undo:
                self._undo = undo
                self._flush = lambda: _apply(handle.oxigraph, staging.take(), undo)
                try:
                    yield
                    self._flush()
                except BaseException:
                    undo.roll_back(handle.oxigraph)
                    raise
        finally:
            self._flush = self._undo = None
            self._graph = stored
            handle.version += 1
            self._cache.clear()

    _flush: Any = None  # inside a write: applies what is staged so far
    _undo: _UndoLog | None = None  # inside a write: its undo log

    def _changed(self) -> None:
        self._cache.clear()

    def add_batches(self, batches: Iterable[tuple[list[Triple], list[Entity], list]]) -> int:
        """Add ``(triples, entities, attributes)`` batches as one all-or-nothing write; memory holds one batch.

        While the graph holds no derived fact or entity (nothing for an added one to assert), a batch
        goes straight to Oxigraph, without staging it in rdflib graphs.
        """
        new = 0
        with self._lock.writing(), self._transaction():
            g = self.graph
            plain = (None, RDF.type, KGLLM.Derived) not in g and (None, *DERIVED_ENTITY) not in g
            for triples, entities, attributes in batches:
                if plain:
                    new += self._add_plain(triples, entities, attributes)
                else:
                    new += self._write(triples, entities, 1, attributes)
                    self._flush()
        return new

    def _add_plain(self, triples: list[Triple], entities: list[Entity], attributes: list) -> int:
        assert self._handle is not None and self._undo is not None  # inside a transaction
        oxigraph = self._handle.oxigraph
        relations = dict.fromkeys(
            ox.Quad(*(ox.NamedNode(self._iri(x)) for x in (t.head, t.relation, t.tail))) for t in triples
        )
        described = Graph()
        self._stage_entities(described, entities)
        for subject, prop, value in attributes:
            described.add((self._iri(subject), self._iri(prop), value))
        new = [q for q in relations if q not in oxigraph]
        new += [q for q in map(_quad, described) if q not in oxigraph]
        _apply_quads(oxigraph, new, [], self._undo)
        return sum(1 for q in new if q in relations)

    # ---------------------------------------------------------------- reads
    def query(self, sparql: str, **bindings: str):
        """Run a SPARQL query on Oxigraph; ``bindings`` join as a trailing ``VALUES`` block (never formatted
        into the query's own text; each is checked as an IRI)."""
        if bindings:
            names = " ".join(f"?{name}" for name in bindings)
            values = " ".join(str(ox.NamedNode(self._iri(value))) for value in bindings.values())
            sparql = f"{sparql}\nVALUES ({names}) {{ ({values}) }}"
        with self._reading(), self._sparql:
            return self.graph.query(sparql)

    def _read_neighbors(
        self, entity_id: str, direction: Direction, relation: str | None, limit: int | None
    ) -> list[Triple]:
        """Read from Oxigraph itself: through rdflib every edge becomes three rdflib terms first, which
        is most of a path search's time on a big graph."""
        if self._flush is not None:  # inside a write: what it staged too
            return super()._read_neighbors(entity_id, direction, relation, limit)
        assert self._handle is not None  # called while reading
        predicate = ox.NamedNode(self._iri(relation)) if relation else None
        found: list[Triple] = []
        for subject, prop, value in edge_patterns(ox.NamedNode(self._iri(entity_id)), predicate, direction):
            for quad in self._handle.oxigraph.quads_for_pattern(subject, prop, value, ox.DefaultGraph()):
                subject_node, object_node = quad.subject, quad.object
                if (
                    isinstance(object_node, ox.NamedNode)
                    and not isinstance(subject_node, ox.Triple)  # an RDF-star statement is no entity's edge
                    and quad.predicate.value not in _NON_RELATION_IRIS
                ):
                    found.append(Triple(subject_node.value, quad.predicate.value, object_node.value))
                    if limit is not None and len(found) >= limit:
                        return found
        return found

    def classes_of(self, entity_id: str) -> tuple[str, ...]:
        with self._reading():
            if self._flush is not None:  # inside a write: what it staged too
                return super().classes_of(entity_id)
            if self._iri(entity_id) not in self._entity_nodes():
                return ()
            assert self._handle is not None  # opened for reading
            found = self._handle.oxigraph.quads_for_pattern(
                ox.NamedNode(self._iri(entity_id)), _RDF_TYPE, None, ox.DefaultGraph()
            )
            return tuple(sorted(q.object.value for q in found if isinstance(q.object, ox.NamedNode)))

    def _label_of(self, node: URIRef) -> str | None:
        if self._flush is not None:  # inside a write: what it staged too
            return super()._label_of(node)
        subject = ox.NamedNode(str(node))
        for predicate in _LABELS:
            value = next(self._objects(subject, predicate), None)
            if value is not None:
                return value.value
        return None

    def _entity(self, node: URIRef) -> Entity:
        """Read from Oxigraph itself, as the edges are: an answer of thousands of entities reads each."""
        if self._flush is not None:  # inside a write: what it staged too
            return super()._entity(node)
        subject = ox.NamedNode(str(node))
        return Entity(
            id=str(node),
            label=self._label_of(node) or readable(str(node), relation=self._is_property(node)),
            aliases=tuple(sorted(term.value for term in self._objects(subject, _ALT_LABEL))),
            types=tuple(sorted(t.value for t in self._objects(subject, _RDF_TYPE) if isinstance(t, ox.NamedNode))),
        )

    def _objects(self, subject: ox.NamedNode, predicate: ox.NamedNode) -> Iterator[Any]:
        assert self._handle is not None  # called while reading
        for quad in self._handle.oxigraph.quads_for_pattern(subject, predicate, None, ox.DefaultGraph()):
            yield quad.object

    def count_triples(self) -> int:
        """Counted by Oxigraph's query engine, not by reading every statement into Python."""
        with self._reading():
            if self._flush is not None:  # inside a write: count what it staged too
                return super().count_triples()
            return self._cached("count", self._count_relation_triples)

    def _count_relation_triples(self) -> int:
        assert self._handle is not None  # called while reading
        excluded = ", ".join(f"<{p}>" for p in NON_RELATIONS)
        query = f"SELECT (COUNT(*) AS ?n) WHERE {{ ?s ?p ?o FILTER(isIRI(?o) && ?p NOT IN ({excluded})) }}"
        solutions = self._handle.oxigraph.query(query)
        return int(next(iter(solutions))[0].value)  # type: ignore[arg-type]


class _Staged(Store):
    """A write in progress over a graph: reads see the graph with the changes made so far, which stay here."""

    def __init__(self, stored: Graph):
        super().__init__()
        self.stored = stored
        self.added = Graph()
        self.removed: set[Statement] = set()

    def add(self, triple: Statement, context: Any = None, quoted: bool = False) -> None:
        if triple in self.removed:
            self.removed.discard(triple)
        elif triple not in self.stored:
            self.added.add(triple)

    def remove(self, pattern: Any, context: Any = None) -> None:
        for triple in list(self._matching(pattern)):
            if triple in self.added:
                self.added.remove(triple)
            else:
                self.removed.add(triple)

    def triples(self, pattern: Any, context: Any = None) -> Iterator[tuple[Statement, Iterator[Any]]]:
        for triple in self._matching(pattern):
            yield triple, iter(())

    def _matching(self, pattern: Any) -> Iterator[Statement]:
        for triple in self.stored.triples(pattern):
            if triple not in self.removed:
                yield triple
        yield from self.added.triples(pattern)

    def __len__(self, context: Any = None) -> int:
        return len(self.stored) - len(self.removed) + len(self.added)

    def take(self) -> tuple[list[Statement], list[Statement]]:
        """``(added, removed)`` so far, forgotten here: the caller applies them to the stored graph."""
        added, removed = list(self.added), list(self.removed)
        self.added, self.removed = Graph(), set()
        return added, removed


class _UndoLog:
    """Undo records of a write in progress, synced to a file before the changes they undo are made."""

    def __init__(self, path: Path):
        self.path = path
        self._file: BinaryIO | None = None

    def __enter__(self) -> _UndoLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)  # the commit point: from here the write stays

    def append(self, added: list[ox.Quad], removed: list[ox.Quad]) -> None:
        if self._file is None:
            self._file = open(self.path, "wb")  # noqa: SIM115 - open across appends, closed on exit
            fsync_dir(self.path.parent)
        pickle.dump((_nquads(added), _nquads(removed)), self._file)
        self._file.flush()
        os.fsync(self._file.fileno())

    def roll_back(self, oxigraph: ox.Store) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        undo(oxigraph, self.path)


def _apply(oxigraph: ox.Store, change: tuple[list[Statement], list[Statement]], log_: _UndoLog) -> None:
    added, removed = change
    _apply_quads(oxigraph, [_quad(s) for s in added], [_quad(s) for s in removed], log_)


def _apply_quads(oxigraph: ox.Store, added: list[ox.Quad], removed: list[ox.Quad], log_: _UndoLog) -> None:
    """Log how to undo the change, then make it."""
    if not added and not removed:
        return
    log_.append(added, removed)
    for quad in removed:
        oxigraph.remove(quad)
    oxigraph.extend(added)


def _quad(statement: Statement) -> ox.Quad:
    return cast(ox.Quad, to_ox(statement))  # a triple becomes a quad in the default graph


def _nquads(quads: list[ox.Quad]) -> bytes:
    return cast(bytes, ox.serialize(quads, format=ox.RdfFormat.N_QUADS)) if quads else b""  # no output file: bytes


def _quads(nquads: bytes) -> list[ox.Quad]:
    return list(ox.parse(nquads, format=ox.RdfFormat.N_QUADS)) if nquads else []


def undo(oxigraph: ox.Store, path: Path) -> None:
    """Undo the records in the log at ``path``, newest first, then delete it (no log: nothing to undo)."""
    if not path.exists():
        return
    records = []
    with open(path, "rb") as source:
        while True:
            try:
                records.append(pickle.load(source))
            except (EOFError, pickle.UnpicklingError):  # the end, or a record cut short by a crash
                break
    for added, removed in reversed(records):
        for quad in _quads(added):
            oxigraph.remove(quad)
        oxigraph.extend(_quads(removed))
    oxigraph.flush()
    path.unlink()


def _open_folder(folder: Path, timeout: float) -> _Handle:
    release = contextlib.ExitStack()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        release.enter_context(file_lock(folder, timeout=timeout, what=f"graph folder {folder}"))
        oxigraph = ox.Store(str(folder))
    except OSError as exc:
        release.close()
        raise GraphStoreError(f"{folder}: cannot open the graph folder ({exc.strerror or exc})") from None
    except BaseException:
        release.close()
        raise
    if (folder / UNDO_LOG).exists():
        log.warning("%s: a write was cut short; undoing it", folder)
        undo(oxigraph, folder / UNDO_LOG)
    # the rdflib graph is Oxigraph's default graph, where the undo log's statements go too
    graph = Graph(store=OxigraphBackend(store=oxigraph), identifier=DATASET_DEFAULT_GRAPH_ID)
    return _Handle(oxigraph=oxigraph, graph=graph, release=release)
