"""A graph store on any Bolt server (Neo4j, or ArcadeDB's Bolt plugin) through the official driver.

Data model (all Cypher is parameterized; query text is built only from constants):

* ``(:Entity {id, key, label, aliases, alias_keys, types})`` - one node per id
  that is an endpoint, a relation, a class or has a description. ``key`` is
  ``normalize(label or readable(id))`` and is indexed, so an exact label lookup
  is an index seek; ``alias_keys`` holds the normalized aliases for substring search.
* ``(:Entity)-[:REL {id}]->(:Entity)`` - one relationship type for every relation,
  its id in an indexed property. Relation ids are arbitrary IRIs: a type per
  relation would need sanitizing (lossy, can collide) or dynamic types (APOC on
  Neo4j, and a type cannot be a query parameter), while one type keeps every
  query static and parameterized.
* Ids used as relations get a node flagged ``is_relation`` and class ids one flagged
  ``is_class``, so their labels can be stored and looked up like an entity's while
  they are kept out of ``entities()`` and label search (as in the rdflib store).
  Flags, not extra node labels: ArcadeDB moves a node to another record when a
  label is added, and inside an explicit transaction that trips the id uniqueness
  constraint on the node it has just merged.
* ``(:Entity)-[:ALIAS]->(:Name {key})`` - one unique ``Name`` node per normalized
  alias, so alias lookups are index seeks too (list properties cannot be indexed
  for membership on Neo4j).
* ``(:Attribute {subject, property, value, datatype})`` - one node per literal-valued
  statement (``ex:chad ex:population "17"``): the lexical value and its datatype IRI,
  indexed by subject; never read as relations, kept on export.
* Provenance: a derived fact is an ordinary ``REL`` flagged ``derived`` (``add``
  clears the flag: the fact is then asserted), and each record is a
  ``(:Provenance {key, h, r, t, source, method, model, score, created, span_start,
  span_end})`` node, unique by ``key`` (triple, source, method, span) and indexed
  by source. Records are not linked to the fact: a relationship cannot be an
  endpoint, and the three ids find it by index. An entity node that ``add_derived``
  created is flagged ``derived`` until ``add`` asserts it; a source recorded without
  facts is a ``(:Source {source})`` node.

Clusters: reads run in the driver's read transactions (``execute_read``) and writes in
its write transactions (``execute_write``), so with a routing URI (``neo4j://``,
``neo4j+s://``) the driver sends reads to readers and writes to the leader, and runs a
transaction again when the cluster says it may now succeed. Long scans (``triples()``,
``entities()``, export) stream from an auto-commit query in a read session.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import neo4j
from neo4j import exceptions as neo4j_errors
from rdflib import RDF, RDFS, SKOS, Graph, Literal, URIRef

from kgllm.exceptions import (
    ConfigurationError,
    GraphStoreError,
    InputError,
    QueryLimitError,
    StoreUnavailableError,
)
from kgllm.graph.base import DEFAULT_BATCH_SIZE, Direction, GraphStore, check_entity, check_triple, is_described
from kgllm.graph.labels import normalize, readable
from kgllm.graph.loaders import write_tsv
from kgllm.graph.queries import check_cypher
from kgllm.graph.rdflib_store import DEFAULT_BASE, RDF_FORMATS, Attribute, check_attribute, to_iri
from kgllm.types import Entity, Provenance, Triple

log = logging.getLogger(__name__)
T = TypeVar("T")

# Ids that are not absolute IRIs are minted in this namespace on RDF export. It is the
# rdflib store's base, so a graph exported from either back-end names things alike.
EXPORT_BASE_IRI = DEFAULT_BASE

DEFAULT_DRIVER_KWARGS: dict[str, Any] = {"connection_timeout": 10.0}
EXPAND_CHUNK = 200  # frontier nodes per expansion query: bounds one result to 200 x max_fanout rows

# Constraints first; where a server refuses one, the plain index in the fallback still speeds lookups.
_SCHEMA: tuple[tuple[str, str | None], ...] = (
    (
        "CREATE CONSTRAINT kgllm_entity_id IF NOT EXISTS FOR (e:Entity) REQUIRE e.id IS UNIQUE",
        "CREATE INDEX kgllm_entity_id IF NOT EXISTS FOR (e:Entity) ON (e.id)",
    ),
    (
        "CREATE CONSTRAINT kgllm_name_key IF NOT EXISTS FOR (n:Name) REQUIRE n.key IS UNIQUE",
        "CREATE INDEX kgllm_name_key IF NOT EXISTS FOR (n:Name) ON (n.key)",
    ),
    ("CREATE INDEX kgllm_entity_key IF NOT EXISTS FOR (e:Entity) ON (e.key)", None),
    ("CREATE INDEX kgllm_entity_relation IF NOT EXISTS FOR (e:Entity) ON (e.is_relation)", None),
    ("CREATE INDEX kgllm_rel_id IF NOT EXISTS FOR ()-[r:REL]-() ON (r.id)", None),
    (
        "CREATE CONSTRAINT kgllm_provenance_key IF NOT EXISTS FOR (p:Provenance) REQUIRE p.key IS UNIQUE",
        "CREATE INDEX kgllm_provenance_key IF NOT EXISTS FOR (p:Provenance) ON (p.key)",
    ),
    ("CREATE INDEX kgllm_attribute_subject IF NOT EXISTS FOR (a:Attribute) ON (a.subject)", None),
    ("CREATE INDEX kgllm_provenance_source IF NOT EXISTS FOR (p:Provenance) ON (p.source)", None),
    ("CREATE INDEX kgllm_provenance_head IF NOT EXISTS FOR (p:Provenance) ON (p.h)", None),
    (
        "CREATE CONSTRAINT kgllm_source IF NOT EXISTS FOR (s:Source) REQUIRE s.source IS UNIQUE",
        "CREATE INDEX kgllm_source IF NOT EXISTS FOR (s:Source) ON (s.source)",
    ),
)

_DATABASE_NOT_FOUND = "Neo.ClientError.Database.DatabaseNotFound"
_IS_ENTITY = "e.is_relation IS NULL AND e.is_class IS NULL"
_ENTITY_FIELDS = "e.id AS id, e.label AS label, e.aliases AS aliases, e.types AS types"

_MERGE_NODES = "UNWIND $rows AS row MERGE (e:Entity {id: row.id}) ON CREATE SET e.key = row.key"
# the WHERE skips rewriting nodes already flagged, which every later write would otherwise do
_MERGE_RELATION_NODES = (
    "UNWIND $ids AS id MERGE (e:Entity {id: id}) WITH e WHERE e.is_relation IS NULL SET e.is_relation = true"
)
_MERGE_CLASS_NODES = "UNWIND $ids AS id MERGE (e:Entity {id: id}) WITH e WHERE e.is_class IS NULL SET e.is_class = true"
_READ_DESCRIPTIONS = f"UNWIND $ids AS id MATCH (e:Entity {{id: id}}) RETURN {_ENTITY_FIELDS}"
_WRITE_DESCRIPTIONS = """
UNWIND $rows AS row
MERGE (e:Entity {id: row.id})
SET e.label = row.label, e.key = row.key, e.aliases = row.aliases,
    e.alias_keys = row.alias_keys, e.types = row.types
"""
_LINK_ALIASES = """
UNWIND $rows AS row
MATCH (e:Entity {id: row.id})
MERGE (n:Name {key: row.key})
MERGE (e)-[:ALIAS]->(n)
"""
_MERGE_TRIPLES = """
UNWIND $rows AS row
MATCH (h:Entity {id: row.h})
MATCH (t:Entity {id: row.t})
MERGE (h)-[r:REL {id: row.r}]->(t)
WITH r WHERE r.derived IS NOT NULL
SET r.derived = null
"""
_MERGE_ATTRIBUTES = """
UNWIND $rows AS row
MERGE (a:Attribute {subject: row.subject, property: row.property, value: row.value, datatype: row.datatype})
"""
_READ_ATTRIBUTES = (
    "MATCH (a:Attribute {subject: $subject, property: $property}) RETURN a.value AS value, a.datatype AS datatype"
)
_ALL_ATTRIBUTES = (
    "MATCH (a:Attribute) RETURN a.subject AS subject, a.property AS property, a.value AS value, a.datatype AS datatype"
)
_ASSERT_ENTITIES = "UNWIND $ids AS id MATCH (e:Entity {id: id}) WITH e WHERE e.derived IS NOT NULL SET e.derived = null"
# only a node created here is derived: an entity the store already had keeps its status
_MERGE_DERIVED_NODES = (
    "UNWIND $rows AS row MERGE (e:Entity {id: row.id}) ON CREATE SET e.key = row.key, e.derived = true"
)
_MATCH_TRIPLE = "MATCH (h:Entity {id: row.h})-[r:REL {id: row.r}]->(t:Entity {id: row.t})"
_EXISTING_TRIPLES = (
    f"UNWIND $rows AS row {_MATCH_TRIPLE} RETURN row.h AS h, row.r AS r, row.t AS t, r.derived AS derived"
)
_MARK_DERIVED = f"UNWIND $rows AS row {_MATCH_TRIPLE} SET r.derived = true"
_MERGE_RECORDS = """
UNWIND $rows AS row
MERGE (p:Provenance {key: row.key})
ON CREATE SET p.h = row.h, p.r = row.r, p.t = row.t, p.source = row.source, p.method = row.method,
              p.model = row.model, p.score = row.score, p.created = row.created,
              p.span_start = row.span_start, p.span_end = row.span_end
"""
_RECORD_FIELDS = (
    "p.source AS source, p.method AS method, p.model AS model, p.score AS score, "
    "p.created AS created, p.span_start AS span_start, p.span_end AS span_end"
)
_READ_RECORDS = f"MATCH (p:Provenance {{h: $h, r: $r, t: $t}}) RETURN {_RECORD_FIELDS}"
_SOURCE_TRIPLES = "MATCH (p:Provenance {source: $source}) RETURN DISTINCT p.h AS h, p.r AS r, p.t AS t"
_DELETE_SOURCE = ("MATCH (p:Provenance {source: $source}) DELETE p", "MATCH (s:Source {source: $source}) DELETE s")
_MERGE_SOURCE = "MERGE (s:Source {source: $source})"
_SOURCES = ("MATCH (p:Provenance) RETURN DISTINCT p.source AS source", "MATCH (s:Source) RETURN s.source AS source")
_STILL_RECORDED = (
    "UNWIND $rows AS row MATCH (p:Provenance {h: row.h, r: row.r, t: row.t}) "
    "RETURN DISTINCT p.h AS h, p.r AS r, p.t AS t"
)
_DELETE_DERIVED = (
    f"UNWIND $rows AS row {_MATCH_TRIPLE} WHERE r.derived = true DELETE r RETURN row.h AS h, row.r AS r, row.t AS t"
)
_UNUSED_DERIVED_ENTITIES = """
UNWIND $ids AS id
MATCH (e:Entity {id: id})
WHERE e.derived = true AND e.is_relation IS NULL AND e.is_class IS NULL
OPTIONAL MATCH (e)-[x:REL]-()
WITH e, count(x) AS facts WHERE facts = 0
RETURN e.id AS id, e.alias_keys AS names
"""
_DELETE_ENTITIES = "UNWIND $ids AS id MATCH (e:Entity {id: id}) DETACH DELETE e"
_DELETE_UNUSED_NAMES = """
UNWIND $keys AS key
MATCH (n:Name {key: key})
OPTIONAL MATCH (n)<-[a:ALIAS]-()
WITH n, count(a) AS uses WHERE uses = 0
DELETE n
"""
# endpoints left bare by a deletion (no edge, name or flag) go too, as they would in an RDF graph
_DELETE_BARE_NODES = """
UNWIND $ids AS id
MATCH (e:Entity {id: id})
WHERE e.label IS NULL AND e.is_relation IS NULL AND e.is_class IS NULL AND size(coalesce(e.types, [])) = 0
OPTIONAL MATCH (e)-[x]-()
WITH e, count(x) AS edges WHERE edges = 0
DELETE e
"""
_MERGE_ONE_TRIPLE = """
MERGE (h:Entity {id: $h}) ON CREATE SET h.key = $h_key
MERGE (t:Entity {id: $t}) ON CREATE SET t.key = $t_key
MERGE (p:Entity {id: $r}) SET p.is_relation = true
MERGE (h)-[:REL {id: $r}]->(t)
"""
_NEIGHBORS = {
    "out": "MATCH (n:Entity {id: $id})-[r:REL]->(m) {where} RETURN n.id AS h, r.id AS r, m.id AS t",
    "in": "MATCH (n:Entity {id: $id})<-[r:REL]-(m) {where} RETURN m.id AS h, r.id AS r, n.id AS t",
    # DISTINCT: an undirected pattern may meet a self-loop from both ends
    "both": "MATCH (n:Entity {id: $id})-[r:REL]-(m) {where} "
    "RETURN DISTINCT startNode(r).id AS h, r.id AS r, endNode(r).id AS t",
}
_EDGE_KINDS = {
    "out": "MATCH (n:Entity {id: $id})-[r:REL]->() RETURN DISTINCT r.id AS r ORDER BY r",
    "in": "MATCH (n:Entity {id: $id})<-[r:REL]-() RETURN DISTINCT r.id AS r ORDER BY r",
}
_EXPAND = """
UNWIND $ids AS id
MATCH (n:Entity {id: id})
CALL {
  WITH n
  MATCH (n)-[r:REL]-()
  RETURN DISTINCT startNode(r).id AS h, r.id AS r, endNode(r).id AS t
  LIMIT $fanout
}
RETURN id, h, r, t
"""
_FIND_BY_LABEL = f"""
CALL {{
  MATCH (e:Entity {{key: $key}}) RETURN e
  UNION
  MATCH (:Name {{key: $key}})<-[:ALIAS]-(e:Entity) RETURN e
}}
WITH e WHERE {_IS_ENTITY}
RETURN {_ENTITY_FIELDS} ORDER BY id
"""
# Rank each hit by its shortest matching name (then the name, then the id), as the
# rdflib store does: a zero-padded length prefix makes (length, name) one comparable string.
_SEARCH = f"""
MATCH (e:Entity)
WHERE {_IS_ENTITY} AND (e.key CONTAINS $key OR any(a IN coalesce(e.alias_keys, []) WHERE a CONTAINS $key))
WITH e, [k IN [e.key] + coalesce(e.alias_keys, []) WHERE k CONTAINS $key] AS hits
WITH e, reduce(best = null, k IN hits |
  CASE WHEN best IS NULL OR right('000000' + toString(size(k)), 6) + k < best
       THEN right('000000' + toString(size(k)), 6) + k ELSE best END) AS rank
RETURN {_ENTITY_FIELDS} ORDER BY rank, id LIMIT $limit
"""


class Neo4jStore(GraphStore):
    """A graph in a Bolt server, read and written with parameterized Cypher.

    Nothing happens on construction: the driver connects on first use, and the
    schema (uniqueness constraints, indexes) is created before the first write.
    """

    name = "neo4j"
    supports_cypher = True
    supports_attributes = True

    def __init__(
        self,
        uri: str = "bolt://localhost:7687",
        user: str = "neo4j",
        password: str = "",
        database: str | None = None,
        driver_kwargs: dict[str, Any] | None = None,
    ):
        self.uri = uri
        self.user = user
        self.database = database
        self._password = password
        self._driver_kwargs = {**DEFAULT_DRIVER_KWARGS, **(driver_kwargs or {})}
        self._driver: neo4j.Driver | None = None
        self._schema_ready = False
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Any, graph: str | os.PathLike | None = None, *, writable: bool = False, **kwargs: Any
    ) -> Neo4jStore:
        """The Bolt server the settings name; keyword arguments replace them (``uri=``, ``password=``, ...)."""
        if graph is not None:
            raise ConfigurationError("a graph file goes with the rdflib store; load it into Neo4j with `kgllm load`")
        options = {
            "uri": settings.neo4j_uri,
            "user": settings.neo4j_user,
            "password": settings.neo4j_password,
            "database": settings.neo4j_database,
        }
        return cls(**{**options, **kwargs})

    @property
    def location(self) -> str:
        return f"{self.uri}/{self.database or ''}"

    def __repr__(self) -> str:
        return f"Neo4jStore(uri={self.uri!r}, user={self.user!r}, database={self.database!r})"

    # ------------------------------------------------------------- plumbing
    def _get_driver(self) -> neo4j.Driver:
        with self._lock:
            if self._driver is None:
                try:
                    driver = neo4j.GraphDatabase.driver(
                        self.uri, auth=(self.user, self._password), **self._driver_kwargs
                    )
                except (ValueError, TypeError, neo4j_errors.ConfigurationError) as exc:
                    raise GraphStoreError(f"cannot use Neo4j URI {self.uri!r}: {_one_line(exc)}") from None
                try:  # an unreachable server fails here at once, not after a managed transaction's retries
                    driver.verify_connectivity()
                except Exception:
                    driver.close()
                    raise
                self._driver = driver
            return self._driver

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        """Re-raise driver errors as kgllm errors with a one-line message naming the server."""
        try:
            yield
        except neo4j_errors.AuthError as exc:
            log.debug("authentication failed at %s", self.uri, exc_info=True)
            raise StoreUnavailableError(
                f"graph server at {self.uri} refused the credentials of user {self.user!r}: {_one_line(exc)}"
            ) from None
        except (neo4j_errors.ServiceUnavailable, neo4j_errors.SessionExpired) as exc:
            log.debug("cannot reach %s", self.uri, exc_info=True)
            raise StoreUnavailableError(f"cannot reach graph server at {self.uri}: {_one_line(exc)}") from None
        except neo4j_errors.Neo4jError as exc:
            if exc.code == _DATABASE_NOT_FOUND:
                raise GraphStoreError(
                    f"database {self.database!r} does not exist on {self.uri}; create it or set neo4j_database"
                ) from None
            raise GraphStoreError(f"graph server at {self.uri} failed: {exc.code}: {_one_line(exc)}") from exc
        except neo4j_errors.DriverError as exc:
            raise GraphStoreError(f"Neo4j driver failed talking to {self.uri}: {_one_line(exc)}") from exc

    @contextmanager
    def _session(self, access: str = neo4j.WRITE_ACCESS) -> Iterator[neo4j.Session]:
        """A session whose auto-commit queries a ``neo4j://`` driver routes by ``access`` (reader or leader)."""
        with self._translated_errors():
            driver = self._get_driver()
            with driver.session(database=self.database, default_access_mode=access) as session:
                yield session

    def _records(self, cypher: str, **params: Any) -> list[neo4j.Record]:
        """A read in a read transaction: routed to a reader of a cluster, retried on transient errors."""
        with self._session(neo4j.READ_ACCESS) as session:
            return session.execute_read(_fetch, cypher, params)

    def _stream(self, cypher: str, **params: Any) -> Iterator[neo4j.Record]:
        """A long read, streamed as it comes (so not retried): an auto-commit query in a read session."""
        with self._session(neo4j.READ_ACCESS) as session:
            yield from session.run(cypher, params)

    def _in_write_transaction(self, work: Callable[[neo4j.ManagedTransaction], T]) -> T:
        """``work`` in one write transaction: routed to the cluster's leader, all or nothing, and run again
        from the start when the server says a retry may succeed (a leader switch, a deadlock)."""
        with self._session() as session:
            return session.execute_write(work)

    def _ensure_schema(self) -> None:
        """Create constraints and indexes once per store; servers that refuse one are tolerated."""
        if self._schema_ready:
            return
        with self._session() as session:
            for statement, fallback in _SCHEMA:
                for cypher in (statement, fallback):
                    if cypher is None:
                        break
                    try:
                        session.run(cypher).consume()
                        break
                    except neo4j_errors.ClientError as exc:
                        if isinstance(exc, neo4j_errors.AuthError) or exc.code == _DATABASE_NOT_FOUND:
                            raise
                        log.warning("graph server at %s refused %r: %s", self.uri, cypher, _one_line(exc))
        self._schema_ready = True

    def close(self) -> None:
        """Close the driver and its connections (a later call connects again)."""
        with self._lock:
            driver, self._driver = self._driver, None
        if driver is not None:
            driver.close()

    # ---------------------------------------------------------------- writes
    def add(
        self,
        triples: Iterable[Triple],
        entities: Iterable[Entity] = (),
        batch_size: int = DEFAULT_BATCH_SIZE,
        attributes: Iterable[Attribute] = (),
    ) -> int:
        """Add entities, triples and ``attributes`` (literal-valued statements) in one atomic write.

        ``attributes`` are ``(subject id, property id, rdflib Literal)``, stored as ``(:Attribute
        {subject, property, value, datatype})`` nodes (the lexical value and its datatype IRI):
        kept and exported, never read as relations. Otherwise as :meth:`GraphStore.add`.
        """
        triples = [check_triple(t) for t in triples]
        entities = [check_entity(e) for e in entities]
        attributes = [check_attribute(a) for a in attributes]
        if batch_size < 1:
            raise InputError("batch_size must be at least 1")
        return self._write(triples, entities, batch_size, attributes)

    def _write(
        self, triples: list[Triple], entities: list[Entity], batch_size: int, attributes: Sequence[Attribute] = ()
    ) -> int:
        triples = list(dict.fromkeys(triples))
        if not triples and not entities and not attributes:
            return 0
        self._ensure_schema()

        def work(tx: neo4j.ManagedTransaction) -> int:
            # one transaction: a failure anywhere rolls back every batch before it
            new = self._write_in(tx, triples, entities, batch_size)
            _run_batches(tx, _ASSERT_ENTITIES, list(dict.fromkeys(e.id for e in entities)), batch_size, "ids")
            _run_batches(tx, _MERGE_ATTRIBUTES, [_attribute_row(a) for a in attributes], batch_size)
            return new

        new = self._in_write_transaction(work)
        log.debug("added %d new triples to %s", new, self.uri)
        return new

    def _write_in(
        self, tx: neo4j.ManagedTransaction, triples: list[Triple], entities: list[Entity], batch_size: int
    ) -> int:
        endpoints = dict.fromkeys(x for t in triples for x in (t.head, t.tail))
        _run_batches(tx, _MERGE_NODES, [_node_row(i) for i in endpoints], batch_size)
        _run_batches(tx, _MERGE_RELATION_NODES, list(dict.fromkeys(t.relation for t in triples)), batch_size, "ids")
        self._write_descriptions(tx, entities, batch_size)
        rows = [{"h": t.head, "r": t.relation, "t": t.tail} for t in triples]
        return sum(c.relationships_created for c in _run_batches(tx, _MERGE_TRIPLES, rows, batch_size))

    def _write_descriptions(self, tx: neo4j.ManagedTransaction, entities: list[Entity], batch_size: int) -> None:
        """Merge labels, aliases and types into what is stored (first label wins, later ones become aliases)."""
        described = [e for e in entities if e.label or e.aliases or e.types]
        if not described:
            return
        ids = list(dict.fromkeys(e.id for e in described))
        stored: dict[str, dict] = {}
        for start in range(0, len(ids), batch_size):
            for record in tx.run(_READ_DESCRIPTIONS, ids=ids[start : start + batch_size]):
                stored[record["id"]] = _description(record)
        merged = dict(stored)
        for e in described:
            merged[e.id] = _merge_description(merged.get(e.id), e)
        changed = [row for i, row in merged.items() if row != stored.get(i)]
        _run_batches(tx, _WRITE_DESCRIPTIONS, changed, batch_size)
        alias_rows = [{"id": row["id"], "key": key} for row in changed for key in row["alias_keys"]]
        _run_batches(tx, _LINK_ALIASES, alias_rows, batch_size)
        classes = list(dict.fromkeys(c for e in described for c in e.types))
        _run_batches(tx, _MERGE_CLASS_NODES, classes, batch_size, "ids")

    # ------------------------------------------------------------ provenance
    def _write_derived(self, triples: list[Triple], records: list[Provenance], entities: list[Entity]) -> int:
        self._ensure_schema()
        unique = list(dict.fromkeys(triples))

        def work(tx: neo4j.ManagedTransaction) -> int:
            stored = {_triple(r) for r in tx.run(_EXISTING_TRIPLES, rows=_triple_rows(unique))}
            fresh = [t for t in unique if t not in stored]
            described = [_node_row(e.id) for e in entities if is_described(e)]
            _run_batches(tx, _MERGE_DERIVED_NODES, described, DEFAULT_BATCH_SIZE)
            self._write_in(tx, fresh, entities, DEFAULT_BATCH_SIZE)
            _run_batches(tx, _MARK_DERIVED, _triple_rows(fresh), DEFAULT_BATCH_SIZE)
            rows = list({row["key"]: row for row in map(_record_row, triples, records)}.values())
            return sum(c.nodes_created for c in _run_batches(tx, _MERGE_RECORDS, rows, DEFAULT_BATCH_SIZE))

        return self._in_write_transaction(work)

    def _provenance(self, triple: Triple) -> list[Provenance]:
        return [_provenance(r) for r in self._records(_READ_RECORDS, h=triple.head, r=triple.relation, t=triple.tail)]

    def _is_asserted(self, triple: Triple) -> bool:
        records = self._records(_EXISTING_TRIPLES, rows=_triple_rows([triple]))
        return bool(records) and records[0]["derived"] is None

    def _sources(self) -> set[str]:
        return {r["source"] for cypher in _SOURCES for r in self._records(cypher)}

    def _record_source(self, source: str) -> None:
        self._ensure_schema()
        self._in_write_transaction(lambda tx: tx.run(_MERGE_SOURCE, source=source).consume())

    def _remove_source(self, source: str) -> list[Triple]:
        self._ensure_schema()

        def work(tx: neo4j.ManagedTransaction) -> list[Triple]:
            touched = [_triple(r) for r in tx.run(_SOURCE_TRIPLES, source=source)]
            for cypher in _DELETE_SOURCE:
                tx.run(cypher, source=source).consume()
            kept = {_triple(r) for r in tx.run(_STILL_RECORDED, rows=_triple_rows(touched))}
            orphans = [t for t in touched if t not in kept]
            deleted = [_triple(r) for r in tx.run(_DELETE_DERIVED, rows=_triple_rows(orphans))]
            ends = list(dict.fromkeys(x for t in deleted for x in (t.head, t.tail)))
            _delete_unused_derived_entities(tx, ends)
            tx.run(_DELETE_BARE_NODES, ids=ends).consume()
            return deleted

        return self._in_write_transaction(work)

    # ----------------------------------------------------------------- reads
    def entity(self, entity_id: str) -> Entity | None:
        records = self._records(
            f"MATCH (e:Entity {{id: $id}}) WHERE {_IS_ENTITY} RETURN {_ENTITY_FIELDS}", id=entity_id
        )
        return _entity(records[0]) if records else None

    def label(self, node_id: str) -> str:
        return self.describe(node_id).label

    def describe(self, node_id: str) -> Entity:
        """Label, aliases and classes of any node (entity, relation or class), even one the store lacks."""
        records = self._records(
            f"MATCH (e:Entity {{id: $id}}) RETURN {_ENTITY_FIELDS}, e.is_relation AS relation", id=node_id
        )
        if not records:
            return Entity(node_id, readable(node_id))
        return _entity(records[0], relation=bool(records[0]["relation"]))

    def _find_by_label(self, key: str) -> list[Entity]:
        return [_entity(r) for r in self._records(_FIND_BY_LABEL, key=key)]

    def _search(self, key: str, limit: int) -> list[Entity]:
        if limit < 1:
            return []
        return [_entity(r) for r in self._records(_SEARCH, key=key, limit=limit)]

    def _neighbors(self, entity_id: str, direction: Direction, relation: str | None, limit: int | None) -> list[Triple]:
        if limit is not None and limit < 1:
            return []
        cypher = _NEIGHBORS[direction].replace("{where}", "WHERE r.id = $rel" if relation is not None else "")
        if limit is not None:
            cypher += " LIMIT $limit"
        return [_triple(r) for r in self._records(cypher, id=entity_id, rel=relation, limit=limit)]

    def _edge_kinds(self, entity_id: str, direction: Direction) -> list[tuple[str, Direction]]:
        ways: tuple[Direction, ...] = ("out", "in") if direction == "both" else (direction,)
        return [(r["r"], way) for way in ways for r in self._records(_EDGE_KINDS[way], id=entity_id)]

    def triples(
        self, head: str | None = None, relation: str | None = None, tail: str | None = None
    ) -> Iterator[Triple]:
        """All triples matching the pattern (None matches anything), streamed from the server."""
        h = "(h:Entity {id: $head})" if head is not None else "(h:Entity)"
        r = "[r:REL {id: $relation}]" if relation is not None else "[r:REL]"
        t = "(t:Entity {id: $tail})" if tail is not None else "(t:Entity)"
        cypher = f"MATCH {h}-{r}->{t} RETURN h.id AS h, r.id AS r, t.id AS t"
        for record in self._stream(cypher, head=head, relation=relation, tail=tail):
            yield _triple(record)

    def entities(self) -> Iterator[Entity]:
        """Every entity (not relations or classes), in id order, streamed from the server."""
        for record in self._stream(f"MATCH (e:Entity) WHERE {_IS_ENTITY} RETURN {_ENTITY_FIELDS} ORDER BY id"):
            yield _entity(record)

    def relations(self) -> list[str]:
        return [r["id"] for r in self._records("MATCH (e:Entity {is_relation: true}) RETURN e.id AS id ORDER BY id")]

    def count_triples(self) -> int:
        return self._records("MATCH ()-[r:REL]->() RETURN count(r) AS n")[0]["n"]

    def attribute_values(self, entity_id: str, prop: str) -> list[Any]:
        records = self._records(_READ_ATTRIBUTES, subject=entity_id, property=prop)
        return [_literal(r).toPython() for r in records]

    # --------------------------------------------------------------- queries
    def _read_query(
        self, text: str, parameters: dict[str, Any], time_limit: float, max_rows: int
    ) -> list[dict[str, Any]]:
        check_cypher(text)
        deadline = time.monotonic() + time_limit
        rows: list[dict[str, Any]] = []
        with self._translated_errors():
            driver = self._get_driver()
            with driver.session(database=self.database, default_access_mode=neo4j.READ_ACCESS) as session:
                # the server stops the transaction at the timeout; rows are also counted and timed here
                try:
                    for record in session.run(neo4j.Query(text, timeout=time_limit), parameters):
                        if time.monotonic() > deadline:
                            raise QueryLimitError(f"the query ran past its time limit of {time_limit:g} s")
                        if len(rows) == max_rows:
                            raise QueryLimitError(f"the query returns more than {max_rows} rows")
                        rows.append(dict(record))
                except neo4j_errors.Neo4jError as exc:
                    if "TimedOut" in (exc.code or ""):
                        raise QueryLimitError(f"the query ran past its time limit of {time_limit:g} s") from None
                    raise
        return rows

    def count_entities(self) -> int:
        return self._records(f"MATCH (e:Entity) WHERE {_IS_ENTITY} RETURN count(e) AS n")[0]["n"]

    # ---------------------------------------------------------------- walks
    def _adjacency(self, nodes: Sequence[str], max_fanout: int) -> Iterator[tuple[str, list[Triple]]]:
        """``(node, triples)`` for each node in order: up to ``max_fanout`` triples each, one query per chunk."""
        nodes = list(dict.fromkeys(nodes))
        for start in range(0, len(nodes), EXPAND_CHUNK):
            chunk = nodes[start : start + EXPAND_CHUNK]
            found: dict[str, list[Triple]] = {}
            for record in self._records(_EXPAND, ids=chunk, fanout=max_fanout):
                found.setdefault(record["id"], []).append(_triple(record))
            for node in chunk:
                yield node, found.get(node, [])

    # ---------------------------------------------------------------- export
    def export(self, path: str | os.PathLike, format: str | None = None) -> Path:
        """Write the graph as Turtle, N-Triples, another rdflib format, or TSV (format from the suffix).

        RDF output holds the triples plus ``rdfs:label``, ``skos:altLabel`` and
        ``rdf:type`` statements; ids that are not IRIs are minted in ``EXPORT_BASE_IRI``.
        The file is replaced only once it is complete.
        """
        path = Path(path)
        fmt = format or ("tsv" if path.suffix.lower() == ".tsv" else RDF_FORMATS.get(path.suffix.lower()))
        if fmt == "tsv":
            return write_tsv(self.triples(), path)
        known = sorted(set(RDF_FORMATS.values()) | {"tsv"})
        if fmt not in known:
            raise InputError(f"{path}: unknown export format {fmt or path.suffix!r}; pass format= one of {known}")
        graph = self._rdf_graph()
        tmp = path.with_name(path.name + ".tmp")
        try:
            graph.serialize(tmp, format=fmt, encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def _rdf_graph(self) -> Graph:
        def iri(identifier: str) -> URIRef:
            return to_iri(identifier, EXPORT_BASE_IRI)

        graph = Graph()
        for t in self.triples():
            graph.add((iri(t.head), iri(t.relation), iri(t.tail)))
        described = (
            "MATCH (e:Entity) WHERE e.label IS NOT NULL OR size(coalesce(e.aliases, [])) > 0 "
            f"OR size(coalesce(e.types, [])) > 0 RETURN {_ENTITY_FIELDS}"
        )
        for record in self._stream(described):
            node = iri(record["id"])
            if record["label"]:
                graph.add((node, RDFS.label, Literal(record["label"])))
            for alias in record["aliases"] or ():
                graph.add((node, SKOS.altLabel, Literal(alias)))
            for cls in record["types"] or ():
                graph.add((node, RDF.type, iri(cls)))
        for record in self._stream(_ALL_ATTRIBUTES):
            graph.add((iri(record["subject"]), iri(record["property"]), _literal(record)))
        return graph


def merge_one_per_triple(store: Neo4jStore, triples: Iterable[Triple]) -> int:
    """The naive write benchmarks compare ``add`` against: one auto-committed ``MERGE`` per triple.

    It builds the same nodes and relationships as ``add`` (no descriptions), so
    a store written this way reads the same; but it makes a round trip and a commit
    per triple and is not atomic. Use :meth:`Neo4jStore.add` for real writes.
    Returns the number of new triples.
    """
    checked = [check_triple(t) for t in triples]
    store._ensure_schema()
    new = 0
    with store._session() as session:
        for t in checked:
            params = {
                "h": t.head,
                "r": t.relation,
                "t": t.tail,
                "h_key": _node_row(t.head)["key"],
                "t_key": _node_row(t.tail)["key"],
            }
            new += session.run(_MERGE_ONE_TRIPLE, params).consume().counters.relationships_created
    return new


# -------------------------------------------------------------------- helpers
def _fetch(tx: neo4j.ManagedTransaction, cypher: str, params: dict[str, Any]) -> list[neo4j.Record]:
    return list(tx.run(cypher, params))


def _run_batches(
    tx: neo4j.ManagedTransaction, cypher: str, rows: list, batch_size: int, name: str = "rows"
) -> list[neo4j.SummaryCounters]:
    """Run ``cypher`` once per batch of ``rows`` (bound to ``$<name>``); the counters of each run."""
    return [
        tx.run(cypher, {name: rows[i : i + batch_size]}).consume().counters for i in range(0, len(rows), batch_size)
    ]


def _delete_unused_derived_entities(tx: neo4j.ManagedTransaction, ids: list[str]) -> None:
    """Delete the derived entities among ``ids`` that no triple touches any more, and names only they had."""
    unused = list(tx.run(_UNUSED_DERIVED_ENTITIES, ids=ids))
    tx.run(_DELETE_ENTITIES, ids=[r["id"] for r in unused]).consume()
    tx.run(_DELETE_UNUSED_NAMES, keys=list({k for r in unused for k in r["names"] or ()})).consume()


def _attribute_row(attribute: Attribute) -> dict[str, str]:
    subject, prop, value = attribute
    return {"subject": subject, "property": prop, "value": str(value), "datatype": str(value.datatype or "")}


def _literal(record: neo4j.Record) -> Literal:
    return Literal(record["value"], datatype=URIRef(record["datatype"]) if record["datatype"] else None)


def _triple_rows(triples: Iterable[Triple]) -> list[dict[str, str]]:
    return [{"h": t.head, "r": t.relation, "t": t.tail} for t in triples]


def _record_row(triple: Triple, record: Provenance) -> dict[str, Any]:
    start, end = record.span if record.span is not None else (None, None)
    identity = (triple.head, triple.relation, triple.tail, record.source, record.method, start, end)
    return {
        "key": hashlib.sha256(repr(identity).encode()).hexdigest(),
        "h": triple.head,
        "r": triple.relation,
        "t": triple.tail,
        "source": record.source,
        "method": record.method,
        "model": record.model,
        "score": None if record.score is None else float(record.score),
        "created": record.created,
        "span_start": start,
        "span_end": end,
    }


def _provenance(record: neo4j.Record) -> Provenance:
    start, end = record["span_start"], record["span_end"]
    return Provenance(
        source=record["source"],
        method=record["method"],
        model=record["model"] or "",
        score=record["score"],
        created=record["created"],
        span=(start, end) if start is not None else None,
    )


def _node_row(node_id: str) -> dict[str, str]:
    return {"id": node_id, "key": normalize(readable(node_id))}


def _description(record: neo4j.Record) -> dict:
    label = record["label"] or None
    aliases = list(record["aliases"] or [])
    return {
        "id": record["id"],
        "label": label,
        "key": normalize(label or readable(record["id"])),
        "aliases": aliases,
        "alias_keys": _keys(aliases),
        "types": list(record["types"] or []),
    }


def _merge_description(old: dict | None, new: Entity) -> dict:
    label = (old or {}).get("label") or new.label or None
    extra = [new.label] if new.label and new.label != label else []
    aliases = sorted((set((old or {}).get("aliases", [])) | set(extra) | set(new.aliases)) - {label, ""})
    types = sorted(set((old or {}).get("types", [])) | set(new.types))
    return {
        "id": new.id,
        "label": label,
        "key": normalize(label or readable(new.id)),
        "aliases": aliases,
        "alias_keys": _keys(aliases),
        "types": types,
    }


def _keys(names: Iterable[str]) -> list[str]:
    return sorted({k for k in map(normalize, names) if k})


def _entity(record: neo4j.Record, relation: bool = False) -> Entity:
    return Entity(
        id=record["id"],
        label=record["label"] or readable(record["id"], relation=relation),
        aliases=tuple(sorted(record["aliases"] or ())),
        types=tuple(sorted(record["types"] or ())),
    )


def _triple(record: neo4j.Record) -> Triple:
    return Triple(record["h"], record["r"], record["t"])


def _one_line(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(message).split())
