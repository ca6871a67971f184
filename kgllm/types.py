"""Core data types shared by every layer. Ids are strings (IRIs for RDF)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Triple:
    """A directed fact ``head --relation--> tail`` between entity ids."""

    head: str
    relation: str
    tail: str

    def as_list(self) -> list[str]:
        """``[head, relation, tail]``: the fact as JSON answers write it."""
        return [self.head, self.relation, self.tail]


@dataclass(frozen=True, slots=True)
class Entity:
    """A node: its id, the label people read, other names, and its classes (ids)."""

    id: str
    label: str
    aliases: tuple[str, ...] = ()
    types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GraphPath:
    """A walk through the graph as the triples it follows, in walking order.

    A triple may be walked against its direction; ``start`` says where the walk
    begins so the order of nodes is unambiguous.
    """

    start: str
    triples: tuple[Triple, ...]
    score: float = 0.0

    @property
    def nodes(self) -> list[str]:
        nodes = [self.start]
        for t in self.triples:
            nodes.append(t.tail if t.head == nodes[-1] else t.head)
        return nodes

    @property
    def end(self) -> str:
        return self.nodes[-1]


@dataclass(slots=True)
class Evidence:
    """What supports an answer: facts, the paths through them, and where they came from."""

    triples: list[Triple] = field(default_factory=list)
    paths: list[GraphPath] = field(default_factory=list)
    score: float = 0.0
    source: str = ""


@dataclass(slots=True)
class Answer:
    """The result of :func:`kgllm.ask`."""

    question: str
    text: str
    entities: list[Entity]
    evidence: Evidence
    confidence: float
    labels: dict[str, str] = field(default_factory=dict)  # id -> label for everything in evidence
    metadata: dict[str, Any] = field(default_factory=dict)

    def label(self, node_id: str) -> str:
        return self.labels.get(node_id, node_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: labels for people, ids kept beside them."""
        return {
            "question": self.question,
            "answer": self.text,
            "entities": [e.label for e in self.entities],
            "entity_ids": [e.id for e in self.entities],
            "evidence": [
                [[self.label(t.head), self.label(t.relation), self.label(t.tail)] for t in p.triples]
                for p in self.evidence.paths
            ],
            "evidence_scores": [round(p.score, 4) for p in self.evidence.paths],
            "facts": [[self.label(t.head), self.label(t.relation), self.label(t.tail)] for t in self.evidence.triples],
            "confidence": round(self.confidence, 4),
            "metadata": self.metadata,
        }


@dataclass(frozen=True, slots=True)
class Prediction:
    """A predicted triple with its score and how it was produced."""

    head: str
    relation: str
    tail: str
    score: float
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where one derived fact came from: a document or a job, how, by which model, when."""

    source: str  # a document id/path, or a job ("kgllm complete")
    method: str  # "predicted" | "extracted"
    model: str = ""  # model and adapter that produced the fact
    score: float | None = None
    created: str = ""  # ISO-8601 UTC; the store fills it when empty
    span: tuple[int, int] | None = None  # character span in the source document
