"""Structural knowledge-graph embeddings: compact 1-N models trained on a store's triples.

Every query ``(head, relation, ?)`` is scored against all entities at once and
trained with cross-entropy; head queries are answered as tail queries of the
reciprocal relation (``relation + R``). ComplEx with N3 regularization (Lacroix
et al., 2018) is the default; DistMult is kept for comparison.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kgllm.exceptions import ConfigurationError, InputError, ModelError
from kgllm.registry import Registry
from kgllm.types import Triple


@dataclass(frozen=True)
class KGEConfig:
    """How the structural model is built and trained. Every field is part of the cache key."""

    model: str = "complex"  # a name in ``kge_models``
    dim: int = 256  # embedding size (complex numbers for ComplEx)
    learning_rate: float = 0.1  # Adagrad, as in the N3 recipe
    n3_weight: float = 0.01  # weight of the N3 (nuclear 3-norm) regularizer
    dropout: float = 0.0  # on the query embedding
    batch_size: int = 256
    max_epochs: int = 400
    seconds: float = 60.0  # wall-clock training budget
    eval_every: int = 5  # epochs between checks on the valid split (best check kept)
    check_seconds: float = 0.0  # also check every so many training seconds (0: by epochs only)
    valid_sample: int = 2000  # valid triples checked (a fixed random sample of larger splits)
    init_scale: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model.lower() not in kge_models.names():
            raise ConfigurationError(
                f"unknown KGE model {self.model!r}; choose one of: {', '.join(kge_models.names())}"
            )
        for name in ("dim", "batch_size", "max_epochs", "eval_every", "valid_sample"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"KGEConfig.{name} must be at least 1")
        if (
            self.seconds <= 0
            or self.learning_rate <= 0
            or self.n3_weight < 0
            or self.check_seconds < 0
            or not 0 <= self.dropout < 1
        ):
            raise ConfigurationError(
                "KGEConfig: seconds and learning_rate must be positive, n3_weight and check_seconds >= 0, "
                "0 <= dropout < 1"
            )

    @classmethod
    def from_dict(cls, values: dict) -> KGEConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigurationError(f"unknown KGE settings {unknown}; known: {', '.join(sorted(known))}")
        return cls(**values)


class KGEModel(nn.Module):
    """Scores ``(head, relation, every entity)``; relations ``R..2R-1`` are the reciprocals."""

    def __init__(self, num_entities: int, num_relations: int, config: KGEConfig):
        super().__init__()
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.dropout = nn.Dropout(config.dropout)

    def score_tails(self, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        """Scores of shape ``(batch, num_entities)``; ``relations`` may be reciprocal ids."""
        raise NotImplementedError

    def regularizer(self, heads: torch.Tensor, relations: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
        """The weighted penalty's unweighted value for a batch."""
        raise NotImplementedError


class ComplEx(KGEModel):
    """``Re(<h, r, conj(t)>)`` with real and imaginary parts in separate tables."""

    def __init__(self, num_entities: int, num_relations: int, config: KGEConfig):
        super().__init__(num_entities, num_relations, config)
        self.entity = nn.Embedding(num_entities, 2 * config.dim)
        self.relation = nn.Embedding(2 * num_relations, 2 * config.dim)
        for table in (self.entity, self.relation):
            nn.init.normal_(table.weight, std=config.init_scale)
        self.dim = config.dim

    def _parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., : self.dim], x[..., self.dim :]

    def score_tails(self, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        h_re, h_im = self._parts(self.entity(heads))
        r_re, r_im = self._parts(self.relation(relations))
        query = torch.cat([h_re * r_re - h_im * r_im, h_re * r_im + h_im * r_re], dim=-1)
        return self.dropout(query) @ self.entity.weight.T

    def regularizer(self, heads, relations, tails):
        total = 0.0
        for x in (self.entity(heads), self.relation(relations), self.entity(tails)):
            re, im = self._parts(x)
            total = total + torch.sqrt(re**2 + im**2 + 1e-12).pow(3).sum()
        return total / len(heads)


class DistMult(KGEModel):
    """``<h, r, t>`` with real vectors."""

    def __init__(self, num_entities: int, num_relations: int, config: KGEConfig):
        super().__init__(num_entities, num_relations, config)
        self.entity = nn.Embedding(num_entities, config.dim)
        self.relation = nn.Embedding(2 * num_relations, config.dim)
        for table in (self.entity, self.relation):
            nn.init.normal_(table.weight, std=config.init_scale)

    def score_tails(self, heads, relations):
        return self.dropout(self.entity(heads) * self.relation(relations)) @ self.entity.weight.T

    def regularizer(self, heads, relations, tails):
        parts = (self.entity(heads), self.relation(relations), self.entity(tails))
        return sum(x.abs().pow(3).sum() for x in parts) / len(heads)


kge_models: Registry[KGEModel] = Registry("KGE model", KGEModel, entry_points="kgllm.kge_models")
kge_models.register("complex", ComplEx)
kge_models.register("distmult", DistMult)


class Vocabulary:
    """Entity and relation ids <-> row numbers, in sorted order so a cache stays valid across processes."""

    def __init__(self, entities: Sequence[str], relations: Sequence[str]):
        self.entities = list(entities)
        self.relations = list(relations)
        self.entity_index = {e: i for i, e in enumerate(self.entities)}
        self.relation_index = {r: i for i, r in enumerate(self.relations)}

    @classmethod
    def from_triples(cls, triples: Sequence[Triple]) -> Vocabulary:
        entities = sorted({t.head for t in triples} | {t.tail for t in triples})
        return cls(entities, sorted({t.relation for t in triples}))

    def encode(self, triples: Sequence[Triple]) -> np.ndarray:
        """``(n, 3)`` int64 rows of head, relation, tail; every id must be known."""
        try:
            rows = [
                (self.entity_index[t.head], self.relation_index[t.relation], self.entity_index[t.tail]) for t in triples
            ]
        except KeyError as exc:
            raise InputError(f"{exc.args[0]!r} is not an entity or relation the model was trained on") from exc
        return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


@dataclass
class TrainedKGE:
    """A trained model with its vocabulary, configuration and training record."""

    model: KGEModel
    vocabulary: Vocabulary
    config: KGEConfig
    epochs: int = 0
    seconds: float = 0.0
    valid_mrr: float | None = None

    @torch.inference_mode()
    def tail_scores(self, heads: np.ndarray, relations: np.ndarray, inverse: bool = False) -> np.ndarray:
        """``(batch, num_entities)`` scores of ``(head, relation, ?)``; with ``inverse`` of ``(?, relation, head)``."""
        self.model.eval()
        r = torch.as_tensor(relations) + (self.model.num_relations if inverse else 0)
        return self.model.score_tails(torch.as_tensor(heads), r).numpy()

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), directory / "model.pt")
        meta = {
            "config": asdict(self.config),
            "entities": self.vocabulary.entities,
            "relations": self.vocabulary.relations,
            "epochs": self.epochs,
            "seconds": self.seconds,
            "valid_mrr": self.valid_mrr,
        }
        (directory / "kge.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path) -> TrainedKGE:
        try:
            meta = json.loads((directory / "kge.json").read_text())
            config = KGEConfig.from_dict(meta["config"])
            vocabulary = Vocabulary(meta["entities"], meta["relations"])
            model = _build(config, vocabulary)
            model.load_state_dict(torch.load(directory / "model.pt"))
        except (OSError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot load the KGE model in {directory}: {exc}") from exc
        return cls(model, vocabulary, config, meta["epochs"], meta["seconds"], meta["valid_mrr"])


def _build(config: KGEConfig, vocabulary: Vocabulary) -> KGEModel:
    return kge_models.get(config.model)(len(vocabulary.entities), len(vocabulary.relations), config)


#: ``(training seconds, the model as training with that budget would end) -> None``
MarkCallback = Callable[[float, "TrainedKGE"], None]


def train_kge(
    train: Sequence[Triple],
    config: KGEConfig,
    valid: Sequence[Triple] = (),
    progress: bool = True,
    vocabulary: Vocabulary | None = None,
    marks: Sequence[float] = (),
    on_mark: MarkCallback | None = None,
) -> TrainedKGE:
    """Train on ``train`` for ``config.seconds`` of training (or ``max_epochs``).

    With ``valid`` triples the filtered MRR on (a fixed sample of) them is checked every
    ``eval_every`` epochs or ``check_seconds``, whichever comes first, and at the end; the best
    check's weights are kept (early stopping on valid). Checks do not count against the budget.
    At each of ``marks`` (training seconds) ``on_mark`` gets the model that training for that
    budget would return: one run gives the figures of several budgets.
    """
    if not train:
        raise InputError("no triples to train the KGE model on")
    torch.manual_seed(config.seed)
    vocabulary = vocabulary or Vocabulary.from_triples(list(train) + list(valid))
    model = _build(config, vocabulary)
    data = torch.as_tensor(vocabulary.encode(train))
    num_rel = len(vocabulary.relations)
    # both directions: (h, r, t) and (t, r + R, h)
    queries = torch.cat([data, torch.stack([data[:, 2], data[:, 1] + num_rel, data[:, 0]], dim=1)])
    optimizer = torch.optim.Adagrad(model.parameters(), lr=config.learning_rate)
    result = TrainedKGE(model, vocabulary, config)
    checker = _ValidChecker(result, train, valid, config)
    pending = sorted(m for m in marks if m < config.seconds) + [config.seconds]
    trained_s, next_check = 0.0, config.check_seconds or float("inf")
    bar = tqdm(
        total=config.seconds,
        desc=f"training {config.model}",
        unit="s",
        disable=not progress,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}",
    )
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        result.epochs = epoch
        for batch in queries[torch.randperm(len(queries))].split(config.batch_size):
            started = time.perf_counter()
            _step(model, optimizer, batch, config.n3_weight)
            trained_s += time.perf_counter() - started
            bar.n = min(trained_s, config.seconds)
            if trained_s >= next_check:  # large graphs: an epoch can be longer than the budget
                bar.set_postfix_str(checker.check(epoch))
                next_check = trained_s + config.check_seconds
            while pending and trained_s >= pending[0]:
                bar.set_postfix_str(checker.check(epoch))
                if on_mark is not None:
                    on_mark(pending[0], checker.best(trained_s))
                pending.pop(0)
            if not pending:
                break
        if not pending:
            break
        if epoch % config.eval_every == 0 or epoch == config.max_epochs:
            bar.set_postfix_str(checker.check(epoch))
        bar.refresh()
    bar.close()
    final = checker.best(trained_s)
    model.load_state_dict(final.model.state_dict())
    result.valid_mrr, result.seconds = final.valid_mrr, trained_s
    model.eval()
    return result


class _ValidChecker:
    """Filtered MRR on a fixed sample of the valid triples; remembers the best weights."""

    def __init__(self, result: TrainedKGE, train: Sequence[Triple], valid: Sequence[Triple], config: KGEConfig):
        vocabulary = result.vocabulary
        self.result, self.valid = result, None
        if len(valid):
            ids = vocabulary.encode(valid)
            self.known = np.concatenate([vocabulary.encode(train), ids])  # filter with every valid fact
            if len(ids) > config.valid_sample:
                ids = ids[np.sort(np.random.default_rng(config.seed).choice(len(ids), config.valid_sample, False))]
            self.valid = ids
        self.best_mrr = -1.0
        self.best_state: dict[str, torch.Tensor] | None = None

    def check(self, epoch: int) -> str:
        from kgllm.pipelines.completion.evaluation import filtered_ranks, ranking_metrics

        if self.valid is None:
            return f"epoch {epoch}"
        mrr = ranking_metrics(filtered_ranks(self.result.tail_scores, self.valid, self.known))["mrr"]
        self.result.model.train()
        if mrr > self.best_mrr:
            self.best_mrr, self.best_state = mrr, copy.deepcopy(self.result.model.state_dict())
        return f"epoch {epoch}, valid MRR {mrr:.3f}"

    def best(self, trained_s: float) -> TrainedKGE:
        """A copy holding the best checked weights (the current ones without valid triples)."""
        model = copy.deepcopy(self.result.model)
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        model.eval()
        best_mrr = self.best_mrr if self.best_state is not None else None
        return TrainedKGE(model, self.result.vocabulary, self.result.config, self.result.epochs, trained_s, best_mrr)


def _step(model: KGEModel, optimizer: torch.optim.Optimizer, batch: torch.Tensor, n3_weight: float) -> None:
    heads, relations, tails = batch[:, 0], batch[:, 1], batch[:, 2]
    loss = nn.functional.cross_entropy(model.score_tails(heads, relations), tails)
    if n3_weight:
        loss = loss + n3_weight * model.regularizer(heads, relations, tails)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def triples_digest(triples: Sequence[Triple], config) -> str:
    """Cache key: the sorted triples and a configuration dataclass."""
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    for t in sorted(triples, key=lambda t: (t.head, t.relation, t.tail)):
        digest.update(f"{t.head}\t{t.relation}\t{t.tail}\n".encode())
    return digest.hexdigest()[:16]


def search_kge(
    train: Sequence[Triple],
    configs: Sequence[KGEConfig],
    valid: Sequence[Triple],
    progress: bool = True,
    vocabulary: Vocabulary | None = None,
) -> TrainedKGE:
    """Train each configuration (each with its own ``seconds``) and keep the one with the best valid MRR."""
    if not valid:
        return train_kge(train, configs[0], valid, progress, vocabulary)
    trained = [train_kge(train, config, valid, progress, vocabulary) for config in configs]
    best = max(trained, key=lambda t: t.valid_mrr or 0.0)
    best.seconds = sum(t.seconds for t in trained)
    return best
