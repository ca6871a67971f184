"""The shared retriever: entity linking, FAISS over labels and facts, pruned subgraph expansion.

Two vector indexes are kept in step with the graph store:

- entity labels: one vector per label or alias, key :func:`label_key` (entity id + name);
- facts: one vector per triple verbalized from labels ("Chad neighbor of Libya"),
  key :func:`fact_key` (the three ids + the text).

Keys carry the encoded text, so a label that changes yields a new key: ``refresh``
diffs the keys the store implies against the keys indexed, encodes only the new
ones and drops the stale ones. With ``index_dir`` both indexes are saved there
and a later ``build`` loads them, paying only for what changed in between.

New texts are encoded and added ``INDEX_CHUNK`` at a time, and the index is saved
after each chunk, so an indexing run cut short resumes where it stopped. Entity
labels are always indexed; the fact index may be deferred (``index_facts=False``):
then facts near the question's entities are encoded as they are needed, and
the nearest-fact search over the whole graph finds nothing until the facts are indexed.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from kgllm.exceptions import InputError, RetrievalError
from kgllm.graph.base import GraphStore
from kgllm.retrieval.encoder import Encoder
from kgllm.retrieval.index import META_FILE, VectorIndex
from kgllm.retrieval.linking import EntityLinker, LinkedEntity, label_key
from kgllm.types import Evidence, GraphPath, Triple

log = logging.getLogger(__name__)

LABELS_DIR = "entities"
FACTS_DIR = "facts"
INDEX_CHUNK = 20_000
"""Texts encoded and added between two saves of an index."""
MEMORY_SHARE = 0.5
"""The most of the machine's memory one index may take."""


@dataclass(frozen=True, slots=True)
class RefreshStats:
    """What a refresh changed in the two indexes."""

    labels_added: int = 0
    labels_removed: int = 0
    facts_added: int = 0
    facts_removed: int = 0

    @property
    def encoded(self) -> int:
        """Texts encoded by the refresh."""
        return self.labels_added + self.facts_added

    @property
    def changed(self) -> bool:
        return any((self.labels_added, self.labels_removed, self.facts_added, self.facts_removed))


def fact_key(triple: Triple, text: str) -> str:
    """Key of a verbalized triple in the fact index."""
    return f"{triple.head}\t{triple.relation}\t{triple.tail}\t{text}"


def triple_of_fact_key(key: str) -> Triple:
    """The triple in a :func:`fact_key`."""
    head, relation, tail, _ = key.split("\t", 3)
    return Triple(head, relation, tail)


class KGRetriever:
    """Finds the facts of a graph that bear on a question.

    Nothing is loaded or encoded until :meth:`build` (or the first query) runs.
    ``index_dir`` is where the two indexes are saved (none: kept in memory);
    ``hnsw_threshold`` is the size above which an index turns approximate (HNSW);
    ``max_fanout`` bounds the edges read per entity during expansion;
    ``index_facts`` False defers the fact index (labels are indexed either way);
    ``linker_kwargs`` go to :class:`EntityLinker` (thresholds, mention length).

    Example::

        retriever = KGRetriever(store, SentenceTransformerEncoder(), index_dir="graph.index")
        retriever.build()                       # loads saved indexes, encodes what changed
        evidence = retriever.retrieve("Which countries border Chad?")
    """

    def __init__(
        self,
        store: GraphStore,
        encoder: Encoder,
        index_dir: str | os.PathLike | None = None,
        hnsw_threshold: int = 50_000,
        max_fanout: int = 2000,
        index_facts: bool = True,
        linker_kwargs: dict[str, Any] | None = None,
    ):
        self.store = store
        self.index_facts = index_facts
        self.encoder = encoder
        self.index_dir = Path(index_dir) if index_dir is not None else None
        self.hnsw_threshold = hnsw_threshold
        self.max_fanout = max_fanout
        self.linker = EntityLinker(store, encoder, **(linker_kwargs or {}))
        self._labels: VectorIndex | None = None
        self._facts: VectorIndex | None = None
        self._fact_keys: dict[Triple, str] = {}

    # ------------------------------------------------------------- indexing
    def build(self, force: bool = False) -> RefreshStats:
        """Load the saved indexes (unless ``force``) and bring them in step with the store."""
        self._labels, self._facts = None, None
        if not force:
            self._labels, self._facts = self._load_saved()
        if self._labels is None or self._facts is None:
            self._labels, self._facts = self._new_index(), self._new_index()
        self.linker.label_index = self._labels
        return self.refresh()

    def refresh(self) -> RefreshStats:
        """Encode the store's new labels and facts, drop deleted ones, and save the indexes."""
        if self._labels is None or self._facts is None:
            return self.build()
        entities = list(self.store.entities())
        wanted_labels = {label_key(e.id, n): n for e in entities for n in dict.fromkeys((e.label, *e.aliases)) if n}
        labels_added, labels_removed = self._sync(self._labels, wanted_labels, LABELS_DIR)
        facts_added = facts_removed = 0
        if self.index_facts:
            wanted_facts = self._verbalized_facts({e.id: e.label for e in entities})
            self._fact_keys = {triple_of_fact_key(k): k for k in wanted_facts}
            facts_added, facts_removed = self._sync(self._facts, wanted_facts, FACTS_DIR)
        self.linker.rebuild(entities)
        stats = RefreshStats(labels_added, labels_removed, facts_added, facts_removed)
        if self.index_dir is not None and (stats.changed or not (self.index_dir / FACTS_DIR / META_FILE).is_file()):
            self._labels.save(self.index_dir / LABELS_DIR)
            self._facts.save(self.index_dir / FACTS_DIR)
        log.info("retriever refreshed: %s", stats)
        return stats

    @property
    def label_index(self) -> VectorIndex:
        """The entity-label index (built on first use)."""
        return self._indexes()[0]

    @property
    def fact_index(self) -> VectorIndex:
        """The verbalized-fact index (built on first use)."""
        return self._indexes()[1]

    def _indexes(self) -> tuple[VectorIndex, VectorIndex]:
        self._ensure_built()
        assert self._labels is not None and self._facts is not None
        return self._labels, self._facts

    # ------------------------------------------------------------- querying
    def link(self, question: str) -> list[LinkedEntity]:
        """Entities the question mentions, best first."""
        self._ensure_built()
        return self.linker.link(question)

    def search_facts(self, question: str, k: int = 10) -> list[tuple[Triple, float]]:
        """The ``k`` facts closest to the question in the fact index, with cosine scores."""
        hits = self.fact_index.search(self._query(question), k)[0]
        return [(triple_of_fact_key(key), score) for key, score in hits]

    def expand(
        self, entity_ids: Sequence[str], question: str, hops: int = 2, max_facts: int = 50
    ) -> list[tuple[Triple, float]]:
        """Facts within ``hops`` of the entities, the ``max_facts`` most relevant to the question.

        Relevance is the cosine between the question and each fact's stored vector;
        only facts added to the store since the last refresh are encoded here.
        """
        if hops < 1 or max_facts < 1:
            raise InputError("hops and max_facts must be at least 1")
        self._ensure_built()
        triples = self.store.subgraph(list(entity_ids), hops=hops, max_fanout=self.max_fanout)
        if not triples:
            return []
        scores = self._fact_vectors(triples) @ self._query(question)
        best = np.argsort(-scores, kind="stable")[:max_facts]
        return [(triples[i], float(scores[i])) for i in best]

    def retrieve(
        self, question: str, k: int = 20, hops: int = 2, links: Sequence[LinkedEntity] | None = None
    ) -> Evidence:
        """Evidence for a question: FAISS facts plus the pruned neighbourhood of the linked entities.

        Facts are ranked by cosine to the question with each fuzzy or embedding
        mention replaced by the entity's label ("Where is Keyna?" is searched as
        "Where is Kenya?"). Each fact comes with a path of retrieved facts from a
        linked entity when one leads to it (a one-fact path otherwise).
        ``source`` names what found the kept facts ("faiss", "expansion": a fact both found
        counts for both, whichever scored it higher). Pass ``links`` to reuse entities
        already linked.
        """
        if k < 1:
            raise InputError("k must be at least 1")
        links = self.link(question) if links is None else list(links)
        seeds = list(dict.fromkeys(link.entity.id for link in links))
        query = with_labels(question, links)
        found: dict[Triple, float] = {}
        found_by: dict[Triple, list[str]] = {}
        for source, hits in (
            ("faiss", self.search_facts(query, k)),
            ("expansion", self.expand(seeds, query, hops, max_facts=k)),
        ):
            for triple, score in hits:
                found[triple] = max(score, found.get(triple, score))
                found_by.setdefault(triple, []).append(source)
        ranked = sorted(found.items(), key=lambda item: -item[1])[:k]
        walks = walks_from(seeds, [t for t, _ in ranked])
        paths = [GraphPath(start=walks[t][0], triples=walks[t][1], score=s) for t, s in ranked]
        sources = dict.fromkeys(src for t, _ in ranked for src in found_by[t])
        return Evidence(
            triples=[t for t, _ in ranked],
            paths=paths,
            score=ranked[0][1] if ranked else 0.0,
            source="+".join(sources),
        )

    # ------------------------------------------------------------- internals
    def _ensure_built(self) -> None:
        if self._labels is None or self._facts is None:
            self.build()

    def _new_index(self) -> VectorIndex:
        return VectorIndex(self.encoder.dim, self.encoder.name, hnsw_threshold=self.hnsw_threshold)

    def _load_saved(self) -> tuple[VectorIndex | None, VectorIndex | None]:
        if self.index_dir is None or not (self.index_dir / FACTS_DIR / META_FILE).is_file():
            return None, None
        try:
            labels, facts = (
                VectorIndex.load(
                    self.index_dir / name, self.encoder.name, self.encoder.dim, hnsw_threshold=self.hnsw_threshold
                )
                for name in (LABELS_DIR, FACTS_DIR)
            )
            return labels, facts
        except RetrievalError as exc:
            log.warning("%s; rebuilding the indexes", exc)
            return None, None

    def _sync(self, index: VectorIndex, wanted: dict[str, str], name: str) -> tuple[int, int]:
        """Make the index hold exactly the ``wanted`` keys (key -> text); returns (added, removed).

        New keys are encoded a chunk at a time and the index saved after each, so a run cut short resumes.
        """
        held = index.keys()
        removed = index.remove([k for k in held if k not in wanted])
        new = [k for k in wanted if k not in index]
        _check_fits(index, len(index) + len(new), name)
        chunks = range(0, len(new), INDEX_CHUNK)
        with tqdm(total=len(new), desc=f"indexing {name}", unit="text", disable=len(new) <= INDEX_CHUNK) as bar:
            for start in chunks:
                chunk = new[start : start + INDEX_CHUNK]
                index.add(chunk, self.encoder.encode([wanted[k] for k in chunk]))
                if self.index_dir is not None and len(new) > INDEX_CHUNK:
                    index.save(self.index_dir / name)
                bar.update(len(chunk))
        return len(new), removed

    def _verbalized_facts(self, names: dict[str, str]) -> dict[str, str]:
        """Fact key -> text for every triple of the store."""
        texts = ((t, self._verbalize(t, names)) for t in self.store.triples())
        return {fact_key(t, text): text for t, text in texts}

    def _verbalize(self, triple: Triple, names: dict[str, str]) -> str:
        for node in (triple.head, triple.relation, triple.tail):
            if node not in names:
                names[node] = self.store.label(node)
        return f"{names[triple.head]} {names[triple.relation]} {names[triple.tail]}"

    def _fact_vectors(self, triples: list[Triple]) -> np.ndarray:
        """Stored vectors of the triples; those not indexed yet are encoded."""
        facts = self.fact_index
        keys = [self._fact_keys.get(t) for t in triples]
        indexed = [i for i, key in enumerate(keys) if key is not None and key in facts]
        vectors = np.empty((len(triples), self.encoder.dim), dtype=np.float32)
        vectors[indexed] = facts.vectors([key for key in keys if key is not None and key in facts])
        missing = sorted(set(range(len(triples))) - set(indexed))
        if missing:
            log.debug("encoding %d facts not indexed yet; refresh() the retriever to index them", len(missing))
            names: dict[str, str] = {}
            vectors[missing] = self.encoder.encode([self._verbalize(triples[i], names) for i in missing])
        return vectors

    def _query(self, question: str) -> np.ndarray:
        if not isinstance(question, str) or not question.strip():
            raise InputError("question must be a non-empty string")
        return self.encoder.encode_query(question)


def memory_bytes() -> int:
    """The machine's physical memory."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _check_fits(index: VectorIndex, vectors: int, name: str) -> None:
    """Refuse, before encoding anything, an index that would take more than ``MEMORY_SHARE`` of the memory."""
    needed, memory = index.bytes_for(vectors), memory_bytes()
    if needed > MEMORY_SHARE * memory:
        advice = (
            "defer the fact index (KGLLM_INDEX_FACTS=false: facts near a question's entities are scored as it is asked)"
            if name == FACTS_DIR
            else "use a machine with more memory (entity labels are always indexed)"
        )
        raise RetrievalError(
            f"the {name} index of {vectors:,} vectors would take about {needed / 2**30:.1f} GiB, more than "
            f"{MEMORY_SHARE:.0%} of this machine's {memory / 2**30:.1f} GiB; {advice}"
        )


def with_labels(question: str, links: Sequence[LinkedEntity]) -> str:
    """The question with inexact mentions spelled as the labels they were linked to."""
    for link in links:
        if link.method != "exact":
            question = question.replace(link.mention, link.entity.label, 1)
    return question


def walks_from(seeds: Sequence[str], triples: Sequence[Triple]) -> dict[Triple, tuple[str, tuple[Triple, ...]]]:
    """For each triple, a walk (start, triples) from the nearest seed that ends with it.

    Walks go through ``triples`` only; a triple no seed reaches is a walk of its own from its head.
    """
    adjacency: dict[str, list[Triple]] = {}
    for t in triples:
        adjacency.setdefault(t.head, []).append(t)
        adjacency.setdefault(t.tail, []).append(t)
    reached: dict[str, tuple[str, tuple[Triple, ...]]] = {s: (s, ()) for s in seeds}
    walks: dict[Triple, tuple[str, tuple[Triple, ...]]] = {}
    queue = deque(seeds)
    while queue:
        node = queue.popleft()
        start, walked = reached[node]
        for t in adjacency.get(node, ()):
            walks.setdefault(t, (start, (*walked, t)))
            other = t.tail if t.head == node else t.head
            if other not in reached:
                reached[other] = (start, (*walked, t))
                queue.append(other)
    return {t: walks.get(t, (t.head, (t,))) for t in triples}
