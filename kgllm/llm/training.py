"""Train a small causal language model from scratch on a list of short texts.

A byte-level BPE tokenizer is trained on the texts, then a Llama- or GPT-2-style
model on the one training engine of the package, the transformers ``Trainer`` as
:mod:`kgllm.llm.tuning` drives it (AdamW, warmup + cosine decay, batches of
similar-length examples, a time budget, checkpoints to resume from). The result is
saved in the standard Hugging Face layout, so ``HFCausalLM.from_pretrained(out_dir)``
and ``AutoModelForCausalLM.from_pretrained(out_dir)`` both load it.

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
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    TrainerCallback,
)

from kgllm.exceptions import ConfigurationError, InputError, ModelError
from kgllm.llm.configs import ConfigMixin, config

if TYPE_CHECKING:
    from kgllm.llm.tuning import RunConfig

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


@config
class TrainingConfig(ConfigMixin):
    """Settings for :func:`train_causal_lm`: the model's size and the run; checked at construction.

    Training stops after ``epochs`` passes over the texts or after ``max_minutes``,
    whichever comes first (at least one must be set). The learning rate warms up linearly for
    ``warmup_steps`` and then follows a cosine down to 10 % of its peak over the run, measured
    in steps or in time, whichever is further along. The run goes through the same engine as
    :func:`~kgllm.llm.tuning.pretrain` and :func:`~kgllm.llm.tuning.finetune`;
    :meth:`run_config` is the :class:`~kgllm.llm.tuning.RunConfig` it is given. Unknown keys
    raise ``ConfigurationError``.

    Example::

        TrainingConfig(hidden_size=128, num_layers=2, epochs=None, max_minutes=2)
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
    """Texts per optimisation step (batched with texts of similar length)."""
    epochs: float | None = 30
    """Passes over the texts (fractions allowed); ``None`` to stop on ``max_minutes`` only."""
    max_minutes: float | None = None
    """Wall-clock training budget; ``None`` to stop on ``epochs`` only."""
    warmup_steps: int = 50
    """Linear warmup length in steps."""
    weight_decay: float = 0.01
    """AdamW weight decay (not on norms and biases)."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold."""
    seed: int = 0
    """Seed for weight initialisation and batch order."""
    threads: int = 2
    """CPU threads for torch during training (restored afterwards)."""
    device: str = "cpu"
    """Torch device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ..."""
    bf16: bool = False
    """bf16 autocast (on CPU as on CUDA)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory (on CPU as on CUDA)."""
    save_steps: int = 500
    """A checkpoint every this many steps, when :func:`train_causal_lm` runs with ``resume=True``."""
    logging_steps: int = 5
    """Steps per point of the loss curve (``loss.png`` beside the model)."""

    def __post_init__(self) -> None:
        if self.architecture not in ("llama", "gpt2"):
            raise ConfigurationError(f"architecture must be 'llama' or 'gpt2', got {self.architecture!r}")
        positive = ("hidden_size", "num_layers", "num_heads", "max_seq_len", "batch_size", "threads", "learning_rate")
        for name in (*positive, "save_steps", "logging_steps"):
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

    def run_config(self) -> RunConfig:
        """The run settings the training engine gets: this config's, plus the from-scratch recipe
        (cosine decay to 10 %, AdamW beta2 0.95, batches of one length in random order)."""
        from kgllm.llm.tuning import RunConfig

        return RunConfig(
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            epochs=self.epochs,
            max_minutes=self.max_minutes,
            warmup_steps=self.warmup_steps,
            lr_schedule="cosine",
            min_lr_ratio=0.1,
            adam_beta2=0.95,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            length_buckets=True,
            precision="bf16" if self.bf16 else "fp32",
            gradient_checkpointing=self.gradient_checkpointing,
            save_steps=self.save_steps,
            logging_steps=self.logging_steps,
            seed=self.seed,
            threads=self.threads,
            device=self.device,
        )


@dataclass
class TrainResult:
    """What a training run produced; saved as ``train_result.json`` beside the model."""

    out_dir: Path
    steps: int
    epochs: float
    tokens: int
    """Tokens trained on (padding not counted)."""
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
    resume: bool = False,
    callbacks: list[TrainerCallback] | None = None,
) -> TrainResult:
    """Train a tokenizer and a causal LM from scratch on ``texts`` and save both to ``out_dir``.

    Each text is one example (``<s>`` text ``</s>``). Training runs on the engine of
    :func:`~kgllm.llm.tuning.pretrain` (the transformers ``Trainer``: time budget, progress bar,
    loss curve saved as ``loss.png``). The model is written to a hidden sibling directory and
    renamed into place at the end, so an interrupted run never leaves a complete-looking
    ``out_dir``. An existing non-empty ``out_dir`` is replaced only with ``overwrite=True``.

    With ``resume=True`` the run checkpoints every ``config.save_steps`` steps into that hidden
    directory, which an interrupted run leaves behind; the next call with ``resume=True`` (same
    texts, same config) continues from its last checkpoint. ``callbacks`` are ``TrainerCallback``s
    added to the run.
    """
    config = config or TrainingConfig()
    run = config.run_config()
    run.check_hardware()
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise InputError("no non-empty training texts")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ModelError(f"{out_dir} exists and is not empty; pass overwrite=True to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / (f".{out_dir.name}.partial" if resume else f".{out_dir.name}.partial-{os.getpid()}")
    if not resume:
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    finished = False
    try:
        if resume and (staging / "tokenizer.json").is_file():
            tokenizer = PreTrainedTokenizerFast.from_pretrained(staging)  # the one the checkpoints were trained with
        else:
            tokenizer = train_tokenizer(texts, config.vocab_size, staging)
        tokenizer.model_max_length = config.max_seq_len
        rows = _encode(texts, tokenizer, config.max_seq_len)
        torch.manual_seed(config.seed)
        model = _build_model(config, tokenizer)
        stats = _train_loop(model, tokenizer, rows, staging, run, progress, resume, callbacks)
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
        finished = True
    finally:
        torch.set_num_threads(previous_threads)
        if finished or not resume:
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


def _encode(texts: list[str], tokenizer: PreTrainedTokenizerFast, max_len: int) -> list[dict[str, list[int]]]:
    """Each text's token ids with ``<s>`` before and ``</s>`` after, truncated to ``max_len``; loss on all."""
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    examples = [ids[: max_len - 1] + [tokenizer.eos_token_id] for ids in encoded]
    truncated = sum(len(ids) >= max_len for ids in encoded)
    if truncated:
        logger.warning(
            "%d of %d texts are longer than max_seq_len=%d tokens and were truncated", truncated, len(texts), max_len
        )
    return [{"input_ids": ids, "labels": ids} for ids in examples]


def _build_model(config: TrainingConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vocab = len(tokenizer)
    model_config: PretrainedConfig
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


def _train_loop(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    rows: list[dict[str, list[int]]],
    staging: Path,
    run: RunConfig,
    progress: bool,
    resume: bool,
    callbacks: list[TrainerCallback] | None,
) -> dict[str, Any]:
    """Train ``model`` on the shared engine (checkpoints in ``staging`` only when resumable); the
    run's figures as :class:`TrainResult` records them."""
    from kgllm.llm.tuning import _train, save_loss_curve

    stats = _train(model, tokenizer, rows, staging, run, progress, resume, callbacks, checkpoints=resume)
    if stats.losses:
        save_loss_curve(stats.losses, staging / "loss.png", f"training from scratch on {len(rows)} texts")
    return {
        "steps": stats.steps,
        "epochs": stats.steps / stats.steps_per_epoch,
        "tokens": stats.tokens,
        "seconds": stats.seconds,
        "final_loss": stats.mean_loss(last_steps=50),
        "tokens_per_second": stats.tokens / stats.seconds if stats.seconds > 0 else 0.0,
    }


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
