"""Triples -> text with a really trained tiny verbalization adapter, and the facts ``describe`` reads."""

from __future__ import annotations

import json

import pytest
import torch

from kgllm.datasets.webnlg import delexicalize, read_webnlg, relexicalize
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.llm import TrainingConfig, train_causal_lm
from kgllm.llm.adapters import AdapterConfig, load_adapted
from kgllm.llm.tuning import RunConfig
from kgllm.pipelines.construction.adapters import TaskTraining, ensure_adapter, training_record
from kgllm.pipelines.construction.kg2text import (
    Verbalizer,
    answer_facts,
    entity_facts,
    fact_sentence,
    grouped,
    verbalize_examples,
    verbalize_prompt,
    with_missing_facts,
)
from kgllm.settings import Settings
from kgllm.types import Answer, Entity, Evidence, GraphPath, Triple

ENTRIES = [
    ([["Alice_Smith", "birthPlace", "Paris"]], "Alice Smith was born in Paris."),
    ([["Acme_Corp", "location", "Berlin"]], "Acme Corp is in Berlin."),
    (
        [["Bob_Stone", "employer", "Acme_Corp"], ["Bob_Stone", "birthPlace", "Rome"]],
        "Bob Stone, born in Rome, works for Acme Corp.",
    ),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny base model and a verbalization adapter, through the adapter cache (about 15 s)."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("kg2text")
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps({"triples": t, "texts": [text]}) + "\n" for t, text in ENTRIES))
    base = root / "base"
    examples = verbalize_examples(train)
    texts = [e.prompt + e.target for e in examples]
    train_causal_lm(
        texts,
        base,
        TrainingConfig(
            hidden_size=64,
            num_layers=2,
            num_heads=2,
            vocab_size=300,
            batch_size=3,
            learning_rate=3e-3,
            warmup_steps=5,
            epochs=20,
            threads=1,
            max_seq_len=128,
        ),
        progress=False,
    )
    settings = Settings(cache_dir=root / "cache")
    training = TaskTraining(
        AdapterConfig(rank=8, alpha=16),
        RunConfig(learning_rate=1e-2, batch_size=3, epochs=150, max_minutes=30, warmup_steps=5),
    )
    adapter = ensure_adapter("verbalize", base, lambda: examples, "tiny", training, settings, progress=False)
    again = ensure_adapter("verbalize", base, lambda: pytest.fail("trained twice"), "tiny", training, settings)
    assert again == adapter
    yield base, adapter
    torch.set_num_threads(threads)


def test_adapter_is_cached_with_its_training_record(trained):
    _, adapter = trained
    record = training_record(adapter)
    assert record.task == "verbalize" and record.method == "lora" and record.steps > 0
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "kgllm_adapter.json").is_file()


def test_trained_adapter_verbalizes_the_triple_sets_it_learned(trained):
    verbalizer = Verbalizer(load_adapted(*trained, threads=1))
    triple_sets = [[tuple(x.replace("_", " ") for x in f) for f in t] for t, _ in ENTRIES]
    assert verbalizer.verbalize(triple_sets) == [text for _, text in ENTRIES]


def test_texts_are_delexicalized_in_the_order_of_the_triples_and_names_go_back():
    triples = [
        ("Battle of Fredericksburg", "commander", "Robert E. Lee"),
        ("Aaron S. Daggett", "battle", "Battle of Fredericksburg"),
    ]
    text = "Aaron S. Daggett fought in the Battle of Fredericksburg, where Robert E Lee was a commander."
    delexicalized = delexicalize(triples, text)
    assert delexicalized == "ENT3 fought in the ENT1, where ENT2 was a commander."  # "Robert E Lee" matched fuzzily
    assert verbalize_prompt(triples) == "Facts: ENT1 | commander | ENT2 ; ENT3 | battle | ENT1\nText:"
    assert relexicalize(delexicalized, triples) == (
        "Aaron S. Daggett fought in the Battle of Fredericksburg, where Robert E. Lee was a commander."
    )
    assert relexicalize("ENT9 and ENT0", triples) == "ENT9 and ENT0"  # no such entity: left as written
    assert delexicalize(triples, "A battle in Virginia.") is None  # names missing: not a training target


def test_training_examples_need_every_entity_in_the_text(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(
        json.dumps(
            {
                "triples": [["Alice_Smith", "birthPlace", "Paris"]],
                "texts": ["Alice Smith was born in Paris.", "She was born in France."],
            }
        )
        + "\n"
    )
    (example,) = verbalize_examples(train)
    assert read_webnlg(train)[0].texts[1] == "She was born in France."
    assert (example.prompt, example.target) == ("Facts: ENT1 | birth place | ENT2\nText:", " ENT1 was born in ENT2.")


def test_entity_facts_are_labelled_and_bounded():
    store = RDFLibStore()
    alice, paris, bob = "http://example.org/alice", "http://example.org/paris", "http://example.org/bob"
    store.add(
        [Triple(alice, "http://example.org/birthPlace", paris), Triple(bob, "http://example.org/knows", alice)],
        [Entity(alice, "Alice Smith")],
    )
    assert entity_facts(store, alice) == [("Alice Smith", "birth place", "Paris"), ("Bob", "knows", "Alice Smith")]
    assert entity_facts(store, alice, limit=1) == [("Alice Smith", "birth place", "Paris")]


def test_an_answer_is_verbalized_from_its_best_path_in_walking_order():
    first, second = Triple("ex:chad", "ex:neighbor", "ex:niger"), Triple("ex:niger", "ex:capital", "ex:niamey")
    labels = {
        "ex:chad": "Chad",
        "ex:neighbor": "neighbor of",
        "ex:niger": "Niger",
        "ex:capital": "capital",
        "ex:niamey": "Niamey",
    }
    best, other = GraphPath("ex:chad", (first, second), 0.9), GraphPath("ex:chad", (first,), 0.5)
    answer = Answer("?", "Niamey", [], Evidence([first, second], [best, other]), 0.9, labels)
    assert answer_facts(answer) == [("Chad", "neighbor of", "Niger"), ("Niger", "capital", "Niamey")]
    assert answer_facts(Answer("?", "not found", [], Evidence(), 0.0)) == []


def test_plain_sentences_read_the_relation_as_written():
    assert fact_sentence("Chad", "located in", "Africa") == "Chad is located in Africa."
    assert fact_sentence("Bob", "knows", "Alice") == "Bob knows Alice."
    assert fact_sentence("Chad", "http://example.org/capital", "N'Djamena") == "The capital of Chad is N'Djamena."


def test_objects_of_one_relation_are_listed_in_one_fact():
    facts = [
        ("Chad", "neighbor of", "Niger"),
        ("Chad", "capital", "N'Djamena"),
        ("Chad", "neighbor of", "Libya"),
        ("Chad", "neighbor of", "Sudan"),
    ]
    assert grouped(facts) == [("Chad", "neighbor of", "Niger, Libya and Sudan"), ("Chad", "capital", "N'Djamena")]


def test_a_fact_the_model_left_out_is_said_plainly():
    facts = [("Alice Smith", "birthPlace", "Paris"), ("Alice Smith", "employer", "Acme Corp")]
    assert with_missing_facts("ENT1 was born in ENT2.", facts) == "ENT1 was born in ENT2. The employer of ENT1 is ENT3."
    complete = "ENT1 was born in ENT2 and works for ENT3."
    assert with_missing_facts(complete, facts) == complete


def test_relations_the_adapter_never_saw_are_said_plainly(trained):
    verbalizer = Verbalizer(load_adapted(*trained, threads=1), known_relations=["birthPlace", "employer", "location"])
    text = verbalizer.verbalize([[("Alice Smith", "birthPlace", "Paris"), ("Alice Smith", "neighbor of", "Bob Stone")]])
    assert text == ["Alice Smith was born in Paris. Alice Smith is neighbor of Bob Stone."]
    assert verbalizer.knows("http://dbpedia.org/ontology/birthPlace") and not verbalizer.knows("neighbor of")
