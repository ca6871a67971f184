"""What only the embedded store does: persistence to a file and SPARQL."""

from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.types import Triple

EX = "http://example.org/"


def test_persisted_store_survives_restart(tmp_path):
    path = tmp_path / "kg.nt"
    with RDFLibStore(path) as store:
        store.add([Triple(EX + "a", EX + "r", EX + "b")])
    assert not (tmp_path / "kg.nt.tmp").exists()
    assert list(RDFLibStore(path).triples()) == [Triple(EX + "a", EX + "r", EX + "b")]


def test_plain_names_are_minted_as_iris():
    store = RDFLibStore(base=EX)
    store.add([("south_africa", "neighborOf", "namibia")])
    assert store.entity("south_africa").id == EX + "south_africa"
    assert store.entity(EX + "south_africa").label == "South Africa"
    assert store.label("neighborOf") == "neighbor of"


def test_sparql_takes_bindings_as_parameters():
    store = RDFLibStore()
    store.add([Triple(EX + "a", EX + "r", EX + "b"), Triple(EX + "c", EX + "r", EX + "b")])
    rows = store.query("SELECT ?s WHERE { ?s ?p ?o }", o=EX + "b")
    assert sorted(str(r.s) for r in rows) == [EX + "a", EX + "c"]


def test_edges_are_read_again_after_a_write_here_or_by_another_writer(tmp_path):
    path = tmp_path / "kg.nt"
    store = RDFLibStore(path)
    store.add([Triple(EX + "a", EX + "r", EX + "b")])
    edges = store.neighbors(EX + "a", "both")
    edges.clear()  # the caller's copy: the store's own is untouched
    assert store.neighbors(EX + "a", "both") == [Triple(EX + "a", EX + "r", EX + "b")]
    store.add([Triple(EX + "c", EX + "r", EX + "a")])
    assert len(store.neighbors(EX + "a", "both")) == 2
    with RDFLibStore(path) as other:  # a second writer of the same file
        other.add([Triple(EX + "a", EX + "s", EX + "d")])
    store.add([Triple(EX + "e", EX + "r", EX + "f")])  # a write catches up with the file first
    assert Triple(EX + "a", EX + "s", EX + "d") in store.neighbors(EX + "a", "both")
