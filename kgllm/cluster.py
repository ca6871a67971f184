"""Batch work on a Ray cluster (``--ray auto|ADDRESS|local``).

The driver keeps what makes a job safe: it reads the input, skips what the output
already holds, writes every line and holds the output's lock. Workers only compute:
each gets a shard of items and returns its records. A shard whose worker dies is run
again by Ray (``max_retries``); the driver writes shards in order, so a retried shard
neither loses nor repeats a line, and the output has a single process's lines in its
order (scores agree to their last rounded digit: a shard's smaller batch sums in another order).

Workers import kgllm (installed on every node) and read the graph and the model cache
at the same paths as the driver: one machine, or a shared filesystem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from kgllm.exceptions import ConfigurationError, MissingDependencyError

Item = TypeVar("Item")

#: Times a shard is run again after its worker died (a system failure; an exception in kgllm is not retried).
SHARD_RETRIES = 3
#: ``--ray local``: start a Ray instance on this machine instead of joining a cluster.
LOCAL = "local"


def ray_runtime(address: str):
    """The ``ray`` module, joined to the cluster at ``address`` ("auto": the one this node belongs to)
    or, with ``local``, to a Ray instance started on this machine; an existing connection is reused."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError('--ray needs Ray: pip install "kgllm[cluster]"') from exc
    if ray.is_initialized():
        return ray
    try:
        if address == LOCAL:
            # local workers import the same kgllm as the driver, even from a source checkout
            source = str(Path(__file__).resolve().parents[1])
            ray.init(runtime_env={"env_vars": {"PYTHONPATH": source}}, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigurationError(
            f"cannot join a Ray cluster at {address!r}: {exc} "
            f"(start one with `ray start --head`, or pass --ray {LOCAL} to run Ray on this machine)"
        ) from exc
    return ray


def shards(items: Sequence[Item], size: int) -> list[list[Item]]:
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def map_shards(
    task: Callable[..., list[Any]], parts: Sequence[list], address: str, *shared: Any
) -> Iterator[list[Any]]:
    """``task(*shared, part)`` for each part on the cluster's workers, yielded in the parts' order.

    ``shared`` arguments are sent to the cluster once. A part whose worker dies is retried."""
    ray = ray_runtime(address)
    remote = ray.remote(max_retries=SHARD_RETRIES, retry_exceptions=False)(task)
    shared_refs = [ray.put(value) for value in shared]
    futures = [remote.remote(*shared_refs, part) for part in parts]
    fetched = 0
    try:
        for future in futures:
            yield ray.get(future)
            fetched += 1
    finally:
        # on an error or an interruption, stop the shards not yet fetched; cancelling a finished
        # task that had been retried has aborted the driver (a failed check in Ray's task manager)
        for future in futures[fetched:]:
            ray.cancel(future)
