"""Evidence pictures: the subgraph of an answer's paths, drawn to PNG or SVG."""

import pytest

from kgllm.exceptions import InputError
from kgllm.explain import evidence_graph, save_picture
from kgllm.types import Answer, Entity, Evidence, GraphPath, Triple

EX = "http://example.org/"


@pytest.fixture
def answer():
    first = (Triple(EX + "chad", EX + "neighborOf", EX + "niger"), Triple(EX + "niger", EX + "locatedIn", EX + "west"))
    second = (
        Triple(EX + "libya", EX + "neighborOf", EX + "chad"),
        Triple(EX + "libya", EX + "locatedIn", EX + "north"),
    )
    paths = [GraphPath(EX + "chad", first, 0.9), GraphPath(EX + "chad", second, 0.9)]
    labels = {EX + n: n.title() for n in ("chad", "niger", "west", "libya", "north")}
    labels |= {EX + "neighborOf": "neighbor of", EX + "locatedIn": "located in"}
    return Answer(
        "Where are Chad's neighbours?",
        "North and West.",
        [Entity(EX + "west", "West"), Entity(EX + "north", "North")],
        Evidence(list(first + second), paths, 0.9),
        0.8,
        labels,
    )


def test_evidence_graph_marks_roles_and_hop_layers(answer):
    graph = evidence_graph(answer)
    assert graph.number_of_edges() == 4
    roles = {graph.nodes[n]["label"]: (graph.nodes[n]["role"], graph.nodes[n]["layer"]) for n in graph.nodes}
    assert roles == {
        "Chad": ("question", 0),
        "Niger": ("via", 1),
        "Libya": ("via", 1),
        "West": ("answer", 2),
        "North": ("answer", 2),
    }
    assert graph.has_edge(EX + "libya", EX + "chad")  # drawn in the fact's own direction


def test_pictures_are_saved_as_png_and_svg(answer, tmp_path):
    png = save_picture(answer, tmp_path / "evidence.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = save_picture(answer, tmp_path / "evidence.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg


def test_bad_picture_requests_fail_clearly(answer, tmp_path):
    with pytest.raises(InputError, match=".png or .svg"):
        save_picture(answer, tmp_path / "evidence.gif")
    refusal = Answer("q", "no answer", [], Evidence(), 0.0)
    with pytest.raises(InputError, match="no evidence paths"):
        save_picture(refusal, tmp_path / "none.png")
