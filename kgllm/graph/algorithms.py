"""networkx projections of a store, for graph algorithms."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import networkx as nx

from kgllm.graph.base import GraphStore
from kgllm.types import GraphPath, Triple


def to_networkx(
    store: GraphStore, seeds: Sequence[str] | None = None, hops: int = 2, max_triples: int = 200_000
) -> nx.MultiDiGraph:
    """The whole graph, or the ``hops``-neighbourhood of ``seeds``, as a MultiDiGraph.

    Nodes carry ``label``; edges are keyed by relation id and carry ``relation`` and ``label``.
    """
    triples = store.subgraph(list(seeds), hops=hops, max_triples=max_triples) if seeds else list(store.triples())
    graph = nx.MultiDiGraph()
    for t in triples:
        graph.add_edge(t.head, t.tail, key=t.relation, relation=t.relation)
    for node in graph.nodes:
        graph.nodes[node]["label"] = store.label(node)
    relation_labels = {r: store.label(r) for r in {t.relation for t in triples}}
    for _, _, data in graph.edges(data=True):
        data["label"] = relation_labels[data["relation"]]
    return graph


def shortest_paths(graph: nx.MultiDiGraph, source: str, target: str, limit: int = 10) -> list[GraphPath]:
    """Shortest paths between two nodes, ignoring edge direction, as ``Path`` objects."""
    undirected = graph.to_undirected(as_view=True)
    if source not in graph or target not in graph or not nx.has_path(undirected, source, target):
        return []
    paths: list[GraphPath] = []
    for nodes in nx.all_shortest_paths(undirected, source, target):
        paths.append(GraphPath(start=source, triples=tuple(_edge(graph, a, b) for a, b in itertools.pairwise(nodes))))
        if len(paths) >= limit:
            break
    return paths


def _edge(graph: nx.MultiDiGraph, a: str, b: str) -> Triple:
    if graph.has_edge(a, b):
        return Triple(a, next(iter(graph[a][b])), b)
    return Triple(b, next(iter(graph[b][a])), a)


def personalized_pagerank(
    graph: nx.MultiDiGraph, seeds: Sequence[str], top_k: int = 20, alpha: float = 0.85
) -> list[tuple[str, float]]:
    """Nodes ranked by PageRank personalized on ``seeds`` (undirected walk), best first."""
    present = [s for s in seeds if s in graph]
    if not present:
        return []
    simple = nx.Graph(graph.to_undirected(as_view=True))
    scores = nx.pagerank(simple, alpha=alpha, personalization={s: 1.0 for s in present})
    return sorted(scores.items(), key=lambda kv: -kv[1])[:top_k]
