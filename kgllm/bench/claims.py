"""Claim checking on sentences about the demo graph: true ones, and ones perturbed to be false.

The set is built from the graph itself (seeded): for sampled countries, true sentences about a
neighbour, the region and the subregion, in several phrasings, and their perturbations: a
neighbour swapped for a country of another region (not in the graph: borders are many-valued),
a wrong region or subregion (contradicted: one of each per country), an invented country (not in
the graph), a true fact denied (contradicted) and a false location denied (supported); and
two-clause sentences mixing them. Each claim has its expected status; precision and recall are
computed per status over all claims.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tqdm import tqdm

from kgllm.graph.base import GraphStore
from kgllm.pipelines.enhance.claims import ClaimChecker, ClaimStatus

NS = "https://kgllm.dev/countries/"
LOCATED_IN, NEIGHBOR_OF = NS + "locatedIn", NS + "neighborOf"
COUNTRY, REGION, SUBREGION = NS + "Country", NS + "Region", NS + "Subregion"
INVENTED = (
    "Wakanda",
    "Genovia",
    "Freedonia",
    "Zamunda",
    "Latveria",
    "Elbonia",
    "Ruritania",
    "Syldavia",
    "Borduria",
    "Sokovia",
    "Qumar",
    "Krakozhia",
    "Kazbekistan",
    "Florin",
    "Grand Fenwick",
)
NEIGHBOUR_PHRASES = (
    "{a} borders {b}.",
    "{a} shares a border with {b}.",
    "{a} is a neighbour of {b}.",
    "{a} lies next to {b}.",
    "{a} is adjacent to {b}.",
    "{a} has a common border with {b}.",
)
PAIR_PHRASES = ("{a} and {b} are neighbours.", "{a} and {b} are neighbors.")
PLACE_PHRASES = (
    "{a} is located in {p}.",
    "{a} lies in {p}.",
    "{a} is part of {p}.",
    "{a} is in {p}.",
    "{a} is situated in {p}.",
    "{a} can be found in {p}.",
    "{a} belongs to {p}.",
)
DENIED_NEIGHBOUR = "{a} does not border {b}."
DENIED_PLACE = "{a} is not located in {p}."
TWO_CLAUSES = "{a} borders {b} and is located in {p}."

S, C, N = ClaimStatus.SUPPORTED, ClaimStatus.CONTRADICTED, ClaimStatus.NOT_IN_GRAPH


@dataclass(frozen=True)
class ClaimCase:
    """A text, the statuses its claims should get (in order), and how it was made."""

    text: str
    expected: tuple[ClaimStatus, ...]
    kind: str


class _Graph:
    """What the set is built from: countries, their neighbours, region and subregion."""

    def __init__(self, store: GraphStore):
        self.store = store
        types = {e.id: e.types for e in store.entities()}
        self.countries = sorted(e for e, t in types.items() if COUNTRY in t)
        self.regions = sorted(e for e, t in types.items() if REGION in t)
        self.subregions = sorted(e for e, t in types.items() if SUBREGION in t)
        self.neighbours = {c: sorted(t.tail for t in store.neighbors(c, "out", NEIGHBOR_OF)) for c in self.countries}
        places = {c: [t.tail for t in store.neighbors(c, "out", LOCATED_IN)] for c in self.countries}
        self.region = {c: next((p for p in ps if REGION in types[p]), None) for c, ps in places.items()}
        self.subregion = {c: next((p for p in ps if SUBREGION in types[p]), None) for c, ps in places.items()}

    def name(self, node: str) -> str:
        return self.store.label(node)


def build_cases(store: GraphStore, countries: int = 60, seed: int = 0) -> list[ClaimCase]:
    """The benchmark set (see the module docstring), ``countries`` sampled with ``seed``."""
    rng = random.Random(seed)
    g = _Graph(store)
    eligible = [c for c in g.countries if g.neighbours[c] and g.region[c] and g.subregion[c]]
    cases: list[ClaimCase] = []
    for country in rng.sample(eligible, min(countries, len(eligible))):
        cases += _country_cases(g, country, rng)
    for i, invented in enumerate(INVENTED):
        real = rng.choice(eligible)
        region = g.region[real]
        assert region is not None
        if i % 2:
            cases.append(ClaimCase(rng.choice(NEIGHBOUR_PHRASES).format(a=invented, b=g.name(real)), (N,), "invented"))
        else:
            text = rng.choice(PLACE_PHRASES).format(a=invented, p=g.name(region))
            cases.append(ClaimCase(text, (N,), "invented"))
    return cases


def _country_cases(g: _Graph, country: str, rng: random.Random) -> list[ClaimCase]:
    a = g.name(country)
    region, subregion = g.region[country], g.subregion[country]
    assert region is not None and subregion is not None
    neighbour = rng.choice(g.neighbours[country])
    stranger = rng.choice([c for c in g.countries if g.region[c] != region and c not in g.neighbours[country]])
    wrong_region = rng.choice([r for r in g.regions if r != region])
    wrong_sub = rng.choice([s for s in g.subregions if s != subregion])
    near = rng.choice(NEIGHBOUR_PHRASES + PAIR_PHRASES)
    return [
        ClaimCase(near.format(a=a, b=g.name(neighbour)), (S,), "true neighbour"),
        ClaimCase(rng.choice(PLACE_PHRASES).format(a=a, p=g.name(region)), (S,), "true region"),
        ClaimCase(rng.choice(PLACE_PHRASES).format(a=a, p=g.name(subregion)), (S,), "true subregion"),
        ClaimCase(near.format(a=a, b=g.name(stranger)), (N,), "swapped neighbour"),
        ClaimCase(rng.choice(PLACE_PHRASES).format(a=a, p=g.name(wrong_region)), (C,), "wrong region"),
        ClaimCase(rng.choice(PLACE_PHRASES).format(a=a, p=g.name(wrong_sub)), (C,), "wrong subregion"),
        ClaimCase(DENIED_NEIGHBOUR.format(a=a, b=g.name(neighbour)), (C,), "denied fact"),
        ClaimCase(DENIED_PLACE.format(a=a, p=g.name(wrong_region)), (S,), "denied falsehood"),
        ClaimCase(TWO_CLAUSES.format(a=a, b=g.name(neighbour), p=g.name(wrong_sub)), (S, C), "two clauses"),
        ClaimCase(TWO_CLAUSES.format(a=a, b=g.name(stranger), p=g.name(subregion)), (N, S), "two clauses"),
    ]


@dataclass
class ClaimBenchmark:
    """Expected and predicted status of every claim, and the cases whose claims were missed."""

    pairs: list[tuple[ClaimStatus, ClaimStatus | None]]
    misses: list[tuple[ClaimCase, list[str]]]

    def scores(self, status: ClaimStatus) -> tuple[float, float, int]:
        """(precision, recall, support) of ``status``."""
        predicted = sum(p == status for _, p in self.pairs)
        actual = sum(e == status for e, _ in self.pairs)
        hits = sum(e == p == status for e, p in self.pairs)
        return (hits / predicted if predicted else 0.0, hits / actual if actual else 0.0, actual)

    def rows(self) -> list[dict[str, str]]:
        rows = []
        for status in ClaimStatus:
            precision, recall, support = self.scores(status)
            rows.append(
                {
                    "status": status.value,
                    "claims": str(support),
                    "precision": f"{precision:.3f}",
                    "recall": f"{recall:.3f}",
                }
            )
        correct = sum(e == p for e, p in self.pairs)
        rows.append(
            {
                "status": "all (accuracy)",
                "claims": str(len(self.pairs)),
                "precision": "",
                "recall": f"{correct / len(self.pairs):.3f}",
            }
        )
        return rows


def run_claims_benchmark(checker: ClaimChecker, cases: list[ClaimCase], progress: bool = True) -> ClaimBenchmark:
    """Check every case; a case read into a different number of claims counts every claim as missed."""
    pairs: list[tuple[ClaimStatus, ClaimStatus | None]] = []
    misses = []
    for case in tqdm(cases, desc="checking claims", unit="text", disable=not progress):
        got = [c.status for c in checker.check(case.text).claims]
        if len(got) != len(case.expected):
            pairs += [(e, None) for e in case.expected]
        else:
            pairs += list(zip(case.expected, got, strict=True))
        if tuple(got) != case.expected:
            misses.append((case, [s.value for s in got]))
    return ClaimBenchmark(pairs, misses)
