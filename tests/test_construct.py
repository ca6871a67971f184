"""Document extraction end to end: the triple grammar, a really trained tiny adapter, and the store writes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kgllm.exceptions import InputError, ParseError
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.llm import TrainingConfig, train_causal_lm
from kgllm.llm.adapters import AdapterConfig, merge_adapter
from kgllm.llm.tasks import TaskSplits
from kgllm.llm.tuning import RunConfig, finetune
from kgllm.pipelines.construction.constructor import (
    KGConstructor,
    chunk_spans,
    delete_document,
    read_document,
    read_schema,
    undo_merges,
)
from kgllm.pipelines.construction.extraction import Extractor, extraction_examples, extraction_prompt
from kgllm.pipelines.construction.grammar import TripleGrammar, target_text, text_spans
from kgllm.types import Triple

SENTENCES = {
    "Alice Smith was born in Paris.": [("Alice_Smith", "birthPlace", "Paris")],
    "Bob Stone works for Acme Corp.": [("Bob_Stone", "employer", "Acme_Corp")],
    "Acme Corp is located in Berlin.": [("Acme_Corp", "location", "Berlin")],
    "Carol Jones was born in Rome and works for Globex.": [
        ("Carol_Jones", "birthPlace", "Rome"),
        ("Carol_Jones", "employer", "Globex"),
    ],
}
RELATIONS = ["birthPlace", "employer", "location"]
REPO = Path(__file__).resolve().parents[1]
EX = "http://example.org/"


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("webnlg") / "train.jsonl"
    path.write_text(
        "".join(
            json.dumps({"eid": f"Id{i}", "triples": triples, "texts": [text]}) + "\n"
            for i, (text, triples) in enumerate(SENTENCES.items())
        )
    )
    return path


@pytest.fixture(scope="module")
def extraction_model(train_file, tmp_path_factory):
    """(base, adapter): a tiny base model and an extraction adapter trained on four sentences (about 20 s)."""
    threads = torch.get_num_threads()
    base = tmp_path_factory.mktemp("base") / "model"
    texts = [
        extraction_prompt(t) + " " + " ; ".join(" | ".join(x.replace("_", " ") for x in tr) for tr in triples)
        for t, triples in SENTENCES.items()
    ]
    config = TrainingConfig(
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        vocab_size=300,
        batch_size=4,
        learning_rate=3e-3,
        warmup_steps=5,
        epochs=20,
        threads=1,
        max_seq_len=128,
    )
    train_causal_lm(texts, base, config, progress=False)
    adapter = tmp_path_factory.mktemp("adapter") / "extract"
    finetune(
        base,
        TaskSplits("extract", extraction_examples(train_file), [], []),
        adapter,
        AdapterConfig(rank=8, alpha=16),
        RunConfig(learning_rate=1e-2, batch_size=4, epochs=150, max_minutes=30, warmup_steps=5, save_steps=10_000),
        progress=False,
    )
    yield base, adapter
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def extractor(extraction_model):
    return Extractor.load(*extraction_model, threads=1, relations=RELATIONS)


def test_every_output_the_grammar_allows_is_a_triple_list_of_text_spans(extractor):
    tokenizer = extractor.lm.tokenizer
    text = "Carol Jones was born in Rome and works for Globex."
    for relations in (RELATIONS, None):
        grammar = TripleGrammar(tokenizer, text, relations, max_triples=3)
        rng = random.Random(0)
        for _ in range(30):
            ids = []
            while not ids or (ids[-1] != tokenizer.eos_token_id and len(ids) < 200):
                ids.append(rng.choice(grammar.allowed(ids)))
            for (s, r, o), _, _ in grammar.parse(ids):
                assert s in text_spans(text) and o in text_spans(text)
                assert r in RELATIONS if relations else r.strip()


def test_training_targets_parse_back_to_their_triples(extractor):
    tokenizer = extractor.lm.tokenizer
    triples = [("Carol Jones", "birthPlace", "Rome"), ("Carol Jones", "employer", "Globex")]
    grammar = TripleGrammar(tokenizer, "Carol Jones was born in Rome and works for Globex.", RELATIONS)
    ids = tokenizer(target_text(triples), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert [t for t, _, _ in grammar.parse(ids)] == triples
    assert all(t in grammar.allowed(ids[:i]) for i, t in enumerate(ids))  # the target is a path through the grammar
    itself = tokenizer(target_text([("Carol Jones", "birthPlace", "Carol Jones")]), add_special_tokens=False)[
        "input_ids"
    ]
    assert tokenizer.eos_token_id not in grammar.allowed(itself)  # no fact about itself


def test_trained_adapter_extracts_the_sentences_it_learned(extractor):
    found = extractor.extract(list(SENTENCES))
    for (text, gold), triples in zip(SENTENCES.items(), found):
        expected = {(s.replace("_", " "), r, o.replace("_", " ")) for s, r, o in gold}
        assert {(t.subject, t.relation, t.object) for t in triples} == expected, text
        assert all(0 < t.score <= 1 for t in triples)


def test_extraction_through_the_adapter_equals_the_merged_model(extraction_model, extractor):
    """The adapter served over the shared base decodes as the base with the adapter merged in (greedy)."""
    texts = [*SENTENCES, "Dan Brown was born in Oslo and works for Initech, which is located in Madrid."]
    merged_lm = merge_adapter(*extraction_model)
    for relations in (RELATIONS, None):
        expected = Extractor(merged_lm, relations).extract(texts)
        found = Extractor(extractor.lm, relations).extract(texts)
        assert facts(found) == facts(expected) and any(facts(found))
        assert [t.score for ts in found for t in ts] == pytest.approx(
            [t.score for ts in expected for t in ts], abs=1e-5
        )


def facts(extracted):
    return [[(t.subject, t.relation, t.object) for t in triples] for triples in extracted]


def test_chunks_are_whole_sentences_within_the_limit():
    text = "One two. Three four five!  Six?\n\nSeven eight nine ten eleven."
    spans = chunk_spans(text, max_chars=30)
    assert [text[s:e] for s, e in spans] == ["One two. Three four five!", "Six?", "Seven eight nine ten eleven."]


def test_bad_documents_and_schemas_get_one_line_reasons(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "binary.bin").write_bytes(b"\x89PNG\0\0\x01")
    (tmp_path / "big.txt").write_text("word " * 100)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    for name, reason in (
        ("empty.txt", "empty"),
        ("binary.bin", "binary"),
        ("big.txt", "too large"),
        ("latin1.txt", "not UTF-8"),
        ("missing.txt", "cannot read"),
    ):
        with pytest.raises(InputError, match=reason):
            read_document(tmp_path / name, max_bytes=100)
    (tmp_path / "bad.yaml").write_text("relations: [birthPlace\n  employer: {")
    with pytest.raises(ParseError, match="bad.yaml:.*does not parse"):
        read_schema(tmp_path / "bad.yaml")
    (tmp_path / "none.yaml").write_text("types: [Person]\n")
    with pytest.raises(ParseError, match="non-empty list 'relations'"):
        read_schema(tmp_path / "none.yaml")
    (tmp_path / "ok.yaml").write_text("relations:\n  - employer\n  - {name: birthPlace, head: Person, tail: City}\n")
    schema = read_schema(tmp_path / "ok.yaml")
    assert schema.relations == ["employer", "birthPlace"] and schema.ranges == {"birthPlace": "City"}


BACKENDS = ["rdflib", pytest.param("neo4j", marks=pytest.mark.neo4j)]


@pytest.fixture(params=BACKENDS)
def store(request):
    return request.getfixturevalue("neo4j_store") if request.param == "neo4j" else RDFLibStore()


def test_documents_are_written_versioned_and_deleted_with_provenance(store, extractor, encoder, tmp_path):
    doc = tmp_path / "people.txt"
    doc.write_text("Alice Smith was born in Paris. Bob Stone works for Acme Corp.")  # one sentence a chunk
    constructor = KGConstructor(store, extractor, encoder, merge_log=tmp_path / "merges.jsonl", chunk_chars=40)
    first = constructor.extract_document(doc)
    assert first.status == "added" and len(first.added) == 2
    alice = next(t for t in store.triples() if store.label(t.head) == "Alice Smith")
    [record] = store.provenance(alice)
    assert record.source == first.source and record.source.startswith(str(doc.resolve()) + "@")
    assert record.method == "extracted" and record.model == extractor.name
    assert doc.read_text()[slice(*record.span)] == "Alice Smith was born in Paris"
    assert constructor.extract_document(doc).status == "unchanged"

    doc.write_text("Alice Smith was born in Paris. Carol Jones was born in Rome and works for Globex.")
    second = constructor.extract_document(doc)
    assert {store.label(t.head) for t in store.triples()} == {"Alice Smith", "Carol Jones"}
    assert [store.label(t.head) for t in second.removed] == ["Bob Stone"]
    assert store.find_by_label("Bob Stone") == [] and store.find_by_label("Acme Corp") == []  # went with the fact
    assert [r.source for r in store.provenance(alice)] == [second.source]  # the old version is gone

    other = tmp_path / "other.txt"
    other.write_text("Alice Smith was born in Paris.")
    constructor.extract_document(other)
    deleted = delete_document(store, doc)
    assert {store.label(t.head) for t in deleted.removed} == {"Carol Jones"}
    assert list(store.triples()) == [alice]  # still supported by the other document


def test_a_document_without_triples_is_not_read_again(store, extractor, tmp_path):
    doc = tmp_path / "people.txt"
    doc.write_text("Bob Stone works for Acme Corp.")
    added = KGConstructor(store, extractor).extract_document(doc)
    assert added.status == "added"
    doc.write_text("Alice Smith was born in Paris.")
    strict = KGConstructor(store, extractor, min_score=1.01)  # skips every triple the extractor finds
    empty = strict.extract_document(doc)
    assert empty.status == "no triples" and empty.removed == added.added
    assert store.sources() == [empty.source] and store.count_triples() == 0 and list(store.entities()) == []
    again = strict.extract_document(doc)
    assert (again.status, again.source) == ("unchanged", empty.source)
    assert delete_document(store, doc).removed == [] and store.sources() == []


def test_a_bad_file_fails_alone_and_dry_run_writes_nothing(extractor, tmp_path):
    store = RDFLibStore()
    good, empty = tmp_path / "good.txt", tmp_path / "empty.txt"
    good.write_text("Acme Corp is located in Berlin.")
    empty.write_text("")
    constructor = KGConstructor(store, extractor)
    dry = constructor.run([empty, good], write=False, progress=False)
    assert [r.status for r in dry] == ["failed", "would add"] and "empty document" in dry[0].error
    assert len(dry[1].added) == 1 and store.count_triples() == 0
    assert [r.status for r in constructor.run([empty, good], progress=False)] == ["failed", "added"]
    assert store.count_triples() == 1
    german = tmp_path / "de.txt"
    german.write_text(
        "Der Hund läuft schnell über die Straße und bellt laut, weil er die Katze gesehen hat "
        "und nicht warten will, bis sie wieder kommt."
    )
    assert any("does not look like English" in s for s in constructor.extract_document(german, write=False).skipped)


def test_extracted_mentions_resolve_to_the_entities_the_store_has(extractor, encoder, tmp_path):
    store = RDFLibStore()
    acme = "http://example.org/acme"
    from kgllm.types import Entity, Triple

    store.add(
        [Triple(acme, "http://example.org/industry", "http://example.org/rockets")],
        [Entity(acme, "ACME Corporation", aliases=("Acme Corp",))],
    )
    doc = tmp_path / "acme.txt"
    doc.write_text("Acme Corp is located in Berlin.")
    log = tmp_path / "merges.jsonl"
    result = KGConstructor(store, extractor, encoder, merge_log=log).extract_document(doc)
    [added] = result.added
    assert added.head == acme and store.label(added.tail) == "Berlin"
    assert [(m.mention, m.entity, m.method) for m in result.merges] == [("Acme Corp", acme, "exact")]
    assert json.loads(log.read_text())["mention"] == "Acme Corp"

    assert [e["entity"] for e in undo_merges(log, "Acme Corp")] == [acme]  # kgllm unmerge "Acme Corp"
    again = KGConstructor(store, extractor, encoder, merge_log=log).extract_document(doc, force=True)
    [split] = set(store.triples(relation=added.relation))
    assert split.head != acme and store.label(split.head) == "Acme Corp" and again.merges == []
    assert store.sources(str(doc.resolve())) == [again.source]


def test_schema_classes_type_the_new_entities(extractor, tmp_path):
    from kgllm.pipelines.construction.constructor import Schema
    from kgllm.pipelines.construction.resolution import new_entity_id

    store = RDFLibStore()
    doc = tmp_path / "alice.txt"
    doc.write_text("Alice Smith was born in Paris.")
    schema = Schema(RELATIONS, domains={"birthPlace": "Person"}, ranges={"birthPlace": "City"})
    KGConstructor(store, extractor, schema=schema).extract_document(doc)
    assert store.entity(new_entity_id("Alice Smith")).types == (new_entity_id("Person"),)
    assert store.entity(new_entity_id("Paris")).types == (new_entity_id("City"),)


def test_a_dry_run_queues_its_facts_for_review_and_accepting_one_writes_it_with_its_span(extractor, tmp_path):
    from kgllm.cli.construction import queue_for_review
    from kgllm.graph.review import ReviewQueue
    from kgllm.settings import Settings

    store = RDFLibStore(tmp_path / "graph.ttl")
    document = tmp_path / "acme.txt"
    document.write_text("Acme Corp is located in Berlin.")
    (result,) = KGConstructor(store, extractor).run([document], write=False, progress=False)
    settings = Settings(cache_dir=tmp_path / "cache")
    assert queue_for_review(store, [result], settings) == 1 and store.count_triples() == 0
    queue = ReviewQueue.for_store(store, settings.cache_dir)
    (proposal,) = queue.pending()
    assert proposal.labels[0] == "Acme Corp" and proposal.labels[2] == "Berlin"
    (record,) = proposal.records
    assert record.method == "extracted" and record.source == result.source and record.span is not None
    assert proposal.texts == ("Acme Corp is located in Berlin",)  # the span, from the subject to the object
    assert queue_for_review(store, [result], settings) == 0  # the same dry run again queues nothing new
    queue.accept(proposal.id, store)
    assert list(store.triples()) == [proposal.triple] and store.provenance(proposal.triple) == [record]
    assert store.entity(proposal.triple.head).label == "Acme Corp"
    assert queue.pending() == []


EXTRACT_PROCESS = """
import sys
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.pipelines.construction.constructor import KGConstructor
from kgllm.pipelines.construction.extraction import Extractor

base, adapter, graph, document, *relations = sys.argv[1:]
extractor = Extractor.load(base, adapter, threads=1, relations=relations)
[result] = KGConstructor(RDFLibStore(graph), extractor).run([document], progress=False)
print(result.status, flush=True)
"""


def extraction_process(extraction_model, graph, document) -> subprocess.Popen:
    """The extraction code path in a process of its own, writing to ``graph``."""
    return subprocess.Popen(
        [sys.executable, "-c", EXTRACT_PROCESS, *map(str, extraction_model), str(graph), str(document), *RELATIONS],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_an_extraction_killed_mid_write_leaves_the_graph_whole_and_a_rerun_adds_each_fact_once(
    extraction_model, extractor, tmp_path
):
    doc = tmp_path / "people.txt"
    doc.write_text("Alice Smith was born in Paris. Bob Stone works for Acme Corp.")
    reference = RDFLibStore()  # the same document extracted once, undisturbed
    KGConstructor(reference, extractor).extract_document(doc)
    expected = set(reference.triples())
    assert expected  # the extraction finds facts, so the checks below have something to count

    graph = tmp_path / "kg.ttl"
    old = [Triple(f"{EX}g{i}", f"{EX}r{i % 5}", f"{EX}g{i + 1}") for i in range(20_000)]
    RDFLibStore(graph).add(old)  # large, so that rewriting the file takes long enough to be caught at it
    killed = extraction_process(extraction_model, graph, doc)
    deadline = time.monotonic() + 600
    while not list(tmp_path.glob(".kg.ttl.*.tmp")):
        assert killed.poll() is None, f"the extraction ended before its write: {killed.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "the extraction never started writing"
        time.sleep(0.001)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)

    after_kill = set(RDFLibStore(graph).triples())  # the file parses: the old graph, or the old one and the facts
    assert after_kill in (set(old), set(old) | expected)
    rerun = extraction_process(extraction_model, graph, doc)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert out.split() == (["unchanged"] if after_kill != set(old) else ["added"])
    store = RDFLibStore(graph)
    assert set(store.triples()) == set(old) | expected and store.count_triples() == len(old) + len(expected)
    for fact in expected:  # one provenance record each, from the one version of the document
        assert [(r.source, r.span) for r in store.provenance(fact)] == [
            (r.source, r.span) for r in reference.provenance(fact)
        ]
    assert store.sources() == reference.sources()
    assert not list(tmp_path.glob(".kg.ttl.*.tmp"))  # the killed writer's temporary file is cleared
