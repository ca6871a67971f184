"""Link prediction side by side: kgllm's completion against PyKEEN's TransE, ComplEx and RotatE.

Every model gets the same wall-clock training budget, keeps the weights of its best
check on the valid split, and is ranked on test by the same filtered evaluation
(:mod:`kgllm.pipelines.completion.evaluation`), both directions.
Also: a generated graph for measuring the throughput of ``kgllm complete``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from kgllm.exceptions import InputError, MissingDependencyError
from kgllm.graph import stores
from kgllm.graph.loaders import read_file, write_tsv
from kgllm.pipelines.completion.completer import CompletionConfig, build_completer
from kgllm.pipelines.completion.evaluation import filtered_ranks, ranking_metrics
from kgllm.pipelines.completion.kge import KGEConfig, Vocabulary, train_kge
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
SCORE_SLICE = 256  # entities scored at once by a PyKEEN model in evaluation
VALID_SAMPLE = KGEConfig.valid_sample  # valid triples per check of PyKEEN's models, as of kgllm's


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
    """A PyKEEN model with its pipeline defaults (sLCWA, Adam) trained for ``budget`` seconds; best valid check kept."""
    (mark,) = train_pykeen(PyKEENRecipe(name, "slcwa"), splits, vocabulary, [budget], progress)
    metrics = ranking_metrics(filtered_ranks(_pykeen_scores(mark.model), vocabulary.encode(splits.test), known))
    return CompletionRow(f"PyKEEN {name} (pipeline defaults)", metrics, mark.seconds, mark.epochs)


@dataclass(frozen=True)
class PyKEENRecipe:
    model: str  # a PyKEEN model name
    loop: str  # "slcwa": negative sampling; "lcwa": 1-N with inverse triples
    batch_size: int = 256
    sub_batch_size: int | None = None  # gradients accumulated over sub-batches of this size: bounded memory
    loss: str | None = None  # a PyKEEN loss name (None: the model's default)
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    summary: str = "pipeline defaults"  # how the label names the recipe

    @property
    def label(self) -> str:
        return f"PyKEEN {self.model} ({'sLCWA' if self.loop == 'slcwa' else 'LCWA + inverse'}, {self.summary})"

    @property
    def key(self) -> str:
        """How ``--peers`` names the recipe: ``complex-slcwa``, ``rotate-lcwa``, ..."""
        return f"{self.model.lower()}-{self.loop}"


@dataclass
class Mark:
    """The best-on-valid weights after ``seconds`` of training (``epochs`` begun)."""

    seconds: float
    epochs: int
    model: Any  # a TrainedKGE or a PyKEEN model


class _BudgetSpent(Exception):
    """Ends PyKEEN's training loop between two batches (its own stop flag is read once per epoch)."""


def train_pykeen(
    recipe: PyKEENRecipe,
    splits: Splits,
    vocabulary: Vocabulary,
    marks: Sequence[float],
    progress: bool,
    valid_sample: int = VALID_SAMPLE,
) -> list[Mark]:
    """Train a PyKEEN model until the last of ``marks`` (training seconds; checks excluded), checking valid MRR
    every few epochs and at each mark; a copy of the best weights so far is kept at each mark."""
    try:
        from pykeen.models import model_resolver
        from pykeen.optimizers import optimizer_resolver
        from pykeen.training import LCWATrainingLoop, SLCWATrainingLoop
        from pykeen.triples import TriplesFactory
    except ImportError as exc:
        raise MissingDependencyError(
            'the completion benchmark compares with PyKEEN: pip install "kgllm[test]"'
        ) from exc

    labelled = np.array([(t.head, t.relation, t.tail) for t in splits.train])
    factory = TriplesFactory.from_labeled_triples(
        labelled,
        entity_to_id=vocabulary.entity_index,
        relation_to_id=vocabulary.relation_index,
        create_inverse_triples=recipe.loop == "lcwa",
    )
    model = model_resolver.make(
        recipe.model, triples_factory=factory, random_seed=0, loss=recipe.loss, **recipe.model_kwargs
    )
    optimizer = optimizer_resolver.make(recipe.optimizer, params=model.get_grad_params(), lr=recipe.learning_rate)
    loop_class = LCWATrainingLoop if recipe.loop == "lcwa" else SLCWATrainingLoop
    loop = loop_class(model=model, triples_factory=factory, optimizer=optimizer)
    callback = _marks_callback(model, splits, vocabulary, sorted(marks), recipe.label, progress, valid_sample)
    with contextlib.suppress(_BudgetSpent):
        loop.train(
            factory,
            num_epochs=MAX_PYKEEN_EPOCHS,
            batch_size=recipe.batch_size,
            sub_batch_size=recipe.sub_batch_size,
            use_tqdm=False,
            callbacks=callback,
        )
    callback.bar.close()
    return callback.recorded


def _marks_callback(
    model, splits: Splits, vocabulary: Vocabulary, marks: list, description: str, progress: bool, valid_sample: int
):
    from pykeen.training.callbacks import TrainingCallback

    valid = vocabulary.encode(splits.valid)
    seen = np.concatenate([vocabulary.encode(splits.train), valid])
    if len(valid) > valid_sample:  # the same fixed sample as kgllm's checks
        valid = valid[np.sort(np.random.default_rng(0).choice(len(valid), valid_sample, False))]

    class MarksCallback(TrainingCallback):
        def __init__(self):
            super().__init__()
            self.started, self.paused = time.perf_counter(), 0.0
            self.best_mrr, self.best_state, self.epochs = -1.0, None, 0
            self.pending, self.recorded = list(marks), []
            self.bar = tqdm(
                total=marks[-1],
                desc=f"training {description}",
                unit="s",
                disable=not progress,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}",
            )

        def trained_seconds(self) -> float:
            return time.perf_counter() - self.started - self.paused

        def check(self) -> None:
            began = time.perf_counter()
            mrr = ranking_metrics(filtered_ranks(_pykeen_scores(model), valid, seen))["mrr"]
            if mrr > self.best_mrr:
                self.best_mrr, self.best_state = mrr, copy.deepcopy(model.state_dict())
            self.bar.set_postfix_str(f"epoch {self.epochs}, valid MRR {mrr:.3f}")
            model.train()
            self.paused += time.perf_counter() - began

        def post_batch(self, epoch: int, batch, **kwargs) -> None:
            trained = self.trained_seconds()
            self.bar.n = min(trained, marks[-1])
            self.bar.refresh()
            while self.pending and trained >= self.pending[0]:
                self.check()
                began = time.perf_counter()
                best = copy.deepcopy(model)
                best.load_state_dict(self.best_state)
                self.recorded.append(Mark(self.pending.pop(0), epoch, best))
                self.paused += time.perf_counter() - began
            if not self.pending:
                raise _BudgetSpent

        def post_epoch(self, epoch: int, epoch_loss: float, **kwargs) -> None:
            self.epochs = epoch
            if epoch % PYKEEN_EPOCHS_PER_CHECK == 0:
                self.check()

    return MarksCallback()


def _pykeen_scores(model):
    @torch.inference_mode()
    def score(anchors: np.ndarray, relations: np.ndarray, inverse: bool) -> np.ndarray:
        model.eval()
        pairs = torch.as_tensor(np.stack([anchors, relations], 1) if not inverse else np.stack([relations, anchors], 1))
        # predict_*, not score_*: with inverse triples the model keeps relation r at row 2r, and predict_h asks
        # the inverse relation; in slices of entities, since RotatE's scores of 512 queries x every entity at
        # once would take gigabytes
        predict = model.predict_h if inverse else model.predict_t
        scores = predict(pairs, slice_size=SCORE_SLICE)
        return scores.numpy()

    return score


#: kgllm's model for graphs of FB15k-237's size (1-N, reciprocal relations, N3; Adagrad)
CURVE_KGE = KGEConfig(
    model="complex", dim=200, batch_size=500, n3_weight=0.05, max_epochs=MAX_PYKEEN_EPOCHS, valid_sample=1000
)
_SMALL_NORMAL = functools.partial(torch.nn.init.normal_, std=CURVE_KGE.init_scale)
CURVE_PYKEEN = (
    PyKEENRecipe("ComplEx", "slcwa"),
    PyKEENRecipe("RotatE", "slcwa"),  # its default loss is RotatE's own: self-adversarial negative sampling
    # kgllm's recipe in PyKEEN's parts: softmax cross-entropy over every entity, N3 (the cubed moduli), Adagrad
    PyKEENRecipe(
        "ComplEx",
        "lcwa",
        batch_size=CURVE_KGE.batch_size,
        loss="crossentropy",
        optimizer="adagrad",
        learning_rate=CURVE_KGE.learning_rate,
        model_kwargs={
            "embedding_dim": CURVE_KGE.dim,
            "entity_initializer": _SMALL_NORMAL,
            "relation_initializer": _SMALL_NORMAL,
            "regularizer": "powersum",
            "regularizer_kwargs": {"p": 3.0, "weight": CURVE_KGE.n3_weight},
        },
        summary="cross-entropy, N3, Adagrad: kgllm's recipe",
    ),
    # 1-N over 14.5k entities: RotatE's batch of 256 would hold ~6 GB of activations; sub-batches of 16 hold ~0.4
    PyKEENRecipe("RotatE", "lcwa", sub_batch_size=16, loss="crossentropy", summary="cross-entropy, Adam"),
)


@dataclass
class CurvePoint:
    model: str
    seconds: float
    epochs: int
    metrics: dict[str, float]


def run_budget_curve(
    data: Path,
    budgets: Sequence[float],
    test_sample: int = 0,
    kge: KGEConfig = CURVE_KGE,
    recipes: Sequence[PyKEENRecipe] = CURVE_PYKEEN,
    progress: bool = True,
) -> Iterator[list[CurvePoint]]:
    """Test figures of kgllm's model and each PyKEEN recipe after each budget (training seconds) of one run per
    model, yielded model by model.

    ``test_sample``: rank a fixed random sample of that many test triples (0: all of them)."""
    splits = Splits.read(data)
    vocabulary = Vocabulary.from_triples(splits.train + splits.valid + splits.test)
    known = np.concatenate([vocabulary.encode(s) for s in (splits.train, splits.valid, splits.test)])
    test = vocabulary.encode(splits.test)
    if 0 < test_sample < len(test):
        test = test[np.sort(np.random.default_rng(0).choice(len(test), test_sample, False))]
    marks = sorted(budgets)
    kgllm_marks: list[Mark] = []
    train_kge(
        splits.train,
        dataclasses.replace(kge, seconds=marks[-1]),
        splits.valid,
        progress,
        vocabulary,
        marks,
        on_mark=lambda seconds, trained: kgllm_marks.append(Mark(seconds, trained.epochs, trained)),
    )
    label = f"kgllm {kge.model} (1-N, reciprocal, N3; dim {kge.dim})"
    yield [
        CurvePoint(label, m.seconds, m.epochs, ranking_metrics(filtered_ranks(m.model.tail_scores, test, known)))
        for m in kgllm_marks
    ]
    for recipe in recipes:
        yield [
            CurvePoint(
                recipe.label, m.seconds, m.epochs, ranking_metrics(filtered_ranks(_pykeen_scores(m.model), test, known))
            )
            for m in train_pykeen(recipe, splits, vocabulary, marks, progress, kge.valid_sample)
        ]


def curve_table(points: Sequence[CurvePoint]) -> list[dict[str, str]]:
    """A row per model; per budget its MRR first, then Hits@1 / 3 / 10 in brackets, and the epochs begun."""
    rows: dict[str, dict[str, str]] = {}
    for p in points:
        row = rows.setdefault(p.model, {"model": p.model})
        hits = " / ".join(f"{p.metrics[f'hits@{k}']:.3f}" for k in (1, 3, 10))
        row[f"{_budget(p.seconds)}: MRR (H@1 / H@3 / H@10)"] = f"{p.metrics['mrr']:.3f} ({hits})"
        row[f"epochs in {_budget(p.seconds)}"] = str(p.epochs)
    return list(rows.values())


def _budget(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def plot_curve(points: Sequence[CurvePoint], path: Path, title: str) -> Path:
    """MRR against training minutes, a line per model, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for model in dict.fromkeys(p.model for p in points):
        mine = [p for p in points if p.model == model]
        axes.plot([p.seconds / 60 for p in mine], [p.metrics["mrr"] for p in mine], marker="o", label=model)
    axes.set(xlabel="training minutes (checks excluded)", ylabel="filtered MRR (test)", title=title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def parse_budgets(text: str) -> list[float]:
    """``"3m,10m"`` or ``"90s,5m"`` -> seconds; every budget names its unit."""
    budgets = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        unit = {"s": 1, "m": 60}.get(part[-1:])
        try:
            value = float(part[:-1]) * unit if unit else None
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise InputError(f"budget {part!r}: write a positive number of seconds or minutes, like 90s or 3m")
        budgets.append(value)
    if not budgets:
        raise InputError("--budgets names no budget; write them like 3m,10m")
    return sorted(set(budgets))


def parse_peers(text: str) -> list[PyKEENRecipe]:
    """``"all"``, ``"none"`` or comma-separated recipe keys -> the PyKEEN recipes to run."""
    keys = [k.strip().lower() for k in text.split(",") if k.strip()]
    if keys == ["all"]:
        return list(CURVE_PYKEEN)
    if keys == ["none"]:
        return []
    known = {recipe.key: recipe for recipe in CURVE_PYKEEN}
    unknown = [k for k in keys if k not in known]
    if unknown or not keys:
        raise InputError(f"--peers {text!r}: write all, none or some of {', '.join(known)}")
    return [known[k] for k in keys]


def curve_report(
    data: Path, budgets: str, test_sample: int, out: Path | None, peers: str = "all"
) -> list[dict[str, str]]:
    """Run :func:`run_budget_curve`, print the table, save it as Markdown and the curve as a PNG beside it
    (model by model: a long run stopped part-way keeps what it measured)."""
    from kgllm.bench.report import print_table

    logging.getLogger("pykeen").setLevel(logging.WARNING)
    tested = f"a fixed random sample of {test_sample:,} test triples" if test_sample else "every test triple"
    points: list[CurvePoint] = []
    recipes = parse_peers(peers)
    for model_points in run_budget_curve(data, parse_budgets(budgets), test_sample, recipes=recipes):
        points += model_points
        if out:
            command = f"kgllm bench complete --data {data} --budgets {budgets}" + (
                f" --test-sample {test_sample}" if test_sample else ""
            )
            command += f" --peers {peers}" if peers != "all" else ""
            _save_curve(points, data.name, command, tested, out)
    rows = curve_table(points)
    print_table(rows, f"link prediction on {data.name} at equal training time (filtered, both directions, {tested})")
    return rows


def _save_curve(points: list[CurvePoint], name: str, command: str, tested: str, out: Path) -> None:
    import os

    from kgllm.bench.report import markdown

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    out.parent.mkdir(parents=True, exist_ok=True)
    plot = plot_curve(points, out.with_suffix(".png"), f"{name}: MRR against training time")
    notes = CURVE_NOTES.format(tested=tested, threads=torch.get_num_threads(), load=load)
    out.write_text(
        f"## Link prediction on {name} against training time\n\n`{command}`\n\n{markdown(curve_table(points))}\n"
        f"{notes}\n\n![MRR]({plot.name})\n",
        encoding="utf-8",
    )


CURVE_NOTES = (
    "One training run per model; at each budget (training seconds; the checks on valid and the test ranking are "
    "not counted) the model's best weights so far on a fixed sample of {valid} valid triples (the same for every "
    "model) are ranked on {tested}, filtered (every known train/valid/test fact removed), both directions, "
    "ties counted half. PyKEEN checks valid every {every} epochs and at each budget; kgllm at the end of every "
    "{kge_every} epochs and at each budget. PyKEEN's RotatE (LCWA) accumulates gradients over sub-batches of 16 "
    "to bound memory. {{threads}} torch threads; load average when saved (1, 5, 15 min): {{load}}."
).format(valid=CURVE_KGE.valid_sample, every=PYKEEN_EPOCHS_PER_CHECK, kge_every=CURVE_KGE.eval_every, tested="{tested}")


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
