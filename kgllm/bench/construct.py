"""Benchmarks of graph construction and verbalization.

* Text -> triples on WebNLG dev: micro precision, recall and F1 over each entry's
  triple set, with two matchings: ``strict`` (each element the same string,
  underscores read as spaces) and ``exact`` (the same after case, punctuation and
  camelCase are folded). One reference text per entry is the input.
* Triples -> text on WebNLG dev: BLEU and chrF++ (sacrebleu) against every reference.
* Entity resolution: demo-graph entity names perturbed (case, underscores,
  abbreviations, typos) and resolved against the demo graph with a fifth of its
  entities held out; a held-out name that merges anywhere is a false merge.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from kgllm.datasets.webnlg import Example, read_webnlg
from kgllm.exceptions import MissingDependencyError
from kgllm.graph.base import GraphStore
from kgllm.pipelines.construction.resolution import EntityResolver, acronym, new_entity_id

_PUNCT = re.compile(r"[^\w\s]|_")


def spaced_subset(examples: list[Example], size: int | None) -> list[Example]:
    """``size`` entries spread evenly over the file (it is sorted by category), or all."""
    if not size or size >= len(examples):
        return examples
    step = len(examples) / size
    return [examples[int(i * step)] for i in range(size)]


def fold(text: str) -> str:
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def prf(predicted: list[set], gold: list[set]) -> tuple[float, float, float]:
    hits = sum(len(p & g) for p, g in zip(predicted, gold))
    n_pred, n_gold = sum(map(len, predicted)), sum(map(len, gold))
    precision = hits / n_pred if n_pred else 0.0
    recall = hits / n_gold if n_gold else 0.0
    return precision, recall, 2 * precision * recall / (precision + recall) if hits else 0.0


@dataclass
class ExtractionResult:
    label: str
    model: str
    entries: int
    strict: tuple[float, float, float]
    exact: tuple[float, float, float]
    subject: tuple[float, float, float]  # subjects alone, exact matching: where a weak model starts
    seconds: float
    training: str

    def row(self) -> dict[str, str]:
        return {
            "mode": self.label,
            "entries": str(self.entries),
            "strict P / R / F1": " / ".join(f"{x:.3f}" for x in self.strict),
            "exact P / R / F1": " / ".join(f"{x:.3f}" for x in self.exact),
            "subjects F1 (exact)": f"{self.subject[2]:.3f}",
            "sentences/s": f"{self.entries / self.seconds:.2f}",
            "model": self.model,
            "training (min)": self.training,
        }


def run_extraction_benchmark(
    extractor, examples: list[Example], label: str, training: str, model: str
) -> ExtractionResult:
    texts = [e.texts[0] for e in examples]
    started = time.perf_counter()
    found = []
    for start in tqdm(range(0, len(texts), extractor.batch_size), desc=f"extracting ({label})", unit="batch"):
        found += extractor.extract(texts[start : start + extractor.batch_size])
    seconds = time.perf_counter() - started
    gold = [set(e.triples) for e in examples]
    predicted = [{(t.subject, t.relation, t.object) for t in triples} for triples in found]

    def folded(sets: list[set]) -> list[set]:
        return [{tuple(fold(x) for x in t) for t in s} for s in sets]

    def subjects(sets: list[set]) -> list[set]:
        return [{fold(t[0]) for t in s} for s in sets]

    return ExtractionResult(
        label,
        model,
        len(examples),
        prf(predicted, gold),
        prf(folded(predicted), folded(gold)),
        prf(subjects(predicted), subjects(gold)),
        seconds,
        training,
    )


class TemplateVerbalizer:
    """The reference point: one plain sentence per triple (``kg2text.fact_sentence``)."""

    batch_size = 64

    def verbalize(self, triple_sets) -> list[str]:
        from kgllm.pipelines.construction.kg2text import fact_sentence

        return [" ".join(fact_sentence(*t) for t in triples) for triples in triple_sets]


def run_verbalization_benchmark(verbalizer, examples: list[Example], training: str, model: str) -> dict[str, str]:
    """Verbalize every example's triples and score the texts against all references: BLEU and chrF++.

    Needs sacrebleu, which the ``bench`` extra installs.
    """
    try:
        from sacrebleu.metrics import BLEU, CHRF
    except ImportError as exc:
        raise MissingDependencyError('the verbalization benchmark needs sacrebleu: pip install "kgllm[bench]"') from exc

    started = time.perf_counter()
    hypotheses = []
    for start in tqdm(range(0, len(examples), verbalizer.batch_size), desc="verbalizing", unit="batch"):
        hypotheses += verbalizer.verbalize([e.triples for e in examples[start : start + verbalizer.batch_size]])
    seconds = time.perf_counter() - started
    width = max(len(e.texts) for e in examples)
    references = [[e.texts[i] if i < len(e.texts) else None for e in examples] for i in range(width)]
    return {
        "entries": str(len(examples)),
        # sacrebleu takes None for an entry's missing reference; its annotations do not say so
        "BLEU": f"{BLEU().corpus_score(hypotheses, references).score:.2f}",  # type: ignore[arg-type]
        "chrF++": f"{CHRF(word_order=2).corpus_score(hypotheses, references).score:.2f}",  # type: ignore[arg-type]
        "entries/s": f"{len(examples) / seconds:.2f}",
        "model": model,
        "training (min)": training,
        "example": hypotheses[0],
    }


# ------------------------------------------------------------------ resolution
ABBREVIATIONS = {
    "saint": "St.",
    "republic": "Rep.",
    "islands": "Is.",
    "island": "I.",
    "democratic": "Dem.",
    "united": "Utd.",
    "northern": "N.",
    "southern": "S.",
    "eastern": "E.",
    "western": "W.",
}


def perturbations(name: str, rng: random.Random) -> dict[str, str]:
    """Ways of writing ``name`` wrongly: case, underscores, an abbreviation, a typo (those that apply)."""
    found = {"case": name.upper() if rng.random() < 0.5 else name.lower(), "underscores": name.replace(" ", "_")}
    words = name.split()
    if len(words) > 1 and len(acronym(name)) > 1:
        found["abbreviation"] = acronym(name)
    elif any(w.lower() in ABBREVIATIONS for w in words):
        found["abbreviation"] = " ".join(ABBREVIATIONS.get(w.lower(), w) for w in words)
    if len(name) >= 6:
        i = rng.randrange(1, len(name) - 2)
        kind = rng.choice(["swap", "drop", "double"])
        typo = {
            "swap": name[:i] + name[i + 1] + name[i] + name[i + 2 :],
            "drop": name[:i] + name[i + 1 :],
            "double": name[:i] + name[i] + name[i:],
        }[kind]
        if typo != name:
            found["typo"] = typo
    return {kind: text for kind, text in found.items() if text != name}


def resolution_benchmark(
    store: GraphStore,
    encoder,
    held_out_share: float = 0.2,
    seed: int = 0,
    make_store: Callable[[], GraphStore] | None = None,
) -> list[dict[str, str]]:
    """Merge precision and recall per kind of perturbation; rows for the table."""
    from kgllm.graph.rdflib_store import RDFLibStore

    rng = random.Random(seed)
    entities = sorted(store.entities(), key=lambda e: e.id)
    held_out = {e.id for e in rng.sample(entities, int(held_out_share * len(entities)))}
    kept = (make_store or RDFLibStore)()
    kept.add(
        [t for t in store.triples() if t.head not in held_out and t.tail not in held_out],
        [e for e in entities if e.id not in held_out],
    )
    resolver = EntityResolver(kept, encoder)
    counts: dict[str, list[int]] = {}  # kind -> [mentions in store, right merges, wrong merges, held-out mentions]
    for e in tqdm(entities, desc="resolving perturbed names", unit="entity"):
        for kind, mention in perturbations(e.label, rng).items():
            target = resolver.resolve([mention])[mention]
            merged = target.entity != new_entity_id(mention)
            row = counts.setdefault(kind, [0, 0, 0, 0])
            if e.id in held_out:
                row[3] += 1
                row[2] += merged
            else:
                row[0] += 1
                row[1] += merged and target.entity == e.id
                row[2] += merged and target.entity != e.id
    counts["all"] = [sum(r[i] for r in counts.values()) for i in range(4)]
    rows = []
    for kind, (positives, right, wrong, negatives) in counts.items():
        rows.append(
            {
                "perturbation": kind,
                "names in graph": str(positives),
                "held-out names": str(negatives),
                "merge precision": f"{right / (right + wrong):.3f}" if right + wrong else "-",
                "merge recall": f"{right / positives:.3f}" if positives else "-",
                "wrong merges": str(wrong),
            }
        )
    return rows


# ------------------------------------------------------------------ reports
def _model_description(lm) -> str:
    return f"{lm.model_type} {lm.num_parameters / 1e6:.1f} M + LoRA"


def _training_minutes(base: Path, adapter: Path) -> str:
    """Minutes of pre-training the base (when kgllm trained it) and of training the adapter."""
    from kgllm.llm.tuning import RESULT_FILE
    from kgllm.pipelines.construction.adapters import training_record

    adapter_minutes = f"{training_record(adapter).seconds / 60:.1f} adapter"
    if not (Path(base) / RESULT_FILE).is_file():
        return adapter_minutes
    return f"{training_record(base).seconds / 60:.1f} base + {adapter_minutes}"


def webnlg_report(
    dev: Path, train: Path | None, size: int | None, tasks: list[str], settings, out: Path | None
) -> None:
    """Run the WebNLG benchmarks named in ``tasks`` ('extract', 'verbalize') with the adapters trained
    on ``train`` (``None``: the shipped ones), print and save the tables."""
    from kgllm.bench.report import markdown, print_table
    from kgllm.llm.adapters import load_adapted
    from kgllm.pipelines.construction.adapters import known_relations, task_model
    from kgllm.pipelines.construction.extraction import EXTRACTION_TRAINING, Extractor, extraction_examples
    from kgllm.pipelines.construction.kg2text import VERBALIZE_TRAINING, Verbalizer, verbalize_examples

    examples = spaced_subset(read_webnlg(dev), size)
    relations = known_relations(train)
    subset = f"{len(examples)} of the dev entries, evenly spaced" if size else "every dev entry"
    sections = []
    if "extract" in tasks:
        base, adapter = task_model("extract", train, extraction_examples, EXTRACTION_TRAINING, settings)
        lm = load_adapted(base, adapter, threads=settings.threads)
        minutes = _training_minutes(base, adapter)
        rows = [
            run_extraction_benchmark(Extractor(lm), examples, "free relations", minutes, _model_description(lm)).row(),
            run_extraction_benchmark(
                Extractor(lm, relations),
                examples,
                f"relations held to train's {len(relations)}",
                minutes,
                _model_description(lm),
            ).row(),
        ]
        print_table(rows, "WebNLG text -> triples")
        sections.append(("WebNLG text -> triples", rows))
    if "verbalize" in tasks:
        base, adapter = task_model("verbalize", train, verbalize_examples, VERBALIZE_TRAINING, settings)
        lm = load_adapted(base, adapter, threads=settings.threads)
        rows = [
            run_verbalization_benchmark(
                Verbalizer(lm, relations), examples, _training_minutes(base, adapter), _model_description(lm)
            ),
            run_verbalization_benchmark(TemplateVerbalizer(), examples, "-", "template: one sentence per triple"),
        ]
        print_table(rows, "WebNLG triples -> text")
        sections.append(("WebNLG triples -> text", rows))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        command = f"kgllm bench webnlg --dev {dev} --size {size or 0} --tasks {','.join(tasks)}"
        text = "".join(
            f"## {title}\n\n`{command}` ({subset}; shared 2-core CPU)\n\n{markdown(rows)}\n" for title, rows in sections
        )
        out.write_text(text, encoding="utf-8")
