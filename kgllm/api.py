"""The Python entry points: ``connect`` builds a session, ``ask`` answers one question.

Example::

    import kgllm
    answer = kgllm.ask("Which countries border Chad?")
    print(answer.text, answer.confidence)
    for path in answer.evidence.paths:
        print([(answer.label(t.head), answer.label(t.relation), answer.label(t.tail)) for t in path.triples])
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kgllm.exceptions import ConfigurationError
from kgllm.graph import GraphStore, stores
from kgllm.graph.demo import demo_graph_path
from kgllm.llm.base import LanguageModel
from kgllm.pipelines.synergize import PathReasoner, ReasonerConfig
from kgllm.retrieval.encoder import Encoder, encoder_from_settings
from kgllm.retrieval.retriever import KGRetriever
from kgllm.settings import Settings
from kgllm.types import Answer, Entity, Triple

log = logging.getLogger(__name__)


class Session:
    """A store, its retriever and a language model, ready to answer questions."""

    def __init__(self, store: GraphStore, retriever: KGRetriever, lm: LanguageModel | None,
                 settings: Settings, reasoner_config: ReasonerConfig | None = None):
        self.store = store
        self.retriever = retriever
        self.lm = lm
        self.settings = settings
        self.reasoner = PathReasoner(store, retriever, lm, reasoner_config or _reasoner_config(settings))

    def ask(self, question: str) -> Answer:
        """Answer ``question`` from the graph, with the paths that support the answer."""
        return self.reasoner.answer(question)

    def add(self, triples: Iterable[Triple], entities: Iterable[Entity] = ()) -> int:
        """Add facts to the store and bring the indexes in step; returns the number of new triples."""
        added = self.store.add(triples, entities)
        self.retriever.refresh()
        return added

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(graph: str | os.PathLike | GraphStore | None = None, *, store: str | None = None,
            encoder: str | Encoder | None = None, model: str | os.PathLike | LanguageModel | None = None,
            use_model: bool = True, settings: Settings | None = None, progress: bool = True,
            **store_kwargs: Any) -> Session:
    """Open a session over a graph.

    ``graph`` is a graph file for the embedded rdflib store (default: the demo graph) or a ready
    ``GraphStore``; ``store="neo4j"`` connects to the Bolt server in the settings. ``model`` is a
    local Hugging Face directory or a ``LanguageModel``; by default the model trained on this graph
    is used, and trained on first use. ``use_model=False`` answers with the encoder and graph alone.
    """
    settings = settings or Settings()
    graph_store = _open_store(graph, store or settings.store, settings, store_kwargs)
    graph_store.count_triples()  # fail fast on an unreachable server or an unreadable file
    enc = encoder if isinstance(encoder, Encoder) else encoder_from_settings(
        settings if encoder is None else settings.model_copy(update={"encoder": encoder}))
    retriever = KGRetriever(graph_store, enc, index_dir=_index_dir(graph_store, settings),
                            max_fanout=settings.max_fanout)
    retriever.build()
    lm = _language_model(model, graph_store, settings, progress) if use_model else None
    return Session(graph_store, retriever, lm, settings)


_sessions: dict[tuple[object, str], Session] = {}


def ask(question: str, graph: str | os.PathLike | GraphStore | None = None, **connect_kwargs: Any) -> Answer:
    """Answer one question; the session for ``graph`` is kept for the next call."""
    key = (id(graph) if isinstance(graph, GraphStore) else str(graph), repr(sorted(connect_kwargs.items())))
    if key not in _sessions:
        _sessions[key] = connect(graph, **connect_kwargs)
    return _sessions[key].ask(question)


def _open_store(graph, kind: str, settings: Settings, kwargs: dict[str, Any]) -> GraphStore:
    if isinstance(graph, GraphStore):
        if kwargs:
            raise ConfigurationError(f"a ready store was given; these arguments would be ignored: {sorted(kwargs)}")
        return graph
    if kind == "neo4j":
        if graph is not None:
            raise ConfigurationError("a graph file goes with the rdflib store; load it into Neo4j with `kgllm load`")
        cls = stores.get("neo4j")
        return cls(**kwargs) if kwargs else cls.from_settings(settings)
    path = Path(graph) if graph is not None else (settings.graph or demo_graph_path())
    if not path.is_file():
        raise ConfigurationError(f"{path}: no such graph file")
    if path.suffix.lower() in (".tsv", ".txt", ".csv"):
        from kgllm.graph.loaders import load

        rdf = stores.resolve("rdflib", kwargs)
        load(rdf, path)
        return rdf
    return stores.resolve("rdflib", {"path": path, **kwargs})


def _index_dir(store: GraphStore, settings: Settings) -> Path:
    """Indexes live beside a graph file when its folder is writable, else in the cache."""
    path = getattr(store, "path", None)
    if path is not None and os.access(Path(path).parent, os.W_OK):
        return Path(path).with_name(Path(path).name + ".index")
    source = str(path) if path is not None else f"{getattr(store, 'uri', store.name)}/{getattr(store, 'database', '')}"
    return settings.cache_dir / "indexes" / hashlib.sha256(source.encode()).hexdigest()[:16]


def _language_model(model, store: GraphStore, settings: Settings, progress: bool) -> LanguageModel:
    if isinstance(model, LanguageModel):
        return model
    if model is None and settings.openai_base_url:
        from kgllm.llm.openai_compat import OpenAICompatibleLM

        return OpenAICompatibleLM.from_settings(settings)
    from kgllm.llm.default import ensure_default_model
    from kgllm.llm.hf import HFCausalLM

    path = model or settings.model or ensure_default_model(store, settings, progress=progress)
    return HFCausalLM.from_pretrained(path, device=settings.device, threads=settings.threads)


def _reasoner_config(settings: Settings) -> ReasonerConfig:
    return ReasonerConfig(max_hops=settings.max_hops, max_fanout=settings.max_fanout, lm_weight=settings.lm_weight,
                          beam_width=settings.beam_width)
