"""Text to SPARQL / Cypher with a user's model: what a model writes is checked before it runs (one
read-only query, a LIMIT, no unbounded path), and anything refused falls back to query programs."""

from __future__ import annotations

import pytest
from test_programs import X, small_graph

import kgllm
from kgllm.exceptions import InputError, QueryLimitError, QueryRefusedError
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.llm.openai_compat import OpenAICompatibleLM
from kgllm.pipelines.programs import ProgramAnswerer
from kgllm.pipelines.programs.text_to_query import (
    TextToQueryAnswerer,
    TextToQueryConfig,
    checked_query,
    extract_query,
    language_of,
)
from kgllm.server import create_app, running_server


def test_a_select_without_a_limit_gets_one():
    text = checked_query("SELECT ?s WHERE { ?s ?p ?o }", "sparql", 50)
    assert text.endswith("LIMIT 50")
    kept = "SELECT ?s WHERE { ?s ?p ?o } LIMIT 3"
    assert checked_query(kept, "sparql", 50) == kept
    assert checked_query("MATCH (n:Entity) RETURN n.id;", "cypher", 7) == "MATCH (n:Entity) RETURN n.id\nLIMIT 7"


@pytest.mark.parametrize(
    "text, language, reason",
    [
        ("DELETE WHERE { ?s ?p ?o }", "sparql", "read-only"),
        ("INSERT DATA { <a:x> <a:y> <a:z> }", "sparql", "read-only"),
        ("LOAD <http://example.org/data.ttl>", "sparql", "read-only"),
        ("CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }", "sparql", "only SELECT"),
        ("SELECT * WHERE { SERVICE <http://example.org/sparql> { ?s ?p ?o } }", "sparql", "SERVICE"),
        ("the countries next to Chad", "sparql", "syntax"),
        ("MATCH (n) DETACH DELETE n", "cypher", "DETACH"),
        ("MERGE (n:Entity {id: 'x'}) RETURN n", "cypher", "MERGE"),
        ("CALL dbms.listConfig() YIELD name RETURN name", "cypher", "CALL"),
        ("MATCH p = (a)-[*]->(b) RETURN p", "cypher", "unbounded"),
        ("MATCH p = (a)-[:REL*2..]->(b) RETURN p", "cypher", "unbounded"),
        ("MATCH p = (a)-[:REL*1..9]->(b) RETURN p", "cypher", "unbounded"),
        ("MATCH (n) RETURN n; MATCH (m) DELETE m", "cypher", "one Cypher statement"),
    ],
)
def test_queries_that_write_reach_out_or_loop_are_refused(text, language, reason):
    with pytest.raises(QueryRefusedError, match=reason):
        checked_query(text, language, 100)


def test_bounded_paths_pass():
    checked_query("MATCH p = (a:Entity)-[:REL*1..3]->(b:Entity) RETURN b.id", "cypher", 100)


def test_the_query_is_read_from_a_fenced_reply():
    assert extract_query("Here it is:\n```sparql\nSELECT ?x WHERE { ?x ?p ?o }\n```\nDone.") == (
        "SELECT ?x WHERE { ?x ?p ?o }"
    )
    assert extract_query("  MATCH (n) RETURN n  ") == "MATCH (n) RETURN n"


def test_a_generated_query_that_runs_too_long_is_stopped_with_nothing_written(tmp_path):
    path = tmp_path / "chain.nt"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(20_000):
            handle.write(f"<{X}n{i}> <{X}next> <{X}n{i + 1}> .\n")
    store = RDFLibStore(path)
    before = path.read_bytes()
    text = checked_query("SELECT (COUNT(*) AS ?n) WHERE { ?a ?p ?b . ?b ?q ?c . ?c ?r ?d }", "sparql", 10)
    with pytest.raises(QueryLimitError, match="time limit"):
        store.read_query(text, time_limit=0.05)
    assert path.read_bytes() == before


def test_generated_cypher_that_writes_never_reaches_the_server(neo4j_store):
    triples, entities = small_graph()
    neo4j_store.add(triples, entities)
    before = neo4j_store.count_triples(), neo4j_store.count_entities()
    for text in ("MATCH (n) DETACH DELETE n RETURN count(n)", "MATCH (n:Entity) SET n.label = 'x' RETURN n"):
        with pytest.raises(QueryRefusedError):
            neo4j_store.read_query(text)
    assert (neo4j_store.count_triples(), neo4j_store.count_entities()) == before
    assert language_of(neo4j_store) == "cypher"


def test_bounds_and_options_are_checked():
    with pytest.raises(InputError):
        TextToQueryConfig(max_rows=0)


# =========================================================================
# against kgllm's own OpenAI-compatible endpoint
# =========================================================================


@pytest.fixture(scope="module")
def served(encoder):
    """A session with the default model (trained on the demo graph, cached), served on loopback."""
    with kgllm.connect(encoder=encoder) as session, running_server(create_app(session)) as url:
        yield session, f"{url}/v1"


def test_a_model_that_writes_no_valid_query_falls_back_to_programs(served):
    session, base = served
    store = session.store
    fallback = ProgramAnswerer(store, session.retriever)
    lm = OpenAICompatibleLM(base)
    try:
        answerer = TextToQueryAnswerer(store, lm, fallback, TextToQueryConfig(max_new_tokens=48))
        before = store.count_triples()
        prompt = answerer.writer.prompt("How many neighbours does Mali have?")
        assert "neighborOf" in prompt and "Country" in prompt and "SPARQL" in prompt
        answer = answerer.answer("How many neighbours does Mali have?")
        with pytest.raises(InputError, match="unknown text-to-query option"):
            answerer.answer("How many neighbours does Mali have?", max_hops=2)
    finally:
        lm.close()
    # the demo model answers questions; what it writes is not SPARQL, so it is refused and programs answer
    assert answer.metadata["generated_query_refused"]
    assert answer.text == fallback.answer("How many neighbours does Mali have?").text
    assert answer.text.startswith("7 countries border Mali")
    assert store.count_triples() == before
