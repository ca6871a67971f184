"""The provenance API on every GraphStore back-end: derived facts, their records, removal by source."""

import pytest

from kgllm.exceptions import InputError
from kgllm.graph.oxigraph_store import OxigraphStore
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.types import Entity, Provenance, Triple

EX = "http://example.org/"
HOLMES, WATSON, BAKER, LONDON = (EX + n for n in ("holmes", "watson", "baker_street", "london"))
FRIEND, LIVES, IN = EX + "friendOf", EX + "livesAt", EX + "locatedIn"
PERSON = EX + "Person"
ASSERTED = [Triple(BAKER, IN, LONDON)]
STUDY = Provenance("study.txt", "extracted", model="lora-extract", score=0.9, span=(0, 40))
SIGN = Provenance("sign.txt", "extracted", model="lora-extract", score=0.7, span=(10, 52))
JOB = Provenance("kgllm complete", "predicted", model="RotatE", score=0.5)

BACKENDS = ["rdflib", "oxigraph", pytest.param("neo4j", marks=pytest.mark.neo4j)]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    if request.param == "neo4j":
        store = request.getfixturevalue("neo4j_store")
    elif request.param == "oxigraph":
        store = OxigraphStore(tmp_path / "kg")
        request.addfinalizer(store.close)
    else:
        store = RDFLibStore()
    store.add(ASSERTED)
    return store


def test_derived_facts_are_ordinary_triples_with_records(store):
    fact = Triple(HOLMES, FRIEND, WATSON)
    assert store.add_derived([fact], [STUDY], [Entity(HOLMES, "Sherlock Holmes")]) == 1
    assert set(store.triples()) == {fact, *ASSERTED}
    assert store.neighbors(WATSON, "in") == [fact]
    assert store.entity(HOLMES).label == "Sherlock Holmes"
    assert not store.is_asserted(fact)
    assert store.is_asserted(ASSERTED[0])
    assert not store.is_asserted(Triple(WATSON, FRIEND, HOLMES))
    [record] = store.provenance(fact)
    assert (record.source, record.method, record.model, record.score, record.span) == (
        "study.txt",
        "extracted",
        "lora-extract",
        0.9,
        (0, 40),
    )
    assert record.created.endswith("+00:00")  # filled by the store, in UTC
    assert store.provenance(ASSERTED[0]) == []


def test_same_record_twice_is_stored_once(store):
    fact = Triple(HOLMES, LIVES, BAKER)
    assert store.add_derived([fact, fact], [STUDY, STUDY]) == 1
    assert store.add_derived([fact], [STUDY]) == 0
    assert store.add_derived([fact], [SIGN]) == 1
    assert sorted(r.source for r in store.provenance(fact)) == ["sign.txt", "study.txt"]
    assert store.count_triples() == 2


def test_asserted_fact_keeps_its_status_and_gains_a_record(store):
    assert store.add_derived(ASSERTED, [JOB]) == 1
    assert store.is_asserted(ASSERTED[0])
    assert [r.method for r in store.provenance(ASSERTED[0])] == ["predicted"]
    assert store.remove_source(JOB.source) == []
    assert list(store.triples()) == ASSERTED
    assert store.provenance(ASSERTED[0]) == []


def test_adding_a_derived_fact_asserts_it(store):
    fact = Triple(HOLMES, FRIEND, WATSON)
    store.add_derived([fact], [STUDY])
    assert store.add([fact]) == 0
    assert store.is_asserted(fact)
    assert store.remove_source(STUDY.source) == []
    assert fact in set(store.triples())


def test_remove_source_deletes_only_what_no_other_source_supports(store):
    shared, only_study = Triple(HOLMES, LIVES, BAKER), Triple(HOLMES, FRIEND, WATSON)
    store.add_derived([shared, only_study], [STUDY, STUDY])
    store.add_derived([shared], [SIGN])
    assert store.sources() == ["sign.txt", "study.txt"]
    assert store.sources("st") == ["study.txt"]
    assert store.remove_source(STUDY.source) == [only_study]
    assert store.sources() == ["sign.txt"]
    assert set(store.triples()) == {shared, *ASSERTED}
    assert [r.source for r in store.provenance(shared)] == ["sign.txt"]
    assert store.entity(WATSON) is None  # no fact, label or type is left on it
    assert store.remove_source(STUDY.source) == []
    assert store.remove_source(SIGN.source) == [shared]
    assert set(store.triples()) == set(ASSERTED)


def test_entities_derivation_introduced_go_with_their_last_fact(store):
    fact = Triple(HOLMES, FRIEND, WATSON)
    store.add_derived(
        [fact],
        [STUDY],
        [
            Entity(HOLMES, "Sherlock Holmes", ("Holmes",), (PERSON,)),
            Entity(WATSON, "John Watson", ("Watson",), (PERSON,)),
        ],
    )
    assert store.entity(HOLMES) == Entity(HOLMES, "Sherlock Holmes", ("Holmes",), (PERSON,))
    assert store.remove_source(STUDY.source) == [fact]
    assert store.entity(HOLMES) is None and store.entity(WATSON) is None
    assert store.describe(HOLMES) == Entity(HOLMES, "Holmes")  # the readable local name: no label is left
    assert store.find_by_label("Holmes") == [] and store.search("Watson") == []
    assert [e.id for e in store.entities()] == [BAKER, LONDON]
    assert set(store.triples()) == set(ASSERTED)


def test_entities_still_in_a_fact_or_asserted_keep_their_description(store):
    store.add([], [Entity(HOLMES, "Sherlock Holmes")])  # asserted, though in no fact
    friend, lives = Triple(HOLMES, FRIEND, WATSON), Triple(WATSON, LIVES, BAKER)
    store.add_derived(
        [friend], [STUDY], [Entity(HOLMES, "Sherlock Holmes", ("Holmes",)), Entity(WATSON, "John Watson")]
    )
    store.add_derived([lives], [SIGN], [Entity(BAKER, "Baker Street")])
    assert store.remove_source(STUDY.source) == [friend]
    assert store.entity(HOLMES) == Entity(HOLMES, "Sherlock Holmes", ("Holmes",))
    assert store.entity(WATSON).label == "John Watson"  # still in the fact from sign.txt
    assert store.remove_source(SIGN.source) == [lives]
    assert store.entity(WATSON) is None
    assert store.entity(HOLMES).label == "Sherlock Holmes"
    assert store.entity(BAKER).label == "Baker Street"  # was in the store (an asserted fact) before


def test_adding_a_derived_entity_asserts_it(store):
    fact = Triple(HOLMES, FRIEND, WATSON)
    store.add_derived([fact], [STUDY], [Entity(HOLMES, "Sherlock Holmes"), Entity(WATSON, "John Watson")])
    store.add([], [Entity(HOLMES, "Sherlock Holmes")])
    assert store.remove_source(STUDY.source) == [fact]
    assert store.entity(HOLMES) == Entity(HOLMES, "Sherlock Holmes")
    assert store.entity(WATSON) is None


def test_a_source_recorded_without_facts_is_listed_until_removed(store):
    fact = Triple(HOLMES, FRIEND, WATSON)
    store.add_derived([fact], [STUDY])
    store.record_source("empty.txt")
    store.record_source("empty.txt")
    store.record_source(STUDY.source)
    assert store.sources() == ["empty.txt", "study.txt"]
    assert store.sources("em") == ["empty.txt"]
    assert set(store.triples()) == {fact, *ASSERTED}
    assert [e.id for e in store.entities()] == sorted([BAKER, HOLMES, LONDON, WATSON])
    assert store.relations() == sorted([FRIEND, IN])
    assert [r.source for r in store.provenance(fact)] == ["study.txt"]
    assert store.subgraph([HOLMES], hops=3) == [fact]
    assert store.remove_source("empty.txt") == []
    assert store.sources() == ["study.txt"]
    assert store.remove_source(STUDY.source) == [fact]
    assert store.sources() == []
    with pytest.raises(InputError):
        store.record_source(" ")


def test_bad_records_write_nothing(store):
    fact = Triple(HOLMES, FRIEND, WATSON)
    with pytest.raises(InputError, match="one provenance record per triple"):
        store.add_derived([fact], [])
    with pytest.raises(InputError, match="method must be one of"):
        store.add_derived([fact, fact], [STUDY, Provenance("x.txt", "guessed")])
    with pytest.raises(InputError, match="span"):
        store.add_derived([fact], [Provenance("x.txt", "extracted", span=(5, 2))])
    with pytest.raises(InputError):
        store.remove_source("")
    assert set(store.triples()) == set(ASSERTED)
    assert store.provenance(fact) == []


def test_records_survive_a_file_round_trip(tmp_path):
    path = tmp_path / "graph.ttl"
    fact = Triple(HOLMES, FRIEND, WATSON)
    RDFLibStore(path).add_derived([fact], [STUDY], [Entity(HOLMES, "Sherlock Holmes")])
    RDFLibStore(path).record_source("empty.txt")
    again = RDFLibStore(path)
    assert list(again.triples()) == [fact]
    assert again.relations() == [FRIEND]
    assert [(r.source, r.span) for r in again.provenance(fact)] == [("study.txt", (0, 40))]
    assert again.sources() == ["empty.txt", "study.txt"]
    assert again.remove_source("study.txt") == [fact]
    assert again.remove_source("empty.txt") == []
    final = RDFLibStore(path)
    assert final.count_triples() == 0 and final.entity(HOLMES) is None and final.sources() == []


def test_retriever_refresh_drops_removed_facts(store, encoder):
    from kgllm.retrieval.retriever import KGRetriever

    fact = Triple(HOLMES, FRIEND, WATSON)
    store.add_derived([fact], [STUDY], [Entity(HOLMES, "Sherlock Holmes"), Entity(WATSON, "John Watson")])
    retriever = KGRetriever(store, encoder)
    retriever.build()
    assert retriever.search_facts("Who is the friend of Sherlock Holmes?", k=1)[0][0] == fact
    store.remove_source(STUDY.source)
    stats = retriever.refresh()
    assert (stats.facts_removed, stats.labels_removed) == (1, 2)  # the two entities went with the fact
    assert [t for t, _ in retriever.search_facts("Who is the friend of Sherlock Holmes?", k=5)] == ASSERTED
