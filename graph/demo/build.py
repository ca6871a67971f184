"""Build countries.ttl from the Countries S1 triples (../shared/benchmarks/countries/countries.tsv).

Adds what the TSV lacks for people: classes (country, subregion, region),
labels and common alternative names. Closes two gaps of the source data so
that the graph says what it means: borders are made mutual (a few are listed
one way only) and every country is linked to the region of its subregion
(48 are linked to their subregion only). Self-loops are dropped. Run from the repository root:
    python graph/demo/build.py [path/to/countries.tsv]
"""

import sys
from pathlib import Path

from rdflib import OWL, RDF, RDFS, SKOS, Graph, Literal, Namespace

from kgllm.graph.labels import readable

KG = Namespace("https://kgllm.dev/countries/")
HERE = Path(__file__).resolve().parent
DEFAULT_TSV = HERE.parents[2] / "shared" / "benchmarks" / "countries" / "countries.tsv"

LABELS = {
    "dr_congo": "DR Congo",
    "timor-leste": "Timor-Leste",
    "guinea-bissau": "Guinea-Bissau",
    "cocos_keeling_islands": "Cocos (Keeling) Islands",
}
ALIASES = {
    "dr_congo": ["Democratic Republic of the Congo", "Congo-Kinshasa"],
    "republic_of_the_congo": ["Congo-Brazzaville"],
    "united_states": ["United States of America", "USA", "US"],
    "united_kingdom": ["UK", "Great Britain", "Britain"],
    "united_arab_emirates": ["UAE"],
    "ivory_coast": ["Côte d'Ivoire"],
    "czechia": ["Czech Republic"],
    "macedonia": ["North Macedonia"],
    "swaziland": ["Eswatini"],
    "myanmar": ["Burma"],
    "timor-leste": ["East Timor"],
    "vatican_city": ["Vatican", "Holy See"],
    "north_korea": ["DPRK"],
    "south_korea": ["Republic of Korea"],
    "cape_verde": ["Cabo Verde"],
    "americas": ["America"],
}

# Other words for the schema, as Wikidata keeps aliases for its properties.
SCHEMA_ALIASES = {
    "Country": ["nation", "state"],
    "Region": ["continent"],
    "neighborOf": ["borders", "shares a border with", "next to"],
    "locatedIn": ["is in", "is part of", "belongs to"],
}


def complete(rows: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Mutual borders, and country -> region wherever country -> subregion -> region."""
    facts = set(rows)
    facts |= {(t, r, h) for h, r, t in rows if r == "neighborOf"}
    parent = {}
    for h, r, t in rows:
        if r == "locatedIn":
            parent.setdefault(h, set()).add(t)
    for h, targets in parent.items():
        for t in list(targets):
            facts |= {(h, "locatedIn", region) for region in parent.get(t, ())}
    return sorted(facts)


def build(tsv: Path) -> Graph:
    rows = [line.rstrip("\n").split("\t") for line in tsv.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = complete([(h, r, t) for h, r, t in rows if h != t])
    located = {(h, t) for h, r, t in rows if r == "locatedIn"}
    targets = {t for _, t in located}
    regions = {t for t in targets if not any(h == t for h, _ in located)}
    subregions = targets - regions

    g = Graph()
    g.bind("kg", KG)
    g.bind("skos", SKOS)
    for cls, label in (("Country", "country"), ("Subregion", "subregion"), ("Region", "region")):
        g.add((KG[cls], RDF.type, OWL.Class))
        g.add((KG[cls], RDFS.label, Literal(label)))
        for alias in SCHEMA_ALIASES.get(cls, []):
            g.add((KG[cls], SKOS.altLabel, Literal(alias)))
    for prop, label in (("locatedIn", "located in"), ("neighborOf", "neighbor of")):
        g.add((KG[prop], RDF.type, OWL.ObjectProperty))
        g.add((KG[prop], RDFS.label, Literal(label)))
        for alias in SCHEMA_ALIASES.get(prop, []):
            g.add((KG[prop], SKOS.altLabel, Literal(alias)))
    g.add((KG.neighborOf, RDF.type, OWL.SymmetricProperty))
    names = {h for h, _, _ in rows} | {t for _, _, t in rows}
    for name in sorted(names):
        node = KG[name]
        cls = "Region" if name in regions else "Subregion" if name in subregions else "Country"
        g.add((node, RDF.type, KG[cls]))
        g.add((node, RDFS.label, Literal(LABELS.get(name, readable(name)))))
        for alias in ALIASES.get(name, []):
            g.add((node, SKOS.altLabel, Literal(alias)))
    for h, r, t in rows:
        g.add((KG[h], KG[r], KG[t]))
    return g


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TSV
    graph = build(source)
    graph.serialize(HERE / "countries.ttl", format="turtle")
    print(f"wrote {HERE / 'countries.ttl'}: {len(graph)} statements")
