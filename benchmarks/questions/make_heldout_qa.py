"""Generate ``demo_qa_heldout.jsonl``: held-out questions over the countries demo graph.

The development set (``demo_qa.jsonl``, built by ``make_demo_qa.py``) was used
while the system was being built. This set was written afterwards, by someone
who had not seen the system, with new phrasings and mostly new entities. Its
gold answers come from the demo graph itself, ``graph/demo/countries.ttl``
(parsed with rdflib), not from the raw tsv.

Each question carries a path spec in the same notation as ``make_demo_qa.py``:

    (start, [step, ...], answer_class)      answer_class is optional

A step is a relation (``neighborOf``, ``locatedIn``); a leading ``^`` walks
the edge backwards and a trailing ``@class`` keeps only nodes of that class
after the step. Classes (``country``, ``subregion``, ``region``) are the
``rdf:type`` of each node in the Turtle file. The walk is set based: every
node reached by any path is in the answer, including the start node when a
path leads back to it.

Questions the graph cannot answer have ``None`` as their spec, or
``("absent", name)`` when they mention an entity that must not be in the
graph (the script checks that it is not). Their answer is ``[]``.

Before writing, the script also walks every question over a completed copy of
the graph (``neighborOf`` made symmetric, every country given the region of
its subregion) and refuses to write if any answer changes, so each gold set
holds whether or not a system applies those inferences itself.

Usage (from any directory):
    .venv/bin/python benchmarks/questions/make_heldout_qa.py [--show N]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

from rdflib import RDF, Graph, Literal, URIRef

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
TTL = REPO_ROOT / "graph" / "demo" / "countries.ttl"
DEV = HERE / "demo_qa.jsonl"
OUT = HERE / "demo_qa_heldout.jsonl"
NS = "https://kgllm.dev/countries/"
RELATIONS = ("neighborOf", "locatedIn")
CLASSES = {"Country": "country", "Subregion": "subregion", "Region": "region"}

N = ["neighborOf"]
NN = ["neighborOf", "neighborOf"]
NL = ["neighborOf", "locatedIn"]
SAME = ["locatedIn@subregion", "^locatedIn"]
UP2 = ["locatedIn@subregion", "locatedIn"]

# (kind, question, spec)
QUESTIONS: list[tuple[str, str, tuple | None]] = [
    # ---- one hop: neighbours of a country ----
    ("neighbours", "ethiopia neighbours", ("ethiopia", N)),
    ("neighbours", "Tell me every country that touches Hungary's borders.", ("hungary", N)),
    ("neighbours", "I'd like to know which countries sit along the border of Afghanistan.", ("afghanistan", N)),
    ("neighbours", "If I leave Serbia overland, which countries could I cross into?", ("serbia", N)),
    ("neighbours", "tanzania land borders", ("tanzania", N)),
    ("neighbours", "Give me the list of states that Iran has a land border with.", ("iran", N)),
    ("neighbours", "Which nations lie on Poland's frontier?", ("poland", N)),
    ("neighbours", "mali - bordering countries?", ("mali", N)),
    ("neighbours", "Show me all countries with a border to Colombia", ("colombia", N)),
    # ---- one hop: subregion of a country ----
    ("subregion_of_country", "subregion of cyprus", ("cyprus", ["locatedIn"], "subregion")),
    ("subregion_of_country", "I'd like to know Slovakia's subregion.", ("slovakia", ["locatedIn"], "subregion")),
    ("subregion_of_country", "Under which subregion is Nepal classified?", ("nepal", ["locatedIn"], "subregion")),
    ("subregion_of_country", "what's the subregion for ecuador", ("ecuador", ["locatedIn"], "subregion")),
    # ---- one hop: region of a country ----
    ("region_of_country", "continent of mongolia", ("mongolia", ["locatedIn"], "region")),
    ("region_of_country", "Tell me which continent Morocco lies on.", ("morocco", ["locatedIn"], "region")),
    ("region_of_country", "Vanuatu: what region?", ("vanuatu", ["locatedIn"], "region")),
    (
        "region_of_country",
        "I'd like to know the world region that Greenland is assigned to.",
        ("greenland", ["locatedIn"], "region"),
    ),
    # ---- one hop: countries in a subregion ----
    ("countries_in_subregion", "micronesia countries", ("micronesia", ["^locatedIn"], "country")),
    (
        "countries_in_subregion",
        "Tell me all the countries classified under Western Europe.",
        ("western_europe", ["^locatedIn"], "country"),
    ),
    (
        "countries_in_subregion",
        "I'd like to know which countries Northern Africa consists of.",
        ("northern_africa", ["^locatedIn"], "country"),
    ),
    (
        "countries_in_subregion",
        "What countries count as Central Europe?",
        ("central_europe", ["^locatedIn"], "country"),
    ),
    (
        "countries_in_subregion",
        "Enumerate the countries of Southern Asia.",
        ("southern_asia", ["^locatedIn"], "country"),
    ),
    # ---- one hop: countries in a region (the smallest region only) ----
    ("countries_in_region", "every country in oceania", ("oceania", ["^locatedIn"], "country")),
    # ---- one hop: region of a subregion ----
    ("region_of_subregion", "What region is Micronesia grouped under?", ("micronesia", ["locatedIn"], "region")),
    (
        "region_of_subregion",
        "Which continent is Western Asia a subdivision of?",
        ("western_asia", ["locatedIn"], "region"),
    ),
    ("region_of_subregion", "south america falls under which region", ("south_america", ["locatedIn"], "region")),
    # ---- one hop: subregions of a region ----
    (
        "subregions_of_region",
        "Tell me how Europe is split up into subregions.",
        ("europe", ["^locatedIn"], "subregion"),
    ),
    # ---- two hops: subregions of the neighbours ----
    ("neighbour_subregions", "sudan bordering countries by subregion", ("sudan", NL, "subregion")),
    (
        "neighbour_subregions",
        "Tell me the subregions you can enter by crossing one of Afghanistan's land borders.",
        ("afghanistan", NL, "subregion"),
    ),
    (
        "neighbour_subregions",
        "I'd like to know which subregions Zambia's bordering countries are spread across.",
        ("zambia", NL, "subregion"),
    ),
    (
        "neighbour_subregions",
        "Across which subregions are Poland's neighbouring countries distributed?",
        ("poland", NL, "subregion"),
    ),
    (
        "neighbour_subregions",
        "Colombia borders several countries. What subregions do they come from?",
        ("colombia", NL, "subregion"),
    ),
    ("neighbour_subregions", "iran adjacent states - which subregions", ("iran", NL, "subregion")),
    # ---- two hops: regions of the neighbours ----
    ("neighbour_regions", "spain neighbours continents", ("spain", NL, "region")),
    (
        "neighbour_regions",
        "Tell me what continents you can reach from Israel by crossing a single land border.",
        ("israel", NL, "region"),
    ),
    (
        "neighbour_regions",
        "I'd like to know the regions represented among Azerbaijan's neighbours.",
        ("azerbaijan", NL, "region"),
    ),
    ("neighbour_regions", "Greece: continents of the countries it borders", ("greece", NL, "region")),
    (
        "neighbour_regions",
        "Crossing any border out of China, which continents could you end up in?",
        ("china", NL, "region"),
    ),
    # ---- two hops: neighbours of the neighbours ----
    ("neighbours_of_neighbours", "ecuador -> bordering countries -> their bordering countries", ("ecuador", NN)),
    (
        "neighbours_of_neighbours",
        "Tell me every country you can reach from Sierra Leone by crossing exactly two borders.",
        ("sierra_leone", NN),
    ),
    (
        "neighbours_of_neighbours",
        "I'd like to know the countries that have a border with any country bordering Kuwait.",
        ("kuwait", NN),
    ),
    ("neighbours_of_neighbours", "Pick any neighbour of Gabon: which countries can it border?", ("gabon", NN)),
    ("neighbours_of_neighbours", "bhutan neighbours' neighbours list", ("bhutan", NN)),
    (
        "neighbours_of_neighbours",
        "If I go from the Netherlands into a neighbouring country and then cross one more border, where can I end up?",
        ("netherlands", NN),
    ),
    (
        "neighbours_of_neighbours",
        "Starting in Vietnam and crossing two borders in a row, where could I be?",
        ("vietnam", NN),
    ),
    # ---- two hops: countries in the same subregion ----
    (
        "same_subregion",
        "Tell me all countries grouped together with Tunisia in its subregion, Tunisia included.",
        ("tunisia", SAME, "country"),
    ),
    ("same_subregion", "nauru subregion members", ("nauru", SAME, "country")),
    (
        "same_subregion",
        "I'd like to know which countries sit in the same subregional grouping as Cyprus.",
        ("cyprus", SAME, "country"),
    ),
    ("same_subregion", "Slovakia and the other countries of its subregion", ("slovakia", SAME, "country")),
    ("same_subregion", "Give me the full membership of the subregion that includes Nepal.", ("nepal", SAME, "country")),
    # ---- two hops: region of a country's subregion ----
    ("region_of_country_subregion", "Sri Lanka's subregion: which continent is that on?", ("sri_lanka", UP2, "region")),
    ("region_of_country_subregion", "greenland subregion's region", ("greenland", UP2, "region")),
    (
        "region_of_country_subregion",
        "I'd like to know which region Kiribati's subregion falls under.",
        ("kiribati", UP2, "region"),
    ),
    (
        "region_of_country_subregion",
        "Going up from Slovakia's subregion, which continent do you reach?",
        ("slovakia", UP2, "region"),
    ),
    # ---- not answerable from the graph ----
    ("unanswerable", "wakanda neighbours", ("absent", "wakanda")),
    ("unanswerable", "Tell me which subregion Narnia belongs to.", ("absent", "narnia")),
    ("unanswerable", "capital city of ethiopia", None),
    ("unanswerable", "Who is the current president of Argentina?", None),
    ("unanswerable", "I'd like to know which currencies are accepted in Switzerland.", None),
    ("unanswerable", "How large is Mongolia in square kilometres?", None),
    ("unanswerable", "In which year was Belgium founded?", None),
    ("unanswerable", "Which official languages does Rwanda have?", None),
]


class Walker:
    """The neighborOf / locatedIn edges of a graph, with each node's class."""

    def __init__(self, edges: set[tuple[str, str, str]], cls: dict[str, str]) -> None:
        self.edges = edges
        self.cls = cls
        self.out: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
        self.inc: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
        for h, r, t in edges:
            self.out[(h, r)].add(t)
            self.inc[(t, r)].add(h)

    def keep(self, nodes: set[str], cls: str) -> set[str]:
        if cls not in CLASSES.values():
            raise ValueError(f"unknown class {cls!r}")
        return {n for n in nodes if self.cls.get(n) == cls}

    def walk(self, spec: tuple) -> set[str]:
        start, steps, *rest = spec
        if start not in self.cls:
            raise ValueError(f"{start!r} is not in the graph")
        frontier = {start}
        for step in steps:
            rel, _, cls = step.partition("@")
            index = self.inc if rel.startswith("^") else self.out
            rel = rel.lstrip("^")
            if rel not in RELATIONS:
                raise ValueError(f"unknown relation {rel!r}")
            frontier = set().union(*(index[(n, rel)] for n in frontier)) if frontier else set()
            if cls:
                frontier = self.keep(frontier, cls)
        return self.keep(frontier, rest[0]) if rest else frontier

    def completed(self) -> Walker:
        edges = set(self.edges)
        edges |= {(t, r, h) for h, r, t in self.edges if r == "neighborOf"}
        for h, r, t in self.edges:
            if r == "locatedIn" and self.cls.get(h) == "country" and self.cls.get(t) == "subregion":
                edges |= {(h, r, reg) for reg in self.out[(t, r)] if self.cls.get(reg) == "region"}
        return Walker(edges, self.cls)


def local(node) -> str | None:
    s = str(node)
    return s[len(NS) :] if isinstance(node, URIRef) and s.startswith(NS) else None


def load(path: Path) -> tuple[Walker, set[str]]:
    """The walker over the Turtle file, and every lower-cased name or label in it."""
    g = Graph()
    g.parse(path, format="turtle")
    cls = {}
    for s, o in g.subject_objects(RDF.type):
        if local(s) is not None and local(o) in CLASSES:
            cls[local(s)] = CLASSES[local(o)]
    edges = set()
    for rel in RELATIONS:
        for s, o in g.subject_objects(URIRef(NS + rel)):
            edges.add((local(s), rel, local(o)))
    names = {n.lower() for n in cls} | {str(o).lower() for o in g.objects() if isinstance(o, Literal)}
    return Walker(edges, cls), names


def build() -> list[dict]:
    raw, names = load(TTL)
    full = raw.completed()
    dev = {
        json.loads(line)["question"].strip().lower()
        for line in DEV.read_text(encoding="utf-8").splitlines()
        if line.strip()
    }
    rows, problems = [], []
    for i, (kind, question, spec) in enumerate(QUESTIONS, 1):
        if spec is None or spec[0] == "absent":
            if spec is not None and spec[1].lower() in names:
                problems.append(f"{question!r}: {spec[1]!r} is in the graph")
            if kind != "unanswerable":
                problems.append(f"{question!r}: no spec but kind {kind!r}")
            answers, hops = [], 0
        else:
            got = raw.walk(spec)
            if not got:
                problems.append(f"{question!r}: empty answer for {spec}")
            if got != full.walk(spec):
                problems.append(f"{question!r}: depends on a gap: {sorted(got)} vs completed {sorted(full.walk(spec))}")
            answers, hops = sorted(got), len(spec[1])
        if question.strip().lower() in dev:
            problems.append(f"{question!r}: also in the development set")
        rows.append({"id": f"h{i:03d}", "question": question, "answers": answers, "hops": hops, "kind": kind})
    if len({r["question"].strip().lower() for r in rows}) != len(rows):
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
    print(f"wrote {len(rows)} questions to {OUT.relative_to(REPO_ROOT)}")
    print("by kind:")
    for (hops, kind), n in sorted(collections.Counter((r["hops"], r["kind"]) for r in rows).items()):
        print(f"  {hops} hop  {kind:30s} {n}")
    print("by hops:")
    for hops, n in sorted(collections.Counter(r["hops"] for r in rows).items()):
        print(f"  {hops} hop  {n}")


if __name__ == "__main__":
    main()
