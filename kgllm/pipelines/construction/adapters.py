"""The models behind construction and KG-to-text: a base model and one adapter per task.

Without a training file they are the ones kgllm ships (:mod:`~kgllm.pipelines.construction.shipped`).
With one, the base is ``settings.model`` (any local Hugging Face causal LM a user points at) or
kgllm's own small model pre-trained on the training file's texts. Each task (``extract``,
``verbalize``) is a LoRA adapter trained by the core module's :func:`~kgllm.llm.tuning.finetune`
and cached under ``<cache>/adapters/<task>-<hash>``, where the hash covers the base, the
training data and the configuration, so the same data trains once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from kgllm.cache import cached_artifact
from kgllm.exceptions import ConfigurationError, ModelError
from kgllm.llm.adapters import AdapterConfig
from kgllm.llm.tasks import TaskExample, TaskSplits
from kgllm.llm.training import TrainingConfig
from kgllm.llm.tuning import RESULT_FILE, RunConfig, TuningResult, finetune, pretrain
from kgllm.settings import Settings

log = logging.getLogger(__name__)

BASE_MODEL = TrainingConfig(hidden_size=256, num_layers=4, num_heads=4, vocab_size=4096, max_seq_len=256)
BASE_RUN = RunConfig(learning_rate=2e-3, batch_size=32, epochs=4, max_minutes=15.0, warmup_steps=100, save_steps=500)


@dataclass(frozen=True)
class TaskTraining:
    """The adapter of a task and the run that trains it."""

    adapter: AdapterConfig
    run: RunConfig

    def key(self) -> dict:
        """What the trained adapter depends on (the thread count changes speed, not the result)."""
        return {"adapter": asdict(self.adapter), "run": {**asdict(self.run), "threads": None}}


def base_model_dir(settings: Settings, train_path: str | Path, progress: bool = True) -> Path:
    """``settings.model`` when set, else kgllm's small model pre-trained (once, cached) on the
    texts of the WebNLG file ``train_path``."""
    if settings.model is not None:
        if not (Path(settings.model) / "config.json").is_file():
            raise ModelError(f"{settings.model}: not a Hugging Face model directory (no config.json)")
        return Path(settings.model)
    from kgllm.datasets.webnlg import file_digest, pretraining_texts

    key = json.dumps(
        [file_digest(train_path), asdict(BASE_MODEL), {**asdict(BASE_RUN), "threads": None}], sort_keys=True
    )
    out_dir = settings.cache_dir / "models" / f"text-lm-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def build(staging: Path) -> None:
        corpus = pretraining_texts(train_path)
        log.warning(
            "pre-training the base model on %d texts of %s (at most %.0f min); cached in %s",
            len(corpus),
            Path(train_path).name,
            BASE_RUN.max_minutes,
            out_dir,
        )
        run = RunConfig(**{**asdict(BASE_RUN), "threads": settings.threads})
        pretrain(corpus, staging, model_config=BASE_MODEL, run=run, progress=progress)

    return cached_artifact(out_dir, build, marker=RESULT_FILE)


def ensure_adapter(
    task: str,
    base_dir: Path,
    make_examples: Callable[[], list[TaskExample]],
    data_digest: str,
    training: TaskTraining,
    settings: Settings,
    progress: bool = True,
) -> Path:
    """The cached ``task`` adapter for (base model, data, training); trained first when missing."""
    key = json.dumps([str(Path(base_dir).resolve()), data_digest, training.key()], sort_keys=True)
    out_dir = settings.cache_dir / "adapters" / f"{task}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def build(staging: Path) -> None:  # a cut run never looks finished: it trains beside out_dir
        examples = make_examples()
        log.warning(
            "training the %s adapter on %d examples (at most %.1f min); cached in %s",
            task,
            len(examples),
            training.run.max_minutes or float("inf"),
            out_dir,
        )
        run = RunConfig(**{**asdict(training.run), "threads": settings.threads})
        finetune(base_dir, TaskSplits(task, examples, [], []), staging, training.adapter, run, progress=progress)

    return cached_artifact(out_dir, build, marker=RESULT_FILE)


def trained_adapter(
    task: str,
    train_path: str | Path,
    make_examples: Callable[[Path], list[TaskExample]],
    training: TaskTraining,
    settings: Settings,
    progress: bool = True,
) -> tuple[Path, Path]:
    """(base model dir, adapter dir) of the ``task`` adapter trained on ``make_examples(train_path)`` (cached)."""
    from kgllm.datasets.webnlg import file_digest

    base = base_model_dir(settings, train_path, progress)
    adapter = ensure_adapter(
        task, base, lambda: make_examples(Path(train_path)), file_digest(train_path), training, settings, progress
    )
    return base, adapter


def task_model(
    task: str,
    train_path: str | Path | None,
    make_examples: Callable[[Path], list[TaskExample]],
    training: TaskTraining,
    settings: Settings,
    progress: bool = True,
) -> tuple[Path, Path]:
    """(base model dir, adapter dir) of ``task``: trained on ``train_path`` (cached) when given, else
    the shipped ones, checked against their manifest."""
    if train_path is not None:
        return trained_adapter(task, train_path, make_examples, training, settings, progress)
    if settings.model is not None:
        raise ConfigurationError(
            f"the shipped {task} adapter fits kgllm's own base, not {settings.model}: train one on it "
            "with --train FILE or KGLLM_CONSTRUCTION_DATA (WebNLG-style JSON lines)"
        )
    from kgllm.pipelines.construction.shipped import shipped_models

    shipped = shipped_models()
    return shipped.base, getattr(shipped, task)


def known_relations(train_path: str | Path | None) -> list[str]:
    """The relations of the training file (``None``: of the file the shipped models were trained on)."""
    if train_path is None:
        from kgllm.pipelines.construction.shipped import shipped_models

        return list(shipped_models().relations)
    from kgllm.datasets.webnlg import read_webnlg, relation_vocabulary

    return relation_vocabulary(read_webnlg(train_path))


def training_record(adapter_dir: Path) -> TuningResult:
    """What training the adapter measured: steps, seconds, loss, trainable parameters."""
    return TuningResult(**json.loads((Path(adapter_dir) / RESULT_FILE).read_text(encoding="utf-8")))
