"""What the server shares between requests: the session, the worker threads, background jobs and
the health snapshot.

Work runs on a pool of worker threads, side by side: the stores are safe for concurrent
readers (the rdflib store has a readers-writer lock; the Neo4j driver is thread-safe), FAISS
searches and torch inference are safe from several threads, and the tokenizers are only read
once the server has warmed up. What is not safe to share gets its own small lock: text
generation (seeded sampling forks torch's global random state) and the completion model
(built once, then used one batch at a time). The event loop itself never waits on any of
them, so ``/health``, the page and the static files answer while work is in progress.
Writes to the graph (accepting a reviewed fact) take turns under ``write_lock``; the review
queue's file has its own lock (``kgllm.cache.file_lock``), shared with the CLI.

Requests run side by side, so each torch call (and each encoding in ONNX Runtime) gets one
thread: with several calls in flight, every one of them asking for all the cores oversubscribes
the machine, and torch's threads then spin while waiting for each other (on 2 busy cores, one
query encoding took ten times longer).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from kgllm.api import Session
from kgllm.exceptions import KGLLMError
from kgllm.server.limits import (
    ANSWER_CACHE_SECONDS,
    ANSWER_CACHE_SIZE,
    HEALTH_REFRESH_SECONDS,
    HEALTH_STALE_SECONDS,
    MAX_JOBS_KEPT,
    REQUEST_SECONDS,
    SWITCH_INTERVAL,
)

log = logging.getLogger(__name__)


def one_torch_thread_per_call() -> None:
    """Let each torch call use one core: the worker threads are the parallelism (see above)."""
    import torch

    torch.set_num_threads(1)


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
        self.write_lock = threading.Lock()  # the server's writes to the graph take turns
        self.jobs = Jobs()
        self.answers = AnswerCache()
        self.health = HealthProbe(session)
        self._completion_config = completion_config
        self._completion = None
        self._completion_lock = threading.Lock()  # builds the completer once, then serves one batch at a time
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Warm up (load the graph and indexes, count the store) and open the worker pool."""
        self.health.check()
        one_torch_thread_per_call()
        self.session.warm_up()  # before the threads share it: tokenizer settings fixed, indexes built once
        sys.setswitchinterval(SWITCH_INTERVAL)  # with the workers busy, the event loop (and /health) waits less
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

    async def stream(self, produce: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
        """The items of ``produce()`` as they come, the iteration running on a worker thread. When
        the consumer stops (a client that disconnected), the iteration stops at its next item and
        the iterator is closed on its own thread; an exception it raises is raised here."""
        if self._pool is None:
            raise HTTPException(503, "the server is starting or stopping", headers={"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        consumer_gone = threading.Event()

        def hand_over(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def pump() -> None:
            iterator: Iterator[Any] | None = None
            try:
                iterator = produce()
                for item in iterator:
                    if consumer_gone.is_set():
                        break
                    hand_over("item", item)
            except Exception as exc:
                hand_over("error", exc)
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
                hand_over("end", None)

        self._pool.submit(pump)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            consumer_gone.set()

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

    # ------------------------------------------------------------ review
    @property
    def review(self):
        """The graph's queue of facts awaiting review (``<graph>.index/review.json``)."""
        from kgllm.graph.review import ReviewQueue

        return ReviewQueue.for_store(self.session.store, self.session.settings.cache_dir)

    # ------------------------------------------------------------ completion
    @property
    def completion_ready(self) -> bool:
        """Whether ``/complete`` can answer now: the completer is built, or the cache holds one to load."""
        return self._completion is not None or self._completion_cached()

    def complete(
        self, queries: list[tuple[str, str, str]], top_k: int, min_score: float, review: bool = False
    ) -> dict[str, Any]:
        """Predictions for each (head, relation, tail) query; builds the completer on first use.
        With ``review``, the predictions also join the review queue (``proposed``: how many are new there)."""
        from kgllm.pipelines.completion.jobs import JobSummary, keep_predictions, predict_batch

        summary = JobSummary()
        queue = self.review if review else None
        with self._completion_lock:
            completer, known, resolver = self._completer()
            batch = [resolver.query(number, query) for number, query in enumerate(queries, 1)]
            records = predict_batch(batch, completer, known, top_k, min_score)
            keep_predictions(records, self.session.store, summary, write_back=False, review=queue)
        result: dict[str, Any] = {"model": completer.model_name, "results": records}
        return {**result, "proposed": summary.queued} if review else result

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


class AnswerCache:
    """Complete answers to recent ``/ask`` requests, rendered, reused for ``seconds``.

    The server's own writes (accepting a reviewed fact) clear it, and the rdflib store does not
    re-read its file while it serves, so over rdflib a reused answer is the one the graph gives. A Neo4j database can be
    written by other clients: their writes show in answers ``seconds`` later at most. Answers cut
    by a time budget are never kept (a later request may have the time to finish).
    """

    def __init__(self, seconds: float = ANSWER_CACHE_SECONDS, size: int = ANSWER_CACHE_SIZE):
        self.seconds = seconds
        self.size = size
        self._answers: OrderedDict[Any, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> bytes | None:
        with self._lock:
            found = self._answers.get(key)
            if found is None or time.monotonic() - found[0] > self.seconds:
                return None
            return found[1]

    def put(self, key: Any, body: bytes) -> None:
        with self._lock:
            self._answers[key] = (time.monotonic(), body)
            self._answers.move_to_end(key)
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()


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
