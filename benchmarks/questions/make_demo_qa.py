"""Generate ``demo_qa.jsonl``: questions over the countries demo graph with gold answers computed from the tsv.

The questions are hand-written below; each one carries a small path spec

    (start, [step, ...], answer_class)      answer_class is optional

where a step is a relation name (``neighborOf``, ``locatedIn``), optionally
prefixed with ``^`` to walk the edge backwards and optionally suffixed with
``@class`` to keep only nodes of that class after the step
(``locatedIn@subregion``). The answer class (``country``, ``subregion``,
``region``) filters the final node set. The walk is set based: every node
reached by any path is in the answer, including the start node if a path
leads back to it.

Gold answers are the raw graph walk over countries.tsv. Each answerable
question is also walked over a "completed" graph (neighborOf made symmetric,
and every country given the region of its subregion); if the two walks
disagree the question depends on a gap in the data and the script refuses it,
so every gold set holds under either reading of the graph.

Usage (from the repo root):
    .venv/bin/python benchmarks/questions/make_demo_qa.py [--show N]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
TSV = (REPO_ROOT / ".." / "shared" / "benchmarks" / "countries" / "countries.tsv").resolve()
OUT = HERE / "demo_qa.jsonl"

# (kind, question, spec); spec is None for questions the graph cannot answer.
QUESTIONS: list[tuple[str, str, tuple | None]] = [
    # ---- one hop: neighbours of a country ----
    ("neighbours", "Which countries border Kenya?", ("kenya", ["neighborOf"])),
    ("neighbours", "What are Germany's neighbours?", ("germany", ["neighborOf"])),
    ("neighbours", "Name the countries that share a border with Peru.", ("peru", ["neighborOf"])),
    ("neighbours", "who borders bolivia", ("bolivia", ["neighborOf"])),
    ("neighbours", "Which countries are neighbors of South Africa?", ("south_africa", ["neighborOf"])),
    (
        "neighbours",
        "What countries does the Central African Republic border?",
        ("central_african_republic", ["neighborOf"]),
    ),
    ("neighbours", "Who are the United States' neighbors?", ("united_states", ["neighborOf"])),
    ("neighbours", "Which countries does Brazil share a border with?", ("brazil", ["neighborOf"])),
    ("neighbours", "list the neighbours of russia", ("russia", ["neighborOf"])),
    ("neighbours", "Which countries is Burkina Faso bordered by?", ("burkina_faso", ["neighborOf"])),
    ("neighbours", "What countries are adjacent to Saudi Arabia?", ("saudi_arabia", ["neighborOf"])),
    ("neighbours", "What are the neighbouring countries of DR Congo?", ("dr_congo", ["neighborOf"])),
    ("neighbours", "costa rica's neighbors?", ("costa_rica", ["neighborOf"])),
    ("neighbours", "Which countries neighbour Bosnia and Herzegovina?", ("bosnia_and_herzegovina", ["neighborOf"])),
    # ---- one hop: subregion of a country ----
    ("subregion_of_country", "Which subregion is Kenya in?", ("kenya", ["locatedIn"], "subregion")),
    ("subregion_of_country", "What subregion does Japan belong to?", ("japan", ["locatedIn"], "subregion")),
    ("subregion_of_country", "south africa is in which subregion", ("south_africa", ["locatedIn"], "subregion")),
    ("subregion_of_country", "Which part of the Americas is Guatemala in?", ("guatemala", ["locatedIn"], "subregion")),
    (
        "subregion_of_country",
        "Name the subregion Papua New Guinea is located in.",
        ("papua_new_guinea", ["locatedIn"], "subregion"),
    ),
    ("subregion_of_country", "Which subregion contains Saudi Arabia?", ("saudi_arabia", ["locatedIn"], "subregion")),
    # ---- one hop: region of a country ----
    ("region_of_country", "In which region is Kenya?", ("kenya", ["locatedIn"], "region")),
    ("region_of_country", "What continent is Japan on?", ("japan", ["locatedIn"], "region")),
    ("region_of_country", "which continent is nigeria in", ("nigeria", ["locatedIn"], "region")),
    ("region_of_country", "What region is Brazil located in?", ("brazil", ["locatedIn"], "region")),
    ("region_of_country", "Which region does Australia belong to?", ("australia", ["locatedIn"], "region")),
    ("region_of_country", "France is part of which region?", ("france", ["locatedIn"], "region")),
    # ---- one hop: countries in a subregion ----
    ("countries_in_subregion", "Which countries are in Middle Africa?", ("middle_africa", ["^locatedIn"], "country")),
    ("countries_in_subregion", "What countries make up Central Asia?", ("central_asia", ["^locatedIn"], "country")),
    (
        "countries_in_subregion",
        "Which countries are located in Southern Africa?",
        ("southern_africa", ["^locatedIn"], "country"),
    ),
    ("countries_in_subregion", "list the countries in melanesia", ("melanesia", ["^locatedIn"], "country")),
    (
        "countries_in_subregion",
        "Which countries belong to Central America?",
        ("central_america", ["^locatedIn"], "country"),
    ),
    (
        "countries_in_subregion",
        "What countries are part of Australia and New Zealand?",
        ("australia_and_new_zealand", ["^locatedIn"], "country"),
    ),
    ("countries_in_subregion", "Which countries lie in Eastern Asia?", ("eastern_asia", ["^locatedIn"], "country")),
    ("countries_in_subregion", "Name all the countries in the Caribbean.", ("caribbean", ["^locatedIn"], "country")),
    # ---- one hop: region of a subregion ----
    ("region_of_subregion", "Which region is Middle Africa part of?", ("middle_africa", ["locatedIn"], "region")),
    ("region_of_subregion", "What region does Polynesia belong to?", ("polynesia", ["locatedIn"], "region")),
    (
        "region_of_subregion",
        "South-Eastern Asia is located in which region?",
        ("south-eastern_asia", ["locatedIn"], "region"),
    ),
    ("region_of_subregion", "northern europe is part of what region", ("northern_europe", ["locatedIn"], "region")),
    # ---- one hop: subregions of a region ----
    ("subregions_of_region", "Which subregions are in Oceania?", ("oceania", ["^locatedIn"], "subregion")),
    ("subregions_of_region", "What subregions is Africa divided into?", ("africa", ["^locatedIn"], "subregion")),
    # ---- two hops: subregions of the neighbours ----
    (
        "neighbour_subregions",
        "Which subregions are the neighbours of Chad located in?",
        ("chad", ["neighborOf", "locatedIn"], "subregion"),
    ),
    (
        "neighbour_subregions",
        "In which subregions are Kenya's neighbors?",
        ("kenya", ["neighborOf", "locatedIn"], "subregion"),
    ),
    (
        "neighbour_subregions",
        "What subregions do the countries bordering Turkey belong to?",
        ("turkey", ["neighborOf", "locatedIn"], "subregion"),
    ),
    ("neighbour_subregions", "subregions of russia's neighbours", ("russia", ["neighborOf", "locatedIn"], "subregion")),
    (
        "neighbour_subregions",
        "Which subregions are Mexico's neighbours in?",
        ("mexico", ["neighborOf", "locatedIn"], "subregion"),
    ),
    (
        "neighbour_subregions",
        "Which subregion do Brazil's neighbors lie in?",
        ("brazil", ["neighborOf", "locatedIn"], "subregion"),
    ),
    (
        "neighbour_subregions",
        "The countries that border Austria are part of which subregions?",
        ("austria", ["neighborOf", "locatedIn"], "subregion"),
    ),
    (
        "neighbour_subregions",
        "Which subregions do the neighbors of the Central African Republic belong to?",
        ("central_african_republic", ["neighborOf", "locatedIn"], "subregion"),
    ),
    # ---- two hops: regions of the neighbours ----
    (
        "neighbour_regions",
        "Which regions are the neighbours of Turkey in?",
        ("turkey", ["neighborOf", "locatedIn"], "region"),
    ),
    (
        "neighbour_regions",
        "On which continents are Egypt's neighbours?",
        ("egypt", ["neighborOf", "locatedIn"], "region"),
    ),
    (
        "neighbour_regions",
        "what continents do russia's neighbors lie on",
        ("russia", ["neighborOf", "locatedIn"], "region"),
    ),
    (
        "neighbour_regions",
        "Which region do the countries next to Panama belong to?",
        ("panama", ["neighborOf", "locatedIn"], "region"),
    ),
    (
        "neighbour_regions",
        "Which regions are the countries bordering Kazakhstan located in?",
        ("kazakhstan", ["neighborOf", "locatedIn"], "region"),
    ),
    (
        "neighbour_regions",
        "What region are Saudi Arabia's neighbours in",
        ("saudi_arabia", ["neighborOf", "locatedIn"], "region"),
    ),
    # ---- two hops: neighbours of the neighbours ----
    (
        "neighbours_of_neighbours",
        "Which countries border the neighbours of Bolivia?",
        ("bolivia", ["neighborOf", "neighborOf"]),
    ),
    (
        "neighbours_of_neighbours",
        "What countries share a border with Uruguay's neighbors?",
        ("uruguay", ["neighborOf", "neighborOf"]),
    ),
    (
        "neighbours_of_neighbours",
        "Which countries are neighbours of Portugal's neighbours?",
        ("portugal", ["neighborOf", "neighborOf"]),
    ),
    (
        "neighbours_of_neighbours",
        "who borders the countries that border denmark",
        ("denmark", ["neighborOf", "neighborOf"]),
    ),
    (
        "neighbours_of_neighbours",
        "neighbors of the neighbors of South Korea",
        ("south_korea", ["neighborOf", "neighborOf"]),
    ),
    (
        "neighbours_of_neighbours",
        "Which countries border Canada's neighbours?",
        ("canada", ["neighborOf", "neighborOf"]),
    ),
    (
        "neighbours_of_neighbours",
        "Name every country bordering a neighbour of Lesotho.",
        ("lesotho", ["neighborOf", "neighborOf"]),
    ),
    (
        "neighbours_of_neighbours",
        "What are the neighbours of Costa Rica's neighbours?",
        ("costa_rica", ["neighborOf", "neighborOf"]),
    ),
    (
        "neighbours_of_neighbours",
        "Which countries border the neighbors of the Dominican Republic?",
        ("dominican_republic", ["neighborOf", "neighborOf"]),
    ),
    # ---- two hops: countries in the same subregion ----
    (
        "same_subregion",
        "Which countries are in the same subregion as Kenya?",
        ("kenya", ["locatedIn@subregion", "^locatedIn"], "country"),
    ),
    (
        "same_subregion",
        "Which countries share a subregion with Japan?",
        ("japan", ["locatedIn@subregion", "^locatedIn"], "country"),
    ),
    (
        "same_subregion",
        "countries in the same subregion as uzbekistan",
        ("uzbekistan", ["locatedIn@subregion", "^locatedIn"], "country"),
    ),
    (
        "same_subregion",
        "Which countries are in Fiji's subregion?",
        ("fiji", ["locatedIn@subregion", "^locatedIn"], "country"),
    ),
    (
        "same_subregion",
        "List every country in the subregion that Honduras belongs to.",
        ("honduras", ["locatedIn@subregion", "^locatedIn"], "country"),
    ),
    (
        "same_subregion",
        "What countries are located in the same subregion as Botswana?",
        ("botswana", ["locatedIn@subregion", "^locatedIn"], "country"),
    ),
    (
        "same_subregion",
        "Name the countries that are in the same subregion as Egypt",
        ("egypt", ["locatedIn@subregion", "^locatedIn"], "country"),
    ),
    # ---- two hops: region of a country's subregion ----
    (
        "region_of_country_subregion",
        "Which region is Egypt's subregion part of?",
        ("egypt", ["locatedIn@subregion", "locatedIn"], "region"),
    ),
    (
        "region_of_country_subregion",
        "What region contains the subregion that Pakistan is in?",
        ("pakistan", ["locatedIn@subregion", "locatedIn"], "region"),
    ),
    (
        "region_of_country_subregion",
        "the subregion of mexico belongs to which region",
        ("mexico", ["locatedIn@subregion", "locatedIn"], "region"),
    ),
    (
        "region_of_country_subregion",
        "Which continent does Germany's subregion belong to?",
        ("germany", ["locatedIn@subregion", "locatedIn"], "region"),
    ),
    (
        "region_of_country_subregion",
        "Which region is the subregion of Samoa located in?",
        ("samoa", ["locatedIn@subregion", "locatedIn"], "region"),
    ),
    (
        "region_of_country_subregion",
        "In what region is Indonesia's subregion?",
        ("indonesia", ["locatedIn@subregion", "locatedIn"], "region"),
    ),
    # ---- not answerable from the graph ----
    ("unanswerable", "Which countries border Atlantis?", None),
    ("unanswerable", "What is the capital of France?", None),
    ("unanswerable", "Who wrote Hamlet?", None),
    ("unanswerable", "what is the population of brazil", None),
    ("unanswerable", "Which currency is used in Japan?", None),
    ("unanswerable", "What language do people speak in Peru?", None),
]

CLASSES = ("country", "subregion", "region")


class Graph:
    """Directed edges of the tsv, with the three classes derived as in the demo graph."""

    def __init__(self, triples: list[tuple[str, str, str]]) -> None:
        self.out: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
        self.inc: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
        for h, r, t in triples:
            self.out[(h, r)].add(t)
            self.inc[(t, r)].add(h)
        nodes = {h for h, _, _ in triples} | {t for _, _, t in triples}
        located = {h for h, r, _ in triples if r == "locatedIn"}
        targets = {t for _, r, t in triples if r == "locatedIn"}
        regions = {t for t in targets if t not in located}
        subregions = {t for t in targets if self.out[(t, "locatedIn")] & regions}
        self.cls = {n: "region" if n in regions else "subregion" if n in subregions else "country" for n in nodes}
        self.nodes = nodes

    def step(self, frontier: set[str], step: str) -> set[str]:
        rel, _, cls = step.partition("@")
        backwards = rel.startswith("^")
        rel = rel.lstrip("^")
        index = self.inc if backwards else self.out
        reached = set().union(*(index.get((n, rel), set()) for n in frontier)) if frontier else set()
        return self.filter(reached, cls) if cls else reached

    def filter(self, nodes: set[str], cls: str) -> set[str]:
        if cls not in CLASSES:
            raise ValueError(f"unknown class {cls!r}")
        return {n for n in nodes if self.cls[n] == cls}

    def walk(self, spec: tuple) -> set[str]:
        start, steps, *rest = spec
        if start not in self.nodes:
            raise ValueError(f"{start!r} is not in the graph")
        frontier = {start}
        for step in steps:
            frontier = self.step(frontier, step)
        return self.filter(frontier, rest[0]) if rest else frontier


def read_triples(path: Path) -> list[tuple[str, str, str]]:
    triples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            h, r, t = line.split("\t")
            triples.append((h, r, t))
    return triples


def completed(triples: list[tuple[str, str, str]], raw: Graph) -> list[tuple[str, str, str]]:
    """The triples plus the reverse of every neighborOf edge and each country's region via its subregion."""
    extra = {(t, r, h) for h, r, t in triples if r == "neighborOf"}
    for h, r, t in triples:
        if r == "locatedIn" and raw.cls[h] == "country" and raw.cls[t] == "subregion":
            extra |= {(h, "locatedIn", reg) for reg in raw.out[(t, "locatedIn")] if raw.cls[reg] == "region"}
    return sorted(set(triples) | extra)


def build() -> list[dict]:
    triples = read_triples(TSV)
    raw = Graph(triples)
    full = Graph(completed(triples, raw))
    rows, problems = [], []
    for i, (kind, question, spec) in enumerate(QUESTIONS, 1):
        if spec is None:
            answers, hops = [], 0
        else:
            got = raw.walk(spec)
            if not got:
                problems.append(f"{question!r}: empty answer for {spec}")
            if got != full.walk(spec):
                problems.append(
                    f"{question!r}: depends on a data gap: raw {sorted(got)} vs completed {sorted(full.walk(spec))}"
                )
            answers, hops = sorted(got), len(spec[1])
        rows.append({"id": f"q{i:03d}", "question": question, "answers": answers, "hops": hops, "kind": kind})
    if len({r["question"].lower() for r in rows}) != len(rows):
        problems.append("duplicate question text")
    if problems:
        sys.exit("refusing to write:\n  " + "\n  ".join(problems))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", type=int, default=0, help="print the first N questions with their answers")
    args = parser.parse_args()
    rows = build()
    with OUT.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    for row in rows[: args.show]:
        print(f"{row['id']} [{row['kind']}, {row['hops']} hop] {row['question']} -> {row['answers']}")
    counts = collections.Counter((r["hops"], r["kind"]) for r in rows)
    print(f"wrote {len(rows)} questions to {OUT.relative_to(REPO_ROOT)}")
    for (hops, kind), n in sorted(counts.items()):
        print(f"  {hops} hop  {kind:30s} {n}")


if __name__ == "__main__":
    main()
