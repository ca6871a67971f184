"""The ``kgllm`` command as a user runs it (a real process)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

KGLLM = shutil.which("kgllm") or os.path.join(os.path.dirname(sys.executable), "kgllm")
TSV = "chad\tneighborOf\tniger\nniger\tneighborOf\tchad\nchad\tlocatedIn\tafrica\n"


def run(*args, tmp_path, **env):
    environment = {**os.environ, "KGLLM_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200", **env}
    return subprocess.run([KGLLM, *args], capture_output=True, text=True, env=environment, timeout=300)


@pytest.mark.parametrize("command", ["load", "ask", "train", "demo"])
def test_every_command_explains_itself(command, tmp_path):
    result = run(command, "--help", tmp_path=tmp_path)
    assert result.returncode == 0 and "Usage" in result.stdout


def test_ask_json_has_answer_entities_evidence_and_confidence(tmp_path):
    graph = tmp_path / "mini.tsv"
    graph.write_text(TSV)
    result = run(
        "ask", "What are the neighbors of Chad?", "--graph", str(graph), "--no-model", "--json", tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["answer"] == "Niger."
    assert answer["entities"] == ["Niger"]
    assert answer["evidence"] == [[["Chad", "neighbor of", "Niger"]]]
    assert 0 < answer["confidence"] <= 1


def test_load_reports_a_malformed_line_in_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text(TSV + "niger\tlocatedIn\n")
    target = tmp_path / "kg.ttl"
    result = run("load", str(bad), "--into", str(target), "--no-index", tmp_path=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}:4: expected 3 non-empty tab-separated fields, found 2: 'niger\\tlocatedIn'"
    ]
    assert not target.exists()


def test_load_into_a_file_store(tmp_path):
    good = tmp_path / "good.tsv"
    good.write_text(TSV)
    result = run("load", str(good), "--into", str(tmp_path / "kg.ttl"), "--no-index", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "loaded 3 new triples" in result.stdout and (tmp_path / "kg.ttl").is_file()


def test_missing_file_and_empty_question_are_one_line_errors(tmp_path):
    missing = run(
        "ask", "Which countries border Chad?", "--graph", str(tmp_path / "nope.ttl"), "--no-model", tmp_path=tmp_path
    )
    assert missing.returncode == 1 and missing.stderr.strip().startswith("error:") and "Traceback" not in missing.stderr
    empty = run("ask", "  ", "--no-model", tmp_path=tmp_path)
    assert empty.returncode == 2 and "the question is empty" in empty.stderr


def test_unreachable_bolt_server_is_one_line(tmp_path):
    result = run(
        "ask",
        "Which countries border Chad?",
        "--store",
        "neo4j",
        "--no-model",
        tmp_path=tmp_path,
        KGLLM_NEO4J_URI="bolt://127.0.0.1:9",
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bolt://127.0.0.1:9" in lines[0] and "Traceback" not in result.stderr


def test_load_into_a_bolt_server_then_ask_it(tmp_path, bolt_server):
    bolt_server.create_database("clitest")
    env = {
        "KGLLM_STORE": "neo4j",
        "KGLLM_NEO4J_URI": bolt_server.uri,
        "KGLLM_NEO4J_USER": bolt_server.user,
        "KGLLM_NEO4J_PASSWORD": bolt_server.password,
        "KGLLM_NEO4J_DATABASE": "clitest",
    }
    good = tmp_path / "good.tsv"
    good.write_text(TSV)
    first = run("load", str(good), tmp_path=tmp_path, **env)
    assert first.returncode == 0, first.stderr
    assert "loaded 3 new triples" in first.stdout
    again = run("load", str(good), "--no-index", tmp_path=tmp_path, **env)
    assert "loaded 0 new triples" in again.stdout and "(3 triples" in again.stdout
    answer = run("ask", "What are the neighbors of Chad?", "--no-model", "--json", tmp_path=tmp_path, **env)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["entities"] == ["Niger"]


def test_explain_shows_the_plans_and_saves_a_picture(tmp_path):
    graph = tmp_path / "mini.tsv"
    graph.write_text(TSV)
    picture = tmp_path / "evidence.svg"
    result = run(
        "ask",
        "What are the neighbors of Chad?",
        "--graph",
        str(graph),
        "--no-model",
        "--explain",
        "--picture",
        str(picture),
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "relation paths considered" in result.stdout and "Chad —neighbor of→ Niger" in result.stdout
    assert picture.is_file() and "<svg" in picture.read_text()


def test_explain_shows_the_program_and_its_compiled_query(tmp_path):
    graph = tmp_path / "mini.tsv"
    graph.write_text(TSV)
    result = run(
        "ask", "How many neighbors does Chad have?", "--graph", str(graph), "--no-model", "--explain", tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "program: (count (hop" in result.stdout and "SPARQL" in result.stdout
    assert "?p0 = " in result.stdout and "SELECT ?x" in result.stdout
    as_json = run(
        "ask", "How many neighbors does Chad have?", "--graph", str(graph), "--no-model", "--json", tmp_path=tmp_path
    )
    metadata = json.loads(as_json.stdout)["metadata"]
    assert metadata["engine"] == "protocol" and metadata["query"]["language"] == "sparql"
    assert metadata["query"]["ran"] is False and "SELECT" in metadata["query"]["text"]


def test_kgqa_bench_runs_zero_shot_and_both_trained_modes(tmp_path):
    kb = tmp_path / "kb.txt"
    kb.write_text(
        "ann\tchildren\tbob\nbob\tparents\tann\nbob\tgender\tmale\nann\tgender\tfemale\n"
        "cid\tchildren\tdan\ndan\tparents\tcid\ndan\tgender\tmale\ncid\tgender\tmale\n"
    )
    line = "what is the gender of {p} 's child ?\tmale(male/)\t{p}#children#{c}#gender#male#<end>#male\n"
    for split in ("train", "dev", "test"):
        (tmp_path / f"q.{split}.txt").write_text(line.format(p="ann", c="bob") + line.format(p="cid", c="dan"))
    result = run(
        "bench",
        "kgqa",
        "--kb",
        str(kb),
        "--test",
        str(tmp_path / "q.test.txt"),
        "--train",
        str(tmp_path / "q.train.txt"),
        "--schema-questions",
        "40",
        "--minutes",
        "0.05",
        "--hops",
        "2",
        "--beam",
        "3",
        tmp_path=tmp_path,
        KGLLM_TRAIN_MINUTES="0.05",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "zero-shot graph search (encoder, beam 3)" in result.stdout
    assert "planner trained on the train split (LoRA, beam 3)" in result.stdout
    assert "planner trained on schema-generated questions (LoRA, beam 3)" in result.stdout


def test_a_planner_trained_on_the_graph_alone_is_used_by_ask(tmp_path):
    kb = tmp_path / "kb.tsv"
    kb.write_text(
        "ann\tchildren\tbob\nbob\tparents\tann\nbob\tgender\tmale\nann\tgender\tfemale\n"
        "cid\tchildren\tdan\ndan\tparents\tcid\ndan\tgender\tmale\ncid\tgender\tmale\n"
    )
    planner = tmp_path / "planner"
    quick = {"KGLLM_TRAIN_MINUTES": "0.05"}
    trained = run(
        "train", "planner", "--graph", str(kb), "--out", str(planner), "--questions", "60", "--minutes", "0.05",
        tmp_path=tmp_path, **quick,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert f"KGLLM_PLANNER={planner}" in trained.stdout.replace("\n", "")
    saved = json.loads((planner / "planner.json").read_text())
    assert Path(saved["base"]).is_dir() and saved["lm_weight"] > 0 and 0 < saved["min_plan_similarity"] < 1

    asked = run(
        "ask", "What is the gender of Ann's child?", "--graph", str(kb), "--json",
        tmp_path=tmp_path, KGLLM_PLANNER=str(planner), **quick,
    )  # fmt: skip
    assert asked.returncode == 0, asked.stderr[-2000:]
    assert json.loads(asked.stdout)["metadata"]["model"].endswith("+planner")

    wrong = run("ask", "Who is Ann?", "--graph", str(kb), tmp_path=tmp_path, KGLLM_PLANNER=str(tmp_path), **quick)
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert "is not a trained planner" in wrong.stderr


def test_extract_review_goes_with_a_dry_run_only(tmp_path):
    document = tmp_path / "note.txt"
    document.write_text("Acme Corp is located in Berlin.")
    result = run("extract", str(document), "--graph", str(tmp_path / "g.ttl"), "--review", tmp_path=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--review queues a dry run's facts: use it with --dry-run" in result.stderr
    assert not (tmp_path / "g.ttl").exists()


def test_piped_output_keeps_a_long_answer_on_one_line(tmp_path):
    neighbours = [f"Republic of Far Away Country Number {i}" for i in range(6)]
    graph = tmp_path / "wide.tsv"
    graph.write_text("".join(f"chad\tneighborOf\t{name}\n" for name in neighbours))
    environment = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    environment["KGLLM_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run(
        [KGLLM, "ask", "What are the neighbors of Chad?", "--graph", str(graph), "--no-model"],
        capture_output=True,  # stdout is a pipe, as in `kgllm ask ... | grep`
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    [answer_line] = [line for line in result.stdout.splitlines() if line.startswith("A:")]
    assert len(answer_line) > 200
    assert all(name in answer_line for name in neighbours)
