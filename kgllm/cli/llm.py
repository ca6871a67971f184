"""``kgllm train default|pretrain|finetune`` and ``kgllm adapters``: training from the command line.

``kgllm train`` used to train the default model directly; that is now ``kgllm train default``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from kgllm.cli.output import make_console
from kgllm.exceptions import ConfigurationError
from kgllm.settings import Settings

console = make_console()

train_app = typer.Typer(
    help="Train language models on a graph: `default` (the cached default model), `pretrain` "
    "(knowledge injection) and `finetune` (a PEFT adapter per task). "
    "The former `kgllm train` is `kgllm train default`.",
    no_args_is_help=True,
)

GraphOption = Annotated[Optional[Path], typer.Option("--graph", "-g", help="Graph file; default: the demo graph.")]
StoreOption = Annotated[Optional[str], typer.Option("--store", help="'rdflib' (embedded, default) or 'neo4j'.")]
StepsOption = Annotated[Optional[int], typer.Option("--steps", help="Optimiser steps (overrides --epochs).")]
EpochsOption = Annotated[float, typer.Option("--epochs", help="Passes over the training data.")]
MinutesOption = Annotated[Optional[float], typer.Option("--minutes", help="Stop (and save) after this long.")]
BatchOption = Annotated[int, typer.Option("--batch-size", help="Examples per batch.")]
AccumulationOption = Annotated[
    int, typer.Option("--grad-accum", help="Batches per optimiser step (gradient accumulation).")
]
PrecisionOption = Annotated[str, typer.Option("--precision", help="fp32, bf16 (autocast) or fp16 (CUDA only).")]
CheckpointingOption = Annotated[
    bool, typer.Option("--grad-checkpointing", help="Recompute activations to save memory.")
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the data split, initialisation and batch order.")]


def _store(graph: Path | None, store: str | None, settings: Settings):
    from kgllm.graph import open_store

    return open_store(graph, store=store, settings=settings)


@train_app.command("default")
def train_default(
    graph: GraphOption = None,
    store: StoreOption = None,
    minutes: Annotated[Optional[float], typer.Option("--minutes", help="Training time budget.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Save here instead of the cache.")] = None,
    resume: Annotated[
        bool,
        typer.Option(help="With --out: checkpoint the run, and continue an interrupted one from its last checkpoint."),
    ] = False,
) -> None:
    """Train the default language model from scratch on the graph's facts and questions."""
    from kgllm.llm.corpus import CorpusBuilder
    from kgllm.llm.default import default_training_config, ensure_default_model
    from kgllm.llm.training import train_causal_lm

    overrides: dict[str, Any] = {"train_minutes": minutes} if minutes else {}
    settings = Settings(**overrides)
    if resume and out is None:
        raise ConfigurationError("--resume needs --out (the cached default model is trained in one go)")
    kg = _store(graph, store, settings)
    if out is None:
        path = ensure_default_model(kg, settings)
    else:
        path = train_causal_lm(
            CorpusBuilder(kg).texts(), out, default_training_config(settings), overwrite=True, resume=resume
        ).out_dir
    console.print(f"model ready in {path}")


@train_app.command("pretrain")
def train_pretrain(
    out: Annotated[Path, typer.Option("--out", help="Directory of the pre-trained model (and its checkpoints).")],
    graph: GraphOption = None,
    store: StoreOption = None,
    base: Annotated[
        Optional[Path], typer.Option("--base", help="Continue this model; default: train from scratch.")
    ] = None,
    hops: Annotated[int, typer.Option("--hops", help="Neighbourhood radius of the multi-fact passages.")] = 2,
    held_out: Annotated[
        float, typer.Option("--held-out", help="Share of facts kept out of training for perplexity.")
    ] = 0.1,
    steps: StepsOption = None,
    epochs: EpochsOption = 3,
    minutes: MinutesOption = None,
    batch_size: BatchOption = 32,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 2e-3,
    grad_accum: AccumulationOption = 1,
    precision: PrecisionOption = "fp32",
    grad_checkpointing: CheckpointingOption = False,
    seed: SeedOption = 0,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in --out, if any.")] = True,
) -> None:
    """Knowledge injection: train on verbalized graph text (facts, k-hop passages, entity descriptions)."""
    from kgllm.llm.tuning import RunConfig, knowledge_texts, pretrain

    settings = Settings()
    texts = knowledge_texts(_store(graph, store, settings), hops=hops, held_out=held_out, seed=seed)
    run = RunConfig(
        learning_rate=lr,
        batch_size=batch_size,
        gradient_accumulation=grad_accum,
        epochs=epochs,
        max_steps=steps,
        max_minutes=minutes,
        precision=precision,
        gradient_checkpointing=grad_checkpointing,
        seed=seed,
        threads=settings.threads,
        device=settings.device,
    )
    console.print(f"pre-training on {len(texts.train)} texts; {len(texts.held_out)} facts held out")
    result = pretrain(texts.train, out, base_dir=base, run=run, held_out=texts.held_out, resume=resume)
    console.print(result.summary())
    console.print(f"model in {out}, loss curve {out / 'loss.png'}")


@train_app.command("planner")
def train_planner_command(
    out: Annotated[Path, typer.Option("--out", help="Directory of the planner adapter and its settings.")],
    graph: GraphOption = None,
    store: StoreOption = None,
    questions: Annotated[
        int, typer.Option("--questions", min=50, help="Questions generated from the graph to train on.")
    ] = 3000,
    hops: Annotated[int, typer.Option("--hops", min=1, max=4, help="Longest relation path asked about.")] = 2,
    minutes: Annotated[float, typer.Option("--minutes", help="Training time budget.")] = 10.0,
) -> None:
    """Train the relation-path planner on questions generated from the graph itself (no question set
    needed); answer with it by setting KGLLM_PLANNER to --out."""
    from kgllm.api import connect
    from kgllm.llm.default import ensure_default_model
    from kgllm.pipelines.synergize.planner import (
        PLANNER_RUN,
        PlannerConfig,
        planning_examples,
        train_planner,
        tuned_reasoner,
    )
    from kgllm.pipelines.synergize.questions import chain_question_splits

    settings = Settings(max_hops=hops)
    session = connect(graph, store=store, use_model=False, settings=settings)
    base_dir = ensure_default_model(session.store, settings)
    train, dev = chain_question_splits(session.store, questions, hops)
    console.print(f"training on {len(train)} generated questions; choosing its weight on {len(dev)} in other phrasings")
    config = PlannerConfig(run=replace(PLANNER_RUN, max_minutes=minutes, threads=settings.threads))
    train_planner(base_dir, planning_examples(session.store, train), out, config)
    reasoner = tuned_reasoner(session.reasoner, base_dir, out, dev, threads=settings.threads)
    console.print(
        f"planner in {out} (weight {reasoner.config.lm_weight}, floor {reasoner.config.min_plan_similarity}); "
        f"use it with KGLLM_PLANNER={out}"
    )


@train_app.command("finetune")
def train_finetune(
    task: Annotated[str, typer.Option("--task", help="qa, path, tail, kg2text or text2kg.")],
    method: Annotated[
        str, typer.Option("--method", help="lora, prefix, prompt, ptuning, or full (every weight).")
    ] = "lora",
    graph: GraphOption = None,
    store: StoreOption = None,
    base: Annotated[
        Optional[Path], typer.Option("--base", help="Base model; default: the default model of the graph.")
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Adapter directory; default: <cache>/adapters/<task>.")
    ] = None,
    rank: Annotated[int, typer.Option("--rank", help="LoRA rank.")] = 8,
    alpha: Annotated[int, typer.Option("--alpha", help="LoRA alpha.")] = 16,
    dropout: Annotated[float, typer.Option("--dropout", help="LoRA dropout.")] = 0.05,
    target_modules: Annotated[
        Optional[str], typer.Option("--target-modules", help="Comma-separated layers for LoRA.")
    ] = None,
    virtual_tokens: Annotated[
        int, typer.Option("--virtual-tokens", help="Virtual tokens of prefix/prompt/P-tuning.")
    ] = 16,
    steps: StepsOption = None,
    epochs: EpochsOption = 3,
    minutes: MinutesOption = None,
    batch_size: BatchOption = 16,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 2e-3,
    grad_accum: AccumulationOption = 1,
    precision: PrecisionOption = "fp32",
    quantization: Annotated[
        Optional[str], typer.Option("--quantization", help="8bit or 4bit base weights (CUDA + kgllm[gpu]).")
    ] = None,
    device_map: Annotated[
        Optional[str], typer.Option("--device-map", help="'auto': accelerate places layers and offloads to CPU.")
    ] = None,
    grad_checkpointing: CheckpointingOption = False,
    seed: SeedOption = 0,
) -> None:
    """Fine-tune on one task built from the graph, with a PEFT adapter (or every weight with --method full)."""
    from kgllm.llm.adapters import AdapterConfig, check_method
    from kgllm.llm.default import ensure_default_model
    from kgllm.llm.tasks import build_task
    from kgllm.llm.tuning import FULL, RunConfig, finetune

    settings = Settings()
    adapter = None
    if method != FULL:
        check_method(method)
        modules: dict[str, Any] = (
            {"target_modules": [m.strip() for m in target_modules.split(",")]} if target_modules else {}
        )
        adapter = AdapterConfig(
            method=method, rank=rank, alpha=alpha, dropout=dropout, num_virtual_tokens=virtual_tokens, **modules
        )
    run = RunConfig(
        learning_rate=lr,
        batch_size=batch_size,
        gradient_accumulation=grad_accum,
        epochs=epochs,
        max_steps=steps,
        max_minutes=minutes,
        precision=precision,
        quantization=quantization,
        device_map=device_map,
        gradient_checkpointing=grad_checkpointing,
        seed=seed,
        threads=settings.threads,
        device=settings.device,
    )
    run.check_hardware()
    kg = _store(graph, store, settings)
    splits = build_task(kg, task, seed=seed)
    base_dir = base or ensure_default_model(kg, settings)
    out_dir = out or settings.cache_dir / "adapters" / task
    console.print(f"{task}: {len(splits.train)} train, {len(splits.dev)} dev, {len(splits.test)} test examples")
    result = finetune(base_dir, splits, out_dir, adapter, run)
    console.print(result.summary())
    console.print(f"saved in {out_dir}")


def list_adapters(
    directory: Annotated[
        Optional[Path], typer.Option("--dir", help="Adapter library; default: <cache>/adapters.")
    ] = None,
) -> None:
    """List the trained adapters: task, method, base model and the metrics measured when training."""
    from rich.table import Table

    from kgllm.llm.adapters import AdapterLibrary

    root = directory or Settings().cache_dir / "adapters"
    manifests = AdapterLibrary(root).manifests()
    if not manifests:
        console.print(f"no adapters in {root}; train one with `kgllm train finetune --task TASK`")
        return
    table = Table(title=f"adapters in {root}")
    for column in ("task", "method", "base model", "base fingerprint", "metrics"):
        table.add_column(column)
    for m in manifests:
        table.add_row(
            m.task, m.method, m.base_model, m.base_fingerprint, ", ".join(f"{k} {v:.3f}" for k, v in m.metrics.items())
        )
    console.print(table)
