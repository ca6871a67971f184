"""Batch jobs described in YAML (``pipelines/*.yaml``) and run by ``kgllm run``.

A job writes one JSON line per item as it goes and resumes where it stopped:
items already in the output are skipped, a line cut off by an interruption is
dropped, and an output written by a different job is refused rather than appended to.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from tqdm.auto import tqdm

from kgllm.exceptions import ConfigurationError, InputError


class Job(BaseModel):
    """What every job spec shares: strict fields, and a fingerprint of everything but its output."""

    model_config = ConfigDict(extra="forbid")

    def fingerprint(self) -> str:
        """Identifies what the output holds results of, so another job's output is never appended to."""
        spec = self.model_dump(mode="json", exclude={"output"})
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _registered(registry_path: str):
    """A validator that admits the names a registry knows (as a ValueError, so pydantic says which field)."""

    def check(name: str) -> str:
        module, _, attribute = registry_path.rpartition(".")
        try:
            return getattr(importlib.import_module(module), attribute).check(name)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None

    return AfterValidator(check)


StoreName = Annotated[str, _registered("kgllm.graph.stores")]
KGEModelName = Annotated[str, _registered("kgllm.pipelines.completion.kge.kge_models")]


class AskJob(Job):
    """Answer every question of a file and write the answers with their evidence."""

    job: Literal["ask"]
    questions: Path = Field(
        description="JSON lines with a 'question' (and optional 'id'), or text with one question a line."
    )
    output: Path = Field(description="JSON lines, one answer per question, written as they come.")
    graph: Path | None = Field(None, description="Graph file for the embedded store; default: the demo graph.")
    store: StoreName | None = Field(None, description="A registered store back-end; default: from the settings.")
    use_model: bool = Field(True, description="Rank plans with the language model too.")


class CompleteJob(Job):
    """Predict the missing heads or tails of queries (or of every entity and relation) and write them."""

    job: Literal["complete"]
    queries: Path | Literal["all"] = Field(
        description="TSV of 'head<TAB>relation<TAB>?' or '?<TAB>relation<TAB>tail' "
        "(ids or labels), or 'all': every (entity, relation) pair's missing tails."
    )
    output: Path = Field(description="JSON lines, one per query, written as they come.")
    graph: Path | None = Field(None, description="Graph file for the embedded store; default: the demo graph.")
    store: StoreName | None = Field(None, description="A registered store back-end; default: from the settings.")
    top_k: int = Field(10, ge=1, description="Predictions kept per query.")
    min_score: float = Field(
        0.0, ge=0, le=1, description="Predictions scored lower are neither written nor written back."
    )
    write_back: bool = Field(False, description="Add the predictions to the store, marked as predicted.")
    kge_models: list[KGEModelName] = Field(
        ["complex", "distmult"], description="Structural models tried; the best on a valid sample is kept."
    )
    kge_seconds: float = Field(
        60.0, gt=0, description="Training time budget of the structural models, shared (the result is cached)."
    )
    scorers: list[Literal["rules", "lm", "encoder"]] = Field(
        ["rules", "lm", "encoder"], description="Re-rankers fused with the structural score."
    )
    candidates: int = Field(20, ge=1, description="Structural candidates re-ranked per query.")


JOB_KINDS = {"ask": AskJob, "complete": CompleteJob}


def read_job(path: str | os.PathLike) -> AskJob | CompleteJob:
    """Parse and check a job file; paths in it are relative to the working directory."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such job file")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        kind = spec.get("job") if isinstance(spec, dict) else None
        if kind not in JOB_KINDS:
            raise ConfigurationError(f"{path}: job must be one of: {', '.join(JOB_KINDS)}; got {kind!r}")
        return JOB_KINDS[kind].model_validate(spec)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'job'}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"{path}: {problems}") from exc


def read_questions(path: Path) -> Iterator[tuple[str, str]]:
    """``(id, question)`` pairs; ids default to the line number."""
    if not path.is_file():
        raise InputError(f"{path}: no such questions file")
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                item = json.loads(line)
                yield str(item.get("id", number)), item["question"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InputError(f"{path}:{number}: expected a JSON object with a 'question'") from exc
        else:
            yield str(number), line.strip()


def run_ask_job(job: AskJob, session, progress: bool = True) -> dict[str, int]:
    """Answer the questions not yet in ``job.output``; returns counts of answered and skipped."""
    done = resume_output(job.output, job.fingerprint())
    pending = [(i, q) for i, q in read_questions(job.questions) if i not in done]
    with job.output.open("a", encoding="utf-8") as out:
        for item_id, question in tqdm(pending, desc="answering", unit="question", disable=not progress):
            record = {"id": item_id, **session.ask(question).to_dict()}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
    return {"answered": len(pending), "skipped": len(done)}


def resume_output(output: Path, fingerprint: str) -> set[str]:
    """Ids already answered in ``output``, after checking it belongs to this job and dropping a cut-off line."""
    meta = output.with_name(output.name + ".job.json")
    if output.exists() and output.stat().st_size:
        if not meta.is_file() or json.loads(meta.read_text()).get("fingerprint") != fingerprint:
            raise ConfigurationError(f"{output} holds the output of another job; choose another output or delete it")
    output.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"fingerprint": fingerprint}))
    if not output.exists():
        return set()
    text = output.read_text(encoding="utf-8")
    complete = text[: text.rfind("\n") + 1]
    if complete != text:
        output.write_text(complete, encoding="utf-8")
    return {json.loads(line)["id"] for line in complete.splitlines() if line.strip()}
