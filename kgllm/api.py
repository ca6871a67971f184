"""The Python entry points: ``connect`` builds a session, ``ask`` answers one question.

Example::

    import kgllm
    answer = kgllm.ask("Which countries border Chad?")
    print(answer.text, answer.confidence)
    for path in answer.evidence.paths:
        print([(answer.label(t.head), answer.label(t.relation), answer.label(t.tail)) for t in path.triples])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kgllm.graph import GraphStore, open_store
from kgllm.llm import LanguageModel, open_model
from kgllm.pipelines.enhance import GenerationAnswerer
from kgllm.pipelines.synergize.planner import open_planner
from kgllm.retrieval.encoder import Encoder, encoder_from_settings
from kgllm.retrieval.retriever import KGRetriever
from kgllm.session import Session, reasoner_config_from
from kgllm.settings import Settings
from kgllm.types import Answer

log = logging.getLogger(__name__)


def connect(
    graph: str | os.PathLike | GraphStore | None = None,
    *,
    store: str | None = None,
    encoder: str | Encoder | None = None,
    model: str | os.PathLike | LanguageModel | None = None,
    use_model: bool = True,
    settings: Settings | None = None,
    progress: bool = True,
    **store_kwargs: Any,
) -> Session:
    """Open a session over a graph.

    ``graph`` is a graph file for the embedded rdflib store (default: the demo graph) or a ready
    ``GraphStore``; ``store`` names another registered store (``"neo4j"``: the Bolt server in the
    settings). ``model`` is a local Hugging Face directory or a ``LanguageModel``; by default the
    model trained on this graph is used, and trained on first use. ``use_model=False`` answers with
    the encoder and graph alone. ``settings.planner`` (``KGLLM_PLANNER``) adds a planner trained by
    ``kgllm train planner`` to rank relation paths.
    """
    settings = settings or Settings()
    graph_store = open_store(graph, store=store, settings=settings, **store_kwargs)
    graph_store.count_triples()  # fail fast on an unreachable server or an unreadable file
    enc = (
        encoder
        if isinstance(encoder, Encoder)
        else encoder_from_settings(settings if encoder is None else settings.model_copy(update={"encoder": encoder}))
    )
    retriever = KGRetriever(
        graph_store,
        enc,
        index_dir=graph_store.index_dir(settings.cache_dir),
        max_fanout=settings.max_fanout,
        index_facts=settings.index_facts,
    )
    retriever.build()
    lm = open_model(model, store=graph_store, settings=settings, progress=progress) if use_model else None
    reader = None
    if use_model and model is None and settings.model is None and settings.backend_name() == "hf":
        reader = default_reader(settings, progress)
    planner, reasoner_config = None, None
    if use_model and settings.planner is not None:
        planner, weight, floor = open_planner(settings.planner, threads=settings.threads)
        reasoner_config = replace(reasoner_config_from(settings), lm_weight=weight, min_plan_similarity=floor)
    return Session(graph_store, retriever, lm, settings, reasoner_config, reader=reader, planner=planner)


def default_reader(settings: Settings, progress: bool) -> Callable[[GenerationAnswerer], LanguageModel]:
    """Generate mode's model when kgllm's own is used: the reader (the default model taught to cite
    the facts the answerer gives it), trained on the first generate question and cached."""
    from kgllm.pipelines.enhance.reading import ensure_reader_model

    return lambda answerer: open_model(ensure_reader_model(answerer, settings, progress=progress), settings=settings)


_sessions: dict[tuple[object, str], Session] = {}


def ask(question: str, graph: str | os.PathLike | GraphStore | None = None, **connect_kwargs: Any) -> Answer:
    """Answer one question; the session for ``graph`` is kept for the next call.

    Example: ``ask("Which countries border Chad?", use_model=False).text``.
    """
    key = (id(graph) if isinstance(graph, GraphStore) else str(graph), repr(sorted(connect_kwargs.items())))
    if key not in _sessions:
        _sessions[key] = connect(graph, **connect_kwargs)
    return _sessions[key].ask(question)
