"""Prompt -> target LoRA adapters over the project's base model, trained once and cached.

The extraction adapter (text -> triples) and the verbalization adapter (triples ->
text) are both trained here: the frozen base model, a LoRA adapter on every
projection, loss on the target tokens only. An adapter is cached under
``<cache>/adapters/<kind>-<hash>`` where the hash covers the base model, the
training pairs and the configuration, so the same data trains once.

These functions are the seam to a shared adapter registry: ``ensure_adapter``
and ``load_adapted`` are all the pipelines call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kgllm.exceptions import ModelError
from kgllm.llm.hf import HFCausalLM
from kgllm.settings import Settings

log = logging.getLogger(__name__)

Pair = tuple[list[int], list[int]]  # prompt ids (with BOS), target ids (ending with EOS)
TRAIN_INFO = "training.json"


@dataclass
class AdapterConfig:
    """LoRA and training settings of a prompt -> target adapter."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    learning_rate: float = 2e-3
    batch_size: int = 16
    epochs: float = 1.0
    max_minutes: float = 6.0
    max_tokens: int = 256  # longer pairs are left out of training
    threads: int = 1
    seed: int = 0


def base_model_dir(settings: Settings, train_path: str | Path, progress: bool = True) -> Path:
    """The base model the adapters sit on: ``settings.model`` (a local HF directory) or the project's own
    default model trained on the graph of the training data (its tokenizer and facts speak that domain)."""
    if settings.model is not None:
        if not (Path(settings.model) / "config.json").is_file():
            raise ModelError(f"{settings.model}: not a Hugging Face model directory (no config.json)")
        return Path(settings.model)
    from kgllm.llm.default import ensure_default_model
    from kgllm.pipelines.augment.webnlg import webnlg_graph

    return ensure_default_model(webnlg_graph(train_path), settings, progress=progress)


def ensure_adapter(kind: str, base_dir: Path, make_pairs: Callable[[], list[Pair]], data_digest: str,
                   config: AdapterConfig, settings: Settings, progress: bool = True) -> Path:
    """The cached adapter for (base model, data, config); trained first when missing."""
    digest = hashlib.sha256(json.dumps([str(Path(base_dir).resolve()), data_digest, asdict(config)],
                                       sort_keys=True).encode()).hexdigest()[:16]
    out_dir = settings.cache_dir / "adapters" / f"{kind}-{digest}"
    if (out_dir / TRAIN_INFO).is_file():
        return out_dir
    pairs = make_pairs()
    log.warning("training the %s adapter on %d examples (at most %.1f min); cached in %s",
                kind, len(pairs), config.max_minutes, out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    stats = train_adapter(base_dir, pairs, staging, config, progress=progress, desc=f"training {kind} adapter")
    (staging / TRAIN_INFO).write_text(json.dumps({"kind": kind, "base": str(base_dir), **stats,
                                                  "config": asdict(config)}, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir


def trained_adapter(kind: str, train_path: str | Path, make_pairs: Callable[..., list[Pair]], config: AdapterConfig,
                    settings: Settings, progress: bool = True) -> tuple[Path, Path]:
    """(base model dir, adapter dir) of the ``kind`` adapter trained on ``train_path`` (cached);
    ``make_pairs(tokenizer, train_path)`` builds its training examples."""
    from transformers import AutoTokenizer

    from kgllm.pipelines.augment.webnlg import file_digest

    base = base_model_dir(settings, train_path, progress)
    tokenizer = AutoTokenizer.from_pretrained(base)
    adapter = ensure_adapter(kind, base, lambda: make_pairs(tokenizer, train_path), file_digest(train_path),
                             config, settings, progress)
    return base, adapter


def training_info(adapter_dir: Path) -> dict:
    """What :func:`ensure_adapter` recorded: steps, seconds, loss, examples and config."""
    return json.loads((Path(adapter_dir) / TRAIN_INFO).read_text())


def train_adapter(base_dir: Path, pairs: list[Pair], out_dir: Path, config: AdapterConfig,
                  progress: bool = True, desc: str = "training adapter") -> dict[str, float]:
    """Train a LoRA adapter on ``pairs`` (loss on targets only) and save the adapter alone in ``out_dir``."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    examples = [(p + t, len(p)) for p, t in pairs if len(p) + len(t) <= config.max_tokens]
    if not examples:
        raise ModelError(f"no training example fits in {config.max_tokens} tokens")
    base = HFCausalLM.from_pretrained(base_dir, threads=config.threads)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(base.model, lora)
    stats = _train(model, examples, base._pad_id, config, progress, desc)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    base.tokenizer.save_pretrained(str(out_dir))
    trainable, total = model.get_nb_trainable_parameters()
    return {**stats, "examples": len(examples), "trainable_parameters": trainable, "total_parameters": total}


def load_adapted(base_dir: Path, adapter_dir: Path, threads: int | None = None) -> HFCausalLM:
    """The base model with the adapter merged into its weights, named ``base+adapter``."""
    from peft import PeftModel

    base = HFCausalLM.from_pretrained(base_dir, threads=threads)
    model = PeftModel.from_pretrained(base.model, str(adapter_dir)).merge_and_unload()
    lm = HFCausalLM(model.eval(), base.tokenizer)
    lm.name = f"{Path(base_dir).name}+{Path(adapter_dir).name}"
    return lm


def _batches(examples: list[tuple[list[int], int]], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length (less padding on CPU), in random order."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i][0]), rng.random()))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(examples: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (ids, start) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, start : len(ids)] = torch.tensor(ids[start:])
    return input_ids, labels


def _train(model, examples: list[tuple[list[int], int]], pad_id: int, config: AdapterConfig,
           progress: bool, desc: str) -> dict[str, float]:
    """AdamW, short warm-up, linear decay to zero at the end of the epochs or of the time budget."""
    rng = random.Random(config.seed)
    per_epoch = -(-len(examples) // config.batch_size)
    total = max(1, int(config.epochs * per_epoch))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    model.train()
    started, step, loss, batches = time.perf_counter(), 0, torch.tensor(float("nan")), []
    bar = tqdm(total=100, desc=desc, unit="%", disable=not progress, leave=False)
    while (done := max(step / total, (time.perf_counter() - started) / (60 * config.max_minutes))) < 1:
        if not batches:
            batches = _batches(examples, config.batch_size, rng)
        input_ids, labels = _collate([examples[j] for j in batches.pop()], pad_id)
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * min(1.0, (step + 1) / 20) * (1 - done)
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.n = int(100 * done)
        bar.set_postfix(loss=f"{loss.item():.3f}", step=step)
    bar.close()
    model.eval()
    seconds = time.perf_counter() - started
    log.info("%s: %d steps in %.0f s, last loss %.3f", desc, step, seconds, loss.item())
    return {"steps": step, "seconds": seconds, "loss": float(loss.item()), "epochs": step / per_epoch}
