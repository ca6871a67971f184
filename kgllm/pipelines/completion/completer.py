"""KG completion: structural candidates re-ranked with rules, the language model and the encoder.

The KGE model (:mod:`kgllm.pipelines.completion.kge`) scores every entity for a query
``(head, relation, ?)`` or ``(?, relation, tail)``; its ``candidates`` best go on to the
re-rankers, each a :class:`CandidateScorer`:

- ``rules``: AnyBURL-style relation-path rules mined from the training triples (small graphs);
- ``lm``: log-likelihood of the verbalized triple under the project's causal LM;
- ``encoder``: cosine between the query text and the candidate's label with its neighbourhood.

The fused score is ``kge + sum(weight * part)``, with the weights chosen on a valid split.
Each :class:`~kgllm.types.Prediction` carries the parts and weights that produced it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from kgllm.exceptions import ConfigurationError
from kgllm.graph.base import GraphStore
from kgllm.pipelines.completion.evaluation import filtered_ranks, ranking_metrics
from kgllm.pipelines.completion.kge import KGEConfig, TrainedKGE, Vocabulary, search_kge
from kgllm.types import Prediction, Triple

log = logging.getLogger(__name__)

#: Weights tried for each re-ranker when fitting on the valid split (0 turns it off).
WEIGHT_GRID = {
    "rules": (0.0, 0.5, 1.0, 2.0, 4.0, 8.0),
    "lm": (0.0, 0.02, 0.05, 0.1, 0.2, 0.5),
    "encoder": (0.0, 1.0, 2.0, 5.0, 10.0),
}
NEIGHBOURHOOD_FACTS = 12


@dataclass(frozen=True)
class Query:
    """``(anchor, relation, ?)`` when not ``inverse``, else ``(?, relation, anchor)``; ids are row numbers."""

    anchor: int
    relation: int
    inverse: bool


class CandidateScorer:
    """One re-ranking signal: a score for each candidate entity of each query (higher is better)."""

    name: str = "scorer"

    def score(self, queries: Sequence[Query], candidates: np.ndarray) -> np.ndarray:
        """``(len(queries), k)`` scores of the candidate rows ``candidates`` (same shape)."""
        raise NotImplementedError


class RuleScorer(CandidateScorer):
    """Relation-path rules ``r(x, y) <- r1(x, y)`` and ``r(x, y) <- r1(x, z), r2(z, y)``.

    Confidence is support / (body count + ``pseudo_count``) on the training triples,
    as AnyBURL does; a candidate's score is the noisy-or of the rules that reach it.
    Dense adjacency over entities, so only for graphs up to ``max_entities``.
    """

    name = "rules"

    def __init__(
        self,
        triples: np.ndarray,
        num_entities: int,
        num_relations: int,
        min_support: int = 2,
        pseudo_count: float = 5.0,
        max_rules: int = 50,
    ):
        adjacency = np.zeros((2 * num_relations, num_entities, num_entities), dtype=np.float32)
        adjacency[triples[:, 1], triples[:, 0], triples[:, 2]] = 1
        adjacency[triples[:, 1] + num_relations, triples[:, 2], triples[:, 0]] = 1
        self.adjacency = adjacency
        self.num_relations = num_relations
        self.rules = self._mine(min_support, pseudo_count, max_rules)

    def _reach(self, body: tuple[int, ...]) -> np.ndarray:
        """``(E, E)`` 0/1: which entities the body's relation path reaches from which."""
        reach = self.adjacency[body[0]]
        for relation in body[1:]:
            reach = np.minimum(reach @ self.adjacency[relation], 1)
        return reach

    def _mine(self, min_support: int, pseudo_count: float, max_rules: int) -> list[list[tuple[float, tuple[int, ...]]]]:
        count = len(self.adjacency)
        flat_heads = self.adjacency.reshape(count, -1).T
        keys, confidences = [], []
        for first in range(count):  # bodies starting with ``first``: itself, then ``first`` + each relation
            reach = np.concatenate(
                [
                    self.adjacency[first][None],
                    np.minimum(np.einsum("ij,bjk->bik", self.adjacency[first], self.adjacency), 1),
                ]
            )
            flat = reach.reshape(len(reach), -1)
            support = flat @ flat_heads  # (bodies, heads)
            confidences.append(np.where(support >= min_support, support / (flat.sum(1)[:, None] + pseudo_count), 0))
            keys += [(first,)] + [(first, second) for second in range(count)]
        confidence = np.concatenate(confidences)
        rules: list = []
        self.bodies: dict = {}
        for head in range(count):
            conf = confidence[:, head]
            conf[keys.index((head,))] = 0  # a relation is no evidence for itself
            chosen = [b for b in np.argsort(-conf)[:max_rules] if conf[b] > 0]
            for b in chosen:
                self.bodies.setdefault(keys[b], self._reach(keys[b]))
            rules.append([(float(conf[b]), keys[b]) for b in chosen])
        return rules

    def score(self, queries, candidates):
        out = np.zeros(candidates.shape, dtype=np.float64)
        for row, q in enumerate(queries):
            head_relation = q.relation + (self.num_relations if q.inverse else 0)
            miss = np.ones(self.adjacency.shape[1])
            for conf, body in self.rules[head_relation]:
                miss *= 1 - conf * self.bodies[body][q.anchor]
            out[row] = 1 - miss[candidates[row]]
        return out


class LMScorer(CandidateScorer):
    """Log-likelihood of ``"<head> <relation> <tail>."`` under a causal LM (the corpus's fact form)."""

    name = "lm"

    def __init__(self, lm, labels: Sequence[str], relation_labels: Sequence[str]):
        self.lm = lm
        self.labels = labels
        self.relation_labels = relation_labels

    def score(self, queries, candidates):
        rows = []
        for q, cands in zip(queries, candidates):
            anchor, relation = self.labels[q.anchor], self.relation_labels[q.relation]
            pairs = [(self.labels[c], anchor) if q.inverse else (anchor, self.labels[c]) for c in cands.tolist()]
            rows.append(self.lm.score("", [f"{h} {relation} {t}." for h, t in pairs]))
        return np.asarray(rows, dtype=np.float64)


class EncoderScorer(CandidateScorer):
    """Cosine between the query text (``"Chad neighbor of"``) and each candidate's label with a few of its facts."""

    name = "encoder"

    def __init__(
        self,
        encoder,
        store: GraphStore,
        entity_ids: Sequence[str],
        labels: Sequence[str],
        relation_labels: Sequence[str],
        vectors_dir: Path | None = None,
    ):
        self.encoder = encoder
        self.labels = labels
        self.relation_labels = relation_labels
        self.entity_vectors = self._entity_vectors(store, entity_ids, vectors_dir)

    def _entity_vectors(self, store: GraphStore, entity_ids: Sequence[str], vectors_dir: Path | None) -> np.ndarray:
        """Encoded once per completer: kept in ``vectors_dir`` (named by the encoder) when given."""
        path = (
            vectors_dir / f"entities-{hashlib.sha256(self.encoder.name.encode()).hexdigest()[:12]}.npy"
            if vectors_dir
            else None
        )
        if path is not None and path.is_file():
            vectors = np.load(path)
            if vectors.shape == (len(entity_ids), self.encoder.dim):
                return vectors
        texts = [_neighbourhood_text(store, e, label) for e, label in zip(entity_ids, self.labels)]
        vectors = self.encoder.encode(texts)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, vectors)
        return vectors

    def score(self, queries, candidates):
        texts = [
            f"{self.relation_labels[q.relation]} {self.labels[q.anchor]}"
            if q.inverse
            else f"{self.labels[q.anchor]} {self.relation_labels[q.relation]}"
            for q in queries
        ]
        vectors = self.encoder.encode(texts)
        return np.einsum("qd,qkd->qk", vectors, self.entity_vectors[candidates]).astype(np.float64)


def _neighbourhood_text(store: GraphStore, entity: str, label: str) -> str:
    facts = store.neighbors(entity, "out", limit=NEIGHBOURHOOD_FACTS)
    return label + ": " + "; ".join(f"{store.label(t.relation)} {store.label(t.tail)}" for t in facts)


@dataclass
class Completer:
    """Predicts missing heads or tails: KGE candidates, re-ranked and fused.

    Example::

        completer = Completer(trained_kge, [RuleScorer(...)], candidates=20)
        completer.fit_weights(valid_ids, known_ids)
        completer.predict([Query(anchor=3, relation=1, inverse=False)], top_k=5)
    """

    kge: TrainedKGE
    scorers: list[CandidateScorer] = field(default_factory=list)
    candidates: int = 20
    weights: dict[str, float] = field(default_factory=dict)
    model_name: str = ""

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise ConfigurationError("candidates must be at least 1")
        unknown = set(self.weights) - {s.name for s in self.scorers}
        if unknown:
            raise ConfigurationError(f"weights for scorers that are not used: {sorted(unknown)}")

    def parts(
        self, queries: Sequence[Query], exclude: Sequence[Sequence[int]] = ()
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Candidate rows ``(n, k)`` and each part's scores on them; ``exclude`` lists rows never proposed per query."""
        scores = self.kge_log_probs(queries)
        for row, rows_out in enumerate(exclude):
            scores[row, list(rows_out)] = -np.inf
        k = min(self.candidates, scores.shape[1])
        candidates = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        parts = {"kge": np.take_along_axis(scores, candidates, 1)}
        for scorer in self.scorers:
            parts[scorer.name] = scorer.score(queries, candidates)
        return candidates, parts

    def fuse(self, parts: dict[str, np.ndarray], weights: dict[str, float] | None = None) -> np.ndarray:
        weights = self.weights if weights is None else weights
        return parts["kge"] + sum(weights.get(name, 0.0) * value for name, value in parts.items() if name != "kge")

    def all_scores(
        self, queries: Sequence[Query], parts_cache: tuple | None = None, weights: dict[str, float] | None = None
    ) -> np.ndarray:
        """``(n, num_entities)``: fused scores for candidates, the KGE order below them for the rest."""
        candidates, parts = parts_cache or self.parts(queries)
        base = -1e6 + np.zeros((len(queries), len(self.kge.vocabulary.entities)))
        base += self.kge_log_probs(queries)
        np.put_along_axis(base, candidates, self.fuse(parts, weights), 1)
        return base

    def kge_log_probs(self, queries: Sequence[Query]) -> np.ndarray:
        """``(n, num_entities)`` log-probabilities the KGE model gives every entity."""
        anchors = np.array([q.anchor for q in queries])
        relations = np.array([q.relation for q in queries])
        inverse = np.array([q.inverse for q in queries])
        scores = np.zeros((len(queries), len(self.kge.vocabulary.entities)))
        for flag in (False, True):
            rows = np.flatnonzero(inverse == flag)
            if len(rows):
                scores[rows] = self.kge.tail_scores(anchors[rows], relations[rows], inverse=flag)
        return scores - _logsumexp(scores)

    def fit_weights(self, valid: np.ndarray, known: np.ndarray, progress: bool = True) -> dict[str, float]:
        """Choose each re-ranker's weight by filtered MRR on ``valid`` (a grid; ties keep the smaller weights).
        Re-rankers given weight 0 are dropped, so predictions do not pay for them."""
        queries = triple_queries(valid)
        cache = self.parts(queries)
        names = [s.name for s in self.scorers]
        grid = list(itertools.product(*(WEIGHT_GRID.get(n, (0.0, 1.0)) for n in names)))
        best, best_mrr = {}, -1.0
        for values in tqdm(grid, desc="fusion weights on valid", disable=not progress or len(grid) < 2):
            weights = dict(zip(names, values))
            fused = self.all_scores(queries, cache, weights)
            mrr = ranking_metrics(filtered_ranks(_lookup(queries, fused), valid, known))["mrr"]
            if mrr > best_mrr + 1e-9:
                best, best_mrr = weights, mrr
        log.info("fusion weights %s: valid MRR %.4f", best, best_mrr)
        self.weights = {name: weight for name, weight in best.items() if weight}
        self.scorers = [s for s in self.scorers if s.name in self.weights]
        return self.weights

    def score_fn(self):
        """A :data:`~kgllm.pipelines.completion.evaluation.ScoreFn` of the fused model, for evaluation."""

        def score(anchors: np.ndarray, relations: np.ndarray, inverse: bool) -> np.ndarray:
            return self.all_scores([Query(int(a), int(r), inverse) for a, r in zip(anchors, relations)])

        return score

    def predict(
        self, queries: Sequence[Query], top_k: int = 10, exclude: Sequence[Sequence[int]] = ()
    ) -> list[list[Prediction]]:
        """The ``top_k`` best answers of each query; ``score`` is the softmax of the fused score over the candidates."""
        candidates, parts = self.parts(queries, exclude)
        fused = self.fuse(parts)
        probs = np.exp(fused - _logsumexp(fused))
        vocab = self.kge.vocabulary
        results = []
        for row, q in enumerate(queries):
            order = np.argsort(-fused[row], kind="stable")[:top_k]
            anchor, relation = vocab.entities[q.anchor], vocab.relations[q.relation]
            row_predictions = []
            for col in order:
                if not np.isfinite(fused[row, col]):
                    continue
                other = vocab.entities[candidates[row, col]]
                head, tail = (other, anchor) if q.inverse else (anchor, other)
                provenance = {
                    "model": self.model_name,
                    "scores": {n: round(float(p[row, col]), 5) for n, p in parts.items()},
                    "weights": dict(self.weights),
                    "fused": round(float(fused[row, col]), 5),
                }
                row_predictions.append(Prediction(head, relation, tail, round(float(probs[row, col]), 6), provenance))
            results.append(row_predictions)
        return results


def triple_queries(triples: np.ndarray) -> list[Query]:
    """The tail queries of ``(n, 3)`` id triples followed by their head queries (the order of ``filtered_ranks``)."""
    return [Query(h, r, False) for h, r, _ in triples.tolist()] + [Query(t, r, True) for _, r, t in triples.tolist()]


def _lookup(queries: Sequence[Query], scores: np.ndarray):
    """A score function answering from precomputed rows of ``queries``."""
    index = {(q.anchor, q.relation, q.inverse): row for row, q in enumerate(queries)}

    def score(anchors, relations, inverse):
        return scores[[index[(int(a), int(r), inverse)] for a, r in zip(anchors, relations)]]

    return score


def _logsumexp(x: np.ndarray) -> np.ndarray:
    finite = np.where(np.isfinite(x), x, -np.inf)
    top = finite.max(axis=1, keepdims=True)
    return top + np.log(np.exp(finite - top).sum(axis=1, keepdims=True))


def query_labels(store: GraphStore, kge: TrainedKGE) -> tuple[list[str], list[str]]:
    """Labels of the model's entities and relations, read from the store."""
    return [store.label(e) for e in kge.vocabulary.entities], [store.label(r) for r in kge.vocabulary.relations]


SCORERS = ("rules", "lm", "encoder")


@dataclass(frozen=True)
class CompletionConfig:
    """The structural model, the re-rankers used and how many candidates they see."""

    kge: KGEConfig = field(default_factory=KGEConfig)  # its ``seconds`` is shared by the models tried
    kge_models: tuple[str, ...] = ("complex", "distmult")  # tried in turn; the best on valid is kept
    scorers: tuple[str, ...] = SCORERS  # any of "rules", "lm", "encoder"
    candidates: int = 20  # KGE candidates re-ranked per query
    max_rule_entities: int = 500  # rules use dense adjacency: skipped on larger graphs
    valid_fraction: float = 0.05  # of a store's triples, held out to choose epochs and weights
    max_valid: int = 1000

    def __post_init__(self) -> None:
        unknown = sorted(set(self.scorers) - set(SCORERS))
        if unknown:
            raise ConfigurationError(f"unknown scorers {unknown}; choose from: {', '.join(SCORERS)}")
        if not self.kge_models:
            raise ConfigurationError("kge_models names no model to train")
        if self.candidates < 1 or not 0 < self.valid_fraction < 1 or self.max_valid < 1:
            raise ConfigurationError("candidates and max_valid must be at least 1, valid_fraction in (0, 1)")


def make_scorers(
    names: Sequence[str],
    store: GraphStore,
    kge: TrainedKGE,
    train_ids: np.ndarray,
    settings,
    config: CompletionConfig,
    lm=None,
    encoder=None,
    progress: bool = True,
    vectors_dir: Path | None = None,
) -> list[CandidateScorer]:
    """The re-rankers named, built for this store; the LM is the project's model trained on the store.
    ``vectors_dir`` keeps the encoder's entity vectors for the next job."""
    vocab = kge.vocabulary
    labels, relation_labels = query_labels(store, kge)
    scorers: list[CandidateScorer] = []
    for name in names:
        if name == "rules":
            if len(vocab.entities) > config.max_rule_entities:
                log.warning(
                    "rules skipped: %d entities is more than max_rule_entities=%d",
                    len(vocab.entities),
                    config.max_rule_entities,
                )
                continue
            scorers.append(RuleScorer(train_ids, len(vocab.entities), len(vocab.relations)))
        elif name == "lm":
            scorers.append(LMScorer(lm or _project_lm(store, settings, progress), labels, relation_labels))
        elif name == "encoder":
            from kgllm.retrieval.encoder import encoder_from_settings

            scorers.append(
                EncoderScorer(
                    encoder or encoder_from_settings(settings),
                    store,
                    vocab.entities,
                    labels,
                    relation_labels,
                    vectors_dir,
                )
            )
    return scorers


def _project_lm(store: GraphStore, settings, progress: bool):
    from kgllm.llm.default import ensure_default_model
    from kgllm.llm.hf import HFCausalLM

    path = settings.model or ensure_default_model(store, settings, progress=progress)
    return HFCausalLM.from_pretrained(path, device=settings.device, threads=settings.threads)


def build_completer(
    store: GraphStore,
    train: Sequence[Triple],
    valid: Sequence[Triple],
    config: CompletionConfig,
    settings,
    vocabulary: Vocabulary | None = None,
    progress: bool = True,
    **scorer_kwargs,
) -> Completer:
    """Train the KGE models on ``train`` (model and epochs chosen on ``valid``), add the re-rankers,
    fit their weights on ``valid``."""
    vocabulary = vocabulary or Vocabulary.from_triples(list(train) + list(valid))
    seconds = config.kge.seconds / len(config.kge_models)
    tried = [dataclasses.replace(config.kge, model=name, seconds=seconds) for name in config.kge_models]
    kge = search_kge(train, tried, valid, progress, vocabulary)
    train_ids, valid_ids = vocabulary.encode(train), vocabulary.encode(valid)
    scorers = make_scorers(config.scorers, store, kge, train_ids, settings, config, progress=progress, **scorer_kwargs)
    completer = Completer(kge, scorers, config.candidates, model_name=kge.config.model)
    if scorers and len(valid_ids):
        completer.fit_weights(valid_ids, np.concatenate([train_ids, valid_ids]), progress=progress)
    return completer
