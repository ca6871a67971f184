"""Train a small causal language model from scratch on a list of short texts.

A byte-level BPE tokenizer is trained on the texts, then a Llama- or GPT-2-style
model with a plain PyTorch loop (AdamW, warmup + cosine decay, batches of
similar-length examples). The result is saved in the standard Hugging Face
layout, so ``HFCausalLM.from_pretrained(out_dir)`` and
``AutoModelForCausalLM.from_pretrained(out_dir)`` both load it.

Example::

    config = TrainingConfig(max_minutes=4)
    result = train_causal_lm(["Kenya is located in Eastern Africa.", ...], "models/countries", config)
    model = HFCausalLM.from_pretrained(result.out_dir)
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import shutil
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedModel, PreTrainedTokenizerFast

from kgllm.exceptions import ConfigurationError, InputError, ModelError

logger = logging.getLogger(__name__)

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
RESULT_FILE = "train_result.json"
_MIN_VOCAB = 256 + 4  # the byte alphabet plus the special tokens


def train_tokenizer(texts: Sequence[str], vocab_size: int, out_dir: str | os.PathLike[str]) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and save it to ``out_dir``.

    Encoding prepends ``<s>`` (like Llama tokenizers; pass ``add_special_tokens=False``
    to get the bare pieces); ``</s>``, ``<pad>`` and ``<unk>`` are the other special
    tokens. Any string can be encoded (no unknown bytes) and decodes back exactly.
    The vocabulary may come out smaller than ``vocab_size`` on a small corpus.
    """
    if vocab_size < _MIN_VOCAB:
        raise ConfigurationError(
            f"vocab_size must be at least {_MIN_VOCAB} for a byte-level tokenizer, got {vocab_size}"
        )
    if not texts:
        raise InputError("cannot train a tokenizer on an empty list of texts")
    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.save_pretrained(out_dir)
    return tokenizer


@dataclass
class TrainingConfig:
    """Settings for :func:`train_causal_lm`; values are checked at construction.

    Training stops after ``epochs`` passes over the texts or after ``max_minutes``,
    whichever comes first (at least one must be set). The learning rate warms up
    linearly for ``warmup_steps`` and then follows a cosine down to 10 % of its peak
    over the run, measured in steps or in time, whichever is further along.
    """

    architecture: Literal["llama", "gpt2"] = "llama"
    """Model family: ``"llama"`` (RMSNorm, RoPE, SwiGLU) or ``"gpt2"`` (learned positions, GELU)."""
    hidden_size: int = 256
    """Width of the residual stream."""
    num_layers: int = 4
    """Number of transformer blocks."""
    num_heads: int = 4
    """Attention heads; must divide ``hidden_size``."""
    intermediate_size: int | None = None
    """Feed-forward width; default 8/3 x hidden (rounded up to 32) for llama, 4 x hidden for gpt2."""
    max_seq_len: int = 256
    """Longest sequence in tokens (position limit of the model); longer texts are truncated."""
    vocab_size: int = 4096
    """Target BPE vocabulary size (2-4k suits corpora of a few thousand short texts)."""
    learning_rate: float = 2e-3
    """Peak AdamW learning rate."""
    batch_size: int = 32
    """Texts per optimisation step."""
    epochs: float | None = 30
    """Passes over the texts (fractions allowed); ``None`` to stop on ``max_minutes`` only."""
    max_minutes: float | None = None
    """Wall-clock training budget; ``None`` to stop on ``epochs`` only."""
    warmup_steps: int = 50
    """Linear warmup length in steps."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices (not on norms, biases or embeddings)."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold."""
    seed: int = 0
    """Seed for weight initialisation and batch order."""
    threads: int = 2
    """CPU threads for torch during training (restored afterwards)."""
    device: str = "cpu"
    """Torch device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ..."""
    bf16: bool = False
    """bf16 autocast; honoured on CUDA only, ignored with a warning elsewhere."""
    gradient_checkpointing: bool = False
    """Recompute activations to save memory; honoured on CUDA only, ignored with a warning elsewhere."""

    def __post_init__(self) -> None:
        if self.architecture not in ("llama", "gpt2"):
            raise ConfigurationError(f"architecture must be 'llama' or 'gpt2', got {self.architecture!r}")
        positive = ("hidden_size", "num_layers", "num_heads", "max_seq_len", "batch_size", "threads", "learning_rate")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ConfigurationError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        if self.intermediate_size is not None and self.intermediate_size <= 0:
            raise ConfigurationError("intermediate_size must be positive")
        if self.vocab_size < _MIN_VOCAB:
            raise ConfigurationError(f"vocab_size must be at least {_MIN_VOCAB}, got {self.vocab_size}")
        if self.epochs is None and self.max_minutes is None:
            raise ConfigurationError("set epochs, max_minutes or both, or training would never stop")
        if (self.epochs is not None and self.epochs <= 0) or (self.max_minutes is not None and self.max_minutes <= 0):
            raise ConfigurationError("epochs and max_minutes must be positive when set")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise ConfigurationError("warmup_steps and weight_decay must be >= 0 and max_grad_norm > 0")
        try:
            torch.device(self.device)
        except RuntimeError as exc:
            raise ConfigurationError(f"invalid device {self.device!r}: {exc}") from exc

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """Build from saved JSON, dropping unknown keys with a warning (files from newer versions load)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            logger.warning("ignoring unknown training config keys: %s", ", ".join(unknown))
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainResult:
    """What a training run produced; saved as ``train_result.json`` beside the model."""

    out_dir: Path
    steps: int
    epochs: float
    tokens: int
    seconds: float
    final_loss: float
    """Mean training loss over the last (up to) 50 steps."""
    tokens_per_second: float
    n_parameters: int
    n_texts: int
    config: TrainingConfig
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        return data

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the result as JSON into ``directory``; returns the file path."""
        path = Path(directory) / RESULT_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TrainResult:
        """Read the result saved beside a trained model."""
        path = Path(directory) / RESULT_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read training result {path}: {exc}") from exc
        data["out_dir"] = Path(data["out_dir"])
        data["config"] = TrainingConfig.from_dict(data["config"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def train_causal_lm(
    texts: Sequence[str],
    out_dir: str | os.PathLike[str],
    config: TrainingConfig | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train a tokenizer and a causal LM from scratch on ``texts`` and save both to ``out_dir``.

    Each text is one example (``<s>`` text ``</s>``). The model is written to a hidden
    sibling directory and renamed into place at the end, so an interrupted run never
    leaves a complete-looking ``out_dir``. An existing non-empty ``out_dir`` is replaced
    only with ``overwrite=True``.
    """
    config = config or TrainingConfig()
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise InputError("no non-empty training texts")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ModelError(f"{out_dir} exists and is not empty; pass overwrite=True to replace it")
    device = _training_device(config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        tokenizer = train_tokenizer(texts, config.vocab_size, staging)
        tokenizer.model_max_length = config.max_seq_len
        examples = _encode(texts, tokenizer, config.max_seq_len)
        torch.manual_seed(config.seed)
        model = _build_model(config, tokenizer).to(device)
        stats = _train_loop(model, examples, tokenizer.pad_token_id, config, device, progress)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        result = TrainResult(
            out_dir=out_dir,
            n_parameters=sum(p.numel() for p in model.parameters()),
            n_texts=len(texts),
            config=config,
            versions=_versions(),
            **stats,
        )
        result.save(staging)
        _move_into_place(staging, out_dir)
    finally:
        torch.set_num_threads(previous_threads)
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "trained %s parameters for %d steps in %.0f s (%.0f tokens/s, final loss %.3f) -> %s",
        f"{result.n_parameters:,}",
        result.steps,
        result.seconds,
        result.tokens_per_second,
        result.final_loss,
        out_dir,
    )
    return result


def _training_device(config: TrainingConfig) -> torch.device:
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {config.device!r} requested but CUDA is not available; use device='cpu'")
    if device.type != "cuda":
        for flag in ("bf16", "gradient_checkpointing"):
            if getattr(config, flag):
                logger.warning("%s is honoured on CUDA only; ignored on %s", flag, device)
    return device


def _encode(texts: list[str], tokenizer: PreTrainedTokenizerFast, max_len: int) -> list[list[int]]:
    """Token ids of each text with ``<s>`` before and ``</s>`` after, truncated to ``max_len``."""
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    examples = [ids[: max_len - 1] + [tokenizer.eos_token_id] for ids in encoded]
    truncated = sum(len(ids) >= max_len for ids in encoded)
    if truncated:
        logger.warning(
            "%d of %d texts are longer than max_seq_len=%d tokens and were truncated", truncated, len(texts), max_len
        )
    return examples


def _build_model(config: TrainingConfig, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vocab = len(tokenizer)
    if config.architecture == "llama":
        intermediate = config.intermediate_size or 32 * math.ceil(config.hidden_size * 8 / 3 / 32)
        model_config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=config.hidden_size,
            intermediate_size=intermediate,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_heads,
            max_position_embeddings=config.max_seq_len,
            tie_word_embeddings=True,
            **ids,
        )
    else:
        model_config = GPT2Config(
            vocab_size=vocab,
            n_embd=config.hidden_size,
            n_inner=config.intermediate_size or 4 * config.hidden_size,
            n_layer=config.num_layers,
            n_head=config.num_heads,
            n_positions=config.max_seq_len,
            tie_word_embeddings=True,
            **ids,
        )
    model = AutoModelForCausalLM.from_config(model_config, attn_implementation="sdpa", dtype=torch.float32)
    model.generation_config.update(**ids)
    return model


def _batches(examples: list[list[int]], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Indices grouped into batches of similar length (little padding), in random order."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i]), rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(
    examples: list[list[int]], batch: list[int], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids and labels (-100 on padding).

    No attention mask is needed: with right padding a causal model never lets a real
    token attend to a pad, and skipping the mask keeps the fast causal attention path.
    """
    width = max(len(examples[i]) for i in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, i in enumerate(batch):
        ids = torch.tensor(examples[i], dtype=torch.long)
        input_ids[row, : len(ids)] = ids
        labels[row, : len(ids)] = ids
    return input_ids.to(device), labels.to(device)


def _optimizer(model: PreTrainedModel, config: TrainingConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [
        p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n and "wte" not in n and "wpe" not in n
    ]
    decay_ids = {id(p) for p in decay}
    no_decay = [p for p in model.parameters() if id(p) not in decay_ids]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates all parameters at once: several times faster than the per-tensor loop on CPU too.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.95), fused=fused)


def _lr_factor(step: int, progress: float, warmup: int) -> float:
    """Linear warmup, then cosine from 1 down to 0.1 as ``progress`` goes from 0 to 1."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _epoch_batches(examples: list[list[int]], config: TrainingConfig, rng: random.Random) -> Iterator[list[int]]:
    """Batches of successive epochs, ending after ``config.epochs`` (or never)."""
    per_epoch = math.ceil(len(examples) / config.batch_size)
    limit = math.ceil(config.epochs * per_epoch) if config.epochs is not None else None
    produced = 0
    while limit is None or produced < limit:
        for batch in _batches(examples, config.batch_size, rng):
            if limit is not None and produced >= limit:
                return
            produced += 1
            yield batch


def _train_loop(
    model: PreTrainedModel,
    examples: list[list[int]],
    pad_id: int,
    config: TrainingConfig,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    on_cuda = device.type == "cuda"
    if config.gradient_checkpointing and on_cuda:
        model.gradient_checkpointing_enable()
    model.train()
    optimizer = _optimizer(model, config, device)
    rng = random.Random(config.seed)
    per_epoch = math.ceil(len(examples) / config.batch_size)
    total_steps = math.ceil(config.epochs * per_epoch) if config.epochs is not None else None
    budget = config.max_minutes * 60 if config.max_minutes is not None else None
    recent: deque[float] = deque(maxlen=50)
    steps = tokens = 0
    # Progress in percent of the run, whichever of the epoch and time limits ends it first.
    bar = tqdm(total=100, desc="training", unit="%", disable=not progress, leave=False)
    start = time.perf_counter()
    for batch in _epoch_batches(examples, config, rng):
        elapsed = time.perf_counter() - start
        if budget is not None and elapsed >= budget:
            break
        fraction = max(steps / total_steps if total_steps else 0.0, elapsed / budget if budget else 0.0)
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * _lr_factor(steps, fraction, config.warmup_steps)
        input_ids, labels = _collate(examples, batch, pad_id, device)
        recent.append(_step(model, optimizer, input_ids, labels, config, bf16=config.bf16 and on_cuda))
        steps += 1
        tokens += sum(len(examples[i]) for i in batch)
        if steps % 10 == 0:
            bar.update(int(100 * fraction) - bar.n)
            bar.set_postfix(
                step=steps,
                loss=f"{sum(recent) / len(recent):.3f}",
                tok_s=f"{tokens / (time.perf_counter() - start):.0f}",
            )
    bar.close()
    seconds = time.perf_counter() - start
    model.eval()
    return {
        "steps": steps,
        "epochs": steps / per_epoch,
        "tokens": tokens,
        "seconds": seconds,
        "final_loss": sum(recent) / len(recent) if recent else float("nan"),
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
    }


def _step(
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    config: TrainingConfig,
    bf16: bool,
) -> float:
    """One optimisation step; returns the batch loss."""
    with torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model(input_ids=input_ids, labels=labels).loss
    value = loss.item()
    if not math.isfinite(value):
        raise ModelError(f"training diverged (loss {value}); lower learning_rate")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return value


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished staging directory to ``out_dir``, replacing an old one last."""
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _versions() -> dict[str, str]:
    import tokenizers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }
