"""Batch jobs: YAML specs checked, answers written as they come, resumed after an interruption."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import kgllm
from kgllm.exceptions import ConfigurationError, InputError, ParseError
from kgllm.graph.demo import demo_graph_path
from kgllm.jobs import JobOutput, item_key, read_job, run_ask_job
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
    job = read_job(Path(__file__).parents[1] / "pipelines" / "ask-demo.yaml")
    assert job.job == "ask" and job.questions.name == "demo_qa_heldout.jsonl"


# ------------------------------------------------ resume by content, one job per output, repair

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 300.0


def environment(tmp_path):
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "KGLLM_CACHE_DIR": str(tmp_path / "cache"),
        "COLUMNS": "200",
    }


def kgllm_process(*args, tmp_path, **options):
    """``kgllm ARGS`` as a real process, running this checkout's code."""
    return subprocess.Popen(
        [sys.executable, "-c", "from kgllm.cli import main; main()", *args],
        env=environment(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


def wait_for(condition, what, process):
    started = time.monotonic()
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the process ended (rc {process.returncode}) before {what}")
        if time.monotonic() - started > DEADLINE:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.001)


def complete_lines(path):
    """The records on the complete lines of ``path`` (a cut-off last line is not one)."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def test_changed_questions_make_their_answers_stale_until_restart(job_file, session):
    job = read_job(job_file)
    run_ask_job(job, session, progress=False)
    before = job.output.read_text()
    changed = [QUESTIONS[0], "What is Niger located in?", QUESTIONS[2]]
    job.questions.write_text("\n".join(changed) + "\n")
    with pytest.raises(
        ConfigurationError,
        match=r"1 of its 3 lines answer questions that are no longer in the input \(first: line 2\); "
        r"run again with --restart",
    ):
        run_ask_job(job, session, progress=False)
    assert job.output.read_text() == before  # refused: nothing dropped, nothing added
    assert run_ask_job(job, session, progress=False, restart=True) == {"answered": 1, "skipped": 2}
    answers = lines(job.output)
    assert sorted((a["id"], a["question"]) for a in answers) == [
        ("1", changed[0]),
        ("2", changed[1]),
        ("3", changed[2]),
    ]
    assert all(a["key"] == item_key(a["id"], a["question"]) for a in answers)
    assert run_ask_job(job, session, progress=False) == {"answered": 0, "skipped": 3}


def test_corrupt_and_repeated_lines_are_reported_by_number_and_dropped_with_repair(job_file, session):
    job = read_job(job_file)
    run_ask_job(job, session, progress=False)
    good = job.output.read_text().splitlines()
    job.output.write_text("\n".join([good[0], '{"id": "2", "ans', good[2], "[1, 2]", good[0]]) + "\n")
    corrupt = job.output.read_text()
    with pytest.raises(ParseError, match=r"answers.jsonl:2: not a JSON record .*\(3 such lines: 2, 4, 5\).*--repair"):
        run_ask_job(job, session, progress=False)
    assert job.output.read_text() == corrupt
    assert run_ask_job(job, session, progress=False, repair=True) == {"answered": 1, "skipped": 2}
    assert sorted(a["id"] for a in lines(job.output)) == ["1", "2", "3"]
    job.output.write_text(job.output.read_text() + good[0] + "\n")
    with pytest.raises(ParseError, match=r"answers.jsonl:4: repeats the item of line 1"):
        run_ask_job(job, session, progress=False)


def test_a_second_job_on_the_same_output_stops_at_once(job_file, session, tmp_path):
    job = read_job(job_file)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom kgllm.cache import file_lock\n"
            "with file_lock(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()",
            str(job.output),
        ],
        env=environment(tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigurationError, match=r"answers.jsonl is being written by another job"):
            run_ask_job(job, session, progress=False)
        assert not job.output.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=DEADLINE)
    assert run_ask_job(job, session, progress=False) == {"answered": 3, "skipped": 0}


@pytest.mark.slow
def test_two_identical_complete_jobs_on_one_output_one_refused_no_line_twice(tmp_path):
    shutil.copy(demo_graph_path(), tmp_path / "kg.ttl")
    (tmp_path / "q.tsv").write_text("Chad\tneighbor of\t?\n?\tlocated in\tAfrica\nKenya\tlocated in\t?\n" * 40)
    args = ["complete", "--graph", "kg.ttl", "--queries", "q.tsv", "--out", "out.jsonl"]
    args += ["--scorers", "none", "--kge-seconds", "3", "--top-k", "2"]
    first = kgllm_process(*args, tmp_path=tmp_path)
    said = []
    threading.Thread(target=lambda: said.extend(iter(first.stderr.readline, "")), daemon=True).start()
    wait_for(lambda: any("training" in line for line in said), "the first job trains", first)
    first.send_signal(signal.SIGSTOP)  # held mid-job, with its output locked, however fast the machine
    try:
        second = kgllm_process(*args, tmp_path=tmp_path)
        _, err = second.communicate(timeout=DEADLINE)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1
    assert err.strip().splitlines() == [
        "error: out.jsonl is being written by another job (it holds out.jsonl.lock); "
        "wait for that job to finish, or choose another output"
    ]
    assert first.wait(timeout=DEADLINE) == 0, said
    ids = [r["id"] for r in lines(tmp_path / "out.jsonl")]
    assert sorted(ids, key=int) == [str(n) for n in range(1, 121)]


@pytest.mark.slow
def test_a_job_killed_mid_way_resumes_with_no_lost_or_repeated_line(tmp_path):
    (tmp_path / "kg.tsv").write_text(TSV)
    questions = [QUESTIONS[n % 3] for n in range(90)]
    (tmp_path / "questions.txt").write_text("\n".join(questions) + "\n")
    (tmp_path / "job.yaml").write_text(
        "job: ask\nquestions: questions.txt\noutput: answers.jsonl\ngraph: kg.tsv\nuse_model: false\n"
    )
    output = tmp_path / "answers.jsonl"
    job = kgllm_process("run", "job.yaml", tmp_path=tmp_path)
    wait_for(lambda: len(complete_lines(output)) >= 5, "five answers are written", job)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=DEADLINE)
    done = len(complete_lines(output))
    assert 5 <= done < 90  # killed mid-way

    resumed = kgllm_process("run", "job.yaml", tmp_path=tmp_path)
    out, err = resumed.communicate(timeout=DEADLINE)
    assert resumed.returncode == 0, err
    assert f"{90 - done} questions answered, {done} already done" in out
    records = lines(output)
    assert sorted(int(r["id"]) for r in records) == list(range(1, 91))  # every question once
    assert all(r["key"] == item_key(r["id"], questions[int(r["id"]) - 1]) for r in records)

    # a garbage line in the middle: one line of error naming it, then --repair drops it and redoes its item
    text = output.read_text().splitlines()
    text[10] = "\x00garbage"
    output.write_text("\n".join(text) + "\n")
    refused = kgllm_process("run", "job.yaml", tmp_path=tmp_path)
    _, err = refused.communicate(timeout=DEADLINE)
    assert refused.returncode == 1
    assert err.strip().splitlines()[0].startswith("error: answers.jsonl:11: not a JSON record (")
    assert len(err.strip().splitlines()) == 1 and "run again with --repair" in err
    repaired = kgllm_process("run", "job.yaml", "--repair", tmp_path=tmp_path)
    out, err = repaired.communicate(timeout=DEADLINE)
    assert repaired.returncode == 0, err
    assert "1 questions answered, 89 already done" in out
    assert sorted(int(r["id"]) for r in lines(output)) == list(range(1, 91))


def test_job_output_lines_that_are_not_utf8_are_corrupt(tmp_path):
    output = tmp_path / "o.jsonl"
    with JobOutput(output, "spec") as writing:
        assert writing.resume(["a", "b"]) == set()
        writing.write([{"key": "a"}, {"key": "b"}])
    output.write_bytes(output.read_bytes().replace(b'"b"', b'"\xff"'))
    with pytest.raises(ParseError, match=r"o.jsonl:2: not UTF-8 text"), JobOutput(output, "spec"):
        pass
    with JobOutput(output, "spec", repair=True) as repairing:
        assert repairing.resume(["a", "b"]) == {"a"}
    assert output.read_text() == '{"key": "a"}\n'


def test_a_complete_job_refuses_stale_answers_before_any_training(tmp_path):
    from kgllm.graph.rdflib_store import RDFLibStore
    from kgllm.jobs import CompleteJob
    from kgllm.pipelines.completion.jobs import run_complete_job

    (tmp_path / "q.tsv").write_text("chad\tneighborOf\t?\n")
    job = CompleteJob(job="complete", queries=tmp_path / "q.tsv", output=tmp_path / "out.jsonl", scorers=[])
    with JobOutput(job.output, job.fingerprint()) as output:  # answers to an older queries file
        output.resume([])
        output.write(
            [{"id": "1", "query": ["niger", "neighborOf", "?"], "key": item_key("1", "niger", "neighborOf", "?")}]
        )
    store = RDFLibStore()
    store.add([("chad", "neighborOf", "niger")])
    with pytest.raises(ConfigurationError, match=r"1 of its 1 lines answer queries that are no longer in the input"):
        run_complete_job(job, store, Settings(cache_dir=tmp_path / "cache"), progress=False)
    assert not (tmp_path / "cache").exists()  # refused before training anything
