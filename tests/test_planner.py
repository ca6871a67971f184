"""The LoRA relation-path planner on a tiny family graph, with a really trained tiny base model."""

from __future__ import annotations

from dataclasses import astuple, replace
from pathlib import Path

import pytest
import torch

from kgllm.datasets.pathquestion import parse_line, read_pathquestion
from kgllm.graph.loaders import load
from kgllm.graph.rdflib_store import RDFLibStore, to_iri
from kgllm.llm import TrainingConfig, train_causal_lm
from kgllm.llm.corpus import CorpusBuilder, plan_prompt
from kgllm.pipelines.synergize.planner import (
    PLANNER_LORA,
    PLANNER_RUN,
    PlannerConfig,
    load_planner,
    planning_examples,
    train_planner,
)
from kgllm.pipelines.synergize.reasoner import PathReasoner, ReasonerConfig
from kgllm.types import Entity

FAMILIES = {  # parent: (spouse, children)
    "anna": ("boris", ["carl", "dora"]),
    "emma": ("felix", ["gina", "hugo"]),
    "iris": ("jonas", ["kurt", "lena"]),
}
GENDER = {
    "anna": "female",
    "boris": "male",
    "carl": "male",
    "dora": "female",
    "emma": "female",
    "felix": "male",
    "gina": "female",
    "hugo": "male",
    "iris": "female",
    "jonas": "male",
    "kurt": "male",
    "lena": "female",
}
TEMPLATES = {  # question: the relations of its gold path
    "what is the gender of {} 's child ?": ("children", "gender"),
    "what is {} 's spouse 's gender ?": ("spouse", "gender"),
    "who is the child of {} 's husband ?": ("spouse", "children"),
    "who is the parent of {} 's kid ?": ("children", "parents"),
}


def _facts() -> list[tuple[str, str, str]]:
    facts = [(p, "gender", g) for p, g in GENDER.items()]
    for parent, (spouse, children) in FAMILIES.items():
        facts += [(parent, "spouse", spouse), (spouse, "spouse", parent)]
        for child in children:
            for p in (parent, spouse):
                facts += [(p, "children", child), (child, "parents", p)]
    return facts


def _walk(subject: str, relations: tuple[str, ...]) -> list[str]:
    """The gold nodes: the first fact of each relation along the way."""
    facts, nodes = _facts(), [subject]
    for relation in relations:
        nodes.append(next(t for h, r, t in facts if h == nodes[-1] and r == relation))
    return nodes


def _line(template: str, subject: str) -> str:
    relations = TEMPLATES[template]
    nodes = _walk(subject, relations)
    path = "#".join(x for pair in zip(nodes, relations) for x in pair) + f"#{nodes[-1]}#<end>#{nodes[-1]}"
    return f"{template.format(subject)}\t{nodes[-1]}({nodes[-1]}/)\t{path}"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RDFLibStore:
    kb = tmp_path_factory.mktemp("kb") / "family.tsv"
    kb.write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in _facts()), encoding="utf-8")
    graph = RDFLibStore()
    load(graph, kb)
    return graph


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return [_line(t, s) for t in TEMPLATES for s in FAMILIES]


def test_planning_example_is_the_reasoners_text_of_the_gold_plan(store, lines):
    reasoner = PathReasoner(store, retriever=None, config=ReasonerConfig(max_hops=2))
    for line, example in zip(lines, planning_examples(store, [parse_line(x) for x in lines]), strict=True):
        question, _, path = line.split("\t")
        names = path.split("#<end>#")[0].split("#")
        topic = str(to_iri(names[0]))
        gold = [
            p
            for p in reasoner.plans(Entity(topic, names[0]))
            if [(h.relation, h.forward) for h in p.hops] == [(str(to_iri(r)), True) for r in names[1::2]]
            and str(to_iri(names[-1])) in p.answers
        ]
        assert len(gold) == 1
        assert example == plan_prompt(question) + reasoner._path_text(gold[0])


def test_planning_examples_reject_a_line_without_a_gold_path(store):
    from kgllm.exceptions import InputError

    with pytest.raises(InputError, match="no gold path"):
        planning_examples(store, [parse_line("who is anna 's son ?\tcarl(carl/)")])


def test_planner_config_is_an_adapter_and_a_run_and_round_trips():
    from kgllm.exceptions import ConfigurationError
    from kgllm.llm.adapters import AdapterConfig
    from kgllm.llm.tuning import RunConfig

    config = PlannerConfig(run=replace(PLANNER_RUN, max_minutes=10))
    assert config.adapter == PLANNER_LORA and config.run.max_minutes == 10 and config.run.epochs == PLANNER_RUN.epochs
    assert PlannerConfig().run is not PLANNER_RUN  # each config owns its parts
    saved = config.to_dict()
    assert set(saved) == {"adapter", "run"} and PlannerConfig.from_dict(saved) == config
    assert PlannerConfig(adapter={"rank": 4}).adapter == AdapterConfig(rank=4)
    with pytest.raises(ConfigurationError, match=r"'rank'.*known keys: adapter, run"):
        PlannerConfig(rank=4)
    with pytest.raises(ConfigurationError, match=r"RunConfig key 'learnig_rate' \(did you mean 'learning_rate'\?\)"):
        PlannerConfig.from_dict({"run": {**saved["run"], "learnig_rate": 1e-3}})
    with pytest.raises(ConfigurationError, match="LoRA"):
        PlannerConfig(adapter=AdapterConfig(method="prefix"))
    with pytest.raises(ConfigurationError, match="must be a RunConfig"):
        PlannerConfig(run=AdapterConfig())
    assert isinstance(PlannerConfig.from_dict({}).run, RunConfig)


@pytest.fixture(scope="module")
def planner(store, lines, tmp_path_factory) -> tuple[Path, Path, list[str]]:
    threads = torch.get_num_threads()
    examples = planning_examples(store, [parse_line(x) for x in lines])
    base = tmp_path_factory.mktemp("base") / "model"
    config = TrainingConfig(
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        vocab_size=300,
        batch_size=8,
        learning_rate=3e-3,
        warmup_steps=5,
        epochs=20,
        threads=1,
    )
    train_causal_lm(CorpusBuilder(store).texts() + examples, base, config, progress=False)
    adapter = tmp_path_factory.mktemp("adapter") / "planner"
    train_planner(
        base,
        examples,
        adapter,
        PlannerConfig(
            adapter=replace(PLANNER_LORA, rank=4, alpha=8),
            run=replace(PLANNER_RUN, learning_rate=1e-2, batch_size=8, epochs=300, max_minutes=30, threads=1),
        ),
        progress=False,
    )
    yield base, adapter, examples
    torch.set_num_threads(threads)


def test_only_the_adapter_is_saved(planner):
    _, adapter, _ = planner
    files = {p.name for p in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert not files & {"model.safetensors", "config.json", "tokenizer.json"}


def test_the_trained_planner_prefers_the_gold_plan(planner):
    base, adapter, examples = planner
    lm = load_planner(base, adapter, threads=1)
    paths = [e.split("Path:") for e in examples]
    for i, (prompt, gold) in enumerate(paths):
        # the gold plan of another question about the same person, a plan the graph also offers
        wrong = paths[(i + len(FAMILIES)) % len(paths)][1]
        gold_score, wrong_score = lm.score(prompt + "Path:", [gold, wrong], normalize=True)
        assert gold_score > wrong_score, (prompt, gold, wrong)


def test_dev_choice_counts_hits_as_the_benchmark_does(store, planner, lines, encoder, tmp_path):
    from kgllm.bench.kgqa import run_kgqa_benchmark
    from kgllm.pipelines.synergize.planner import _hits_by_setting, choose_weight_and_floor
    from kgllm.retrieval.retriever import KGRetriever

    base, adapter, _ = planner
    retriever = KGRetriever(store, encoder)
    retriever.build()
    reasoner = PathReasoner(store, retriever, load_planner(base, adapter, threads=1), ReasonerConfig(lm_weight=1.0))
    dev = tmp_path / "family.dev.txt"
    dev.write_text("\n".join(lines), encoding="utf-8")
    weight, floor = choose_weight_and_floor(reasoner, read_pathquestion(dev), progress=False)
    expected = sum(
        _hits_by_setting(reasoner, q, gold, [(weight, floor)])[(weight, floor)]
        for q, gold, _ in map(astuple, read_pathquestion(dev))
    )
    reasoner.config.lm_weight, reasoner.config.min_plan_similarity = weight, floor
    assert expected > 0
    assert run_kgqa_benchmark(reasoner, dev, "trained", progress=False).hits == expected


def test_the_planner_scores_as_the_merged_model_with_the_end_token(planner):
    from kgllm.llm.adapters import merge_adapter
    from kgllm.llm.hf import HFCausalLM

    base, adapter, examples = planner
    lm = load_planner(base, adapter, threads=1)
    merged = merge_adapter(base, adapter)
    merged = HFCausalLM(merged.model, merged.tokenizer, complete_candidates=True)
    prompt, gold = examples[0].split("Path:")
    candidates = [gold, gold.rsplit(" ", 1)[0]]  # the gold plan and a plan that stops early
    scores = lm.score(prompt + "Path:", candidates, normalize=True)
    assert scores == pytest.approx(merged.score(prompt + "Path:", candidates, normalize=True), abs=1e-4)
    without_end = HFCausalLM(merged.model, merged.tokenizer).score(prompt + "Path:", candidates, normalize=True)
    assert scores != pytest.approx(without_end, abs=1e-3)
