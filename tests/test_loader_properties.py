"""Property-based checks of every loader: random valid graphs round-trip through each format,
and random corruptions are refused, naming file and line, with nothing written."""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rdflib import RDF, RDFS, SKOS, XSD, Graph, Literal, URIRef

from kgllm.exceptions import ParseError
from kgllm.graph.loaders import load_report, read_file, write_tsv
from kgllm.graph.rdflib_store import DEFAULT_BASE, RDFLibStore, to_iri
from kgllm.types import Triple

EX = "http://example.org/"
RDF_SUFFIXES = {".ttl": "turtle", ".nt": "nt", ".jsonld": "json-ld", ".rdf": "xml"}
CONTROLS = [chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, 0x85, 0x9F)]
SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)

# Names: printable text a person would write (letters of several scripts, digits, punctuation, inner spaces).
name_text = (
    st.text(
        alphabet=st.characters(
            whitelist_categories=("Lu", "Ll", "Lo", "Nd", "Pd", "Po", "Zs"), blacklist_characters="\t\r\n#"
        ),
        min_size=1,
        max_size=12,
    )
    .map(str.strip)
    .filter(bool)
)
local_name = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)
label_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Cn", "Co"), blacklist_characters="\u2028\u2029"),
    min_size=1,
    max_size=20,
).filter(str.strip)
literal = st.one_of(
    label_text.map(Literal),
    st.integers(-(10**9), 10**9).map(lambda n: Literal(n, datatype=XSD.integer)),
    st.tuples(label_text, st.sampled_from(["en", "fr", "de-ch"])).map(lambda v: Literal(v[0], lang=v[1])),
)


@st.composite
def rdf_graphs(draw) -> Graph:
    """A graph of entity-to-entity triples, labels, aliases, classes and literal-valued attributes."""
    nodes = draw(st.lists(local_name, min_size=2, max_size=8, unique=True))
    relations = draw(st.lists(local_name, min_size=1, max_size=3, unique=True))
    iri = {n: URIRef(EX + "e/" + n) for n in nodes}
    graph = Graph()
    for h, r, t in draw(
        st.lists(st.tuples(st.sampled_from(nodes), st.sampled_from(relations), st.sampled_from(nodes)), max_size=15)
    ):
        graph.add((iri[h], URIRef(EX + "r/" + r), iri[t]))
    for node in draw(st.lists(st.sampled_from(nodes), unique=True)):
        graph.add((iri[node], RDFS.label, Literal(draw(label_text))))
        for alias in draw(st.lists(label_text, max_size=2, unique=True)):
            graph.add((iri[node], SKOS.altLabel, Literal(alias)))
        if draw(st.booleans()):
            graph.add((iri[node], RDF.type, URIRef(EX + "c/" + draw(local_name))))
    for node, prop, value in draw(
        st.lists(st.tuples(st.sampled_from(nodes), st.sampled_from(["size", "note"]), literal), max_size=5)
    ):
        graph.add((iri[node], URIRef(EX + "a/" + prop), value))
    return graph


def expected(graph: Graph):
    triples = {
        (str(s), str(p), str(o))
        for s, p, o in graph
        if isinstance(o, URIRef) and p not in (RDF.type, RDFS.label, SKOS.altLabel)
    }
    attributes = {(str(s), str(p), o) for s, p, o in graph if isinstance(o, Literal) and str(p).startswith(EX)}
    described = {
        str(s): (
            str(graph.value(s, RDFS.label) or ""),
            tuple(sorted(str(a) for a in graph.objects(s, SKOS.altLabel))),
            tuple(sorted(str(c) for c in graph.objects(s, RDF.type))),
        )
        for s in set(graph.subjects(RDFS.label)) | set(graph.subjects(RDF.type)) | set(graph.subjects(SKOS.altLabel))
    }
    return triples, attributes, described


def written(tmp_path: Path, graph: Graph, suffix: str) -> Path:
    path = tmp_path / f"graph{suffix}"
    graph.serialize(path, format=RDF_SUFFIXES[suffix], encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", list(RDF_SUFFIXES))
@SETTINGS
@given(graph=rdf_graphs())
def test_random_rdf_graphs_round_trip(tmp_path, suffix, graph):
    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))  # one folder per example
    data = read_file(written(tmp_path, graph, suffix))
    triples, attributes, described = expected(graph)
    assert {(t.head, t.relation, t.tail) for t in data.triples} == triples
    assert set(data.attributes) == attributes
    assert {e.id: (e.label, e.aliases, e.types) for e in data.entities} == described
    assert data.skipped == 0
    # and through a persisted store: its export reads back the same
    store = RDFLibStore(tmp_path / f"store{suffix}")
    load_report(store, tmp_path / f"graph{suffix}")
    again = read_file(store.export(tmp_path / f"again{suffix}"))
    assert {(t.head, t.relation, t.tail) for t in again.triples} == triples
    assert set(again.attributes) == attributes
    assert store.count_attributes() == len(attributes)


triple_rows = st.lists(st.tuples(name_text, name_text, name_text), min_size=1, max_size=15)


@SETTINGS
@given(rows=triple_rows)
def test_random_tables_round_trip_through_tsv_and_csv(tmp_path, rows):
    minted = {tuple(str(to_iri(part, DEFAULT_BASE)) for part in row) for row in rows}
    tsv = tmp_path / "kg.tsv"
    tsv.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    assert {(t.head, t.relation, t.tail) for t in read_file(tsv).triples} == minted
    buffer = io.StringIO()
    csv.writer(buffer).writerows([("head", "relation", "tail"), *rows])
    (tmp_path / "kg.csv").write_text(buffer.getvalue(), encoding="utf-8")
    assert {(t.head, t.relation, t.tail) for t in read_file(tmp_path / "kg.csv").triples} == minted
    # what write_tsv writes, read_file reads back unchanged
    out = write_tsv([Triple(*row) for row in sorted(minted)], tmp_path / "out.tsv")
    assert {(t.head, t.relation, t.tail) for t in read_file(out).triples} == minted


# ------------------------------------------------------------------- corruptions


def text_files(tmp_path: Path, graph: Graph) -> dict[str, str]:
    """The same graph as each text format."""
    files = {suffix: written(tmp_path, graph, suffix).read_text("utf-8") for suffix in RDF_SUFFIXES}
    rows = [(str(s), str(p), str(o)) for s, p, o in graph if isinstance(o, URIRef)]
    files[".tsv"] = "".join("\t".join(row) + "\n" for row in rows)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([("head", "relation", "tail"), *rows])
    files[".csv"] = buffer.getvalue()
    return files


def assert_refused_and_nothing_written(tmp_path: Path, name: str, text: str, line: int | None) -> ParseError:
    """Loading ``text`` into a persisted store with content fails (at ``line`` when given); the file is unchanged."""
    target = tmp_path / "target.ttl"
    if not target.exists():
        RDFLibStore(target).add([Triple(EX + "kept", EX + "r", EX + "kept2")])
    before = target.read_bytes()
    bad = tmp_path / name
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ParseError) as refused:
        load_report(RDFLibStore(target), bad)
    assert refused.value.path == str(bad)
    if line is not None:
        assert refused.value.line == line, str(refused.value)
    assert re.match(re.escape(str(bad)) + r"(:\d+)?: \w", str(refused.value)), str(refused.value)  # a reason follows
    assert target.read_bytes() == before
    assert not list(tmp_path.glob(".target.ttl.*"))
    return refused.value


@pytest.mark.parametrize("suffix", [".ttl", ".nt", ".jsonld", ".rdf", ".tsv", ".csv"])
@SETTINGS
@given(graph=rdf_graphs(), where=st.floats(0, 1, exclude_max=True), control=st.sampled_from(CONTROLS))
def test_a_control_character_anywhere_is_refused_with_its_line(tmp_path, suffix, graph, where, control):
    text = text_files(tmp_path, graph)[suffix] or "x\ty\tz\n"
    position = int(where * (len(text) + 1))
    corrupted = text[:position] + control + text[position:]
    line = corrupted.count("\n", 0, position) + 1
    error = assert_refused_and_nothing_written(tmp_path, f"bad{suffix}", corrupted, line)
    assert "control character" in str(error) or "NUL" in str(error)


def statement_ends(text: str) -> list[int]:
    """Line numbers (1-based) after which a new statement may start: lines ending a Turtle/N-Triples statement."""
    return [n for n, line in enumerate(text.split("\n"), 1) if line.rstrip().endswith(" .")]


@SETTINGS
@given(graph=rdf_graphs(), choice=st.integers(0, 10**6))
def test_syntax_errors_name_line_and_reason_in_every_format(tmp_path, graph, choice):
    graph.add((URIRef(EX + "x"), URIRef(EX + "y"), URIRef(EX + "z")))  # no file is empty
    files = text_files(tmp_path, graph)

    # Turtle and N-Triples: a statement without its object, inserted between two statements
    for suffix in (".ttl", ".nt"):
        lines = files[suffix].split("\n")
        after = statement_ends(files[suffix])
        at = after[choice % len(after)]
        lines.insert(at, f"<{EX}a> <{EX}b> .")
        error = assert_refused_and_nothing_written(tmp_path, f"bad{suffix}", "\n".join(lines), at + 1)
        assert "bad syntax" in str(error)

    # JSON-LD: cut anywhere before its end
    text = files[".jsonld"].rstrip()
    cut = text[: choice % len(text)]
    error = assert_refused_and_nothing_written(tmp_path, "bad.jsonld", cut, None)
    assert re.search(r"bad\.jsonld:\d+: not valid JSON: \w", str(error)), str(error)

    # TSV: a row loses a field
    rows = files[".tsv"].rstrip("\n").split("\n")
    n = choice % len(rows)
    rows[n] = rows[n].rsplit("\t", 1)[0]
    error = assert_refused_and_nothing_written(tmp_path, "bad.tsv", "\n".join(rows) + "\n", n + 1)
    assert "expected 3 non-empty tab-separated fields" in str(error)

    # CSV: a row loses a field (line numbers count the header)
    rows = files[".csv"].rstrip("\n").split("\n")
    n = 1 + choice % (len(rows) - 1)
    rows[n] = rows[n].rsplit(",", 1)[0]
    error = assert_refused_and_nothing_written(tmp_path, "bad.csv", "\n".join(rows) + "\n", n + 1)
    assert "expected head, relation and tail" in str(error)


def test_escaped_control_characters_in_rdf_terms_are_refused(tmp_path):
    (tmp_path / "esc.nt").write_text(f'<{EX}a> <{EX}b> "x\\u0000y" .\n')
    with pytest.raises(ParseError, match=r"esc.nt: literal .* control character U\+0000"):
        read_file(tmp_path / "esc.nt")
    (tmp_path / "esc.ttl").write_text(f"<{EX}a\\u0007> <{EX}b> <{EX}c> .\n")
    with pytest.raises(ParseError, match=r"control character U\+0007"):
        read_file(tmp_path / "esc.ttl")
    json.loads('{"ok": 1}')  # the JSON module itself accepts escapes; the check is on the parsed terms
