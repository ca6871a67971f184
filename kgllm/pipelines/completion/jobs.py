"""Batch completion jobs: ``kgllm complete`` and ``job: complete`` files for ``kgllm run``.

A query file has one ``head<TAB>relation<TAB>?`` or ``?<TAB>relation<TAB>tail`` a line,
naming entities and relations by id or label. Malformed lines stop the job before any
work, naming their line number; unknown names are reported on their line and skipped.
Output is one JSON line per query, written as it goes and resumed like every job
(:mod:`kgllm.jobs`): by content (a line whose query is no longer in the file is stale),
one job per output at a time. The trained completer is cached by a hash of the store's
asserted triples and the configuration, so a second job does not train again, and two
jobs that need the same completer train it once. With ``ray`` the predictions of shards of
queries are made on a Ray cluster's workers (:mod:`kgllm.cluster`) and written here as above.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from tqdm.auto import tqdm

from kgllm.cache import cached_artifact, file_lock
from kgllm.cluster import map_shards, shards
from kgllm.exceptions import ConfigurationError, InputError, ParseError
from kgllm.graph.base import GraphStore
from kgllm.graph.labels import normalize
from kgllm.graph.rdflib_store import DEFAULT_BASE, to_iri
from kgllm.graph.review import ReviewQueue
from kgllm.jobs import CompleteJob, JobOutput, item_key
from kgllm.pipelines.completion.completer import (
    Completer,
    CompletionConfig,
    Query,
    RuleScorer,
    build_completer,
    make_scorers,
)
from kgllm.pipelines.completion.evaluation import answer_sets
from kgllm.pipelines.completion.kge import KGEConfig, TrainedKGE, Vocabulary, triples_digest
from kgllm.types import Prediction, Provenance, Triple

log = logging.getLogger(__name__)

SOURCE = "kgllm complete"
BATCH = 64
SHARD = 16 * BATCH  # queries per Ray task: whole batches, so a worker's figures are the driver's
WILDCARD = "?"


@dataclass(frozen=True)
class QueryLine:
    """One line of a query file: its id (line number), the three fields and the query or why it was skipped."""

    id: str
    fields: tuple[str, str, str]
    query: Query | None = None
    error: str = ""

    @property
    def key(self) -> str:
        """The content hash its output line records (see :class:`kgllm.jobs.JobOutput`)."""
        return item_key(self.id, *self.fields)


def read_query_file(path: Path) -> list[tuple[int, tuple[str, str, str]]]:
    """``(line number, (head, relation, tail))`` with exactly one of head and tail ``?``;
    blank and ``#`` lines skipped."""
    if not path.is_file():
        raise ParseError("no such queries file", str(path))
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = tuple(part.strip() for part in line.split("\t"))
        if len(fields) != 3 or not all(fields):
            raise ParseError(
                f"expected head<TAB>relation<TAB>? or ?<TAB>relation<TAB>tail, got {line!r}", str(path), number
            )
        if (fields[0] == WILDCARD) == (fields[2] == WILDCARD) or fields[1] == WILDCARD:
            raise ParseError(f"exactly one of head and tail must be '?', got {line!r}", str(path), number)
        rows.append((number, fields))
    return rows


class NameResolver:
    """Entity and relation names -> the model's rows: an id, a plain name minted as the loaders do, or a label."""

    def __init__(self, store: GraphStore, vocabulary: Vocabulary):
        self.store = store
        self.vocabulary = vocabulary
        self.relation_labels: dict[str, int] = {}
        for row, relation in enumerate(vocabulary.relations):
            self.relation_labels.setdefault(normalize(store.label(relation)), row)

    def entity(self, name: str) -> int:
        index = self.vocabulary.entity_index
        for candidate in (name, str(to_iri(name, DEFAULT_BASE))):
            if candidate in index:
                return index[candidate]
        matches = {e.id for e in self.store.find_by_label(name)} & index.keys()
        if len(matches) == 1:
            return index[matches.pop()]
        if matches:
            raise LookupError(f"entity {name!r} is ambiguous: {', '.join(sorted(matches)[:5])}")
        raise LookupError(f"unknown entity {name!r}")

    def relation(self, name: str) -> int:
        index = self.vocabulary.relation_index
        for candidate in (name, str(to_iri(name, DEFAULT_BASE))):
            if candidate in index:
                return index[candidate]
        if normalize(name) in self.relation_labels:
            return self.relation_labels[normalize(name)]
        raise LookupError(f"unknown relation {name!r}")

    def query(self, number: int, fields: tuple[str, str, str]) -> QueryLine:
        head, relation, tail = fields
        inverse = head == WILDCARD
        try:
            query = Query(self.entity(tail if inverse else head), self.relation(relation), inverse)
        except LookupError as exc:
            return QueryLine(str(number), fields, error=str(exc.args[0]))
        return QueryLine(str(number), fields, query)


def asserted_triples(store: GraphStore) -> list[Triple]:
    """The store's asserted facts, sorted: predictions written back never feed the next training."""
    triples = list(store.triples())
    if store.sources():
        triples = [t for t in triples if store.is_asserted(t)]
    return sorted(triples, key=lambda t: (t.head, t.relation, t.tail))


def split_valid(triples: Sequence[Triple], config: CompletionConfig) -> tuple[list[Triple], list[Triple]]:
    """A deterministic valid sample whose entities and relations all stay in the training part."""
    rng = np.random.default_rng(config.kge.seed)
    size = min(config.max_valid, int(len(triples) * config.valid_fraction))
    order = rng.permutation(len(triples))
    train: list[Triple] = []
    valid: list[Triple] = []
    entity_counts: dict[str, int] = {}
    relation_counts: dict[str, int] = {}
    for t in triples:
        for e in (t.head, t.tail):
            entity_counts[e] = entity_counts.get(e, 0) + 1
        relation_counts[t.relation] = relation_counts.get(t.relation, 0) + 1
    chosen: set[int] = set()
    for i in order.tolist():
        t = triples[i]
        if len(chosen) >= size:
            break
        if min(entity_counts[t.head], entity_counts[t.tail], relation_counts[t.relation]) > 1 and t.head != t.tail:
            chosen.add(i)
            for e in (t.head, t.tail):
                entity_counts[e] -= 1
            relation_counts[t.relation] -= 1
    for i, t in enumerate(triples):
        (valid if i in chosen else train).append(t)
    return train, valid


def completer_directory(triples: Sequence[Triple], config: CompletionConfig, settings) -> Path:
    """Where the completer trained on these asserted facts with this configuration is cached."""
    return settings.cache_dir / "completion" / f"kge-{triples_digest(triples, config)}"


def is_completer_cached(store: GraphStore, config: CompletionConfig, settings) -> bool:
    """Whether :func:`cached_completer` would load this store's completer rather than train it."""
    triples = asserted_triples(store)
    return bool(triples) and (completer_directory(triples, config, settings) / "weights.json").is_file()


def cached_completer(store: GraphStore, config: CompletionConfig, settings, progress: bool = True) -> Completer:
    """The completer for this store: trained (KGE, then fusion weights on a valid sample) or loaded from the cache."""
    triples = asserted_triples(store)
    if not triples:
        raise InputError("the store holds no facts to learn from")
    directory = completer_directory(triples, config, settings)
    digest = directory.name.removeprefix("kge-")
    vocabulary = Vocabulary.from_triples(triples)
    built: list[Completer] = []

    def build(staging: Path) -> None:
        train, valid = split_valid(triples, config)
        completer = build_completer(store, train, valid, config, settings, vocabulary, progress, vectors_dir=staging)
        if any(s.name == "rules" for s in completer.scorers):  # mined from every fact, as when loaded from the cache
            every_fact = RuleScorer(vocabulary.encode(triples), len(vocabulary.entities), len(vocabulary.relations))
            completer.scorers = [every_fact if s.name == "rules" else s for s in completer.scorers]
        completer.kge.save(staging)
        (staging / "weights.json").write_text(json.dumps(completer.weights))
        built.append(completer)

    cached_artifact(directory, build, marker="weights.json")
    if built:
        completer = built[0]
    else:
        with file_lock(directory, what=str(directory)):  # the encoder's vectors may be added to the folder
            kge = TrainedKGE.load(directory)
            weights = json.loads((directory / "weights.json").read_text())
            scorers = make_scorers(
                [n for n in config.scorers if n in weights],
                store,
                kge,
                vocabulary.encode(triples),
                settings,
                config,
                progress=progress,
                vectors_dir=directory,
            )
        completer = Completer(kge, scorers, config.candidates, weights)
    completer.model_name = _model_name(completer, digest)
    return completer


def job_from_options(**options) -> CompleteJob:
    """A complete job from command-line options; a bad value is one ``ConfigurationError`` naming the option."""
    try:
        return CompleteJob(job="complete", **options)
    except ValidationError as exc:
        problems = "; ".join(_option_problem(e) for e in exc.errors())
        raise ConfigurationError(problems) from exc


def _option_problem(error) -> str:
    """``--option: what is wrong``; a problem of several options together is its message alone."""
    if not error["loc"]:
        return error["msg"].removeprefix("Value error, ")
    return f"--{'.'.join(map(str, error['loc'])).replace('_', '-')}: {error['msg']}"


def _model_name(completer: Completer, digest: str) -> str:
    """``distmult-<digest> + rules + lm``: the structural model and the re-rankers that count."""
    used = [s.name for s in completer.scorers if completer.weights.get(s.name)]
    return " + ".join([f"{completer.kge.config.model}-{digest}", *used])


def job_config(job: CompleteJob) -> CompletionConfig:
    return CompletionConfig(
        kge=KGEConfig(seconds=job.kge_seconds, max_epochs=job.kge_epochs),
        kge_models=tuple(job.kge_models),
        scorers=tuple(job.scorers),
        candidates=job.candidates,
    )


def job_queries(
    job: CompleteJob, store: GraphStore, vocabulary: Vocabulary, lines: list[tuple[int, tuple[str, str, str]]]
) -> Iterator[QueryLine]:
    """The job's queries: each line read from its file, or every (entity, relation) pair's tail query."""
    if job.queries == "all":
        for e, entity in enumerate(vocabulary.entities):
            for r, relation in enumerate(vocabulary.relations):
                yield QueryLine(f"{e}:{r}", (entity, relation, WILDCARD), Query(e, r, False))
        return
    resolver = NameResolver(store, vocabulary)
    for number, fields in lines:
        yield resolver.query(number, fields)


@dataclass
class JobSummary:
    queries: int = 0
    predictions: int = 0
    skipped: int = 0
    already_done: int = 0
    written_back: int = 0
    queued: int = 0  # facts new on the review queue
    seconds: float = 0.0

    def line(self, output: Path) -> str:
        rate = self.queries / self.seconds if self.seconds else 0.0
        back = f", {self.written_back} new facts written back" if self.written_back else ""
        back += f", {self.queued} facts queued for review" if self.queued else ""
        return (
            f"{self.queries} queries, {self.predictions} predictions, {self.skipped} skipped, "
            f"{self.already_done} already done{back}, in {self.seconds:.1f} s ({rate:.1f} queries/s) -> {output}"
        )


def run_complete_job(
    job: CompleteJob,
    store: GraphStore,
    settings,
    progress: bool = True,
    completer: Completer | None = None,
    *,
    restart: bool = False,
    repair: bool = False,
    ray: str | None = None,
    shard_size: int = SHARD,
) -> JobSummary:
    """Predict the queries not yet in ``job.output``, appending one JSON line per query as it goes.

    ``restart`` drops output lines of queries no longer in the file and ``repair`` drops
    corrupt lines (see :class:`kgllm.jobs.JobOutput`); without them such an output is
    refused before any training. With ``ray`` (an address, see :mod:`kgllm.cluster`) shards of
    ``shard_size`` queries are predicted on the cluster's workers and written here, in order.
    """
    lines = (
        [] if job.queries == "all" else read_query_file(Path(job.queries))
    )  # a malformed line stops the job before any work
    with JobOutput(job.output, job.fingerprint(), restart=restart, repair=repair) as output:
        if job.queries != "all":  # checked before training: the keys come from the file alone
            done = output.resume(item_key(str(number), *fields) for number, fields in lines)
        review = ReviewQueue.for_store(store, settings.cache_dir) if job.review else None  # checked before training
        completer = completer or cached_completer(store, job_config(job), settings, progress)
        known = KnownAnswers(store, completer.kge.vocabulary)
        queries = list(job_queries(job, store, completer.kge.vocabulary, lines))
        if job.queries == "all":
            done = output.resume(q.key for q in queries)
        pending = [q for q in queries if q.key not in done]
        summary = JobSummary(already_done=len(queries) - len(pending))
        started = time.perf_counter()
        if ray:
            parts = map_shards(_complete_shard, shards(pending, shard_size), ray, job, settings)
        else:
            parts = (
                predict_batch(batch, completer, known, job.top_k, job.min_score) for batch in shards(pending, BATCH)
            )
        with tqdm(total=len(pending), desc="completing", unit="query", disable=not progress) as bar:
            for records in parts:
                keep_predictions(records, store, summary, job.write_back, review)
                output.write(records)
                bar.update(len(records))
    summary.seconds = time.perf_counter() - started
    return summary


def _complete_shard(job: CompleteJob, settings, lines: list[QueryLine]) -> list[dict]:
    """A Ray worker's part of a job: the records of ``lines``, predicted by the cached completer."""
    completer, known = _worker_completer(job, settings)
    return predict_batch(lines, completer, known, job.top_k, job.min_score)


_worker_completers: dict[str, tuple[Completer, KnownAnswers]] = {}


def _worker_completer(job: CompleteJob, settings) -> tuple[Completer, KnownAnswers]:
    """The job's completer, loaded from the cache the driver filled, once per worker process."""
    from kgllm.graph import open_store

    key = job.fingerprint()
    if key not in _worker_completers:
        store = open_store(job.graph, store=job.store, settings=settings)
        completer = cached_completer(store, job_config(job), settings, progress=False)
        _worker_completers[key] = (completer, KnownAnswers(store, completer.kge.vocabulary))
    return _worker_completers[key]


def keep_predictions(
    records: list[dict], store: GraphStore, summary: JobSummary, write_back: bool, review: ReviewQueue | None = None
) -> None:
    """Count ``records`` into ``summary``; write their predictions back, or queue them for ``review``, when asked."""
    for record in records:
        if "error" in record:
            log.warning("line %s skipped: %s", record["id"], record["error"])
            summary.skipped += 1
        else:
            summary.queries += 1
            summary.predictions += len(record["predictions"])
    derived = [p for record in records for p in record["predictions"]]
    if not derived or not (write_back or review is not None):
        return
    triples = [Triple(p["head"], p["relation"], p["tail"]) for p in derived]
    provenance = [
        Provenance(source=SOURCE, method="predicted", model=p["provenance"]["model"], score=p["score"]) for p in derived
    ]
    if write_back:
        summary.written_back += store.add_derived(triples, provenance)
    if review is not None:
        summary.queued += len(review.propose(store, triples, provenance))


class KnownAnswers:
    """The answers a store already asserts, per query: never proposed again; nor the anchor itself
    when the graph has no self-loops."""

    def __init__(self, store: GraphStore, vocabulary: Vocabulary):
        self.store = store  # for the labels of predictions
        known = vocabulary.encode(asserted_triples(store))
        self.tails, self.heads = answer_sets(known)
        self.self_loops = bool((known[:, 0] == known[:, 2]).any())

    def excluded(self, query: Query) -> list[int]:
        found = (self.heads if query.inverse else self.tails).get((query.anchor, query.relation), [])
        return found + ([] if self.self_loops else [query.anchor])


def predict_batch(
    batch: list[QueryLine], completer: Completer, known: KnownAnswers, top_k: int, min_score: float = 0.0
) -> list[dict]:
    """One output record per query of ``batch``: its predictions scoring at least ``min_score``, or why it
    was skipped."""
    valid = [(q.id, q.query) for q in batch if q.query is not None]
    exclude = [known.excluded(query) for _, query in valid]
    predicted = dict(zip((id_ for id_, _ in valid), completer.predict([query for _, query in valid], top_k, exclude)))
    records: list[dict] = []
    for q in batch:
        if q.query is None:
            records.append({"id": q.id, "query": list(q.fields), "error": q.error, "predictions": [], "key": q.key})
            continue
        kept = [p for p in predicted[q.id] if p.score >= min_score]
        records.append(
            {
                "id": q.id,
                "query": list(q.fields),
                "predictions": [_prediction_record(p, known.store) for p in kept],
                "key": q.key,
            }
        )
    return records


def _prediction_record(prediction: Prediction, store: GraphStore) -> dict:
    return {
        **prediction.to_dict(),
        "labels": [store.label(prediction.head), store.label(prediction.relation), store.label(prediction.tail)],
    }


def open_and_complete(
    job: CompleteJob,
    settings,
    progress: bool = True,
    *,
    restart: bool = False,
    repair: bool = False,
    ray: str | None = None,
) -> str:
    """Open the job's store, run the job, close the store; returns the summary line.

    ``restart``, ``repair`` and ``ray`` are :func:`run_complete_job`'s.
    """
    from kgllm.graph import open_store

    with open_store(job.graph, store=job.store, settings=settings, writable=job.write_back) as store:
        summary = run_complete_job(job, store, settings, progress, restart=restart, repair=repair, ray=ray)
    return summary.line(job.output)
