"""Filtered link-prediction evaluation: both directions, ties ranked realistically.

For a test triple ``(h, r, t)`` the tail query ranks ``t`` among all entities
after removing every other known ``(h, r, x)``; the head query does the same for
``(x, r, t)``. A tie counts half (the mean of the optimistic and pessimistic
rank), as PyKEEN's default "realistic" rank does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

#: ``(entities, relations, inverse) -> (batch, num_entities)`` scores of ``(e, r, ?)``,
#: or of ``(?, r, e)`` when inverse.
ScoreFn = Callable[[np.ndarray, np.ndarray, bool], np.ndarray]
EVAL_BATCH = 512


def answer_sets(known: np.ndarray) -> tuple[dict[tuple[int, int], list[int]], dict[tuple[int, int], list[int]]]:
    """``(h, r) -> tails`` and ``(t, r) -> heads`` of the known ``(n, 3)`` triples."""
    tails, heads = defaultdict(list), defaultdict(list)
    for h, r, t in known.tolist():
        tails[(h, r)].append(t)
        heads[(t, r)].append(h)
    return tails, heads


def filtered_ranks(score: ScoreFn, triples: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Ranks of the tail queries of ``triples`` followed by those of their head queries."""
    tails, heads = answer_sets(known)
    ranks = []
    for inverse, anchor, target, answers in ((False, 0, 2, tails), (True, 2, 0, heads)):
        for start in range(0, len(triples), EVAL_BATCH):
            batch = triples[start : start + EVAL_BATCH]
            scores = np.array(score(batch[:, anchor], batch[:, 1], inverse), dtype=np.float64)
            ranks.append(_ranks(scores, batch, anchor, target, answers))
    return np.concatenate(ranks) if ranks else np.zeros(0)


def _ranks(scores: np.ndarray, batch: np.ndarray, anchor: int, target: int, answers: dict) -> np.ndarray:
    rows = np.arange(len(batch))
    true = scores[rows, batch[:, target]].copy()
    for row, (e, r) in enumerate(zip(batch[:, anchor].tolist(), batch[:, 1].tolist())):
        scores[row, answers.get((e, r), [])] = -np.inf
    scores[rows, batch[:, target]] = true
    higher = (scores > true[:, None]).sum(1)
    ties = (scores == true[:, None]).sum(1) - 1
    return 1 + higher + ties / 2


def ranking_metrics(ranks: np.ndarray) -> dict[str, float]:
    """MRR and Hits@1/3/10 of ranks."""
    if not len(ranks):
        return {"mrr": 0.0, "hits@1": 0.0, "hits@3": 0.0, "hits@10": 0.0}
    return {"mrr": float(np.mean(1 / ranks)), **{f"hits@{k}": float(np.mean(ranks <= k)) for k in (1, 3, 10)}}
