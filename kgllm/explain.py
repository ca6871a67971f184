"""Pictures of an answer's evidence: the subgraph its paths walk, question entities and answers marked."""

from __future__ import annotations

import os
from pathlib import Path

import networkx as nx

from kgllm.exceptions import InputError
from kgllm.types import Answer

TOPIC_COLOR, ANSWER_COLOR, OTHER_COLOR = "#f4a261", "#2a9d8f", "#d9d9d9"
PICTURE_FORMATS = (".png", ".svg")


def evidence_graph(answer: Answer) -> nx.MultiDiGraph:
    """The facts on the answer's evidence paths as a graph; nodes carry ``label`` and ``role``."""
    graph = nx.MultiDiGraph()
    starts = {p.start for p in answer.evidence.paths}
    answers = {e.id for e in answer.entities}
    for path in answer.evidence.paths:
        for t in path.triples:
            graph.add_edge(t.head, t.tail, key=t.relation, label=answer.label(t.relation))
    depth: dict[str, int] = {}
    for path in answer.evidence.paths:
        for step, node in enumerate(path.nodes):
            depth[node] = min(step, depth.get(node, step))
    for node in graph.nodes:
        role = "question" if node in starts else "answer" if node in answers else "via"
        graph.nodes[node].update(label=answer.label(node), role=role, layer=depth[node])
    return graph


def save_picture(answer: Answer, path: str | os.PathLike) -> Path:
    """Draw the evidence subgraph to a PNG or SVG file (question entities orange, answers green)."""
    path = Path(path)
    if path.suffix.lower() not in PICTURE_FORMATS:
        raise InputError(f"{path}: a picture is saved as {' or '.join(PICTURE_FORMATS)}")
    if not answer.evidence.paths:
        raise InputError("this answer has no evidence paths to draw")
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    graph = evidence_graph(answer)
    colors = {"question": TOPIC_COLOR, "answer": ANSWER_COLOR, "via": OTHER_COLOR}
    widest = max(
        sum(1 for n in graph.nodes if graph.nodes[n]["layer"] == d)
        for d in {graph.nodes[n]["layer"] for n in graph.nodes}
    )
    layers = 1 + max(graph.nodes[n]["layer"] for n in graph.nodes)
    figure, axes = plt.subplots(figsize=(min(18.0, 3.5 + 3.5 * layers), min(14.0, 2.0 + 0.6 * widest)))
    layout = nx.multipartite_layout(graph, subset_key="layer")  # one column per hop from the question
    nx.draw_networkx_nodes(
        graph, layout, ax=axes, node_size=900, node_color=[colors[graph.nodes[n]["role"]] for n in graph.nodes]
    )
    nx.draw_networkx_labels(
        graph, layout, ax=axes, font_size=8, labels={n: graph.nodes[n]["label"] for n in graph.nodes}
    )
    nx.draw_networkx_edges(graph, layout, ax=axes, arrows=True, arrowsize=12, node_size=900, edge_color="#666666")
    edge_labels = {(h, t): data["label"] for h, t, data in graph.edges(data=True)}
    nx.draw_networkx_edge_labels(graph, layout, edge_labels=edge_labels, ax=axes, font_size=7)
    axes.set_title(f"{answer.question}\n{answer.text}", fontsize=10)
    for role, color in colors.items():
        axes.scatter(
            [],
            [],
            color=color,
            s=80,
            label={"question": "in the question", "answer": "answer", "via": "on the way"}[role],
        )
    axes.legend(loc="lower right", fontsize=8, frameon=False)
    axes.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
