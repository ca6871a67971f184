"""Link prediction side by side: kgllm's completion against PyKEEN's TransE, ComplEx and RotatE.

Every model gets the same wall-clock training budget, keeps the weights of its best
check on the valid split, and is ranked on test by the same filtered evaluation
(:mod:`kgllm.pipelines.completion.evaluation`), both directions.
Also: a generated graph for measuring the throughput of ``kgllm complete``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from kgllm.exceptions import InputError, MissingDependencyError
from kgllm.graph import stores
from kgllm.graph.loaders import read_file, write_tsv
from kgllm.pipelines.completion.completer import CompletionConfig, build_completer
from kgllm.pipelines.completion.evaluation import filtered_ranks, ranking_metrics
from kgllm.pipelines.completion.kge import Vocabulary
from kgllm.types import Triple

log = logging.getLogger(__name__)

PYKEEN_MODELS = ("TransE", "ComplEx", "RotatE")
PYKEEN_EPOCHS_PER_CHECK = 5
GENERATED_ENTITIES = 5000
GENERATED_RELATIONS = 20
NOTES = (
    "Filtered ranks (every known train/valid/test fact removed), both directions, ties counted half; "
    "each model keeps its best check on valid. `train s`: the KGE rows' training time; for the fused row, "
    "training plus building the re-rankers and choosing their weights on valid."
)
MAX_PYKEEN_EPOCHS = 100_000  # the time budget ends training first


@dataclass
class CompletionRow:
    model: str
    metrics: dict[str, float]
    train_seconds: float
    epochs: int

    def row(self) -> dict[str, str]:
        return {
            "model": self.model,
            "MRR": f"{self.metrics['mrr']:.3f}",
            **{f"Hits@{k}": f"{self.metrics[f'hits@{k}']:.3f}" for k in (1, 3, 10)},
            "epochs": str(self.epochs),
            "train s": f"{self.train_seconds:.1f}",
        }


@dataclass
class Splits:
    train: list[Triple]
    valid: list[Triple]
    test: list[Triple]

    @classmethod
    def read(cls, directory: Path) -> Splits:
        files = [directory / f"{name}.txt" for name in ("train", "valid", "test")]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise InputError(f"{directory}: expected train.txt, valid.txt and test.txt; missing {', '.join(missing)}")
        return cls(*(read_file(f).triples for f in files))


def run_completion_benchmark(
    data: Path, budget: float, config: CompletionConfig, settings, pykeen_models=PYKEEN_MODELS, progress: bool = True
) -> list[CompletionRow]:
    """Rows for kgllm (KGE alone, then fused) and each PyKEEN model, ranked on test."""
    splits = Splits.read(data)
    vocabulary = Vocabulary.from_triples(splits.train + splits.valid + splits.test)
    known = np.concatenate([vocabulary.encode(s) for s in (splits.train, splits.valid, splits.test)])
    test = vocabulary.encode(splits.test)
    store = stores.resolve("rdflib", {})
    store.add(splits.train)  # the LM and the encoder see the training facts only
    config = dataclasses.replace(config, kge=dataclasses.replace(config.kge, seconds=budget))
    started = time.perf_counter()
    completer = build_completer(store, splits.train, splits.valid, config, settings, vocabulary, progress)
    kge = completer.kge
    tried = "/".join(config.kge_models)
    rows = [
        CompletionRow(
            f"kgllm {kge.config.model} (best on valid of {tried}; 1-N, reciprocal, N3)",
            ranking_metrics(filtered_ranks(kge.tail_scores, test, known)),
            kge.seconds,
            kge.epochs,
        )
    ]
    if config.scorers:
        weights = ", ".join(f"{k} {v:g}" for k, v in completer.weights.items()) or "no re-ranker"
        fused = ranking_metrics(filtered_ranks(completer.score_fn(), test, known))
        rows.append(
            CompletionRow(
                f"kgllm {kge.config.model} + {weights} (weights chosen on valid among {', '.join(config.scorers)})",
                fused,
                time.perf_counter() - started,
                kge.epochs,
            )
        )
    for name in pykeen_models:
        rows.append(_pykeen_row(name, splits, vocabulary, known, budget, progress))
    return rows


def _pykeen_row(
    name: str, splits: Splits, vocabulary: Vocabulary, known: np.ndarray, budget: float, progress: bool
) -> CompletionRow:
    """Train a PyKEEN model with its pipeline defaults (sLCWA, Adam) for ``budget`` seconds; best valid check kept."""
    try:
        from pykeen.models import model_resolver
        from pykeen.optimizers import optimizer_resolver
        from pykeen.training import SLCWATrainingLoop
        from pykeen.triples import TriplesFactory
    except ImportError as exc:
        raise MissingDependencyError(
            'the completion benchmark compares with PyKEEN: pip install "kgllm[test]"'
        ) from exc

    labelled = np.array([(t.head, t.relation, t.tail) for t in splits.train])
    factory = TriplesFactory.from_labeled_triples(
        labelled, entity_to_id=vocabulary.entity_index, relation_to_id=vocabulary.relation_index
    )
    model = model_resolver.make(name, triples_factory=factory, random_seed=0)
    loop = SLCWATrainingLoop(
        model=model, triples_factory=factory, optimizer=optimizer_resolver.make(None, params=model.get_grad_params())
    )
    budget_callback = _budget_callback(
        model,
        vocabulary.encode(splits.valid),
        np.concatenate([vocabulary.encode(splits.train), vocabulary.encode(splits.valid)]),
        budget,
        f"training PyKEEN {name}",
        progress,
    )
    started = time.perf_counter()
    loop.train(factory, num_epochs=MAX_PYKEEN_EPOCHS, use_tqdm=False, callbacks=budget_callback)
    seconds = time.perf_counter() - started
    model.load_state_dict(budget_callback.best_state)
    metrics = ranking_metrics(filtered_ranks(_pykeen_scores(model), vocabulary.encode(splits.test), known))
    return CompletionRow(f"PyKEEN {name} (pipeline defaults)", metrics, seconds, budget_callback.epochs)


def _budget_callback(model, valid: np.ndarray, seen: np.ndarray, budget: float, description: str, progress: bool):
    """A PyKEEN training callback: checks valid MRR every few epochs, keeps the best weights, stops at the budget."""
    from pykeen.training.callbacks import TrainingCallback

    class BudgetCallback(TrainingCallback):
        def __init__(self):
            super().__init__()
            self.started = time.perf_counter()
            self.best_mrr, self.best_state, self.epochs = -1.0, None, 0
            self.bar = tqdm(
                total=budget,
                desc=description,
                unit="s",
                disable=not progress,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}",
            )

        def post_epoch(self, epoch: int, epoch_loss: float, **kwargs) -> None:
            self.epochs = epoch
            elapsed = time.perf_counter() - self.started
            if epoch % PYKEEN_EPOCHS_PER_CHECK == 0 or elapsed >= budget:
                mrr = ranking_metrics(filtered_ranks(_pykeen_scores(model), valid, seen))["mrr"]
                model.train()
                if mrr > self.best_mrr:
                    self.best_mrr, self.best_state = mrr, copy.deepcopy(model.state_dict())
                self.bar.set_postfix_str(f"epoch {epoch}, valid MRR {mrr:.3f}")
            self.bar.n = min(elapsed, budget)
            self.bar.refresh()
            if elapsed >= budget:
                self.bar.close()
                self.training_loop._should_stop = True  # how PyKEEN's own early-stopping callback ends training

    return BudgetCallback()


def _pykeen_scores(model):
    @torch.inference_mode()
    def score(anchors: np.ndarray, relations: np.ndarray, inverse: bool) -> np.ndarray:
        model.eval()
        pairs = torch.as_tensor(np.stack([anchors, relations], 1) if not inverse else np.stack([relations, anchors], 1))
        return (model.score_h(pairs) if inverse else model.score_t(pairs)).numpy()

    return score


def generate_graph(
    path: Path,
    triples: int,
    entities: int = GENERATED_ENTITIES,
    relations: int = GENERATED_RELATIONS,
    clusters: int = 50,
    seed: int = 0,
) -> Path:
    """A TSV graph with learnable structure: each relation maps a cluster of entities to one other cluster."""
    rng = random.Random(seed)
    cluster_of = [rng.randrange(clusters) for _ in range(entities)]
    members: dict[int, list[int]] = {}
    for e, c in enumerate(cluster_of):
        members.setdefault(c, []).append(e)
    targets = [[rng.randrange(clusters) for _ in range(clusters)] for _ in range(relations)]
    found: set[tuple[int, int, int]] = set()
    while len(found) < triples:
        head, relation = rng.randrange(entities), rng.randrange(relations)
        pool = members.get(targets[relation][cluster_of[head]]) or [head]
        found.add((head, relation, rng.choice(pool)))
    rows = [Triple(f"e{h}", f"r{r}", f"e{t}") for h, r, t in sorted(found)]
    return write_tsv(rows, path)


def run_throughput(
    triples: int, budget: float, scorers: tuple[str, ...], settings, queries: int = 1000, progress: bool = True
) -> dict[str, str]:
    """``kgllm complete`` on a generated graph: a first job trains the completer (KGE and fusion weights) in a fresh
    cache, a second job loads it and is timed. The project's LM is trained (once, in the usual cache) beforehand."""
    import tempfile

    from kgllm.graph import open_store
    from kgllm.jobs import CompleteJob
    from kgllm.llm.default import ensure_default_model
    from kgllm.pipelines.completion.jobs import cached_completer, job_config, run_complete_job

    with tempfile.TemporaryDirectory() as root:
        graph = generate_graph(Path(root) / "generated.tsv", triples)
        store = open_store(graph, store="rdflib", settings=settings)
        facts = random.Random(1).sample(
            sorted(read_file(graph).triples, key=lambda t: (t.head, t.relation, t.tail)), queries
        )
        query_file = Path(root) / "queries.tsv"  # the head query of half the sampled facts, the tail query of the rest
        query_file.write_text(
            "".join(
                f"{t.head}\t{t.relation}\t?\n" if i % 2 else f"?\t{t.relation}\t{t.tail}\n" for i, t in enumerate(facts)
            )
        )
        model = ensure_default_model(store, settings, progress) if "lm" in scorers else None
        job_settings = settings.model_copy(update={"cache_dir": Path(root) / "cache", "model": model})
        runs = []
        for name in ("first", "second"):
            job = CompleteJob(
                job="complete",
                queries=query_file,
                output=Path(root) / f"{name}.jsonl",
                graph=graph,
                scorers=list(scorers),
                kge_seconds=budget,
            )
            started = time.perf_counter()
            completer = cached_completer(store, job_config(job), job_settings, progress)
            summary = run_complete_job(job, store, job_settings, progress, completer)
            runs.append((time.perf_counter() - started, summary, completer))
    (first, _, _), (_, timed, completer) = runs
    used = [f"{s.name} {completer.weights[s.name]:g}" for s in completer.scorers] or ["none"]
    return {
        "graph": f"generated, {store.count_triples():,} triples, {store.count_entities():,} entities",
        "re-rankers tried": ", ".join(scorers) or "none",
        "used (weight on valid)": ", ".join(used),
        "KGE valid MRR": f"{completer.kge.valid_mrr or 0:.3f}",
        "queries": str(timed.queries),
        "first job s (trains)": f"{first:.0f}",
        "queries/s (cached model)": f"{timed.queries / timed.seconds:.1f}",
    }


def completion_benchmark_report(
    data: Path, budget: float, scorers: str, throughput_triples: int, out: Path | None, settings
) -> list[dict[str, str]]:
    """Run the comparison (and the throughput run when asked), print the tables, save them as Markdown."""
    from kgllm.bench.report import markdown, print_table

    logging.getLogger("pykeen").setLevel(logging.WARNING)  # its model summaries would bury the table
    names = tuple(s.strip() for s in scorers.split(",") if s.strip() and s.strip() != "none")
    rows = [r.row() for r in run_completion_benchmark(data, budget, CompletionConfig(scorers=names), settings)]
    print_table(rows, f"link prediction on {data.name} (filtered, both directions, test split)")
    command = f"kgllm bench complete --data {data} --budget {budget:g} --scorers {scorers}"
    text = f"## Link prediction on {data.name}\n\n`{command}`\n\n{markdown(rows)}\n{NOTES}\n"
    if throughput_triples:
        speed = [run_throughput(throughput_triples, budget, tried, settings) for tried in dict.fromkeys((names, ()))]
        print_table(speed, "kgllm complete: batch throughput")
        text += (
            f"\n## Throughput of kgllm complete\n\n`{command} --throughput-triples {throughput_triples}`"
            f"\n\n{markdown(speed)}"
        )
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    return rows
