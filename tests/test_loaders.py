import pytest

from kgllm.exceptions import InputError, ParseError
from kgllm.graph.algorithms import personalized_pagerank, shortest_paths, to_networkx
from kgllm.graph.demo import demo_graph_path
from kgllm.graph.labels import readable
from kgllm.graph.loaders import load, read_file
from kgllm.graph.rdflib_store import RDFLibStore

BASE = "http://example.org/"


def test_readable_labels():
    assert readable("south_africa") == "South Africa"
    assert readable("http://x.org/kg#neighborOf", relation=True) == "neighbor of"
    assert readable("bosnia_and_herzegovina") == "Bosnia and Herzegovina"
    assert readable("guinea-bissau") == "Guinea-Bissau"


def test_tsv_loads(tmp_path):
    (tmp_path / "kg.tsv").write_text("chad\tneighborOf\tniger\n\n# comment\nniger\tlocatedIn\tafrica\n")
    store = RDFLibStore(base=BASE)
    assert load(store, tmp_path / "kg.tsv", base=BASE) == 2
    assert store.entity("chad").label == "Chad"


def test_malformed_tsv_names_line_and_writes_nothing(tmp_path):
    (tmp_path / "kg.tsv").write_text("chad\tneighborOf\tniger\nniger\tlocatedIn\n")
    store = RDFLibStore()
    with pytest.raises(ParseError, match=r"kg.tsv:2:"):
        load(store, tmp_path / "kg.tsv")
    assert store.count_triples() == 0


def test_csv_with_header(tmp_path):
    (tmp_path / "kg.csv").write_text("subject,predicate,object\nchad,neighborOf,niger\n")
    assert len(read_file(tmp_path / "kg.csv").triples) == 1
    (tmp_path / "bad.csv").write_text("a,b\nchad,niger\n")
    with pytest.raises(ParseError, match="lacks column"):
        read_file(tmp_path / "bad.csv")
    (tmp_path / "short.csv").write_text("head,relation,tail\nchad,neighborOf,niger\nchad,neighborOf\n")
    with pytest.raises(ParseError, match=r"short.csv:3:"):
        read_file(tmp_path / "short.csv")


@pytest.mark.parametrize("suffix", [".ttl", ".nt", ".jsonld"])
def test_rdf_formats_round_trip(tmp_path, suffix):
    demo = RDFLibStore(demo_graph_path())
    out = demo.export(tmp_path / f"demo{suffix}")
    data = read_file(out)
    assert len(data.triples) == demo.count_triples()
    assert any(e.label == "DR Congo" and "Democratic Republic of the Congo" in e.aliases for e in data.entities)


def test_bad_rdf_and_missing_and_binary_files(tmp_path):
    (tmp_path / "bad.ttl").write_text("@prefix ex: <http://e/> .\nex:a ex:b .\n")
    with pytest.raises(ParseError, match="bad.ttl"):
        read_file(tmp_path / "bad.ttl")
    with pytest.raises(InputError, match="no such file"):
        read_file(tmp_path / "missing.tsv")
    (tmp_path / "blob.tsv").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ParseError, match="binary"):
        read_file(tmp_path / "blob.tsv")


def test_networkx_algorithms_on_demo_graph():
    store = RDFLibStore(demo_graph_path())
    kg = "https://kgllm.dev/countries/"
    graph = to_networkx(store, seeds=[kg + "chad"], hops=1)
    assert graph.nodes[kg + "chad"]["label"] == "Chad"
    assert graph.number_of_edges() == len(store.neighbors(kg + "chad"))
    full = to_networkx(store)
    paths = shortest_paths(full, kg + "chad", kg + "kenya")
    assert paths and all(len(p.triples) == 2 and p.end == kg + "kenya" for p in paths)
    ranked = [node for node, _ in personalized_pagerank(full, [kg + "chad"], top_k=5)]
    assert ranked[0] == kg + "chad" and kg + "africa" in ranked
