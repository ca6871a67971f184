"""Knowledge-injection pre-training and PEFT fine-tuning, both on the transformers ``Trainer``.

The ``Trainer`` gives checkpoints (``<out_dir>/checkpoints/checkpoint-<step>``), resuming
from the last one, gradient accumulation, gradient checkpointing and mixed precision; this
module adds the graph-side data, the time budget, the evaluation (perplexity on held-out
facts, task accuracy on the dev split), the loss curve PNG and the adapter manifest.

Example::

    texts = knowledge_texts(store, hops=2)
    pretrain(texts.train, "models/injected", held_out=texts.held_out, run=RunConfig(max_steps=400))
    splits = build_task(store, "tail")
    finetune("models/injected", splits, "adapters/tail", AdapterConfig(method="lora"), RunConfig(epochs=3))
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from kgllm.exceptions import ConfigurationError, InputError, MissingDependencyError, ModelError
from kgllm.graph.base import GraphStore
from kgllm.llm import distributed
from kgllm.llm.adapters import AdapterConfig, AdapterManifest, base_fingerprint
from kgllm.llm.base import GenerationConfig
from kgllm.llm.configs import ConfigMixin, config
from kgllm.llm.corpus import CorpusBuilder
from kgllm.llm.hf import HFCausalLM
from kgllm.llm.tasks import TaskExample, TaskSplits, fact_text
from kgllm.llm.training import TrainingConfig, _build_model, train_tokenizer

if TYPE_CHECKING:
    from peft import PeftConfig

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
QUANTIZATIONS = ("8bit", "4bit")
FULL = "full"
RESULT_FILE = "tuning_result.json"


SCHEDULES = ("linear", "cosine")


@config
class RunConfig(ConfigMixin):
    """Optimisation and memory settings of one training run; checked at construction.

    The run ends after ``max_steps``, else after ``epochs`` passes over the data, or at
    ``max_minutes``, whichever comes first. The learning rate warms up linearly for
    ``warmup_steps``, then decays (``lr_schedule``) to ``min_lr_ratio`` x its peak at the end
    of the run, measured in steps or in time, whichever is further along; so a run that time
    ends still finishes its decay. Unknown keys raise ``ConfigurationError``.

    Example::

        RunConfig(learning_rate=2e-3, epochs=None, max_minutes=4, lr_schedule="cosine", min_lr_ratio=0.1)
    """

    learning_rate: float = 1e-3
    """Peak AdamW learning rate."""
    batch_size: int = 16
    """Examples per batch; under torchrun, per batch of all processes together (each takes its share)."""
    gradient_accumulation: int = 1
    """Batches whose gradients add up before each optimiser step (effective batch = batch_size x this)."""
    epochs: float | None = 3
    """Passes over the data (fractions allowed); ``None`` to stop on ``max_steps`` or ``max_minutes`` only."""
    max_steps: int | None = None
    """Optimiser steps of the run; overrides ``epochs`` when set."""
    max_minutes: float | None = None
    """Stop early (and save) once this much time has passed in this call."""
    warmup_steps: int = 20
    """Linear warmup length in optimiser steps."""
    lr_schedule: str = "linear"
    """Decay after the warmup: ``linear`` or ``cosine``."""
    min_lr_ratio: float = 0.0
    """Learning rate at the end of the run, as a share of the peak."""
    adam_beta2: float = 0.999
    """AdamW's second-moment decay (0.95 suits short from-scratch runs)."""
    weight_decay: float = 0.0
    """AdamW weight decay (not on biases and norms)."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this norm; 0 turns clipping off."""
    group_by_length: bool = False
    """Batch examples of similar length (less padding, so more examples per second on CPU): transformers'
    sampler, which sorts random groups of 50 batches longest first."""
    length_buckets: bool = False
    """Batches of examples of (nearly) one length, in random order: the least padding, and successive
    steps independent draws (no run of long-to-short batches); the from-scratch recipe."""
    precision: str = "fp32"
    """``fp32``, ``bf16`` (autocast, CPU or CUDA) or ``fp16`` (CUDA only)."""
    quantization: str | None = None
    """``8bit`` or ``4bit`` weights through bitsandbytes (CUDA and ``kgllm[gpu]`` only), for adapter training."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory (CPU and CUDA)."""
    device_map: str | None = None
    """``auto``: accelerate spreads the layers over the GPUs and offloads the rest to CPU memory."""
    save_steps: int = 100
    """A checkpoint (model, optimiser, scheduler, RNG and data position) every this many steps."""
    logging_steps: int = 5
    """Steps per point of the loss curve."""
    seed: int = 0
    """Seed of the initialisation, the batch order and dropout."""
    threads: int = 1
    """CPU threads for torch during the run (restored afterwards)."""
    device: str = "cpu"
    """Torch device: ``cpu``, ``cuda``, ``cuda:1``, ... (under torchrun each process takes its local GPU)."""
    ddp_backend: str = "auto"
    """Under torchrun (:mod:`kgllm.llm.distributed`): ``gloo``, ``nccl``, or ``auto`` (NCCL on CUDA, gloo on CPU)."""

    def __post_init__(self) -> None:
        if self.ddp_backend not in distributed.BACKENDS:
            raise ConfigurationError(
                f"unknown ddp_backend {self.ddp_backend!r}; choose one of {', '.join(distributed.BACKENDS)}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigurationError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise ConfigurationError(
                f"unknown quantization {self.quantization!r}; choose one of {', '.join(QUANTIZATIONS)}"
            )
        if self.lr_schedule not in SCHEDULES:
            raise ConfigurationError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of {', '.join(SCHEDULES)}")
        for name in ("learning_rate", "batch_size", "gradient_accumulation", "save_steps", "logging_steps", "threads"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)}")
        if self.group_by_length and self.length_buckets:
            raise ConfigurationError("choose group_by_length or length_buckets, not both")
        if self.epochs is None and self.max_steps is None and self.max_minutes is None:
            raise ConfigurationError("set epochs, max_steps or max_minutes, or training would never stop")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigurationError(f"epochs must be positive when set, got {self.epochs}")
        if self.max_grad_norm < 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ConfigurationError("max_grad_norm, weight_decay and warmup_steps cannot be negative")
        if not 0 <= self.min_lr_ratio <= 1 or not 0 < self.adam_beta2 < 1:
            raise ConfigurationError("min_lr_ratio must be in [0, 1] and adam_beta2 in (0, 1)")
        if (self.max_steps is not None and self.max_steps < 1) or (
            self.max_minutes is not None and self.max_minutes <= 0
        ):
            raise ConfigurationError("max_steps and max_minutes must be positive when set")
        try:
            torch.device(self.device)
        except RuntimeError as exc:
            raise ConfigurationError(f"invalid device {self.device!r}: {exc}") from exc

    def check_hardware(self) -> None:
        """Refuse the options this machine cannot honour, instead of silently ignoring them."""
        cuda = torch.device(self.device).type == "cuda"
        if cuda and not torch.cuda.is_available():
            raise ConfigurationError(f"device {self.device!r} requested but CUDA is not available; use device='cpu'")
        if self.precision == "fp16" and not cuda:
            raise ConfigurationError("precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
        if self.quantization:
            if not cuda:
                raise ConfigurationError(
                    f"{self.quantization} quantization needs a CUDA device (bitsandbytes); train in fp32 or bf16 on CPU"
                )
            if importlib.util.find_spec("bitsandbytes") is None:
                raise MissingDependencyError(
                    f'{self.quantization} quantization needs bitsandbytes: pip install "kgllm[gpu]"'
                )


# ---------------------------------------------------------------- data


@dataclass
class KnowledgeTexts:
    """Verbalized graph text for pre-training, and the facts held out of it for perplexity."""

    train: list[str]
    held_out: list[str]
    held_out_triples: list[Any] = field(default_factory=list)


def knowledge_texts(
    store: GraphStore, hops: int = 2, held_out: float = 0.1, seed: int = 0, passage_facts: int = 6
) -> KnowledgeTexts:
    """Facts, entity descriptions (class, aliases) and multi-fact passages from each entity's
    ``hops``-hop neighbourhood; a ``held_out`` share of the facts appears in none of them."""
    builder = CorpusBuilder(store, seed=seed)
    rng = random.Random(seed)
    triples = sorted(store.triples(), key=lambda t: (t.head, t.relation, t.tail))
    if not triples:
        raise InputError("the store holds no facts to pre-train on")
    rng.shuffle(triples)
    n_out = round(held_out * len(triples))
    hidden, kept = set(triples[:n_out]), sorted(triples[n_out:], key=lambda t: (t.head, t.relation, t.tail))
    texts = list(builder.facts(kept))  # one sentence per fact, plus classes and aliases of every entity
    for head in sorted({t.head for t in kept}):
        near = [t for t in store.subgraph([head], hops=hops, max_triples=200) if t not in hidden]
        if len(near) > 1:
            chosen = rng.sample(near, min(passage_facts, len(near)))
            texts.append(" ".join(fact_text(builder, t) + "." for t in chosen))
    rng.shuffle(texts)
    held = sorted(triples[:n_out], key=lambda t: (t.head, t.relation, t.tail))
    return KnowledgeTexts(texts, [fact_text(builder, t) + "." for t in held], held)


def _encode_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_len: int) -> list[dict[str, list[int]]]:
    """Whole texts, loss on every token (``<s>`` text ``</s>``)."""
    encoded = tokenizer(texts)["input_ids"]
    rows = [(ids + [tokenizer.eos_token_id])[:max_len] for ids in encoded]
    return [{"input_ids": ids, "labels": ids} for ids in rows]


def _encode_examples(
    tokenizer: PreTrainedTokenizerBase, examples: list[TaskExample], max_len: int
) -> list[dict[str, list[int]]]:
    """Prompt and target tokenized apart, as ``score`` does; loss on the target and ``</s>`` only."""
    prompts = tokenizer([e.prompt for e in examples])["input_ids"]
    targets = tokenizer([e.target for e in examples], add_special_tokens=False)["input_ids"]
    rows, too_long = [], 0
    for prompt, target in zip(prompts, targets, strict=True):
        target = target + [tokenizer.eos_token_id]
        if len(prompt) + len(target) > max_len:
            too_long += 1
            prompt = prompt[-max(1, max_len - len(target)) :]
        ids = (prompt + target)[:max_len]
        rows.append({"input_ids": ids, "labels": [-100] * len(prompt) + ids[len(prompt) :]})
    if too_long:
        log.warning(
            "%d of %d examples are longer than %d tokens; their prompts were cut from the left",
            too_long,
            len(rows),
            max_len,
        )
    return rows


class _Collator:
    """Right-padded batches; no attention mask is needed for a causal model with right padding."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
        return {"input_ids": input_ids, "labels": labels}


# ---------------------------------------------------------------- the run


_UNBOUNDED_STEPS = 1_000_000_000  # a run without an epoch or step limit: its time budget ends it


def lr_factor(
    step: int, max_steps: int, warmup: int, time_done: float = 0.0, schedule: str = "linear", min_ratio: float = 0.0
) -> float:
    """The learning rate of optimiser step ``step`` (from 0) as a share of the peak: a linear warmup
    over ``warmup`` steps, then a ``linear`` or ``cosine`` decay from 1 to ``min_ratio``, following
    the run's progress in steps or in time (``time_done``, 0 to 1), whichever is further along."""
    if step < warmup:
        return (step + 1) / warmup
    steps_done = (step - warmup) / max(1, max_steps - warmup)
    progress = min(1.0, max(steps_done, time_done))
    shape = 1 - progress if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * shape


class _TimeBudget(TrainerCallback):
    """Stops the run at its deadline (``max_minutes`` of this call), saving a checkpoint there when the
    run keeps checkpoints; ``fraction()``, the share of the time used, drives the learning-rate decay.
    The last stretch of steps, however short, is logged, so the loss curve reaches the end. Under
    torchrun every process reads process 0's clock, once a step, so all decay and stop together."""

    def __init__(self, minutes: float | None, save: bool = True):
        self.seconds = 60 * minutes if minutes else None
        self.save = save
        self.started = time.monotonic()
        self.shared = 0.0  # process 0's fraction at the start of this step

    def fraction(self) -> float:
        if self.seconds is None:
            return 0.0
        if distributed.world_size() > 1:
            return self.shared
        return (time.monotonic() - self.started) / self.seconds

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_step_begin(self, args, state, control, **kwargs):
        if self.seconds is not None and distributed.world_size() > 1:
            self.shared = distributed.shared_float((time.monotonic() - self.started) / self.seconds)

    def on_step_end(self, args, state, control, **kwargs):
        if self.fraction() >= 1:
            control.should_training_stop = True
            control.should_save = control.should_save or self.save
        if control.should_training_stop:
            control.should_log = True


class _Watch(TrainerCallback):
    """Fails a diverged run at once, and (with ``progress``) shows a bar in percent of the run (steps
    or time, whichever is further along) with the latest loss and tokens per second."""

    def __init__(self, budget: _TimeBudget, progress: bool):
        self.budget = budget
        self.progress = progress
        self.bar: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=100, desc="training", unit="%", leave=False)
        self.started, self.tokens = time.monotonic(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            done = max(state.global_step / max(1, state.max_steps), self.budget.fraction())
            self.bar.update(min(100, int(100 * done)) - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if not math.isfinite(loss):
            raise ModelError(f"training diverged at step {state.global_step} (loss {loss}); lower learning_rate")
        if self.bar is not None:
            rate = (state.num_input_tokens_seen - self.tokens) / max(1e-9, time.monotonic() - self.started)
            self.bar.set_postfix(step=state.global_step, loss=f"{loss:.3f}", tok_s=f"{rate:.0f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


class _LengthBuckets(torch.utils.data.Sampler):
    """Example indices batch after batch: each batch of (nearly) one length, the full batches in random
    order and the one short batch last, so the data loader's chunks of ``batch_size`` are these batches.
    The order depends on the seed and the epoch only (the Trainer sets the epoch), so a resumed run
    skips exactly the batches it had trained on."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        rng = random.Random(f"{self.seed}-{self.epoch}")
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], rng.random()))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        full = [b for b in batches if len(b) == self.batch_size]
        rng.shuffle(full)
        for batch in full + [b for b in batches if len(b) < self.batch_size]:
            yield from batch


class _Shuffled(torch.utils.data.Sampler):
    """Example indices in an order set by the seed and the epoch only: under torchrun the processes' shares
    of each batch together are the batch one process would train on."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        order = list(range(self.size))
        random.Random(f"{self.seed}-{self.epoch}").shuffle(order)
        yield from order


@dataclass
class RunStats:
    """What one run of the engine did."""

    steps: int
    seconds: float
    seconds_per_step: float
    final_loss: float
    """The last point of the loss curve."""
    losses: list[tuple[int, float]]
    """The loss curve: (step, mean loss of the steps since the previous point)."""
    tokens: int = 0
    """Tokens trained on (padding not counted)."""
    steps_per_epoch: int = 1

    def mean_loss(self, last_steps: int) -> float:
        """Mean training loss of the last ``last_steps`` steps (as far as the curve's points resolve them)."""
        total = weight = 0.0
        previous = 0
        for step, loss in self.losses:
            if step > self.steps - last_steps:
                total += loss * (step - previous)
                weight += step - previous
            previous = step
        return total / weight if weight else float("nan")


def _train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict[str, list[int]]],
    out_dir: Path,
    run: RunConfig,
    progress: bool,
    resume: bool,
    callbacks: list[TrainerCallback] | None,
    checkpoints: bool = True,
) -> RunStats:
    """The training engine of ``train_causal_lm``, ``pretrain`` and ``finetune``: the transformers
    ``Trainer`` with our time budget, learning-rate schedule, progress bar and divergence check.
    Checkpoints go to ``out_dir/checkpoints`` (none with ``checkpoints=False``); with ``resume`` the
    run continues from the last one there. They are removed when the run completes."""
    from torch.optim.lr_scheduler import LambdaLR
    from transformers import PrinterCallback, Trainer, TrainingArguments

    if not rows:
        raise InputError("no training examples")
    distributed.start(run.device, run.ddp_backend)
    processes = distributed.world_size()
    if run.batch_size % processes:
        raise ConfigurationError(f"batch_size {run.batch_size} must be a multiple of the {processes} processes")
    per_epoch = math.ceil(len(rows) / (run.batch_size * run.gradient_accumulation))
    if run.max_steps:
        max_steps = run.max_steps
    elif run.epochs is not None:
        max_steps = max(1, math.ceil(run.epochs * per_epoch))
    else:
        max_steps = _UNBOUNDED_STEPS
    cuda = torch.device(run.device).type == "cuda"
    budget = _TimeBudget(run.max_minutes, save=checkpoints)

    def schedule(step: int) -> float:
        return lr_factor(step, max_steps, run.warmup_steps, budget.fraction(), run.lr_schedule, run.min_lr_ratio)

    class _Trainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            if run.length_buckets:
                return _LengthBuckets([len(r["input_ids"]) for r in rows], run.batch_size, run.seed)
            if run.group_by_length:
                return super()._get_train_sampler(train_dataset)
            return _Shuffled(len(rows), run.seed)

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                self.lr_scheduler = LambdaLR(optimizer or self.optimizer, schedule)
                self._created_lr_scheduler = True
            return self.lr_scheduler

    # only passed when on: transformers warns of the deprecated name whenever it is given
    checkpointing: dict[str, Any] = {"gradient_checkpointing": True} if run.gradient_checkpointing else {}
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        max_steps=max_steps,
        per_device_train_batch_size=run.batch_size // processes,
        ddp_backend=distributed.backend_for(run.device, run.ddp_backend) if processes > 1 else None,
        gradient_accumulation_steps=run.gradient_accumulation,
        learning_rate=run.learning_rate,
        adam_beta2=run.adam_beta2,
        optim="adamw_torch_fused",  # one kernel for all parameters: several times faster on CPU too
        weight_decay=run.weight_decay,
        max_grad_norm=run.max_grad_norm,
        train_sampling_strategy="group_by_length" if run.group_by_length else "random",
        logging_steps=min(run.logging_steps, max_steps),
        save_strategy="steps" if checkpoints else "no",
        save_steps=run.save_steps,
        save_total_limit=2,
        report_to="none",
        use_cpu=not cuda,
        bf16=run.precision == "bf16",
        fp16=run.precision == "fp16",
        seed=run.seed,
        data_seed=run.seed,
        disable_tqdm=True,  # _Watch draws the bar: in percent of the run, which may end on time
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        **checkpointing,
    )
    trainer = _Trainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=_Collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[budget, _Watch(budget, progress), *(callbacks or [])],
    )
    trainer.remove_callback(PrinterCallback)  # the progress bar shows the loss; no dict per log step
    checkpoint = resume and checkpoints and any((out_dir / "checkpoints").glob("checkpoint-*"))
    previous = torch.get_num_threads()
    torch.set_num_threads(run.threads)
    started = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=True if checkpoint else None)
    finally:
        torch.set_num_threads(previous)
    seconds = time.perf_counter() - started
    losses = [(int(e["step"]), e["loss"]) for e in trainer.state.log_history if "loss" in e]
    steps = trainer.state.global_step
    # the run is complete: nothing left to resume. Under torchrun process 0 may still be rotating its
    # last checkpoints when another process gets here, so all wait and process 0 alone removes them.
    distributed.barrier()
    if distributed.is_main():
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    model.eval()
    return RunStats(
        steps,
        seconds,
        seconds / max(1, steps),
        losses[-1][1] if losses else float("nan"),
        losses,
        int(trainer.state.num_input_tokens_seen),
        per_epoch,
    )


def save_loss_curve(losses: list[tuple[int, float]], path: Path, title: str) -> Path:
    """The training loss by step as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot([s for s, _ in losses], [v for _, v in losses])
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# ---------------------------------------------------------------- evaluation


def perplexity(lm: HFCausalLM, texts: list[str], batch_size: int = 32) -> float:
    """exp of the mean per-token negative log-likelihood of ``texts`` (each ``<s>`` text ``</s>``)."""
    if not texts:
        raise InputError("no texts to measure perplexity on")
    rows = _encode_texts(lm.tokenizer, texts, _max_len(lm.model))
    collate = _Collator(lm._pad_id)
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = collate(rows[start : start + batch_size])
            logits = (
                lm.model(input_ids=batch["input_ids"].to(lm.device)).logits[:, -batch["input_ids"].shape[1] :].float()
            )
            targets = batch["labels"][:, 1:].to(lm.device)
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), targets, ignore_index=-100, reduction="sum"
            )
            total += float(nll)
            count += int((targets != -100).sum())
    return math.exp(total / count)


def accuracy(
    lm: HFCausalLM, examples: list[TaskExample], batch_size: int = 16, allowed: list[str] | None = None
) -> float:
    """Share of examples whose greedy continuation (up to the first newline) is a correct answer;
    with ``allowed``, decoding is constrained to those candidates."""
    if not examples:
        return float("nan")
    longest = max(len(lm.tokenizer(e.target, add_special_tokens=False)["input_ids"]) for e in examples)
    config = GenerationConfig(max_new_tokens=longest + 4, stop=("\n",))
    hits = 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        outputs = lm.generate([e.prompt for e in batch], config, allowed=allowed)
        hits += sum(e.is_correct(out[0]) for e, out in zip(batch, outputs, strict=True))
    return hits / len(examples)


def _max_len(model: PreTrainedModel) -> int:
    # a PEFT wrapper without its own config has get_base_model, which PreTrainedModel's type lacks
    config = getattr(model, "config", None) or model.get_base_model().config  # type: ignore[operator]
    positions = getattr(config, "max_position_embeddings", None)
    return positions if positions else getattr(config, "n_positions", 1024)


# ---------------------------------------------------------------- pre-training


@dataclass
class TuningResult:
    """What a pre-training or fine-tuning run produced; saved as ``tuning_result.json``."""

    kind: str
    out_dir: str
    method: str
    task: str | None
    steps: int
    seconds: float
    seconds_per_step: float
    final_loss: float
    trainable_parameters: int
    total_parameters: int
    metrics: dict[str, float]
    run: dict[str, Any]

    @property
    def trainable_percent(self) -> float:
        return 100 * self.trainable_parameters / self.total_parameters

    def save(self) -> Path:
        path = Path(self.out_dir) / RESULT_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    def summary(self) -> str:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in self.metrics.items())
        return (
            f"{self.kind} {self.method}{f' on {self.task}' if self.task else ''}: "
            f"{self.trainable_parameters:,} trainable parameters "
            f"({self.trainable_percent:.2f}% of {self.total_parameters:,}), {self.steps} steps in "
            f"{self.seconds:.0f} s, final loss {self.final_loss:.3f}" + (f", {metrics}" if metrics else "")
        )


def pretrain(
    texts: list[str],
    out_dir: str | os.PathLike[str],
    base_dir: str | os.PathLike[str] | None = None,
    model_config: TrainingConfig | None = None,
    run: RunConfig | None = None,
    held_out: list[str] | None = None,
    progress: bool = True,
    resume: bool = True,
    callbacks: list[TrainerCallback] | None = None,
) -> TuningResult:
    """Continue training ``base_dir`` on ``texts``, or (without a base) train a tokenizer and a model of
    ``model_config``'s size from scratch. Checkpoints go to ``out_dir/checkpoints``; with ``resume`` a
    run interrupted there continues from its last checkpoint. The final model, its perplexity on
    ``held_out`` and ``loss.png`` are saved in ``out_dir``.

    Only the model's shape is taken from ``model_config`` (architecture, sizes, vocabulary,
    ``max_seq_len``); the run follows ``run`` (``model_config.run_config()`` gives the default
    model's recipe). A base model keeps its own shape, so ``model_config`` with ``base_dir`` is refused.
    """
    if base_dir is not None and model_config is not None:
        raise ConfigurationError("model_config sizes a model trained from scratch; a base_dir keeps its own shape")
    run = run or RunConfig()
    run.check_hardware()
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise InputError("no non-empty pre-training texts")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    distributed.start(run.device, run.ddp_backend)
    torch.manual_seed(run.seed)
    if base_dir is None:
        model_config = model_config or TrainingConfig()
        if distributed.is_main() and not ((out_dir / "tokenizer.json").is_file() and resume):
            train_tokenizer(texts, model_config.vocab_size, out_dir)
        distributed.barrier()  # under torchrun: process 0 wrote the tokenizer every process loads
        tokenizer = _load_tokenizer(out_dir)  # when resuming, the one the checkpoints were trained with
        tokenizer.model_max_length = model_config.max_seq_len
        model = _build_model(model_config, tokenizer)
    else:
        model, tokenizer = load_for_training(base_dir, run)
    total = sum(p.numel() for p in model.parameters())
    stats = _train(
        model, tokenizer, _encode_texts(tokenizer, texts, _max_len(model)), out_dir, run, progress, resume, callbacks
    )
    main = distributed.is_main()  # under torchrun, process 0 writes the model and the figures
    if main:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    lm = HFCausalLM(model, tokenizer)
    metrics = {"held_out_perplexity": perplexity(lm, held_out)} if held_out and main else {}
    if stats.losses and main:
        save_loss_curve(stats.losses, out_dir / "loss.png", f"pre-training on {len(texts)} graph texts")
    result = TuningResult(
        "pretrain",
        str(out_dir),
        "from scratch" if base_dir is None else "continued",
        None,
        stats.steps,
        stats.seconds,
        stats.seconds_per_step,
        stats.final_loss,
        total,
        total,
        metrics,
        run.to_dict(),
    )
    if main:
        result.save()
    return result


def _load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory, local_files_only=True)


def load_for_training(
    model_dir: str | os.PathLike[str], run: RunConfig
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A local model and its tokenizer, loaded as ``run`` asks (quantized, placed by accelerate, ...)."""
    directory = Path(model_dir)
    if not (directory / "config.json").is_file():
        raise ModelError(f"no model at {directory} (config.json missing)")
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if run.quantization:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=run.quantization == "8bit", load_in_4bit=run.quantization == "4bit"
        )
    if run.device_map:
        kwargs["device_map"] = run.device_map
    try:
        tokenizer = _load_tokenizer(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, **kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, safetensors errors, ...
        raise ModelError(f"cannot load a causal LM from {directory}: {exc}") from exc
    if not run.device_map:
        # transformers types PreTrainedModel.to through a decorator wrapper that drops its signature
        model.to(run.device)  # type: ignore[arg-type]
    if run.quantization:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=run.gradient_checkpointing)
    return model, tokenizer


# ---------------------------------------------------------------- fine-tuning


_PEFT_METHODS = {"LORA": "lora", "PREFIX_TUNING": "prefix", "PROMPT_TUNING": "prompt", "P_TUNING": "ptuning"}


def _adapter_spec(adapter: Any) -> tuple[Any, str, dict[str, Any]]:
    """The peft config to train, kgllm's name of its method and the settings the manifest records."""
    if isinstance(adapter, AdapterConfig):
        return adapter.peft_config(), adapter.method, adapter.to_dict()
    from peft import PeftConfig

    if not isinstance(adapter, PeftConfig):
        raise ConfigurationError(
            f"adapter must be an AdapterConfig, a peft PeftConfig or None (full fine-tuning), got {adapter!r}"
        )
    kind = getattr(adapter.peft_type, "value", adapter.peft_type)
    method = _PEFT_METHODS.get(str(kind))
    if method is None:
        raise ConfigurationError(
            f"finetune trains peft's LoraConfig, PrefixTuningConfig, PromptTuningConfig and PromptEncoderConfig "
            f"(the methods AdaptedLM loads), got {type(adapter).__name__}"
        )
    if adapter.task_type is None:
        adapter = copy.deepcopy(adapter)
        adapter.task_type = "CAUSAL_LM"
    elif adapter.task_type != "CAUSAL_LM":
        raise ConfigurationError(f"the adapter's task_type must be CAUSAL_LM, got {adapter.task_type}")
    return adapter, method, json.loads(json.dumps(adapter.to_dict(), default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return getattr(value, "value", str(value))


def finetune(
    base_dir: str | os.PathLike[str],
    splits: TaskSplits,
    out_dir: str | os.PathLike[str],
    adapter: AdapterConfig | PeftConfig | None = None,
    run: RunConfig | None = None,
    progress: bool = True,
    resume: bool = False,
    callbacks: list[TrainerCallback] | None = None,
) -> TuningResult:
    """Train ``adapter`` (a PEFT method over the frozen base) or, with ``adapter=None``, every weight
    (full fine-tuning) on ``splits.train``; measure accuracy on ``splits.dev`` and save the adapter
    alone with its manifest (or the whole model) in ``out_dir``.

    ``adapter`` is an :class:`AdapterConfig` or a peft config of the same four methods (``LoraConfig``,
    ``PrefixTuningConfig``, ``PromptTuningConfig``, ``PromptEncoderConfig``), for settings
    ``AdapterConfig`` does not carry; its ``task_type`` is ``CAUSAL_LM`` (set when left empty).

    Example::

        finetune("models/base", build_task(store, "tail"), "adapters/tail",
                 LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), RunConfig(epochs=3))
    """
    run = run or RunConfig()
    run.check_hardware()
    if adapter is None and run.quantization:
        raise ConfigurationError("quantized weights cannot be trained in full; use an adapter method")
    spec = _adapter_spec(adapter) if adapter is not None else None
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    torch.manual_seed(run.seed)
    model, tokenizer = load_for_training(base_dir, run)
    if spec is not None:
        from peft import get_peft_model

        model = get_peft_model(model, spec[0])
        if run.gradient_checkpointing:
            model.enable_input_require_grads()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    virtual = spec[0].num_virtual_tokens if spec and spec[0].is_prompt_learning else 0
    rows = _encode_examples(tokenizer, splits.train, _max_len(model) - virtual)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = _train(model, tokenizer, rows, out_dir, run, progress, resume, callbacks)
    metrics = {"dev_accuracy": accuracy(HFCausalLM(model, tokenizer), splits.dev)} if splits.dev else {}
    method = spec[1] if spec else FULL
    model.save_pretrained(out_dir)
    if spec is None:
        tokenizer.save_pretrained(out_dir)
    else:
        AdapterManifest(
            splits.task,
            method,
            base_dir.resolve().name,
            base_fingerprint(base_dir),
            spec[2],
            {**metrics, "final_loss": stats.final_loss},
        ).save(out_dir)
    if stats.losses:
        save_loss_curve(stats.losses, out_dir / "loss.png", f"{method} on {splits.task}")
    result = TuningResult(
        "finetune",
        str(out_dir),
        method,
        splits.task,
        stats.steps,
        stats.seconds,
        stats.seconds_per_step,
        stats.final_loss,
        trainable,
        total,
        metrics,
        run.to_dict(),
    )
    result.save()
    return result
