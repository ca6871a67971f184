"""How load, index, ask and memory grow with the graph, on the Oxigraph store.

Graphs are generated with a power-law degree distribution (heads and tails drawn
from a Zipf-like law over the entities, so a few hubs carry thousands of edges),
written as N-Triples with a label per entity, and optionally FB15k-237 with its
labels. Each graph is measured in a process of its own, so its peak RSS is its own:

- load: ``kgllm load`` into a fresh Oxigraph folder (parse, check, write in batches);
- index: the retriever's indexes from scratch (entity labels; facts deferred unless asked);
- warm-up: what ``kgllm serve`` does before its first request (``Session.warm_up``: the
  reasoner encodes the relation-path phrases of a few entities' paths, and what is loaded is
  kept out of the garbage collector's walks);
- ask: warm ``ask`` without a language model, p50 and p95 over questions about
  entities drawn by degree (hubs included), and how many got exactly the entities the
  graph holds for that entity and relation;
- the growth exponent of each cost: the slope of log(cost) against log(triples).
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import random
import resource
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kgllm.bench.report import percentile

EX = "https://kgllm.dev/scale/"
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
RELATIONS = (
    "born in", "works for", "member of", "located in", "part of", "capital of", "spouse of", "child of",
    "author of", "directed", "plays for", "studied at", "founded", "owns", "produced", "genre of",
    "speaks", "citizen of", "leader of", "neighbour of", "sibling of", "teacher of", "award won", "released by",
    "written in", "based on", "named after", "successor of", "member of party", "headquartered in",
)  # fmt: skip
SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")  # 70 syllables
ENTITIES_PER_TRIPLE = 0.1  # an average degree of 20 (FB15k-237: 37)
ZIPF_EXPONENT = 0.9
QUESTIONS = 100
WARM_UP = 3
FACT_SAMPLE = 2000  # fact sentences encoded to measure the encoder's throughput


@dataclass
class ScaleResult:
    """What one graph cost."""

    graph: str
    triples: int
    entities: int = 0
    max_degree: int = 0
    load_seconds: float = 0.0
    index_seconds: float = 0.0
    warm_up_seconds: float = 0.0
    ask_seconds: list[float] = field(default_factory=list)
    answered: int = 0
    exact: int = 0
    sampled: int = 0
    peak_rss_mb: float = 0.0
    sentences_per_second: float = 0.0

    def percentile(self, q: float) -> float:
        return percentile(self.ask_seconds, q)

    def row(self) -> dict[str, str]:
        return {
            "graph": self.graph,
            "triples": f"{self.triples:,}",
            "entities": f"{self.entities:,}",
            "largest hub (edges)": f"{self.max_degree:,}",
            "load s": f"{self.load_seconds:.1f}",
            "load triples/s": f"{self.triples / self.load_seconds:,.0f}" if self.load_seconds else "-",
            "index s": f"{self.index_seconds:.1f}",
            "warm-up s": f"{self.warm_up_seconds:.1f}",
            "ask p50 ms": f"{1000 * statistics.median(self.ask_seconds):.0f}" if self.ask_seconds else "-",
            "ask p95 ms": f"{1000 * self.percentile(0.95):.0f}",
            "answered": f"{self.answered}/{len(self.ask_seconds)}",
            "exact answer": f"{self.exact}/{len(self.ask_seconds)}",
            "fan-out sampled": f"{self.sampled}/{len(self.ask_seconds)}",
            "peak RSS MB": f"{self.peak_rss_mb:,.0f}",
            "encoder sentences/s": f"{self.sentences_per_second:,.0f}",
        }


# ------------------------------------------------------------------ graphs
def entity_label(i: int) -> str:
    """A pronounceable name, distinct for every ``i`` ("Bako Demi")."""
    syllables = []
    while True:
        i, digit = divmod(i, len(SYLLABLES))
        syllables.append(SYLLABLES[digit])
        if i == 0:
            break
        i -= 1
    name = "".join(syllables).capitalize()
    return name if len(syllables) < 3 else f"{name[:4]} {name[4:].capitalize()}"


def power_law_graph(triples: int, path: Path, seed: int = 0) -> Path:
    """Write ``triples`` distinct relation triples (Zipf-distributed ends) and a label per entity as N-Triples."""
    rng = np.random.default_rng(seed)
    n = max(10, int(triples * ENTITIES_PER_TRIPLE))
    weights = 1.0 / np.arange(1, n + 1) ** ZIPF_EXPONENT
    weights /= weights.sum()
    relation_weights = 1.0 / np.arange(1, len(RELATIONS) + 1)
    relation_weights /= relation_weights.sum()
    found = np.zeros((0, 3), dtype=np.int64)
    while len(found) < triples:
        draw = int(1.2 * (triples - len(found))) + 100
        rows = np.stack(
            [
                rng.choice(n, draw, p=weights),
                rng.choice(len(RELATIONS), draw, p=relation_weights),
                rng.permutation(rng.choice(n, draw, p=weights)),
            ],
            axis=1,
        )
        rows = rows[rows[:, 0] != rows[:, 2]]
        found = np.unique(np.concatenate([found, rows]), axis=0)
    found = found[rng.permutation(len(found))[:triples]]
    with open(path, "w", encoding="utf-8") as out:
        for i in range(len(RELATIONS)):
            out.write(f'<{EX}r{i}> <{RDFS_LABEL}> "{RELATIONS[i]}" .\n')
        for i in np.unique(found[:, [0, 2]]).tolist():
            out.write(f'<{EX}e{i}> <{RDFS_LABEL}> "{entity_label(i)}" .\n')
        for h, r, t in found.tolist():
            out.write(f"<{EX}e{h}> <{EX}r{r}> <{EX}e{t}> .\n")
    return path


def fb15k237_graph(data: Path, path: Path) -> Path:
    """FB15k-237's training triples with its entity and relation texts, as N-Triples."""

    def iri(mid: str) -> str:
        return f"<{EX}fb{mid.replace('/', '.')}>"

    def literal(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    with open(path, "w", encoding="utf-8") as out:
        for name in ("entity2text.txt", "relation2text.txt"):
            for line in (data / name).read_text(encoding="utf-8").splitlines():
                key, _, text = line.partition("\t")
                if text.strip():
                    out.write(f"{iri(key)} <{RDFS_LABEL}> {literal(text.strip())} .\n")
        for line in (data / "train.txt").read_text(encoding="utf-8").splitlines():
            h, r, t = line.split("\t")
            out.write(f"{iri(h)} {iri(r)} {iri(t)} .\n")
    return path


# ------------------------------------------------------------------ measuring
def _questions(store, count: int, seed: int = 0) -> list[tuple[str, set[str]]]:
    """Questions naming an entity (drawn by degree, so hubs come up) and one of its relations, each
    with the entities the graph holds for them."""
    rng = random.Random(seed)
    edges = list(store.triples())
    picked = [edges[rng.randrange(len(edges))] for _ in range(count)]
    return [
        (
            f"What is the {store.label(t.relation)} of {store.label(t.head)}?",
            {fact.tail for fact in store.triples(head=t.head, relation=t.relation)},
        )
        for t in picked
    ]


def _degree(store) -> int:
    counts: Counter[str] = Counter()
    for t in store.triples():
        counts[t.head] += 1
        counts[t.tail] += 1
    return max(counts.values()) if counts else 0


def measure(name: str, graph_file: Path, work: Path, index_facts: bool, beam: int) -> ScaleResult:
    """Load, index and ask one graph; call in a process of its own (its peak RSS is the graph's)."""
    import torch

    from kgllm.api import connect
    from kgllm.graph.loaders import load_report
    from kgllm.graph.oxigraph_store import OxigraphStore
    from kgllm.retrieval.encoder import SentenceTransformerEncoder
    from kgllm.settings import Settings

    torch.set_num_threads(2)
    encoder = SentenceTransformerEncoder()
    encoder.encode(["warm up the encoder"])
    store = OxigraphStore(work / "graph")
    report = load_report(store, graph_file)
    result = ScaleResult(name, store.count_triples(), load_seconds=report.seconds)
    settings = Settings(
        cache_dir=work / "cache", index_facts=index_facts, graph=work / "graph", store="oxigraph", beam_width=beam
    )
    started = time.perf_counter()
    session = connect(store, use_model=False, settings=settings, encoder=encoder, progress=False)
    result.index_seconds = time.perf_counter() - started
    started = time.perf_counter()
    session.warm_up()
    result.warm_up_seconds = time.perf_counter() - started
    result.entities = store.count_entities()
    result.max_degree = _degree(store)
    questions = _questions(store, WARM_UP + QUESTIONS)
    for question, _ in questions[:WARM_UP]:
        session.ask(question)
    for question, gold in questions[WARM_UP:]:
        started = time.perf_counter()
        answer = session.ask(question)
        result.ask_seconds.append(time.perf_counter() - started)
        result.answered += bool(answer.entities)
        result.exact += {e.id for e in answer.entities} == gold
        result.sampled += bool(answer.metadata.get("fanout_sampled"))
    facts = [f"{store.label(t.head)} {store.label(t.relation)} {store.label(t.tail)}" for t in store.triples()]
    sample = random.Random(1).sample(facts, min(FACT_SAMPLE, len(facts)))
    started = time.perf_counter()
    encoder.encode(sample)
    result.sentences_per_second = len(sample) / (time.perf_counter() - started)
    store.close()
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _measure_in_child(queue, *args) -> None:
    try:
        queue.put(asdict(measure(*args)))
    except BaseException as exc:
        queue.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def measured_apart(name: str, graph_file: Path, work: Path, index_facts: bool, beam: int) -> ScaleResult:
    """:func:`measure` in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_measure_in_child, args=(queue, name, graph_file, work, index_facts, beam))
    child.start()
    outcome = queue.get()
    child.join()
    if "error" in outcome:
        raise RuntimeError(f"measuring {name} failed: {outcome['error']}")
    return ScaleResult(**outcome)


def growth_exponents(results: list[ScaleResult]) -> dict[str, float]:
    """The log-log slope of each cost against the number of triples, over the generated graphs
    (none below two sizes)."""
    results = [r for r in results if r.graph.startswith("power law")]
    if len({r.triples for r in results}) < 2:
        return {}
    costs: dict[str, Callable[[ScaleResult], float]] = {
        "load": lambda r: r.load_seconds,
        "index": lambda r: r.index_seconds,
        "ask p95": lambda r: r.percentile(0.95),
        "peak RSS": lambda r: r.peak_rss_mb,
    }
    sizes = [math.log(r.triples) for r in results]
    return {
        name: float(np.polyfit(sizes, [math.log(max(cost(r), 1e-6)) for r in results], 1)[0])
        for name, cost in costs.items()
    }


def run_scale_benchmark(
    sizes: list[int],
    fb15k237: Path | None,
    index_facts: bool = False,
    beam: int = 5,
    progress: Callable[[str], None] = print,
    measured: Callable[[list[ScaleResult]], object] = lambda results: None,
) -> list[ScaleResult]:
    """Generated graphs of ``sizes`` triples (and FB15k-237 when given), each measured apart;
    ``measured`` is called with the results so far after each graph."""
    results = []
    with tempfile.TemporaryDirectory(prefix="kgllm-scale-") as tmp:
        graphs: list[tuple[str, Callable[[Path], Path]]] = [
            (f"power law {size:,}", functools.partial(power_law_graph, size)) for size in sorted(sizes)
        ]
        if fb15k237 is not None:
            graphs.append(("FB15k-237 (train, labelled)", functools.partial(fb15k237_graph, fb15k237)))
        for number, (name, write) in enumerate(graphs):
            work = Path(tmp) / f"g{number}"
            work.mkdir()
            progress(f"{name}: writing the graph")
            graph_file = write(work / "graph.nt")
            progress(f"{name}: loading, indexing, asking")
            results.append(measured_apart(name, graph_file, work, index_facts, beam))
            progress(f"{name}: {results[-1].row()}")
            measured(results)
    return results


def load_average() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
