"""Facts awaiting review: predicted (``kgllm complete``) or extracted (``kgllm extract --dry-run``) facts
that a person accepts into the graph or rejects.

The queue is one JSON file in the graph's index folder (``<graph>.index/review.json``), shared by
the CLI and the server. Every change reads the file, edits it and replaces it atomically under the
file's inter-process lock (:mod:`kgllm.cache`). Accepting writes the fact through
:meth:`GraphStore.add_derived` with all its provenance records; rejecting drops it and remembers
the triple, so no later run proposes it again. A fact the store already holds is not proposed.

Example::

    queue = ReviewQueue.for_store(store, settings.cache_dir)
    queue.propose(store, [triple], [Provenance("kgllm complete", "predicted", "distmult", 0.91)])
    queue.accept(queue.pending()[0].id, store)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kgllm.cache import atomic_write, file_lock
from kgllm.exceptions import ConfigurationError, EntityNotFoundError, InputError
from kgllm.graph.base import GraphStore, check_provenance, check_triple
from kgllm.types import Entity, Provenance, Triple

REVIEW_FILE = "review.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Proposal:
    """One fact awaiting review, with every record that proposed it (best score first)."""

    id: str
    triple: Triple
    labels: tuple[str, str, str]
    records: tuple[Provenance, ...]
    texts: tuple[str, ...] = ()  # the source text of each record's span ("" when unknown)
    entities: tuple[Entity, ...] = ()  # entities the fact introduces (extraction names new ones)

    @property
    def score(self) -> float:
        return max((r.score for r in self.records if r.score is not None), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "triple": self.triple.as_list(),
            "labels": list(self.labels),
            "score": self.score,
            "records": [_record_json(r, text) for r, text in zip(self.records, self.texts)],
            "entities": [_entity_json(e) for e in self.entities],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Proposal:
        records = [_record_of(r) for r in data["records"]]
        return cls(
            id=data["id"],
            triple=Triple(*data["triple"]),
            labels=tuple(data["labels"]),
            records=tuple(records),
            texts=tuple(r.get("text", "") for r in data["records"]),
            entities=tuple(
                Entity(e["id"], e["label"], tuple(e["aliases"]), tuple(e["types"])) for e in data["entities"]
            ),
        )


@dataclass
class _Queue:
    pending: list[Proposal] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"id", "triple", "labels", "time"}

    def find(self, proposal_id: str) -> Proposal:
        for proposal in self.pending:
            if proposal.id == proposal_id:
                return proposal
        raise EntityNotFoundError(f"no fact awaiting review has the id {proposal_id!r}")


class ReviewQueue:
    """The facts awaiting review for one graph, kept in ``path`` (see the module's docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def for_store(cls, store: GraphStore, cache_dir: Path) -> ReviewQueue:
        """The queue in ``store``'s index folder (beside a graph file, else in the cache).

        The bundled demo graph has none: it is package data, read-only.
        """
        from kgllm.graph.demo import is_bundled_demo

        if is_bundled_demo(store):
            raise ConfigurationError(
                "the bundled demo graph is read-only: review facts into a graph file of your own "
                "(--graph FILE.ttl, or kgllm serve --graph FILE.ttl)"
            )
        return cls(store.index_dir(cache_dir) / REVIEW_FILE)

    # ------------------------------------------------------------ reading
    def pending(self) -> list[Proposal]:
        """The facts awaiting review, best score first."""
        return sorted(self._read().pending, key=lambda p: -p.score)

    def rejected(self) -> list[Triple]:
        """The facts rejected so far, oldest first: none of them is proposed again."""
        return [Triple(*r["triple"]) for r in self._read().rejected]

    # ------------------------------------------------------------ writing
    def propose(
        self,
        store: GraphStore,
        triples: Sequence[Triple],
        records: Sequence[Provenance],
        entities: Sequence[Entity] = (),
        texts: Sequence[str] | None = None,
    ) -> list[Proposal]:
        """Queue derived facts, one provenance record per triple (``texts``: each span's text).

        Facts the store holds, or that were rejected, are left out; a fact already pending gains
        the new records. Returns the proposals that are new or gained a record.
        """
        triples = [check_triple(t) for t in triples]
        if len(triples) != len(records) or (texts is not None and len(texts) != len(triples)):
            raise InputError("propose needs one provenance record (and text, when given) per triple")
        created = datetime.now(UTC).isoformat(timespec="seconds")
        records = [check_provenance(r, created) for r in records]
        described = {e.id: e for e in entities}
        changed: dict[str, Proposal] = {}
        with self._editing() as queue:
            rejected = {r["id"] for r in queue.rejected}
            by_id = {p.id: p for p in queue.pending}
            for triple, record, text in zip(triples, records, texts or [""] * len(triples)):
                key = proposal_id(triple)
                if key in rejected or (key not in by_id and _stored(store, triple)):
                    continue
                old = by_id.get(key) or _new_proposal(store, triple, described)
                if any(_same_record(r, record) for r in old.records):
                    continue
                by_id[key] = changed[key] = Proposal(
                    key, triple, old.labels, (*old.records, record), (*old.texts, text), old.entities
                )
            queue.pending = list(by_id.values())
        return list(changed.values())

    def accept(self, proposal_id: str, store: GraphStore) -> Proposal:
        """Write the fact into ``store`` with its provenance records, and take it off the queue."""
        with self._editing() as queue:
            proposal = queue.find(proposal_id)
            store.add_derived([proposal.triple] * len(proposal.records), proposal.records, proposal.entities)
            queue.pending.remove(proposal)
        return proposal

    def reject(self, proposal_id: str) -> Proposal:
        """Drop the fact from the queue and remember it, so that it is not proposed again."""
        with self._editing() as queue:
            proposal = queue.find(proposal_id)
            queue.pending.remove(proposal)
            queue.rejected.append(
                {
                    "id": proposal.id,
                    "triple": proposal.triple.as_list(),
                    "labels": list(proposal.labels),
                    "time": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        return proposal

    # ------------------------------------------------------------ the file
    def _read(self) -> _Queue:
        if not self.path.is_file():
            return _Queue()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return _Queue([Proposal.from_dict(p) for p in data["pending"]], list(data["rejected"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{self.path}: not a review queue kgllm can read ({exc})") from None

    @contextlib.contextmanager
    def _editing(self) -> Iterator[_Queue]:
        """The queue to change in the block; written back (atomically, under the lock) when it succeeds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.path, what="the review queue"):
            queue = self._read()
            yield queue
            with atomic_write(self.path) as out:
                json.dump(
                    {
                        "version": FORMAT_VERSION,
                        "pending": [p.to_dict() for p in queue.pending],
                        "rejected": queue.rejected,
                    },
                    out,
                    ensure_ascii=False,
                    indent=1,
                )


def proposal_id(triple: Triple) -> str:
    """A fact's id in the queue: stable across runs, so a rejected fact is known when proposed again."""
    return hashlib.sha256("\t".join(triple.as_list()).encode()).hexdigest()[:16]


def _stored(store: GraphStore, triple: Triple) -> bool:
    return any(True for _ in store.triples(triple.head, triple.relation, triple.tail))


def _new_proposal(store: GraphStore, triple: Triple, described: dict[str, Entity]) -> Proposal:
    def label(node: str) -> str:
        return described[node].label if node in described else store.label(node)

    new = tuple(described[n] for n in dict.fromkeys((triple.head, triple.tail)) if n in described)
    return Proposal(
        proposal_id(triple), triple, (label(triple.head), label(triple.relation), label(triple.tail)), (), (), new
    )


def _same_record(a: Provenance, b: Provenance) -> bool:
    return (a.source, a.method, a.span) == (b.source, b.method, b.span)


def _record_json(record: Provenance, text: str) -> dict[str, Any]:
    return {**provenance_json(record), "text": text}


def provenance_json(record: Provenance) -> dict[str, Any]:
    """A provenance record as JSON (what the server sends and the page shows)."""
    return {
        "source": record.source,
        "method": record.method,
        "model": record.model,
        "score": record.score,
        "created": record.created,
        "span": list(record.span) if record.span is not None else None,
    }


def _record_of(data: dict[str, Any]) -> Provenance:
    span = data.get("span")
    return Provenance(
        data["source"], data["method"], data["model"], data["score"], data["created"], tuple(span) if span else None
    )


def _entity_json(entity: Entity) -> dict[str, Any]:
    return {"id": entity.id, "label": entity.label, "aliases": list(entity.aliases), "types": list(entity.types)}
