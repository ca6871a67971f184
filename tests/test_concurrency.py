"""Several processes writing one graph file or one cache entry, and processes killed mid-write.

Real processes throughout; they are synchronised through files and their own output, not sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from rdflib import Graph

from kgllm.cache import cached_artifact
from kgllm.exceptions import KGLLMError
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.types import Triple

REPO = Path(__file__).resolve().parents[1]
EX = "http://example.org/"
DEADLINE = 120.0  # seconds any one wait may take before the test fails


def environment(tmp_path: Path) -> dict[str, str]:
    """The worktree's kgllm first on the path, a private cache."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "KGLLM_CACHE_DIR": str(tmp_path / "cache"),
        "COLUMNS": "200",
    }


def kgllm(*args: str, tmp_path: Path) -> subprocess.Popen:
    """``kgllm ARGS`` as a real process."""
    return subprocess.Popen(
        [sys.executable, "-c", "from kgllm.cli import main; main()", *args],
        env=environment(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def python(code: str, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environment(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, what: str, process: subprocess.Popen | None = None):
    """Poll ``condition`` until it holds; fail when ``process`` ends first or after DEADLINE seconds."""
    started = time.monotonic()
    while not (found := condition()):
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process ended (rc {process.returncode}) before {what}: {process.stderr.read()[-2000:]}")
        if time.monotonic() - started > DEADLINE:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.001)
    return found


def stderr_lines(process: subprocess.Popen) -> list[str]:
    """The lines ``process`` writes to stderr, collected as they come by a background thread."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")), daemon=True).start()
    return lines


def table(path: Path, name: str, n: int) -> set[tuple[str, str, str]]:
    """Write ``n`` triples ``name<i> r<i%5> name<i+1>``; returns them as minted IRIs."""
    path.write_text("".join(f"{name}{i}\tr{i % 5}\t{name}{i + 1}\n" for i in range(n)))
    base = "https://kgllm.dev/kg/"
    return {(f"{base}{name}{i}", f"{base}r{i % 5}", f"{base}{name}{i + 1}") for i in range(n)}


def graph_triples(path: Path) -> set[tuple[str, str, str]]:
    graph = Graph()
    graph.parse(path, format="turtle")  # raises when the file does not parse
    return {(str(s), str(p), str(o)) for s, p, o in graph}


def test_two_processes_loading_into_one_graph_keep_both_files(tmp_path):
    a, b = table(tmp_path / "a.tsv", "a", 3000), table(tmp_path / "b.tsv", "b", 3000)
    graph = tmp_path / "kg.ttl"
    loads = [kgllm("load", name, "--into", str(graph), "--no-index", tmp_path=tmp_path) for name in ("a.tsv", "b.tsv")]
    for process in loads:
        _, err = process.communicate(timeout=DEADLINE)
        assert process.returncode == 0, err
    triples = graph_triples(graph)
    assert a <= triples and b <= triples
    assert not list(tmp_path.glob(".kg.ttl.*.tmp")) and not (tmp_path / "kg.ttl.tmp").exists()


def test_a_writer_that_read_the_graph_earlier_adds_to_what_another_process_wrote(tmp_path):
    graph = tmp_path / "kg.ttl"
    early = RDFLibStore(graph)
    early.add([Triple(EX + "a", EX + "r", EX + "b")])  # read and written here, before the other process
    other = table(tmp_path / "other.tsv", "o", 50)
    process = kgllm("load", "other.tsv", "--into", str(graph), "--no-index", tmp_path=tmp_path)
    _, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0, err
    early.add([Triple(EX + "c", EX + "r", EX + "d")])  # its graph in memory is stale: the file is read again
    triples = graph_triples(graph)
    assert other <= triples
    assert {(EX + "a", EX + "r", EX + "b"), (EX + "c", EX + "r", EX + "d")} <= triples
    assert early.count_triples() == 52


def test_a_load_killed_mid_save_leaves_the_graph_whole_and_the_next_load_works(tmp_path):
    graph = tmp_path / "kg.ttl"
    before = table(tmp_path / "first.tsv", "f", 100)
    first = kgllm("load", "first.tsv", "--into", str(graph), "--no-index", tmp_path=tmp_path)
    assert first.wait(timeout=DEADLINE) == 0, first.stderr.read()
    big = table(tmp_path / "big.tsv", "g", 40_000)
    process = kgllm("load", "big.tsv", "--into", str(graph), "--no-index", tmp_path=tmp_path)
    wait_for(lambda: list(tmp_path.glob(".kg.ttl.*.tmp")), "the save started", process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=DEADLINE)
    triples = graph_triples(graph)  # parses: the old file, or the new one, never a mix
    assert triples == before or triples == before | big
    small = table(tmp_path / "small.tsv", "s", 10)
    process = kgllm("load", "small.tsv", "--into", str(graph), "--no-index", tmp_path=tmp_path)
    _, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0, err
    assert before | small <= graph_triples(graph)
    assert not list(tmp_path.glob(".kg.ttl.*.tmp"))  # the killed writer's temporary file is cleared


BUILDER = """
    import os, sys, time
    from pathlib import Path
    from kgllm.cache import cached_artifact

    root = Path(sys.argv[1])

    def build(staging):
        (root / f"build-{os.getpid()}").touch()
        (staging / "half.txt").write_text("half")
        started = time.monotonic()
        while not (root / "go").exists():
            if time.monotonic() - started > 120:
                raise SystemExit("no go")
            time.sleep(0.01)
        (staging / "done.txt").write_text("done")

    print(cached_artifact(root / "key", build, marker="done.txt"), flush=True)
"""


def builder(tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(BUILDER), str(tmp_path)],
        env=environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_asking_for_one_cache_entry_build_it_once(tmp_path):
    first = builder(tmp_path)
    wait_for(lambda: list(tmp_path.glob("build-*")), "the first build started", first)
    assert not (tmp_path / "key").exists()  # building happens beside the entry, not in it
    second = builder(tmp_path)
    said = stderr_lines(second)
    wait_for(lambda: any("waiting for another process" in line for line in said), "the second one waits", second)
    (tmp_path / "go").touch()
    outputs = [p.stdout.read() for p in (first, second)]
    assert [p.wait(timeout=DEADLINE) for p in (first, second)] == [0, 0], outputs
    assert {out.strip() for out in outputs} == {str(tmp_path / "key")}
    assert len(list(tmp_path.glob("build-*"))) == 1  # built once
    assert (tmp_path / "key" / "done.txt").read_text() == "done"
    assert not list(tmp_path.glob(".key.*"))


def test_a_build_killed_midway_leaves_no_entry_and_the_next_one_builds_it(tmp_path):
    process = builder(tmp_path)
    wait_for(lambda: list(tmp_path.glob("build-*")), "the build started", process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=DEADLINE)
    assert not (tmp_path / "key").exists() and list(tmp_path.glob(".key.*.partial"))

    def build(staging: Path) -> None:
        (staging / "done.txt").write_text("done")

    assert cached_artifact(tmp_path / "key", build, marker="done.txt") == tmp_path / "key"
    assert (tmp_path / "key" / "done.txt").read_text() == "done"
    assert not list(tmp_path.glob(".key.*.partial"))  # the killed build's staging folder is gone


def test_a_failed_build_caches_nothing_and_an_unfinished_old_entry_is_rebuilt(tmp_path):
    def fail(staging: Path) -> None:
        (staging / "done.txt").write_text("half")
        raise KGLLMError("training failed")

    with pytest.raises(KGLLMError, match="training failed"):
        cached_artifact(tmp_path / "key", fail, marker="done.txt")
    assert not (tmp_path / "key").exists() and not list(tmp_path.glob(".key.*"))
    (tmp_path / "key").mkdir()  # an older version built in place and was cut off: no marker
    (tmp_path / "key" / "checkpoint.bin").write_text("partial")
    calls = []
    cached_artifact(tmp_path / "key", lambda d: calls.append((d / "done.txt").write_text("ok")), marker="done.txt")
    assert calls and sorted(p.name for p in (tmp_path / "key").iterdir()) == ["done.txt"]
    cached_artifact(tmp_path / "key", lambda d: calls.append("again"), marker="done.txt")
    assert len(calls) == 1  # a finished entry is returned as it is
