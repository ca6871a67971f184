"""What only the Oxigraph store does: a folder on disk, shared by processes, undone when a write fails."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kgllm.exceptions import ConfigurationError, ParseError
from kgllm.graph import open_store
from kgllm.graph.loaders import load, load_report
from kgllm.graph.oxigraph_store import UNDO_LOG, OxigraphStore
from kgllm.types import Entity, Triple

EX = "http://example.org/"
KEPT = Triple(EX + "kept", EX + "r", EX + "kept2")
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def run_python(code: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)


def test_graph_persists_across_reopen(tmp_path):
    with OxigraphStore(tmp_path / "kg") as store:
        store.add([Triple(EX + "a", EX + "r", EX + "b")], [Entity(EX + "a", "Alpha")])
    with open_store(tmp_path / "kg", store="oxigraph") as again:
        assert list(again.triples()) == [Triple(EX + "a", EX + "r", EX + "b")]
        assert again.entity(EX + "a").label == "Alpha"
        assert [str(r.s) for r in again.query("SELECT ?s WHERE { ?s ?p ?o }", o=EX + "b")] == [EX + "a"]


def test_reading_needs_an_existing_folder(tmp_path):
    with pytest.raises(ConfigurationError, match="no such graph folder"):
        open_store(tmp_path / "missing", store="oxigraph")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="in a folder"):
        open_store(tmp_path / "file", store="oxigraph", writable=True)


def test_two_store_objects_in_one_process_share_the_folder(tmp_path):
    first, second = OxigraphStore(tmp_path / "kg"), OxigraphStore(tmp_path / "kg")
    first.add([KEPT])
    assert second.count_triples() == 1
    second.add([Triple(EX + "x", EX + "r", EX + "y")])
    assert first.count_triples() == 2  # its cached count was dropped by the other's write
    first.close()
    second.close()


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    writer = f"""
        import sys
        from kgllm.graph.oxigraph_store import OxigraphStore
        from kgllm.types import Triple
        name = sys.argv[1]
        for i in range(25):
            with OxigraphStore({str(tmp_path / "kg")!r}) as store:  # open, write, let go: the other gets a turn
                store.add([Triple("{EX}" + name + str(i), "{EX}r", "{EX}hub")])
    """
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(writer))
    workers = [subprocess.Popen([sys.executable, str(script), name], env=ENV) for name in ("left", "right")]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    with OxigraphStore(tmp_path / "kg") as store:
        assert store.count_triples() == 50
        assert {t.head.removeprefix(EX)[:4] for t in store.triples()} == {"left", "righ"}


def test_a_bad_last_line_writes_nothing(tmp_path):
    with OxigraphStore(tmp_path / "kg") as store:
        store.add([KEPT])
    lines = [f"<{EX}n{i}> <{EX}r> <{EX}n{i + 1}> .\n" for i in range(100)]
    (tmp_path / "big.nt").write_text("".join(lines) + f"<{EX}a> <{EX}b> .\n")
    with OxigraphStore(tmp_path / "kg") as store:
        with pytest.raises(ParseError) as refused:
            load(store, tmp_path / "big.nt", batch_size=10)  # ten batches reach Oxigraph before the bad line
        assert (refused.value.path, refused.value.line) == (str(tmp_path / "big.nt"), 101)
        assert list(store.triples()) == [KEPT]
    assert not (tmp_path / "kg" / UNDO_LOG).exists()


def test_a_load_reports_its_rate_and_streams_in_batches(tmp_path):
    rows = "".join(f"n{i}\trelated\tn{i + 1}\n" for i in range(1000))
    (tmp_path / "big.tsv").write_text(rows)
    with OxigraphStore(tmp_path / "kg") as store:
        report = load_report(store, tmp_path / "big.tsv", batch_size=100)
        assert (report.new_triples, report.triples) == (1000, 1000)
        assert "triples/s" in report.line()
        assert store.count_triples() == 1000
        assert load(store, tmp_path / "big.tsv", batch_size=100) == 0


def test_a_write_cut_short_by_a_crash_is_undone_at_next_open(tmp_path):
    with OxigraphStore(tmp_path / "kg") as store:
        store.add([KEPT])
    crash = f"""
        import os
        from kgllm.graph.oxigraph_store import OxigraphStore
        from kgllm.types import Triple

        def batches():
            yield [Triple("{EX}a", "{EX}r", "{EX}b")], [], []
            yield [Triple("{EX}c", "{EX}r", "{EX}d")], [], []
            os._exit(3)  # killed mid-load: two batches are in Oxigraph, the load is not done

        OxigraphStore({str(tmp_path / "kg")!r}).add_batches(batches())
    """
    assert run_python(crash).returncode == 3
    assert (tmp_path / "kg" / UNDO_LOG).exists()
    with OxigraphStore(tmp_path / "kg") as store:
        assert list(store.triples()) == [KEPT]
    assert not (tmp_path / "kg" / UNDO_LOG).exists()


def test_a_failed_removal_is_undone_too(tmp_path):
    """Undo restores what a write removed (a derived fact asserted, its marker dropped) as well as what it added."""
    from kgllm.types import Provenance

    fact = Triple(EX + "a", EX + "r", EX + "b")
    with OxigraphStore(tmp_path / "kg") as store:
        store.add_derived([fact], [Provenance("doc.txt", "extracted")])

        def batches():
            yield [fact], [], []  # asserts the fact: its derived marker is removed
            raise RuntimeError("the source failed")

        with pytest.raises(RuntimeError):
            store.add_batches(batches())
        assert not store.is_asserted(fact)
        assert store.provenance(fact)[0].source == "doc.txt"
