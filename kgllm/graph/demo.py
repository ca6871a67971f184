"""Where the bundled demo graph (world geography, from Countries S1) lives."""

from pathlib import Path

from kgllm.exceptions import ConfigurationError

DEMO_FILE = "countries.ttl"


def demo_graph_path() -> Path:
    """The demo Turtle file: packaged in the wheel, or in the source tree for editable installs."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "_assets" / "demo", package.parent / "graph" / "demo"):
        if (folder / DEMO_FILE).is_file():
            return folder / DEMO_FILE
    raise ConfigurationError("the demo graph is missing from this installation; reinstall kgllm")
