"""Benchmark runners on tiny inputs: they score what they claim to score."""

from collections import Counter

import pytest

from kgllm.bench.kgqa import run_kgqa_benchmark
from kgllm.bench.report import percentile
from kgllm.bench.scale import ScaleResult, growth_exponents, measure, power_law_graph
from kgllm.datasets.pathquestion import PathQuestionItem, read_pathquestion
from kgllm.exceptions import ParseError
from kgllm.types import Answer, Entity, Evidence, GraphPath, Triple


class FixedReasoner:
    """Answers every question with the same entity, reached by one path."""

    def __init__(self, answer_id):
        self.answer_id = answer_id

    def answer(self, question):
        triple = Triple("http://x/a", "http://x/r", self.answer_id)
        return Answer(
            question, "", [Entity(self.answer_id, "")], Evidence([triple], [GraphPath("http://x/a", (triple,))]), 1.0
        )


def test_pathquestion_lines_parse_and_bad_lines_are_located(tmp_path):
    good = tmp_path / "q.txt"
    good.write_text("who is a 's son ?\tb(b/c/)\ta#children#b#<end>#b\n")
    assert read_pathquestion(good) == [
        PathQuestionItem("who is a 's son ?", frozenset({"b", "c"}), ("a", "children", "b"))
    ]
    large = tmp_path / "pql.txt"  # PathQuestion-Large: no #<end># marker
    large.write_text("who is a 's son 's wife ?\td\ta#children#b#spouse#d\n")
    assert read_pathquestion(large)[0].relations == ("children", "spouse")
    bad = tmp_path / "bad.txt"
    bad.write_text("who is a 's son ?\tb(b/c/)\ta#children#b\nno answer column\n")
    with pytest.raises(ParseError, match="bad.txt:2"):
        read_pathquestion(bad)


def test_hits_at_one_counts_only_gold_answers(tmp_path):
    questions = tmp_path / "q.txt"
    questions.write_text("q1\tb(b/)\ta#r#b\nq2\tc(c/)\ta#r#c\n")
    result = run_kgqa_benchmark(FixedReasoner("http://x/b"), questions, "fixed", progress=False)
    assert (result.total, result.hits, result.with_path) == (2, 1, 2)
    assert result.row()["Hits@1"] == "50.0%"


def test_verbalization_scores_against_every_reference():
    from kgllm.bench.construct import TemplateVerbalizer, run_verbalization_benchmark
    from kgllm.datasets.webnlg import Example

    matching = Example(
        "1",
        (("Alice Smith", "birthPlace", "Paris"),),
        ("Nobody wrote this.", "The birth place of Alice Smith is Paris."),
    )
    other = Example("2", (("Acme Corp", "locatedIn", "Berlin"),), ("Acme Corp is located in Berlin.",))
    row = run_verbalization_benchmark(TemplateVerbalizer(), [matching, other], "-", "template")
    assert float(row["BLEU"]) == 100.0 and float(row["chrF++"]) == 100.0
    mismatched = Example("3", (("Bob", "employer", "Globex"),), ("Globex pays Bob.",))
    assert float(run_verbalization_benchmark(TemplateVerbalizer(), [mismatched], "-", "template")["BLEU"]) < 50


def test_generated_scale_graphs_have_hubs_and_a_label_per_entity(tmp_path):
    from kgllm.graph.rdflib_store import RDFLibStore

    store = RDFLibStore(power_law_graph(3000, tmp_path / "graph.nt"))
    assert store.count_triples() == 3000
    entities = list(store.entities())
    assert all(e.label != e.id.rsplit("/", 1)[-1] for e in entities)  # each labelled, not named by its id
    degrees = Counter(end for t in store.triples() for end in (t.head, t.tail))
    assert max(degrees.values()) > 10 * 2 * 3000 / len(degrees)  # a hub far above the mean degree


def test_percentiles_are_nearest_rank():
    timings = [float(n) for n in range(20, 0, -1)]
    assert (percentile(timings, 0.95), percentile(timings, 0.5), percentile(timings, 1.0)) == (19.0, 10.0, 20.0)
    assert percentile([3.0], 0.95) == 3.0 and percentile([], 0.95) == 0.0


def test_growth_exponents_are_the_log_log_slopes():
    results = [
        ScaleResult(
            f"power law {n}",
            n,
            load_seconds=n / 1000,
            index_seconds=(n / 1000) ** 2,
            ask_seconds=[0.1],
            peak_rss_mb=500,
        )
        for n in (1000, 10_000, 100_000)
    ]
    slopes = growth_exponents(
        [*results, ScaleResult("FB15k-237", 272_115, load_seconds=1e6)]
    )  # not generated: left out
    assert slopes == pytest.approx({"load": 1.0, "index": 2.0, "ask p95": 0.0, "peak RSS": 0.0}, abs=1e-6)
    assert growth_exponents(results[:1]) == {}


def test_the_scale_benchmark_measures_a_small_graph_end_to_end(tmp_path):
    result = measure("power law 2,000", power_law_graph(2000, tmp_path / "graph.nt"), tmp_path, False, 5)
    assert (result.triples, len(result.ask_seconds)) == (2000, 100)
    assert result.entities > 100 and result.max_degree > 50
    assert result.answered >= 50  # questions name an entity and one of its relations
    assert min(result.load_seconds, result.index_seconds, result.warm_up_seconds, result.peak_rss_mb) > 0
    assert set(result.row()) >= {"warm-up s", "ask p95 ms", "peak RSS MB"}
