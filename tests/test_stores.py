"""One behaviour suite for every GraphStore back-end (rdflib in memory, Neo4j over Bolt)."""

import pytest

from kgllm.exceptions import InputError
from kgllm.graph import stores
from kgllm.graph.oxigraph_store import OxigraphStore
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.types import Entity, Triple

EX = "http://example.org/"
CHAD, NIGER, LIBYA, AFRICA, MIDDLE = (EX + n for n in ("chad", "niger", "libya", "africa", "middle_africa"))
BORDERS, IN = EX + "neighborOf", EX + "locatedIn"
FACTS = [
    Triple(CHAD, BORDERS, NIGER),
    Triple(NIGER, BORDERS, CHAD),
    Triple(CHAD, BORDERS, LIBYA),
    Triple(CHAD, IN, MIDDLE),
    Triple(MIDDLE, IN, AFRICA),
    Triple(NIGER, IN, AFRICA),
]
ENTITIES = [
    Entity(CHAD, "Chad", aliases=("Republic of Chad",), types=(EX + "Country",)),
    Entity(MIDDLE, "Middle Africa"),
    Entity(BORDERS, "borders"),
]

BACKENDS = ["rdflib", "oxigraph", pytest.param("neo4j", marks=pytest.mark.neo4j)]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    if request.param == "neo4j":
        return request.getfixturevalue("neo4j_store")
    if request.param == "oxigraph":
        store = OxigraphStore(tmp_path / "kg")
        request.addfinalizer(store.close)
        return store
    return RDFLibStore()


@pytest.fixture
def filled(store):
    assert store.add(FACTS, ENTITIES) == len(FACTS)
    return store


def test_every_registered_store_is_covered():
    assert set(stores.names()) == {p if isinstance(p, str) else p.values[0] for p in BACKENDS}


def test_add_is_idempotent(filled):
    assert filled.add(FACTS, ENTITIES) == 0
    assert filled.count_triples() == len(FACTS)
    assert filled.count_entities() == 5


def test_bad_triple_writes_nothing(store):
    with pytest.raises(InputError):
        store.add([Triple(CHAD, BORDERS, NIGER), Triple(CHAD, "", LIBYA)])
    assert store.count_triples() == 0


def test_labels_aliases_and_types(filled):
    chad = filled.entity(CHAD)
    assert chad.label == "Chad"
    assert chad.aliases == ("Republic of Chad",)
    assert chad.types == (EX + "Country",)
    assert filled.entity(NIGER).label == "Niger"  # readable local name when unlabelled
    assert filled.label(BORDERS) == "borders"
    assert filled.label(IN) == "located in"
    assert filled.entity(EX + "atlantis") is None
    assert filled.classes_of(CHAD) == (EX + "Country",)
    assert filled.classes_of(NIGER) == () and filled.classes_of(EX + "atlantis") == ()


def test_find_by_label_ignores_case_and_matches_aliases(filled):
    assert [e.id for e in filled.find_by_label("CHAD")] == [CHAD]
    assert [e.id for e in filled.find_by_label("republic of chad")] == [CHAD]
    assert [e.id for e in filled.find_by_label("middle_africa")] == [MIDDLE]
    assert filled.find_by_label("Atlantis") == []


def test_search_finds_substrings_shortest_first(filled):
    assert [e.id for e in filled.search("africa")] == [AFRICA, MIDDLE]


def test_neighbors_by_direction_and_relation(filled):
    assert set(filled.neighbors(CHAD, "out")) == {FACTS[0], FACTS[2], FACTS[3]}
    assert set(filled.neighbors(CHAD, "in")) == {FACTS[1]}
    assert set(filled.neighbors(CHAD, "both", relation=IN)) == {FACTS[3]}
    assert len(filled.neighbors(CHAD, "both", limit=2)) == 2
    with pytest.raises(InputError):
        filled.neighbors(CHAD, "sideways")


def test_a_hubs_limited_edges_hold_every_kind_it_has(store):
    hub, relations = EX + "hub", [EX + f"r{i}" for i in range(4)]
    many = [Triple(hub, relations[0], EX + f"n{i}") for i in range(30)]  # most of its edges: one relation
    few = [Triple(hub, relations[1], EX + "a"), Triple(EX + "b", relations[2], hub)]
    few.append(Triple(EX + "c", relations[3], hub))
    store.add(many + few)
    edges = store.neighbors(hub, "both", limit=10)
    assert len(edges) == 10 and len(set(edges)) == 10 and set(few) <= set(edges)
    assert set(store.neighbors(hub, "out", limit=5)) >= {few[0]} and len(store.neighbors(hub, "out", limit=5)) == 5
    assert set(store.neighbors(hub, "both", limit=40)) == set(many + few)  # under the limit: all of them


def test_triple_patterns(filled):
    assert set(filled.triples(relation=IN)) == {FACTS[3], FACTS[4], FACTS[5]}
    assert set(filled.triples(head=CHAD, relation=BORDERS)) == {FACTS[0], FACTS[2]}
    assert list(filled.triples(tail=AFRICA, head=CHAD)) == []
    assert filled.relations() == sorted([BORDERS, IN])


def test_subgraph_and_paths(filled):
    assert set(filled.subgraph([LIBYA], hops=1)) == {FACTS[2]}
    assert set(filled.subgraph([LIBYA], hops=2)) == {FACTS[0], FACTS[1], FACTS[2], FACTS[3]}
    paths = filled.paths(CHAD, AFRICA, max_hops=2)
    assert {tuple(p.nodes) for p in paths} == {(CHAD, MIDDLE, AFRICA), (CHAD, NIGER, AFRICA)}
    assert filled.paths(LIBYA, AFRICA, max_hops=1) == []


def test_export_round_trips_through_turtle(filled, tmp_path):
    out = filled.export(tmp_path / "graph.ttl")
    again = RDFLibStore(out)
    assert set(again.triples()) == set(filled.triples())
    assert again.entity(CHAD).label == "Chad"
