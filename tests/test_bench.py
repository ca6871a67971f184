"""Benchmark runners on tiny inputs: they score what they claim to score."""

import pytest

from kgllm.bench.kgqa import run_kgqa_benchmark
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
