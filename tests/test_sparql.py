"""The read-only SPARQL 1.1 Protocol endpoint, driven by real SPARQL clients (SPARQLWrapper and
rdflib's SPARQLStore) against a live server over the demo graph, behind an API key."""

import csv
import io
import json

import httpx
import pytest
from rdflib import Graph, URIRef

import kgllm
from kgllm.server import create_app, running_server, sparql
from kgllm.session import Session

pytestmark = pytest.mark.slow

KEY = "sparql-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TYPES_OF = "SELECT ?s ?o WHERE { ?s a ?o } ORDER BY ?s ?o"
ALL = "SELECT ?s ?p ?o WHERE { ?s ?p ?o }"


@pytest.fixture(scope="module")
def served(encoder):
    """The demo graph behind an API key, served on loopback."""
    with (
        kgllm.connect(encoder=encoder, use_model=False) as session,
        running_server(create_app(session, api_key=KEY)) as url,
    ):
        yield session, f"{url}/sparql"


@pytest.fixture
def wrapper(served):
    SPARQLWrapper = pytest.importorskip("SPARQLWrapper", reason='needs SPARQLWrapper: pip install "kgllm[test]"')
    endpoint = SPARQLWrapper.SPARQLWrapper(served[1])
    endpoint.addCustomHttpHeader("Authorization", f"Bearer {KEY}")
    return endpoint


def _local(session, query):
    return [tuple(row) for row in session.store.graph.query(query)]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_sparqlwrapper_select_as_json_matches_the_local_engine(served, wrapper, method):
    from SPARQLWrapper import JSON

    wrapper.setQuery(TYPES_OF)
    wrapper.setReturnFormat(JSON)
    wrapper.setMethod(method)
    bindings = wrapper.query().convert()["results"]["bindings"]
    expected = _local(served[0], TYPES_OF)
    assert len(expected) > 10
    assert [(URIRef(b["s"]["value"]), URIRef(b["o"]["value"])) for b in bindings] == expected


def test_sparqlwrapper_ask_xml_and_csv(served, wrapper):
    from SPARQLWrapper import CSV, JSON, XML

    wrapper.setReturnFormat(JSON)
    wrapper.setQuery("ASK { ?s a ?o }")
    assert wrapper.query().convert()["boolean"] is True
    wrapper.setQuery("ASK { <urn:nothing> ?p ?o }")
    assert wrapper.query().convert()["boolean"] is False
    wrapper.setQuery(TYPES_OF)
    wrapper.setReturnFormat(XML)
    document = wrapper.query().convert()
    assert len(document.getElementsByTagName("result")) == len(_local(served[0], TYPES_OF))
    wrapper.setReturnFormat(CSV)
    rows = list(csv.reader(io.StringIO(wrapper.query().convert().decode())))
    assert rows[0] == ["s", "o"] and len(rows) - 1 == len(_local(served[0], TYPES_OF))


def test_sparqlwrapper_construct_as_turtle(served, wrapper):
    from SPARQLWrapper import TURTLE

    query = "CONSTRUCT { ?s a ?o } WHERE { ?s a ?o }"
    wrapper.setQuery(query)
    wrapper.setReturnFormat(TURTLE)
    graph = Graph().parse(data=wrapper.query().convert(), format="turtle")
    assert set(graph) == set(served[0].store.graph.query(query).graph)


def test_rdflib_sparqlstore_reads_the_graph(served):
    from rdflib.plugins.stores.sparqlstore import SPARQLStore

    remote = Graph(store=SPARQLStore(served[1], headers=dict(AUTH)))
    assert [tuple(row) for row in remote.query(TYPES_OF)] == _local(served[0], TYPES_OF)
    local = served[0].store.graph
    subject = next(iter(local.subjects()))
    assert set(remote.predicate_objects(subject)) == set(local.predicate_objects(subject))
    described = remote.query(f"DESCRIBE <{subject}>").graph
    assert set(local.predicate_objects(subject)) <= set(described.predicate_objects(subject))


@pytest.mark.parametrize(
    "accept, parse",
    [
        ("application/n-triples", lambda text: Graph().parse(data=text, format="nt")),
        ("application/ld+json", lambda text: Graph().parse(data=text, format="json-ld")),
    ],
)
def test_a_construct_answers_in_the_accepted_rdf_format(served, accept, parse):
    query = "CONSTRUCT { ?s a ?o } WHERE { ?s a ?o }"
    response = httpx.post(
        served[1], content=query, headers={**AUTH, "Content-Type": "application/sparql-query", "Accept": accept}
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith(accept)
    assert set(parse(response.text)) == set(served[0].store.graph.query(query).graph)


def test_a_form_post_is_a_query_too(served):
    response = httpx.post(
        served[1], data={"query": "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"}, headers={**AUTH, "Accept": "*/*"}
    )
    assert response.headers["content-type"].startswith("application/sparql-results+json")
    count = int(response.json()["results"]["bindings"][0]["n"]["value"])
    assert count == len(served[0].store.graph) > 0


UPDATES = [
    "INSERT DATA { <urn:a> <urn:b> <urn:c> }",
    "DELETE WHERE { ?s ?p ?o }",
    "PREFIX x: <urn:x:> DELETE { ?s ?p ?o } INSERT { ?s ?p 1 } WHERE { ?s ?p ?o }",
    "LOAD <http://example.org/graph.ttl>",
    "CLEAR DEFAULT",
    "DROP ALL",
    "CREATE GRAPH <urn:g>",
]


@pytest.mark.parametrize("update", UPDATES)
def test_updates_are_refused_however_they_are_sent(served, update):
    before = served[0].store.count_triples()
    sent = [
        httpx.get(served[1], params={"query": update}, headers=AUTH),
        httpx.post(served[1], data={"update": update}, headers=AUTH),
        httpx.post(served[1], content=update, headers={**AUTH, "Content-Type": "application/sparql-update"}),
        httpx.post(served[1], content=update, headers={**AUTH, "Content-Type": "application/sparql-query"}),
    ]
    for response in sent:
        assert response.status_code == 400 and "read-only" in response.json()["error"]["message"]
    assert served[0].store.count_triples() == before


@pytest.mark.parametrize(
    "query, words",
    [
        ("SELECT * WHERE { SERVICE <http://127.0.0.1:1/sparql> { ?s ?p ?o } }", "SERVICE"),
        ("SELECT * FROM <http://127.0.0.1:1/g.ttl> WHERE { ?s ?p ?o }", "FROM"),
        ("SELECT * WHERE { ?s ?p }", "syntax error"),
        ("SELECT * WHERE { ?s x:p ?o }", "x"),
    ],
)
def test_queries_that_would_reach_out_or_do_not_parse_are_refused(served, query, words):
    response = httpx.get(served[1], params={"query": query}, headers=AUTH)
    assert response.status_code == 400 and words in response.json()["error"]["message"]


def test_the_api_key_guards_the_endpoint(served):
    response = httpx.get(served[1], params={"query": "ASK { ?s ?p ?o }"})
    assert response.status_code == 401
    assert httpx.get(served[1], params={"query": "ASK { ?s ?p ?o }"}, headers=AUTH).json()["boolean"] is True


def test_an_unofferable_format_is_406(served):
    response = httpx.get(served[1], params={"query": TYPES_OF}, headers={**AUTH, "Accept": "image/png"})
    assert response.status_code == 406 and "sparql-results+json" in response.json()["error"]["message"]


def test_long_results_are_cut_at_the_row_limit_and_say_so(served, monkeypatch):
    monkeypatch.setattr(sparql, "MAX_ROWS", 7)
    response = httpx.get(served[1], params={"query": ALL}, headers=AUTH)
    assert len(response.json()["results"]["bindings"]) == 7 and response.headers["X-SPARQL-Truncated"] == "7"
    response = httpx.get(served[1], params={"query": "SELECT ?s WHERE { ?s a ?o } LIMIT 3"}, headers=AUTH)
    assert len(response.json()["results"]["bindings"]) == 3 and "X-SPARQL-Truncated" not in response.headers
    construct = httpx.get(
        served[1], params={"query": "CONSTRUCT WHERE { ?s ?p ?o }"}, headers={**AUTH, "Accept": "text/turtle"}
    )
    assert len(Graph().parse(data=construct.text, format="turtle")) == 7


def test_a_query_past_the_time_limit_is_stopped(served, monkeypatch):
    monkeypatch.setattr(sparql, "TIME_LIMIT_S", 0.5)
    slow = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }"  # a cube of the graph
    response = httpx.get(served[1], params={"query": slow}, headers=AUTH, timeout=60)
    assert response.status_code == 503 and "time limit" in response.json()["error"]["message"]
    # the server is free again at once
    assert httpx.get(served[1], params={"query": "ASK { ?s ?p ?o }"}, headers=AUTH).json()["boolean"] is True


def test_a_store_without_sparql_answers_501(neo4j_store, encoder, tmp_path):
    from kgllm.retrieval.retriever import KGRetriever

    session = Session(neo4j_store, KGRetriever(neo4j_store, encoder, index_dir=tmp_path), None, kgllm.Settings())
    with running_server(create_app(session)) as url:
        response = httpx.get(f"{url}/sparql", params={"query": "ASK { ?s ?p ?o }"})
    assert response.status_code == 501 and "does not run SPARQL" in response.json()["error"]["message"]
    assert json.loads(response.text)["error"]["type"] == "http_error"
