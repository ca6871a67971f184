"""Batch jobs on a real local Ray cluster of two workers: the same lines as one process, a killed
worker's shard retried with no lost or repeated line."""

import json
import math
import os
import sys
from pathlib import Path

import pytest

from kgllm.cluster import map_shards, shards
from kgllm.graph import open_store
from kgllm.graph.demo import demo_graph_path
from kgllm.jobs import AskJob, CompleteJob, run_ask_job
from kgllm.pipelines.completion import jobs as completion_jobs
from kgllm.pipelines.completion.jobs import cached_completer, job_config, run_complete_job
from kgllm.settings import Settings

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    """Ray on this machine with two worker slots; workers import this checkout's kgllm and this module."""
    source = str(Path(completion_jobs.__file__).resolve().parents[3])
    ray.init(num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": source}}, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's own tasks travel by value
    yield "auto"
    ray.shutdown()


@pytest.fixture(scope="module")
def complete_job(tmp_path_factory):
    """A job over 150 queries of the demo graph, its completer trained into a fresh cache."""
    root = tmp_path_factory.mktemp("complete")
    store = open_store(demo_graph_path(), store="rdflib")
    entities = sorted({t.head for t in store.triples()})[:75]
    relation = "https://kgllm.dev/countries/neighborOf"
    (root / "q.tsv").write_text("".join(f"{e}\t{relation}\t?\n?\t{relation}\t{e}\n" for e in entities))
    job = CompleteJob(
        job="complete",
        queries=root / "q.tsv",
        output=root / "one-process.jsonl",
        graph=demo_graph_path(),
        kge_models=["distmult"],
        kge_seconds=600,
        kge_epochs=8,  # a budget of epochs, not seconds: the same model on a busy machine
        scorers=[],
        top_k=3,
    )
    settings = Settings(cache_dir=root / "cache")
    run_complete_job(job, store, settings, progress=False, completer=cached_completer(store, job_config(job), settings))
    return job, store, settings


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def same_records(ours: list, theirs: list) -> bool:
    """Equal records, floats to 1e-4: a shard scores its queries in a smaller batch, which sums the
    same products in another order, so a score can differ in its last rounded digit."""
    if isinstance(ours, float) or isinstance(theirs, float):
        return math.isclose(ours, theirs, abs_tol=1e-4)
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(same_records(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(same_records(a, b) for a, b in zip(ours, theirs))
    return ours == theirs


def records(path: Path) -> list:
    return [json.loads(line) for line in lines(path)]


def test_complete_on_two_workers_writes_the_lines_one_process_writes(cluster, complete_job, tmp_path):
    job, store, settings = complete_job
    on_ray = job.model_copy(update={"output": tmp_path / "ray.jsonl"})
    summary = run_complete_job(on_ray, store, settings, progress=False, ray=cluster, shard_size=64)
    assert summary.queries == 150 and summary.predictions == 450
    written = lines(on_ray.output)
    assert same_records(records(on_ray.output), records(job.output))
    again = run_complete_job(on_ray, store, settings, progress=False, ray=cluster, shard_size=64)
    assert again.already_done == 150 and again.queries == 0 and lines(on_ray.output) == written


def _dies_once(marker: str):
    """The completion task, except that the worker running the shard starting at query 65 dies the first time."""

    def task(job, settings, part):
        if part[0].id == "65" and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return completion_jobs._complete_shard(job, settings, part)

    return task


def test_a_killed_workers_shard_is_retried_without_lost_or_repeated_lines(cluster, complete_job, tmp_path):
    job, store, settings = complete_job
    marker = tmp_path / "died"
    pending = list(
        completion_jobs.job_queries(
            job,
            store,
            cached_completer(store, job_config(job), settings, progress=False).kge.vocabulary,
            completion_jobs.read_query_file(job.queries),
        )
    )
    parts = list(map_shards(_dies_once(str(marker)), shards(pending, 64), cluster, job, settings))
    assert marker.exists()  # a worker really died
    returned = [json.loads(json.dumps(r)) for part in parts for r in part]
    assert [r["id"] for r in returned] == [q.id for q in pending]
    assert same_records(returned, records(job.output))


def test_ask_job_on_two_workers_matches_one_process(cluster, tmp_path):
    from kgllm.api import connect

    questions = tmp_path / "q.txt"
    questions.write_text("Which countries border Chad?\nWhere is Kenya located?\nWhat borders Nepal?\nWho is Zorg?\n")
    job = AskJob(job="ask", questions=questions, output=tmp_path / "one.jsonl", use_model=False)
    run_ask_job(job, connect(None, use_model=False), progress=False)
    on_ray = job.model_copy(update={"output": tmp_path / "ray.jsonl"})
    counts = run_ask_job(on_ray, None, progress=False, ray=cluster, shard_size=2)
    assert counts == {"answered": 4, "skipped": 0}
    assert [_without_timing(line) for line in lines(on_ray.output)] == [
        _without_timing(line) for line in lines(job.output)
    ]


def _without_timing(line: str) -> dict:
    """An answer line less the time it took, which no two runs share."""
    record = json.loads(line)
    del record["metadata"]["seconds"]
    return record
