"""Query programs: the language and its text form, execution on both stores, parsing questions
on the demo graph with the real encoder, refusals, bounds, and that nothing is written."""

from __future__ import annotations

import tracemalloc

import pytest

from kgllm.exceptions import InputError, ParseError
from kgllm.graph.demo import demo_graph_path
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.pipelines.base import Answerer
from kgllm.pipelines.programs import (
    Executor,
    ExecutorConfig,
    ProgramAnswerer,
    ProgramError,
    ProgramLimitError,
    format_program,
    parse_program,
    route,
)
from kgllm.pipelines.programs.language import (
    And,
    ClassSet,
    Compare,
    Count,
    Degree,
    EntityRef,
    Exists,
    FilterClass,
    Hop,
    Minus,
    Or,
    Rank,
    Value,
    Where,
)
from kgllm.retrieval.retriever import KGRetriever
from kgllm.types import Entity, Triple

KG = "https://kgllm.dev/countries/"
X = "https://example.org/x/"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"


# =========================================================================
# the language
# =========================================================================

PROGRAMS = [
    Count(Hop(X + "border", "both", EntityRef(X + "camelot"))),
    Exists(And(Hop(X + "border", "both", EntityRef(X + "avalon")), EntityRef(X + "dunmore"))),
    Minus(Or(EntityRef("a b"), ClassSet('we "quote"')), EntityRef("both")),
    Where(X + "in", "out", EntityRef(X + "north"), Hop(X + "border", "in", EntityRef(X + "camelot")), negate=True),
    Where(X + "in", "out", EntityRef(X + "north"), ClassSet(X + "Country")),
    FilterClass(X + "Region", Hop(X + "in", "out", Rank("max", 1, Degree(X + "border", "both"), ClassSet(X + "C")))),
    Rank("min", 3, Value(X + "population"), FilterClass(X + "Country", ClassSet(X + "Country"))),
    Compare("fewer", Degree(X + "border", "both"), X + "avalon", X + "camelot"),
    Rank("max", 1, Degree(X + "in", "in", X + "Country"), ClassSet(X + "Region")),
    Count(And(Hop("r", "both", EntityRef("a")), Hop("r", "both", EntityRef("b")))),
]


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: type(p).__name__)
def test_the_text_form_parses_back_to_the_same_program(program):
    text = format_program(program)
    assert parse_program(text) == program
    assert format_program(parse_program(text)) == text


def test_the_text_form_is_readable():
    text = format_program(Count(Hop("neighborOf", "both", EntityRef("chad"))))
    assert text == "(count (hop neighborOf both (entity chad)))"
    assert format_program(EntityRef("both")) == '(entity "both")'  # an id that reads as a direction is quoted


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("(count (entity a)", "not closed"),
        ("(count (entity a)))", "after the end"),
        (")", "unexpected"),
        ("(frobnicate a)", "unknown form"),
        ("(hop r sideways (entity a))", "direction"),
        ("(argmax 0 (degree r both) (class c))", "positive"),
        ("(count (degree r both))", "set expression"),
        ("(compare bigger (degree r both) a b)", "compare OP"),
        ("(entity a b)", "argument"),
        ("(degree r both)", "found the metric"),
    ],
)
def test_malformed_programs_are_rejected_with_the_reason(text, message):
    with pytest.raises(ParseError, match=message):
        parse_program(text)


# =========================================================================
# execution on a small graph, on both stores
# =========================================================================
# Avalon, Brigadoon and Camelot are in North; Dunmore, Elbonia and Freedonia in South.
# Borders (stored both ways): Avalon-Brigadoon, Avalon-Camelot, Brigadoon-Camelot, Camelot-Dunmore, Dunmore-Elbonia.

BORDERS = [("avalon", "brigadoon"), ("avalon", "camelot"), ("brigadoon", "camelot"), ("camelot", "dunmore")]
BORDERS += [("dunmore", "elbonia")]
PLACES = {"avalon": "north", "brigadoon": "north", "camelot": "north"}
PLACES |= {"dunmore": "south", "elbonia": "south", "freedonia": "south"}


def small_graph() -> tuple[list[Triple], list[Entity]]:
    triples = [Triple(X + a, X + "border", X + b) for a, b in BORDERS]
    triples += [Triple(X + b, X + "border", X + a) for a, b in BORDERS]
    triples += [Triple(X + c, X + "in", X + r) for c, r in PLACES.items()]
    triples += [Triple(X + r, X + "partOf", X + "world") for r in ("north", "south")]
    entities = [Entity(X + c, c.title(), (), (X + "Country",)) for c in PLACES]
    entities += [Entity(X + r, r.title() + "land", (), (X + "Region",)) for r in ("north", "south")]
    entities += [Entity(X + "world", "World")]
    entities += [
        Entity(X + "border", "borders", ("neighbor of", "next to")),
        Entity(X + "in", "located in", ("is in",)),
        Entity(X + "partOf", "part of"),
        Entity(X + "Country", "country", ("nation",)),
        Entity(X + "Region", "region"),
    ]
    return triples, entities


@pytest.fixture(params=["rdflib", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def small_store(request):
    triples, entities = small_graph()
    if request.param == "rdflib":
        store = RDFLibStore()
    else:
        store = request.getfixturevalue("neo4j_store")
    store.add(triples, entities)
    return store


def ids(names: str) -> list[str]:
    return sorted(X + n for n in names.split())


def run(store, text: str):
    return Executor(store).run(parse_program(text))


B = X + "border"


@pytest.mark.parametrize(
    "text, kind, value",
    [
        (f"(count (hop {B} both (entity {X}camelot)))", "count", 3),
        (f"(hop {B} both (entity {X}camelot))", "set", ids("avalon brigadoon dunmore")),
        (f"(and (hop {B} both (entity {X}avalon)) (hop {B} both (entity {X}camelot)))", "set", ids("brigadoon")),
        (
            f"(or (hop {B} both (entity {X}avalon)) (hop {B} both (entity {X}elbonia)))",
            "set",
            ids("brigadoon camelot dunmore"),
        ),
        (f"(minus (hop {B} both (entity {X}camelot)) (hop {X}in in (entity {X}north)))", "set", ids("dunmore")),
        (f"(where-not {X}in out (entity {X}north) (hop {B} both (entity {X}camelot)))", "set", ids("dunmore")),
        (f"(where {X}in out (entity {X}north) (hop {B} both (entity {X}camelot)))", "set", ids("avalon brigadoon")),
        (f"(filter-class {X}Region (hop {X}in out (entity {X}avalon)))", "set", ids("north")),
        (f"(count (class {X}Country))", "count", 6),
        (f"(exists (and (hop {B} both (entity {X}avalon)) (entity {X}camelot)))", "bool", True),
        (f"(exists (and (hop {B} both (entity {X}avalon)) (entity {X}dunmore)))", "bool", False),
        (f"(argmax 1 (degree {B} both) (class {X}Country))", "ranking", ids("camelot")),
        (f"(argmin 1 (degree {B} both) (class {X}Country))", "ranking", ids("freedonia")),
        # ties at the boundary are kept: Avalon, Brigadoon and Dunmore all have 2
        (f"(argmax 2 (degree {B} both) (class {X}Country))", "ranking", ids("avalon brigadoon camelot dunmore")),
        (f"(hop {X}in out (argmax 1 (degree {B} both) (class {X}Country)))", "set", ids("north")),
        (f"(compare more (degree {B} both) {X}camelot {X}elbonia)", "bool", True),
        (f"(compare fewer (degree {B} both) {X}camelot {X}elbonia)", "bool", False),
        (f"(compare same (degree {B} both) {X}avalon {X}dunmore)", "bool", True),
        # a degree over one class: the World's parts are regions, not countries
        (
            f"(argmax 1 (degree {X}partOf in {X}Region) (or (entity {X}world) (entity {X}north)))",
            "ranking",
            ids("world"),
        ),
        (
            f"(argmax 1 (degree {X}partOf in {X}Country) (or (entity {X}world) (entity {X}north)))",
            "ranking",
            ids("north world"),
        ),
    ],
)
def test_programs_compute_exact_answers_on_both_stores(small_store, text, kind, value):
    before = small_store.count_triples()
    result = run(small_store, text)
    assert (result.kind, result.value) == (kind, value)
    assert small_store.count_triples() == before  # nothing is written


def test_a_count_is_supported_by_the_facts_counted(small_store):
    result = run(small_store, f"(count (hop {B} both (entity {X}camelot)))")
    others = {t.tail if t.head == X + "camelot" else t.head for t in result.support}
    assert others == set(ids("avalon brigadoon dunmore")) and len(result.support) == 3
    assert all(X + "camelot" in (t.head, t.tail) and t.relation == B for t in result.support)


def test_a_no_is_supported_by_the_facts_checked(small_store):
    result = run(small_store, f"(exists (and (hop {B} both (entity {X}avalon)) (entity {X}dunmore)))")
    assert result.value is False and not result.support
    assert {t.tail if t.head == X + "avalon" else t.head for t in result.checked} == set(ids("brigadoon camelot"))


@pytest.mark.parametrize(
    "text, message",
    [
        (f"(count (hop {B} both (entity {X}atlantis)))", "no entity"),
        (f"(compare more (degree {B} both) {X}camelot {X}north)", "different kinds"),
        (f"(compare more (degree {B} both) {X}north {X}south)", "cannot be compared"),
        (f"(argmax 1 (value {X}population) (class {X}Country))", "has a value"),
    ],
)
def test_programs_that_cannot_run_are_refused_with_the_reason(small_store, text, message):
    program = parse_program(text)
    with pytest.raises(ProgramError, match=message):
        Executor(small_store).run(program)


def test_numeric_values_rank_on_the_rdflib_store(tmp_path):
    path = tmp_path / "numbers.ttl"
    path.write_text(
        "@prefix x: <https://example.org/x/> .\n"
        'x:a a x:City ; x:population 10 . x:b a x:City ; x:population 30 . x:c a x:City ; x:population "20" .\n',
        encoding="utf-8",
    )
    store = RDFLibStore(path)
    top = Executor(store).run(parse_program(f"(argmax 1 (value {X}population) (class {X}City))"))
    assert top.value == [X + "b"] and top.scores == {X + "b": 30.0}
    assert Executor(store).run(parse_program(f"(compare fewer (value {X}population) {X}a {X}c)")).value is True


# =========================================================================
# bounds
# =========================================================================


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """A hub with 100,000 neighbours, each of class Big, loaded from a file."""
    path = tmp_path_factory.mktemp("big") / "big.nt"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(100_000):
            handle.write(f"<{X}hub> <{X}rel> <{X}n{i}> .\n<{X}n{i}> <{RDF_TYPE}> <{X}Big> .\n")
    store = RDFLibStore(path)
    store.count_entities()  # the store's own caches are built before measuring
    return store


def test_a_hop_to_100k_members_is_refused_in_bounded_memory(big_store):
    tracemalloc.start()
    try:
        with pytest.raises(ProgramLimitError, match="5000"):
            Executor(big_store).run(parse_program(f"(count (hop {X}rel out (entity {X}hub)))"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_a_class_of_100k_members_is_refused_at_the_set_size_limit(big_store):
    with pytest.raises(ProgramLimitError, match="more than 1000 members"):
        Executor(big_store, ExecutorConfig(max_set_size=1000, time_limit=600)).run(
            parse_program(f"(count (class {X}Big))")
        )


def test_a_program_past_its_time_limit_is_stopped(big_store):
    with pytest.raises(ProgramLimitError, match="time limit"):
        Executor(big_store, ExecutorConfig(time_limit=1e-6, max_set_size=200_000)).run(
            parse_program(f"(count (class {X}Big))")
        )


def test_bounds_are_checked():
    with pytest.raises(InputError):
        ExecutorConfig(max_set_size=0)


# =========================================================================
# questions on the demo graph, with the real encoder
# =========================================================================


@pytest.fixture(scope="module")
def demo(encoder, tmp_path_factory):
    store = RDFLibStore(demo_graph_path())
    retriever = KGRetriever(store, encoder, index_dir=tmp_path_factory.mktemp("index"))
    retriever.build()
    return ProgramAnswerer(store, retriever)


def test_an_answer_past_its_time_limit_says_it_was_cut(demo):
    """A refusal for want of time is marked ``cut``, as the path reasoner marks its own: the server
    keeps no such answer, since a later request may have the time to finish."""
    answer = demo.answer("How many countries border Chad?", time_limit=1e-9)
    assert answer.metadata["cut"] is True and "time limit" in answer.text and answer.entities == []
    assert "cut" not in demo.answer("How many countries border Chad?").metadata


def local(ids_) -> set[str]:
    return {i.removeprefix(KG) for i in ids_}


CHAD = {"cameroon", "central_african_republic", "libya", "niger", "nigeria", "south_sudan", "sudan"}


@pytest.mark.parametrize(
    "question, shape, check",
    [
        ("How many neighbours does Mali have?", "count", lambda a: a.metadata["value"] == 7),
        ("How many countries border Chad?", "count", lambda a: a.text.startswith("7 countries")),
        ("Does Spain border Norway?", "exists", lambda a: a.metadata["value"] is False),
        ("Does Chad border Niger?", "exists", lambda a: a.text == "Yes: Chad borders Niger."),
        ("Is Kenya located in Eastern Africa?", "exists", lambda a: a.metadata["value"] is True),
        (
            "Which countries neighbour both Kenya and Uganda?",
            "list+intersection",
            lambda a: local(e.id for e in a.entities) == {"south_sudan", "tanzania"},
        ),
        (
            "Which neighbours of Niger are not in Western Africa?",
            "list+difference",
            lambda a: local(e.id for e in a.entities) == {"algeria", "chad", "libya"},
        ),
        (
            "Which countries border Kenya but not Uganda?",
            "list+difference",
            lambda a: local(e.id for e in a.entities) == {"ethiopia", "somalia"},
        ),
        (
            "Which South American country has the most neighbours?",
            "superlative",
            lambda a: local(a.metadata["value"]) == {"brazil"},
        ),
        (
            "Which country in Western Africa has the fewest neighbours?",
            "superlative",
            lambda a: local(a.metadata["value"]) == {"cape_verde"},
        ),
        (
            "Which region is the country with the most neighbours in?",
            "superlative",
            lambda a: local(a.metadata["value"]) == {"asia"} and "China" in a.text,
        ),
        ("Does Brazil have more neighbours than Peru?", "comparison", lambda a: a.metadata["value"] is True),
        ("Does Chad have fewer neighbours than Niger?", "comparison", lambda a: a.metadata["value"] is False),
        (
            "Which neighbours of Chad are in Middle Africa?",
            "list+intersection",
            lambda a: local(a.metadata["value"]) == {"cameroon", "central_african_republic", "south_sudan"},
        ),
        (  # each relation word belongs to the entity after it: "neighbours" to Niger, "belong to" to the subregion
            "Name the neighbours of Niger that belong to Western Africa.",
            "list+intersection",
            lambda a: local(a.metadata["value"]) == {"benin", "burkina_faso", "mali", "nigeria"},
        ),
        (  # a possessive owns the word after it: "neighbours" to Niger, "located in" to the subregion
            "Which of Niger's neighbours are located in Western Africa?",
            "list+intersection",
            lambda a: local(a.metadata["value"]) == {"benin", "burkina_faso", "mali", "nigeria"},
        ),
        ("How many countries border both Kenya and Uganda?", "count+intersection", lambda a: a.metadata["value"] == 2),
        (  # not the countries that border both: "neither ... nor" excludes each
            "Which countries border neither France nor Spain?",
            "list+difference",
            lambda a: (
                {"austria", "chad"} <= local(a.metadata["value"])
                and not {"andorra", "portugal", "germany", "belgium"} & local(a.metadata["value"])
            ),
        ),
        (  # "except" leaves the member out, not the countries linked to it
            "Which countries border Germany except France and Poland?",
            "list+difference",
            lambda a: (
                local(a.metadata["value"])
                == {"austria", "belgium", "czechia", "denmark", "luxembourg", "netherlands", "switzerland"}
            ),
        ),
        (  # the negation's scope ends with its list: Africa is asked for, not excluded
            "Which countries are neighbours of neither Chad nor Niger and are in Africa?",
            "list+difference",
            lambda a: (
                "egypt" in local(a.metadata["value"])
                and not {"libya", "nigeria", "algeria", "france"} & local(a.metadata["value"])
            ),
        ),
        (  # a contracted "not" is a negation, and "besides" leaves the member out
            "How many countries in Western Europe don't border Germany?",
            "count+difference",
            lambda a: a.metadata["value"] == 2,
        ),
        (
            "Which countries border France besides Spain?",
            "list+difference",
            lambda a: (
                local(a.metadata["value"])
                == {"andorra", "belgium", "germany", "italy", "luxembourg", "monaco", "switzerland"}
            ),
        ),
        (  # a negated yes/no question asks what the plain one asks
            "Doesn't Chad border Niger?",
            "exists",
            lambda a: a.text == "Yes: Chad borders Niger.",
        ),
        (  # "or" joins two sets: either, not both
            "What countries border Spain or Portugal?",
            "list+union",
            lambda a: local(a.metadata["value"]) == {"andorra", "france", "gibraltar", "morocco", "portugal", "spain"},
        ),
        (
            "Does Spain border France or Italy?",
            "exists",
            lambda a: a.metadata["value"] is True and a.text == "Yes: Spain borders France.",
        ),
        (
            "Is Kenya or Uganda in Western Africa?",
            "exists",
            lambda a: a.metadata["value"] is False and "between Kenya or Uganda and Western Africa" in a.text,
        ),
        (  # no entity before the negation: the asked class is the set the exception applies to
            "Which countries are not in Africa?",
            "list+difference",
            lambda a: "france" in local(a.metadata["value"]) and not {"chad", "kenya"} & local(a.metadata["value"]),
        ),
        ("Which countries share a border with Chad?", "list", lambda a: local(a.metadata["value"]) == CHAD),
        (  # the adjective of a place names the place
            "Which European countries border Russia?",
            "list+intersection",
            lambda a: (
                local(a.metadata["value"])
                == {"belarus", "estonia", "finland", "latvia", "lithuania", "norway", "poland", "ukraine"}
            ),
        ),
        ("Is Australia a country?", "exists", lambda a: a.text == "Yes: Australia is a country."),
        ("Is Africa a country?", "exists", lambda a: a.text == "No — the graph does not list Africa as a country."),
        (
            "What are the top 3 countries by number of neighbours?",
            "superlative",
            lambda a: local(a.metadata["value"]) == {"brazil", "china", "russia"},
        ),
        (  # regions also hold subregions: only the countries are counted
            "Which region has the most countries?",
            "superlative",
            lambda a: a.text == "Africa (58 countries).",
        ),
        (
            "Does Africa have more countries than Europe?",
            "comparison",
            lambda a: a.text == "Yes: Africa has 58 countries, Europe has 53.",
        ),
        ("Which subregion has the fewest countries?", "superlative", lambda a: a.text == "Central Europe (1 country)."),
        (  # with "number", a comparative compares the counts
            "Is the number of neighbours of Peru greater than that of Chile?",
            "comparison",
            lambda a: a.text == "Yes: Peru has 5 “neighbor of” links, Chile has 3.",
        ),
        (  # "more than any other" is a superlative, not a comparison of two entities
            "Which region has more countries than any other region?",
            "superlative",
            lambda a: a.text == "Africa (58 countries).",
        ),
        # a request frame around the question
        ("I'd like to know how many countries border Chad.", "count", lambda a: a.metadata["value"] == 7),
        ("Do you know whether Chad borders Kenya?", "exists", lambda a: a.metadata["value"] is False),
        (
            "Who has more neighbours: Chad or Niger?",
            "comparison",
            lambda a: a.text == "Neither: Chad and Niger each have 7 “neighbor of” links.",
        ),
    ],
)
def test_every_shape_is_answered_exactly_on_the_demo_graph(demo, question, shape, check):
    before = demo.store.count_triples()
    answer = demo.answer(question)
    assert answer.metadata["found"], answer.text
    assert answer.metadata["shape"] == shape
    assert check(answer), (answer.text, answer.metadata.get("program"))
    assert answer.confidence >= 0.5
    assert answer.metadata["kind"] in ("set", "count", "bool", "ranking")
    assert parse_program(answer.metadata["program"])  # the program shown is a program
    assert answer.evidence.triples  # every answer shows the facts it used or checked
    assert demo.store.count_triples() == before


def test_a_count_answer_has_the_question_shape_and_the_facts_counted(demo):
    answer = demo.answer("How many neighbours does Chad have?")
    assert answer.text.startswith("7 countries border Chad: Cameroon, ")
    assert answer.metadata["facts_counted"] == 7
    assert {answer.label(t.tail if t.head == KG + "chad" else t.head) for t in answer.evidence.triples} >= {"Niger"}


def test_a_no_shows_the_facts_checked(demo):
    answer = demo.answer("Does France border Japan?")
    assert answer.text == "No — the graph has no “neighbor of” fact between France and Japan."
    assert answer.metadata["facts_checked"] >= 8
    assert all(KG + "france" in (t.head, t.tail) for t in answer.evidence.triples)


def test_a_comparison_answer_shows_both_numbers(demo):
    answer = demo.answer("Does Chad have more neighbours than Libya?")
    assert answer.text == "Yes: Chad has 7 “neighbor of” links, Libya has 6."


@pytest.mark.parametrize(
    "question, reason",
    [
        ("What is the capital of France?", "could not map 'capital'"),
        ("How many neighbours does Atlantis have?", "no entity named 'Atlantis'"),
        ("Does Africa have more neighbours than Chad?", "different kinds of thing"),
        ("Is Chad larger than Niger?", "could not map 'larger'"),
        ("What language is spoken in Kenya?", "could not map"),
        # a word nearest a class but not close enough to name it, once dropped from the question
        ("Is Japan an island?", "could not map 'island'"),
        ("Which neighbours of Germany aren't in the EU?", "no entity named 'EU'"),
        ("Is Chad bigger than Niger?", "could not map 'bigger'"),  # a comparative of counts needs "number"
        # shapes the language lacks, each once answered as a nearby shape it has
        ("How many countries border Chad or Mali but not both?", "exclusive or"),
        ("Does Spain border France and Italy?", "several links at once"),
        ("Does France have as many neighbours as Germany?", "two counts being equal"),
        ("Which country has the second most neighbours?", "a rank after the first"),
        # a negation with nothing after it to exclude, once answered as its opposite
        ("Which African countries do not border any country?", "could not tell what the question excludes"),
        ("How many neighbours do the neighbours of Chad have in total?", "totals"),
        ("How many neighbours does each country in Western Africa have?", "a count for each member"),
        ("What is the average number of neighbours of African countries?", "averages"),
        ("What percentage of Chad's neighbours are in Middle Africa?", "ratios and percentages"),
    ],
)
def test_questions_the_graph_cannot_answer_are_refused_with_a_reason(demo, question, reason):
    answer = demo.answer(question)
    assert answer.metadata["found"] is False and not answer.entities
    assert answer.confidence == 0.0
    assert reason in answer.text, answer.text


def test_unknown_options_are_rejected_and_known_ones_apply(demo):
    assert isinstance(demo, Answerer)
    with pytest.raises(InputError, match="unknown program option"):
        demo.answer("How many neighbours does Chad have?", max_hops=2)
    refused = demo.answer("Which country has the most neighbours?", max_set_size=10)
    assert refused.metadata["found"] is False and "more than 10 members" in refused.text


def test_the_router_tells_chains_from_other_shapes():
    for question in ["Which countries border Chad?", "In which region is Kenya?", "Which subregion is Chad in?"]:
        assert route(question, 1) == "paths"
    for question in [
        "How many neighbours does Mali have?",
        "Does Spain border Norway?",
        "Which countries neighbour both Kenya and Uganda?",
        "Which South American country has the most neighbours?",
        "Which neighbours of Niger are not in Western Africa?",
        "Does Chad have more neighbours than Niger?",
        "Which countries border neither France nor Spain?",
        "Which neighbours of Germany aren't in Western Europe?",
        "What are the top 3 countries by number of neighbours?",
    ]:
        assert route(question) == "programs"
    assert route("Which neighbours of Chad are in Middle Africa?", 2) == "programs"
    assert route("I wonder whether Australia is a country.", 1) == "programs"


def test_the_session_routes_auto_questions(demo):
    from kgllm.session import Session
    from kgllm.settings import Settings

    session = Session(demo.store, demo.retriever, None, Settings())
    assert session.ask("How many neighbours does Mali have?").metadata["value"] == 7
    chain = session.ask("Which countries border Chad?")
    assert "program" not in chain.metadata and local(e.id for e in chain.entities) == CHAD
    # a chain search would drop the word that narrows the class: the question is refused instead
    for question, word in [
        ("Which African countries are landlocked?", "landlocked"),
        ("Which island nations are in Oceania?", "island"),
    ]:
        refused = session.ask(question)
        assert refused.confidence == 0.0 and f"could not map '{word}'" in refused.text


# =========================================================================
# the answerer on a Bolt (Neo4j protocol) store
# =========================================================================


@pytest.mark.neo4j
def test_questions_are_answered_on_the_neo4j_store(neo4j_store, encoder):
    triples, entities = small_graph()
    neo4j_store.add(triples, entities)
    retriever = KGRetriever(neo4j_store, encoder)
    retriever.build()
    answerer = ProgramAnswerer(neo4j_store, retriever)
    before = neo4j_store.count_triples()
    assert answerer.answer("How many countries border Camelot?").metadata["value"] == 3
    assert answerer.answer("Does Avalon border Dunmore?").metadata["value"] is False
    top = answerer.answer("Which country has the most neighbours?")
    assert top.metadata["value"] == [X + "camelot"], top.text
    # the server ran the compiled Cypher, with the ids bound as parameters
    assert top.metadata["engine"] == "cypher" and top.metadata["query"]["ran"] is True
    assert X + "Country" in top.metadata["query"]["parameters"].values() and X not in top.metadata["query"]["text"]
    assert neo4j_store.count_triples() == before


# =========================================================================
# the shapes benchmark's question set
# =========================================================================


def test_the_shapes_question_set_splits_by_template_family():
    from kgllm.bench.shapes import TEMPLATES, shape_questions

    questions = shape_questions(RDFLibStore(demo_graph_path()), per_template=2)
    assert len(TEMPLATES) >= 8 and all(len(families) == 3 for families in TEMPLATES.values())
    templates = {q.split: set() for q in questions}
    for q in questions:
        templates[q.split].add(TEMPLATES[q.shape][q.family][int(q.id.split("/")[2])][0])
    assert not templates["test"] & (templates["train"] | templates["dev"])
    counts = {q.question: q.gold for q in questions if q.kind == "count_nb"}
    assert all(isinstance(v, int) and v > 0 for v in counts.values())
