"""How ``kgllm serve`` holds up under load: a burst of ``/ask`` requests, the same burst while one
heavy question is in flight, and ``/health`` latency throughout.

The server is a real ``kgllm serve`` process on a free loopback port (the same code as this
package), started fresh for each run, on the demo graph. The heavy question is 1,000 characters
naming many entities, asked with ``max_hops=4`` on a cold server: without a time budget its
search takes about a minute on 2 cores. While each burst runs, a client in a process of its own
(so that the burst's client does not delay it) polls ``/health`` every 50 ms. An error is any
response other than 200, or a failed connection.

Example::

    phases = run_reliability(model=False, requests=200, concurrency=50)
    [phase.row() for phase in phases]
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

import kgllm
from kgllm.bench.ask import WARM_UP, read_questions
from kgllm.bench.report import percentile
from kgllm.exceptions import KGLLMError
from kgllm.server.graph import ANSWER_CACHE_HEADER
from kgllm.testing import free_port

PACKAGE_ROOT = Path(kgllm.__file__).resolve().parents[1]
HEALTH_EVERY = 0.05  # seconds between two /health polls
HEAVY_PREFIX = "Which subregions are the neighbours of the neighbours of "


@dataclass
class Phase:
    """Latencies and errors of one burst, the /health polls made meanwhile, and the heavy question if any."""

    name: str
    concurrency: int
    seconds: list[float] = field(default_factory=list)
    errors: int = 0
    cache_hits: int = 0  # answers the server took from its answer cache (a repeat within its lifetime)
    error_kinds: Counter = field(default_factory=Counter)  # status code (or exception name) -> count
    wall_seconds: float = 0.0
    health_seconds: list[float] = field(default_factory=list)
    health_errors: int = 0
    heavy: dict | None = None  # seconds, status, cut
    server_cpu_seconds: float | None = None  # CPU time the server process spent on the phase

    def percentile(self, q: float) -> float:
        return percentile(self.seconds, q)

    def row(self) -> dict[str, str]:
        heavy = "-"
        if self.heavy is not None:
            outcome = "cut" if self.heavy["cut"] else "answered"
            heavy = f"{self.heavy['seconds']:.1f} s, {self.heavy['status']}, {outcome}"
        return {
            "scenario": self.name,
            "requests": str(len(self.seconds)),
            "concurrency": str(self.concurrency),
            "errors": f"{self.errors}" + (f" ({_kinds(self.error_kinds)})" if self.errors else ""),
            "answer-cache hits": str(self.cache_hits),
            "p50 ms": f"{1000 * statistics.median(self.seconds):.0f}" if self.seconds else "-",
            "p95 ms": f"{1000 * self.percentile(0.95):.0f}",
            "requests/s": f"{len(self.seconds) / self.wall_seconds:.1f}" if self.wall_seconds else "-",
            "/health max ms": f"{1000 * max(self.health_seconds):.0f}" if self.health_seconds else "-",
            "/health polls (errors)": f"{len(self.health_seconds)} ({self.health_errors})",
            "server CPU ms/request": (
                f"{1000 * self.server_cpu_seconds / len(self.seconds):.0f}"
                if self.server_cpu_seconds is not None and self.seconds
                else "-"
            ),
            "heavy question": heavy,
        }


def _kinds(counts: Counter) -> str:
    return ", ".join(f"{count}x {kind}" for kind, count in counts.most_common())


def heavy_question(labels: list[str], length: int = 1000) -> str:
    """A question of ``length`` characters naming as many entities as fit (labels in the given order)."""
    suffix = " located in?"
    text = HEAVY_PREFIX + ", ".join(labels)
    return text[: length - len(suffix)].rstrip(", ") + suffix


@contextlib.contextmanager
def served(
    model: bool = False,
    start_timeout: float = 900.0,
    code_root: str | os.PathLike | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[tuple[str, int]]:
    """A ``kgllm serve`` subprocess on a free loopback port over the demo graph; yields its URL and
    process id.

    ``code_root`` is the checkout whose ``kgllm`` the server runs (default: this package's), so
    that another version can be measured the same way.
    """
    port = free_port()
    root = Path(code_root) if code_root is not None else PACKAGE_ROOT
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    args = [sys.executable, "-c", "from kgllm.cli import main; main()", "serve", "--host", "127.0.0.1"]
    args += ["--port", str(port), *([] if model else ["--no-model"]), *extra_args]
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + start_timeout
            while True:
                if server.poll() is not None:
                    log.seek(0)
                    raise KGLLMError(f"kgllm serve exited ({server.returncode}): {log.read()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise KGLLMError(f"kgllm serve did not answer /health within {start_timeout:.0f} s")
                time.sleep(0.25)
            yield url, server.pid
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def run_reliability(
    model: bool = False,
    requests: int = 200,
    concurrency: int = 50,
    timeout: float = 300.0,
    code_root: str | os.PathLike | None = None,
) -> list[Phase]:
    """The burst alone, then the burst with a heavy question in flight, each on a fresh server (so the
    second burst is not answered from the first one's answer cache) that is warmed up first;
    ``timeout`` bounds each request."""
    from kgllm.graph.demo import demo_graph_path, demo_question_sets
    from kgllm.graph.rdflib_store import RDFLibStore

    store = RDFLibStore(demo_graph_path())
    heavy = heavy_question([e.label for e in store.entities()])
    texts = [item["question"] for item in read_questions(demo_question_sets()[0])]
    batch = list(itertools.islice(itertools.cycle(texts), requests))
    phases = []
    for heavy_in_flight in (None, heavy):
        with served(model=model, code_root=code_root) as (url, pid):
            phases.append(asyncio.run(_phase(url, pid, batch, heavy_in_flight, concurrency, timeout)))
    return phases


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time of process ``pid`` so far (None where /proc cannot tell)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def _phase(url: str, pid: int, batch: list[str], heavy: str | None, concurrency: int, timeout: float) -> Phase:
    """Warm the server at ``url`` up, then send ``batch`` (after ``heavy``, when given)."""
    limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1)

    def client() -> httpx.AsyncClient:
        """A client per step: a connection left idle meanwhile may be closed by the server."""
        return httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits)

    async with client() as warm:
        for question in WARM_UP:
            (await warm.post("/ask", json={"question": question})).raise_for_status()

    if heavy is None:
        alone = Phase("burst", concurrency)

        async def burst_alone() -> None:
            async with client() as burst:
                await _burst(burst, batch, concurrency, alone)

        await _with_health(url, pid, alone, burst_alone())
        return alone

    loaded = Phase("burst + heavy question in flight", concurrency)

    async def heavy_and_burst() -> None:
        async with client() as burst:
            started = time.perf_counter()
            request = {"question": heavy, "answerer": "paths", "max_hops": 4}  # a path search, not a refusal
            heavy_task = asyncio.create_task(burst.post("/ask", json=request))
            await asyncio.sleep(0.2)  # the heavy question is in the server before the burst
            await _burst(burst, batch, concurrency, loaded)
            status: int | str
            try:
                response = await heavy_task
                status, cut = response.status_code, response.json().get("metadata", {}).get("cut", False)
            except httpx.HTTPError as exc:
                status, cut = type(exc).__name__, False
            loaded.heavy = {"seconds": time.perf_counter() - started, "status": status, "cut": cut}

    await _with_health(url, pid, loaded, heavy_and_burst())
    return loaded


async def _burst(client: httpx.AsyncClient, questions: list[str], concurrency: int, phase: Phase) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def ask(question: str) -> None:
        async with gate:
            started = time.perf_counter()
            try:
                response = await client.post("/ask", json={"question": question})
                if response.status_code != 200:
                    phase.errors += 1
                    phase.error_kinds[str(response.status_code)] += 1
                elif response.headers.get(ANSWER_CACHE_HEADER) == "hit":
                    phase.cache_hits += 1
            except httpx.HTTPError as exc:
                phase.errors += 1
                phase.error_kinds[type(exc).__name__] += 1
            phase.seconds.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(ask(q) for q in questions))
    phase.wall_seconds = time.perf_counter() - started


_POLLER = """
import sys, time, httpx
url, every = sys.argv[1], float(sys.argv[2])
with httpx.Client(timeout=60) as client:
    print("ready", flush=True)
    while True:
        started = time.perf_counter()
        try:
            ok = client.get(url).status_code == 200
        except httpx.HTTPError:
            ok = False
        print(f"{time.perf_counter() - started:.6f} {int(ok)}", flush=True)
        time.sleep(every)
"""


async def _with_health(url: str, pid: int, phase: Phase, work) -> None:
    """Run ``work`` while a process of its own polls /health; the polls' latencies go to ``phase``,
    with the CPU time the server (process ``pid``) spent meanwhile."""
    poller = subprocess.Popen(
        [sys.executable, "-c", _POLLER, f"{url}/health", str(HEALTH_EVERY)], stdout=subprocess.PIPE, text=True
    )
    assert poller.stdout is not None  # stdout=PIPE
    try:
        if (await asyncio.to_thread(poller.stdout.readline)).strip() != "ready":
            raise KGLLMError("the /health poller did not start")
        cpu_before = cpu_seconds(pid)
        await work
        cpu_after = cpu_seconds(pid)
        if cpu_before is not None and cpu_after is not None:
            phase.server_cpu_seconds = cpu_after - cpu_before
    finally:
        poller.terminate()
        output, _ = poller.communicate(timeout=30)
    for line in output.splitlines():
        if len(fields := line.split()) == 2:  # the last line may be cut by the stop
            phase.health_seconds.append(float(fields[0]))
            phase.health_errors += fields[1] != "1"
