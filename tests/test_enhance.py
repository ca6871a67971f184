"""Generate mode: retrieval fusion, fact injection, citations, refusals and the reading examples.

The model is a tiny one really trained here on a small graph's text; the retriever is the real
one (MiniLM, FAISS) over a real rdflib store.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from kgllm.bench.inject import InjectResult
from kgllm.datasets.pathquestion import PathQuestionItem
from kgllm.exceptions import InputError
from kgllm.graph import open_store
from kgllm.graph.base import GraphStore
from kgllm.graph.demo import demo_graph_path
from kgllm.llm.base import GenerationConfig
from kgllm.llm.corpus import CorpusBuilder
from kgllm.llm.hf import HFCausalLM
from kgllm.llm.training import TrainingConfig, train_causal_lm
from kgllm.pipelines.enhance import (
    NO_ANSWER,
    READER_TEMPLATE,
    FusionRetriever,
    GenerationAnswerer,
    PromptInputError,
    PromptTemplate,
    RankedFact,
    parse_answer,
    reciprocal_rank_fusion,
)
from kgllm.pipelines.enhance.prompt import CitationGrammar
from kgllm.pipelines.enhance.reading import (
    READER_CONTEXT,
    NameSwapper,
    ReaderConfig,
    Step,
    Walk,
    _chain_walks,
    reached_through,
    reading_examples,
    train_reader,
)
from kgllm.pipelines.enhance.retrieval import one_path_per_answer, same_walks
from kgllm.pipelines.synergize import PathReasoner
from kgllm.retrieval.retriever import KGRetriever
from kgllm.settings import Settings
from kgllm.types import Answer, Entity, Evidence, GraphPath, Triple

TSV = (
    "chad\tneighborOf\tniger\nniger\tneighborOf\tchad\nchad\tneighborOf\tlibya\nlibya\tneighborOf\tchad\n"
    "chad\tlocatedIn\tmiddle_africa\nniger\tlocatedIn\twestern_africa\nlibya\tlocatedIn\tnorthern_africa\n"
    "kenya\tlocatedIn\teastern_africa\nkenya\tneighborOf\tuganda\nuganda\tneighborOf\tkenya\n"
)
ID = "https://kgllm.dev/kg/"


def iri(name: str) -> str:
    return ID + name


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> GraphStore:
    folder = tmp_path_factory.mktemp("graph")
    (folder / "mini.tsv").write_text(TSV)
    return open_store(folder / "mini.tsv", settings=Settings(cache_dir=folder / "cache"))


@pytest.fixture(scope="module")
def retriever(store, encoder) -> KGRetriever:
    retriever = KGRetriever(store, encoder)
    retriever.build()
    return retriever


@pytest.fixture(scope="module")
def lm_dir(store, tmp_path_factory) -> Path:
    """A tiny model trained on the graph's text (facts, questions with answers), one thread."""
    config = TrainingConfig(
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        vocab_size=300,
        max_seq_len=256,
        batch_size=8,
        learning_rate=3e-3,
        warmup_steps=10,
        epochs=60,
        threads=1,
    )
    out = tmp_path_factory.mktemp("tiny") / "model"
    threads = torch.get_num_threads()
    train_causal_lm(CorpusBuilder(store).texts(), out, config, progress=False)
    torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def lm(lm_dir) -> Iterator[HFCausalLM]:
    threads = torch.get_num_threads()
    yield HFCausalLM.from_pretrained(lm_dir, threads=1)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reader(answerer, lm_dir, tmp_path_factory) -> Iterator[GenerationAnswerer]:
    """The tiny model taught to read: trained a fixed number of steps on the answerer's own prompts."""
    out = tmp_path_factory.mktemp("reader") / "model"
    config = ReaderConfig(examples=400, steps=250, batch_size=8, learning_rate=3e-3)
    threads = torch.get_num_threads()
    train_reader(lm_dir, reading_examples(answerer, config.examples), out, config, threads=1, progress=False)
    yield answerer.with_model(HFCausalLM.from_pretrained(out, threads=1))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def answerer(store, retriever, lm) -> GenerationAnswerer:
    return GenerationAnswerer(store, retriever, lm, template=READER_TEMPLATE, paths=PathReasoner(store, retriever))


# ------------------------------------------------------------------ prompt and parsing


def test_a_template_names_the_input_it_misses():
    template = PromptTemplate("Facts:\n{facts}\nQuestion: {question}\nAnswer:")
    assert template.inputs == ("facts", "question")
    with pytest.raises(PromptInputError, match="needs question"):
        template.format(facts="[1] Chad neighbor of Niger.")
    with pytest.raises(PromptInputError, match="no input tone"):
        template.format(facts="", question="Who borders Chad?", tone="polite")
    with pytest.raises(InputError, match="facts and question"):
        GenerationAnswerer(None, None, None, template=PromptTemplate("Q: {question}"))  # type: ignore[arg-type]


def test_answers_are_read_back_as_items_and_citations_in_either_order():
    expected = [("Bosnia and Herzegovina", (3, 5)), ("Niger", (2, 4)), ("Mali", ()), ("Chad", (1,))]
    after = parse_answer(" Bosnia and Herzegovina [3][5], Niger [2, 4] and Mali, Chad [1].")
    before = parse_answer(" [3][5] Bosnia and Herzegovina, [2, 4] Niger, Mali and [1] Chad.")
    for parsed in (after, before):
        assert [(i.name, i.citations) for i in parsed.items] == expected
        assert parsed.citations == [3, 5, 2, 4, 1] and not parsed.refused
    assert [(i.name, i.citations) for i in parse_answer(" [4] Lib").items] == [("Lib", (4,))]
    assert parse_answer(" " + NO_ANSWER).refused


def test_reciprocal_rank_fusion_favours_agreement_over_one_first_place():
    fused = reciprocal_rank_fusion({"faiss": ["a", "b", "c"], "expansion": ["b", "c"], "pagerank": ["c", "d"]})
    assert [item for item, _, _ in fused] == ["c", "b", "a", "d"]
    assert fused[0][2] == {"faiss": 3, "expansion": 2, "pagerank": 1}
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 62 + 1 / 61)
    # equal scores keep the order in which items were first met
    assert [item for item, _, _ in reciprocal_rank_fusion({"x": ["p"], "y": ["q"]})] == ["p", "q"]


def test_the_citation_grammar_allows_only_listed_items_once_each():
    grammar = CitationGrammar([[1, 2], [1, 3], [4]], separator=[9], refusal=[7, 8], eos_id=0)
    assert sorted(grammar.prefix_allowed_tokens(0, [])) == [1, 4, 7]
    assert grammar.prefix_allowed_tokens(0, [1]) == [2, 3]
    assert grammar.prefix_allowed_tokens(0, [1, 3]) == [9, 0]
    assert sorted(grammar.prefix_allowed_tokens(0, [1, 3, 9])) == [1, 4]  # no refusal after an item
    assert grammar.prefix_allowed_tokens(0, [1, 3, 9, 1]) == [2]  # [1, 3] is used
    assert grammar.prefix_allowed_tokens(0, [7, 8]) == [0]
    no_refusal = CitationGrammar([[1, 2], [1, 3], [4]], separator=[9], refusal=None, eos_id=0)
    assert sorted(no_refusal.prefix_allowed_tokens(0, [])) == [1, 4]
    assert no_refusal.prefix_allowed_tokens(0, [1, 3]) == [9, 0]


def test_the_citation_grammar_names_each_entity_and_cites_each_item_once():
    # items 0 and 2 name the same entity (citing different facts), items 0 and 1 cite the same fact
    groups = [("a", 1), ("b", 1), ("a", 2)]
    grammar = CitationGrammar([[1, 2], [1, 3], [4]], separator=[9], refusal=[7, 8], eos_id=0, groups=groups)
    assert grammar.prefix_allowed_tokens(0, [4, 9]) == [1]
    assert grammar.prefix_allowed_tokens(0, [4, 9, 1]) == [3]
    assert grammar.prefix_allowed_tokens(0, [4, 9, 1, 3]) == [0]  # nothing left to name
    # item 0 bars item 1 (both cite fact 1) and item 2 (both name a)
    assert grammar.prefix_allowed_tokens(0, [1, 2]) == [0]
    with pytest.raises(InputError, match="one group per item"):
        CitationGrammar([[1]], separator=[9], refusal=[7], eos_id=0, groups=[("a",), ("b",)])


def test_the_citation_grammar_names_a_bundle_whole_once_it_is_cited():
    # items 0-2 are one walk's answers, item 3 a fact's; item 2 names what item 3 names
    groups = [("a",), ("b",), ("c",), ("c", 2)]
    items = [[1, 2], [1, 3], [4], [5]]
    grammar = CitationGrammar(items, separator=[9], refusal=None, eos_id=0, groups=groups, bundles=[1, 1, 1, None])
    assert sorted(grammar.prefix_allowed_tokens(0, [])) == [1, 4, 5]
    assert grammar.prefix_allowed_tokens(0, [1, 3]) == [9]  # no end: the walk's other answers are open
    assert sorted(grammar.prefix_allowed_tokens(0, [1, 3, 9])) == [1, 4]  # only the walk's, not the fact
    assert grammar.prefix_allowed_tokens(0, [1, 3, 9, 4, 9]) == [1]
    assert grammar.prefix_allowed_tokens(0, [1, 3, 9, 4, 9, 1, 2]) == [0]  # whole, and nothing else left
    # the fact first bars the walk's "c"; the walk then closes on its two other answers
    assert grammar.prefix_allowed_tokens(0, [5]) == [9, 0]
    assert grammar.prefix_allowed_tokens(0, [5, 9, 1, 2, 9]) == [1]
    assert grammar.prefix_allowed_tokens(0, [5, 9, 1, 2, 9, 1, 3]) == [0]
    # a name that begins another ("Guinea", "Guinea-Bissau") may end or go on
    prefixed = CitationGrammar([[1, 2], [1, 2, 3]], separator=[9], refusal=None, eos_id=0, bundles=[1, 1])
    assert sorted(prefixed.prefix_allowed_tokens(0, [1, 2])) == [3, 9]
    assert prefixed.prefix_allowed_tokens(0, [1, 2, 9]) == [1]
    assert prefixed.prefix_allowed_tokens(0, [1, 2, 9, 1, 2]) == [3]  # "Guinea" is written
    assert prefixed.prefix_allowed_tokens(0, [1, 2, 9, 1, 2, 3]) == [0]
    assert prefixed.prefix_allowed_tokens(0, [1, 2, 3, 9, 1, 2]) == [0]
    with pytest.raises(InputError, match="one bundle per item"):
        CitationGrammar([[1]], separator=[9], refusal=[7], eos_id=0, bundles=[1, 1])


# ------------------------------------------------------------------ retrieval


def test_fusion_ranks_facts_every_list_agrees_on_first(retriever):
    fused = FusionRetriever(retriever).retrieve("Which countries border Chad?")
    assert [link.entity.id for link in fused.links] == [iri("chad")]
    top = fused.facts[0]
    assert iri("chad") in (top.triple.head, top.triple.tail)
    assert {"faiss", "expansion", "pagerank"} <= set(top.ranks)
    assert [f.score for f in fused.facts] == sorted((f.score for f in fused.facts), reverse=True)
    with pytest.raises(InputError, match="unknown retrieval option"):
        FusionRetriever(retriever).retrieve("Which countries border Chad?", topk=3)


def test_the_path_answerers_paths_lead_one_item_per_walk(store, retriever):
    question = "In which subregions are Chad's neighbours located?"
    reasoner = PathReasoner(store, retriever)
    fused = FusionRetriever(retriever, paths=reasoner).retrieve(question, k=50)
    paths = reasoner.answer(question).evidence.paths
    assert len(paths) == 2 and fused.facts[0].paths == tuple(paths)  # one walk: Chad > neighbor of > located in
    assert fused.facts[0].answers == tuple(p.end for p in paths)
    assert fused.facts[0].triple == paths[0].triples[-1]  # the fact reaching the first answer
    assert all(not f.paths and "paths" not in f.ranks for f in fused.facts[1:])
    walked = {t for path in paths for t in path.triples}
    assert set(fused.facts[0].triples) == walked
    assert not walked & {f.triple for f in fused.facts[1:]}  # a fact of a path is not listed again
    # paths that walk other relations, or from another start, are other items
    back = GraphPath(iri("chad"), (Triple(iri("libya"), iri("neighborOf"), iri("chad")),))
    ahead = GraphPath(iri("chad"), (Triple(iri("chad"), iri("neighborOf"), iri("niger")),))
    assert same_walks([paths[0], back, paths[1], ahead]) == [(paths[0], paths[1]), (back,), (ahead,)]
    # two paths to one answer are one item: the first
    via_niger, via_libya = (
        GraphPath(
            iri("chad"),
            (Triple(iri("chad"), iri("neighborOf"), iri(n)), Triple(iri(n), iri("neighborOf"), iri("chad"))),
        )
        for n in ("niger", "libya")
    )
    assert one_path_per_answer([via_niger, paths[0], via_libya]) == [via_niger, paths[0]]
    mixed = FusionRetriever(retriever, paths=reasoner).retrieve(question, k=50, paths_first=False)
    assert {f.triple for f in mixed.facts if "paths" in f.ranks} == walked
    assert all(not f.paths for f in mixed.facts)
    assert [f.score for f in mixed.facts] == sorted((f.score for f in mixed.facts), reverse=True)


# ------------------------------------------------------------------ answers


def test_empty_retrieval_is_refused_without_calling_a_model(store, retriever):
    answerer = GenerationAnswerer(store, retriever, lm=None)  # no model: generating would raise
    answer = answerer.answer("Who wrote Hamlet?")
    assert answer.entities == [] and answer.metadata["found"] is False
    assert "cannot answer this from the graph" in answer.text and "names nothing the graph knows" in answer.text


def test_a_cited_walk_maps_back_to_the_paths_of_the_answers_named(answerer):
    question = "In which subregions are Chad's neighbours located?"
    prepared = answerer.prepare(question, context_tokens=1000, constrained=False)
    second_hop = Triple(iri("niger"), iri("locatedIn"), iri("western_africa"))
    n = next(n for n, f in enumerate(prepared.facts, 1) if second_hop in f.triples)
    walk = prepared.facts[n - 1]
    (walked,) = [p for p in walk.paths if p.end == iri("western_africa")]
    assert walked.start == iri("chad") and walked.triples[-1] == second_hop
    record = answerer.finish(prepared, " [1] Libya").metadata["facts"][n - 1]
    arrow = ">" if walked.triples[0].head == iri("chad") else "<"  # a neighbour fact is stored both ways
    assert record["fact"].startswith(f"Chad {arrow} neighbor of {arrow} ")
    assert record["fact"].endswith(" > located in > " + ", ".join(answerer.store.label(e) for e in walk.answers))
    assert "Niger" in record["fact"] and record["paths"][0]["start"] == iri("chad")
    assert [p["triples"][-1] for p in record["paths"]] == [p.triples[-1].as_list() for p in walk.paths]
    answer = answerer.finish(prepared, f" [{n}] Western Africa")
    assert [e.id for e in answer.entities] == [iri("western_africa")]
    assert answer.evidence.triples == list(walked.triples)  # the walk's paths to what the answer names
    assert answer.evidence.paths == [replace(walked, score=walk.score)]
    assert answer.metadata["citations"] == [n]
    assert answer.confidence == 1.0 and answer.metadata["unsupported_names"] == []


def test_a_cited_walk_is_named_whole_with_room_to_write_it(answerer):
    """Even an untrained model, under the grammar, names every answer of a walk it cites, and an answer
    budget too small for the longest walk grows to fit it."""
    tight = GenerationAnswerer(
        answerer.store, answerer.retriever, answerer.lm, READER_TEMPLATE, max_new_tokens=8, paths=answerer.paths
    )
    question = "In which subregions are Chad's neighbours located?"
    prepared = tight.prepare(question, context_tokens=1000)
    walk = prepared.facts[0]
    assert set(walk.answers) == {iri("western_africa"), iri("northern_africa")}
    items = [f" [1] {tight.store.label(node)}," for node in walk.answers]
    assert prepared.config.max_new_tokens >= sum(tight.count_tokens(items)) > 8
    answer = tight.answer(question, context_tokens=1000)
    cited = [prepared.facts[n - 1] for n in answer.metadata["citations"]]
    assert cited and all(f.paths for f in cited)
    assert {e.id for e in answer.entities} == {node for f in cited for node in f.answers}


def test_a_path_walked_against_a_fact_reads_backwards_and_a_fact_apart_maps_to_a_walk(answerer):
    prepared = answerer.prepare("Which countries are located in Western Africa?", context_tokens=1000)
    niger_in = Triple(iri("niger"), iri("locatedIn"), iri("western_africa"))
    assert prepared.facts[0].triple == niger_in and prepared.fact_texts[0] == "Western Africa < located in < Niger"
    apart = Triple(iri("chad"), iri("neighborOf"), iri("niger"))
    n = [f.triple for f in prepared.facts].index(apart) + 1
    assert not prepared.facts[n - 1].paths and prepared.fact_texts[n - 1] == "Chad neighbor of Niger"
    answer = answerer.finish(prepared, f" [{n}] Chad")  # the walk to it from the question's entity
    (path,) = answer.evidence.paths
    assert path.start == iri("western_africa") and path.triples == (niger_in, apart)


def test_a_name_no_cited_fact_holds_is_reported(answerer):
    prepared = answerer.prepare("Which countries border Chad?", constrained=False)  # a model free to invent
    answer = answerer.finish(prepared, " [1] Kenya, [1] Atlantis")
    assert answer.metadata["unsupported_names"] == ["Atlantis"]
    assert answer.confidence < 1.0


def test_an_item_cut_short_is_left_out_of_the_answer_and_its_text(answerer):
    prepared = answerer.prepare("Which countries border Chad?")
    assert prepared.constraint is not None  # a local model writes under the citation grammar
    end = prepared.facts[0].answers[-1]
    name = answerer.store.label(end)
    for cut in (" [2] Alg", " [2", " ["):  # the token budget ran out inside an item
        answer = answerer.finish(prepared, f" [1] {name},{cut}")
        assert answer.text == f"[1] {name}" and [e.id for e in answer.entities] == [end]
        assert answer.metadata["generated"] == f" [1] {name},{cut}"
    assert answer.metadata["cut_items"] == ["["]
    whole = answerer.finish(prepared, f" [1] {name}")
    assert whole.text == f"[1] {name}" and whole.metadata["cut_items"] == []


def test_an_answer_citing_no_given_fact_is_a_retryable_error(answerer):
    from kgllm.exceptions import ModelOutputError

    prepared = answerer.prepare("Which countries border Chad?")
    with pytest.raises(ModelOutputError, match="cites none of the") as caught:
        answerer.finish(prepared, " [99] Niger")
    assert caught.value.retryable


def test_facts_are_trimmed_by_rank_and_the_question_is_kept(answerer):
    question = "Which countries border Chad?"
    full = answerer.prepare(question, context_tokens=2000, max_new_tokens=16)
    small = answerer.prepare(question, context_tokens=full.prompt_tokens - 10, max_new_tokens=16)
    assert 0 < len(small.facts) < len(full.facts)
    assert small.facts == full.facts[: len(small.facts)] and small.trimmed == len(full.facts) - len(small.facts)
    assert small.prompt.endswith(f"Question: {question}\nAnswer:")
    with pytest.raises(InputError, match="do not fit the model's context"):
        answerer.prepare(question, context_tokens=20, max_new_tokens=16)


def test_a_trained_reader_answers_with_a_cited_fact_for_every_name(reader):
    answer = reader.answer("What are the neighbors of Kenya?")
    assert answer.metadata["generated"].startswith(" [1] ")  # the reader picks a line, then its name
    assert iri("uganda") in [e.id for e in answer.entities]
    numbered = {
        fact["n"]: fact["path"]["triples"] if "path" in fact else [fact["triple"]] for fact in answer.metadata["facts"]
    }
    assert answer.entities and set(answer.metadata["citations"]) <= set(numbered)
    for entity in answer.entities:
        assert any(entity.id in (t[0], t[2]) for n in answer.metadata["citations"] for t in numbered[n])
    cited = [Triple(*t) for n in answer.metadata["citations"] for t in numbered[n]]
    assert answer.evidence.triples == list(dict.fromkeys(cited))
    assert answer.metadata["unsupported_names"] == [] and answer.confidence == 1.0


def test_an_answer_past_its_time_limit_is_cut_and_answers_nothing(answerer):
    answer = answerer.answer("What are the neighbors of Kenya?", time_limit=1e-9)  # gone before retrieval ends
    assert answer.metadata["cut"] is True and answer.metadata["found"] is False
    assert answer.entities == [] and "generated" not in answer.metadata  # the model was not asked
    assert "time budget" in answer.text
    assert "cut" not in answerer.answer("What are the neighbors of Kenya?", time_limit=600).metadata


def test_generation_stops_at_its_time_bound(lm):
    unbounded = GenerationConfig(max_new_tokens=8, min_new_tokens=8, stop=())
    assert len(lm.generate_tokens(["kenya"], unbounded)[0][0].token_ids) == 8
    bounded = replace(unbounded, max_seconds=1e-9)  # over after the first token
    assert len(lm.generate_tokens(["kenya"], bounded)[0][0].token_ids) == 1
    with pytest.raises(InputError, match="max_seconds"):
        replace(unbounded, max_seconds=0)


def test_closed_book_answers_are_marked(answerer):
    answer = answerer.answer("What is Kenya neighbor of?", closed_book=True)
    assert answer.metadata["closed_book"] is True and answer.evidence.triples == []
    assert "closed-book" in answer.text


# ------------------------------------------------------------------ reading examples


def test_reading_examples_are_the_answerers_own_prompts_citing_the_fact_that_holds_each_answer(answerer):
    examples = reading_examples(answerer, 40, seed=1)
    assert len(examples) >= 30  # a question that retrieves nothing is never put to the model
    answered = [e for e in examples if e.target.strip() != NO_ANSWER]
    assert answered and len(answered) < len(examples)  # some ask for what the graph does not hold
    question = examples[0].prompt.rsplit("Question: ", 1)[1].removesuffix("\nAnswer:")
    assert examples[0].prompt == answerer.prepare(question, context_tokens=READER_CONTEXT, constrained=False).prompt
    for example in answered:
        facts = {
            int(line[1 : line.index("]")]): line[line.index("]") + 2 :]
            for line in example.prompt.splitlines()
            if line.startswith("[")
        }
        for item in parse_answer(example.target).items:
            assert item.citations and all(item.name in facts[n] for n in item.citations)


def test_a_reading_target_holds_only_what_the_shown_facts_reach(store):
    steps = (Step(iri("neighborOf"), True), Step(iri("locatedIn"), True))
    walk = Walk("Which subregions are Chad's neighbours in?", iri("chad"), steps)
    shown = [
        Triple(iri("chad"), iri("locatedIn"), iri("middle_africa")),
        Triple(iri("chad"), iri("neighborOf"), iri("niger")),
        Triple(iri("chad"), iri("neighborOf"), iri("libya")),
        Triple(iri("niger"), iri("locatedIn"), iri("western_africa")),
    ]  # Libya's subregion is not shown: the reader must not name it from memory
    classes = CorpusBuilder(store)
    items = [RankedFact(t, 0.0) for t in shown]
    assert reached_through(classes, walk, items) == {iri("western_africa"): 4}
    back = Walk("Which countries border Niger?", iri("niger"), (Step(iri("neighborOf"), False),))
    assert reached_through(classes, back, items) == {iri("chad"): 2}
    assert reached_through(classes, Walk("Niger anthem", iri("niger"), ()), items) == {}
    # a path is one item: the answer it reaches cites it, not the facts apart that repeat its steps
    path = RankedFact(shown[3], 0.0, paths=(GraphPath(iri("chad"), (shown[1], shown[3])),))
    assert reached_through(classes, walk, [path, *items]) == {iri("western_africa"): 1}
    # a path is cited for its end only, and facts apart are not read beside it: Niger, on its way,
    # is not an answer it shows (such an example is left out of training)
    first_hop = Walk("Which countries border Chad?", iri("chad"), steps[:1])
    assert reached_through(classes, first_hop, [path, *items]) == {}
    assert reached_through(classes, first_hop, items) == {iri("niger"): 2, iri("libya"): 3}
    # paths that end at answers are the answer, whichever way they walk "neighbor of"; Niger, which
    # no path reaches, is left out: the reader copies the reading of the question it is shown
    libya = Triple(iri("libya"), iri("neighborOf"), iri("chad"))
    back_path = RankedFact(libya, 0.0, paths=(GraphPath(iri("chad"), (libya,)),))
    assert reached_through(classes, first_hop, [back_path, *items]) == {iri("libya"): 1}


# ------------------------------------------------------------------ the inject benchmark's tallies


def test_the_inject_tallies_tell_retrieval_misses_from_reading_misses():
    facts = [
        {"n": 1, "triple": [iri("chad"), iri("neighborOf"), iri("niger")]},
        {"n": 2, "triple": [iri("chad"), iri("neighborOf"), iri("libya")]},
    ]
    labels = {iri("niger"): "Niger", iri("libya"): "Libya", iri("chad"): "Chad"}

    def answer(names: list[str], cited: list[int]) -> Answer:
        items = [{"name": labels[iri(n)], "citations": [c]} for n, c in zip(names, cited, strict=True)]
        entities = [Entity(iri(n), labels[iri(n)]) for n in names]
        return Answer("q", "", entities, Evidence(), 1.0, labels, {"facts": facts, "items": items})

    result = InjectResult("generate", "mini")
    result.add(answer(["niger", "libya"], [1, 2]), ["libya", "niger"], 0.1)  # read right
    result.add(answer(["niger"], [2]), ["libya", "niger"], 0.1)  # both in the prompt, read wrong, miscited
    result.add(answer(["niger"], [1]), ["niger", "sudan"], 0.1)  # Sudan was never in the prompt
    result.add(None, ["niger"], 0.1)  # unreadable output
    row = result.row()
    assert row["exact"] == "25.0%" and row["answers in prompt"] == "66.7%" and row["unusable output"] == "1"
    assert row["citation precision"] == "75.0%" and row["uncited names"] == "25.0%"


def test_swapped_names_change_prompt_and_target_alike_within_a_class():
    from kgllm.llm.tasks import TaskExample

    def text(chad, niger, nigeria, western, equatorial, middle):
        prompt = (
            f"Facts:\n[1] {chad} > neighbor of > {niger}, {nigeria} > located in > {western}\n"
            f"[2] {equatorial} located in {middle}.\nQuestion: Which countries border {chad}?\nAnswer:"
        )
        return TaskExample(prompt, f" [1] {niger}, [1] {nigeria}", (f"[1] {niger}, [1] {nigeria}",))

    names = ("Chad", "Niger", "Nigeria", "Western Africa", "Equatorial Guinea", "Middle Africa")
    demo = open_store(demo_graph_path())
    swapper = NameSwapper(CorpusBuilder(demo), demo)
    mapping = swapper.draw(random.Random(1))
    pool = {name: next(i for i, p in enumerate(swapper.pools) if name in p) for name in mapping}
    assert all(pool[old] == pool[new] for old, new in mapping.items())  # a country for a country
    assert sorted(mapping.values()) == sorted(mapping) and mapping != {n: n for n in mapping}
    # longest names first: "Niger" in "Nigeria" and "Guinea" in "Equatorial Guinea" are not swapped apart
    assert swapper.swap(text(*names), mapping) == text(*(mapping[n] for n in names))
    assert swapper.draw(random.Random(1)) == mapping  # the same draw, the same swap


def test_a_generated_question_that_names_a_class_reaches_only_that_class():
    demo = open_store(demo_graph_path())
    c = "https://kgllm.dev/countries/"
    path = ("kenya", "locatedIn", "eastern_africa")
    asked = [PathQuestionItem(q, frozenset(), path) for q in ("Which subregion is Kenya in?", "Where is Kenya?")]
    named, unnamed = _chain_walks(asked, list(demo.triples(head=c + "kenya")), CorpusBuilder(demo))
    assert named.steps == (Step(c + "locatedIn", True, "subregion"),)
    assert unnamed.steps == (Step(c + "locatedIn", True, None),)  # Africa and Eastern Africa both answer it
    items = [RankedFact(t, 0.0) for t in demo.triples(head=c + "kenya", relation=c + "locatedIn")]
    assert set(reached_through(CorpusBuilder(demo), named, items)) == {c + "eastern_africa"}
    assert set(reached_through(CorpusBuilder(demo), unnamed, items)) == {c + "eastern_africa", c + "africa"}
