"""Where the bundled demo graph (world geography, from Countries S1) and its question sets live."""

from pathlib import Path

from kgllm.exceptions import ConfigurationError

DEMO_FILE = "countries.ttl"


DEMO_QUESTION_SETS = ("demo_qa.jsonl", "demo_qa_heldout.jsonl")


def demo_graph_path() -> Path:
    """The demo Turtle file: packaged in the wheel, or in the source tree for editable installs."""
    return _asset("demo", "graph/demo", DEMO_FILE)


def demo_question_sets() -> list[Path]:
    """The demo graph's question sets with gold answers (``kgllm bench ask``'s default)."""
    return [_asset("questions", "benchmarks/questions", name) for name in DEMO_QUESTION_SETS]


def _asset(packaged: str, in_checkout: str, name: str) -> Path:
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "_assets" / packaged, package.parent / in_checkout):
        if (folder / name).is_file():
            return folder / name
    raise ConfigurationError(f"{name} is missing from this installation; reinstall kgllm")


def is_bundled_demo(store) -> bool:
    """Whether ``store`` serves the demo file that ships with kgllm (read-only: writes belong in a copy)."""
    return store.location == str(demo_graph_path().resolve())
