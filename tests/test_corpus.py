"""Training text from a graph: deterministic, and in the plan format the reasoner scores."""

from kgllm.graph.demo import demo_graph_path
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.llm.corpus import CorpusBuilder, clause, noun_chain, path_text, plan_prompt


def test_corpus_is_deterministic_under_a_seed():
    store = RDFLibStore(demo_graph_path())
    first = CorpusBuilder(store, seed=3).texts()
    assert first == CorpusBuilder(RDFLibStore(demo_graph_path()), seed=3).texts()
    assert first != CorpusBuilder(store, seed=4).texts()


def test_corpus_holds_facts_and_plans_of_one_and_two_steps_both_ways():
    texts = CorpusBuilder(RDFLibStore(demo_graph_path())).texts()
    assert "Chad neighbor of Libya." in texts
    plans = [t.split("\nPath: ")[1] for t in texts if t.startswith("Question: ") and "\nPath: " in t]
    assert len(plans) > 1000
    assert any(p.count(" > ") == 3 and p.startswith("^") for p in plans)  # two steps, the first backwards
    assert any(p == "neighbor of > country" for p in plans)
    assert any(p == "located in > subregion > ^located in > country" for p in plans)


def test_plan_format_and_phrases():
    assert plan_prompt(" Which? ") == "Question: Which?\nPath:"
    assert (
        path_text(["neighbor of", "located in"], [False, True], ["country", None])
        == " ^neighbor of > country > located in > thing"
    )
    assert clause("Chad", "regions", "located in", True, False) == "the regions that Chad is located in"
    assert clause("Chad", "countries", "borders", False, False) == "the countries that borders Chad"
    assert noun_chain("Chad", ["neighbor of", "neighbor of"]) == "the neighbors of the neighbors of Chad"
    assert noun_chain("Chad", ["located in"]) is None
