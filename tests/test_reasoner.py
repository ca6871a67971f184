"""The path reasoner on the demo graph, with the real encoder and retriever (no language model)."""

import pytest

from kgllm.exceptions import InputError
from kgllm.graph.demo import demo_graph_path
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.pipelines.synergize.reasoner import PathReasoner, ReasonerConfig
from kgllm.retrieval.retriever import KGRetriever
from kgllm.types import Entity, Triple

KG = "https://kgllm.dev/countries/"


@pytest.fixture(scope="module")
def demo(encoder, tmp_path_factory):
    store = RDFLibStore(demo_graph_path())
    retriever = KGRetriever(store, encoder, index_dir=tmp_path_factory.mktemp("index"))
    retriever.build()
    return PathReasoner(store, retriever)


def answer_ids(answer):
    return {e.id.removeprefix(KG) for e in answer.entities}


@pytest.mark.parametrize(
    "question, gold",
    [
        (
            "Which countries border Chad?",
            {"cameroon", "central_african_republic", "libya", "niger", "nigeria", "south_sudan", "sudan"},
        ),
        ("In which region is Kenya?", {"africa"}),
        (
            "Which subregion are the neighbours of Chad located in?",
            {"middle_africa", "northern_africa", "western_africa"},
        ),
        (
            "Which countries are in the same subregion as Lesotho?",
            {"botswana", "lesotho", "namibia", "south_africa", "swaziland"},
        ),
    ],
)
def test_demo_questions_get_the_full_answer_set(demo, question, gold):
    answer = demo.answer(question)
    assert answer_ids(answer) == gold
    assert answer.confidence > 0.3


def test_every_answer_is_reached_by_a_path_of_real_facts(demo):
    answer = demo.answer("Which subregion are the neighbours of Chad located in?")
    ends = {p.end for p in answer.evidence.paths}
    assert {e.id for e in answer.entities} <= ends
    for path in answer.evidence.paths:
        assert path.start == KG + "chad" and len(path.triples) == 2
        for t in path.triples:
            assert t in set(demo.store.triples(head=t.head, relation=t.relation))


@pytest.mark.parametrize(
    "question", ["Which countries border Atlantis?", "What is the capital of France?", "Who wrote Hamlet?"]
)
def test_what_the_graph_does_not_hold_gets_no_answer(demo, question):
    answer = demo.answer(question)
    assert answer.entities == []
    assert answer.confidence < 0.25
    assert "no answer" in answer.text or "no entity" in answer.text


def test_not_found_names_what_it_considered_and_shows_related_facts(demo):
    answer = demo.answer("What is the capital of France?")
    assert answer.metadata["considered"] == ["France"]
    assert answer.evidence.paths == [] and len(answer.evidence.triples) == 5
    assert any("France" in fact for fact in map(str, answer.to_dict()["facts"]))


def test_unknown_entities_get_the_closest_ones_named(demo):
    answer = demo.answer("Which countries border Atlantis?")
    assert answer.entities == [] and "closest entities" in answer.text
    assert len(answer.metadata["considered"]) == 3


def test_empty_question_is_rejected(demo):
    with pytest.raises(InputError):
        demo.answer("   ")


class _Retriever:
    """Links one entity; the reasoner needs nothing else from a retriever here."""

    def __init__(self, encoder, entity, mention="Hub"):
        self.encoder, self.entity, self.mention = encoder, entity, mention

    def link(self, question):
        from kgllm.retrieval.linking import LinkedEntity

        return [LinkedEntity(self.entity, self.mention, 1.0, "exact")]


def test_hub_entities_and_cycles_are_bounded(encoder):
    ex = "http://example.org/"
    store = RDFLibStore()
    spokes = [Triple(ex + f"n{i}", ex + "linkedTo", ex + "hub") for i in range(3000)]
    cycle = [Triple(ex + "hub", ex + "next", ex + "hub")]
    store.add(spokes + cycle, [Entity(ex + "hub", "Hub")])
    config = ReasonerConfig(max_fanout=50, max_walks=400)
    reasoner = PathReasoner(store, _Retriever(encoder, store.entity(ex + "hub")), config=config)
    plans = reasoner.plans(store.entity(ex + "hub"))
    assert sum(len(p.walks) for p in plans) <= config.max_walks
    answer = reasoner.answer("What is linked to Hub?")
    assert answer.entities
    # the answer says it was searched on a sample of the hub's edges
    assert answer.metadata["fanout_sampled"] == {"entities": ["Hub"], "edges read per entity": 50}
    wide = reasoner.with_options(max_fanout=5000, max_walks=10_000).answer("What is linked to Hub?")
    assert "fanout_sampled" not in wide.metadata and len(wide.entities) > len(answer.entities)


def test_a_hubs_rarer_relations_are_searched_and_walked_whole(encoder):
    ex = "http://example.org/"
    store = RDFLibStore()
    fans = [Triple(ex + f"fan{i}", ex + "follows", ex + "hub") for i in range(300)]
    cities = [Triple(ex + "hub", ex + "livedIn", ex + f"city{i}") for i in range(40)]
    store.add(fans + cities, [Entity(ex + "hub", "Hub"), Entity(ex + "livedIn", "lived in")])
    config = ReasonerConfig(max_fanout=50, beam_width=3)
    reasoner = PathReasoner(store, _Retriever(encoder, store.entity(ex + "hub")), config=config)
    answer = reasoner.answer("Which cities has Hub lived in?")
    # the 50 edges read for the plan were spread over both relations; the plan was then walked whole
    assert {e.id for e in answer.entities} == {ex + f"city{i}" for i in range(40)}
    assert answer.metadata["fanout_sampled"]["entities"] == ["Hub"]


def test_a_relation_named_in_several_words_is_one_hop(encoder):
    ex = "http://example.org/"
    store = RDFLibStore()
    jobs = [Triple(ex + "pat", ex + "profession", ex + "actor"), Triple(ex + "pat", ex + "profession", ex + "singer")]
    others = [Triple(ex + f"p{i}", ex + "profession", ex + "actor") for i in range(5)]
    names = [Entity(ex + "pat", "Pat"), Entity(ex + "profession", "people person profession")]
    store.add(jobs + others, names)
    reasoner = PathReasoner(store, _Retriever(encoder, store.entity(ex + "pat"), mention="Pat"))
    answer = reasoner.answer("What is the people person profession of Pat?")
    assert {e.id for e in answer.entities} == {ex + "actor", ex + "singer"}


@pytest.mark.parametrize(
    "question",
    [
        "Which countries border Chad?",
        "Which subregion are the neighbours of Chad located in?",
        "Which countries are in the same subregion as Lesotho?",
    ],
)
def test_beam_search_finds_the_plan_that_ranking_every_plan_finds(demo, question):
    everything = demo.answer(question)
    beam = PathReasoner(demo.store, demo.retriever, config=ReasonerConfig(beam_width=3)).answer(question)
    assert answer_ids(beam) == answer_ids(everything)
    # (a symmetric relation may be walked either way: the same answers, by paths of the same length)
    assert {len(p.triples) for p in beam.evidence.paths} == {len(p.triples) for p in everything.evidence.paths}
    assert beam.metadata["search"] == "beam 3"


def test_beam_search_keeps_only_the_best_partial_plans(demo):
    narrow = PathReasoner(demo.store, demo.retriever, config=ReasonerConfig(beam_width=2))
    links = demo.retriever.link("Which subregion are the neighbours of Chad located in?")
    plans, _ = narrow.search("Which subregion are the neighbours of Chad located in?", links)
    assert len([p for p in plans if len(p.hops) == 1]) <= 2 and len([p for p in plans if len(p.hops) == 2]) <= 2
    every, _ = demo.search("Which subregion are the neighbours of Chad located in?", links)
    assert len(plans) < len(every)
    # every kept two-hop plan grows out of a kept one-hop plan
    first_hops = {(p.topic.id, p.hops, p.classes) for p in plans if len(p.hops) == 1}
    assert all((p.topic.id, p.hops[:1], p.classes[:1]) in first_hops for p in plans if len(p.hops) == 2)


def test_a_plan_grown_from_a_sample_of_edges_is_walked_again_for_all_its_answers(demo, monkeypatch):
    question = "Which subregion are the neighbours of Chad located in?"
    probing = PathReasoner(demo.store, demo.retriever, config=ReasonerConfig(beam_width=3, max_probe_edges=12))
    walked_again, walk = [], probing._walk_along
    monkeypatch.setattr(probing, "_walk_along", lambda plan: walked_again.append(plan.hops) or walk(plan))
    answer = probing.answer(question)
    assert answer_ids(answer) == {"middle_africa", "northern_africa", "western_africa"}
    assert answer_ids(answer) == answer_ids(demo.answer(question))
    # the second hop was found on the first few neighbours' edges, and the plan then walked from all seven
    assert len(walked_again[0]) == 2
    neighbours = {
        t.tail if t.head == KG + "chad" else t.head
        for t in demo.store.neighbors(KG + "chad", relation=KG + "neighborOf")
    }
    assert len(neighbours) == 7 and {p.nodes[1] for p in answer.evidence.paths} == neighbours


def test_a_beam_ranks_in_full_only_the_children_closest_to_the_question(demo, monkeypatch):
    question = "Which subregion are the neighbours of Chad located in?"
    narrow = PathReasoner(demo.store, demo.retriever, config=ReasonerConfig(beam_width=3, beam_candidates=4))
    ranked, rank = [], narrow.rank
    monkeypatch.setattr(narrow, "rank", lambda q, plans, m: ranked.append(len(plans)) or rank(q, plans, m))
    answer = narrow.answer(question)
    assert answer_ids(answer) == {"middle_africa", "northern_africa", "western_africa"}
    # the four one-hop plans, then four of the eight two-hop ones; the kept plans are ranked together at the end
    assert ranked[:-1] == [4, 4]


def test_beam_search_is_bounded_on_hubs_and_cycles(encoder):
    ex = "http://example.org/"
    store = RDFLibStore()
    store.add(
        [Triple(ex + f"n{i}", ex + "linkedTo", ex + "hub") for i in range(3000)]
        + [Triple(ex + "hub", ex + "next", ex + "hub")],
        [Entity(ex + "hub", "Hub")],
    )
    config = ReasonerConfig(max_hops=3, max_fanout=50, max_walks=400, beam_width=2)
    reasoner = PathReasoner(store, _Retriever(encoder, store.entity(ex + "hub")), config=config)
    plans, _ = reasoner.search("What is linked to Hub?", reasoner.retriever.link(""))
    assert all(len(p.walks) <= config.max_walks for p in plans)
    assert reasoner.answer("What is linked to Hub?").entities


def test_config_is_checked():
    with pytest.raises(InputError):
        ReasonerConfig(beam_width=-1)
    with pytest.raises(InputError):
        ReasonerConfig(max_hops=0)
    with pytest.raises(InputError):
        ReasonerConfig(max_fanout=0)
    with pytest.raises(InputError):
        ReasonerConfig(max_probe_edges=0)
    with pytest.raises(InputError):
        ReasonerConfig(beam_candidates=0)


def test_nouns_chained_to_the_entity_hint_at_the_hops():
    from kgllm.pipelines.synergize.reasoner import _TOKEN, _chained_nouns

    def chained(text):
        tokens = _TOKEN.findall(text.lower())
        return [tokens[i] for i in _chained_nouns(tokens)]

    # from the entity outwards: the order in which a plan should follow the relations
    assert chained("what is the sex of son of X ?") == ["son", "sex"]
    assert chained("X 's dad 's job ?") == ["dad", "job"]
    assert chained("the subregions of X's neighbours") == ["neighbours", "subregions"]
    assert chained("the nation of offspring of X 's father ?") == ["father", "offspring", "nation"]
    assert chained("Which countries border X?") == []


@pytest.mark.parametrize(
    "question, gold",
    [
        ("Who is the spouse of Ann's child?", "cid"),
        ("Who is the child of Ann's spouse?", "eve"),
        ("Ann's spouse's child?", "eve"),
    ],
)
def test_a_possessive_chain_orders_the_relations(encoder, question, gold):
    """Both orders of the same two relations reach an entity; the chain of nouns says which comes first."""
    ex = "http://example.org/"
    store = RDFLibStore()
    store.add(
        [
            Triple(ex + "ann", ex + "children", ex + "bob"),
            Triple(ex + "bob", ex + "spouse", ex + "cid"),
            Triple(ex + "ann", ex + "spouse", ex + "dan"),
            Triple(ex + "dan", ex + "children", ex + "eve"),
        ],
        [Entity(ex + "ann", "Ann")],
    )
    reasoner = PathReasoner(store, _Retriever(encoder, store.entity(ex + "ann"), "Ann"))
    answer = reasoner.answer(question)
    assert answer_ids(answer) == {ex + gold}
    assert answer.metadata["plans"][0]["scores"]["order"] > answer.metadata["plans"][1]["scores"].get("order", 0)


def test_the_reasoner_answers_the_same_over_a_bolt_server(neo4j_store, encoder):
    ex = "http://example.org/"
    facts = [
        Triple(ex + "chad", ex + "neighborOf", ex + "niger"),
        Triple(ex + "niger", ex + "neighborOf", ex + "chad"),
        Triple(ex + "niger", ex + "locatedIn", ex + "west_africa"),
        Triple(ex + "chad", ex + "locatedIn", ex + "middle_africa"),
    ]
    entities = [
        Entity(ex + "chad", "Chad", types=(ex + "Country",)),
        Entity(ex + "niger", "Niger", types=(ex + "Country",)),
        Entity(ex + "west_africa", "West Africa", types=(ex + "Subregion",)),
        Entity(ex + "middle_africa", "Middle Africa", types=(ex + "Subregion",)),
    ]
    answers = []
    for store in (neo4j_store, RDFLibStore()):
        store.add(facts, entities)
        retriever = KGRetriever(store, encoder)
        retriever.build()
        answer = PathReasoner(store, retriever).answer("Which subregion are the neighbours of Chad located in?")
        answers.append(([e.id for e in answer.entities], [p.triples for p in answer.evidence.paths]))
    assert answers[0] == answers[1] and answers[0][0] == [ex + "west_africa"]


def test_warm_up_encodes_the_plan_phrases_once_within_its_time(demo):
    fresh = PathReasoner(demo.store, demo.retriever)
    assert fresh.warm_up(seconds=0) == 0  # no time: nothing done
    encoded = fresh.warm_up(seconds=600)  # time enough on any machine: the test is about what it encodes
    assert encoded > 50  # the demo's paths from countries, subregions and regions
    assert fresh.warm_up(seconds=600) == 0  # all of them kept
    cold = PathReasoner(demo.store, demo.retriever)
    question = "Which countries are in Middle Africa?"
    assert fresh.answer(question).entities == cold.answer(question).entities
    assert len(fresh._vectors) - encoded < len(cold._vectors) / 4  # most of what the question needs was ready


def test_a_long_search_under_a_budget_pauses_and_answers_the_same(demo, monkeypatch):
    from kgllm.pipelines.synergize import reasoner as module

    question = "Which subregions are the neighbours of the neighbours of Chad in?"
    unpaused = demo.with_options(max_seconds=600).answer(question)
    pauses = []
    monkeypatch.setattr(module, "LONG_SEARCH_SECONDS", 0.0)  # every search counts as long
    monkeypatch.setattr(module.time, "sleep", pauses.append)
    paused = demo.with_options(max_seconds=600).answer(question)
    assert pauses and set(pauses) == {module.PAUSE_SECONDS}
    assert answer_ids(paused) == answer_ids(unpaused) and answer_ids(paused)
    before = len(pauses)
    demo.with_options(max_seconds=0).answer(question)  # without a time budget a search never pauses
    assert len(pauses) == before
