"""A FAISS vector index addressed by string keys, saved atomically beside the graph.

Vectors are expected L2-normalized, so inner product is cosine similarity.
Small indexes are exact (``IndexFlatIP``); once an index grows past
``hnsw_threshold`` it is rebuilt as HNSW (``IndexHNSWFlat``, inner product).
FAISS cannot remove vectors from an HNSW graph, so there a removed (or
replaced) key leaves a tombstone: its id is excluded from every search through
an ``IDSelector`` and the graph is rebuilt without tombstones once they make up
more than ``compact_ratio`` of it.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, TypedDict, Unpack

import faiss
import numpy as np

from kgllm.cache import file_lock, write_text_atomic
from kgllm.exceptions import InputError, RetrievalError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "index.json"
Kind = Literal["flat", "hnsw"]


class IndexOptions(TypedDict, total=False):
    """The :class:`VectorIndex` constructor settings :meth:`VectorIndex.load` passes through."""

    hnsw_threshold: int
    hnsw_m: int
    ef_search: int
    compact_ratio: float


class VectorIndex:
    """Nearest-neighbour search over unit vectors, keyed by strings.

    Example::

        index = VectorIndex(dim=384, encoder_name="all-MiniLM-L6-v2")
        index.add(["chad", "kenya"], vectors)
        index.search(query_vectors, k=1)      # [[("chad", 0.93)], ...]
    """

    def __init__(
        self,
        dim: int,
        encoder_name: str = "",
        hnsw_threshold: int = 50_000,
        hnsw_m: int = 32,
        ef_search: int = 128,
        compact_ratio: float = 0.25,
    ):
        if dim < 1:
            raise InputError("dim must be at least 1")
        self.dim = dim
        self.encoder_name = encoder_name
        self.hnsw_threshold = hnsw_threshold
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.compact_ratio = compact_ratio
        self.kind: Kind = "flat"
        self._index = self._new_index("flat")
        self._ids: dict[str, int] = {}
        self._keys: dict[int, str] = {}
        self._tombstones: set[int] = set()
        self._next_id = 0

    # ---------------------------------------------------------------- writes
    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add vectors under ``keys``; a key already present gets the new vector."""
        keys = list(keys)
        vectors = self._check_vectors(vectors)
        if len(keys) != len(vectors):
            raise InputError(f"{len(keys)} keys but {len(vectors)} vectors")
        if len(set(keys)) != len(keys):
            raise InputError("keys passed to add() must be distinct")
        if not keys:
            return
        self.remove([k for k in keys if k in self._ids])
        ids = np.arange(self._next_id, self._next_id + len(keys), dtype=np.int64)
        self._next_id += len(keys)
        self._index.add_with_ids(vectors, ids)
        for key, i in zip(keys, ids.tolist()):
            self._ids[key] = i
            self._keys[i] = key
        if self.kind == "flat" and len(self) > self.hnsw_threshold:
            self._rebuild("hnsw")

    def remove(self, keys: Iterable[str]) -> int:
        """Remove the vectors of ``keys`` (unknown keys are ignored); returns how many were removed."""
        ids = [self._ids.pop(k) for k in set(keys) if k in self._ids]
        if not ids:
            return 0
        for i in ids:
            del self._keys[i]
        if self.kind == "flat":
            # faiss wraps remove_ids to take an id array; its stubs only know the IDSelector form
            self._index.remove_ids(np.array(ids, dtype=np.int64))  # type: ignore[arg-type]
        else:
            self._tombstones.update(ids)
            if len(self._tombstones) > self.compact_ratio * self._index.ntotal:
                self._rebuild("hnsw")
        return len(ids)

    def bytes_for(self, vectors: int) -> int:
        """About how much memory the index takes at ``vectors`` vectors (HNSW past the threshold)."""
        per_vector = 4 * self.dim + 16  # float32 components, id map
        if vectors > self.hnsw_threshold:
            per_vector += 8 * self.hnsw_m  # HNSW links (about 2M per vector at 4 bytes each)
        return vectors * per_vector

    # ----------------------------------------------------------------- reads
    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def keys(self) -> list[str]:
        """Every key in the index, in insertion order."""
        return list(self._ids)

    def vectors(self, keys: Sequence[str]) -> np.ndarray:
        """The stored vectors of ``keys``, shape (len(keys), dim); raises for an unknown key."""
        missing = [k for k in keys if k not in self._ids]
        if missing:
            raise RetrievalError(f"{len(missing)} keys are not in the index, e.g. {missing[0]!r}")
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._index.reconstruct_batch(np.array([self._ids[k] for k in keys], dtype=np.int64))

    def search(self, vectors: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """The ``k`` nearest keys of each query vector with their cosine scores, best first."""
        if k < 1:
            raise InputError("k must be at least 1")
        vectors = self._check_vectors(vectors)
        if not len(self) or not len(vectors):
            return [[] for _ in range(len(vectors))]
        scores, ids = self._index.search(vectors, min(k, len(self)), params=self._search_params())
        return [
            [(self._keys[i], float(s)) for s, i in zip(row_s, row_i) if i >= 0]
            for row_s, row_i in zip(scores.tolist(), ids.tolist())
        ]

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index to ``directory`` atomically: a new FAISS file, then the JSON sidecar naming it.

        Savers of one folder take turns on its lock (``<directory>.lock``); both files are
        fsync-ed before the sidecar is renamed into place. The vectors file the sidecar named
        before is kept (a reader may have just read that sidecar); older ones are deleted.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with file_lock(directory, what=f"index {directory}"):
            return self._save(directory)

    def _save(self, directory: Path) -> Path:
        try:
            previous = json.loads((directory / META_FILE).read_text(encoding="utf-8")).get("vectors_file")
        except (OSError, ValueError, AttributeError):
            previous = None
        vectors_file = f"vectors-{uuid.uuid4().hex[:12]}.faiss"
        faiss.write_index(self._index, str(directory / vectors_file))
        _fsync_file(directory / vectors_file)
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "encoder": self.encoder_name,
            "vectors_file": vectors_file,
            "next_id": self._next_id,
            "keys": [[i, k] for i, k in self._keys.items()],
            "tombstones": sorted(self._tombstones),
        }
        write_text_atomic(directory / META_FILE, json.dumps(meta))
        for stale in directory.glob("vectors-*.faiss"):  # earlier saves, and any left by an interrupted one
            if stale.name not in (vectors_file, previous):
                stale.unlink(missing_ok=True)
        return directory

    @classmethod
    def load(
        cls, directory: str | os.PathLike, encoder_name: str, dim: int, **options: Unpack[IndexOptions]
    ) -> VectorIndex:
        """Read an index saved by :meth:`save`; it must have been built by the same encoder (name and dim).

        ``options`` are constructor settings (``hnsw_threshold``, ``ef_search``, ...).
        """
        directory = Path(directory)
        meta = _read_meta(directory / META_FILE)
        if meta.get("format_version") != FORMAT_VERSION:
            raise RetrievalError(
                f"{directory}: index format {meta.get('format_version')}, "
                f"this version reads {FORMAT_VERSION}; rebuild the index"
            )
        if meta["encoder"] != encoder_name or meta["dim"] != dim:
            raise RetrievalError(
                f"{directory}: index was built with encoder {meta['encoder']!r} (dim {meta['dim']}), "
                f"not {encoder_name!r} (dim {dim}); rebuild it with this encoder"
            )
        index = cls(dim, encoder_name, **options)
        try:
            index._index = faiss.read_index(str(directory / meta["vectors_file"]))
        except RuntimeError as exc:
            raise RetrievalError(f"{directory}: cannot read {meta['vectors_file']}: {exc}") from exc
        index.kind = meta["kind"]
        index._keys = {int(i): k for i, k in meta["keys"]}
        index._ids = {k: i for i, k in index._keys.items()}
        index._tombstones = set(meta["tombstones"])
        index._next_id = meta["next_id"]
        if index._index.ntotal != len(index._keys) + len(index._tombstones):
            raise RetrievalError(f"{directory}: the vectors file and {META_FILE} disagree; rebuild the index")
        return index

    # ------------------------------------------------------------- internals
    def _new_index(self, kind: Kind) -> faiss.Index:
        inner: faiss.Index
        if kind == "flat":
            inner = faiss.IndexFlatIP(self.dim)
        else:
            inner = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        return faiss.IndexIDMap2(inner)

    def _rebuild(self, kind: Kind) -> None:
        """Rebuild as ``kind`` from the live vectors (drops tombstones)."""
        ids = np.array(list(self._keys), dtype=np.int64)
        vectors = self._index.reconstruct_batch(ids) if len(ids) else np.zeros((0, self.dim), np.float32)
        log.info("rebuilding %d vectors as a %s index", len(ids), kind)
        self._index = self._new_index(kind)
        if len(ids):
            self._index.add_with_ids(vectors, ids)
        self.kind = kind
        self._tombstones.clear()

    def _search_params(self) -> faiss.SearchParameters | None:
        if self.kind == "flat":
            return None
        if not self._tombstones:
            # SearchParametersHNSW is missing from faiss's stubs (here and below)
            return faiss.SearchParametersHNSW(efSearch=self.ef_search)  # type: ignore[attr-defined]
        excluded = faiss.IDSelectorBatch(np.array(sorted(self._tombstones), dtype=np.int64))
        not_excluded = faiss.IDSelectorNot(excluded)
        return faiss.SearchParametersHNSW(efSearch=self.ef_search, sel=not_excluded)  # type: ignore[attr-defined]

    def _check_vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InputError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        return np.ascontiguousarray(vectors)


def _read_meta(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RetrievalError(f"{path.parent}: no saved index ({META_FILE} is missing)") from None
    except (OSError, ValueError) as exc:
        raise RetrievalError(f"{path}: unreadable index metadata: {exc}") from exc


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
