"""kgllm.connect / ask and the session, on small graph files."""

import gc

import pytest

import kgllm
from kgllm.exceptions import ConfigurationError
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.settings import Settings

TSV = "chad\tneighborOf\tniger\nniger\tneighborOf\tchad\nchad\tlocatedIn\tafrica\nniger\tlocatedIn\tafrica\n"


@pytest.fixture
def graph_file(tmp_path):
    path = tmp_path / "mini.tsv"
    path.write_text(TSV)
    return path


@pytest.fixture
def settings(tmp_path):
    return Settings(cache_dir=tmp_path / "cache")


def test_connect_and_ask_on_a_tsv_graph(graph_file, settings, encoder):
    session = kgllm.connect(graph_file, encoder=encoder, use_model=False, settings=settings)
    answer = session.ask("What are the neighbors of Chad?")
    assert [e.label for e in answer.entities] == ["Niger"]
    assert answer.evidence.paths and answer.to_dict()["evidence"] == [[["Chad", "neighbor of", "Niger"]]]


def test_added_facts_are_answerable_at_once(graph_file, settings, encoder):
    session = kgllm.connect(graph_file, encoder=encoder, use_model=False, settings=settings)
    base = "https://kgllm.dev/kg/"
    assert session.add([(base + "chad", base + "neighborOf", base + "libya")]) == 1
    assert {e.label for e in session.ask("What are the neighbors of Chad?").entities} == {"Niger", "Libya"}
    assert session.retriever.link("Is Libya big?")[0].entity.label == "Libya"


def test_index_is_saved_beside_a_graph_file(tmp_path, settings, encoder):
    store = RDFLibStore(tmp_path / "kg.ttl")
    store.add([("a", "r", "b")])
    kgllm.connect(tmp_path / "kg.ttl", encoder=encoder, use_model=False, settings=settings)
    assert (tmp_path / "kg.ttl.index").is_dir()


def test_bad_connect_arguments_fail_clearly(tmp_path, settings):
    with pytest.raises(ConfigurationError, match="no such graph file"):
        kgllm.connect(tmp_path / "missing.ttl", use_model=False, settings=settings)
    with pytest.raises(ConfigurationError, match="ignored"):
        kgllm.connect(RDFLibStore(), use_model=False, settings=settings, base="http://x/")


def test_warm_up_readies_a_session_for_many_questions(graph_file, settings, encoder):
    from kgllm.session import GC_THRESHOLDS

    session = kgllm.connect(graph_file, encoder=encoder, use_model=False, settings=settings)
    thresholds = gc.get_threshold()
    try:
        assert session.warm_up() > 0  # the relation-path phrases of its entities encoded
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == GC_THRESHOLDS
        assert [e.label for e in session.ask("What are the neighbors of Chad?").entities] == ["Niger"]
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_ask_keeps_its_session(graph_file, settings, encoder):
    first = kgllm.ask(
        "What are the neighbors of Chad?", graph_file, encoder=encoder, use_model=False, settings=settings
    )
    assert len(kgllm.api._sessions) >= 1
    again = kgllm.ask("What is Niger located in?", graph_file, encoder=encoder, use_model=False, settings=settings)
    assert [e.label for e in first.entities] == ["Niger"] and [e.label for e in again.entities] == ["Africa"]


def test_default_model_is_trained_once_and_used_for_ranking(graph_file, tmp_path, encoder):
    from kgllm.llm.default import ensure_default_model

    settings = Settings(cache_dir=tmp_path / "cache", train_minutes=0.05, lm_weight=0.5)
    session = kgllm.connect(graph_file, encoder=encoder, settings=settings, progress=False)
    model_dir = ensure_default_model(session.store, settings, progress=False)
    assert (model_dir / "config.json").is_file() and model_dir.parent == settings.cache_dir / "models"
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_default_model(session.store, settings, progress=False) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp
    answer = session.ask("What are the neighbors of Chad?")
    assert answer.metadata["model"] == session.lm.name
    assert all("model" in plan["scores"] for plan in answer.metadata["plans"])
