"""Task data from the graph, and knowledge-injection pre-training with checkpoints, resume and evaluation."""

from __future__ import annotations

import json
from dataclasses import replace

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
    with pytest.raises(ConfigurationError, match="keeps its own shape"):
        pretrain(texts.train, tmp_path / "y", base_dir=tmp_path / "base", model_config=TINY, progress=False)


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


def test_the_rate_warms_up_then_decays_by_steps_or_time_whichever_is_further():
    from kgllm.llm.tuning import lr_factor

    assert [lr_factor(s, 100, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(52, 100, 4) == pytest.approx(0.5)  # half of the 96 decay steps done
    assert lr_factor(52, 100, 4, schedule="cosine", min_ratio=0.1) == pytest.approx(0.55)
    assert lr_factor(99, 100, 4, schedule="cosine", min_ratio=0.1) == pytest.approx(0.1, abs=1e-3)
    # three quarters of the time gone, a quarter of the steps: time leads, and ends the decay at the deadline
    assert lr_factor(28, 100, 4, time_done=0.75) == pytest.approx(0.25)
    assert lr_factor(28, 100, 4, time_done=1.2, min_ratio=0.1) == pytest.approx(0.1)


def test_the_time_budget_stops_the_run_logs_its_last_steps_and_saves_when_checkpointing():
    from transformers import TrainerControl

    from kgllm.llm.tuning import _TimeBudget

    budget, control = _TimeBudget(minutes=1.0), TrainerControl()
    budget.started -= 45
    budget.on_step_end(None, None, control)
    assert budget.fraction() == pytest.approx(0.75, abs=0.01) and not control.should_training_stop
    budget.started -= 15
    budget.on_step_end(None, None, control)
    assert control.should_training_stop and control.should_save and control.should_log
    quiet, control = _TimeBudget(minutes=1.0, save=False), TrainerControl()
    quiet.started -= 60
    quiet.on_step_end(None, None, control)
    assert control.should_training_stop and not control.should_save
    assert _TimeBudget(None).fraction() == 0.0


CAPITALS = [
    f"The capital of {c} is {city}." for c, city in (("Kenya", "Nairobi"), ("Peru", "Lima"), ("Chad", "N'Djamena"))
]


def test_training_from_scratch_runs_on_the_engine_and_ends_on_time(tmp_path):
    from kgllm.llm import train_causal_lm

    config = replace(TINY, epochs=None, max_minutes=0.05, batch_size=2, warmup_steps=2)
    result = train_causal_lm(CAPITALS, tmp_path / "timed", config, progress=False)
    assert 2.5 < result.seconds < 3 + 30  # the 3 s budget ends it (a step may take long on a busy machine)
    assert result.steps > 1 and result.tokens > result.steps * 2 and result.final_loss < 10
    assert result.epochs == pytest.approx(result.steps / 2)
    assert (tmp_path / "timed" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no checkpoints or staging left


@pytest.mark.slow
def test_an_interrupted_training_from_scratch_resumes_from_its_last_checkpoint(tmp_path):
    from kgllm.llm import TrainResult, train_causal_lm

    config = replace(TINY, epochs=6, batch_size=1, warmup_steps=2, save_steps=5, logging_steps=1)  # 18 steps
    with pytest.raises(KeyboardInterrupt):
        train_causal_lm(CAPITALS, tmp_path / "resumed", config, progress=False, resume=True, callbacks=[_Interrupt(7)])
    assert not (tmp_path / "resumed").exists()
    partial = tmp_path / ".resumed.partial"
    assert sorted(p.name for p in (partial / "checkpoints").iterdir()) == ["checkpoint-5"]
    resumed = train_causal_lm(CAPITALS, tmp_path / "resumed", config, progress=False, resume=True)
    straight = train_causal_lm(CAPITALS, tmp_path / "straight", config, progress=False)
    assert resumed.steps == straight.steps == 18 and not partial.exists()
    weights = [load_file(tmp_path / name / "model.safetensors") for name in ("resumed", "straight")]
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-5) for k in weights[1])
    assert TrainResult.load(tmp_path / "resumed").config == config


def test_every_training_config_refuses_unknown_keys_naming_the_known_ones():
    from kgllm.llm.adapters import AdapterConfig

    for cls in (TrainingConfig, RunConfig, AdapterConfig):
        with pytest.raises(ConfigurationError, match=f"unknown {cls.__name__} key 'colour'; known keys: "):
            cls(colour=1)
        with pytest.raises(ConfigurationError, match=f"unknown {cls.__name__} keys 'colour', 'size'; known keys"):
            cls.from_dict({"colour": 1, "size": 2})
        assert cls.from_dict(json.loads(json.dumps(cls().to_dict()))) == cls()
    with pytest.raises(ConfigurationError, match="did you mean 'warmup_steps'"):
        RunConfig.from_dict({"warmup_step": 3})
    with pytest.raises(ConfigurationError, match="never stop"):
        RunConfig(epochs=None)
    assert RunConfig(epochs=None, max_minutes=1).max_minutes == 1
    with pytest.raises(ConfigurationError, match="lr_schedule"):
        RunConfig(lr_schedule="step")
    run = TINY.run_config()
    assert (run.learning_rate, run.batch_size, run.threads) == (TINY.learning_rate, TINY.batch_size, TINY.threads)
    assert (run.lr_schedule, run.min_lr_ratio, run.length_buckets) == ("cosine", 0.1, True)
    with pytest.raises(ConfigurationError, match="not both"):
        RunConfig(group_by_length=True, length_buckets=True)


def test_length_buckets_batch_texts_of_one_length_in_an_order_set_by_seed_and_epoch():
    from kgllm.llm.tuning import _LengthBuckets

    lengths = [i % 5 for i in range(23)]
    sampler = _LengthBuckets(lengths, batch_size=4, seed=0)
    first = list(sampler)
    assert sorted(first) == list(range(23)) and first == list(sampler)
    batches = [first[i : i + 4] for i in range(0, 23, 4)]
    assert len(batches[-1]) == 3  # the short batch comes last
    assert sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) <= 4  # (nearly) one length
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(23))


def test_cli_trains_the_default_model_into_a_folder(tmp_path):
    from kgllm.cli import app
    from kgllm.llm import TrainResult

    kb = tmp_path / "kb.tsv"
    kb.write_text("kenya\tlocated_in\teast\nghana\tlocated_in\twest\nmali\tneighbor_of\tniger\n", encoding="utf-8")
    out = tmp_path / "model"
    args = ["train", "default", "--graph", str(kb), "--out", str(out), "--minutes", "0.03"]
    result = CliRunner().invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "model ready" in result.output and (out / "loss.png").is_file()
    assert TrainResult.load(out).steps >= 1 and not (tmp_path / ".model.partial").exists()
    refused = CliRunner().invoke(app, ["train", "default", "--graph", str(kb), "--resume"])
    assert isinstance(refused.exception, ConfigurationError) and "--out" in str(refused.exception)
