"""Triples -> text with a really trained tiny verbalization adapter, and the facts ``describe`` reads."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.llm import TrainingConfig, train_causal_lm
from kgllm.pipelines.augment.adapters import AdapterConfig, ensure_adapter, load_adapted, training_info
from kgllm.pipelines.augment.kg2text import Verbalizer, entity_facts, verbalize_pairs, verbalize_prompt
from kgllm.settings import Settings
from kgllm.types import Entity, Triple

ENTRIES = [
    ([["Alice_Smith", "birthPlace", "Paris"]], "Alice Smith was born in Paris."),
    ([["Acme_Corp", "location", "Berlin"]], "Acme Corp is in Berlin."),
    ([["Bob_Stone", "employer", "Acme_Corp"], ["Bob_Stone", "birthPlace", "Rome"]],
     "Bob Stone, born in Rome, works for Acme Corp."),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny base model and a verbalization adapter, through the adapter cache (about 15 s)."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("kg2text")
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps({"triples": t, "texts": [text]}) + "\n" for t, text in ENTRIES))
    base = root / "base"
    texts = [verbalize_prompt([tuple(x.replace("_", " ") for x in f) for f in t]) + " " + text for t, text in ENTRIES]
    train_causal_lm(texts, base, TrainingConfig(hidden_size=64, num_layers=2, num_heads=2, vocab_size=300,
                                                batch_size=3, learning_rate=3e-3, warmup_steps=5, epochs=20,
                                                threads=1, max_seq_len=128), progress=False)
    settings = Settings(cache_dir=root / "cache")
    config = AdapterConfig(rank=8, alpha=16, learning_rate=1e-2, batch_size=3, epochs=150, max_minutes=0.5)
    tokenizer = AutoTokenizer.from_pretrained(base)
    adapter = ensure_adapter("verbalize", base, lambda: verbalize_pairs(tokenizer, train), "tiny", config, settings,
                             progress=False)
    again = ensure_adapter("verbalize", base, lambda: pytest.fail("trained twice"), "tiny", config, settings)
    assert again == adapter
    yield base, adapter
    torch.set_num_threads(threads)


def test_adapter_is_cached_with_its_training_record(trained):
    _, adapter = trained
    info = training_info(adapter)
    assert info["kind"] == "verbalize" and info["examples"] == len(ENTRIES) and info["steps"] > 0
    assert (adapter / "adapter_model.safetensors").is_file()


def test_trained_adapter_verbalizes_the_triple_sets_it_learned(trained):
    verbalizer = Verbalizer(load_adapted(*trained, threads=1))
    triple_sets = [[tuple(x.replace("_", " ") for x in f) for f in t] for t, _ in ENTRIES]
    assert verbalizer.verbalize(triple_sets) == [text for _, text in ENTRIES]


def test_entity_facts_are_labelled_and_bounded():
    store = RDFLibStore()
    alice, paris, bob = "http://example.org/alice", "http://example.org/paris", "http://example.org/bob"
    store.add([Triple(alice, "http://example.org/birthPlace", paris), Triple(bob, "http://example.org/knows", alice)],
              [Entity(alice, "Alice Smith")])
    assert entity_facts(store, alice) == [("Alice Smith", "birth place", "Paris"), ("Bob", "knows", "Alice Smith")]
    assert entity_facts(store, alice, limit=1) == [("Alice Smith", "birth place", "Paris")]
