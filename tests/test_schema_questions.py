"""Chain questions generated from a graph's own facts and schema, and a planner trained on them alone."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

import pytest
import torch

from kgllm.exceptions import InputError
from kgllm.graph.rdflib_store import RDFLibStore, to_iri
from kgllm.llm import TrainingConfig, train_causal_lm
from kgllm.llm.corpus import CorpusBuilder, plan_prompt
from kgllm.pipelines.synergize.planner import (
    PLANNER_LORA,
    PLANNER_RUN,
    PlannerConfig,
    gold_path_text,
    load_planner,
    planning_examples,
    train_planner,
)
from kgllm.pipelines.synergize.questions import NOUN_FRAMES, PHRASE_BANK, chain_questions
from kgllm.types import Triple

PEOPLE = ["ada", "ben", "cleo", "dan", "eve", "finn", "gus", "hana", "ivo", "jill", "kai", "lou"]


def _family_facts() -> list[tuple[str, str, str]]:
    facts = []
    for i, person in enumerate(PEOPLE):
        facts.append((person, "gender", "female" if i % 2 == 0 else "male"))
        facts.append((person, "profession", ["baker", "pilot", "nurse"][i % 3]))
    for a, b in zip(PEOPLE[0:6:2], PEOPLE[1:6:2]):
        facts += [(a, "spouse", b), (b, "spouse", a)]
        for child in PEOPLE[6 + 2 * (PEOPLE.index(a) // 2) : 8 + 2 * (PEOPLE.index(a) // 2)]:
            facts += [(a, "children", child), (b, "children", child), (child, "parents", a), (child, "parents", b)]
    return facts


@pytest.fixture(scope="module")
def family() -> RDFLibStore:
    store = RDFLibStore()
    store.add([Triple(str(to_iri(h)), str(to_iri(r)), str(to_iri(t))) for h, r, t in _family_facts()])
    return store


def _frame_pattern(frame: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(frame).replace(r"\{np\}", ".+").replace(r"\{x\}", ".+") + r"\??$")


def test_every_question_follows_stored_facts_and_names_every_answer(family):
    items = chain_questions(family, 300, max_hops=2, split="train")
    assert len(items) == 300
    facts = {(h, r, t) for h, r, t in _family_facts()}
    for item in items:
        nodes, relations = item.path[0::2], item.path[1::2]
        assert 1 <= len(relations) <= 2
        assert all((h, r, t) in facts for h, r, t in zip(nodes, relations, nodes[1:]))
        reached = {nodes[0]}
        for relation in relations:
            reached = {t for h, r, t in facts if h in reached and r == relation}
        assert item.answers == reached
        assert family.label(str(to_iri(nodes[0]))) in item.question


def test_relations_are_asked_about_evenly_not_by_how_many_facts_they_have(family):
    first = Counter(item.path[1] for item in chain_questions(family, 600, max_hops=1, split="train"))
    # 'children' has 12 facts, 'spouse' 6; each of the five relations should get about a fifth
    assert set(first) == {"gender", "profession", "spouse", "children", "parents"}
    assert max(first.values()) < 2 * min(first.values())


def test_dev_questions_use_only_frames_that_train_never_uses(family):
    dev_frames = [_frame_pattern(f) for f in NOUN_FRAMES[2]]
    dev_frames += [_frame_pattern(q) for p in PHRASE_BANK.values() for q in p.questions[1::2]]
    train = chain_questions(family, 400, max_hops=2, split="train")
    dev = chain_questions(family, 100, max_hops=2, split="dev")
    assert all(any(p.match(item.question) for p in dev_frames) for item in dev)
    assert not [item.question for item in train if any(p.match(item.question) for p in dev_frames)]
    assert chain_questions(family, 50, split="dev") == chain_questions(family, 50, split="dev")  # seeded


def test_a_relation_outside_the_phrase_bank_is_said_by_its_label_or_as_a_clause():
    store = RDFLibStore()
    store.add([Triple(str(to_iri("ada")), str(to_iri("works_at")), str(to_iri("acme")))])
    store.add([Triple(str(to_iri("acme")), str(to_iri("founder")), str(to_iri("ben")))])
    questions = {item.question for item in chain_questions(store, 60, max_hops=2)}
    assert any("that Ada works at" in q for q in questions)
    assert any("founder" in q for q in questions)


def test_bad_requests_are_refused():
    with pytest.raises(InputError, match="split"):
        chain_questions(RDFLibStore(), 10, split="test")
    with pytest.raises(InputError, match="max_hops"):
        chain_questions(RDFLibStore(), 10, max_hops=5)
    with pytest.raises(InputError, match="no facts"):
        chain_questions(RDFLibStore(), 10)


def test_plan_prompt_joins_tokenized_possessives():
    assert plan_prompt("what is  ada 's spouse 's job ?") == "Question: what is ada's spouse's job ?\nPath:"


def _plans(person: str) -> dict[tuple[str, ...], list[str]]:
    """Every relation sequence of one or two hops from ``person``, with one walk along it."""
    facts = _family_facts()
    plans: dict[tuple[str, ...], list[str]] = {}
    for _, r1, t1 in (f for f in facts if f[0] == person):
        plans.setdefault((r1,), [person, r1, t1])
        for _, r2, t2 in (f for f in facts if f[0] == t1 and f[2] != person):
            plans.setdefault((r1, r2), [person, r1, t1, r2, t2])
    return plans


def _gold_first(lm, store, items) -> float:
    """Share of questions whose gold relation path the model ranks above every other path of its length."""
    firsts = []
    for item in items:
        plans, gold = _plans(item.path[0]), tuple(item.path[1::2])
        others = [gold_path_text(store, w) for r, w in plans.items() if r != gold and len(r) == len(gold)]
        scores = lm.score(plan_prompt(item.question), [gold_path_text(store, plans[gold]), *others], normalize=True)
        firsts.append(scores[0] > max(scores[1:], default=float("-inf")))
    return sum(firsts) / len(firsts)


def test_a_planner_trained_on_generated_questions_learns_their_relations(family, tmp_path):
    from kgllm.llm.hf import HFCausalLM

    threads = torch.get_num_threads()
    train = chain_questions(family, 400, max_hops=2, split="train")
    examples = planning_examples(family, train)
    tiny = TrainingConfig(hidden_size=64, num_layers=2, num_heads=2, vocab_size=300, batch_size=16, epochs=5, threads=2)
    train_causal_lm(CorpusBuilder(family).texts() + examples, tmp_path / "base", tiny, progress=False)
    run = replace(PLANNER_RUN, learning_rate=1e-2, batch_size=16, epochs=12, max_minutes=30, threads=2)
    config = PlannerConfig(replace(PLANNER_LORA, rank=4), run)
    train_planner(tmp_path / "base", examples, tmp_path / "planner", config, progress=False)
    planner = load_planner(tmp_path / "base", tmp_path / "planner", threads=2)
    base = HFCausalLM.from_pretrained(tmp_path / "base", threads=2, complete_candidates=True)
    torch.set_num_threads(threads)

    dev = chain_questions(family, 60, max_hops=2, split="dev")
    seen = train[:60]
    assert _gold_first(planner, family, seen) >= 0.7
    assert _gold_first(planner, family, seen) >= _gold_first(base, family, seen) + 0.25
    assert _gold_first(planner, family, dev) > _gold_first(base, family, dev)
