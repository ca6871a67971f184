"""The shared retriever on a small countries graph, with the real MiniLM encoder and real FAISS."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from kgllm.exceptions import ConfigurationError, RetrievalError
from kgllm.graph.rdflib_store import RDFLibStore, to_iri
from kgllm.retrieval import (
    Encoder,
    KGRetriever,
    SentenceTransformerEncoder,
    VectorIndex,
    encoder_from_settings,
    encoders,
)
from kgllm.retrieval.index import META_FILE
from kgllm.retrieval.linking import DEMONYM_SCORE
from kgllm.settings import Settings
from kgllm.types import Entity, Evidence, Triple

NEIGHBORS = [
    ("chad", "libya"),
    ("chad", "niger"),
    ("chad", "sudan"),
    ("chad", "cameroon"),
    ("chad", "nigeria"),
    ("niger", "nigeria"),
    ("kenya", "ethiopia"),
    ("kenya", "somalia"),
    ("south_africa", "namibia"),
    ("south_africa", "botswana"),
    ("united_states", "canada"),
    ("united_states", "mexico"),
]
LOCATED = [
    ("chad", "middle_africa"),
    ("kenya", "eastern_africa"),
    ("south_africa", "southern_africa"),
    ("middle_africa", "africa"),
    ("eastern_africa", "africa"),
    ("southern_africa", "africa"),
    ("united_states", "northern_america"),
    ("canada", "northern_america"),
]
TRIPLES = [Triple(h, "neighborOf", t) for h, t in NEIGHBORS] + [Triple(h, "locatedIn", t) for h, t in LOCATED]
ENTITIES = [Entity("united_states", "United States", aliases=("USA", "US"))]
N_LABELS = 22  # 20 entities + two aliases


class CountingEncoder(Encoder):
    """The real encoder, counting the texts it is asked to encode."""

    def __init__(self, inner: Encoder):
        self.inner = inner
        self.name = inner.name
        self.texts = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def _encode(self, texts: list[str]) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.encode(texts)


@pytest.fixture
def counting(encoder) -> CountingEncoder:
    """The real MiniLM (``encoder``, loaded once per session in conftest), counting."""
    return CountingEncoder(encoder)


def make_store(triples=TRIPLES) -> RDFLibStore:
    store = RDFLibStore()
    store.add(triples, ENTITIES)
    return store


def t(head: str, relation: str, tail: str) -> Triple:
    """A triple with the ids the store mints for plain names."""
    return Triple(str(to_iri(head)), str(to_iri(relation)), str(to_iri(tail)))


@pytest.fixture
def retriever(counting) -> KGRetriever:
    r = KGRetriever(make_store(), counting)
    r.build()
    return r


def unit(rows: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---------------------------------------------------------------- encoder
def test_encoder_output_is_normalized_float32_of_model_dim(encoder):
    vectors = encoder.encode(["Chad borders Libya.", "Kenya is in Eastern Africa.", "x"])
    assert encoder.dim == 384
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[2], encoder.encode("x")[0], atol=1e-4)  # batching keeps the input order
    assert encoder.encode([]).shape == (0, 384)


def test_similar_sentences_are_closer_than_unrelated_ones(encoder):
    a, b, c = encoder.encode(
        ["Chad shares a border with Libya", "Libya is a neighbour of Chad", "Whisk two eggs with a cup of flour"]
    )
    assert a @ b > a @ c + 0.3


def test_query_encodes_are_cached_and_match_batch_encodes(counting):
    first = counting.encode_query("Which countries border Chad?")
    again = counting.encode_query("Which countries border Chad?")
    assert again is first and counting.texts == 1
    assert not first.flags.writeable
    np.testing.assert_allclose(first, counting.encode(["Which countries border Chad?"])[0], atol=1e-6)


def test_bad_model_path_is_a_retrieval_error_naming_it(tmp_path):
    bad = SentenceTransformerEncoder(tmp_path / "no-model")
    with pytest.raises(RetrievalError, match="no-model"):
        bad.encode(["text"])


def test_encoder_from_settings(tmp_path):
    assert "minilm" in encoders.names()
    assert isinstance(encoder_from_settings(Settings(encoder="minilm")), SentenceTransformerEncoder)
    local = encoder_from_settings(Settings(encoder=str(tmp_path)))
    assert local.name == str(tmp_path.resolve())
    with pytest.raises(ConfigurationError, match="nowhere"):
        encoder_from_settings(Settings(encoder=str(tmp_path / "nowhere")))


def test_onnx_backend_gives_the_torch_vectors_and_traces_once(tmp_path, monkeypatch):
    from kgllm.retrieval import onnx_runtime

    texts = ["Chad", "Which subregions are the neighbours of Chad in?", "Kenya is in Eastern Africa, beside Uganda."]
    in_torch = SentenceTransformerEncoder(backend="torch")
    in_onnx = SentenceTransformerEncoder(backend="onnx", cache_dir=tmp_path)
    np.testing.assert_allclose(in_onnx.encode(texts), in_torch.encode(texts), atol=1e-5)  # a padded batch
    np.testing.assert_allclose(in_onnx.encode(texts[2]), in_torch.encode(texts[2]), atol=1e-5)  # one, unpadded
    assert in_onnx._onnx is not None and in_torch._onnx is None
    assert [p.name for p in (tmp_path / "encoders").iterdir() if p.is_dir()] == [
        f"all-MiniLM-L6-v2-{onnx_runtime.export_key(in_onnx.model_path or _bundled())}"
    ]

    def no_second_trace(*args):
        raise AssertionError("traced again")

    monkeypatch.setattr(onnx_runtime, "_export", no_second_trace)
    again = SentenceTransformerEncoder(backend="auto", cache_dir=tmp_path)
    np.testing.assert_allclose(again.encode(texts), in_torch.encode(texts), atol=1e-5)
    assert again._onnx is not None


def test_a_trace_that_differs_from_torch_is_never_used(tmp_path, monkeypatch, caplog):
    from kgllm.retrieval import onnx_runtime

    monkeypatch.setattr(onnx_runtime, "TOLERANCE", -1.0)  # no trace can pass
    with pytest.raises(RetrievalError, match="differs from torch"):
        SentenceTransformerEncoder(backend="onnx", cache_dir=tmp_path).encode(["Chad"])
    assert not [p for p in (tmp_path / "encoders").iterdir() if p.is_dir()]  # nothing cached
    fallback = SentenceTransformerEncoder(backend="auto", cache_dir=tmp_path)
    with caplog.at_level("WARNING"):
        vector = fallback.encode(["Chad"])
    assert fallback._onnx is None and "runs in torch" in caplog.text
    np.testing.assert_allclose(vector, SentenceTransformerEncoder(backend="torch").encode(["Chad"]), atol=1e-6)


def test_encoder_backend_is_checked_and_comes_from_the_settings(tmp_path):
    with pytest.raises(ConfigurationError, match="unknown encoder backend 'tensorrt'"):
        SentenceTransformerEncoder(backend="tensorrt")
    with pytest.raises(ConfigurationError, match="runs on CPU"):
        SentenceTransformerEncoder(backend="onnx", device="cuda")
    assert SentenceTransformerEncoder(backend="auto", device="cuda")._onnx_form(None, tmp_path) is None
    built = encoder_from_settings(Settings(encoder_backend="torch", cache_dir=tmp_path))
    assert isinstance(built, SentenceTransformerEncoder)
    assert (built.backend, built.cache_dir) == ("torch", tmp_path)


def _bundled():
    from kgllm.retrieval.encoder import _bundled_minilm_path

    return _bundled_minilm_path()


# ---------------------------------------------------------------- index
def test_index_add_search_replace_remove():
    vectors = unit(5)
    index = VectorIndex(dim=8, encoder_name="test")
    index.add(["a", "b", "c", "d", "e"], vectors)
    hits = index.search(vectors[:2], k=2)
    assert [row[0][0] for row in hits] == ["a", "b"]
    assert hits[0][0][1] == pytest.approx(1.0, abs=1e-5)

    index.add(["a"], vectors[4])  # replace: "a" now sits where "e" is
    assert len(index) == 5
    assert {key for key, _ in index.search(vectors[4], k=2)[0]} == {"a", "e"}
    assert index.search(vectors[0], k=1)[0][0][0] != "a"

    assert index.remove(["b", "unknown"]) == 1
    assert len(index) == 4 and "b" not in index
    assert "b" not in [key for key, _ in index.search(vectors[1], k=10)[0]]
    np.testing.assert_allclose(index.vectors(["c"])[0], vectors[2], atol=1e-6)


def test_index_save_load_round_trip(tmp_path):
    vectors = unit(6)
    index = VectorIndex(dim=8, encoder_name="test")
    index.add([f"k{i}" for i in range(6)], vectors)
    index.remove(["k3"])
    index.save(tmp_path)
    index.add(["k9"], vectors[0])
    index.save(tmp_path)  # a second save replaces the first

    loaded = VectorIndex.load(tmp_path, encoder_name="test", dim=8)
    assert sorted(loaded.keys()) == sorted(index.keys())
    assert loaded.search(vectors, k=3) == index.search(vectors, k=3)
    # the file the previous sidecar named is kept for a reader that read it just before; older ones go
    assert len(list(tmp_path.glob("*.faiss"))) == 2
    index.save(tmp_path)
    assert len(list(tmp_path.glob("*.faiss"))) == 2


def test_index_load_refuses_another_encoder(tmp_path):
    index = VectorIndex(dim=8, encoder_name="model-a")
    index.add(["a"], unit(1))
    index.save(tmp_path)
    with pytest.raises(RetrievalError, match="model-a"):
        VectorIndex.load(tmp_path, encoder_name="model-b", dim=8)
    with pytest.raises(RetrievalError, match="dim"):
        VectorIndex.load(tmp_path, encoder_name="model-a", dim=16)


def test_hnsw_above_threshold_with_removal_replacement_and_persistence(tmp_path):
    vectors = unit(40, seed=1)
    keys = [f"k{i}" for i in range(40)]
    index = VectorIndex(dim=8, encoder_name="test", hnsw_threshold=10)
    index.add(keys[:8], vectors[:8])
    assert index.kind == "flat"
    index.add(keys[8:], vectors[8:])
    assert index.kind == "hnsw"
    assert [row[0][0] for row in index.search(vectors[:5], k=1)] == keys[:5]

    index.remove(["k0", "k1"])  # few: tombstoned, filtered from results
    index.add(["k2"], vectors[3])
    found = {key for key, _ in index.search(vectors[:4], k=40)[0]}
    assert found == set(keys) - {"k0", "k1"} and len(index) == 38
    assert {key for key, _ in index.search(vectors[3], k=2)[0]} == {"k2", "k3"}

    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path, encoder_name="test", dim=8, hnsw_threshold=10)
    assert loaded.kind == "hnsw"
    assert {key for key, _ in loaded.search(vectors[0], k=40)[0]} == found

    loaded.remove(keys[10:30])  # many: the graph is rebuilt without them
    loaded.save(tmp_path)
    # the save before this one's file is kept beside it (for a reader still on it): read the current one
    current = json.loads((tmp_path / META_FILE).read_text(encoding="utf-8"))["vectors_file"]
    assert faiss.read_index(str(tmp_path / current)).ntotal == len(loaded) == 18
    assert {key for key, _ in loaded.search(vectors[0], k=40)[0]} == found - set(keys[10:30])


# ---------------------------------------------------------------- linking
def linked(retriever: KGRetriever, question: str) -> list[tuple[str, str]]:
    return [(link.entity.label, link.method) for link in retriever.link(question)]


def test_links_exact_labels_only(retriever):
    assert linked(retriever, "Which countries border Chad?") == [("Chad", "exact")]
    assert linked(retriever, "Which of these countries border us?") == []  # "us" is a stop word
    assert linked(retriever, "Is Niger next to Nigeria?") == [("Niger", "exact"), ("Nigeria", "exact")]


def test_links_possessives_aliases_and_longest_match(retriever):
    assert linked(retriever, "What are Chad's neighbours?") == [("Chad", "exact")]
    assert linked(retriever, "Does the USA border Canada?") == [("Canada", "exact"), ("United States", "exact")]
    assert linked(retriever, "Does the US border Canada?") == [("Canada", "exact"), ("United States", "exact")]
    assert linked(retriever, "Where is South Africa?") == [("South Africa", "exact")]


def test_links_the_adjective_of_a_place_to_the_place(counting):
    places = [("germany", "europe"), ("china", "asia"), ("peru", "south_america")]
    retriever = KGRetriever(make_store(TRIPLES + [Triple(h, "locatedIn", t) for h, t in places]), counting)
    retriever.build()
    links = retriever.link("Which African countries border Nigeria and which European ones border Germany?")
    assert {(link.mention, link.entity.label, link.score) for link in links} == {
        ("African", "Africa", DEMONYM_SCORE),
        ("European", "Europe", DEMONYM_SCORE),
        ("Nigeria", "Nigeria", 1.0),
        ("Germany", "Germany", 1.0),
    }
    assert linked(retriever, "Which South American countries border Kenyan or Chinese ones?") == [
        ("China", "exact"),
        ("Kenya", "exact"),
        ("South America", "exact"),
    ]
    assert linked(retriever, "Which human came from Asia?") == [("Asia", "exact")]  # no place named "huma"


def test_links_typos_by_fuzzy_match(retriever):
    assert linked(retriever, "Where is Keyna located?") == [("Kenya", "fuzzy")]
    assert linked(retriever, "Is Souht Africa in Africa?") == [("Africa", "exact"), ("South Africa", "fuzzy")]


def test_an_exact_mention_wins_over_a_fuzzy_one_that_adds_words_to_it(counting):
    retriever = KGRetriever(make_store([t("christiane_eberhardine", "spouse", "augustus_ii")]), counting)
    retriever.build()
    # "old christiane eberhardine" is 4 edits from the label in 26 letters: its fuzzy score x length
    # weighs as much as the exact "christiane_eberhardine" (1.0 x 22)
    links = retriever.link("Who married old christiane_eberhardine?")
    assert [(link.mention, link.method) for link in links] == [("christiane_eberhardine", "exact")]


def test_links_by_embedding_as_last_resort(retriever):
    assert linked(retriever, "What borders the Nigerien state?") == [("Niger", "embedding")]
    assert linked(retriever, "How many people live there?") == []


# ---------------------------------------------------------------- retriever
def test_constructor_has_no_side_effects(counting, tmp_path):
    KGRetriever(make_store(), counting, index_dir=tmp_path / "index")
    assert counting.texts == 0 and not (tmp_path / "index").exists()


def test_build_indexes_labels_and_facts(retriever, counting):
    assert len(retriever.label_index) == N_LABELS and len(retriever.fact_index) == len(TRIPLES)
    assert counting.texts == N_LABELS + len(TRIPLES)
    ((top, score),) = retriever.search_facts("Chad neighbor of Libya", k=1)
    assert top == t("chad", "neighborOf", "libya") and score > 0.9


def test_refresh_encodes_only_new_items(retriever, counting):
    before = counting.texts
    retriever.store.add([Triple("egypt", "neighborOf", "libya")], [Entity("egypt", "Egypt")])
    stats = retriever.refresh()
    assert (stats.labels_added, stats.facts_added, stats.encoded) == (1, 1, 2)
    assert counting.texts - before == 2
    assert t("egypt", "neighborOf", "libya") in [
        f for f, _ in retriever.search_facts("Which countries border Egypt?", 3)
    ]
    assert [link.entity.label for link in retriever.link("Is Egypt in Africa?")] == ["Africa", "Egypt"]


def test_saved_index_reloads_without_encoding_and_drops_deleted_facts(counting, encoder, tmp_path):
    KGRetriever(make_store(), counting, index_dir=tmp_path).build()
    assert (tmp_path / "facts").is_dir() and (tmp_path / "entities").is_dir()

    reloaded = CountingEncoder(encoder)
    stats = KGRetriever(make_store(), reloaded, index_dir=tmp_path).build()
    assert stats.encoded == 0 and reloaded.texts == 0

    gone = Triple("chad", "neighborOf", "libya")
    smaller = KGRetriever(make_store([x for x in TRIPLES if x != gone]), CountingEncoder(encoder), index_dir=tmp_path)
    stats = smaller.build()
    assert (stats.facts_removed, stats.encoded) == (1, 0)
    facts = [f for f, _ in smaller.search_facts("Chad neighbor of Libya", k=len(TRIPLES))]
    assert t("chad", "neighborOf", "libya") not in facts and len(facts) == len(TRIPLES) - 1
    again = CountingEncoder(encoder)
    assert KGRetriever(make_store([x for x in TRIPLES if x != gone]), again, index_dir=tmp_path).build().encoded == 0


def test_expand_scores_stored_vectors(retriever, counting):
    before = counting.texts
    chad = t("chad", "neighborOf", "libya").head
    facts = retriever.expand([chad], "Which region is Chad located in?", hops=2, max_facts=3)
    assert counting.texts - before == 1  # the question only
    assert facts[0][0] == t("chad", "locatedIn", "middle_africa")
    assert [s for _, s in facts] == sorted((s for _, s in facts), reverse=True) and len(facts) == 3
    two_hops = {f for f, _ in retriever.expand([chad], "Which region is Chad located in?", hops=2, max_facts=50)}
    assert t("middle_africa", "locatedIn", "africa") in two_hops and t("kenya", "neighborOf", "somalia") not in two_hops


def test_retrieve_returns_evidence_with_the_gold_facts(retriever):
    evidence = retriever.retrieve("Which countries border Chad?", k=8)
    assert isinstance(evidence, Evidence) and "expansion" in evidence.source
    for neighbour in ("libya", "niger", "sudan", "cameroon", "nigeria"):
        assert t("chad", "neighborOf", neighbour) in evidence.triples
    assert [p.triples[-1] for p in evidence.paths] == evidence.triples
    assert [p.score for p in evidence.paths] == sorted((p.score for p in evidence.paths), reverse=True)
    assert evidence.score == evidence.paths[0].score > 0

    typo = retriever.retrieve("Where is Keyna located?", k=3)
    assert t("kenya", "locatedIn", "eastern_africa") in typo.triples
    region = retriever.retrieve("Which continent is Middle Africa in?", k=3)
    assert region.triples[0] == t("middle_africa", "locatedIn", "africa")


def test_deferred_fact_index_still_scores_the_neighbourhood(counting):
    retriever = KGRetriever(make_store(), counting, index_facts=False)
    retriever.build()
    assert len(retriever.label_index) == N_LABELS and len(retriever.fact_index) == 0
    assert counting.texts == N_LABELS
    chad = t("chad", "neighborOf", "libya").head
    facts = retriever.expand([chad], "Which region is Chad located in?", hops=1, max_facts=1)
    assert facts[0][0] == t("chad", "locatedIn", "middle_africa")  # encoded as asked


class FailingEncoder(CountingEncoder):
    """The real encoder, failing once it has encoded ``budget`` texts (an indexing run cut short)."""

    def __init__(self, inner: Encoder, budget: int):
        super().__init__(inner)
        self.budget = budget

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.texts + len(texts) > self.budget:
            raise KeyboardInterrupt
        return super()._encode(texts)


def test_an_interrupted_indexing_run_resumes_where_it_stopped(encoder, tmp_path, monkeypatch):
    monkeypatch.setattr("kgllm.retrieval.retriever.INDEX_CHUNK", 4)
    cut = FailingEncoder(encoder, budget=N_LABELS + 8)  # the labels and two chunks of facts
    with pytest.raises(KeyboardInterrupt):
        KGRetriever(make_store(), cut, index_dir=tmp_path).build()
    resumed = CountingEncoder(encoder)
    stats = KGRetriever(make_store(), resumed, index_dir=tmp_path).build()
    assert (stats.labels_added, stats.facts_added) == (0, len(TRIPLES) - 8)
    assert resumed.texts == len(TRIPLES) - 8


def test_index_turned_hnsw_by_size_keeps_recall_of_the_exact_one():
    vectors = unit(600, dim=16, seed=2)
    keys = [f"k{i}" for i in range(600)]
    exact, approximate = VectorIndex(dim=16), VectorIndex(dim=16, hnsw_threshold=100)
    for start in range(0, 600, 150):  # added in steps: the second index turns HNSW on the way
        exact.add(keys[start : start + 150], vectors[start : start + 150])
        approximate.add(keys[start : start + 150], vectors[start : start + 150])
    assert (exact.kind, approximate.kind) == ("flat", "hnsw")
    queries = unit(50, dim=16, seed=3)
    truth = [{k for k, _ in row} for row in exact.search(queries, k=10)]
    found = [{k for k, _ in row} for row in approximate.search(queries, k=10)]
    recall = sum(len(t & f) for t, f in zip(truth, found)) / (10 * len(queries))
    assert recall >= 0.95
    approximate.remove(keys[:300])
    assert len(approximate) == 300
    assert not {k for row in approximate.search(queries, k=10) for k, _ in row} & set(keys[:300])


def test_a_fact_index_too_big_for_memory_is_refused_naming_the_setting(counting, monkeypatch):
    # room for 25 vectors: the 22 labels fit, the 32 facts are refused before any is encoded
    monkeypatch.setattr("kgllm.retrieval.retriever.memory_bytes", lambda: 1 << 20)
    monkeypatch.setattr("kgllm.retrieval.retriever.MEMORY_SHARE", 25 * (4 * 384 + 16) / (1 << 20))
    triples = TRIPLES + [Triple(h, "near", t) for h, t in NEIGHBORS]
    with pytest.raises(RetrievalError, match="KGLLM_INDEX_FACTS=false"):
        KGRetriever(make_store(triples), counting).build()
    assert counting.texts == N_LABELS
    KGRetriever(make_store(triples), counting, index_facts=False).build()  # deferred: nothing to refuse
