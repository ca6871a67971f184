"""Programs compiled to SPARQL and Cypher: every shape run by each store's own engine gives what the
protocol executor computes, values are bound as parameters, and nothing is written."""

from __future__ import annotations

import pytest
from rdflib import Literal
from test_programs import RDF_TYPE, X, small_graph

from kgllm.exceptions import QueryLimitError, QueryRefusedError
from kgllm.graph.queries import check_cypher, prepare_sparql
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.pipelines.programs import Executor, ExecutorConfig, ProgramError, ProgramLimitError, parse_program
from kgllm.pipelines.programs.compiler import compile_program
from kgllm.pipelines.programs.language import ClassSet, Count, EntityRef, FilterClass, Hop

B = X + "border"
POPULATION = X + "population"
# Avalon 30, Brigadoon 30 (ties), Camelot 5, Dunmore "12" (a plain string that reads as a number), Elbonia none
POPULATIONS = {"avalon": Literal(30), "brigadoon": Literal(30.0), "camelot": Literal(5), "dunmore": Literal("12")}

SHAPES = [
    f"(entity {X}avalon)",
    f"(class {X}Country)",
    f"(hop {B} both (entity {X}camelot))",
    f"(hop {X}in out (entity {X}avalon))",
    f"(hop {X}in in (entity {X}north))",
    f"(hop {X}partOf in (hop {X}in out (entity {X}dunmore)))",
    f"(count (hop {B} both (entity {X}camelot)))",
    f"(count (class {X}Country))",
    f"(count (and (hop {B} both (entity {X}avalon)) (hop {B} both (entity {X}camelot))))",
    f"(and (hop {B} both (entity {X}avalon)) (hop {B} both (entity {X}camelot)))",
    f"(or (hop {B} both (entity {X}avalon)) (hop {B} both (entity {X}elbonia)))",
    f"(minus (hop {B} both (entity {X}camelot)) (hop {X}in in (entity {X}north)))",
    f"(filter-class {X}Region (hop {X}in out (entity {X}avalon)))",
    f"(filter-class {X}Country (hop {X}in out (entity {X}avalon)))",
    f"(where {X}in out (entity {X}north) (hop {B} both (entity {X}camelot)))",
    f"(where-not {X}in out (entity {X}north) (hop {B} both (entity {X}camelot)))",
    f"(where {B} both (class {X}Country) (class {X}Country))",
    f"(where-not {B} both (class {X}Country) (class {X}Country))",
    f"(exists (and (hop {B} both (entity {X}avalon)) (entity {X}camelot)))",
    f"(exists (and (hop {B} both (entity {X}avalon)) (entity {X}dunmore)))",
    f"(exists (where {X}in out (entity {X}south) (hop {B} both (entity {X}brigadoon))))",
    f"(argmax 1 (degree {B} both) (class {X}Country))",
    f"(argmin 1 (degree {B} both) (class {X}Country))",
    f"(argmax 2 (degree {B} both) (class {X}Country))",
    f"(argmax 9 (degree {B} both) (class {X}Country))",
    f"(argmax 1 (degree {X}in in) (class {X}Region))",
    f"(hop {X}in out (argmax 1 (degree {B} both) (class {X}Country)))",
    f"(count (argmax 2 (degree {B} both) (hop {X}in in (entity {X}north))))",
    f"(argmax 1 (value {POPULATION}) (class {X}Country))",
    f"(argmin 1 (value {POPULATION}) (class {X}Country))",
    f"(argmin 2 (value {POPULATION}) (class {X}Country))",
    f"(hop {X}in out (argmin 1 (value {POPULATION}) (class {X}Country)))",
    f"(compare more (degree {B} both) {X}camelot {X}elbonia)",
    f"(compare fewer (degree {B} both) {X}camelot {X}elbonia)",
    f"(compare same (degree {B} both) {X}avalon {X}dunmore)",
    f"(compare more (value {POPULATION}) {X}avalon {X}dunmore)",
    f"(compare same (value {POPULATION}) {X}avalon {X}brigadoon)",
]

REFUSED = [
    (f"(count (hop {B} both (entity {X}atlantis)))", "no entity"),
    (f"(compare more (degree {B} both) {X}camelot {X}north)", "different kinds"),
    (f"(compare more (degree {B} both) {X}north {X}south)", "cannot be compared"),
    (f"(compare more (value {POPULATION}) {X}avalon {X}elbonia)", "no value"),
    (f"(argmax 1 (value {X}area) (class {X}Country))", "has a value"),
    (f"(hop {X}in out (argmax 1 (value {X}area) (class {X}Country)))", "has a value"),
]


@pytest.fixture(params=["rdflib", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def store(request):
    triples, entities = small_graph()
    attributes = [(X + name, POPULATION, value) for name, value in POPULATIONS.items()]
    store = RDFLibStore() if request.param == "rdflib" else request.getfixturevalue("neo4j_store")
    store.add(triples, entities, attributes=attributes)
    return store


def both_ways(store, text: str):
    program = parse_program(text)
    compiled = Executor(store, ExecutorConfig(engine="query")).run(program)
    protocol = Executor(store, ExecutorConfig(engine="protocol")).run(program)
    return compiled, protocol


@pytest.mark.parametrize("text", SHAPES)
def test_every_shape_run_as_a_query_matches_the_protocol_executor(store, text):
    before = (store.count_triples(), store.count_entities())
    compiled, protocol = both_ways(store, text)
    assert compiled.query is not None and protocol.query is None
    assert compiled.query.language == ("sparql" if store.name == "rdflib" else "cypher")
    assert (compiled.kind, compiled.value, compiled.members) == (protocol.kind, protocol.value, protocol.members)
    assert compiled.scores == protocol.scores
    # the facts given as support are facts of the graph, and they touch the members
    for fact in compiled.support:
        assert fact in set(store.triples(fact.head, fact.relation, fact.tail))
    if compiled.kind in ("set", "count") and compiled.support:
        touched = {x for t in compiled.support for x in (t.head, t.tail)}
        assert touched & set(compiled.members)
    assert (store.count_triples(), store.count_entities()) == before


def test_a_count_query_supports_its_answer_with_the_facts_counted(store):
    compiled, _ = both_ways(store, f"(count (hop {B} both (entity {X}camelot)))")
    others = {t.tail if t.head == X + "camelot" else t.head for t in compiled.support}
    assert compiled.value == 3 and others == {X + "avalon", X + "brigadoon", X + "dunmore"}


def test_a_no_from_a_query_shows_the_facts_checked(store):
    compiled, _ = both_ways(store, f"(exists (and (hop {B} both (entity {X}avalon)) (entity {X}dunmore)))")
    assert compiled.value is False and compiled.query is not None
    assert {t.tail if t.head == X + "avalon" else t.head for t in compiled.checked} == {X + "brigadoon", X + "camelot"}


@pytest.mark.parametrize("text, message", REFUSED)
def test_programs_refused_as_queries_are_refused_with_the_protocol_reason(store, text, message):
    for engine in ("query", "protocol"):
        with pytest.raises(ProgramError, match=message):
            Executor(store, ExecutorConfig(engine=engine)).run(parse_program(text))


def test_a_set_past_the_size_bound_is_refused_by_the_query(store):
    with pytest.raises(ProgramLimitError, match="more than 3 members"):
        Executor(store, ExecutorConfig(max_set_size=3, engine="query")).run(
            parse_program(f"(count (class {X}Country))")
        )


@pytest.mark.parametrize("language", ["sparql", "cypher"])
@pytest.mark.parametrize("text", SHAPES)
def test_ids_are_bound_as_parameters_never_written_into_the_query(language, text):
    query = compile_program(parse_program(text), language)
    assert X not in query.text
    assert all(value.startswith(X) for value in query.parameters.values() if isinstance(value, str))


def test_ids_that_look_like_query_text_are_only_values(store):
    before = store.count_triples()
    hostile = X + '"} DELETE WHERE { ?s ?p ?o } #'
    with pytest.raises(ProgramError, match="no entity"):
        Executor(store, ExecutorConfig(engine="query")).run(Count(Hop(B, "both", EntityRef(hostile))))
    program = Count(FilterClass("x' }) DETACH DELETE n //", ClassSet("a` MATCH (n) DETACH DELETE n")))
    assert Executor(store, ExecutorConfig(engine="query")).run(program).value == 0
    assert store.count_triples() == before


def test_compiled_queries_are_read_only_by_the_stores_own_checks():
    for text in SHAPES:
        program = parse_program(text)
        prepare_sparql(compile_program(program, "sparql").text)
        check_cypher(compile_program(program, "cypher").text)


@pytest.mark.parametrize(
    "text, message",
    [
        ("INSERT DATA { <a:x> <a:y> <a:z> }", "read-only"),
        ("SELECT * WHERE { SERVICE <http://example.org/sparql> { ?s ?p ?o } }", "SERVICE"),
        ("SELECT * FROM <http://example.org/g> WHERE { ?s ?p ?o }", "FROM"),
        ("SELECT WHERE", "syntax"),
    ],
)
def test_sparql_that_writes_or_reaches_out_is_refused(text, message):
    with pytest.raises(QueryRefusedError, match=message):
        prepare_sparql(text)


@pytest.mark.parametrize(
    "text, word",
    [
        ("MATCH (n) DETACH DELETE n RETURN 1", "DETACH"),
        ("CREATE (n:Entity {id: 'x'}) RETURN n", "CREATE"),
        ("MATCH (n) SET n.label = 'x' RETURN n", "SET"),
        ("MERGE (n:Entity {id: 'x'}) RETURN n", "MERGE"),
        ("CALL dbms.components() YIELD name RETURN name", "CALL"),
        ("LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row", "LOAD CSV"),
        ("MATCH (n) RETURN n; MATCH (m) DELETE m", "one Cypher statement"),
        ("MATCH (n) REMOVE n.label RETURN n", "REMOVE"),
        ("MATCH (n) FOREACH (x IN [1] | SET n.y = x) RETURN n", "FOREACH"),
    ],
)
def test_cypher_that_writes_is_refused_before_it_runs(text, word):
    with pytest.raises(QueryRefusedError, match=word):
        check_cypher(text)


def test_cypher_reads_pass_the_check_even_with_write_words_in_strings_and_properties():
    check_cypher("MATCH (n:Entity) WHERE n.label = 'CREATE a SET' AND n.set IS NULL RETURN n.id AS id")
    check_cypher("CALL { MATCH (n) RETURN n } RETURN n")


def test_read_queries_bound_rows_and_refuse_writes(store):
    before = store.count_triples()
    if store.name == "rdflib":
        rows = store.read_query("SELECT ?s WHERE { ?s ?p ?o } LIMIT 3", max_rows=3)
        with pytest.raises(QueryLimitError, match="more than 2 rows"):
            store.read_query("SELECT ?s WHERE { ?s ?p ?o }", max_rows=2)
        with pytest.raises(QueryRefusedError):
            store.read_query("DELETE WHERE { ?s ?p ?o }")
    else:
        rows = store.read_query("MATCH (n:Entity) RETURN n.id AS id LIMIT 3", max_rows=3)
        with pytest.raises(QueryLimitError, match="more than 2 rows"):
            store.read_query("MATCH (n:Entity) RETURN n.id AS id", max_rows=2)
        with pytest.raises(QueryRefusedError):
            store.read_query("MATCH (n) DETACH DELETE n RETURN 1")
    assert len(rows) == 3 and store.count_triples() == before


def test_a_query_past_its_time_limit_is_stopped(tmp_path):
    path = tmp_path / "big.nt"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(20_000):
            handle.write(f"<{X}n{i}> <{X}rel> <{X}n{i + 1}> .\n<{X}n{i}> <{RDF_TYPE}> <{X}Big> .\n")
    store = RDFLibStore(path)
    with pytest.raises(QueryLimitError, match="time limit"):
        store.read_query("SELECT (COUNT(*) AS ?n) WHERE { ?a ?p ?b . ?b ?q ?c . ?c ?r ?d }", time_limit=0.05)
    program = parse_program(f"(count (where {X}rel both (class {X}Big) (class {X}Big)))")
    with pytest.raises(ProgramLimitError, match="time limit"):
        Executor(store, ExecutorConfig(time_limit=0.05, max_set_size=100_000, engine="query")).run(program)
