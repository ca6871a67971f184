"""The construction models that ship inside kgllm: a small base and its two LoRA adapters.

``build_models`` trains them from the WebNLG train split with :data:`RECIPE` (fixed seeds and
step counts, so a rebuild on the same file repeats the run), stores the weights as float16
(loading casts them back to float32) and writes ``MANIFEST.json``: the SHA-256 of every file and
the recipe. ``make models`` runs it into the package; :func:`shipped_models` verifies the files
against the manifest before anything loads them.

Layout of :data:`MODELS_DIR`::

    base/        config, tokenizer and weights of the base model
    extract/     the extraction adapter
    verbalize/   the verbalization adapter
    MANIFEST.json
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from kgllm.exceptions import ModelError
from kgllm.llm.adapters import AdapterConfig
from kgllm.llm.tuning import RunConfig

MODELS_DIR = Path(__file__).resolve().parents[2] / "models" / "construction"
MANIFEST = "MANIFEST.json"
TASKS = ("extract", "verbalize")
# what loading needs; training records (checkpoints, loss plots, model cards) stay out of the package
_SHIPPED_SUFFIXES = (".json", ".safetensors")


@dataclass(frozen=True)
class Recipe:
    """How the shipped models are trained: step counts rather than minutes, so the run repeats."""

    base_run: RunConfig
    extract_run: RunConfig
    verbalize_run: RunConfig
    adapter: AdapterConfig

    def run(self, part: str) -> RunConfig:
        return {"base": self.base_run, "extract": self.extract_run, "verbalize": self.verbalize_run}[part]

    def as_dict(self) -> dict:
        return {
            "base_run": asdict(self.base_run),
            "extract_run": asdict(self.extract_run),
            "verbalize_run": asdict(self.verbalize_run),
            "adapter": asdict(self.adapter),
        }


RECIPE = Recipe(
    # the first-use training's settings, its minutes turned into the steps a quiet 2-core CPU reaches
    # in them (base 15 min, extraction 37, verbalization 10): about an hour in all
    base_run=RunConfig(
        learning_rate=2e-3, batch_size=32, epochs=None, max_steps=1800, warmup_steps=100, save_steps=600
    ),
    extract_run=RunConfig(
        learning_rate=3e-3,
        batch_size=16,
        epochs=None,
        max_steps=3600,
        warmup_steps=50,
        save_steps=900,
        group_by_length=True,
    ),
    verbalize_run=RunConfig(
        learning_rate=3e-3, batch_size=16, epochs=None, max_steps=1200, warmup_steps=50, save_steps=600
    ),
    adapter=AdapterConfig(method="lora", rank=16, alpha=32),
)


def train_base(train_path: str | Path, out_dir: Path, run: RunConfig, progress: bool = True) -> None:
    """The base model of :data:`~kgllm.pipelines.construction.adapters.BASE_MODEL`'s shape, pre-trained
    from scratch on the texts of ``train_path``."""
    from kgllm.datasets.webnlg import pretraining_texts
    from kgllm.llm.tuning import pretrain
    from kgllm.pipelines.construction.adapters import BASE_MODEL

    pretrain(pretraining_texts(train_path), out_dir, model_config=BASE_MODEL, run=run, progress=progress)


def train_task_adapter(
    task: str, train_path: str | Path, base_dir: Path, out_dir: Path, run: RunConfig, progress: bool = True
) -> None:
    """The ``task`` adapter over ``base_dir``, trained on the examples of ``train_path``."""
    from kgllm.llm.tasks import TaskSplits
    from kgllm.llm.tuning import finetune
    from kgllm.pipelines.construction.extraction import extraction_examples
    from kgllm.pipelines.construction.kg2text import verbalize_examples

    examples = {"extract": extraction_examples, "verbalize": verbalize_examples}[task](train_path)
    finetune(base_dir, TaskSplits(task, examples, [], []), out_dir, RECIPE.adapter, run, progress=progress)


def build_models(train_path: str | Path, out_dir: Path = MODELS_DIR, threads: int = 1, progress: bool = True) -> Path:
    """Train the base and both adapters on ``train_path`` with :data:`RECIPE` and store them,
    half-precision and checksummed, in ``out_dir`` (replaced); returns ``out_dir``."""
    import tempfile
    from dataclasses import replace

    from kgllm.datasets.webnlg import file_digest, read_webnlg, relation_vocabulary

    with tempfile.TemporaryDirectory(prefix="kgllm-models-") as scratch:
        trained = Path(scratch)
        train_base(train_path, trained / "base", replace(RECIPE.base_run, threads=threads), progress)
        for task in TASKS:
            run = replace(RECIPE.run(task), threads=threads)
            train_task_adapter(task, train_path, trained / "base", trained / task, run, progress)
        relations = sorted(relation_vocabulary(read_webnlg(train_path)))
        source = {"train_file": Path(train_path).name, "train_sha256": file_digest(train_path)}
        package_models(trained, out_dir, relations, source)
    return out_dir


def package_models(trained: Path, out_dir: Path, relations: list[str], source: dict) -> None:
    """Copy what loading needs from the training folders in ``trained`` to ``out_dir``: weights as
    float16, the adapters' manifests re-pointed at the half-precision base, the train file's relations
    (the ones the verbalizer is trusted with) and ``MANIFEST.json``."""
    from kgllm.llm.adapters import base_fingerprint

    staging = out_dir.with_name(out_dir.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    for part in ("base", *TASKS):
        (staging / part).mkdir(parents=True)
        for path in sorted((trained / part).iterdir()):
            if path.is_file() and path.suffix in _SHIPPED_SUFFIXES:
                _copy_half(path, staging / part / path.name)
    fingerprint = base_fingerprint(staging / "base")
    for task in TASKS:
        card = staging / task / "kgllm_adapter.json"
        card.write_text(
            json.dumps({**json.loads(card.read_text(encoding="utf-8")), "base_fingerprint": fingerprint}, indent=2)
            + "\n",
            encoding="utf-8",
        )
    (staging / "relations.json").write_text(json.dumps(relations, indent=1) + "\n", encoding="utf-8")
    manifest = {
        **source,
        "recipe": RECIPE.as_dict(),
        "trained": _training_records(trained),
        "files": _checksums(staging),
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


def _training_records(trained: Path) -> dict[str, dict]:
    """Per part, the steps, minutes and final loss its run reached (from its ``tuning_result.json``)."""
    from kgllm.llm.tuning import RESULT_FILE

    records = {}
    for part in ("base", *TASKS):
        result = json.loads((trained / part / RESULT_FILE).read_text(encoding="utf-8"))
        records[part] = {
            "steps": result["steps"],
            "minutes": round(result["seconds"] / 60, 1),
            "final_loss": round(result["final_loss"], 3),
            "max_minutes": result["run"]["max_minutes"],
        }
    return records


def _copy_half(source: Path, target: Path) -> None:
    """Copy a file, storing the float32 tensors of a ``.safetensors`` file as float16."""
    if source.suffix == ".safetensors":
        import torch
        from safetensors.torch import load_file, save_file

        tensors = load_file(source)
        half = {k: v.to(torch.float16) if v.dtype == torch.float32 else v for k, v in tensors.items()}
        save_file(half, target, metadata={"format": "pt"})
    else:
        shutil.copyfile(source, target)
    target.chmod(0o644)  # safetensors writes 0600; an installed package must be readable by every user


def _checksums(directory: Path) -> dict[str, str]:
    return {
        path.relative_to(directory).as_posix(): _sha256(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShippedModels:
    """The verified model folders: the base, each adapter and the relations of the training file."""

    base: Path
    extract: Path
    verbalize: Path
    relations: tuple[str, ...]


def shipped_models(directory: Path = MODELS_DIR) -> ShippedModels:
    """The shipped models in ``directory``, after checking every file against ``MANIFEST.json``;
    a missing, changed or unlisted file raises ``ModelError`` naming it."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ModelError(
            f"{manifest_path}: the shipped construction models are missing; rebuild them with `make models`, "
            "or train your own with --train FILE"
        )
    expected = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    found = _checksums(directory)
    for name in sorted(expected.keys() | found.keys()):
        if name not in found:
            raise ModelError(f"{directory / name}: listed in {MANIFEST} but missing; rebuild with `make models`")
        if name not in expected:
            raise ModelError(f"{directory / name}: not listed in {MANIFEST}; remove it or rebuild with `make models`")
        if found[name] != expected[name]:
            raise ModelError(
                f"{directory / name}: checksum {found[name][:12]}... differs from {MANIFEST} "
                f"({expected[name][:12]}...); the file is damaged; reinstall kgllm or rebuild with `make models`"
            )
    relations = json.loads((directory / "relations.json").read_text(encoding="utf-8"))
    return ShippedModels(directory / "base", directory / "extract", directory / "verbalize", tuple(relations))


def main() -> None:
    """``python -m kgllm.pipelines.construction.shipped TRAIN_FILE [OUT_DIR]``: what ``make models`` runs."""
    import argparse

    parser = argparse.ArgumentParser(description="Build the construction models kgllm ships.")
    parser.add_argument("train", type=Path, help="the WebNLG train split (JSON lines)")
    parser.add_argument("out", type=Path, nargs="?", default=MODELS_DIR, help="where to write them")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (speed only; the result is the same)")
    args = parser.parse_args()
    print(build_models(args.train, args.out, args.threads))


if __name__ == "__main__":
    main()
