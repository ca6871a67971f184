"""The ``kgllm`` command line. ``main`` builds the app from one module per area:
``main`` (graphs, questions, jobs, serving, benchmarks), ``llm`` (training and adapters) and
``construction`` (extraction, resolution, verbalization)."""

from kgllm.cli.main import app, main

__all__ = ["app", "main"]
