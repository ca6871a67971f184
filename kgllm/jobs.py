"""Batch jobs described in YAML (``pipelines/*.yaml``) and run by ``kgllm run``.

A job writes one JSON line per item as it goes and resumes where it stopped
(:class:`JobOutput`):

- Every line records ``key``, a hash of the item it answers (its id and its text), so
  an item counts as done only while the input still holds it unchanged. Lines whose
  item is no longer in the input are *stale*: the job refuses to run, saying how many,
  until ``restart`` (``--restart``) drops them; the lines still current are kept.
- One job at a time writes an output: it holds ``<output>.lock`` while it runs, and a
  second job on the same output stops at once with an error.
- A line cut off by an interruption is dropped. Any other line that is not a JSON
  record (or repeats an earlier line's item) is *corrupt*: the job refuses, naming its
  line number, until ``repair`` (``--repair``) drops it. Rewrites are atomic.
- An output written by a job with other settings is refused rather than appended to
  (``restart`` starts it over).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from tqdm.auto import tqdm

from kgllm.cache import LockTimeoutError, atomic_write, file_lock, lock_path, write_text_atomic
from kgllm.exceptions import ConfigurationError, InputError, ParseError

log = logging.getLogger(__name__)


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
    review: bool = Field(
        False, description="Queue the predictions for review (the page's Review view) instead of writing them back."
    )
    kge_models: list[KGEModelName] = Field(
        ["complex", "distmult"], description="Structural models tried; the best on a valid sample is kept."
    )
    kge_seconds: float = Field(
        60.0, gt=0, description="Training time budget of the structural models, shared (the result is cached)."
    )
    kge_epochs: int = Field(
        400, ge=1, description="Most epochs per structural model: with a large time budget, a reproducible model."
    )
    scorers: list[Literal["rules", "lm", "encoder"]] = Field(
        ["rules", "lm", "encoder"], description="Re-rankers fused with the structural score."
    )
    candidates: int = Field(20, ge=1, description="Structural candidates re-ranked per query.")

    @model_validator(mode="after")
    def review_or_write_back(self) -> CompleteJob:
        if self.review and self.write_back:
            raise ValueError("--review and --write-back exclude each other: review queues what write-back would write")
        return self


JOB_KINDS: dict[str, type[AskJob] | type[CompleteJob]] = {"ask": AskJob, "complete": CompleteJob}


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


ASK_SHARD = 16  # questions per Ray task


def run_ask_job(
    job: AskJob,
    session,
    progress: bool = True,
    *,
    restart: bool = False,
    repair: bool = False,
    ray: str | None = None,
    shard_size: int = ASK_SHARD,
) -> dict[str, int]:
    """Answer the questions not yet in ``job.output``; returns counts of answered and skipped.

    ``restart`` drops answers to questions no longer in the file, ``repair`` drops corrupt
    lines (see :class:`JobOutput`); without them the job refuses to touch such an output.
    With ``ray`` (see :mod:`kgllm.cluster`) shards of ``shard_size`` questions are answered by
    the cluster's workers, each with its own session (``session`` is then unused), and written here.
    """
    from kgllm.cluster import map_shards, shards

    questions = [(item_key(i, q), i, q) for i, q in read_questions(job.questions)]
    with JobOutput(job.output, job.fingerprint(), restart=restart, repair=repair, items="questions") as output:
        done = output.resume(key for key, _, _ in questions)
        pending = list({key: (key, i, q) for key, i, q in questions if key not in done}.values())
        if ray:
            records = (r for part in map_shards(_ask_shard, shards(pending, shard_size), ray, job) for r in part)
        else:
            records = ({"id": i, **session.ask(q).to_dict(), "key": key} for key, i, q in pending)
        for record in tqdm(records, total=len(pending), desc="answering", unit="question", disable=not progress):
            output.write([record])
    return {"answered": len(pending), "skipped": len(done)}


_worker_sessions: dict[str, object] = {}


def _ask_shard(job: AskJob, part: list[tuple[str, str, str]]) -> list[dict]:
    """A Ray worker's part of an ask job; the session is opened once per worker process."""
    from kgllm.api import connect

    key = job.fingerprint()
    if key not in _worker_sessions:
        _worker_sessions[key] = connect(job.graph, store=job.store, use_model=job.use_model)
    session = _worker_sessions[key]
    return [{"id": i, **session.ask(q).to_dict(), "key": k} for k, i, q in part]  # type: ignore[attr-defined]


def item_key(*parts: str) -> str:
    """The content hash an output line records for the item it answers (its id and its text)."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


class JobOutput:
    """The JSON-lines output of a job: locked while the job runs, resumed by content, appended durably.

    Use it as a context manager: entering takes ``<output>.lock`` (another job holding it is
    an error, not a wait) and reads the output; :meth:`resume` says which items are done;
    :meth:`write` appends records, each with its ``key`` (:func:`item_key`), flushed to disk.

    Example::

        with JobOutput(Path("answers.jsonl"), job.fingerprint()) as output:
            done = output.resume(item_key(i, q) for i, q in items)
            output.write([{"id": "1", "key": item_key("1", "Who?"), "answer": "..."}])
    """

    def __init__(
        self, path: Path, fingerprint: str, *, restart: bool = False, repair: bool = False, items: str = "queries"
    ):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.restart = restart
        self.repair = repair
        self.items = items
        self._meta = self.path.with_name(self.path.name + ".job.json")
        self._held = contextlib.ExitStack()
        self._file: IO[str] | None = None
        self._lines: list[tuple[int, str, str | None]] = []  # (line number, text, key or None)

    def __enter__(self) -> JobOutput:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._held.enter_context(file_lock(self.path, timeout=0))
        except LockTimeoutError:
            raise ConfigurationError(
                f"{self.path} is being written by another job (it holds {lock_path(self.path)}); "
                "wait for that job to finish, or choose another output"
            ) from None
        try:
            self._read()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._held.close()

    def _read(self) -> None:
        if not self.path.exists() or not self.path.stat().st_size:
            return
        if not self._meta.is_file() or _fingerprint_of(self._meta) != self.fingerprint:
            if not self.restart:
                raise ConfigurationError(
                    f"{self.path} holds the output of another job (other settings); choose another output, "
                    "delete it, or run again with --restart to start it over"
                )
            log.warning("%s: output of a job with other settings; starting it over (--restart)", self.path)
            self._rewrite([])
            return
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]  # a cut-off last line is dropped
        corrupt: list[tuple[int, str]] = []
        first_line: dict[str, int] = {}
        for number, chunk in enumerate(complete.split(b"\n")[:-1], 1):
            try:
                line = chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                corrupt.append((number, f"not UTF-8 text ({exc.reason})"))
                continue
            if not line.strip():
                continue
            problem, key = _check_record(line)
            if key is not None and key in first_line:
                problem = f"repeats the item of line {first_line[key]}"
            if problem:
                corrupt.append((number, problem))
                continue
            if key is not None:
                first_line[key] = number
            self._lines.append((number, line, key))
        if corrupt and not self.repair:
            number, problem = corrupt[0]
            others = (
                f" ({len(corrupt)} such lines: {', '.join(str(n) for n, _ in corrupt[:10])})"
                if len(corrupt) > 1
                else ""
            )
            raise ParseError(
                f"{problem}{others}; run again with --repair to drop the corrupt lines", str(self.path), number
            )
        if corrupt:
            log.warning("%s: dropping %d corrupt lines (--repair): %s", self.path, len(corrupt), corrupt[:10])
        if corrupt or complete != raw:
            self._rewrite([line for _, line, _ in self._lines])

    def resume(self, keys: Iterable[str]) -> set[str]:
        """The keys of ``keys`` the output already answers; refuses (or with ``restart`` drops) stale lines."""
        current = set(keys)
        stale = [(number, line) for number, line, key in self._lines if key not in current]
        if stale and not self.restart:
            raise ConfigurationError(
                f"{self.path}: {len(stale)} of its {len(self._lines)} lines answer {self.items} that are no longer "
                f"in the input (first: line {stale[0][0]}); run again with --restart to drop them "
                f"(the {len(self._lines) - len(stale)} still current are kept), or choose another output"
            )
        if stale:
            log.warning(
                "%s: dropping %d lines for %s no longer in the input (--restart)", self.path, len(stale), self.items
            )
            self._lines = [entry for entry in self._lines if entry[2] in current]
            self._rewrite([line for _, line, _ in self._lines])
        write_text_atomic(self._meta, json.dumps({"fingerprint": self.fingerprint}))
        # every line left is current, so has a key (a keyless line never is)
        return {key for _, _, key in self._lines if key is not None}

    def write(self, records: list[dict]) -> None:
        """Append one JSON line per record and flush them to disk (a kill loses no written line)."""
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def _rewrite(self, lines: list[str]) -> None:
        with atomic_write(self.path) as out:
            out.write("".join(line + "\n" for line in lines))


def _fingerprint_of(meta: Path) -> str | None:
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def _check_record(line: str) -> tuple[str, str | None]:
    """``(problem, key)`` of an output line: problem is empty for a JSON record, key None when it has none."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        return f"not a JSON record ({exc})", None
    if not isinstance(record, dict):
        return "not a JSON object", None
    key = record.get("key")
    return "", key if isinstance(key, str) else None
