"""Hostile input against the HTTP API, over both stores (rdflib, and Neo4j through a real Bolt server):
injection-shaped text, API-key cases, 1 MB bodies, path traversal and odd Unicode. Every one of them is
answered with a 2xx or a 4xx that says why, nothing is written, and the server keeps serving."""

import json
import socket
from urllib.parse import quote, urlsplit

import httpx
import pytest

import kgllm
from kgllm.api import Session
from kgllm.graph.demo import demo_graph_path
from kgllm.graph.loaders import load
from kgllm.retrieval.retriever import KGRetriever
from kgllm.server import create_app, running_server

KEY = "s3cret-Key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DEMO_TRIPLES = 1165
ONE_MB = 1024 * 1024

INJECTIONS = [
    'chad" } ?s ?p ?o . { "',
    "') RETURN n //",
    "x' OR 1=1 --",
    "}} DROP ALL ;",
    "Chad' }) MATCH (n) DETACH DELETE n //",
    "MATCH (n) DETACH DELETE n",
    "CALL dbms.procedures()",
    "LOAD CSV FROM 'file:///etc/passwd' AS line RETURN line",
    "$param",
    "{id: 'x'}",
    "` RETURN 1 //",
    "DELETE WHERE { ?s ?p ?o }",
    "CLEAR ALL",
    "INSERT DATA { <a:b> <a:c> <a:d> }",
    "<http://example.org/x> <http://example.org/y> <http://example.org/z> .",
    "\\u0027; DROP TABLE entities; --",
    "${jndi:ldap://127.0.0.1/a}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "%27%20OR%201%3D1",
]

ODD_UNICODE = [
    "Which countries border \u202eDAHC\u202c?",  # right-to-left override
    "Which countries border C\u200dh\u200ba\u200cd?",  # zero-width joiner, space, non-joiner
    "Which countries border Ｃｈａｄ?",  # full-width letters
    "Which countries border Cha\u0301d?",  # a combining accent
    "Which countries border 🇹🇩 Chad 🏜️?",  # flags and emoji: 4-byte characters
    "\ufeffWhich countries border Chad?",  # a byte-order mark
    "Which countries border Chad\u0000?",  # NUL
    "Which countries border Chad\x1b[31m?",  # a terminal escape
    "Which countries border \ud800Chad?",  # a lone surrogate: no UTF-8 encoding exists
    "Ⅽհаԁ",  # look-alike letters from other scripts
    "\U0010ffff" * 50,  # the last code point
]


def _demo_session(store, encoder, index_dir) -> Session:
    retriever = KGRetriever(store, encoder, index_dir=index_dir)
    retriever.build()
    return Session(store, retriever, None, kgllm.Settings())


@pytest.fixture(scope="module", params=["rdflib", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def served(request, encoder, tmp_path_factory):
    """A server with an API key over the demo graph in either store; yields (base URL, store)."""
    if request.param == "rdflib":
        session = kgllm.connect(use_model=False, encoder=encoder)
    else:
        from kgllm.graph.neo4j_store import Neo4jStore

        bolt = request.getfixturevalue("bolt_server")
        bolt.create_database("hostile")
        store = Neo4jStore(bolt.uri, bolt.user, bolt.password, database="hostile")
        load(store, demo_graph_path())
        session = _demo_session(store, encoder, tmp_path_factory.mktemp("index"))
    with session, running_server(create_app(session, api_key=KEY, time_budget=300)) as url:
        yield url, session.store


@pytest.fixture(scope="module")
def api(served):
    with httpx.Client(base_url=served[0], headers=AUTH, timeout=600) as client:
        yield client


def assert_untouched(api: httpx.Client, store) -> None:
    assert store.count_triples() == DEMO_TRIPLES
    assert api.get("/health").status_code == 200


def message(response: httpx.Response) -> str:
    text = response.json()["error"]["message"]
    assert isinstance(text, str) and text
    return text


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_shaped_text_is_only_ever_data(api, served, text):
    assert api.get("/search", params={"q": text}).json() == {"results": []}
    assert api.get("/entity", params={"id": text}).status_code == 404
    assert api.get("/neighbors", params={"id": text}).status_code == 404
    asked = api.post("/ask", json={"question": text})
    assert asked.status_code == 200 and asked.json()["entities"] == []
    assert_untouched(api, served[1])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer null"},
        {"Authorization": "Bearer s3cret"},  # a prefix of the key
        {"Authorization": f"Bearer {KEY}x"},  # the key and more
        {"Authorization": f"Bearer {KEY.lower()}"},
        {"Authorization": f"Bearer {KEY.upper()}"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
        {"Authorization": f"Token {KEY}"},
        {"Authorization": f"Bearer {KEY[::-1]}"},
        {"Authorization": "Bearer " + "k" * 8000},
        {"Authorization": "Bearer s3cret-Kéy".encode()},
        {"X-API-Key": KEY},
        {"Cookie": f"api_key={KEY}"},
    ],
    ids=lambda headers: repr(headers)[:40],
)
def test_wrong_or_missing_keys_are_refused_on_every_api_route(served, headers):
    url = served[0]
    for method, path, body in [
        ("POST", "/ask", {"question": "Which countries border Chad?"}),
        ("GET", "/search?q=chad", None),
        ("GET", "/entity?id=x", None),
        ("GET", "/neighbors?id=x", None),
        ("GET", "/v1/models", None),
        ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("POST", "/complete", {"queries": []}),
        ("GET", "/jobs/0123", None),
        ("GET", "/sparql?query=ASK%20%7B%3Fs%20%3Fp%20%3Fo%7D", None),
    ]:
        response = httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=60)
        assert response.status_code == 401, (method, path, response.text)
        assert "API key" in message(response)


@pytest.mark.parametrize("query", ["?api_key=" + KEY, "?key=" + KEY, "?token=" + KEY])
def test_the_key_counts_only_in_the_authorization_header(served, query):
    assert httpx.get(f"{served[0]}/v1/models{query}", timeout=60).status_code == 401


def test_the_right_key_opens_the_api_and_the_public_paths_need_none(served):
    url = served[0]
    assert httpx.get(f"{url}/v1/models", headers=AUTH, timeout=60).status_code == 200
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"bearer {KEY}"}, timeout=60).status_code == 200
    for path in ("/", "/health", "/docs", "/openapi.json", "/static/style.css"):
        assert httpx.get(f"{url}{path}", timeout=60).status_code == 200, path


BODY_ROUTES = ["/ask", "/v1/chat/completions", "/v1/completions", "/complete", "/sparql"]


@pytest.mark.parametrize("path", [*BODY_ROUTES, "/health", "/nowhere"])
def test_one_megabyte_bodies_declared_are_refused_before_they_are_read(api, served, path):
    body = json.dumps({"question": "x" * ONE_MB}).encode()
    response = api.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than" in message(response)
    assert_untouched(api, served[1])


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_one_megabyte_bodies_streamed_are_cut_off_while_read(api, served, path):
    body = json.dumps({"question": "x" * ONE_MB}).encode()
    chunks = (body[i : i + 64 * 1024] for i in range(0, len(body), 64 * 1024))
    kind = "application/sparql-query" if path == "/sparql" else "application/json"
    response = api.post(path, content=chunks, headers={"content-type": kind})
    assert response.status_code == 413 and "larger than" in message(response)
    assert_untouched(api, served[1])


def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (HTTP clients resolve ``..`` before sending)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as connection:
        connection.sendall(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize(
    "target",
    [
        "/static/../../../../etc/passwd",
        "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/%252e%252e/%252e%252e/etc/passwd",
        "/static/....//....//etc/passwd",
        "/static/..\\..\\..\\etc\\passwd",
        "/static/../app.py",
        "/static/swagger/../../app.py",
        "/static/%2e%2e/app.py",
        "/static//etc/passwd",
        "/static/index.html%00.css",
        "/../../../../etc/passwd",
    ],
)
def test_paths_that_climb_out_of_the_static_folder_find_nothing(served, target):
    status, body = raw_get(served[0], target)
    assert status in (400, 404), (status, body[:200])
    assert b"root:" not in body and b"import" not in body


@pytest.mark.parametrize("entity", ["../../etc/passwd", "file:///etc/passwd", "/etc/passwd", "..%2f..%2fetc"])
def test_file_paths_as_entity_ids_are_unknown_entities(api, entity):
    response = api.get("/neighbors", params={"id": entity})
    assert response.status_code == 404 and "no entity" in message(response)


@pytest.mark.parametrize("text", ODD_UNICODE, ids=lambda text: ascii(text)[:30])
def test_odd_unicode_is_answered_or_refused_with_a_reason(api, served, text):
    """JSON bodies carry ``\\u`` escapes (a lone surrogate arrives intact); URLs carry the raw bytes."""
    escaped = quote(text.encode("utf-8", "surrogatepass"))  # a lone surrogate as the bytes UTF-8 forbids
    for response in (
        api.post("/ask", content=json.dumps({"question": text}), headers={"content-type": "application/json"}),
        api.get(f"/search?q={quote(text[:200].encode('utf-8', 'surrogatepass'))}"),
        api.get(f"/entity?id={escaped}"),
    ):
        assert response.status_code in (200, 400, 404, 422), (response.status_code, response.text[:300])
        if response.status_code != 200:
            message(response)
    assert_untouched(api, served[1])
