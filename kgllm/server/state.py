"""What the server shares between requests: the session, the worker threads, background jobs and
the health snapshot.

Work runs on a pool of worker threads, side by side: the stores are safe for concurrent
readers (the rdflib store has a readers-writer lock; the Neo4j driver is thread-safe), FAISS
searches and torch inference are safe from several threads, and the tokenizers are only read
once the server has warmed up. What is not safe to share gets its own small lock: text
generation (seeded sampling forks torch's global random state) and the completion model
(built once, then used one batch at a time). The event loop itself never waits on any of
them, so ``/health``, the page and the static files answer while work is in progress.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from kgllm.api import Session
from kgllm.exceptions import KGLLMError
from kgllm.server.limits import HEALTH_REFRESH_SECONDS, HEALTH_STALE_SECONDS, MAX_JOBS_KEPT, REQUEST_SECONDS

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Worker threads for request work: two per core (torch and the stores release the GIL while
    they work; more threads would only queue for the GIL, the event loop's thread among them)."""
    return min(32, 2 * (os.cpu_count() or 1))


class ServerState:
    """The session and how requests share it; ``start``/``stop`` run with the app's lifespan."""

    def __init__(
        self,
        session: Session,
        completion_config=None,
        time_budget: float = REQUEST_SECONDS,
        workers: int | None = None,
    ):
        self.session = session
        self.time_budget = time_budget
        self.workers = workers or default_workers()
        self.model_lock = threading.Lock()  # one generation at a time
        self.jobs = Jobs()
        self.health = HealthProbe(session)
        self._completion_config = completion_config
        self._completion = None
        self._completion_lock = threading.Lock()  # builds the completer once, then serves one batch at a time
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Warm up (load the graph and indexes, count the store) and open the worker pool."""
        self.health.check()
        retriever = self.session.retriever
        retriever.label_index  # noqa: B018 - built before the first request, not by several at once
        retriever.encoder.encode_query("warm up")  # tokenizer settings fixed once, before threads share it
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="kgllm-work")
        self.jobs.start()

    def stop(self) -> None:
        """Refuse queued work and let the threads finish what they run."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.jobs.stop()

    # ------------------------------------------------------------ work
    async def run(self, work: Callable[..., Any], *args: Any) -> Any:
        """``work(*args)`` on a worker thread, awaited without blocking the event loop."""
        if self._pool is None:
            raise HTTPException(503, "the server is starting or stopping", headers={"Retry-After": "1"})
        return await asyncio.wrap_future(self._pool.submit(work, *args))

    async def run_json(self, work: Callable[..., Any], *args: Any) -> JSONResponse:
        """Like :meth:`run`, with the result rendered as JSON on the worker thread too: a large
        answer's encoding then never holds up the event loop (and ``/health`` with it)."""
        return await self.run(lambda: JSONResponse(work(*args)))

    def seconds_left(self, arrived: float, wanted: float | None = None) -> float:
        """What is left of a request's time budget (from its arrival): 503 when the server's own
        budget ran out while it queued; a smaller budget the client ``wanted`` is cut to at least
        1 ms, so the work stops at once and says so."""
        waited = time.monotonic() - arrived
        left = self.time_budget - waited
        if left <= 0:
            raise HTTPException(
                503,
                "the server is too busy to start this request within its time budget; try again",
                headers={"Retry-After": "1"},
            )
        return max(0.001, min(left, wanted - waited)) if wanted else left

    # ------------------------------------------------------------ completion
    @property
    def completion_ready(self) -> bool:
        """Whether ``/complete`` can answer now: the completer is built, or the cache holds one to load."""
        return self._completion is not None or self._completion_cached()

    def complete(self, queries: list[tuple[str, str, str]], top_k: int, min_score: float) -> dict[str, Any]:
        """Predictions for each (head, relation, tail) query; builds the completer on first use."""
        from kgllm.pipelines.completion.jobs import predict_batch

        with self._completion_lock:
            completer, known, resolver = self._completer()
            batch = [resolver.query(number, query) for number, query in enumerate(queries, 1)]
            records = predict_batch(batch, completer, known, top_k, min_score)
        return {"model": completer.model_name, "results": records}

    def _completion_settings(self):
        from kgllm.pipelines.completion.completer import CompletionConfig

        return self._completion_config or CompletionConfig()

    def _completer(self):
        from kgllm.pipelines.completion.jobs import KnownAnswers, NameResolver, cached_completer

        if self._completion is None:
            store = self.session.store
            completer = cached_completer(store, self._completion_settings(), self.session.settings, progress=False)
            vocabulary = completer.kge.vocabulary
            self._completion = completer, KnownAnswers(store, vocabulary), NameResolver(store, vocabulary)
        return self._completion

    def _completion_cached(self) -> bool:
        from kgllm.pipelines.completion.jobs import is_completer_cached

        return is_completer_cached(self.session.store, self._completion_settings(), self.session.settings)


@dataclass
class Job:
    """A long task run in the background; polled by id."""

    id: str
    kind: str
    status: str = "queued"  # queued, running, done, failed
    created: float = field(default_factory=time.time)
    finished: float | None = None
    result: Any = None
    error: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "seconds": round((self.finished or time.time()) - self.created, 3),
            "result": self.result,
            "error": self.error,
        }


class Jobs:
    """Background jobs, run one at a time on their own thread (so they never hold a request worker);
    the last ``keep`` are remembered."""

    def __init__(self, keep: int = MAX_JOBS_KEPT):
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kgllm-job")

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def submit(self, kind: str, work: Callable[[], Any]) -> Job:
        """Queue ``work``; its return value becomes the job's result."""
        if self._pool is None:
            raise HTTPException(503, "the server is starting or stopping", headers={"Retry-After": "1"})
        job = Job(secrets.token_hex(8), kind)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                self._jobs.popitem(last=False)
        self._pool.submit(self._run, job, work)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job: Job, work: Callable[[], Any]) -> None:
        job.status = "running"
        try:
            job.result = work()
            job.status = "done"
        except KGLLMError as exc:
            job.error = {"message": " ".join(str(exc).split()), "type": type(exc).__name__}
            job.status = "failed"
        except Exception as exc:
            log.exception("background job %s (%s) failed", job.id, job.kind)
            job.error = {
                "message": f"internal error ({type(exc).__name__}); the server log has the details",
                "type": "internal_error",
            }
            job.status = "failed"
        finally:
            job.finished = time.time()


class HealthProbe:
    """The store's counts, checked on a thread of their own so that ``/health`` never waits.

    ``report`` returns the latest counts and starts a new check when they are older than
    ``every`` seconds; it says the store is unavailable when the last check failed, or when
    no check has succeeded for ``stale_after`` seconds (a store that hangs).
    """

    def __init__(self, session: Session, every: float = HEALTH_REFRESH_SECONDS, stale_after=HEALTH_STALE_SECONDS):
        self.session = session
        self.every = every
        self.stale_after = stale_after
        self.counts: dict[str, int] | None = None
        self.error: str | None = None
        self.checked = 0.0  # monotonic time of the last successful check
        self.started = 0.0  # ... and of the last check started
        self._running = threading.Lock()
        self._ids = itertools.count(1)

    def check(self) -> None:
        """Count the store's triples and entities now (on the calling thread)."""
        if not self._running.acquire(blocking=False):
            return
        self.started = time.monotonic()
        try:
            store = self.session.store
            self.counts = {"triples": store.count_triples(), "entities": store.count_entities()}
            self.error, self.checked = None, time.monotonic()
        except KGLLMError as exc:
            self.error = " ".join(str(exc).split())
        except Exception as exc:  # a health check reports every failure, whatever its type
            log.exception("health check failed")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._running.release()

    def report(self) -> dict[str, int]:
        """The latest counts; raises ``StoreUnavailableError`` when the store does not answer."""
        from kgllm.exceptions import StoreUnavailableError

        now = time.monotonic()
        if now - self.started > self.every and not self._running.locked():
            threading.Thread(target=self.check, name=f"kgllm-health-{next(self._ids)}", daemon=True).start()
        if self.error is not None:
            raise StoreUnavailableError(f"the graph store does not answer: {self.error}")
        if self.counts is None:
            raise StoreUnavailableError("the graph store has not been checked yet")
        if now - self.checked > self.stale_after:
            raise StoreUnavailableError(f"the graph store has not answered for {now - self.checked:.0f} s")
        return self.counts
