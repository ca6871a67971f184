"""Question shapes beyond relation chains, on the demo graph: count, yes/no, set operations,
superlatives, comparisons, chains with filters, and questions the graph cannot answer.

Questions are generated from templates over entities drawn (with a fixed seed) from the demo
graph; every gold answer is computed here directly from the graph's facts, independently of
the program language. Templates come in *families* (paraphrases of one shape); the split is
by family: family 0 is ``train``, 1 is ``dev`` (both used while developing the parser) and
2 is ``test``, whose phrasings were not looked at during development.

A question is *fully correct* when the answer equals the gold exactly (the full set, the
number, yes/no), or, for a question the graph cannot answer, when it is refused. *Confidently
wrong* is a wrong answer given with confidence of at least 0.5.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgllm.graph.base import GraphStore
from kgllm.graph.labels import local_name
from kgllm.types import Answer

SPLITS = ("train", "dev", "test")
PER_TEMPLATE = 4  # questions drawn per template

# shape -> families -> templates. Slots: {a} {b} countries, {s} a subregion, {r} a region.
# Each template names the kind of gold it needs (see _Gold).
TEMPLATES: dict[str, list[list[tuple[str, str]]]] = {
    "count": [
        [("How many neighbours does {a} have?", "count_nb"), ("How many countries are in {s}?", "count_in")],
        [
            ("What is the number of countries bordering {a}?", "count_nb"),
            ("Count the countries located in {s}.", "count_in"),
        ],
        [
            ("How many nations share a border with {a}?", "count_nb"),
            ("What number of countries belong to {s}?", "count_in"),
        ],
    ],
    "exists-yes": [
        [("Does {a} border {b}?", "nb_yes"), ("Is {a} in {s}?", "in_yes")],
        [("Is {a} a neighbour of {b}?", "nb_yes"), ("Is {a} located in {s}?", "in_yes")],
        [("Are {a} and {b} neighbours?", "nb_yes"), ("Does {a} belong to {s}?", "in_yes")],
    ],
    "exists-no": [
        [("Does {a} border {b}?", "nb_no"), ("Is {a} in {s}?", "in_no")],
        [("Is {a} a neighbour of {b}?", "nb_no"), ("Is {a} located in {s}?", "in_no")],
        [("Are {a} and {b} neighbours?", "nb_no"), ("Does {a} belong to {s}?", "in_no")],
    ],
    "intersection": [
        [
            ("Which countries neighbour both {a} and {b}?", "inter"),
            ("Which countries border both {a} and {b}?", "inter"),
        ],
        [
            ("Which countries are neighbours of both {a} and {b}?", "inter"),
            ("What countries border {a} and {b}?", "inter"),
        ],
        [
            ("Name the countries that share a border with both {a} and {b}.", "inter"),
            ("Which nations are next to both {a} and {b}?", "inter"),
        ],
    ],
    "difference": [
        [
            ("Which neighbours of {a} are not in {s}?", "diff_in"),
            ("Which countries border {a} but not {b}?", "diff_nb"),
        ],
        [
            ("Which countries bordering {a} are not located in {s}?", "diff_in"),
            ("Which neighbours of {a} are not neighbours of {b}?", "diff_nb"),
        ],
        [
            ("List the neighbours of {a} except those in {s}.", "diff_in"),
            ("Which countries are next to {a} but not next to {b}?", "diff_nb"),
        ],
    ],
    "argmax": [
        [
            ("Which country in {s} has the most neighbours?", "max_in"),
            ("Which 3 countries in {r} have the most neighbours?", "top3_in"),
        ],
        [
            ("What country in {s} borders the most countries?", "max_in"),
            ("Name the three countries in {r} with the most neighbours.", "top3_in"),
        ],
        [
            ("Which country located in {s} has the greatest number of neighbours?", "max_in"),
            ("Which 3 nations in {r} share a border with the most countries?", "top3_in"),
        ],
    ],
    "argmin": [
        [
            ("Which country in {s} has the fewest neighbours?", "min_in"),
            ("Which country in {s} has the least neighbours?", "min_in"),
        ],
        [
            ("What country in {s} borders the fewest countries?", "min_in"),
            ("Which country of {s} has the fewest neighbours?", "min_in"),
        ],
        [
            ("Which country located in {s} has the smallest number of neighbours?", "min_in"),
            ("Which nation in {s} shares a border with the fewest countries?", "min_in"),
        ],
    ],
    "comparison": [
        [("Does {a} have more neighbours than {b}?", "more"), ("Does {a} have fewer neighbours than {b}?", "fewer")],
        [("Does {a} border more countries than {b}?", "more"), ("Does {a} border fewer countries than {b}?", "fewer")],
        [
            ("Has {a} got more neighbours than {b}?", "more"),
            ("Does {a} share a border with fewer countries than {b}?", "fewer"),
        ],
    ],
    "chain": [
        [("Which countries border {a}?", "nb"), ("In which subregion is {a}?", "subregion")],
        [("What are the neighbours of {a}?", "nb"), ("Which subregion is {a} located in?", "subregion")],
        [
            ("Name the countries that share a border with {a}.", "nb"),
            ("Which subregion does {a} belong to?", "subregion"),
        ],
    ],
    "chain+filter": [
        [("Which neighbours of {a} are in {s}?", "nb_in"), ("Which countries in {s} border {a}?", "nb_in")],
        [
            ("Which countries bordering {a} are located in {s}?", "nb_in"),
            ("What countries of {s} are neighbours of {a}?", "nb_in"),
        ],
        [
            ("Name the neighbours of {a} that belong to {s}.", "nb_in"),
            ("Which nations in {s} share a border with {a}?", "nb_in"),
        ],
    ],
    "count+intersection": [
        [
            ("How many countries border both {a} and {b}?", "count_inter"),
            ("How many neighbours do {a} and {b} have in common?", "count_inter"),
        ],
        [
            ("What is the number of countries that neighbour both {a} and {b}?", "count_inter"),
            ("How many countries are neighbours of both {a} and {b}?", "count_inter"),
        ],
        [
            ("How many nations share a border with both {a} and {b}?", "count_inter"),
            ("Count the countries next to both {a} and {b}.", "count_inter"),
        ],
    ],
    "superlative+hop": [
        [
            ("Which subregion is the country in {r} with the most neighbours in?", "sub_of_max"),
            ("Which subregion is the country in {r} with the fewest neighbours in?", "sub_of_min"),
        ],
        [
            ("In which subregion is the country of {r} with the most neighbours?", "sub_of_max"),
            ("In which subregion is the country of {r} with the fewest neighbours?", "sub_of_min"),
        ],
        [
            ("Which subregion contains the country in {r} that has the most neighbours?", "sub_of_max"),
            ("Which subregion contains the country in {r} that has the fewest neighbours?", "sub_of_min"),
        ],
    ],
    "unanswerable": [
        [("What is the capital of {a}?", "refuse"), ("Is {a} larger than {b}?", "refuse")],
        [("What language is spoken in {a}?", "refuse"), ("Who is the president of {a}?", "refuse")],
        [("What is the population of {a}?", "refuse"), ("Which currency does {a} use?", "refuse")],
    ],
}


@dataclass
class ShapeQuestion:
    """One generated question with its gold answer (a set of local names, a number, a truth value, or refusal)."""

    id: str
    question: str
    shape: str
    family: int
    split: str
    kind: str
    gold: Any

    def to_dict(self) -> dict[str, Any]:
        gold = sorted(self.gold) if isinstance(self.gold, (set, frozenset)) else self.gold
        return {k: (gold if k == "gold" else v) for k, v in self.__dict__.items()}


class _Gold:
    """The demo graph's facts as plain sets, for gold answers computed without the program language."""

    def __init__(self, store: GraphStore):
        self.label: dict[str, str] = {}
        self.types: dict[str, set[str]] = defaultdict(set)
        for e in store.entities():
            self.label[e.id] = e.label
            self.types[e.id] = {local_name(t) for t in e.types}
        self.nb: dict[str, set[str]] = defaultdict(set)
        self.loc: dict[str, set[str]] = defaultdict(set)
        for t in store.triples():
            if local_name(t.relation) == "neighborOf":
                self.nb[t.head].add(t.tail)
                self.nb[t.tail].add(t.head)
            elif local_name(t.relation) == "locatedIn":
                self.loc[t.head].add(t.tail)
        self.of = lambda cls: sorted(e for e, ts in self.types.items() if cls in ts)
        self.countries = self.of("Country")
        self.subregions = self.of("Subregion")
        self.regions = self.of("Region")

    def members(self, place: str) -> set[str]:
        return {c for c in self.countries if place in self.loc[c]}

    def subregion(self, country: str) -> set[str]:
        return {p for p in self.loc[country] if "Subregion" in self.types[p]}

    def ranked(self, pool: set[str], order: str, k: int = 1) -> set[str]:
        sign = -1 if order == "max" else 1
        ranked = sorted(pool, key=lambda c: (sign * len(self.nb[c]), c))
        if len(ranked) <= k:
            return set(ranked)
        boundary = len(self.nb[ranked[k - 1]])
        return {c for i, c in enumerate(ranked) if i < k or len(self.nb[c]) == boundary}


def _draw(g: _Gold, kind: str, rng: random.Random) -> tuple[dict[str, str], Any] | None:
    """Slots and gold for one question of ``kind``, or None when the draw does not fit."""
    bordered = [c for c in g.countries if g.nb[c]]
    a = rng.choice(bordered)
    s = rng.choice(g.subregions)
    r = rng.choice(g.regions)
    match kind:
        case "count_nb":
            return {"a": a}, len(g.nb[a])
        case "count_in":
            return {"s": s}, len(g.members(s))
        case "nb_yes":
            return {"a": a, "b": rng.choice(sorted(g.nb[a]))}, True
        case "nb_no":
            near = sorted({y for x in g.nb[a] for y in g.nb[x]} - g.nb[a] - {a})
            return ({"a": a, "b": rng.choice(near)}, False) if near else None
        case "in_yes":
            return {"a": a, "s": rng.choice(sorted(g.subregion(a)))}, True
        case "in_no":
            others = sorted({p for x in g.nb[a] for p in g.subregion(x)} - g.subregion(a))
            return ({"a": a, "s": rng.choice(others)}, False) if others else None
        case "inter" | "count_inter":
            pairs = sorted(b for b in g.countries if b != a and g.nb[a] & g.nb[b])
            if not pairs:
                return None
            b = rng.choice(pairs)
            common = g.nb[a] & g.nb[b]
            return {"a": a, "b": b}, (len(common) if kind == "count_inter" else common)
        case "diff_in":
            home = sorted(g.subregion(a))
            if not home:
                return None
            out = {x for x in g.nb[a] if home[0] not in g.loc[x]}
            return ({"a": a, "s": home[0]}, out) if out and out != g.nb[a] else None
        case "diff_nb":
            b = rng.choice(sorted(g.nb[a]))
            return {"a": a, "b": b}, g.nb[a] - g.nb[b] - {b}
        case "max_in" | "min_in":
            pool = g.members(s)
            return ({"s": s}, g.ranked(pool, kind[:3])) if len(pool) >= 3 else None
        case "top3_in":
            return {"r": r}, g.ranked(g.members(r), "max", 3)
        case "sub_of_max" | "sub_of_min":
            best = g.ranked(g.members(r), kind[-3:])
            return {"r": r}, {p for c in best for p in g.subregion(c)}
        case "more" | "fewer":
            b = rng.choice([c for c in bordered if c != a])
            na, nb = len(g.nb[a]), len(g.nb[b])
            return {"a": a, "b": b}, (na > nb if kind == "more" else na < nb)
        case "nb":
            return {"a": a}, set(g.nb[a])
        case "subregion":
            return {"a": a}, g.subregion(a)
        case "nb_in":
            inside = sorted({p for x in g.nb[a] for p in g.subregion(x)})
            s = rng.choice(inside)
            return {"a": a, "s": s}, {x for x in g.nb[a] if s in g.loc[x]}
        case "refuse":
            return {"a": a, "b": rng.choice([c for c in bordered if c != a])}, "refuse"
    raise ValueError(kind)


def shape_questions(store: GraphStore, seed: int = 13, per_template: int = PER_TEMPLATE) -> list[ShapeQuestion]:
    """The generated question set over ``store`` (the demo graph), every split."""
    g = _Gold(store)
    rng = random.Random(seed)
    out: list[ShapeQuestion] = []
    for shape, families in TEMPLATES.items():
        for family, templates in enumerate(families):
            for t, (template, kind) in enumerate(templates):
                seen: set[str] = set()
                tries = 0
                while len([q for q in out if q.id.startswith(f"{shape}/{family}/{t}/")]) < per_template and tries < 200:
                    tries += 1
                    drawn = _draw(g, kind, rng)
                    if drawn is None:
                        continue
                    slots, gold = drawn
                    text = template.format(**{k: g.label[v] for k, v in slots.items()})
                    if text in seen:
                        continue
                    seen.add(text)
                    n = len(seen) - 1
                    gold = {local_name(x) for x in gold} if isinstance(gold, set) else gold
                    out.append(
                        ShapeQuestion(f"{shape}/{family}/{t}/{n}", text, shape, family, SPLITS[family], kind, gold)
                    )
    return out


@dataclass
class ShapeOutcome:
    """How one question was answered."""

    question: ShapeQuestion
    correct: bool
    refused: bool
    confidence: float
    seconds: float
    mode: str
    answer: str
    program: str = ""


def judge(item: ShapeQuestion, answer: Answer) -> tuple[bool, bool]:
    """(fully correct, refused) for one answer."""
    refused = answer.metadata.get("found") is False
    if item.gold == "refuse":
        return refused, refused
    if refused:
        return False, True
    value = answer.metadata.get("value")
    if isinstance(item.gold, bool):
        return value is item.gold, False
    if isinstance(item.gold, int):
        return answer.metadata.get("kind") == "count" and value == item.gold, False
    got = {local_name(e.id) for e in answer.entities}
    return got == item.gold, False


def run_shapes(
    ask: Callable[[str], tuple[Answer, str]], questions: list[ShapeQuestion], progress: bool = False
) -> list[ShapeOutcome]:
    """Ask every question (``ask`` returns the answer and the mode that answered) and judge it."""
    outcomes = []
    for item in questions:
        started = time.perf_counter()
        answer, mode = ask(item.question)
        seconds = time.perf_counter() - started
        correct, refused = judge(item, answer)
        outcomes.append(
            ShapeOutcome(
                item,
                correct,
                refused,
                answer.confidence,
                seconds,
                mode,
                answer.text,
                answer.metadata.get("program", ""),
            )
        )
        if progress:
            print(f"{'ok ' if correct else 'BAD'} {item.id} {item.question} -> {answer.text[:100]}", flush=True)
    return outcomes


def shape_rows(outcomes: list[ShapeOutcome], split: str = "test") -> list[dict[str, str]]:
    """Per-shape table for one split: questions, fully correct, refused, confidently wrong, p50 ms."""
    by_shape: dict[str, list[ShapeOutcome]] = defaultdict(list)
    for o in outcomes:
        if o.question.split == split:
            by_shape[o.question.shape].append(o)
    rows = []
    everything = [o for group in by_shape.values() for o in group]
    for shape, group in [*by_shape.items(), ("all", everything)]:
        if not group:
            continue
        correct = sum(o.correct for o in group)
        rows.append(
            {
                "shape": shape,
                "split": split,
                "questions": str(len(group)),
                "fully correct": f"{correct} ({100 * correct / len(group):.1f}%)",
                "refused": str(sum(o.refused and not o.correct for o in group)),
                "confidently wrong": str(sum(not o.correct and not o.refused and o.confidence >= 0.5 for o in group)),
                "p50 ms": f"{1000 * statistics.median(o.seconds for o in group):.0f}",
            }
        )
    return rows


def reliability_rows(outcomes: list[ShapeOutcome]) -> list[dict[str, str]]:
    """Confidence bucket -> accuracy of the answers given (refusals excluded), over every split."""
    buckets = [(0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01)]
    rows = []
    for low, high in buckets:
        group = [o for o in outcomes if not o.refused and low <= o.confidence < high]
        correct = sum(o.correct for o in group)
        rows.append(
            {
                "confidence": f"[{low:.1f}, {min(high, 1.0):.1f}" + ("]" if high > 1 else ")"),
                "answers": str(len(group)),
                "correct": str(correct),
                "accuracy": f"{100 * correct / len(group):.1f}%" if group else "-",
            }
        )
    return rows


@dataclass
class _ModeTally:
    """One answering mode's results over a chain question set."""

    correct: int = 0
    programs: int = 0
    seconds: list[float] = field(default_factory=list)


def chain_rows(ask_auto, ask_paths, path: Path) -> list[dict[str, str]]:
    """The relation-chain questions of ``path`` (JSON lines with gold local names) under auto routing
    and under the path reasoner alone: accuracy and how many auto sent to programs."""
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    stats = {name: _ModeTally() for name in ("auto", "paths")}
    asks = {"auto": ask_auto, "paths": ask_paths}
    for n, item in enumerate(items):
        # alternate the order, so neither mode always meets the other's warm caches
        for name in ("auto", "paths") if n % 2 == 0 else ("paths", "auto"):
            started = time.perf_counter()
            answer, mode = asks[name](item["question"])
            stats[name].seconds.append(time.perf_counter() - started)
            got = sorted(local_name(e.id) for e in answer.entities)
            stats[name].correct += got == sorted(item["answers"])
            stats[name].programs += mode == "programs"
    return [
        {
            "set": path.stem,
            "mode": name,
            "questions": str(len(items)),
            "fully correct": f"{s.correct} ({100 * s.correct / len(items):.1f}%)",
            "sent to programs": str(s.programs) if name == "auto" else "-",
            "p50 ms": f"{1000 * statistics.median(s.seconds):.0f}",
        }
        for name, s in stats.items()
    ]


@dataclass
class ShapesReport:
    """Everything ``kgllm bench shapes`` prints: per-split shape tables, reliability, chain regression."""

    tables: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    outcomes: list[ShapeOutcome] = field(default_factory=list)


def run_shapes_benchmark(session, chain_sets: Sequence[Path] = (), progress: bool = False) -> ShapesReport:
    """Generate the shape questions from ``session``'s store, answer them with ``mode="auto"``, and
    run the chain question sets in ``auto`` and ``paths`` mode."""

    def ask_auto(question: str) -> tuple[Answer, str]:
        answer = session.ask(question, mode="auto")
        return answer, "programs" if "program" in answer.metadata or "shape" in answer.metadata else "paths"

    def ask_paths(question: str) -> tuple[Answer, str]:
        return session.ask(question, mode="paths"), "paths"

    questions = shape_questions(session.store)
    for q in ("How many neighbours does Chad have?", "Which countries border Chad?"):
        ask_auto(q)  # warm caches
    outcomes = run_shapes(ask_auto, questions, progress)
    report = ShapesReport(outcomes=outcomes)
    for split in SPLITS:
        report.tables[f"shapes ({split} families)"] = shape_rows(outcomes, split)
    report.tables["reliability (all splits)"] = reliability_rows(outcomes)
    chain = [row for p in chain_sets for row in chain_rows(ask_auto, ask_paths, Path(p))]
    if chain:
        report.tables["relation chains: auto routing vs the path reasoner"] = chain
    return report
