"""Task data from the graph, and knowledge-injection pre-training with checkpoints, resume and evaluation."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback
from typer.testing import CliRunner

from kgllm.exceptions import ConfigurationError, ModelError
from kgllm.graph.loaders import load
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.llm import HFCausalLM, TrainingConfig
from kgllm.llm.tasks import TASKS, build_task
from kgllm.llm.tuning import RunConfig, knowledge_texts, perplexity, pretrain

REGIONS = {"kenya": "east", "uganda": "east", "ghana": "west", "mali": "west", "niger": "west", "chad": "central"}
TINY = TrainingConfig(hidden_size=32, num_layers=1, num_heads=2, vocab_size=300, max_seq_len=64, threads=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RDFLibStore:
    facts = [(c, "located_in", r) for c, r in REGIONS.items()]
    facts += [(a, "neighbor_of", b) for a in REGIONS for b in REGIONS if a < b and REGIONS[a] == REGIONS[b]]
    kb = tmp_path_factory.mktemp("kb") / "africa.tsv"
    kb.write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in facts), encoding="utf-8")
    graph = RDFLibStore()
    load(graph, kb)
    return graph


@pytest.mark.parametrize("task", TASKS)
def test_task_data_is_deterministic_and_split(store, task):
    splits = build_task(store, task, seed=3)
    again = build_task(store, task, seed=3)
    assert (splits.train, splits.dev, splits.test) == (again.train, again.dev, again.test)
    everything = splits.train + splits.dev + splits.test
    assert splits.train and len(set(everything)) == len(everything)
    assert build_task(store, task, seed=4).train != splits.train or len(everything) < 3
    for example in everything:
        assert example.prompt.strip() and example.target.startswith(" ") and example.is_correct(example.target)


def test_task_texts_come_from_the_graph(store):
    tail = build_task(store, "tail", seed=0, dev=0, test=0).train
    kenya = next(e for e in tail if e.prompt == "Kenya | located in |")
    assert kenya.answers == ("East",)
    qa = next(e for e in build_task(store, "qa", dev=0, test=0).train if "What is Kenya located in?" in e.prompt)
    assert "Kenya located in East." in qa.prompt and (qa.target, qa.answers) == (" East", ("East",))
    with pytest.raises(ConfigurationError, match="qa, path, tail, kg2text, text2kg"):
        build_task(store, "summarize")


def test_held_out_facts_appear_in_no_training_text(store):
    texts = knowledge_texts(store, hops=2, held_out=0.2, seed=0)
    assert texts.held_out and len(texts.held_out) == len(texts.held_out_triples)
    corpus = " ".join(texts.train)
    assert not [fact for fact in texts.held_out if fact in corpus]
    assert any(text.count(".") > 1 for text in texts.train)  # multi-fact passages


class _Interrupt(TrainerCallback):
    """Stops the process as Ctrl-C would, once ``at`` steps are done."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.at:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_an_interrupted_pretraining_resumes_from_its_last_checkpoint(store, tmp_path):
    texts = knowledge_texts(store, held_out=0.2)
    run = RunConfig(max_steps=12, save_steps=5, batch_size=4, learning_rate=3e-3, warmup_steps=2, logging_steps=1)
    with pytest.raises(KeyboardInterrupt):
        pretrain(
            texts.train,
            tmp_path / "resumed",
            model_config=TINY,
            run=run,
            held_out=texts.held_out,
            progress=False,
            callbacks=[_Interrupt(7)],
        )
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["checkpoint-5"]
    resumed = pretrain(
        texts.train, tmp_path / "resumed", model_config=TINY, run=run, held_out=texts.held_out, progress=False
    )
    straight = pretrain(
        texts.train, tmp_path / "straight", model_config=TINY, run=run, held_out=texts.held_out, progress=False
    )
    assert resumed.steps == straight.steps == 12
    weights = [load_file(tmp_path / name / "model.safetensors") for name in ("resumed", "straight")]
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-5) for k in weights[1])
    assert resumed.metrics["held_out_perplexity"] == pytest.approx(straight.metrics["held_out_perplexity"], rel=1e-4)


@pytest.mark.slow
def test_pretraining_lowers_held_out_perplexity_and_draws_the_loss_curve(store, tmp_path):
    texts = knowledge_texts(store, held_out=0.2)
    result = pretrain(
        texts.train,
        tmp_path / "model",
        model_config=TINY,
        progress=False,
        held_out=texts.held_out,
        run=RunConfig(epochs=30, batch_size=8, learning_rate=5e-3, warmup_steps=5, save_steps=40),
    )
    assert (tmp_path / "model" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "model" / "checkpoints").exists()
    lm = HFCausalLM.from_pretrained(tmp_path / "model")
    assert result.metrics["held_out_perplexity"] == pytest.approx(perplexity(lm, texts.held_out), rel=1e-4)
    assert result.metrics["held_out_perplexity"] < len(lm.tokenizer) / 4
    saved = json.loads((tmp_path / "model" / "tuning_result.json").read_text())
    assert saved["steps"] == result.steps and saved["final_loss"] < 3.0


@pytest.mark.slow
def test_continued_pretraining_starts_from_the_base(store, tmp_path):
    texts = knowledge_texts(store, held_out=0.2)
    pretrain(
        texts.train,
        tmp_path / "base",
        model_config=TINY,
        run=RunConfig(max_steps=30, batch_size=8, learning_rate=5e-3),
        progress=False,
    )
    base_ppl = perplexity(HFCausalLM.from_pretrained(tmp_path / "base"), texts.train)
    more = pretrain(
        texts.train,
        tmp_path / "more",
        base_dir=tmp_path / "base",
        progress=False,
        run=RunConfig(max_steps=30, batch_size=8, learning_rate=2e-3, warmup_steps=0),
    )
    assert more.method == "continued"
    assert perplexity(HFCausalLM.from_pretrained(tmp_path / "more"), texts.train) < base_ppl
    with pytest.raises(ModelError, match="config.json missing"):
        pretrain(texts.train, tmp_path / "x", base_dir=tmp_path / "nowhere", progress=False)


def test_cli_pretrain_prints_a_summary(tmp_path):
    from kgllm.cli import app

    kb = tmp_path / "kb.tsv"
    kb.write_text("kenya\tlocated_in\teast\nghana\tlocated_in\twest\nmali\tneighbor_of\tniger\n", encoding="utf-8")
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "pretrain",
            "--graph",
            str(kb),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--held-out",
            "0.34",
        ],
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "pretrain from scratch" in output and "2 steps" in output and "held_out_perplexity" in output
    assert (out / "loss.png").is_file()
    fp16 = CliRunner().invoke(app, ["train", "pretrain", "--graph", str(kb), "--out", str(out), "--precision", "fp16"])
    assert isinstance(fp16.exception, ConfigurationError) and "CUDA" in str(fp16.exception)


def test_a_run_that_time_ends_decays_its_rate_to_zero_at_the_deadline():
    from types import SimpleNamespace

    from transformers import TrainerControl

    from kgllm.llm.tuning import _TimeBudget

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    budget = _TimeBudget(minutes=1.0)
    args, control = SimpleNamespace(warmup_steps=5), TrainerControl()
    state = SimpleNamespace(global_step=25, max_steps=100)
    budget.started -= 45  # three quarters of the time gone, a quarter of the steps
    budget.on_step_end(args, state, control, optimizer=optimizer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.25 / 0.75, rel=0.01)
    assert not control.should_training_stop
    budget.started -= 15
    budget.on_step_end(args, state, control, optimizer=optimizer)
    assert optimizer.param_groups[0]["lr"] == 0.0 and control.should_training_stop and control.should_save
