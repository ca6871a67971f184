"""Graph stores behind one protocol, loaders, and networkx algorithms.

A new store is one :class:`GraphStore` subclass and one registration: here with
``stores.register(name, "module:Class")``, or from another package through the
``kgllm.stores`` entry-point group.
"""

from __future__ import annotations

import os
from typing import Any

from kgllm.exceptions import ConfigurationError
from kgllm.graph.base import Direction, GraphStore
from kgllm.registry import Registry

stores: Registry[GraphStore] = Registry("graph store", GraphStore, entry_points="kgllm.stores")
stores.register("rdflib", "kgllm.graph.rdflib_store:RDFLibStore")
stores.register("oxigraph", "kgllm.graph.oxigraph_store:OxigraphStore")
stores.register("neo4j", "kgllm.graph.neo4j_store:Neo4jStore")


def open_store(
    graph: str | os.PathLike | GraphStore | None = None,
    *,
    store: str | None = None,
    settings: Any = None,
    writable: bool = False,
    **store_kwargs: Any,
) -> GraphStore:
    """Open the graph to read or write.

    ``graph`` is a ready store, or a graph file for file-backed stores (default: ``settings.graph``,
    else the bundled demo graph when only reading). ``store`` names a registered store (default:
    ``settings.store``); an unknown name is an error that lists the known ones. ``store_kwargs``
    go to the store (``uri=``, ``format=``, ...). Nothing is connected until first use.

    >>> open_store(store="rdflib").count_triples() > 1000
    True
    """
    if isinstance(graph, GraphStore):
        if store_kwargs or store is not None:
            raise ConfigurationError(
                "a ready store was given; these arguments would be ignored: "
                f"{sorted(store_kwargs) + (['store'] if store else [])}"
            )
        return graph
    from kgllm.settings import Settings

    settings = settings or Settings()
    cls = stores.get(store or settings.store)
    return cls.from_settings(settings, graph, writable=writable, **store_kwargs)


__all__ = ["Direction", "GraphStore", "open_store", "stores"]
