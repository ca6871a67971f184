"""Any Hugging Face causal LM in a local directory, behind the ``LanguageModel`` protocol.

Example::

    model = HFCausalLM.from_pretrained("models/countries")
    model.generate("Where is Kenya located?")              # [[" Eastern Africa"]]
    model.score("Where is Kenya located?", [" Eastern Africa", " Europe"])

Precision: ``dtype=None`` picks bf16 (or fp16 where bf16 is unsupported) on CUDA and
float32 elsewhere. Asking for bf16/fp16 explicitly on a device other than CUDA raises
``ConfigurationError``: half precision on CPU is slower than float32 and rarely intended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import cast

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from kgllm.exceptions import ConfigurationError, InputError, ModelError
from kgllm.llm.base import Constraint, Generation, GenerationConfig, LanguageModel
from kgllm.llm.constrained import TokenTrie

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


class HFCausalLM(LanguageModel):
    """A causal LM and its tokenizer, used for batched generation and candidate scoring.

    ``score`` encodes the prompt (with the tokenizer's BOS) and each candidate (without
    special tokens) separately and appends the candidate's ids, so exactly the
    candidate's own tokens are scored; give candidates their leading space
    (``" Paris"``) as they would follow the prompt in text. ``score_batch_size`` is the
    most candidates scored in one forward pass; more are scored in several passes. With
    ``complete_candidates``, each candidate is scored as a whole continuation, followed by the
    end-of-sequence token, so a candidate that stops early (a prefix of the likely one) is not as likely.
    """

    name = "hf"
    supports_constraints = True

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        score_batch_size: int = 64,
        complete_candidates: bool = False,
    ):
        if score_batch_size < 1:
            raise ConfigurationError(f"score_batch_size must be at least 1, got {score_batch_size}")
        if complete_candidates and tokenizer.eos_token is None:
            raise ConfigurationError("complete_candidates needs a tokenizer with an end-of-sequence token")
        self.model = model
        self.tokenizer = tokenizer
        self.score_batch_size = score_batch_size
        self.complete_candidates = complete_candidates
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pad_id = pad if pad is not None else 0

    @classmethod
    def from_settings(cls, settings, model: str | os.PathLike | None = None) -> HFCausalLM:
        """The local model directory ``model`` (else ``settings.model``) on the settings' device and threads."""
        path = model or settings.model
        if path is None:
            raise ConfigurationError("no model directory given: pass one, or set KGLLM_MODEL")
        return cls.from_pretrained(path, device=settings.device, threads=settings.threads)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        device: str = "cpu",
        dtype: str | torch.dtype | None = None,
        threads: int | None = None,
        **kwargs,
    ) -> HFCausalLM:
        """Load model and tokenizer from a local directory (never from the network).

        ``dtype=None`` chooses bf16/fp16 on CUDA and float32 elsewhere; an explicit
        half-precision dtype on a non-CUDA device raises ``ConfigurationError``.
        ``threads`` sets torch's CPU thread count (a process-wide setting). Extra
        keyword arguments go to the constructor. A missing or unreadable directory
        raises ``ModelError`` naming the path.
        """
        directory = Path(path)
        if not directory.is_dir():
            raise ModelError(
                f"no model directory at {directory}; train one or pass the path of a local Hugging Face model"
            )
        torch_device = _device(device)
        torch_dtype = _dtype(dtype, torch_device)
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype=torch_dtype)
        except Exception as exc:  # transformers raises OSError, ValueError, safetensors errors, ...
            raise ModelError(f"cannot load a causal LM from {directory}: {exc}") from exc
        # transformers types PreTrainedModel.to through a decorator wrapper that drops its signature
        model.to(torch_device).eval()  # type: ignore[arg-type]
        logger.info(
            "loaded %s: %s parameters, %s on %s", directory, f"{model.num_parameters():,}", torch_dtype, torch_device
        )
        lm = cls(model, tokenizer, **kwargs)
        lm.name = directory.resolve().name
        return lm

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return self.model.device

    def _prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        """Token ids of each prompt (with the tokenizer's own BOS, if it adds one); never empty."""
        start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        encoded = self.tokenizer(prompts)["input_ids"]
        if start is None and not all(encoded):
            raise InputError("empty prompt, and the tokenizer has no BOS or EOS token to start from")
        return [ids or [start] for ids in encoded]

    @property
    def num_parameters(self) -> int:
        """Parameters of the base model (adapters not counted)."""
        return self._base().num_parameters()

    @property
    def model_type(self) -> str:
        """The architecture's name in its config (``llama``, ``gpt2``, ...)."""
        return self._base().config.model_type

    def _base(self) -> PreTrainedModel:
        return self.model

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        """Held around every forward pass: where a subclass switches adapters in and out."""
        yield

    def next_token_logprobs(self, input_ids: Sequence[int]) -> torch.Tensor:
        """Log-probabilities of the next token after each prefix of ``input_ids``: row ``i`` of the
        ``(len(input_ids), vocabulary)`` float32 tensor is the distribution of token ``i + 1``.

        Example::

            ids = lm.tokenizer("The capital of Peru is Lima")["input_ids"]
            lm.next_token_logprobs(ids)[-2, ids[-1]]  # log P(" Lima" | the rest)
        """
        if not input_ids:
            raise InputError("next_token_logprobs needs at least one token")
        with self._running(), torch.inference_mode():
            try:
                logits = self.model(input_ids=torch.tensor([list(input_ids)], device=self.device)).logits[0]
            except (RuntimeError, IndexError) as exc:
                raise ModelError(f"forward pass failed: {exc}") from exc
        return torch.log_softmax(logits[-len(input_ids) :].float(), dim=-1)

    def _generate(
        self,
        prompts: list[str],
        config: GenerationConfig,
        allowed: list[str] | None,
        constraint: Constraint | None,
        logprobs: bool,
    ) -> list[list[Generation]]:
        input_ids, attention_mask = self._left_pad(self._prompt_ids(prompts))
        width = input_ids.shape[1]
        if allowed is not None:
            constraint = TokenTrie(
                self.tokenizer(allowed, add_special_tokens=False)["input_ids"], self.tokenizer.eos_token_id
            )
            config = replace(config, stop=(), max_new_tokens=max(config.max_new_tokens, constraint.longest))
        hf_config = self._hf_generation_config(config, logprobs)
        extra = {}
        if constraint is not None:
            extra["prefix_allowed_tokens_fn"] = _prefix_allowed_tokens_fn(constraint, width)
        # transformers' own stop_strings rebuilds a table over the whole vocabulary on every call;
        # decoding the few generated tokens per step is far cheaper for short answers.
        stopping = StoppingCriteriaList(
            [_StopOnStrings(self.tokenizer, config.stop, width)] if any(config.stop) else []
        )
        with self._running(), torch.inference_mode(), _seeded(config.seed, self.device):
            try:
                # a causal LM mixes in GenerationMixin, which PreTrainedModel's type lacks (so for
                # compute_transition_scores below)
                output = self.model.generate(  # type: ignore[operator]
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    generation_config=hf_config,
                    stopping_criteria=stopping,
                    **extra,
                )
                sequences = output.sequences if logprobs else output
                steps = (
                    self.model.compute_transition_scores(  # type: ignore[operator]
                        sequences, output.scores, getattr(output, "beam_indices", None), normalize_logits=True
                    ).tolist()
                    if logprobs
                    else None
                )
            except (RuntimeError, IndexError) as exc:
                raise ModelError(f"generation failed: {exc}") from exc
        generated = sequences[:, width:]
        texts = [_cut(text, config.stop) for text in self.tokenizer.batch_decode(generated, skip_special_tokens=True)]
        eos = hf_config.eos_token_id
        eos = set(eos) if isinstance(eos, list) else {eos}
        results = []
        for row, (text, ids) in enumerate(zip(texts, generated.tolist(), strict=True)):
            end = next((i + 1 for i, token in enumerate(ids) if token in eos), len(ids))
            results.append(Generation(text, tuple(ids[:end]), tuple(steps[row][:end]) if steps is not None else None))
        n = config.num_return_sequences
        return [results[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _stream(self, prompt: str, config: GenerationConfig, constraint: Constraint | None) -> Iterator[str]:
        """Generation on a thread of its own, its text handed over by transformers'
        ``TextIteratorStreamer`` as each token decodes; when the consumer stops, a stopping
        criterion ends the generation at the next token."""
        input_ids, attention_mask = self._left_pad(self._prompt_ids([prompt]))
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        consumer_gone = threading.Event()
        criteria: list[StoppingCriteria] = [_StopWhenSet(consumer_gone)]
        if any(config.stop):
            criteria.append(_StopOnStrings(self.tokenizer, config.stop, input_ids.shape[1]))
        hf_config = self._hf_generation_config(config)
        extra = {}
        if constraint is not None:
            extra["prefix_allowed_tokens_fn"] = _prefix_allowed_tokens_fn(constraint, input_ids.shape[1])
        failures: list[Exception] = []

        def run() -> None:
            try:
                with self._running(), torch.inference_mode(), _seeded(config.seed, self.device):
                    self.model.generate(  # type: ignore[operator]
                        input_ids=input_ids,
                        attention_mask=attention_mask,
                        generation_config=hf_config,
                        stopping_criteria=StoppingCriteriaList(criteria),
                        streamer=streamer,
                        **extra,
                    )
            except Exception as exc:  # handed to the consumer below, on its own thread
                failures.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, name="kgllm-stream", daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            consumer_gone.set()
            thread.join()
        if failures:
            raise ModelError(f"generation failed: {failures[0]}") from failures[0]

    def _left_pad(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, width - len(seq) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _hf_generation_config(self, config: GenerationConfig, logprobs: bool = False) -> transformers.GenerationConfig:
        """Every decoding setting explicit, so the model's own generation defaults never override ours."""
        if config.repetition_penalty <= 0 or config.top_k < 0:
            raise InputError("repetition_penalty must be positive and top_k non-negative")
        eos = self.model.generation_config.eos_token_id
        settings = {
            "max_new_tokens": config.max_new_tokens,
            "num_beams": config.num_beams,
            "num_return_sequences": config.num_return_sequences,
            "do_sample": config.do_sample,
            "repetition_penalty": config.repetition_penalty,
            "pad_token_id": self._pad_id,
            "eos_token_id": eos if eos is not None else self.tokenizer.eos_token_id,
        }
        if config.min_new_tokens:
            settings["min_new_tokens"] = config.min_new_tokens
        if config.no_repeat_ngram_size:
            settings["no_repeat_ngram_size"] = config.no_repeat_ngram_size
        if logprobs:
            settings.update(output_scores=True, return_dict_in_generate=True)
        if config.do_sample:
            settings.update(temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)
        try:
            return transformers.GenerationConfig(**settings)
        except ValueError as exc:
            raise InputError(f"invalid generation settings: {exc}") from exc

    def _score(self, prompt: str, candidates: list[str], normalize: bool) -> list[float]:
        with self._running():
            return self._score_candidates(prompt, candidates, normalize)

    def _score_candidates(self, prompt: str, candidates: list[str], normalize: bool) -> list[float]:
        if self.complete_candidates:
            candidates = [c + self.tokenizer.eos_token for c in candidates]
        prompt_ids = self._prompt_ids([prompt])[0]
        candidate_ids = self.tokenizer(candidates, add_special_tokens=False)["input_ids"]
        empty = [c for c, ids in zip(candidates, candidate_ids, strict=True) if not ids]
        if empty:
            raise InputError(f"candidates encode to no tokens: {empty[:3]}")
        size = self.score_batch_size
        totals: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(candidate_ids), size):
                totals.extend(self._score_batch(prompt_ids, candidate_ids[start : start + size]))
        if normalize:
            return [total / len(ids) for total, ids in zip(totals, candidate_ids, strict=True)]
        return totals

    def _score_batch(self, prompt_ids: list[int], candidate_ids: list[list[int]]) -> list[float]:
        """Summed log-probabilities of each candidate after the prompt.

        The prompt runs once; its key/value cache is repeated for every candidate and
        the candidates run as one right-padded batch on top of it. No attention mask is
        needed: a causal model never lets a real token attend to the padding after it.
        """
        n, width = len(candidate_ids), max(map(len, candidate_ids))
        targets = torch.full((n, width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.bool)
        for row, ids in enumerate(candidate_ids):
            targets[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = True
        targets, mask = targets.to(self.device), mask.to(self.device)
        try:
            prefix = self.model(input_ids=torch.tensor([prompt_ids], device=self.device), use_cache=True)
            logits = prefix.logits[:, -1:].expand(n, 1, -1)
            if width > 1:
                # Token j of a candidate is predicted at position j - 1, so the last one is never fed.
                cache = prefix.cache
                cache.batch_repeat_interleave(n)
                rest = self.model(input_ids=targets[:, :-1], cache=cache, use_cache=True).logits
                logits = torch.cat([logits, rest], dim=1)
        except (RuntimeError, IndexError) as exc:
            raise ModelError(f"scoring failed: {exc}") from exc
        logits = logits.float()
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        return (picked * mask).sum(-1).tolist()


class _StopOnStrings(StoppingCriteria):
    """Marks a sequence finished once its generated text contains any stop string."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: tuple[str, ...], prompt_len: int):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        hits = [any(stop in text for stop in self.stops) for text in texts]
        return cast(torch.BoolTensor, torch.tensor(hits, dtype=torch.bool, device=input_ids.device))


class _StopWhenSet(StoppingCriteria):
    """Ends generation once ``event`` is set (the consumer of a stream has gone)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        stop = torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
        return cast(torch.BoolTensor, stop)


def _prefix_allowed_tokens_fn(constraint: Constraint, prompt_len: int):
    """The callback transformers' ``generate`` asks, per row and step, for the tokens it may emit
    (its ``batch_id`` is the prompt's index, for beams and returned sequences alike)."""

    def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
        return list(constraint.prefix_allowed_tokens(batch_id, input_ids[prompt_len:].tolist()))

    return allowed


def _device(device: str) -> torch.device:
    try:
        torch_device = torch.device(device)
    except RuntimeError as exc:
        raise ConfigurationError(f"invalid device {device!r}: {exc}") from exc
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return torch_device


def _dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The torch dtype to load weights in: half precision on CUDA by default, float32 elsewhere."""
    if dtype is None or dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    resolved = _DTYPES.get(dtype.lower()) if isinstance(dtype, str) else dtype
    if resolved not in (torch.float32, torch.bfloat16, torch.float16):
        raise ConfigurationError(
            f"unsupported dtype {dtype!r}; use None (automatic), 'float32', 'bfloat16' or 'float16'"
        )
    if resolved != torch.float32 and device.type != "cuda":
        raise ConfigurationError(f"dtype {dtype!r} needs a CUDA device (got {device}); use dtype=None or 'float32'")
    return resolved


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for the block without disturbing the caller's random state."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _cut(text: str, stops: tuple[str, ...]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    end = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:end]
