"""Benchmark runners on tiny inputs: they score what they claim to score."""

import pytest

from kgllm.bench.kgqa import read_pathquestion, run_kgqa_benchmark
from kgllm.exceptions import ParseError
from kgllm.types import Answer, Entity, Evidence, Path, Triple


class FixedReasoner:
    """Answers every question with the same entity, reached by one path."""

    def __init__(self, answer_id):
        self.answer_id = answer_id

    def answer(self, question):
        triple = Triple("http://x/a", "http://x/r", self.answer_id)
        return Answer(question, "", [Entity(self.answer_id, "")], Evidence([triple], [Path("http://x/a", (triple,))]), 1.0)


def test_pathquestion_lines_parse_and_bad_lines_are_located(tmp_path):
    good = tmp_path / "q.txt"
    good.write_text("who is a 's son ?\tb(b/c/)\ta#children#b#<end>#b\n")
    assert read_pathquestion(good) == [("who is a 's son ?", {"b", "c"})]
    bad = tmp_path / "bad.txt"
    bad.write_text("who is a 's son ?\tb(b/c/)\tpath\nno answer column\n")
    with pytest.raises(ParseError, match="bad.txt:2"):
        read_pathquestion(bad)


def test_hits_at_one_counts_only_gold_answers(tmp_path):
    questions = tmp_path / "q.txt"
    questions.write_text("q1\tb(b/)\tp\nq2\tc(c/)\tp\n")
    result = run_kgqa_benchmark(FixedReasoner("http://x/b"), questions, "fixed", progress=False)
    assert (result.total, result.hits, result.with_path) == (2, 1, 2)
    assert result.row()["Hits@1"] == "50.0%"
