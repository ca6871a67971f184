"""Claims checked against the demo graph: each status, its evidence, and the same on a Bolt store."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kgllm.bench.claims import build_cases, run_claims_benchmark
from kgllm.exceptions import InputError
from kgllm.graph.demo import demo_graph_path
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.pipelines.enhance.claims import ClaimChecker, ClaimStatus
from kgllm.retrieval.retriever import KGRetriever
from kgllm.types import Entity, Triple

KG = "https://kgllm.dev/countries/"
X = "http://example.org/geo/"
S, C, N = ClaimStatus.SUPPORTED, ClaimStatus.CONTRADICTED, ClaimStatus.NOT_IN_GRAPH


@pytest.fixture(scope="module")
def checker(encoder, tmp_path_factory):
    store = RDFLibStore(demo_graph_path())
    retriever = KGRetriever(store, encoder, index_dir=tmp_path_factory.mktemp("index"))
    retriever.build()
    return ClaimChecker(store, retriever)


def statuses(checker, text):
    return [c.status for c in checker.check(text).claims]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Chad borders Niger.", [S]),
        ("Chad and Niger are neighbours.", [S]),
        ("Kenya is situated in Eastern Africa.", [S]),
        ("Middle Africa is part of Africa.", [S]),
        ("Chad is not in Europe.", [S]),
        ("The neighbours of Chad are Cameroon, Libya and Niger [1].", [S]),
        ("Chad, located in Middle Africa, borders Niger.", [S]),
        ("Chad, located in Middle Africa, borders Spain.", [N]),
        ("Chad lies in Europe.", [C]),
        ("Chad is located in Western Africa.", [C]),
        ("Chad does not border Niger.", [C]),
        ("Chad borders France.", [N]),
        ("Wakanda borders Chad.", [N]),
        ("Ruritania is part of Europe.", [N]),  # one letter from Mauritania: another name, not a typo
        ("The weather is nice today.", [N]),
    ],
)
def test_each_claim_gets_the_status_the_graph_gives_it(checker, text, expected):
    assert statuses(checker, text) == expected


def test_a_text_is_cut_into_claims_with_their_own_statuses(checker):
    report = checker.check("Chad borders Niger, Libya and Sudan and lies in Western Africa. It is in Africa [2].")
    assert [c.text for c in report.claims] == [
        "Chad borders Niger, Libya and Sudan",
        "lies in Western Africa.",
        "It is in Africa [2].",
    ]
    assert [c.status for c in report.claims] == [S, C, S]
    neighbours = report.claims[0].triples
    assert {t.object for t in neighbours} == {"Niger", "Libya", "Sudan"}
    assert all(t.subject_id == KG + "chad" and t.status == S for t in neighbours)
    # the clause without a subject of its own and the pronoun speak of Chad
    assert {t.subject_id for c in report.claims[1:] for t in c.triples} == {KG + "chad"}


def test_a_name_joined_by_and_is_not_cut(checker):
    report = checker.check("Wallis and Futuna is located in Polynesia.")
    assert [c.status for c in report.claims] == [S]
    assert report.claims[0].triples[0].subject_id == KG + "wallis_and_futuna"


def test_evidence_is_the_fact_that_supports_or_contradicts(checker):
    report = checker.check("Chad is located in Western Africa. Chad borders Cameroon.")
    contradicted, supported = report.claims
    [triple] = contradicted.triples
    assert [(f.head, f.relation, f.tail) for f in triple.evidence] == [
        (KG + "chad", KG + "locatedIn", KG + "middle_africa")
    ]
    assert "Middle Africa" in contradicted.reason
    assert supported.triples[0].evidence[0].relation == KG + "neighborOf"
    claims = report.to_dict()["claims"]
    assert claims[0]["triples"][0]["evidence"] == [["Chad", "located in", "Middle Africa"]]
    assert report.to_dict()["counts"] == {"supported": 1, "contradicted": 1, "not_in_graph": 0}


def small_geography():
    """Cities in countries in regions: each place in one place of each class; borders both ways."""
    places = {"lyon": "france", "paris": "france", "turin": "italy", "milan": "italy"}
    places |= {"france": "europe", "italy": "europe", "peru": "americas", "chile": "americas"}
    classes = {"lyon": "City", "paris": "City", "turin": "City", "milan": "City", "europe": "Region"}
    classes |= {"americas": "Region"} | {c: "Country" for c in ("france", "italy", "peru", "chile")}
    triples = [Triple(X + a, X + "in", X + b) for a, b in places.items()]
    triples += [Triple(X + a, X + "border", X + b) for a, b in (("france", "italy"), ("italy", "france"))]
    triples += [Triple(X + a, X + "border", X + b) for a, b in (("peru", "chile"), ("chile", "peru"))]
    entities = [Entity(X + n, n.title(), (), (X + c,)) for n, c in classes.items()]
    entities += [Entity(X + "in", "located in", ("is in",)), Entity(X + "border", "borders", ("neighbor of",))]
    entities += [Entity(X + c, c.lower()) for c in ("City", "Country", "Region")]
    return triples, entities


def small_checker(store, encoder):
    triples, entities = small_geography()
    store.add(triples, entities)
    retriever = KGRetriever(store, encoder)
    retriever.build()
    return ClaimChecker(store, retriever)


def test_a_chain_of_the_same_relation_supports_a_claim(encoder):
    report = small_checker(RDFLibStore(), encoder).check("Lyon is located in Europe.")
    [claim] = report.claims
    assert claim.status == S
    assert [t.tail for t in claim.triples[0].evidence] == [X + "france", X + "europe"]


def test_empty_or_oversized_text_is_refused(checker):
    with pytest.raises(InputError):
        checker.check("  ")
    with pytest.raises(InputError):
        checker.check("Chad borders Niger. " * 2000)


def test_the_benchmark_set_is_checked_with_high_precision_and_recall(checker):
    cases = build_cases(checker.store, countries=8, seed=3)
    result = run_claims_benchmark(checker, cases, progress=False)
    for status in (C, N):
        precision, recall, support = result.scores(status)
        assert support > 0 and precision >= 0.9 and recall >= 0.9, (status, result.misses)


def test_kgllm_check_prints_each_claim_as_json(tmp_path):
    from kgllm.cli import app

    text = tmp_path / "answer.txt"
    text.write_text("Chad borders Niger and is located in Europe.\nAtlantis borders Chad.", encoding="utf-8")
    result = CliRunner().invoke(app, ["check", str(text), "--json"])
    assert result.exit_code == 0, result.output
    claims = json.loads(result.stdout.strip().splitlines()[-1])["claims"]
    assert [(c["text"], c["status"]) for c in claims] == [
        ("Chad borders Niger", "supported"),
        ("is located in Europe.", "contradicted"),
        ("Atlantis borders Chad.", "not_in_graph"),
    ]
    assert claims[1]["triples"][0]["evidence"] == [["Chad", "located in", "Africa"]]


@pytest.mark.neo4j
def test_claims_are_checked_on_the_neo4j_store(neo4j_store, encoder):
    checker = small_checker(neo4j_store, encoder)
    text = "Lyon is in Europe. Milan is located in France. France does not border Italy. Peru borders France. "
    assert statuses(checker, text + "Wakanda borders Chile.") == [S, C, C, N, N]
