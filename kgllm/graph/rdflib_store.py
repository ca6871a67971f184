"""The embedded default store: an rdflib graph in memory, optionally persisted to a file.

Relations are RDF properties between IRIs. Labels are ``rdfs:label`` (or
``skos:prefLabel``), aliases ``skos:altLabel``, classes ``rdf:type``; these and
literal-valued statements are not relation triples. Ids that are not absolute
IRIs are minted in ``base``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path as FilePath
from urllib.parse import quote

from rdflib import RDF, RDFS, SKOS, Graph, Literal, URIRef
from rdflib.term import Node

from kgllm.exceptions import GraphStoreError, ParseError
from kgllm.graph.base import Direction, GraphStore
from kgllm.graph.labels import normalize, readable
from kgllm.types import Entity, Triple

log = logging.getLogger(__name__)

DEFAULT_BASE = "https://kgllm.dev/kg/"
LABEL_PREDICATES = (RDFS.label, SKOS.prefLabel)
NON_RELATIONS = frozenset({RDF.type, RDFS.label, SKOS.prefLabel, SKOS.altLabel, RDFS.comment})
_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
RDF_FORMATS = {".ttl": "turtle", ".nt": "nt", ".n3": "n3", ".jsonld": "json-ld", ".json": "json-ld",
               ".rdf": "xml", ".xml": "xml", ".owl": "xml", ".trig": "trig", ".nq": "nquads"}


def to_iri(identifier: str, base: str = DEFAULT_BASE) -> URIRef:
    """The IRI for an id: absolute IRIs stay as they are, plain names are minted in ``base``."""
    return URIRef(identifier if _IRI.match(identifier) else base + quote(identifier.strip().replace(" ", "_")))


def rdf_format(path: FilePath, format: str | None = None) -> str:
    if format:
        return format
    try:
        return RDF_FORMATS[path.suffix.lower()]
    except KeyError:
        raise GraphStoreError(f"{path}: unknown RDF format; use one of {sorted(RDF_FORMATS)} or pass format=") from None


class RDFLibStore(GraphStore):
    """In-memory rdflib graph; with ``path``, loaded from and saved to that file after every write."""

    name = "rdflib"
    supports_sparql = True

    def __init__(self, path: str | os.PathLike | None = None, format: str | None = None, base: str = DEFAULT_BASE):
        self.path = FilePath(path) if path is not None else None
        self.format = format
        self.base = base
        self._graph: Graph | None = None
        self._cache: dict[str, object] = {}

    @classmethod
    def from_settings(cls, settings) -> RDFLibStore:
        from kgllm.graph.demo import demo_graph_path

        return cls(settings.graph or demo_graph_path())

    # ------------------------------------------------------------- internals
    @property
    def graph(self) -> Graph:
        """The underlying rdflib graph (loaded on first use)."""
        if self._graph is None:
            self._graph = Graph()
            if self.path is not None and self.path.exists():
                self._parse_file(self.path)
        return self._graph

    def _parse_file(self, path: FilePath) -> None:
        try:
            self._graph.parse(path, format=rdf_format(path, self.format))
        except Exception as exc:  # rdflib raises many types; all mean the file did not parse
            raise ParseError(str(exc).strip().splitlines()[0], path=str(path)) from exc

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

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.graph.serialize(tmp, format=rdf_format(self.path, self.format))
        os.replace(tmp, self.path)

    # ---------------------------------------------------------------- writes
    def _write(self, triples: list[Triple], entities: list[Entity], batch_size: int) -> int:
        staged = Graph()
        for e in entities:
            node = self._iri(e.id)
            if e.label:
                staged.add((node, RDFS.label, Literal(e.label)))
            for alias in e.aliases:
                staged.add((node, SKOS.altLabel, Literal(alias)))
            for cls in e.types:
                staged.add((node, RDF.type, self._iri(cls)))
        new = 0
        for t in triples:
            spo = (self._iri(t.head), self._iri(t.relation), self._iri(t.tail))
            if spo not in self.graph and spo not in staged:
                new += 1
            staged.add(spo)
        self.graph.addN((s, p, o, self.graph) for s, p, o in staged)
        self._cache.clear()
        if self.path is not None:
            self._save()
        return new

    # ----------------------------------------------------------------- reads
    def _label_of(self, node: URIRef) -> str | None:
        for predicate in LABEL_PREDICATES:
            value = self.graph.value(node, predicate)
            if value is not None:
                return str(value)
        return None

    def label(self, node_id: str) -> str:
        node = self._iri(node_id)
        stored = self._label_of(node)
        if stored is not None:
            return stored
        return readable(str(node), relation=self._is_property(node))

    def _is_property(self, node: URIRef) -> bool:
        return node in self._cached("properties", lambda: {p for p in self.graph.predicates() if p not in NON_RELATIONS})

    def entity(self, entity_id: str) -> Entity | None:
        node = self._iri(entity_id)
        if node not in self._entity_nodes():
            return None
        return self._entity(node)

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
                    nodes.add(o)
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

    def _find_by_label(self, key: str) -> list[Entity]:
        return [self._entity(URIRef(i)) for i in sorted(set(self._label_index().get(key, [])))]

    def _search(self, key: str, limit: int) -> list[Entity]:
        hits = sorted((len(name), name, i) for name, ids in self._label_index().items() if key in name for i in ids)
        seen: dict[str, None] = {}
        for _, _, i in hits:
            seen.setdefault(i, None)
        return [self._entity(URIRef(i)) for i in list(seen)[:limit]]

    def _neighbors(self, entity_id: str, direction: Direction, relation: str | None, limit: int | None) -> list[Triple]:
        node = self._iri(entity_id)
        predicate = self._iri(relation) if relation else None
        found: list[Triple] = []
        patterns = []
        if direction in ("out", "both"):
            patterns.append((node, predicate, None))
        if direction in ("in", "both"):
            patterns.append((None, predicate, node))
        for pattern in patterns:
            for s, p, o in self.graph.triples(pattern):
                if self._is_relation_triple(p, o):
                    found.append(self._triple(s, p, o))
                    if limit is not None and len(found) >= limit:
                        return found
        return found

    def triples(self, head: str | None = None, relation: str | None = None, tail: str | None = None) -> Iterator[Triple]:
        pattern = tuple(self._iri(x) if x else None for x in (head, relation, tail))
        for s, p, o in self.graph.triples(pattern):
            if self._is_relation_triple(p, o):
                yield self._triple(s, p, o)

    def entities(self) -> Iterator[Entity]:
        for node in sorted(self._entity_nodes()):
            yield self._entity(node)

    def relations(self) -> list[str]:
        return sorted(str(p) for p in self._cached("properties", lambda: {p for p in self.graph.predicates() if p not in NON_RELATIONS}))

    def count_triples(self) -> int:
        return sum(1 for _ in self.triples())

    def count_entities(self) -> int:
        return len(self._entity_nodes())

    def query(self, sparql: str, **bindings: str):
        """Run a SPARQL query; ``bindings`` are passed as initial bindings (never formatted into the text)."""
        return self.graph.query(sparql, initBindings={k: self._iri(v) for k, v in bindings.items()})

    def export(self, path: str | os.PathLike, format: str | None = None) -> FilePath:
        path = FilePath(path)
        if (format or path.suffix.lower().lstrip(".")) == "tsv":
            from kgllm.graph.loaders import write_tsv

            return write_tsv(self.triples(), path)
        tmp = path.with_name(path.name + ".tmp")
        self.graph.serialize(tmp, format=rdf_format(path, format))
        os.replace(tmp, path)
        return path
