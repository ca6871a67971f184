"""Batch jobs: YAML specs checked, answers written as they come, resumed after an interruption."""

import json

import pytest

import kgllm
from kgllm.exceptions import ConfigurationError, InputError
from kgllm.jobs import read_job, run_ask_job
from kgllm.settings import Settings

TSV = "chad\tneighborOf\tniger\nniger\tneighborOf\tchad\nchad\tlocatedIn\tafrica\n"
QUESTIONS = ["What are the neighbors of Chad?", "What is Chad located in?", "What are the neighbors of Niger?"]


@pytest.fixture
def job_file(tmp_path):
    (tmp_path / "kg.tsv").write_text(TSV)
    (tmp_path / "questions.txt").write_text("\n".join(QUESTIONS) + "\n")
    spec = tmp_path / "job.yaml"
    spec.write_text(
        f"job: ask\nquestions: {tmp_path / 'questions.txt'}\noutput: {tmp_path / 'out' / 'answers.jsonl'}\n"
        f"graph: {tmp_path / 'kg.tsv'}\nuse_model: false\n"
    )
    return spec


@pytest.fixture
def session(job_file, encoder, tmp_path):
    job = read_job(job_file)
    return kgllm.connect(job.graph, encoder=encoder, use_model=False, settings=Settings(cache_dir=tmp_path / "cache"))


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_job_answers_every_question_once_and_resumes(job_file, session):
    job = read_job(job_file)
    assert run_ask_job(job, session, progress=False) == {"answered": 3, "skipped": 0}
    answers = lines(job.output)
    assert [a["id"] for a in answers] == ["1", "2", "3"]
    assert answers[0]["entities"] == ["Niger"] and answers[1]["entities"] == ["Africa"]
    # an interruption left the last answer half-written: it is dropped and asked again
    text = job.output.read_text()
    job.output.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1] + '{"id": "3", "quest')
    assert run_ask_job(job, session, progress=False) == {"answered": 1, "skipped": 2}
    assert [a["id"] for a in lines(job.output)] == ["1", "2", "3"]


def test_output_of_another_job_is_not_appended_to(job_file, session, tmp_path):
    job = read_job(job_file)
    job.output.parent.mkdir()
    job.output.write_text('{"id": "1"}\n')
    with pytest.raises(ConfigurationError, match="another job"):
        run_ask_job(job, session, progress=False)
    assert job.output.read_text() == '{"id": "1"}\n'


def test_bad_job_files_say_what_is_wrong(tmp_path):
    (tmp_path / "typo.yaml").write_text("job: ask\nquestions: q.txt\noutput: o.jsonl\nmodle: x\n")
    with pytest.raises(ConfigurationError, match="modle"):
        read_job(tmp_path / "typo.yaml")
    (tmp_path / "broken.yaml").write_text("job: [ask\n")
    with pytest.raises(InputError, match="not valid YAML"):
        read_job(tmp_path / "broken.yaml")
    with pytest.raises(InputError, match="no such job file"):
        read_job(tmp_path / "missing.yaml")


def test_shipped_job_file_is_valid():
    from pathlib import Path

    job = read_job(Path(__file__).parents[1] / "pipelines" / "ask-demo.yaml")
    assert job.job == "ask" and job.questions.name == "demo_qa_heldout.jsonl"
