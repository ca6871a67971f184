"""Durable writes shared by every store, index, cache and job: locks, atomic files, cached folders.

Three rules hold wherever kgllm writes a file that another process may read or write:

- **Isolated.** Writers of one file (or one cache key) take an inter-process lock on a
  ``.lock`` file beside it (:func:`file_lock`), so two processes never interleave.
- **Atomic.** New content goes to a temporary file with a unique name in the same folder,
  is flushed and ``fsync``-ed, then ``os.replace``-d over the target and the folder is
  ``fsync``-ed (:func:`atomic_write`): a reader sees the old file or the new one, never a
  half-written one, and a crash leaves one of the two.
- **Built once.** A cached artifact (a trained model, an adapter) is a folder built in a
  staging folder and renamed into place under the key's lock (:func:`cached_artifact`), so
  two processes never delete or half-read each other's work.

Example::

    model_dir = cached_artifact(cache_dir / "models" / "graph-lm-1234", lambda tmp: train(tmp))
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

from kgllm.exceptions import KGLLMError

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"


class LockTimeoutError(KGLLMError):
    """Another process held a lock for longer than the wait allowed; retrying later may help."""

    retryable = True


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of ``path``: ``path`` with ``.lock`` appended, beside it."""
    path = Path(path)
    return path.with_name(path.name + LOCK_SUFFIX)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float | None = None, what: str = "") -> Iterator[None]:
    """Hold the inter-process lock of ``path`` (its ``.lock`` file) for the ``with`` block.

    ``timeout`` is how long to wait (``None``: as long as it takes, 0: not at all); a wait
    that runs out raises :class:`LockTimeoutError` naming ``what`` is locked. A lock dies
    with its process, so a killed holder never blocks the next one.
    """
    lock = FileLock(str(lock_path(path)), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if timeout == 0:
            raise LockTimeoutError(f"{what or path} is locked by another process ({lock.lock_file})") from None
        log.warning("waiting for another process that holds %s", lock.lock_file)
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise LockTimeoutError(
                f"{what or path} stayed locked by another process for {timeout:.0f} s ({lock.lock_file}); "
                "try again later"
            ) from None
    try:
        yield
    finally:
        lock.release()


def fsync_dir(directory: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_path(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A unique hidden name beside ``path`` (same folder, so a rename onto ``path`` is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write ``path`` all at once: yield a file to write, then fsync it and rename it over ``path``.

    If the block raises, ``path`` is untouched and the temporary file is removed. ``mode``
    is ``"w"`` (text) or ``"wb"``.
    """
    path = Path(path)
    tmp = temporary_path(path)
    binary = "b" in mode
    try:
        text_options: dict[str, Any] = {} if binary else {"encoding": encoding, "newline": ""}
        with open(tmp, mode, **text_options) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as out:
        out.write(text)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(folder)


def cached_artifact(
    key_dir: Path, build: Callable[[Path], None], *, marker: str | None = None, timeout: float | None = None
) -> Path:
    """The folder ``key_dir``, built first by ``build(staging)`` when it is not there yet.

    A finished folder is returned at once. Otherwise the key's lock is taken (a second
    process asking for the same key waits, then finds the folder built), ``build`` writes
    into a fresh staging folder beside ``key_dir``, and the staging folder is renamed into
    place: ``key_dir`` only ever appears complete. If ``build`` fails, its staging folder is
    removed and nothing is cached.

    ``marker`` names a file that every finished folder holds: a folder without it (left by
    an interrupted build of an older version, which built in place) is rebuilt.
    """
    key_dir = Path(key_dir)

    def finished() -> bool:
        return key_dir.is_dir() and (marker is None or (key_dir / marker).exists())

    if finished():
        return key_dir
    key_dir.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(key_dir, timeout=timeout, what=str(key_dir)):
        if finished():
            return key_dir
        for leftover in key_dir.parent.glob(f".{key_dir.name}.*.partial"):  # builds cut off by a crash
            shutil.rmtree(leftover, ignore_errors=True)
        if key_dir.exists():  # unfinished, from a build in place: move it aside, then delete
            aside = temporary_path(key_dir, ".partial")
            key_dir.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        staging = temporary_path(key_dir, ".partial")
        staging.mkdir()
        try:
            build(staging)
            if marker is not None and not (staging / marker).exists():
                raise KGLLMError(f"building {key_dir.name} finished without writing {marker}")
            _fsync_tree(staging)
            staging.rename(key_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(key_dir.parent)
    return key_dir
