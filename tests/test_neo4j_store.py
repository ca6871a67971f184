"""Neo4jStore against a real Bolt server (ArcadeDB, started once per session by ``bolt_server``)."""

import socket

import pytest
from rdflib import RDF, RDFS, SKOS, Graph, Literal, URIRef

from kgllm.exceptions import GraphStoreError, InputError, StoreUnavailableError
from kgllm.graph import neo4j_store as module
from kgllm.graph import stores
from kgllm.graph.neo4j_store import EXPORT_BASE_IRI, Neo4jStore, merge_one_per_triple
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.settings import Settings
from kgllm.types import Entity, Triple

pytestmark = pytest.mark.neo4j

EX = "http://example.org/"
CHAD, NIGER, LIBYA, AFRICA, MIDDLE = (EX + n for n in ("chad", "niger", "libya", "africa", "middle_africa"))
BORDERS, IN, COUNTRY = EX + "neighborOf", EX + "locatedIn", EX + "Country"
FACTS = [
    Triple(CHAD, BORDERS, NIGER),
    Triple(NIGER, BORDERS, CHAD),
    Triple(CHAD, BORDERS, LIBYA),
    Triple(CHAD, IN, MIDDLE),
    Triple(MIDDLE, IN, AFRICA),
    Triple(NIGER, IN, AFRICA),
]
ENTITIES = [
    Entity(CHAD, "Chad", aliases=("Republic of Chad",), types=(COUNTRY,)),
    Entity(MIDDLE, "Middle Africa"),
    Entity(BORDERS, "borders"),
    Entity(COUNTRY, "country"),
]


@pytest.fixture
def filled(neo4j_store):
    assert neo4j_store.add(FACTS, ENTITIES) == len(FACTS)
    return neo4j_store


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ writes
def test_batched_add_counts_new_triples_and_is_idempotent(neo4j_store):
    triples = [Triple(f"n{i}", "next", f"n{i + 1}") for i in range(25)]
    assert neo4j_store.add(triples + triples[:5], batch_size=4) == 25  # repeats within one call count once
    assert neo4j_store.add(triples, batch_size=7) == 0
    assert neo4j_store.add([*triples[:3], Triple("n0", "next", "n9")]) == 1
    assert neo4j_store.count_triples() == 26
    assert neo4j_store.count_entities() == 26


def test_nodes_stay_unique_across_writes(neo4j_store):
    neo4j_store.add([Triple("a", "r", "b")], [Entity("a", "A")])
    neo4j_store.add([Triple("b", "r", "a")], [Entity("a", "A", aliases=("first",))])
    rows = neo4j_store._records("MATCH (e:Entity) RETURN e.id AS id, count(*) AS n ORDER BY id")
    assert [(r["id"], r["n"]) for r in rows] == [("a", 1), ("b", 1), ("r", 1)]


def test_failure_mid_write_leaves_nothing(neo4j_store, monkeypatch):
    neo4j_store.add([Triple("kept", "r", "kept2")])
    real = module._run_batches
    calls = []

    def fail_on_triples(tx, cypher, rows, batch_size, name="rows"):
        calls.append(cypher)
        if cypher is module._MERGE_TRIPLES:  # nodes and descriptions are already written by now
            raise RuntimeError("connection lost")
        return real(tx, cypher, rows, batch_size, name)

    monkeypatch.setattr(module, "_run_batches", fail_on_triples)
    with pytest.raises(RuntimeError):
        neo4j_store.add([Triple("x", "r2", "y")], [Entity("x", "Ex", aliases=("alias",), types=("T",))])
    assert len(calls) > 3
    monkeypatch.undo()
    assert set(neo4j_store.triples()) == {Triple("kept", "r", "kept2")}
    assert neo4j_store.entity("x") is None and neo4j_store.find_by_label("alias") == []
    assert neo4j_store.relations() == ["r"] and neo4j_store.label("T") == "T"


def test_server_refusing_a_batch_rolls_back_the_earlier_ones(neo4j_store, monkeypatch):
    monkeypatch.setattr(module, "_MERGE_TRIPLES", "UNWIND $rows AS row MERGE (h:Entity {id: row.h}) RETURN 1 / 0")
    with pytest.raises(GraphStoreError) as err:
        neo4j_store.add([Triple(f"n{i}", "r", "m") for i in range(10)], batch_size=3)
    assert neo4j_store.uri in str(err.value)
    monkeypatch.undo()
    assert neo4j_store.count_entities() == 0 and neo4j_store.relations() == []


def test_bad_input_writes_nothing(neo4j_store):
    with pytest.raises(InputError):
        neo4j_store.add([Triple("a", "r", "b"), ("a", "r")])
    with pytest.raises(InputError):
        neo4j_store.add([Triple("a", "r", "b")], [Entity("", "nameless")])
    assert neo4j_store.count_triples() == 0 and neo4j_store.count_entities() == 0


def test_ids_are_parameters_never_query_text(neo4j_store):
    hostile = "x'}) DETACH DELETE n //`\"\\"
    neo4j_store.add([Triple(hostile, "r`) DELETE r //", "plain")], [Entity(hostile, "Hostile {label}")])
    assert neo4j_store.entity(hostile).label == "Hostile {label}"
    assert list(neo4j_store.triples(head=hostile)) == [Triple(hostile, "r`) DELETE r //", "plain")]
    assert neo4j_store.count_entities() == 2


def test_merge_one_per_triple_baseline_matches_add(neo4j_store):
    assert merge_one_per_triple(neo4j_store, FACTS + FACTS[:2]) == len(FACTS)
    assert merge_one_per_triple(neo4j_store, FACTS) == 0
    assert neo4j_store.add(FACTS) == 0
    assert set(neo4j_store.triples()) == set(FACTS)
    assert neo4j_store.relations() == sorted([BORDERS, IN])
    assert [e.id for e in neo4j_store.find_by_label("niger")] == [NIGER]
    with pytest.raises(InputError):
        merge_one_per_triple(neo4j_store, [("a", "", "b")])


# ------------------------------------------------------------------ reads
def test_labels_aliases_and_types_round_trip(filled):
    assert filled.entity(CHAD) == Entity(CHAD, "Chad", aliases=("Republic of Chad",), types=(COUNTRY,))
    assert filled.entity(NIGER) == Entity(NIGER, "Niger")  # readable name when unlabelled
    assert filled.entity(EX + "atlantis") is None
    assert filled.entity(BORDERS) is None and filled.entity(COUNTRY) is None  # relations and classes are not entities
    assert filled.label(CHAD) == "Chad"
    assert filled.label(BORDERS) == "borders"
    assert filled.label(IN) == "located in"
    assert filled.label(COUNTRY) == "country"
    assert filled.label(EX + "SouthAfrica") == "South Africa"


def test_describe_any_node(filled):
    assert filled.describe(CHAD) == filled.entity(CHAD)
    assert filled.describe(BORDERS) == Entity(BORDERS, "borders")
    assert filled.describe(IN) == Entity(IN, "located in")
    assert filled.describe(COUNTRY) == Entity(COUNTRY, "country")
    assert filled.describe(EX + "SouthAfrica") == Entity(EX + "SouthAfrica", "South Africa")


def test_later_descriptions_merge_first_label_wins(filled):
    filled.add([], [Entity(CHAD, "Tchad", aliases=("Chad Republic",), types=(EX + "Landlocked",))])
    chad = filled.entity(CHAD)
    assert chad.label == "Chad"
    assert chad.aliases == ("Chad Republic", "Republic of Chad", "Tchad")
    assert chad.types == (COUNTRY, EX + "Landlocked")
    assert [e.id for e in filled.find_by_label("tchad")] == [CHAD]
    filled.add([], [Entity(NIGER, "Niger Republic")])  # an unlabelled node gets its first label
    assert filled.entity(NIGER).label == "Niger Republic"
    assert filled.find_by_label("niger") == []


def test_find_by_label_ignores_case_and_separators(filled):
    assert [e.id for e in filled.find_by_label("CHAD")] == [CHAD]
    assert [e.id for e in filled.find_by_label("republic-of_CHAD")] == [CHAD]
    assert [e.id for e in filled.find_by_label("middle africa")] == [MIDDLE]
    assert [e.id for e in filled.find_by_label("Libya")] == [LIBYA]
    assert filled.find_by_label("borders") == []  # relation labels are not entity names
    assert filled.find_by_label("  ") == [] and filled.find_by_label("Atlantis") == []


def test_find_by_label_returns_every_entity_with_the_name(neo4j_store):
    neo4j_store.add(
        [], [Entity("georgia_country", "Georgia"), Entity("georgia_state", "Georgia (US state)", aliases=("georgia",))]
    )
    assert [e.id for e in neo4j_store.find_by_label("Georgia")] == ["georgia_country", "georgia_state"]


def test_search_substrings_shortest_first(filled):
    assert [e.id for e in filled.search("africa")] == [AFRICA, MIDDLE]
    assert [e.id for e in filled.search("AFRICA", limit=1)] == [AFRICA]
    assert [e.id for e in filled.search("republic of")] == [CHAD]
    assert filled.search("zz") == [] and filled.search("africa", limit=0) == []


def test_neighbors_by_direction_relation_and_limit(filled):
    assert set(filled.neighbors(CHAD, "out")) == {FACTS[0], FACTS[2], FACTS[3]}
    assert set(filled.neighbors(CHAD, "in")) == {FACTS[1]}
    assert set(filled.neighbors(CHAD, "both")) == {FACTS[0], FACTS[1], FACTS[2], FACTS[3]}
    assert set(filled.neighbors(CHAD, "both", relation=IN)) == {FACTS[3]}
    assert set(filled.neighbors(AFRICA, "in", relation=IN)) == {FACTS[4], FACTS[5]}
    assert filled.neighbors(AFRICA, "out") == []
    assert len(filled.neighbors(CHAD, "both", limit=2)) == 2
    assert filled.neighbors(CHAD, "both", limit=0) == []
    assert filled.neighbors(EX + "atlantis") == []
    with pytest.raises(InputError):
        filled.neighbors(CHAD, "sideways")


def test_self_loop_is_one_neighbor(neo4j_store):
    neo4j_store.add([Triple("a", "likes", "a")])
    assert neo4j_store.neighbors("a", "both") == [Triple("a", "likes", "a")]


def test_triple_patterns(filled):
    assert set(filled.triples()) == set(FACTS)
    assert set(filled.triples(relation=IN)) == {FACTS[3], FACTS[4], FACTS[5]}
    assert set(filled.triples(head=CHAD, relation=BORDERS)) == {FACTS[0], FACTS[2]}
    assert set(filled.triples(tail=AFRICA)) == {FACTS[4], FACTS[5]}
    assert list(filled.triples(CHAD, BORDERS, NIGER)) == [FACTS[0]]
    assert list(filled.triples(tail=AFRICA, head=CHAD)) == []
    assert list(filled.triples(relation=EX + "unknown")) == []


def test_counts_entities_and_relations(filled):
    assert filled.count_triples() == len(FACTS)
    assert filled.count_entities() == 5  # the labelled relation and class are not entities
    assert [e.id for e in filled.entities()] == sorted([CHAD, NIGER, LIBYA, AFRICA, MIDDLE])
    assert filled.relations() == sorted([BORDERS, IN])


# ------------------------------------------------------------------ walks
def test_subgraph_and_paths(filled):
    assert set(filled.subgraph([LIBYA], hops=1)) == {FACTS[2]}
    assert set(filled.subgraph([LIBYA], hops=2)) == {FACTS[0], FACTS[1], FACTS[2], FACTS[3]}
    assert len(filled.subgraph([CHAD], hops=3, max_triples=2)) == 2
    assert filled.subgraph([EX + "atlantis"]) == []
    paths = filled.paths(CHAD, AFRICA, max_hops=2)
    assert {tuple(p.nodes) for p in paths} == {(CHAD, MIDDLE, AFRICA), (CHAD, NIGER, AFRICA)}
    assert filled.paths(LIBYA, AFRICA, max_hops=1) == []
    assert len(filled.paths(CHAD, AFRICA, max_hops=3, limit=1)) == 1
    assert filled.paths(CHAD, CHAD) == []


def test_level_wise_walks_agree_with_the_embedded_store(neo4j_store):
    ex = "http://example.org/"
    ring = [Triple(f"{ex}n{i}", ex + "next", f"{ex}n{(i + 1) % 12}") for i in range(12)]
    chords = [Triple(f"{ex}n{i}", f"{ex}r{i % 3}", f"{ex}n{(i * 5 + 1) % 12}") for i in range(12)]
    neo4j_store.add(ring + chords)
    embedded = RDFLibStore()
    embedded.add(ring + chords)
    nodes = [f"{ex}n{i}" for i in range(12)]
    batched = dict(neo4j_store._adjacency(nodes, 100))
    assert {n: set(ts) for n, ts in batched.items()} == {n: set(neo4j_store.neighbors(n)) for n in nodes}
    for seeds, hops in (([ex + "n0"], 1), ([ex + "n0"], 2), ([ex + "n3", ex + "n7"], 3)):
        assert set(neo4j_store.subgraph(seeds, hops)) == set(embedded.subgraph(seeds, hops))
    paths = neo4j_store.paths(ex + "n0", ex + "n6", max_hops=4, limit=50)
    assert len(paths) == 12
    assert {p.triples for p in paths} == {p.triples for p in embedded.paths(ex + "n0", ex + "n6", max_hops=4, limit=50)}
    assert [len(p.triples) for p in paths] == sorted(len(p.triples) for p in paths)


def test_fanout_bounds_each_node(neo4j_store):
    neo4j_store.add([Triple("hub", "r", f"leaf{i}") for i in range(30)])
    assert len(neo4j_store.subgraph(["hub"], hops=1, max_fanout=5)) == 5
    assert neo4j_store.paths("leaf0", "leaf1", max_fanout=1) == []


# ------------------------------------------------------------------ export
@pytest.mark.parametrize("suffix,fmt", [(".ttl", "turtle"), (".nt", "nt")])
def test_export_rdf_reads_back_with_rdflib(filled, tmp_path, suffix, fmt):
    filled.add([Triple("plain name", "rel", CHAD)])
    out = filled.export(tmp_path / f"graph{suffix}")
    graph = Graph().parse(out, format=fmt)
    chad = URIRef(CHAD)
    assert (chad, RDFS.label, Literal("Chad")) in graph
    assert (chad, SKOS.altLabel, Literal("Republic of Chad")) in graph
    assert (chad, RDF.type, URIRef(COUNTRY)) in graph
    assert (URIRef(BORDERS), RDFS.label, Literal("borders")) in graph
    for t in FACTS:
        assert (URIRef(t.head), URIRef(t.relation), URIRef(t.tail)) in graph
    assert (URIRef(EXPORT_BASE_IRI + "plain_name"), URIRef(EXPORT_BASE_IRI + "rel"), chad) in graph
    assert not list(tmp_path.glob("*.tmp"))


def test_export_tsv_and_unknown_format(filled, tmp_path):
    out = filled.export(tmp_path / "graph.tsv")
    rows = {tuple(line.split("\t")) for line in out.read_text(encoding="utf-8").splitlines()}
    assert rows == {(t.head, t.relation, t.tail) for t in FACTS}
    with pytest.raises(InputError):
        filled.export(tmp_path / "graph.ttl", format="no-such-format")
    with pytest.raises(InputError):
        filled.export(tmp_path / "graph.unknown")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.tsv"]


# ------------------------------------------------------------------ connection
def test_constructor_connects_lazily():
    store = Neo4jStore(f"bolt://127.0.0.1:{_closed_port()}", password="x")
    assert store._driver is None
    store.close()


def test_unreachable_server_is_store_unavailable():
    uri = f"bolt://127.0.0.1:{_closed_port()}"
    with Neo4jStore(uri, password="x") as store:
        with pytest.raises(StoreUnavailableError) as err:
            store.count_triples()
        with pytest.raises(StoreUnavailableError):
            store.add([Triple("a", "r", "b")])
    message = str(err.value)
    assert uri in message and "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert err.value.retryable


def test_wrong_password_is_store_unavailable(bolt_server):
    store = Neo4jStore(bolt_server.uri, bolt_server.user, "wrong-password", database=bolt_server.database)
    with pytest.raises(StoreUnavailableError, match="refused the credentials") as err:
        store.entity("x")
    assert bolt_server.uri in str(err.value)
    with pytest.raises(StoreUnavailableError, match="refused the credentials"):
        store.add([Triple("a", "r", "b")])
    store.close()


def test_missing_database_is_a_clear_error(bolt_server):
    with Neo4jStore(bolt_server.uri, bolt_server.user, bolt_server.password, database="nosuchdb") as store:
        with pytest.raises(GraphStoreError, match="'nosuchdb' does not exist"):
            store.count_entities()
        with pytest.raises(GraphStoreError, match="'nosuchdb' does not exist"):
            store.add([Triple("a", "r", "b")])


def test_bad_uri_is_a_graph_store_error():
    with pytest.raises(GraphStoreError, match="cannot use Neo4j URI"):
        Neo4jStore("ftp://example.org").count_triples()


def test_from_settings_and_registry(bolt_server):
    settings = Settings(
        neo4j_uri=bolt_server.uri,
        neo4j_user=bolt_server.user,
        neo4j_password=bolt_server.password,
        neo4j_database=bolt_server.database,
    )
    store = Neo4jStore.from_settings(settings)
    assert (store.uri, store.user, store.database) == (bolt_server.uri, bolt_server.user, bolt_server.database)
    assert store.count_triples() >= 0
    assert "wrong" not in repr(store) and bolt_server.password not in repr(store)
    store.close()
    assert stores.get("neo4j") is Neo4jStore


def test_literal_valued_statements_are_kept_as_attributes_and_exported(neo4j_store, tmp_path):
    from kgllm.graph.loaders import load_report

    source = tmp_path / "numbers.ttl"
    source.write_text(
        f'@prefix ex: <{EX}> .\nex:chad ex:neighborOf ex:niger ; ex:population 17 ; ex:motto "Unité" .\n',
        encoding="utf-8",
    )
    report = load_report(neo4j_store, source)
    assert (report.new_triples, report.attributes, report.attributes_dropped) == (1, 2, 0)
    assert neo4j_store.attribute_values(EX + "chad", EX + "population") == [17]
    assert neo4j_store.relations() == [EX + "neighborOf"]  # attributes are not relations
    assert neo4j_store.count_triples() == 1
    exported = Graph().parse(neo4j_store.export(tmp_path / "out.ttl"))
    assert (URIRef(EX + "chad"), URIRef(EX + "population"), Literal(17)) in exported
    assert (URIRef(EX + "chad"), URIRef(EX + "motto"), Literal("Unité")) in exported


def test_routing_uri_reads_and_writes_through_the_cluster_routing_driver(bolt_server, neo4j_store):
    routed = Neo4jStore(
        bolt_server.uri.replace("bolt://", "neo4j://"),
        bolt_server.user,
        bolt_server.password,
        database=neo4j_store.database,
    )
    try:
        assert routed.add(FACTS[:2]) == 2
        assert set(routed.triples(CHAD)) == {FACTS[0]} and set(neo4j_store.triples(NIGER)) == {FACTS[1]}
    finally:
        routed.close()


def test_reads_go_through_read_transactions_and_writes_through_write_transactions(neo4j_store, monkeypatch):
    """What lets a cluster route them: the driver sends ``execute_read`` to readers, ``execute_write`` to the leader."""
    import neo4j

    calls = []
    for name in ("execute_read", "execute_write"):
        original = getattr(neo4j.Session, name)

        def recording(session, work, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(session, work, *args, **kwargs)

        monkeypatch.setattr(neo4j.Session, name, recording)
    neo4j_store.add(FACTS, ENTITIES)
    assert calls == ["execute_write"]
    calls.clear()
    assert neo4j_store.label(CHAD) == "Chad" and neo4j_store.count_triples() == len(FACTS)
    assert calls == ["execute_read", "execute_read"]
