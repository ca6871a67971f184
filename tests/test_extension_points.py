"""One contract per extension point, run against every registered implementation, plus a check that
third-party packages can register their own through entry points.

The graph-store contract lives in ``test_stores.py``; this file covers language models, KGE models and
encoders, and fails when a registered implementation has no case here.
"""

import math
import sys

import numpy as np
import pytest

import kgllm
from kgllm.exceptions import ConfigurationError, InputError
from kgllm.graph import GraphStore, open_store, stores
from kgllm.llm import GenerationConfig, LanguageModel, models
from kgllm.llm.default import ensure_default_model
from kgllm.pipelines.completion.completer import CompletionConfig
from kgllm.pipelines.completion.evaluation import filtered_ranks, ranking_metrics
from kgllm.pipelines.completion.jobs import split_valid
from kgllm.pipelines.completion.kge import KGEConfig, Vocabulary, kge_models, train_kge
from kgllm.registry import Registry
from kgllm.retrieval.encoder import encoders
from kgllm.server import create_app, running_server
from kgllm.settings import Settings

LM_BACKENDS = ["hf", "openai"]
KGE_MODELS = ["complex", "distmult"]
ENCODERS = ["minilm"]


def test_every_registered_implementation_has_a_contract_case():
    assert set(models.names()) == set(LM_BACKENDS)
    assert set(kge_models.names()) == set(KGE_MODELS)
    assert set(encoders.names()) == set(ENCODERS)


# ------------------------------------------------------------------ language models
@pytest.fixture(scope="module")
def served_session(encoder):
    """The default model trained on the demo graph (cached), local and behind kgllm's own /v1."""
    with kgllm.connect(encoder=encoder) as session, running_server(create_app(session)) as url:
        yield session, f"{url}/v1"


@pytest.fixture(params=LM_BACKENDS)
def language_model(request, served_session):
    session, base_url = served_session
    if request.param == "hf":
        yield models.get("hf").from_settings(
            Settings(), ensure_default_model(session.store, Settings(), progress=False)
        )
        return
    lm = models.get("openai").from_settings(Settings(openai_base_url=base_url))
    yield lm
    lm.close()


@pytest.mark.slow
def test_language_model_contract(language_model):
    assert isinstance(language_model, LanguageModel)
    config = GenerationConfig(max_new_tokens=8)
    first = language_model.generate(["Question: Where is Kenya located?\nAnswer:"], config)
    assert len(first) == 1 and len(first[0]) == 1 and isinstance(first[0][0], str)
    assert language_model.generate(["Question: Where is Kenya located?\nAnswer:"], config) == first
    allowed = [" Eastern Africa", " Europe", " Western Asia"]
    assert language_model.generate(["Kenya located in"], allowed=allowed)[0][0] in allowed
    scores = language_model.score("Kenya located in", allowed)
    assert len(scores) == 3 and all(math.isfinite(s) and s < 0 for s in scores)
    assert language_model.score("Kenya located in", []) == []
    with pytest.raises(InputError):
        language_model.score("Kenya located in", [""])


def test_the_backend_is_chosen_by_a_registered_name(tmp_path):
    assert Settings().backend_name() == "hf"
    assert Settings(openai_base_url="http://127.0.0.1:9/v1").backend_name() == "openai"
    with pytest.raises(ConfigurationError, match="unknown language model 'gpt5'; choose one of: hf, openai"):
        Settings(llm="gpt5")
    with pytest.raises(ConfigurationError, match="no model directory"):
        kgllm.llm.open_model(settings=Settings(cache_dir=tmp_path))


# ------------------------------------------------------------------ KGE models
@pytest.fixture(scope="module")
def demo_split():
    triples = sorted(open_store().triples(), key=lambda t: (t.head, t.relation, t.tail))
    train, held_out = split_valid(triples, CompletionConfig(valid_fraction=0.1, max_valid=10_000))
    return train, held_out[::2], held_out[1::2]


@pytest.mark.parametrize("name", KGE_MODELS)
def test_kge_model_contract(name, demo_split):
    """Every KGE model learns held-out facts far above chance on the demo graph in a few seconds."""
    train, valid, test = demo_split
    vocabulary = Vocabulary.from_triples(train + valid + test)
    config = KGEConfig(model=name, dim=32, max_epochs=30, seconds=30, eval_every=10)
    trained = train_kge(train, config, valid, progress=False, vocabulary=vocabulary)
    known = np.concatenate([vocabulary.encode(split) for split in demo_split])
    metrics = ranking_metrics(filtered_ranks(trained.tail_scores, vocabulary.encode(test), known))
    chance = np.mean(1 / np.arange(1, len(vocabulary.entities) + 1))
    assert metrics["mrr"] > 5 * chance


# ------------------------------------------------------------------ encoders
@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_contract(name):
    encoder = encoders.resolve(name, {"device": "cpu"})
    vectors = encoder.encode(["Chad", "Republic of Chad", "photosynthesis"])
    assert vectors.shape == (3, encoder.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


# ------------------------------------------------------------------ third-party registrations
def test_stores_and_options_are_checked_against_the_registry():
    with pytest.raises(ConfigurationError, match="unknown graph store 'foo'; choose one of: neo4j, oxigraph, rdflib"):
        open_store(store="foo")
    with pytest.raises(ConfigurationError, match="unknown graph store"):
        Settings(store="foo")


PLUGIN_MODULE = """
from kgllm.graph.rdflib_store import RDFLibStore


class ReadOnlyDemoStore(RDFLibStore):
    name = "readonly-demo"
"""


def test_a_package_registers_a_store_through_an_entry_point(tmp_path, monkeypatch):
    """A real installed distribution (dist-info on sys.path) adds a store to the ``kgllm.stores`` group."""
    (tmp_path / "kgllm_demo_plugin.py").write_text(PLUGIN_MODULE)
    info = tmp_path / "kgllm_demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kgllm-demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[kgllm.stores]\nreadonly-demo = kgllm_demo_plugin:ReadOnlyDemoStore\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("graph store", GraphStore, entry_points="kgllm.stores")
    for name in stores.names():
        registry.register(name, stores.get(name))
    assert "readonly-demo" in registry.names()
    store = registry.get("readonly-demo").from_settings(Settings())
    assert store.count_triples() > 1000
    assert "kgllm_demo_plugin" in sys.modules
