"""KG completion: a really trained KGE model, the filtered protocol against brute force,
fusion on a valid split, batch jobs (CLI, YAML, resume, bad input) and write-back."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from kgllm.exceptions import ConfigurationError, ParseError
from kgllm.graph import stores
from kgllm.graph.demo import demo_graph_path
from kgllm.jobs import CompleteJob, read_job
from kgllm.pipelines.completion.completer import CompletionConfig, RuleScorer, build_completer, triple_queries
from kgllm.pipelines.completion.evaluation import filtered_ranks, ranking_metrics
from kgllm.pipelines.completion.jobs import SOURCE, job_from_options, read_query_file, run_complete_job, split_valid
from kgllm.pipelines.completion.kge import KGEConfig, TrainedKGE, Vocabulary, train_kge
from kgllm.settings import Settings
from kgllm.types import Triple

KGLLM = shutil.which("kgllm") or os.path.join(os.path.dirname(sys.executable), "kgllm")
FAST_KGE = KGEConfig(dim=64, max_epochs=40, seconds=60, eval_every=5)
NEIGHBOR = "https://kgllm.dev/countries/neighborOf"
LOCATED = "https://kgllm.dev/countries/locatedIn"


@pytest.fixture(scope="module")
def demo_store():
    return stores.resolve("rdflib", {"path": demo_graph_path()})


@pytest.fixture(scope="module")
def demo_split(demo_store):
    """The demo graph's facts: 5% held out as valid and 5% as test, every entity kept in train."""
    triples = sorted(demo_store.triples(), key=lambda t: (t.head, t.relation, t.tail))
    config = CompletionConfig(valid_fraction=0.1, max_valid=10_000)
    train, held_out = split_valid(triples, config)
    return train, held_out[::2], held_out[1::2]


@pytest.fixture(scope="module")
def trained(demo_split):
    train, valid, _ = demo_split
    return train_kge(
        train, FAST_KGE, valid, progress=False, vocabulary=Vocabulary.from_triples(train + valid + demo_split[2])
    )


def brute_force_ranks(score, triples, known):
    """Filtered realistic ranks, one query at a time, straight from the definition."""
    known = {tuple(t) for t in known.tolist()}
    ranks = []
    for inverse in (False, True):
        for h, r, t in triples.tolist():
            anchor, target = (t, h) if inverse else (h, t)
            row = score(np.array([anchor]), np.array([r]), inverse)[0]
            others = [e for e in range(len(row)) if e != target and ((e, r, t) if inverse else (h, r, e)) not in known]
            higher = sum(row[e] > row[target] for e in others)
            ties = sum(row[e] == row[target] for e in others)
            ranks.append(1 + higher + ties / 2)
    return np.array(ranks)


def test_filtered_ranks_equal_a_brute_force_computation(trained, demo_split):
    vocab = trained.vocabulary
    test = vocab.encode(demo_split[2])
    known = np.concatenate([vocab.encode(s) for s in demo_split])

    def rounded(anchors, relations, inverse):  # coarse scores, so ties are exercised too
        return np.round(trained.tail_scores(anchors, relations, inverse), 0)

    for score in (trained.tail_scores, rounded):
        assert np.allclose(filtered_ranks(score, test, known), brute_force_ranks(score, test, known))
    assert (brute_force_ranks(rounded, test, known) % 1 != 0).any()


@pytest.mark.slow
@pytest.mark.parametrize("inverse_triples", [False, True], ids=["plain", "inverse-triples"])
def test_evaluation_agrees_with_pykeens_evaluator(demo_split, inverse_triples):
    """With inverse triples a PyKEEN model keeps relation r at row 2r; its raw scores of r are another relation's."""
    pytest.importorskip("pykeen")
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.models import RotatE
    from pykeen.training import SLCWATrainingLoop
    from pykeen.triples import TriplesFactory

    from kgllm.bench.completion import _pykeen_scores

    vocab = Vocabulary.from_triples([t for split in demo_split for t in split])
    train, valid, test = (
        TriplesFactory.from_labeled_triples(
            np.array([(t.head, t.relation, t.tail) for t in split]),
            entity_to_id=vocab.entity_index,
            relation_to_id=vocab.relation_index,
            create_inverse_triples=inverse_triples,
        )
        for split in demo_split
    )
    model = RotatE(triples_factory=train, embedding_dim=16, random_seed=0)
    SLCWATrainingLoop(model=model, triples_factory=train).train(train, num_epochs=2, use_tqdm=False)
    theirs = RankBasedEvaluator().evaluate(
        model,
        test.mapped_triples,
        use_tqdm=False,
        additional_filter_triples=[train.mapped_triples, valid.mapped_triples],
    )
    known = np.concatenate([vocab.encode(split) for split in demo_split])
    ours = ranking_metrics(filtered_ranks(_pykeen_scores(model), vocab.encode(demo_split[2]), known))
    assert ours["mrr"] == pytest.approx(theirs.get_metric("both.realistic.inverse_harmonic_mean_rank"), abs=1e-6)
    for k in (1, 3, 10):
        assert ours[f"hits@{k}"] == pytest.approx(theirs.get_metric(f"both.realistic.hits_at_{k}"), abs=1e-9)


def test_kge_learns_held_out_facts_far_above_chance(trained, demo_split):
    vocab = trained.vocabulary
    known = np.concatenate([vocab.encode(s) for s in demo_split])
    metrics = ranking_metrics(filtered_ranks(trained.tail_scores, vocab.encode(demo_split[2]), known))
    chance = np.mean(1 / np.arange(1, len(vocab.entities) + 1))
    assert metrics["mrr"] > 10 * chance and metrics["hits@10"] > 0.5
    assert trained.valid_mrr is not None and trained.epochs <= FAST_KGE.max_epochs


def test_saved_model_scores_exactly_as_before(trained, tmp_path):
    trained.save(tmp_path / "kge")
    loaded = TrainedKGE.load(tmp_path / "kge")
    anchors, relations = np.arange(5), np.zeros(5, dtype=int)
    assert np.allclose(loaded.tail_scores(anchors, relations), trained.tail_scores(anchors, relations))


def test_rules_learn_that_neighborhood_is_symmetric(trained, demo_split):
    vocab = trained.vocabulary
    rules = RuleScorer(vocab.encode(demo_split[0]), len(vocab.entities), len(vocab.relations))
    neighbor = vocab.relation_index[NEIGHBOR]
    inverse_neighbor = neighbor + len(vocab.relations)
    best_confidence, best_body = rules.rules[neighbor][0]
    assert best_body == (inverse_neighbor,) and best_confidence > 0.8


def test_fusion_weights_are_chosen_on_valid_and_recorded_in_predictions(demo_store, demo_split, encoder, tmp_path):
    train, valid, test = demo_split
    vocab = Vocabulary.from_triples(train + valid + test)
    config = CompletionConfig(kge=FAST_KGE, scorers=("rules", "encoder"), candidates=10)
    completer = build_completer(
        demo_store,
        train,
        valid,
        config,
        Settings(cache_dir=tmp_path),
        vocab,
        progress=False,
        encoder=encoder,
        vectors_dir=tmp_path / "vectors",
    )
    known = np.concatenate([vocab.encode(s) for s in demo_split])
    valid_ids = vocab.encode(valid)
    fused = ranking_metrics(filtered_ranks(completer.score_fn(), valid_ids, known))["mrr"]
    alone = ranking_metrics(filtered_ranks(completer.kge.tail_scores, valid_ids, known))["mrr"]
    assert fused >= alone and completer.weights["rules"] > 0  # symmetry rules help on this graph
    assert [s.name for s in completer.scorers] == list(completer.weights) and all(completer.weights.values())
    prediction = completer.predict(triple_queries(vocab.encode(test[:1])), top_k=3)[0][0]
    assert set(prediction.provenance["scores"]) == {"kge", *completer.weights}
    assert prediction.provenance["weights"] == completer.weights and 0 < prediction.score <= 1
    [saved] = (tmp_path / "vectors").glob("entities-*.npy")  # the next job reads the entity vectors back
    assert np.allclose(np.linalg.norm(np.load(saved), axis=1), 1, atol=1e-5) and len(np.load(saved)) == len(
        vocab.entities
    )


def test_query_file_errors_name_the_line(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("Chad\tneighbor of\t?\n\nChad\tneighbor of\n")
    with pytest.raises(ParseError, match=r"q.tsv:3: expected head<TAB>relation<TAB>\?"):
        read_query_file(path)
    path.write_text("Chad\tneighbor of\tNiger\n")
    with pytest.raises(ParseError, match=r"q.tsv:1: exactly one of head and tail"):
        read_query_file(path)


def test_unknown_names_are_reported_and_skipped_labels_and_ids_resolve(demo_store, trained, tmp_path):
    from kgllm.pipelines.completion.completer import Completer

    queries = tmp_path / "q.tsv"
    queries.write_text(f"Chad\tneighbor of\t?\n?\t{LOCATED}\tAfrica\nAtlantis\tneighbor of\t?\nChad\tflies to\t?\n")
    job = CompleteJob(job="complete", queries=queries, output=tmp_path / "out.jsonl", top_k=3)
    summary = run_complete_job(
        job, demo_store, Settings(cache_dir=tmp_path), progress=False, completer=Completer(trained, [], 10)
    )
    records = [json.loads(line) for line in job.output.read_text().splitlines()]
    assert [r["id"] for r in records] == ["1", "2", "3", "4"]
    assert records[2]["error"] == "unknown entity 'Atlantis'" and records[3]["error"] == "unknown relation 'flies to'"
    assert summary.queries == 2 and summary.skipped == 2 and summary.predictions == 6
    chad_neighbors = {t.tail for t in demo_store.triples("https://kgllm.dev/countries/chad", NEIGHBOR)}
    predicted = {p["tail"] for p in records[0]["predictions"]}
    assert (
        not predicted & chad_neighbors and "https://kgllm.dev/countries/chad" not in predicted
    )  # known facts excluded
    assert all(p["head"] != "https://kgllm.dev/countries/africa" for p in records[1]["predictions"])


def test_all_pairs_job_asks_every_entity_and_relation_and_keeps_only_confident_new_facts(demo_store, trained, tmp_path):
    from kgllm.pipelines.completion.completer import Completer

    job = CompleteJob(job="complete", queries="all", output=tmp_path / "all.jsonl", top_k=5, min_score=0.5)
    summary = run_complete_job(
        job, demo_store, Settings(cache_dir=tmp_path), progress=False, completer=Completer(trained, [], 10)
    )
    vocab = trained.vocabulary
    records = [json.loads(line) for line in job.output.read_text().splitlines()]
    assert summary.queries == len(records) == len(vocab.entities) * len(vocab.relations)
    predictions = [p for r in records for p in r["predictions"]]
    assert predictions and summary.predictions == len(predictions) and all(p["score"] >= 0.5 for p in predictions)
    known = {(t.head, t.relation, t.tail) for t in demo_store.triples()}
    assert not {(p["head"], p["relation"], p["tail"]) for p in predictions} & known


def _write_back_job(tmp_path, name):
    queries = tmp_path / "q.tsv"
    queries.write_text("Chad\tneighbor of\t?\n?\tneighbor of\tKenya\nNepal\tlocated in\t?\n")
    return CompleteJob(
        job="complete", queries=queries, output=tmp_path / name, top_k=3, min_score=0.05, write_back=True
    )


def _check_write_back(store, trained, tmp_path):
    from kgllm.pipelines.completion.completer import Completer

    asserted = sorted(store.triples(), key=lambda t: (t.head, t.relation, t.tail))
    completer = Completer(trained, [], 10, model_name="complex-test")
    first = run_complete_job(
        _write_back_job(tmp_path, "a.jsonl"), store, Settings(cache_dir=tmp_path), False, completer
    )
    assert first.written_back == first.predictions > 0
    predicted = [
        Triple(p["head"], p["relation"], p["tail"])
        for line in (tmp_path / "a.jsonl").read_text().splitlines()
        for p in json.loads(line)["predictions"]
    ]
    for triple in predicted:
        assert not store.is_asserted(triple)
        [record] = store.provenance(triple)
        assert (record.source, record.method, record.model) == (SOURCE, "predicted", "complex-test")
        assert record.score >= 0.05 and record.created
    assert all(store.is_asserted(t) and not store.provenance(t) for t in asserted)
    count = store.count_triples()
    again = run_complete_job(
        _write_back_job(tmp_path, "b.jsonl"), store, Settings(cache_dir=tmp_path), False, completer
    )
    assert again.predictions == first.predictions and again.written_back == 0 and store.count_triples() == count


def test_write_back_marks_predictions_and_adds_nothing_twice(trained, tmp_path):
    store = stores.resolve("rdflib", {"path": shutil.copy(demo_graph_path(), tmp_path / "kg.ttl")})
    _check_write_back(store, trained, tmp_path)
    reopened = stores.resolve("rdflib", {"path": tmp_path / "kg.ttl"})
    assert reopened.sources() == [SOURCE]


@pytest.mark.slow
@pytest.mark.neo4j
def test_write_back_on_a_bolt_server(neo4j_store, demo_store, trained, tmp_path):
    neo4j_store.add(demo_store.triples(), demo_store.entities())
    _check_write_back(neo4j_store, trained, tmp_path)


def test_a_review_job_queues_its_predictions_and_writes_nothing(trained, tmp_path):
    from kgllm.graph.review import ReviewQueue
    from kgllm.pipelines.completion.completer import Completer

    store = stores.resolve("rdflib", {"path": shutil.copy(demo_graph_path(), tmp_path / "kg.ttl")})
    count, settings = store.count_triples(), Settings(cache_dir=tmp_path)
    completer = Completer(trained, [], 10, model_name="complex-test")
    job = _write_back_job(tmp_path, "a.jsonl").model_copy(update={"write_back": False, "review": True})
    first = run_complete_job(job, store, settings, False, completer)
    assert first.queued == first.predictions > 0 and first.written_back == 0 and store.count_triples() == count
    pending = ReviewQueue.for_store(store, settings.cache_dir).pending()
    assert len(pending) == first.predictions
    assert all(p.records[0].source == SOURCE and p.records[0].model == "complex-test" for p in pending)
    again = run_complete_job(job.model_copy(update={"output": tmp_path / "b.jsonl"}), store, settings, False, completer)
    assert again.predictions == first.predictions and again.queued == 0  # each fact is queued once
    with pytest.raises(ConfigurationError, match="^--review and --write-back exclude each other"):
        job_from_options(queries=tmp_path / "q.tsv", output=tmp_path / "o.jsonl", write_back=True, review=True)
    with pytest.raises(ConfigurationError, match="bundled demo graph is read-only"):
        run_complete_job(job.model_copy(update={"output": tmp_path / "c.jsonl"}), demo_store_of(), settings, False)


def demo_store_of():
    return stores.resolve("rdflib", {"path": demo_graph_path()})


def run_cli(*args, tmp_path):
    environment = {**os.environ, "KGLLM_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    return subprocess.run([KGLLM, *args], capture_output=True, text=True, env=environment, timeout=300, cwd=tmp_path)


@pytest.mark.slow
def test_cli_complete_resumes_refuses_other_output_and_reuses_the_trained_model(tmp_path):
    graph = shutil.copy(demo_graph_path(), tmp_path / "kg.ttl")
    (tmp_path / "q.tsv").write_text(
        "Chad\tneighbor of\t?\n?\tlocated in\tAfrica\nAtlantis\tneighbor of\t?\nKenya\tlocated in\t?\n"
    )
    args = [
        "complete",
        "--graph",
        str(graph),
        "--queries",
        "q.tsv",
        "--out",
        "out.jsonl",
        "--top-k",
        "2",
        "--scorers",
        "rules",
        "--kge-seconds",
        "5",
    ]
    first = run_cli(*args, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "3 queries, 6 predictions, 1 skipped" in first.stdout and "queries/s" in first.stdout
    assert "line 3 skipped: unknown entity 'Atlantis'" in first.stderr and "training complex" in first.stderr
    output = tmp_path / "out.jsonl"
    text = output.read_text()
    output.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1] + '{"id": "4", "que')  # cut off mid-line
    resumed = run_cli(*args, tmp_path=tmp_path)
    assert resumed.returncode == 0 and "1 queries" in resumed.stdout and "3 already done" in resumed.stdout
    assert "training complex" not in resumed.stderr  # the cached completer is reused
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == ["1", "2", "3", "4"]
    assert output.read_text() == text
    other = run_cli(*[a if a != "2" else "3" for a in args], tmp_path=tmp_path)
    assert other.returncode == 1 and "holds the output of another job" in other.stderr
    (tmp_path / "bad.tsv").write_text("Chad\tneighbor of\t?\nChad neighbor of ?\n")
    bad = run_cli(*[a if a != "q.tsv" else "bad.tsv" for a in args[:-4]], "--out", "bad.jsonl", tmp_path=tmp_path)
    assert bad.returncode == 1 and "bad.tsv:2:" in bad.stderr and not (tmp_path / "bad.jsonl").exists()


@pytest.mark.slow
def test_yaml_complete_job_runs(tmp_path):
    shutil.copy(demo_graph_path(), tmp_path / "kg.ttl")
    (tmp_path / "q.tsv").write_text("Chad\tneighbor of\t?\n")
    (tmp_path / "job.yaml").write_text(
        "job: complete\nqueries: q.tsv\noutput: out/c.jsonl\ngraph: kg.ttl\n"
        "top_k: 2\nscorers: [rules]\nkge_seconds: 5\n"
    )
    assert isinstance(read_job(tmp_path / "job.yaml"), CompleteJob)
    result = run_cli("run", "job.yaml", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    [record] = [json.loads(line) for line in (tmp_path / "out" / "c.jsonl").read_text().splitlines()]
    assert record["query"] == ["Chad", "neighbor of", "?"] and len(record["predictions"]) == 2


def test_job_spec_errors(tmp_path):
    (tmp_path / "job.yaml").write_text("job: complete\nqueries: q.tsv\noutput: o.jsonl\nscorers: [rules, oracle]\n")
    with pytest.raises(ConfigurationError, match="scorers"):
        read_job(tmp_path / "job.yaml")
    (tmp_path / "job.yaml").write_text("job: translate\n")
    with pytest.raises(ConfigurationError, match="job must be one of: ask, complete"):
        read_job(tmp_path / "job.yaml")
    with pytest.raises(ConfigurationError, match="unknown KGE model 'transx'"):
        KGEConfig(model="transx")
    with pytest.raises(
        ConfigurationError, match=r"--top-k: .*greater than or equal to 1; --scorers.1: .*'rules', 'lm' or 'encoder'"
    ):
        job_from_options(queries=tmp_path / "q.tsv", output=tmp_path / "o.jsonl", top_k=0, scorers=["rules", "oracle"])


def test_training_marks_give_the_model_each_budget_would_have_returned(demo_split):
    train, valid, test = demo_split
    vocabulary = Vocabulary.from_triples(train + valid + test)
    config = KGEConfig(dim=32, max_epochs=10_000, seconds=2.0, eval_every=10_000, check_seconds=0.5, valid_sample=20)
    marks = []
    final = train_kge(
        train, config, valid, False, vocabulary, marks=[0.5, 1.0], on_mark=lambda s, m: marks.append((s, m))
    )
    assert [s for s, _ in marks] == [0.5, 1.0, 2.0]
    assert all(m.valid_mrr is not None and m.seconds >= s for s, m in marks)
    assert [m.valid_mrr for _, m in marks] == sorted(m.valid_mrr for _, m in marks)  # best so far: never worse
    heads, relations = np.arange(5), np.zeros(5, dtype=np.int64)
    assert np.array_equal(final.tail_scores(heads, relations), marks[-1][1].tail_scores(heads, relations))
    assert final.valid_mrr == marks[-1][1].valid_mrr and final.seconds >= 2.0


def test_budgets_name_their_unit():
    from kgllm.bench.completion import parse_budgets
    from kgllm.exceptions import InputError

    assert parse_budgets("3m, 90s,1.5m") == [90.0, 180.0]
    for bad in ("3", "3h", "-1m", "m", ""):
        with pytest.raises(InputError, match="budget"):
            parse_budgets(bad)


def test_peers_name_pykeen_recipes_by_model_and_loop():
    from kgllm.bench.completion import CURVE_PYKEEN, parse_peers
    from kgllm.exceptions import InputError

    assert parse_peers("all") == list(CURVE_PYKEEN)
    assert parse_peers("none") == []
    chosen = parse_peers("RotatE-LCWA, complex-slcwa")
    assert [(r.model, r.loop) for r in chosen] == [("RotatE", "lcwa"), ("ComplEx", "slcwa")]
    for bad in ("transe-slcwa", "", "all,none", "rotate"):
        with pytest.raises(InputError, match="--peers"):
            parse_peers(bad)


def test_budget_curve_ranks_every_model_at_every_budget(demo_split, tmp_path):
    from kgllm.bench.completion import PyKEENRecipe, curve_table, plot_curve, run_budget_curve

    for name, split in zip(("train", "valid", "test"), demo_split):
        (tmp_path / f"{name}.txt").write_text("".join(f"{t.head}\t{t.relation}\t{t.tail}\n" for t in split))
    kge = KGEConfig(dim=32, max_epochs=10_000, valid_sample=30)
    recipes = [PyKEENRecipe("ComplEx", "lcwa", batch_size=64)]
    curve = run_budget_curve(tmp_path, [1.0, 2.0], test_sample=25, kge=kge, recipes=recipes, progress=False)
    points = [point for model in curve for point in model]
    assert [(p.model.split()[0], p.seconds) for p in points] == [
        ("kgllm", 1.0),
        ("kgllm", 2.0),
        ("PyKEEN", 1.0),
        ("PyKEEN", 2.0),
    ]
    assert all(0 < p.metrics["mrr"] <= 1 and p.metrics["hits@1"] <= p.metrics["hits@10"] for p in points)
    rows = curve_table(points)
    assert [r["model"] for r in rows] == [points[0].model, recipes[0].label]
    assert rows[1]["2 s: MRR (H@1 / H@3 / H@10)"].startswith(f"{points[3].metrics['mrr']:.3f} (")
    assert plot_curve(points, tmp_path / "curve.png", "demo").read_bytes()[:4] == b"\x89PNG"
