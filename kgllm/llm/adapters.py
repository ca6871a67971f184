"""PEFT adapters per task over one frozen base model: configure, save with a manifest, list, load, switch, merge.

An adapter folder holds peft's own files (``adapter_config.json``, ``adapter_model.safetensors``)
and ``kgllm_adapter.json``: the base model's name and fingerprint, the method, the task and the
metrics measured when it was trained. Loading refuses an adapter trained on another base.

Example::

    lm = AdaptedLM.from_pretrained("models/countries", library="adapters")
    lm.use("qa").generate("Facts: ...\\nQuestion: Where is Kenya?\\nAnswer:")
    lm.use("tail").score("Kenya | located in |", [" Eastern Africa", " Europe"])

    extract = load_adapted("models/base", "adapters/extract")      # a pipeline's task model
    verbalize = load_adapted("models/base", "adapters/verbalize")  # same base weights, its own adapter

Prefix tuning, prompt tuning and P-tuning add virtual tokens in front of every forward
pass (peft replaces any cache given to a prefix-tuned model), so the cached two-pass
``score`` of :class:`HFCausalLM` would score candidates without their prompt;
:class:`AdaptedLM` scores those methods with one full pass per candidate.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from kgllm.exceptions import ConfigurationError, ModelError
from kgllm.llm.base import Constraint, Generation, GenerationConfig
from kgllm.llm.configs import ConfigMixin, config
from kgllm.llm.hf import HFCausalLM

log = logging.getLogger(__name__)

METHODS = ("lora", "prefix", "prompt", "ptuning")
MANIFEST = "kgllm_adapter.json"
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigurationError(f"unknown adapter method {method!r}; choose one of {', '.join(METHODS)}")
    return method


@config
class AdapterConfig(ConfigMixin):
    """One PEFT method and its settings; only the fields of the chosen method are used.

    Checked at construction; unknown keys raise ``ConfigurationError``. For settings not here,
    :func:`~kgllm.llm.tuning.finetune` also takes a peft config of the same four methods.

    Example::

        AdapterConfig(method="lora", rank=16, alpha=32, target_modules=["q_proj", "v_proj"])
    """

    method: str = "lora"
    """``lora``, ``prefix`` (prefix tuning), ``prompt`` (prompt tuning) or ``ptuning`` (P-tuning)."""
    rank: int = 8
    """LoRA rank r."""
    alpha: int = 16
    """LoRA scaling alpha (the update is scaled by alpha / r)."""
    dropout: float = 0.05
    """LoRA dropout."""
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LINEAR))
    """Linear layers LoRA adapts (the Llama names by default)."""
    num_virtual_tokens: int = 16
    """Virtual tokens of prefix, prompt and P-tuning."""
    encoder_hidden_size: int = 128
    """Width of P-tuning's prompt encoder (an MLP)."""

    def __post_init__(self) -> None:
        check_method(self.method)
        if self.rank < 1 or self.alpha <= 0 or self.num_virtual_tokens < 1 or self.encoder_hidden_size < 1:
            raise ConfigurationError("rank, alpha, num_virtual_tokens and encoder_hidden_size must be positive")
        if not 0 <= self.dropout < 1:
            raise ConfigurationError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.method == "lora" and not self.target_modules:
            raise ConfigurationError("LoRA needs at least one target module")

    @property
    def prompt_learning(self) -> bool:
        return self.method != "lora"

    def peft_config(self):
        """The matching peft config object."""
        from peft import LoraConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig

        if self.method == "lora":
            return LoraConfig(
                r=self.rank,
                lora_alpha=self.alpha,
                lora_dropout=self.dropout,
                target_modules=list(self.target_modules),
                task_type="CAUSAL_LM",
            )
        virtual = {"num_virtual_tokens": self.num_virtual_tokens, "task_type": "CAUSAL_LM"}
        if self.method == "prefix":
            return PrefixTuningConfig(**virtual)
        if self.method == "prompt":
            return PromptTuningConfig(**virtual)
        return PromptEncoderConfig(encoder_hidden_size=self.encoder_hidden_size, **virtual)


def base_fingerprint(base_dir: str | os.PathLike[str]) -> str:
    """A short hash of a model directory's config and weight files: names the exact base an adapter needs."""
    directory = Path(base_dir)
    files = sorted(p for p in directory.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".bin"))
    if not files:
        raise ModelError(f"no model files in {directory}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


@dataclass
class AdapterManifest:
    """What ``kgllm_adapter.json`` records about an adapter."""

    task: str
    method: str
    base_model: str
    base_fingerprint: str
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory) / MANIFEST
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> AdapterManifest:
        """Read and check an adapter folder; a missing or corrupt file raises ``ModelError`` naming it."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ModelError(f"no adapter at {directory}")
        for name in (MANIFEST, "adapter_config.json"):
            if not (directory / name).is_file():
                raise ModelError(f"{directory / name} is missing: not a kgllm adapter folder")
        if not any((directory / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
            raise ModelError(f"{directory / 'adapter_model.safetensors'} is missing: the adapter has no weights")
        path = directory / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            manifest = cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{path} is corrupt: {exc}") from exc
        check_method(manifest.method)
        return manifest


class AdapterLibrary:
    """A folder of adapters, one sub-folder per task (``<root>/<task>``)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def path(self, task: str) -> Path:
        return self.root / task

    def manifests(self) -> list[AdapterManifest]:
        """Every adapter in the library, by task; folders that are not adapters are skipped."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in sorted(p for p in self.root.iterdir() if (p / MANIFEST).is_file()):
            try:
                found.append(AdapterManifest.load(folder))
            except ModelError as exc:
                log.warning("skipping %s", exc)
        return found


class _SharedBase:
    """What every handle on one base model shares: the frozen base module, its tokenizer, the peft
    wrappers (one per method), the loaded adapters, and the lock held around each forward pass."""

    def __init__(self, base: HFCausalLM, base_dir: str | os.PathLike[str], library: AdapterLibrary | None):
        self.base = base
        self.base_dir = Path(base_dir)
        self.fingerprint = base_fingerprint(base_dir)
        self.library = library
        self.num_parameters = base.model.num_parameters()  # counted before peft adds layers to it
        self.wrappers: dict[str, Any] = {}  # method -> PeftModel
        self.loaded: dict[str, AdapterManifest] = {}  # adapter name -> manifest
        self.lock = threading.RLock()


class AdaptedLM(HFCausalLM):
    """One frozen base model with task adapters loaded on demand, kept, and switched per task.

    ``use(task)`` loads the task's adapter from the library the first time and makes it the
    active one; ``use(None)`` runs the bare base model. :func:`load_adapted` gives each task model
    its own handle on one shared base (an extractor and a verbalizer hold one copy of it); each
    call switches the wrappers to its handle's adapter under a lock.
    peft cannot hold LoRA and prompt-learning adapters in one wrapper, so each method gets its own
    wrapper over the same base module, and LoRA layers are switched off while a prompt-learning
    adapter runs.
    """

    name = "adapted"

    def __init__(
        self,
        base: HFCausalLM,
        base_dir: str | os.PathLike[str],
        library: AdapterLibrary | None = None,
        *,
        complete_candidates: bool = False,
    ):
        self._attach(_SharedBase(base, base_dir, library), complete_candidates)

    def _attach(self, shared: _SharedBase, complete_candidates: bool) -> None:
        base = shared.base
        HFCausalLM.__init__(
            self,
            base.model,
            base.tokenizer,
            score_batch_size=base.score_batch_size,
            complete_candidates=complete_candidates,
        )
        self._shared = shared
        self.name = base.name
        self.active: str | None = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        device: str = "cpu",
        dtype: str | torch.dtype | None = None,
        threads: int | None = None,
        *,
        library: str | os.PathLike[str] | None = None,
        complete_candidates: bool = False,
        **kwargs,
    ) -> AdaptedLM:
        """The base model in ``path`` (frozen), with adapters to come from ``library`` when given;
        ``device``, ``dtype``, ``threads`` and other keyword arguments go to :meth:`HFCausalLM.from_pretrained`."""
        base = HFCausalLM.from_pretrained(path, device=device, dtype=dtype, threads=threads, **kwargs)
        for parameter in base.model.parameters():
            parameter.requires_grad_(False)
        adapters = AdapterLibrary(library) if library is not None else None
        return cls(base, path, adapters, complete_candidates=complete_candidates)

    @property
    def base_model(self):
        """The frozen base module every adapter runs over."""
        return self._shared.base.model

    @property
    def base_dir(self) -> Path:
        return self._shared.base_dir

    @property
    def base_fingerprint(self) -> str:
        return self._shared.fingerprint

    @property
    def library(self) -> AdapterLibrary | None:
        return self._shared.library

    def load(self, directory: str | os.PathLike[str], name: str | None = None) -> str:
        """Load the adapter in ``directory`` under ``name`` (default: its task); returns the name."""
        from peft import PeftModel

        manifest = AdapterManifest.load(directory)
        if manifest.base_fingerprint != self.base_fingerprint:
            raise ModelError(
                f"{directory} was trained on base model {manifest.base_model} ({manifest.base_fingerprint}), "
                f"not on {self.base_dir.name} ({self.base_fingerprint})"
            )
        name = name or manifest.task
        shared = self._shared
        with shared.lock:
            if name in shared.loaded:
                return name
            wrapper = shared.wrappers.get(manifest.method)
            try:
                if wrapper is None:
                    with self._lora_off(manifest.method):
                        wrapper = PeftModel.from_pretrained(self.base_model, str(directory), adapter_name=name)
                    shared.wrappers[manifest.method] = wrapper.eval()
                else:
                    wrapper.load_adapter(str(directory), adapter_name=name)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise ModelError(f"cannot load the adapter in {directory}: {exc}") from exc
            wrapper.requires_grad_(False)  # served, not trained
            shared.loaded[name] = manifest
        log.info("loaded %s adapter %r from %s", manifest.method, name, directory)
        return name

    def use(self, task: str | None) -> AdaptedLM:
        """Make ``task``'s adapter active, loading it from the library once; ``None`` for the bare base."""
        if task is None:
            self.active, self.model = None, self.base_model
            return self
        if task not in self._shared.loaded:
            if self.library is None:
                raise ConfigurationError(f"adapter {task!r} is not loaded and no adapter library was given")
            self.load(self.library.path(task), task)
        self.active, self.model = task, self._shared.wrappers[self._loaded_method(task)]
        with self._shared.lock:
            self._activate()
        return self

    @property
    def loaded(self) -> dict[str, AdapterManifest]:
        return dict(self._shared.loaded)

    @property
    def num_parameters(self) -> int:
        """Parameters of the base model (adapters not counted)."""
        return self._shared.num_parameters

    def _base(self):
        return self.base_model

    def _loaded_method(self, task: str) -> str:
        return self._shared.loaded[task].method

    def _method(self) -> str | None:
        return self._loaded_method(self.active) if self.active else None

    def _activate(self) -> None:
        """Point this handle's wrapper at its adapter (another handle may have switched it)."""
        if self.active is None:
            return
        wrapper = self.model
        if wrapper.active_adapter != self.active:
            wrapper.set_adapter(self.active)
            wrapper.requires_grad_(False)  # peft's set_adapter marks the adapter trainable again

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        with self._shared.lock:
            self._activate()
            with self._lora_off(self._method()):
                yield

    @contextlib.contextmanager
    def _lora_off(self, method: str | None) -> Iterator[None]:
        """Switch LoRA layers off unless a LoRA adapter is the one meant to run."""
        lora = self._shared.wrappers.get("lora")
        if lora is None or method == "lora":
            yield
            return
        try:
            with lora.disable_adapter():
                yield
        finally:
            lora.requires_grad_(False)  # peft marks the active LoRA adapter trainable again when it re-enables it

    def _generate(
        self,
        prompts: list[str],
        config: GenerationConfig,
        allowed: list[str] | None,
        constraint: Constraint | None,
        logprobs: bool,
    ) -> list[list[Generation]]:
        if self._method() not in ("prompt", "ptuning"):
            return super()._generate(prompts, config, allowed, constraint, logprobs)
        # peft puts these virtual tokens in front of the left padding and ignores position ids, so a
        # padded row would decode as if shifted: rows of one length decode together, unpadded.
        by_length: dict[int, list[int]] = {}
        for row, ids in enumerate(self._prompt_ids(prompts)):
            by_length.setdefault(len(ids), []).append(row)
        results: list[list[Generation]] = [[] for _ in prompts]
        for rows in by_length.values():
            batch = super()._generate([prompts[r] for r in rows], config, allowed, constraint, logprobs)
            for row, generations in zip(rows, batch, strict=True):
                results[row] = generations
        return results

    def _score_batch(self, prompt_ids: list[int], candidate_ids: list[list[int]]) -> list[float]:
        if self._method() in (None, "lora"):
            return super()._score_batch(prompt_ids, candidate_ids)
        return self._score_batch_full(prompt_ids, candidate_ids)

    def _score_batch_full(self, prompt_ids: list[int], candidate_ids: list[list[int]]) -> list[float]:
        """Prompt and candidate in one right-padded pass per row: virtual tokens stay in front of both."""
        rows = [prompt_ids + ids for ids in candidate_ids]
        width = max(map(len, rows))
        input_ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        try:
            logits = self.model(input_ids=input_ids.to(self.device)).logits[:, -width:].float()
        except (RuntimeError, IndexError) as exc:
            raise ModelError(f"scoring failed: {exc}") from exc
        logp = torch.log_softmax(logits, dim=-1)
        totals = []
        start = len(prompt_ids)
        for row, ids in enumerate(candidate_ids):
            positions = torch.arange(start - 1, start - 1 + len(ids))
            totals.append(float(logp[row, positions, torch.tensor(ids)].sum()))
        return totals


def merge_adapter(
    base_dir: str | os.PathLike[str], adapter_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
) -> HFCausalLM:
    """The base model with a LoRA adapter merged into its weights (as fast as the bare base);
    saved as a standalone model in ``out_dir`` when given. Prompt-learning methods cannot merge."""
    lm = AdaptedLM.from_pretrained(base_dir)
    task = lm.load(adapter_dir)
    method = lm.loaded[task].method
    if method != "lora":
        raise ConfigurationError(
            f"only LoRA adapters can be merged into the base; {adapter_dir} is {method!r}, "
            "which adds virtual tokens at run time (load it with AdaptedLM instead)"
        )
    merged = HFCausalLM(lm._shared.wrappers["lora"].merge_and_unload().eval(), lm.tokenizer)
    merged.name = f"{lm.name}+{task}"
    if out_dir is not None:
        merged.model.save_pretrained(out_dir)
        merged.tokenizer.save_pretrained(out_dir)
    return merged


_BASES: weakref.WeakValueDictionary[tuple[str, str], _SharedBase] = weakref.WeakValueDictionary()
_BASES_LOCK = threading.Lock()


def load_adapted(
    base_dir: str | os.PathLike[str],
    adapter_dir: str | os.PathLike[str],
    *,
    threads: int | None = None,
    device: str = "cpu",
    complete_candidates: bool = False,
) -> AdaptedLM:
    """The model in ``base_dir`` with the adapter in ``adapter_dir`` active: how a pipeline loads its
    task model (extraction, verbalization, the planner).

    Every call for the same base directory and device, while an earlier result is alive, shares
    that one base in memory and adds its adapter to it (loaded once); each result keeps its own
    active adapter. ``threads`` sets torch's CPU thread count; ``complete_candidates`` scores each
    candidate followed by the end-of-sequence token (see :class:`~kgllm.llm.hf.HFCausalLM`).

    Example::

        extract = load_adapted("models/base", "adapters/extract-1a2b")
        verbalize = load_adapted("models/base", "adapters/verbalize-3c4d")  # the same base weights
    """
    if threads is not None:
        torch.set_num_threads(threads)
    key = (str(Path(base_dir).resolve()), str(torch.device(device)))
    with _BASES_LOCK:
        shared = _BASES.get(key)
        if shared is None:
            lm = AdaptedLM.from_pretrained(base_dir, device=device, complete_candidates=complete_candidates)
            _BASES[key] = lm._shared
        else:
            lm = AdaptedLM.__new__(AdaptedLM)
            lm._attach(shared, complete_candidates)
    manifest = AdapterManifest.load(adapter_dir)
    # named by task and folder, so two adapters of one task (two training runs) never clash
    folder = hashlib.sha256(str(Path(adapter_dir).resolve()).encode()).hexdigest()[:12]
    lm.use(lm.load(adapter_dir, f"{manifest.task}-{folder}"))
    lm.name = f"{lm.name}+{manifest.task}"
    return lm
