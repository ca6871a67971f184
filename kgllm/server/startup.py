"""Start-up steps of ``kgllm serve`` in a container: wait for the store, load a graph into it once."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from kgllm.exceptions import StoreUnavailableError
from kgllm.graph import open_store
from kgllm.graph.base import GraphStore
from kgllm.graph.loaders import load
from kgllm.settings import Settings

log = logging.getLogger(__name__)


def wait_for_store(
    graph: str | os.PathLike | None, kind: str, settings: Settings, wait_seconds: float = 0.0, retry_every: float = 2.0
) -> GraphStore:
    """The configured store, trying again for up to ``wait_seconds`` while its server cannot be reached."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            store = open_store(graph, store=kind, settings=settings)
            store.count_triples()
            return store
        except StoreUnavailableError as exc:
            if time.monotonic() + retry_every > deadline:
                raise
            log.warning("waiting for the graph store: %s", exc)
            time.sleep(retry_every)


def load_if_empty(store: GraphStore, path: str | os.PathLike) -> int:
    """Load ``path`` into ``store`` when the store holds no triples; returns the triples added (0: it had some)."""
    if store.count_triples():
        log.info("the store already holds %d triples; %s not loaded", store.count_triples(), path)
        return 0
    added = load(store, Path(path))
    log.warning("loaded %d triples from %s into the empty store", added, path)
    return added
