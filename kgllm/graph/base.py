"""The ``GraphStore`` protocol every back-end implements.

Public methods validate input and shape results; back-ends implement the
``_``-prefixed hooks. Graph walks (k-hop subgraph, paths) are written once here
over ``neighbors`` and may be overridden with a native query.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from kgllm.exceptions import GraphStoreError, InputError
from kgllm.graph.labels import normalize
from kgllm.types import Entity, GraphPath, Provenance, Triple

if TYPE_CHECKING:
    from kgllm.settings import Settings

Direction = Literal["out", "in", "both"]
DEFAULT_BATCH_SIZE = 1000
PROVENANCE_METHODS = ("predicted", "extracted")


class GraphStore(ABC):
    """A labelled, directed multigraph of entities and relations."""

    name: ClassVar[str]
    supports_sparql: ClassVar[bool] = False
    supports_cypher: ClassVar[bool] = False
    supports_fulltext: ClassVar[bool] = False
    supports_attributes: ClassVar[bool] = False

    # ----------------------------------------------------------- opening
    @classmethod
    @abstractmethod
    def from_settings(
        cls, settings: Settings, graph: str | os.PathLike | None = None, *, writable: bool = False, **kwargs: Any
    ) -> GraphStore:
        """The store the settings describe; ``graph`` is a file for file-backed stores.

        With ``writable``, the caller is about to write: a store must refuse what it cannot
        write to (a read-only format, a demo it would otherwise fall back to).
        Nothing is opened or connected here; that happens on first use.
        """

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the graph lives (a file path, a server URI and database): the identity of its indexes."""

    def index_dir(self, cache_dir: Path) -> Path:
        """The folder for this graph's indexes and logs: in the cache, keyed by :attr:`location`."""
        return cache_dir / "indexes" / hashlib.sha256(self.location.encode()).hexdigest()[:16]

    # ---------------------------------------------------------------- writes
    def add(
        self, triples: Iterable[Triple], entities: Iterable[Entity] = (), batch_size: int = DEFAULT_BATCH_SIZE
    ) -> int:
        """Add entities (labels, aliases, types) and triples in one atomic write.

        Input is checked in full before anything is written. Adding a triple or
        entity that is already there changes nothing, except that a derived one
        (see :meth:`add_derived`) becomes asserted. Returns the number of new triples.
        """
        triples = [check_triple(t) for t in triples]
        entities = [check_entity(e) for e in entities]
        if batch_size < 1:
            raise InputError("batch_size must be at least 1")
        return self._write(triples, entities, batch_size)

    @abstractmethod
    def _write(self, triples: list[Triple], entities: list[Entity], batch_size: int) -> int: ...

    # ------------------------------------------------------------ provenance
    def add_derived(
        self, triples: Sequence[Triple], records: Sequence[Provenance], entities: Iterable[Entity] = ()
    ) -> int:
        """Add predicted or extracted facts, one provenance record per triple, in one atomic write.

        A triple not in the store yet is added as derived; an asserted triple stays
        asserted (its record is still kept, so the source is traceable). Likewise an
        entity the store did not hold is described as derived, until ``add`` asserts it.
        The same (triple, source, method, span) twice is stored once. Returns the number of new records.
        """
        triples = [check_triple(t) for t in triples]
        if len(triples) != len(records):
            raise InputError(
                f"add_derived needs one provenance record per triple, got {len(triples)} triples "
                f"and {len(records)} records"
            )
        created = datetime.now(UTC).isoformat(timespec="seconds")
        records = [check_provenance(r, created) for r in records]
        return self._write_derived(triples, records, [check_entity(e) for e in entities])

    def provenance(self, triple: Triple) -> list[Provenance]:
        """Every provenance record of a fact, oldest first ([] for a fact with none)."""
        records = self._provenance(check_triple(triple))
        return sorted(records, key=lambda r: (r.created, r.source, r.method, r.span or (-1, -1), r.model))

    def is_asserted(self, triple: Triple) -> bool:
        """True for a fact added by :meth:`add` or a loader, False for a derived or absent one."""
        return self._is_asserted(check_triple(triple))

    def remove_source(self, source: str) -> list[Triple]:
        """Drop every record of ``source`` and delete the derived triples left with none; atomic.

        Entities that ``add_derived`` introduced (and ``add`` never asserted) go too, with
        their labels, aliases and types, once no triple is left with them at either end.
        Returns the deleted triples.
        """
        return self._remove_source(check_source(source))

    def record_source(self, source: str) -> None:
        """Record that ``source`` was read even when it yielded no fact; ``remove_source`` drops it.

        The mark is seen only by :meth:`sources`: it is no fact and no provenance record.
        """
        self._record_source(check_source(source))

    def sources(self, prefix: str = "") -> list[str]:
        """The sources of the stored provenance records and marks that start with ``prefix``, sorted."""
        return sorted(s for s in self._sources() if s.startswith(prefix))

    @abstractmethod
    def _sources(self) -> set[str]: ...

    @abstractmethod
    def _record_source(self, source: str) -> None: ...

    @abstractmethod
    def _write_derived(self, triples: list[Triple], records: list[Provenance], entities: list[Entity]) -> int: ...

    @abstractmethod
    def _provenance(self, triple: Triple) -> list[Provenance]: ...

    @abstractmethod
    def _is_asserted(self, triple: Triple) -> bool: ...

    @abstractmethod
    def _remove_source(self, source: str) -> list[Triple]: ...

    # ---------------------------------------------------------------- reads
    @abstractmethod
    def entity(self, entity_id: str) -> Entity | None:
        """The entity with this id, or None."""

    def classes_of(self, entity_id: str) -> tuple[str, ...]:
        """The classes of the entity with this id (none where it has none or the store lacks it).
        Path searches ask it of every node they reach: back-ends answer without a whole ``entity``."""
        entity = self.entity(entity_id)
        return entity.types if entity else ()

    @abstractmethod
    def label(self, node_id: str) -> str:
        """The label of an entity, relation or class (readable local name when it has none)."""

    @abstractmethod
    def describe(self, node_id: str) -> Entity:
        """Label, aliases and classes of any node (entity, relation or class), even one the store lacks."""

    def find_by_label(self, label: str) -> list[Entity]:
        """Entities whose label or an alias equals ``label`` (ignoring case and separators)."""
        key = normalize(label)
        return self._find_by_label(key) if key else []

    @abstractmethod
    def _find_by_label(self, key: str) -> list[Entity]: ...

    def search(self, text: str, limit: int = 10) -> list[Entity]:
        """Entities whose label or alias contains ``text`` (ignoring case), shortest label first."""
        key = normalize(text)
        return self._search(key, limit) if key else []

    @abstractmethod
    def _search(self, key: str, limit: int) -> list[Entity]: ...

    def neighbors(
        self, entity_id: str, direction: Direction = "both", relation: str | None = None, limit: int | None = None
    ) -> list[Triple]:
        """Triples touching ``entity_id``: outgoing, incoming or both, optionally of one relation.

        With a ``limit`` that the entity's edges reach, of any relation, the edges returned are spread
        over every relation and direction it has, as evenly as the limit allows: its first edges in
        an index's order are of one or two relations (a hub of 63,000 edges had 4 of its 60 kinds of
        edge among its first 2,000), and a search on them would never meet the others.
        """
        if direction not in ("out", "in", "both"):
            raise InputError(f"direction must be 'out', 'in' or 'both', not {direction!r}")
        edges = self._neighbors(entity_id, direction, relation, limit)
        if relation is None and limit is not None and len(edges) >= limit:
            return self._spread_neighbors(entity_id, direction, limit)
        return edges

    def _spread_neighbors(self, entity_id: str, direction: Direction, limit: int) -> list[Triple]:
        """``limit`` edges of a hub, taken in turn from each relation and direction it has: each kind
        read up to an equal share, the share of the kinds that have fewer given to those that had
        as many as asked, until ``limit`` edges are read or every kind is read whole."""
        kinds = self._edge_kinds(entity_id, direction)
        read: dict[tuple[str, Direction], list[Triple]] = {kind: [] for kind in kinds}
        open_kinds = kinds  # those that had as many edges as asked: they may have more
        while open_kinds and (left := limit - len(_in_turn(read.values()))) > 0:
            share = -(-left // len(open_kinds))  # an equal share of what is left, rounded up
            still_open = []
            for relation, way in open_kinds:
                wanted = len(read[relation, way]) + share
                read[relation, way] = self._neighbors(entity_id, way, relation, wanted)
                if len(read[relation, way]) == wanted:
                    still_open.append((relation, way))
            open_kinds = still_open
        return _in_turn(read.values())[:limit]

    def _edge_kinds(self, entity_id: str, direction: Direction) -> list[tuple[str, Direction]]:
        """The (relation, way) pairs to read a hub's edges by: every relation of the graph each way,
        where reading a kind the entity lacks costs an index lookup (a store with a round trip per
        read names only the entity's own)."""
        ways: tuple[Direction, ...] = ("out", "in") if direction == "both" else (direction,)
        return [(relation, way) for relation in self.relations() for way in ways]

    @abstractmethod
    def _neighbors(
        self, entity_id: str, direction: Direction, relation: str | None, limit: int | None
    ) -> list[Triple]: ...

    @abstractmethod
    def triples(
        self, head: str | None = None, relation: str | None = None, tail: str | None = None
    ) -> Iterator[Triple]:
        """All triples matching the pattern (None matches anything)."""

    @abstractmethod
    def entities(self) -> Iterator[Entity]:
        """Every entity that has a label, a type or a triple."""

    @abstractmethod
    def relations(self) -> list[str]:
        """Ids of the relations used by at least one triple, sorted."""

    @abstractmethod
    def count_triples(self) -> int: ...

    def attribute_values(self, entity_id: str, prop: str) -> list[Any]:
        """The literal values of ``prop`` on an entity, as Python values ([] where the store keeps none)."""
        return []

    # ---------------------------------------------------------------- queries
    def read_query(
        self, text: str, parameters: dict[str, Any] | None = None, *, time_limit: float = 10.0, max_rows: int = 10_000
    ) -> list[dict[str, Any]]:
        """Run one read-only query in the store's language: SPARQL where ``supports_sparql``, Cypher where
        ``supports_cypher``. Rows come back as ``{variable: value}`` with ids as strings.

        ``parameters`` are bound, never formatted into the text (``$name`` in Cypher, ``?name`` in SPARQL,
        where a string is an id). A query that writes is refused before it runs
        (:class:`~kgllm.exceptions.QueryRefusedError`); one past ``time_limit`` seconds or with more than
        ``max_rows`` rows is stopped (:class:`~kgllm.exceptions.QueryLimitError`).
        """
        if not isinstance(text, str) or not text.strip():
            raise InputError("the query is empty")
        if time_limit <= 0 or max_rows < 1:
            raise InputError("time_limit and max_rows must be positive")
        return self._read_query(text, dict(parameters or {}), time_limit, max_rows)

    def _read_query(
        self, text: str, parameters: dict[str, Any], time_limit: float, max_rows: int
    ) -> list[dict[str, Any]]:
        raise GraphStoreError(f"the {self.name} store runs no query language")

    @abstractmethod
    def count_entities(self) -> int: ...

    @abstractmethod
    def export(self, path: str | Path, format: str | None = None) -> Path:
        """Write the graph to a file (format from the suffix when not given)."""

    def close(self) -> None:
        """Release connections and flush persistent storage.

        A hook, not an abstract method: a store that holds nothing to release keeps this no-op."""
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- walks
    def _adjacency(self, nodes: Sequence[str], max_fanout: int) -> Iterator[tuple[str, list[Triple]]]:
        """``(node, triples touching it)`` for each of ``nodes``; back-ends may fetch a level at once."""
        for node in dict.fromkeys(nodes):
            yield node, self.neighbors(node, "both", limit=max_fanout)

    def subgraph(
        self, seeds: Sequence[str], hops: int = 2, max_fanout: int = 2000, max_triples: int = 50_000
    ) -> list[Triple]:
        """Triples within ``hops`` of any seed (both directions), bounded in fan-out and size."""
        seen_nodes = set(seeds)
        found: dict[Triple, None] = {}
        frontier = list(seeds)
        for _ in range(hops):
            next_frontier = []
            for _node, adjacent in self._adjacency(frontier, max_fanout):
                for t in adjacent:
                    found.setdefault(t, None)
                    for other in (t.head, t.tail):
                        if other not in seen_nodes:
                            seen_nodes.add(other)
                            next_frontier.append(other)
                    if len(found) >= max_triples:
                        return list(found)
            frontier = next_frontier
        return list(found)

    def paths(
        self, source: str, target: str, max_hops: int = 3, limit: int = 10, max_fanout: int = 2000
    ) -> list[GraphPath]:
        """Shortest-first simple paths from ``source`` to ``target`` (edges walked either way)."""
        results: list[GraphPath] = []
        level: list[tuple[str, tuple[Triple, ...], frozenset[str]]] = [(source, (), frozenset([source]))]
        for depth in range(1, max_hops + 1):
            if not level or limit < 1:
                break
            adjacency = dict(self._adjacency([node for node, _, _ in level], max_fanout))
            next_level = []
            for node, walked, visited in level:
                for t in adjacency[node]:
                    other = t.tail if t.head == node else t.head
                    if other in visited:
                        continue
                    if other == target:
                        results.append(GraphPath(start=source, triples=(*walked, t)))
                        if len(results) >= limit:
                            return results
                    elif depth < max_hops:
                        next_level.append((other, (*walked, t), visited | {other}))
            level = next_level
        return results


def check_triple(t: object) -> Triple:
    if not isinstance(t, Triple):
        if isinstance(t, (tuple, list)) and len(t) == 3:
            t = Triple(*t)
        else:
            raise InputError(f"not a triple: {t!r}")
    if not all(isinstance(x, str) and x.strip() for x in (t.head, t.relation, t.tail)):
        raise InputError(f"triple has an empty or non-text part: {t!r}")
    return t


def check_provenance(record: object, created: str) -> Provenance:
    """A valid record, its time set to ``created`` when empty."""
    if not isinstance(record, Provenance) or not (isinstance(record.source, str) and record.source.strip()):
        raise InputError(f"not a provenance record with a source: {record!r}")
    if record.method not in PROVENANCE_METHODS:
        raise InputError(f"provenance method must be one of {list(PROVENANCE_METHODS)}, not {record.method!r}")
    span = record.span
    if span is not None and not (len(span) == 2 and all(isinstance(x, int) for x in span) and 0 <= span[0] <= span[1]):
        raise InputError(f"provenance span must be (start, end) with 0 <= start <= end, not {span!r}")
    if span is not None:
        record = replace(record, span=(int(span[0]), int(span[1])))
    return record if record.created else replace(record, created=created)


def check_source(source: object) -> str:
    if not isinstance(source, str) or not source.strip():
        raise InputError(f"source must be a non-empty string, not {source!r}")
    return source


def is_described(e: Entity) -> bool:
    """True for an entity that brings a label, an alias or a type (the rest writes nothing)."""
    return bool(e.label or e.aliases or e.types)


def check_entity(e: object) -> Entity:
    if not isinstance(e, Entity) or not (isinstance(e.id, str) and e.id.strip()):
        raise InputError(f"not an entity with an id: {e!r}")
    return e


def _in_turn(groups: Iterable[list[Triple]]) -> list[Triple]:
    """The first edge of each group, then the second of each, ...; each edge once (a loop is both out and in)."""
    return list(dict.fromkeys(t for row in itertools.zip_longest(*groups) for t in row if t is not None))
