"""The FAISS vector index: ids and L2-normalised vectors only, derived from SQL.

The index is an ``IndexIDMap2`` over an inner-product index, so scores are cosine
similarities. It remembers ``applied_seq``: the last change-log sequence number
it reflects. Snapshots are written atomically (temp file, fsync, rename) with
that number, so a loaded snapshot plus the change log after it is always the
full state.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

__all__ = ["SnapshotError", "VectorIndex"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]


_MAGIC = b"VSKFAISS1"


class SnapshotError(Exception):
    """A snapshot on disk is missing, truncated or not a FAISS index."""


class VectorIndex:
    """A thread-safe FAISS index of event ids -> normalised vectors."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.applied_seq = 0
        self._lock = threading.Lock()

    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        return int(self._index.ntotal)

    def add(self, ids: IdArray, vectors: FloatArray, seq: int | None = None) -> None:
        """Add (or replace) vectors under ``ids``; ``seq`` advances ``applied_seq``."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock:
            if len(ids):
                # IndexIDMap2 allows duplicate ids; remove first so replays are idempotent.
                self._index.remove_ids(ids)
                self._index.add_with_ids(vectors, ids)
            if seq is not None:
                self.applied_seq = max(self.applied_seq, seq)

    def remove(self, ids: IdArray, seq: int | None = None) -> int:
        """Remove ``ids``; returns how many were present."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock:
            n = int(self._index.remove_ids(ids)) if len(ids) else 0
            if seq is not None:
                self.applied_seq = max(self.applied_seq, seq)
            return n

    def search(
        self, query: FloatArray, k: int, allowed_ids: IdArray | None = None
    ) -> tuple[FloatArray, IdArray]:
        """Top-``k`` (scores, ids) for one query vector; missing slots are dropped."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        with self._lock:
            if self._index.ntotal == 0 or k <= 0:
                return np.empty(0, np.float32), np.empty(0, np.int64)
            k = min(k, int(self._index.ntotal))
            params = None
            if allowed_ids is not None:
                sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_ids, dtype=np.int64))
                params = faiss.SearchParameters(sel=sel)
            scores, ids = self._index.search(q, k, params=params)
        keep = ids[0] >= 0
        return scores[0][keep].astype(np.float32), ids[0][keep].astype(np.int64)

    def ids(self) -> IdArray:
        """All ids in the index."""
        with self._lock:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def save(self, path: Path) -> None:
        """Write an atomic snapshot of the index and its ``applied_seq``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            blob = bytes(faiss.serialize_index(self._index))
            meta = {"applied_seq": self.applied_seq, "dim": self.dim, "ntotal": self.ntotal}
        header = json.dumps({**meta, "nbytes": len(blob)}).encode()
        # One file: magic, header length, JSON header, FAISS blob. A torn or
        # truncated write can never pair one snapshot's vectors with another's seq.
        _atomic_write(path, _MAGIC + struct.pack("<I", len(header)) + header + blob)

    @classmethod
    def load(cls, path: Path, dim: int) -> VectorIndex:
        """Load a snapshot; raises :class:`SnapshotError` if it is unusable."""
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise SnapshotError(f"no snapshot at {path}") from exc
        try:
            if data[: len(_MAGIC)] != _MAGIC:
                raise ValueError("bad magic")
            (hlen,) = struct.unpack_from("<I", data, len(_MAGIC))
            start = len(_MAGIC) + 4
            meta = json.loads(data[start : start + hlen])
            blob = data[start + hlen :]
            if len(blob) != int(meta["nbytes"]):
                raise ValueError(f"truncated: {len(blob)} of {meta['nbytes']} bytes")
            index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        except Exception as exc:  # FAISS raises RuntimeError; struct/json raise others
            raise SnapshotError(f"unreadable snapshot {path}: {exc}") from exc
        if index.d != dim or int(meta.get("dim", -1)) != dim:
            raise SnapshotError(f"snapshot {path} has dimension {index.d}, expected {dim}")
        if int(meta.get("ntotal", -1)) != int(index.ntotal):
            raise SnapshotError(f"snapshot {path} and its metadata disagree on size")
        out = cls(dim)
        out._index = faiss.IndexIDMap2(index) if not isinstance(index, faiss.IndexIDMap2) else index
        out.applied_seq = int(meta["applied_seq"])
        return out


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
