import os
import subprocess
import sys
from pathlib import Path

import pytest
from rdflib import URIRef

from kgllm.exceptions import InputError, ParseError
from kgllm.graph.algorithms import personalized_pagerank, shortest_paths, to_networkx
from kgllm.graph.demo import demo_graph_path
from kgllm.graph.labels import readable
from kgllm.graph.loaders import load, load_report, read_file
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


def test_a_nul_byte_anywhere_is_refused_with_its_line(tmp_path):
    (tmp_path / "kg.tsv").write_bytes(b"a\tb\tc\n" * 3000 + b"x\ty\tz\x00\n")  # far past the first 8 KB
    store = RDFLibStore(tmp_path / "kg.ttl")
    with pytest.raises(ParseError, match=r"kg.tsv:3001: NUL byte \(binary file, not text\) at column 6"):
        load(store, tmp_path / "kg.tsv")
    assert not (tmp_path / "kg.ttl").exists()
    (tmp_path / "kg.nt").write_text(f'<{BASE}a> <{BASE}b> <{BASE}c> .\n<{BASE}a> <{BASE}b> "x\x1by" .\n')
    with pytest.raises(ParseError, match=r"kg.nt:2: control character U\+001B at column"):
        read_file(tmp_path / "kg.nt")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.ttl", "@prefix ex: <http://e/> .\nex:a ex:b ex:c .\nex:a ex:b .\n", r"bad.ttl:3: bad syntax: objectList"),
        (
            "bad.nt",
            "<http://e/a> <http://e/b> <http://e/c> .\n<http://e/a> <http://e/b> .\n",
            r"bad.nt:2: bad syntax: ",
        ),
        ("end.nt", "<http://e/a> <http://e/b> <http://e/c>\n", r"end.nt:1: bad syntax: expected ' \.' to end"),
        ("bad.jsonld", '{"@id": "http://e/a",\n,}', r"bad.jsonld:2: not valid JSON: .*\(column 1\)"),
        (
            "shape.jsonld",
            '{"@context": 5, "@id": "http://e/a"}',
            r"shape.jsonld: not valid JSON-LD \(\w+Error: \S",
        ),
        (
            "bad.rdf",
            '<?xml version="1.0"?>\n<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n<a>\n',
            r"bad.rdf:4: not valid XML: ",
        ),
        ("bad.csv", 'head,relation,tail\na,b,"c\n', r"bad.csv:2: not valid CSV \(unexpected end of data\)"),
    ],
)
def test_syntax_errors_name_file_line_and_reason(tmp_path, name, text, expected):
    (tmp_path / name).write_text(text)
    with pytest.raises(ParseError, match=expected):
        read_file(tmp_path / name)


def test_literal_valued_facts_are_kept_as_attributes_and_counted(tmp_path):
    (tmp_path / "kg.ttl").write_text(
        "@prefix ex: <http://example.org/> .\n@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .\n"
        'ex:chad ex:neighborOf ex:niger ; ex:population 17000000 ; rdfs:label "Chad" ; rdfs:comment "landlocked" .\n'
        "[] ex:about ex:chad .\n"
    )
    data = read_file(tmp_path / "kg.ttl")
    assert [(t.head, t.tail) for t in data.triples] == [(BASE + "chad", BASE + "niger")]
    assert sorted((p, str(o)) for _, p, o in data.attributes) == [
        (BASE + "population", "17000000"),
        ("http://www.w3.org/2000/01/rdf-schema#comment", "landlocked"),
    ]
    assert data.skipped == 1  # the blank node's statement, counted and reported
    store = RDFLibStore(tmp_path / "store.nt")
    report = load_report(store, tmp_path / "kg.ttl")
    assert (report.new_triples, report.attributes, report.skipped) == (1, 2, 1)
    assert "2 literal-valued attributes kept" in report.line()
    assert store.count_attributes() == 2 and store.count_triples() == 1
    assert store.relations() == [BASE + "neighborOf"]  # attributes are not relations
    reopened = RDFLibStore(tmp_path / "store.nt")
    assert reopened.count_attributes() == 2
    assert sorted(str(o) for _, p, o in reopened.graph if p == URIRef(BASE + "population")) == ["17000000"]


def test_cli_load_creates_a_missing_folder_and_refuses_a_file_in_the_way_in_one_line(tmp_path):
    (tmp_path / "kg.tsv").write_text("chad\tneighborOf\tniger\n")
    target = tmp_path / "no" / "such" / "dir" / "g.ttl"
    created = cli("load", "kg.tsv", "--into", str(target), "--no-index", tmp_path=tmp_path)
    assert created.returncode == 0, created.stderr
    assert "loaded 1 new triples" in created.stdout and target.is_file()
    blocked = cli("load", "kg.tsv", "--into", str(tmp_path / "kg.tsv" / "g.ttl"), "--no-index", tmp_path=tmp_path)
    assert blocked.returncode == 1
    assert blocked.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'kg.tsv' / 'g.ttl'}: a file is in the way of its folder {tmp_path / 'kg.tsv'}"
    ]


def cli(*args, tmp_path):
    """``kgllm ARGS`` as a real process running this checkout's code."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "KGLLM_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "300"}
    command = [sys.executable, "-c", "from kgllm.cli import main; main()", *args]
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
