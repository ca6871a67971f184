"""Closed-book vs facts injected, measured: does putting graph facts in the prompt beat the model's memory?

Question sets:

- *held-out facts*: ``What is <head> <relation>?`` for facts held out of a knowledge-injection
  pre-training (:func:`~kgllm.llm.tuning.knowledge_texts`, 10 % of the facts), gold = every tail the
  graph holds for that head and relation;
- the demo's question sets (``demo_qa``, ``demo_qa_heldout``).

Conditions: the default model closed-book (its corpus holds every fact of the graph); a model
pre-trained from scratch on the graph's text without the held-out facts (knowledge injection),
closed-book; and generate mode (the reader: the default model trained to cite facts,
:mod:`kgllm.pipelines.enhance.reading`, answering from the facts retrieved and injected).

Metrics, over the questions of a set:

- *exact*: the answer's entity set equals the gold set (an empty gold set: the answer declines);
- *answers in prompt*: of the questions with answers that reached the model with facts, the share
  whose every answer is an end of a numbered fact (what a perfect reader could answer: retrieval's
  recall);
- *citation precision*: of the (item, cited fact) pairs, the share whose fact holds the entity the
  item names;
- *uncited names*: of the entity names in the answers, the share that no fact the answer cites
  contains (closed-book answers cite nothing, so every name counts): the hallucination rate.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from kgllm.bench.ask import read_questions
from kgllm.exceptions import ModelOutputError
from kgllm.graph.base import GraphStore
from kgllm.graph.labels import local_name
from kgllm.types import Answer

HELD_OUT_QUESTIONS = 100


@dataclass
class InjectResult:
    """Tallies of one condition on one question set."""

    condition: str
    question_set: str
    total: int = 0
    exact: int = 0
    citations: int = 0
    precise_citations: int = 0
    names: int = 0
    uncited_names: int = 0
    unusable: int = 0
    prompted: int = 0
    answers_in_facts: int = 0
    seconds: list[float] = field(default_factory=list)

    def add(self, answer: Answer | None, gold: list[str], seconds: float) -> None:
        self.total += 1
        self.seconds.append(seconds)
        if answer is None:  # the model's text could not be read as an answer
            self.unusable += 1
            return
        self.exact += sorted(local_name(e.id) for e in answer.entities) == sorted(gold)
        facts = {
            f["n"]: [t for p in f["paths"] for t in p["triples"]] if "paths" in f else [f["triple"]]
            for f in answer.metadata.get("facts", [])
        }
        if facts and gold:  # could a perfect reader have answered from the prompt?
            ends = {local_name(node) for item in facts.values() for t in item for node in (t[0], t[2])}
            self.prompted += 1
            self.answers_in_facts += set(gold) <= ends
        for item in answer.metadata.get("items", []) or _closed_book_items(answer):
            if not item["name"]:
                continue
            cited = [t for n in item["citations"] if n in facts for t in facts[n]]
            names = {answer.label(node).casefold() for t in cited for node in (t[0], t[2])}
            names |= {_store_label(answer, node) for t in cited for node in (t[0], t[2])}
            holds = item["name"].strip().casefold() in names
            self.names += 1
            self.uncited_names += not holds
            self.citations += len(cited)
            self.precise_citations += len(cited) if holds else 0

    def row(self) -> dict[str, str]:
        def pct(part: int, whole: int) -> str:
            return f"{100 * part / whole:.1f}%" if whole else "-"

        return {
            "questions": self.question_set,
            "condition": self.condition,
            "n": str(self.total),
            "exact": pct(self.exact, self.total),
            "answers in prompt": pct(self.answers_in_facts, self.prompted),
            "citation precision": pct(self.precise_citations, self.citations),
            "uncited names": pct(self.uncited_names, self.names),
            "unusable output": str(self.unusable),
            "p50 ms": f"{1000 * statistics.median(self.seconds):.0f}" if self.seconds else "-",
        }


def _closed_book_items(answer: Answer) -> list[dict]:
    """A closed-book answer's names (it cites nothing)."""
    from kgllm.pipelines.enhance.prompt import parse_answer

    if not answer.metadata.get("closed_book"):
        return []
    return [{"name": i.name, "citations": []} for i in parse_answer(answer.metadata.get("generated", "")).items]


def _store_label(answer: Answer, node: str) -> str:
    return answer.labels.get(node, "").casefold()


def held_out_questions(store: GraphStore, limit: int = HELD_OUT_QUESTIONS) -> list[dict]:
    """``What is <head> <relation>?`` for the held-out facts of :func:`knowledge_texts` (seed 0)."""
    from kgllm.llm.tuning import knowledge_texts

    held = knowledge_texts(store, hops=2, held_out=0.1, seed=0).held_out_triples
    tails: dict[tuple[str, str], set[str]] = defaultdict(set)
    for t in store.triples():
        tails[(t.head, t.relation)].add(t.tail)
    questions = []
    for head, relation in list(dict.fromkeys((t.head, t.relation) for t in held))[:limit]:
        questions.append(
            {
                "question": f"What is {store.label(head)} {store.label(relation)}?",
                "answers": sorted(local_name(n) for n in tails[(head, relation)]),
            }
        )
    return questions


def spread(items: list[dict], limit: int | None) -> list[dict]:
    """At most ``limit`` items taken at even steps through ``items`` (all of them without a limit)."""
    if not limit or len(items) <= limit:
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def run_condition(
    name: str, set_name: str, ask: Callable[[str], Answer], questions: list[dict], progress: bool = True
) -> InjectResult:
    result = InjectResult(name, set_name)
    for item in tqdm(questions, desc=f"{set_name}: {name}", disable=not progress):
        started = time.perf_counter()
        try:
            answer: Answer | None = ask(item["question"])
        except ModelOutputError:
            answer = None
        result.add(answer, item["answers"], time.perf_counter() - started)
    return result


def injected_model(store: GraphStore, root: Path, minutes: float) -> Path:
    """A model pre-trained from scratch on the graph's text without the held-out facts (knowledge injection)."""
    from kgllm.llm.default import CORPUS_SEED, default_training_config
    from kgllm.llm.tuning import RunConfig, knowledge_texts, pretrain
    from kgllm.settings import Settings

    texts = knowledge_texts(store, hops=2, held_out=0.1, seed=0)
    config = default_training_config(Settings())
    run = RunConfig(
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        epochs=None,
        max_minutes=minutes,
        warmup_steps=50,
        lr_schedule="cosine",
        min_lr_ratio=0.1,
        adam_beta2=0.95,
        length_buckets=True,
        threads=Settings().threads,
        save_steps=100_000,
        seed=CORPUS_SEED,
    )
    pretrain(texts.train, root / "injected", model_config=config, run=run, progress=False)
    return root / "injected"


def run_inject_benchmark(
    session, sets: list[Path], minutes: float, reader_minutes: float, limit: int | None = None, progress: bool = True
) -> list[dict[str, str]]:
    """One row per (question set, condition); ``minutes`` trains the knowledge-injected model,
    ``reader_minutes`` the reader (once: it is cached); ``limit`` asks that many questions of each set,
    spread evenly over it (a set lists its questions kind by kind)."""
    from kgllm.llm import open_model
    from kgllm.pipelines.enhance import READER_TEMPLATE, GenerationAnswerer
    from kgllm.pipelines.enhance.reading import ReaderConfig, ensure_reader_model

    question_sets = [("held-out facts", held_out_questions(session.store))]
    question_sets += [(path.stem, read_questions(path)) for path in sets]
    question_sets = [(name, spread(items, limit)) for name, items in question_sets]
    rows = []
    with tempfile.TemporaryDirectory(prefix="kgllm-inject-") as root:
        injected = open_model(injected_model(session.store, Path(root), minutes), settings=session.settings)
        store, retriever, reasoner = session.store, session.retriever, session.reasoner

        def closed_book(lm) -> Callable[[str], Answer]:
            answerer = GenerationAnswerer(store, retriever, lm, template=READER_TEMPLATE)
            return lambda q: answerer.answer(q, closed_book=True)

        reader = GenerationAnswerer(store, retriever, None, READER_TEMPLATE, paths=reasoner)
        reader_dir = ensure_reader_model(reader, session.settings, ReaderConfig(minutes=reader_minutes), progress)
        reader = reader.with_model(open_model(reader_dir, settings=session.settings))
        conditions: list[tuple[str, Callable[[str], Answer]]] = [
            ("closed-book: default model (trained on every fact)", closed_book(session.lm)),
            ("closed-book: knowledge-injected, held-out facts unseen", closed_book(injected)),
            (f"facts injected: generate mode (reader, {reader_minutes:g} min)", reader.answer),
        ]
        for set_name, questions in question_sets:
            for name, ask in conditions:
                rows.append(run_condition(name, set_name, ask, questions, progress).row())
    return rows
