"""The trained relation-path planner: a LoRA adapter over the graph's base model.

Training examples are ``plan_prompt(question) + path_text(gold path)``, exactly the
text the reasoner scores for a plan, so the adapter learns to rank plans::

    examples = planning_examples(store, Path("PQ-2H.train.txt").read_text().splitlines())
    train_planner(base_dir, examples, out_dir, PlannerConfig(max_minutes=3))
    reasoner = PathReasoner(store, retriever, lm=load_planner(base_dir, out_dir))

Each path ends with the tokenizer's end-of-sequence token, in training and in scoring,
so a plan that stops early (a prefix of the gold path) is not as likely as the gold one.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kgllm.exceptions import ParseError
from kgllm.graph.base import GraphStore
from kgllm.graph.rdflib_store import to_iri
from kgllm.llm.corpus import path_text, plan_prompt
from kgllm.llm.hf import HFCausalLM

log = logging.getLogger(__name__)

END = "#<end>#"


@dataclass
class PlannerConfig:
    """LoRA and training settings of the planner."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    learning_rate: float = 2e-3
    batch_size: int = 16
    epochs: float = 8
    max_minutes: float = 3.0
    threads: int = 2
    seed: int = 0


def planning_examples(store: GraphStore, lines: Iterable[str]) -> list[str]:
    """``plan_prompt(question) + path_text(...)`` of each PathQuestion line's gold path."""
    examples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 3 or END not in parts[2]:
            raise ParseError("expected question<TAB>answer(a/)<TAB>subject#relation#...#<end>#answer", line=number)
        examples.append(plan_prompt(parts[0]) + gold_path_text(store, parts[2]))
    return examples


def gold_path_text(store: GraphStore, path: str) -> str:
    """``subject#r1#e1#r2#e2#<end>#e2`` as the reasoner's plan text: relation labels, each step
    forward unless only the reverse fact is in the store, and the first class of each node reached."""
    names = path.split(END)[0].split("#")
    nodes = [str(to_iri(n)) for n in names[0::2]]
    relations = [str(to_iri(r)) for r in names[1::2]]
    forward = [_is_forward(store, h, r, t) for h, r, t in zip(nodes, relations, nodes[1:])]
    classes = []
    for node in nodes[1:]:
        entity = store.entity(node)
        classes.append(store.label(entity.types[0]) if entity and entity.types else None)
    return path_text([store.label(r) for r in relations], forward, classes)


def _is_forward(store: GraphStore, head: str, relation: str, tail: str) -> bool:
    return any(True for _ in store.triples(head, relation, tail)) or not any(True for _ in store.triples(tail, relation, head))


class PlannerLM(HFCausalLM):
    """Base model with the planner adapter; scores each candidate with the end token appended."""

    name = "planner"

    def _score(self, prompt: str, candidates: list[str], normalize: bool) -> list[float]:
        return super()._score(prompt, [c + self.tokenizer.eos_token for c in candidates], normalize)


def load_planner(base_dir: str | Path, adapter_dir: str | Path, threads: int | None = None) -> PlannerLM:
    """The base model with the adapter merged into its weights (same scores, faster than unmerged)."""
    from peft import PeftModel

    base = HFCausalLM.from_pretrained(base_dir, threads=threads)
    model = PeftModel.from_pretrained(base.model, str(adapter_dir)).merge_and_unload()
    lm = PlannerLM(model.eval(), base.tokenizer)
    lm.name = f"{Path(base_dir).name}+{Path(adapter_dir).name}"
    return lm


def train_planner(base_dir: str | Path, examples: list[str], out_dir: str | Path,
                  config: PlannerConfig | None = None, progress: bool = True) -> dict[str, float]:
    """Train a LoRA adapter over the frozen base model on ``examples`` (loss on the path only)
    and save the adapter alone in ``out_dir``; returns steps, seconds, loss and trainable share."""
    from peft import LoraConfig, get_peft_model

    config = config or PlannerConfig()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    base = HFCausalLM.from_pretrained(base_dir)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(base.model, lora)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("planner: %d examples, %s trainable parameters (%.2f%% of %s)", len(examples), f"{trainable:,}",
             100 * trainable / total, f"{total:,}")
    encoded = [_encode(base.tokenizer, text) for text in examples]
    stats = _train(model, encoded, base._pad_id, config, progress)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    return {**stats, "trainable_parameters": trainable, "trainable_percent": 100 * trainable / total}


def _encode(tokenizer, text: str) -> tuple[list[int], int]:
    """Ids of prompt and path tokenized apart, as scoring does, and where the path starts."""
    prompt, path = text.split("\nPath:", 1)
    prompt_ids = tokenizer(prompt + "\nPath:")["input_ids"]
    path_ids = tokenizer(path + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return prompt_ids + path_ids, len(prompt_ids)


def _batch(examples: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (ids, start) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, start : len(ids)] = torch.tensor(ids[start:])
    return input_ids, labels


def _train(model, examples: list[tuple[list[int], int]], pad_id: int, config: PlannerConfig,
           progress: bool) -> dict[str, float]:
    """AdamW with a short warm-up, then a linear decay to zero at the end of the epochs or of the time budget."""
    rng = random.Random(config.seed)
    per_epoch = -(-len(examples) // config.batch_size)
    total = max(1, int(config.epochs * per_epoch))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    model.train()
    started, step, loss = time.perf_counter(), 0, torch.tensor(float("nan"))
    bar = tqdm(total=total, desc="training planner", unit="step", disable=not progress, leave=False)
    while (done := max(step / total, (time.perf_counter() - started) / (60 * config.max_minutes))) < 1:
        if step % per_epoch == 0:
            order = rng.sample(range(len(examples)), len(examples))
        first = (step % per_epoch) * config.batch_size
        input_ids, labels = _batch([examples[j] for j in order[first : first + config.batch_size]], pad_id)
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * min(1.0, (step + 1) / 20) * (1 - done)
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    seconds = time.perf_counter() - started
    log.info("planner trained: %d steps in %.0f s, last loss %.3f", step, seconds, loss.item())
    return {"steps": step, "seconds": seconds, "loss": float(loss.item())}
