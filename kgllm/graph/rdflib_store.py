"""The embedded default store: an rdflib graph in memory, optionally persisted to a file.

Relations are RDF properties between IRIs. Labels are ``rdfs:label`` (or
``skos:prefLabel``), aliases ``skos:altLabel``, classes ``rdf:type``; these and
literal-valued statements are not relation triples. Ids that are not absolute
IRIs are minted in ``base``.

Provenance: a derived fact is a plain triple like any other (every reader sees
it), plus a blank node per record, reified rdf:Statement-style (``rdf:subject``,
``rdf:predicate``, ``rdf:object``) with ``kgllm:`` properties, and one
``kgllm:Derived`` marker node per fact that is not asserted. ``add`` of a
derived fact drops its marker, which makes it asserted. Likewise an entity that
``add_derived`` introduced carries ``kgllm:origin kgllm:DerivedEntity`` until ``add``
asserts it, and a source recorded without facts is a ``kgllm:Source`` blank node
with its ``kgllm:source``.

Literal-valued statements other than labels (``ex:chad ex:population 17``) are kept
in the graph as attributes: readers of relations skip them, exports keep them.

A persisted store is safe to write from several processes at once: every write
takes an inter-process lock on ``<file>.lock``, re-reads the file if another
process changed it since it was read (so one writer adds to the other's result,
never overwrites it), and replaces the file atomically (unique temporary file in
the same folder, fsync, rename, fsync of the folder).

Threads: reads run side by side, writes one at a time with no read in progress (a
readers-writer lock, re-entrant per thread). rdflib's in-memory graph is safe to read from
several threads while nothing writes, and the caches built during a read are deterministic,
so two readers building one at once store the same value. Iterators are materialized under
the lock, so a caller never holds it between items. SPARQL runs one query at a time (rdflib's
query parser is not thread-safe).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

from rdflib import RDF, RDFS, SKOS, XSD, BNode, Graph, Literal, Namespace, URIRef
from rdflib.query import ResultRow
from rdflib.term import Node

from kgllm.cache import atomic_write, file_lock
from kgllm.exceptions import (
    ConfigurationError,
    GraphStoreError,
    InputError,
    ParseError,
    QueryLimitError,
    QueryRefusedError,
)
from kgllm.graph.base import DEFAULT_BATCH_SIZE, Direction, GraphStore, check_entity, check_triple, is_described
from kgllm.graph.labels import normalize, readable
from kgllm.graph.queries import DeadlineGraph, prepare_sparql
from kgllm.types import Entity, Provenance, Triple

log = logging.getLogger(__name__)

DEFAULT_BASE = "https://kgllm.dev/kg/"
KGLLM = Namespace("https://kgllm.dev/ns#")
LABEL_PREDICATES = (RDFS.label, SKOS.prefLabel)
REIFICATION = (RDF.subject, RDF.predicate, RDF.object)
DERIVED_ENTITY = (KGLLM.origin, KGLLM.DerivedEntity)
RECORD_FIELDS = (KGLLM.source, KGLLM.method, KGLLM.model, KGLLM.score, KGLLM.created, KGLLM.spanStart, KGLLM.spanEnd)
NON_RELATIONS = frozenset(
    {RDF.type, RDFS.label, SKOS.prefLabel, SKOS.altLabel, RDFS.comment, KGLLM.origin, *REIFICATION, *RECORD_FIELDS}
)
_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
TABLE_SUFFIXES = (".tsv", ".txt", ".csv")  # triple tables the loaders read
NEIGHBOR_CACHE_SIZE = 20_000  # entities' edge lists kept between writes (emptied whole when full)
Attribute = tuple[str, str, Literal]  # (subject id, property id, value): a literal-valued statement
RDF_FORMATS = {
    ".ttl": "turtle",
    ".nt": "nt",
    ".n3": "n3",
    ".jsonld": "json-ld",
    ".json": "json-ld",
    ".rdf": "xml",
    ".xml": "xml",
    ".owl": "xml",
    ".trig": "trig",
    ".nq": "nquads",
}


def to_iri(identifier: str, base: str = DEFAULT_BASE) -> URIRef:
    """The IRI for an id: absolute IRIs stay as they are, plain names are minted in ``base``."""
    return URIRef(identifier if _IRI.match(identifier) else base + quote(identifier.strip().replace(" ", "_")))


def rdf_format(path: Path, format: str | None = None) -> str:
    if format:
        return format
    try:
        return RDF_FORMATS[path.suffix.lower()]
    except KeyError:
        raise GraphStoreError(f"{path}: unknown RDF format; use one of {sorted(RDF_FORMATS)} or pass format=") from None


class ReadWriteLock:
    """Many readers or one writer; re-entrant per thread (a writer may also read).

    A writer passes a turnstile that new readers pass too: once a writer waits, readers that come
    after it wait for it, and when it is done they contend for the turnstile with the next writer,
    so neither a stream of readers nor a stream of writes shuts the other side out.

    Example::

        lock = ReadWriteLock()
        with lock.reading():
            ...  # any number of threads at once
        with lock.writing():
            ...  # this thread alone
    """

    def __init__(self) -> None:
        self._turnstile = threading.Lock()  # held by a writer from its arrival to its end
        self._condition = threading.Condition()
        self._readers = 0
        self._held = threading.local()  # this thread's depth: reads, writes

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the lock as one of any number of readers."""
        held = self._held.__dict__
        if held.get("reads", 0) or held.get("writes", 0):  # already inside: no new wait, no deadlock
            held["reads"] = held.get("reads", 0) + 1
            try:
                yield
            finally:
                held["reads"] -= 1
            return
        with self._turnstile, self._condition:  # waits while a writer waits or writes
            self._readers += 1
        held["reads"] = 1
        try:
            yield
        finally:
            held["reads"] = 0
            with self._condition:
                self._readers -= 1
                if not self._readers:
                    self._condition.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the lock alone: new readers wait, and the readers in progress are waited for."""
        held = self._held.__dict__
        if held.get("writes", 0):
            held["writes"] += 1
            try:
                yield
            finally:
                held["writes"] -= 1
            return
        if held.get("reads", 0):
            raise RuntimeError("a thread reading the store cannot start writing to it")
        with self._turnstile:
            with self._condition:
                while self._readers:
                    self._condition.wait()
            held["writes"] = 1
            try:
                yield
            finally:
                held["writes"] = 0


T = TypeVar("T")


def edge_patterns(node: T, predicate: T | None, direction: Direction) -> list[tuple[T | None, T | None, T | None]]:
    """The (subject, predicate, object) patterns of ``node``'s edges in ``direction``."""
    patterns: list[tuple[T | None, T | None, T | None]] = []
    if direction in ("out", "both"):
        patterns.append((node, predicate, None))
    if direction in ("in", "both"):
        patterns.append((None, predicate, node))
    return patterns


def _reads(method):
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._reading():
            return method(self, *args, **kwargs)

    return locked


def _writes(method):
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock.writing():
            return method(self, *args, **kwargs)

    return locked


class RDFLibStore(GraphStore):
    """In-memory rdflib graph; with ``path``, loaded from and saved to that file after every write."""

    name = "rdflib"
    supports_sparql = True
    supports_attributes = True
    lock_timeout = 600.0
    """Seconds a write waits for another process writing the same file before it gives up."""

    def __init__(self, path: str | os.PathLike | None = None, format: str | None = None, base: str = DEFAULT_BASE):
        self.path = Path(path) if path is not None else None
        self.format = format
        self.base = base
        self._graph: Graph | None = None
        self._signature: tuple[int, int, int] | None = None  # the file as last read or written
        self._lock = ReadWriteLock()
        self._sparql = threading.Lock()
        self._cache: dict[str, object] = {}

    @classmethod
    def from_settings(
        cls, settings, graph: str | os.PathLike | None = None, *, writable: bool = False, **kwargs
    ) -> RDFLibStore:
        """The graph file ``graph`` (else ``settings.graph``, else the demo graph when only reading).

        Triple tables (.tsv, .txt, .csv) are read into memory; writing needs an RDF file,
        which is created (with its folder) when missing.
        """
        from kgllm.graph.demo import demo_graph_path

        path = Path(graph) if graph is not None else settings.graph
        if path is None:
            if writable:
                raise ConfigurationError("say which graph file to write: --graph FILE.ttl, or another --store")
            path = demo_graph_path()
        if path.suffix.lower() in TABLE_SUFFIXES:
            if writable:
                raise ConfigurationError(
                    f"{path}: a triple table cannot be written in place; load it into an RDF file with `kgllm load`"
                )
            if not path.is_file():
                raise ConfigurationError(f"{path}: no such graph file")
            from kgllm.graph.loaders import load

            store = cls(**kwargs)
            load(store, path)
            return store
        if writable:
            rdf_format(path, kwargs.get("format"))  # refuse a suffix it could not write, before any work
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise ConfigurationError(f"{path}: a file is in the way of its folder {path.parent}") from None
            except OSError as exc:
                raise ConfigurationError(
                    f"{path}: cannot create the folder {path.parent} ({exc.strerror or exc})"
                ) from None
            if path.is_dir():
                raise ConfigurationError(f"{path}: is a folder, not a graph file")
        elif not path.is_file():
            raise ConfigurationError(f"{path}: no such graph file")
        return cls(path, **kwargs)

    @property
    def location(self) -> str:
        return str(self.path.resolve()) if self.path is not None else f"memory:{id(self)}"

    def index_dir(self, cache_dir: Path) -> Path:
        """Beside the graph file when its folder is writable, else in the cache."""
        if self.path is not None and os.access(self.path.parent, os.W_OK):
            return self.path.with_name(self.path.name + ".index")
        return super().index_dir(cache_dir)

    # ------------------------------------------------------------- internals
    @property
    def graph(self) -> Graph:
        """The underlying rdflib graph (loaded on first use)."""
        if self._graph is None:
            graph = Graph()
            self._signature = None
            if self.path is not None and self.path.exists():
                self._signature = self._parse_file(graph, self.path)
            self._graph = graph
        return self._graph

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """The read lock; a graph not loaded yet is loaded first, under the write lock."""
        if self._graph is None:
            with self._lock.writing():
                self.graph  # noqa: B018 - loads the file once
        with self._lock.reading():
            yield

    def _parse_file(self, graph: Graph, path: Path) -> tuple[int, int, int]:
        """Parse ``path`` into ``graph``; returns the signature of the file read (taken from the open file)."""
        from kgllm.graph.loaders import syntax_error

        fmt = rdf_format(path, self.format)
        try:
            with open(path, "rb") as source:
                signature = _signature(os.fstat(source.fileno()))
                graph.parse(source, format=fmt, publicID=path.resolve().as_uri())
        except OSError as exc:
            raise GraphStoreError(f"{path}: cannot read the graph file ({exc.strerror or exc})") from None
        except Exception as exc:  # rdflib raises many types; all mean the file did not parse
            line, reason = syntax_error(exc)
            raise ParseError(reason, path=str(path), line=line) from exc
        return signature

    def _iri(self, identifier: str) -> URIRef:
        return to_iri(identifier, self.base)

    def _is_relation_triple(self, p: Node, o: Node) -> bool:
        return p not in NON_RELATIONS and isinstance(o, URIRef)

    def _triple(self, s: Node, p: Node, o: Node) -> Triple:
        return Triple(str(s), str(p), str(o))

    def _cached(self, key: str, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One isolated, atomic write of a persisted store (a no-op frame for one in memory).

        Writers of the file take turns on its lock; under the lock the graph is re-read
        when another process has replaced the file since this one read it, so the write
        applies to the latest graph. If the write fails, the graph in memory is dropped
        and read again from the file (which still holds the last complete write).
        """
        if self.path is None:
            yield
            return
        held = contextlib.ExitStack()
        try:
            held.enter_context(file_lock(self.path, timeout=self.lock_timeout, what=f"graph file {self.path}"))
        except OSError as exc:
            raise GraphStoreError(f"{self.path}: cannot lock the graph file ({exc.strerror or exc})") from None
        with held:
            try:
                self._catch_up()
                yield
            except BaseException:
                self._graph, self._signature = None, None
                self._cache.clear()
                raise

    def _catch_up(self) -> None:
        """Re-read the file if it is not the one this store last read or wrote (call under the lock)."""
        assert self.path is not None  # only a persisted store's transaction holds the lock
        try:
            current = _signature(os.stat(self.path))
        except FileNotFoundError:
            current = None
        if self._graph is not None and current != self._signature:
            log.info("%s changed since it was read; reading it again before writing", self.path)
            self._graph = None
            self._cache.clear()
        self.graph  # noqa: B018 - load it now, under the lock

    def _save(self) -> None:
        """Replace the file with the graph (call under the lock): unique temporary file, fsync, rename."""
        assert self.path is not None  # only a persisted store's transaction holds the lock
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # from writers killed mid-save
            leftover.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)  # the name older versions used
        try:
            with atomic_write(self.path, "wb") as out:
                self.graph.serialize(out, format=rdf_format(self.path, self.format), encoding="utf-8")
        except OSError as exc:
            raise GraphStoreError(f"{self.path}: cannot write the graph file ({exc.strerror or exc})") from None
        self._signature = _signature(os.stat(self.path))

    # ---------------------------------------------------------------- writes
    def add(
        self,
        triples: Iterable[Triple],
        entities: Iterable[Entity] = (),
        batch_size: int = DEFAULT_BATCH_SIZE,
        attributes: Iterable[Attribute] = (),
    ) -> int:
        """Add entities, triples and ``attributes`` (literal-valued statements) in one atomic write.

        ``attributes`` are ``(subject id, property id, rdflib Literal)``: kept in the graph
        (and in exports), never read as relations. Otherwise as :meth:`GraphStore.add`.
        """
        triples = [check_triple(t) for t in triples]
        entities = [check_entity(e) for e in entities]
        attributes = [check_attribute(a) for a in attributes]
        if batch_size < 1:
            raise InputError("batch_size must be at least 1")
        return self._write(triples, entities, batch_size, attributes)

    @_writes
    def _write(
        self, triples: list[Triple], entities: list[Entity], batch_size: int, attributes: Sequence[Attribute] = ()
    ) -> int:
        with self._transaction():
            staged = Graph()
            self._stage_entities(staged, entities)
            for subject, prop, value in attributes:
                staged.add((self._iri(subject), self._iri(prop), value))
            new = 0
            for t in triples:
                spo = self._spo(t)
                if spo not in self.graph and spo not in staged:
                    new += 1
                staged.add(spo)
            self.graph.addN((s, p, o, self.graph) for s, p, o in staged)
            self._assert(triples, entities)
            self._changed()
        return new

    @_reads
    def count_attributes(self) -> int:
        """Literal-valued statements other than labels, aliases and provenance fields."""
        names = {*LABEL_PREDICATES, SKOS.altLabel, *RECORD_FIELDS}
        return sum(1 for s, p, o in self.graph if isinstance(o, Literal) and isinstance(s, URIRef) and p not in names)

    def _assert(self, triples: list[Triple], entities: list[Entity]) -> None:
        """Drop the derived markers of the triples and entities being added."""
        g = self.graph
        if (None, RDF.type, KGLLM.Derived) in g:
            for t in triples:
                for marker in self._statements(t, KGLLM.Derived):
                    g.remove((marker, None, None))
        if (None, *DERIVED_ENTITY) in g:
            for e in entities:
                g.remove((self._iri(e.id), *DERIVED_ENTITY))

    def _stage_entities(self, staged: Graph, entities: list[Entity]) -> None:
        for e in entities:
            node = self._iri(e.id)
            if e.label:
                staged.add((node, RDFS.label, Literal(e.label)))
            for alias in e.aliases:
                staged.add((node, SKOS.altLabel, Literal(alias)))
            for cls in e.types:
                staged.add((node, RDF.type, self._iri(cls)))

    def _changed(self) -> None:
        self._cache.clear()
        if self.path is not None:
            self._save()

    # ------------------------------------------------------------ provenance
    def _spo(self, t: Triple) -> tuple[URIRef, URIRef, URIRef]:
        return self._iri(t.head), self._iri(t.relation), self._iri(t.tail)

    def _statements(self, t: Triple, kind: URIRef) -> list[Node]:
        """The reified nodes of ``kind`` (a record or the derived marker) about a triple."""
        s, p, o = self._spo(t)
        g = self.graph
        return [
            n
            for n in g.subjects(RDF.subject, s)
            if (n, RDF.type, kind) in g and (n, RDF.predicate, p) in g and (n, RDF.object, o) in g
        ]

    def _record(self, node: Node) -> Provenance:
        g = self.graph
        # a record's score and span are typed literals when present; a span has both ends or neither
        score, start, end = (
            cast("Literal | None", g.value(node, f)) for f in (KGLLM.score, KGLLM.spanStart, KGLLM.spanEnd)
        )
        return Provenance(
            source=str(g.value(node, KGLLM.source)),
            method=str(g.value(node, KGLLM.method)),
            model=str(g.value(node, KGLLM.model) or ""),
            score=float(score) if score is not None else None,
            created=str(g.value(node, KGLLM.created)),
            span=(int(start), int(cast(Literal, end))) if start is not None else None,
        )

    @_writes
    def _write_derived(self, triples: list[Triple], records: list[Provenance], entities: list[Entity]) -> int:
        with self._transaction():
            staged = Graph()
            self._stage_entities(staged, entities)
            for e in entities:
                if is_described(e) and self._is_new(self._iri(e.id)):
                    staged.add((self._iri(e.id), *DERIVED_ENTITY))
            stored: dict[Triple, set[tuple]] = {}
            new = 0
            for t, record in zip(triples, records):
                if t not in stored:
                    stored[t] = {_record_key(self._record(n)) for n in self._statements(t, KGLLM.Record)}
                    if self._spo(t) not in self.graph:
                        staged.add(self._spo(t))
                        _reify(staged, BNode(), KGLLM.Derived, self._spo(t))
                if _record_key(record) not in stored[t]:
                    stored[t].add(_record_key(record))
                    node = BNode()
                    _reify(staged, node, KGLLM.Record, self._spo(t))
                    for field, value in _record_values(record):
                        staged.add((node, field, value))
                    new += 1
            self.graph.addN((s, p, o, self.graph) for s, p, o in staged)
            self._changed()
        return new

    def _is_new(self, node: URIRef) -> bool:
        g = self.graph
        return (node, None, None) not in g and (None, None, node) not in g and (None, node, None) not in g

    @_reads
    def _provenance(self, triple: Triple) -> list[Provenance]:
        return [self._record(n) for n in self._statements(triple, KGLLM.Record)]

    @_reads
    def _is_asserted(self, triple: Triple) -> bool:
        return self._spo(triple) in self.graph and not self._statements(triple, KGLLM.Derived)

    @_reads
    def _sources(self) -> set[str]:
        return {str(s) for s in self.graph.objects(None, KGLLM.source)}

    @_writes
    def _record_source(self, source: str) -> None:
        with self._transaction():
            g = self.graph
            if any((n, RDF.type, KGLLM.Source) in g for n in g.subjects(KGLLM.source, Literal(source))):
                return
            node = BNode()
            g.add((node, RDF.type, KGLLM.Source))
            g.add((node, KGLLM.source, Literal(source)))
            self._changed()

    @_writes
    def _remove_source(self, source: str) -> list[Triple]:
        with self._transaction():
            g = self.graph
            nodes = list(g.subjects(KGLLM.source, Literal(source)))  # its records and its source node
            touched = dict.fromkeys(
                Triple(*(str(g.value(n, f)) for f in REIFICATION)) for n in nodes if (n, RDF.type, KGLLM.Record) in g
            )
            for n in nodes:
                g.remove((n, None, None))
            deleted = [t for t in touched if self._delete_unsupported(t)]
            for node in dict.fromkeys(self._iri(x) for t in deleted for x in (t.head, t.tail)):
                if (node, *DERIVED_ENTITY) in g and not self._in_use(node):
                    g.remove((node, None, None))
            if nodes:
                self._changed()
        return deleted

    def _delete_unsupported(self, t: Triple) -> bool:
        """Delete ``t`` if it is derived and no record is left for it; True when deleted."""
        markers = self._statements(t, KGLLM.Derived)
        if not markers or self._statements(t, KGLLM.Record):
            return False
        self.graph.remove(self._spo(t))
        for marker in markers:
            self.graph.remove((marker, None, None))
        return True

    def _in_use(self, node: URIRef) -> bool:
        """True for a node at either end of a triple, or used as a relation or a class."""
        g = self.graph
        return (
            any(self._is_relation_triple(p, o) for p, o in g.predicate_objects(node))
            or any(p not in NON_RELATIONS for p in g.predicates(None, node))
            or (None, node, None) in g
            or (None, RDF.type, node) in g
        )

    # ----------------------------------------------------------------- reads
    def _label_of(self, node: URIRef) -> str | None:
        for predicate in LABEL_PREDICATES:
            value = self.graph.value(node, predicate)
            if value is not None:
                return str(value)
        return None

    @_reads
    def label(self, node_id: str) -> str:
        node = self._iri(node_id)
        stored = self._label_of(node)
        if stored is not None:
            return stored
        return readable(str(node), relation=self._is_property(node))

    def _is_property(self, node: URIRef) -> bool:
        return node in self._cached(
            "properties", lambda: {p for p in self.graph.predicates() if p not in NON_RELATIONS}
        )

    @_reads
    def entity(self, entity_id: str) -> Entity | None:
        node = self._iri(entity_id)
        if node not in self._entity_nodes():
            return None
        return self._entity(node)

    @_reads
    def classes_of(self, entity_id: str) -> tuple[str, ...]:
        node = self._iri(entity_id)
        if node not in self._entity_nodes():
            return ()
        return tuple(sorted(str(c) for c in self.graph.objects(node, RDF.type) if isinstance(c, URIRef)))

    @_reads
    def describe(self, node_id: str) -> Entity:
        return self._entity(self._iri(node_id))

    def _entity(self, node: URIRef) -> Entity:
        g = self.graph
        return Entity(
            id=str(node),
            label=self._label_of(node) or readable(str(node), relation=self._is_property(node)),
            aliases=tuple(sorted(str(a) for a in g.objects(node, SKOS.altLabel))),
            types=tuple(sorted(str(c) for c in g.objects(node, RDF.type) if isinstance(c, URIRef))),
        )

    def _entity_nodes(self) -> set[URIRef]:
        def build() -> set[URIRef]:
            g = self.graph
            classes = {o for o in g.objects(None, RDF.type)}
            properties = {p for p in g.predicates() if p not in NON_RELATIONS}
            nodes: set[URIRef] = set()
            for s, p, o in g:
                if isinstance(s, URIRef):
                    nodes.add(s)
                if self._is_relation_triple(p, o):
                    nodes.add(cast(URIRef, o))  # a relation triple's object is an IRI
            return nodes - classes - properties - {RDFS.Class}

        return self._cached("entities", build)

    def _label_index(self) -> dict[str, list[str]]:
        def build() -> dict[str, list[str]]:
            index: dict[str, list[str]] = {}
            for e in self.entities():
                for name in {e.label, *e.aliases}:
                    index.setdefault(normalize(name), []).append(e.id)
            return index

        return self._cached("labels", build)

    @_reads
    def _find_by_label(self, key: str) -> list[Entity]:
        return [self._entity(URIRef(i)) for i in sorted(set(self._label_index().get(key, [])))]

    @_reads
    def _search(self, key: str, limit: int) -> list[Entity]:
        hits = sorted((len(name), name, i) for name, ids in self._label_index().items() if key in name for i in ids)
        seen: dict[str, None] = {}
        for _, _, i in hits:
            seen.setdefault(i, None)
        return [self._entity(URIRef(i)) for i in list(seen)[:limit]]

    @_reads
    def _neighbors(self, entity_id: str, direction: Direction, relation: str | None, limit: int | None) -> list[Triple]:
        # path searches read the same few entities' edges over and over; kept until the graph changes
        cache: dict[tuple, list[Triple]] = self._cached("neighbors", dict)
        key = (entity_id, direction, relation, limit)
        edges = cache.get(key)
        if edges is None:
            edges = self._read_neighbors(entity_id, direction, relation, limit)
            if len(cache) >= NEIGHBOR_CACHE_SIZE:
                cache.clear()
            cache[key] = edges
        return list(edges)

    def _read_neighbors(
        self, entity_id: str, direction: Direction, relation: str | None, limit: int | None
    ) -> list[Triple]:
        predicate = self._iri(relation) if relation else None
        found: list[Triple] = []
        for pattern in edge_patterns(self._iri(entity_id), predicate, direction):
            for s, p, o in self.graph.triples(pattern):
                if self._is_relation_triple(p, o):
                    found.append(self._triple(s, p, o))
                    if limit is not None and len(found) >= limit:
                        return found
        return found

    def triples(
        self, head: str | None = None, relation: str | None = None, tail: str | None = None
    ) -> Iterator[Triple]:
        head_iri, relation_iri, tail_iri = (self._iri(x) if x else None for x in (head, relation, tail))
        pattern = (head_iri, relation_iri, tail_iri)
        with self._reading():
            found = [self._triple(s, p, o) for s, p, o in self.graph.triples(pattern) if self._is_relation_triple(p, o)]
        return iter(found)

    def entities(self) -> Iterator[Entity]:
        with self._reading():
            found = [self._entity(node) for node in sorted(self._entity_nodes())]
        return iter(found)

    @_reads
    def relations(self) -> list[str]:
        return sorted(
            str(p)
            for p in self._cached("relations", lambda: {p for _, p, o in self.graph if self._is_relation_triple(p, o)})
        )

    @_reads
    def count_triples(self) -> int:
        return sum(1 for _, p, o in self.graph if self._is_relation_triple(p, o))

    @_reads
    def count_entities(self) -> int:
        return len(self._entity_nodes())

    def query(self, sparql: str, **bindings: str):
        """Run a SPARQL query; ``bindings`` are passed as initial bindings (never formatted into the text)."""
        with self._reading(), self._sparql:
            return self.graph.query(sparql, initBindings={k: self._iri(v) for k, v in bindings.items()})

    def _read_query(
        self, text: str, parameters: dict[str, Any], time_limit: float, max_rows: int
    ) -> list[dict[str, Any]]:
        query = _prepared(text)
        if query.algebra.name != "SelectQuery":
            raise QueryRefusedError("only SELECT queries are run here")
        bindings = {k: self._iri(v) if isinstance(v, str) else Literal(v) for k, v in parameters.items()}
        with self._reading(), self._sparql:
            graph = DeadlineGraph(self.graph, time.monotonic() + time_limit, time_limit)
            result = graph.query(query, initBindings=bindings)
            rows = [cast(ResultRow, row) for row in itertools.islice(result, max_rows + 1)]
            names = [str(v) for v in result.vars or ()]
        if len(rows) > max_rows:
            raise QueryLimitError(f"the query returns more than {max_rows} rows")
        return [{name: _python(value) for name, value in zip(names, row)} for row in rows]

    @_reads
    def attribute_values(self, entity_id: str, prop: str) -> list[Any]:
        values = self.graph.objects(self._iri(entity_id), self._iri(prop))
        return [o.toPython() for o in values if isinstance(o, Literal)]

    def export(self, path: str | os.PathLike, format: str | None = None) -> Path:
        path = Path(path)
        if (format or path.suffix.lower().lstrip(".")) == "tsv":
            from kgllm.graph.loaders import write_tsv

            return write_tsv(self.triples(), path)
        fmt = rdf_format(path, format)
        with self._reading(), atomic_write(path, "wb") as out:
            self.graph.serialize(out, format=fmt, encoding="utf-8")
        return path


@functools.lru_cache(maxsize=256)
def _prepared(text: str):
    return prepare_sparql(text)


def _python(value: Node | None) -> Any:
    """A SPARQL result term as Python: an IRI's id string, a literal's value, None when unbound."""
    if value is None:
        return None
    return value.toPython() if isinstance(value, Literal) else str(value)


def _signature(stat: os.stat_result) -> tuple[int, int, int]:
    """What tells one version of a file from another: inode (every save is a new file), mtime, size."""
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def check_attribute(attribute: object) -> Attribute:
    """A valid ``(subject id, property id, Literal)``."""
    if not (
        isinstance(attribute, tuple)
        and len(attribute) == 3
        and all(isinstance(x, str) and x.strip() for x in attribute[:2])
        and isinstance(attribute[2], Literal)
    ):
        raise InputError(f"not an attribute (subject, property, rdflib Literal): {attribute!r}")
    return attribute


def _reify(graph: Graph, node: Node, kind: URIRef, spo: tuple[URIRef, URIRef, URIRef]) -> None:
    graph.add((node, RDF.type, kind))
    for predicate, value in zip(REIFICATION, spo):
        graph.add((node, predicate, value))


def _record_values(record: Provenance) -> list[tuple[URIRef, Literal]]:
    values = [
        (KGLLM.source, Literal(record.source)),
        (KGLLM.method, Literal(record.method)),
        (KGLLM.created, Literal(record.created)),
    ]
    if record.model:
        values.append((KGLLM.model, Literal(record.model)))
    if record.score is not None:
        values.append((KGLLM.score, Literal(float(record.score), datatype=XSD.double)))
    if record.span is not None:
        values += [(KGLLM.spanStart, Literal(record.span[0])), (KGLLM.spanEnd, Literal(record.span[1]))]
    return values


def _record_key(record: Provenance) -> tuple:
    """What makes two records the same: their source, method and span."""
    return record.source, record.method, record.span
