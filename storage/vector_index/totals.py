"""Per-video totals of the indexed event vectors: their sum and their count.

A video's summed event vectors give its *context*: the cosine of a query with the
(normalised) sum says how well the video as a whole matches, beyond any one event
(search's learned video ranking reads it). The index keeps the totals up to date
on every add, replacement and removal, under its own write lock; a snapshot does
not store them: they are summed again from the vectors when one is loaded.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

__all__ = [
    "VideoTotals",
    "as_stored",
    "flat_vectors",
    "idmap_vectors",
    "is_lossy",
    "stored_vectors",
    "sum_stored",
]

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]
CodeArray = npt.NDArray[np.int32]
_faiss: Any = faiss


class VideoTotals:
    """Sum and count of the event vectors of each video code. Not thread-safe."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.sums = np.zeros((0, dim), np.float64)
        self.counts = np.zeros(0, np.int64)

    def _reserve(self, codes: CodeArray) -> None:
        need = int(codes.max(initial=-1)) + 1
        if need > len(self.counts):
            cap = max(need, 2 * len(self.counts), 64)
            sums = np.zeros((cap, self.dim), np.float64)
            sums[: len(self.sums)] = self.sums
            counts = np.zeros(cap, np.int64)
            counts[: len(self.counts)] = self.counts
            self.sums, self.counts = sums, counts

    def add(self, codes: CodeArray, vectors: FloatArray, sign: int = 1) -> None:
        """Count ``vectors`` into the videos of ``codes`` (one code per vector, -1: none);
        ``sign=-1`` takes them out."""
        keep = np.flatnonzero(codes >= 0)
        if not len(keep):
            return
        order = keep[np.argsort(codes[keep], kind="stable")]
        videos, starts, n = np.unique(codes[order], return_index=True, return_counts=True)
        self._reserve(videos)
        self.sums[videos] += sign * np.add.reduceat(vectors[order].astype(np.float64), starts)
        self.counts[videos] += sign * n
        if sign < 0:
            self.sums[videos[self.counts[videos] == 0]] = 0.0  # no drift left in an empty video

    def remove(self, codes: CodeArray, vectors: FloatArray) -> None:
        """Take ``vectors`` out of the videos of ``codes``."""
        self.add(codes, vectors, sign=-1)

    def context(
        self, codes: CodeArray, query: FloatArray
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Event count and context cosine (query . normalised sum) of each code."""
        inside = codes < len(self.counts)
        counts = np.zeros(len(codes), np.int64)
        cosines = np.zeros(len(codes))
        known = codes[inside]
        counts[inside] = self.counts[known]
        sums = self.sums[known]
        norms = np.linalg.norm(sums, axis=1)
        cosines[inside] = np.where(norms > 0, sums @ query.astype(np.float64), 0.0) / np.maximum(
            norms, 1e-12
        )
        return counts, cosines


def flat_vectors(flat: Any) -> FloatArray:
    """The vectors of an ``IndexFlat`` as a view (valid until it changes)."""
    n, d = int(flat.ntotal), int(flat.d)
    if n == 0:
        return np.empty((0, d), np.float32)
    arr: FloatArray = _faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)
    return arr


def idmap_vectors(index: Any) -> tuple[IdArray, FloatArray]:
    """The ids (slots; -1: an HNSW tombstone) and vectors, by storage position, of an
    ``IndexIDMap`` over a flat or HNSW index (the vectors as a view)."""
    inner = _faiss.downcast_index(index.index)
    flat = _faiss.downcast_index(inner.storage) if isinstance(inner, faiss.IndexHNSW) else inner
    return faiss.vector_to_array(index.id_map).astype(np.int64), flat_vectors(flat)


def is_lossy(index: Any) -> bool:
    """Whether ``index`` stores codes that decode to other vectors (IVF with 8-bit codes)."""
    return isinstance(index, faiss.IndexIVF) and int(index.code_size) != 4 * int(index.d)


def as_stored(index: Any, vectors: FloatArray) -> FloatArray:
    """``vectors`` as ``index`` will hold them: decoded from their codes on a trained
    IVF index with 8-bit codes (so sums add what removals later take out)."""
    if is_lossy(index):
        out: FloatArray = index.sa_decode(index.sa_encode(np.ascontiguousarray(vectors)))
        return out
    return vectors


def sum_stored(
    index: Any, table_codes: CodeArray, totals: VideoTotals, chunk: int = 65_536
) -> None:
    """Add every vector ``index`` holds into ``totals`` (``table_codes``: video code per
    slot), a chunk at a time."""
    if isinstance(index, faiss.IndexIVF):
        slots, vectors = _ivf_vectors(index, None)
        for start in range(0, len(slots), chunk):
            totals.add(table_codes[slots[start : start + chunk]], vectors[start : start + chunk])
        return
    id_map, xb = idmap_vectors(index)
    for start in range(0, len(id_map), chunk):
        ids = id_map[start : start + chunk]
        live = ids >= 0
        totals.add(table_codes[ids[live]], xb[start : start + chunk][live])


def stored_vectors(index: Any, slots: IdArray | None = None) -> tuple[IdArray, FloatArray]:
    """(slot, vector) pairs held by a FAISS index of the vector index: of ``slots``, or all.

    ``index`` is the ``IndexIDMap`` over a flat or HNSW index, or a trained IVF
    index (ids are slots). Tombstoned HNSW nodes (id -1) are left out.
    """
    if isinstance(index, faiss.IndexIVF):
        return _ivf_vectors(index, slots)
    id_map, xb = idmap_vectors(index)
    pos = np.flatnonzero(id_map >= 0 if slots is None else np.isin(id_map, slots))
    return id_map[pos], np.array(xb[pos], np.float32)


def _ivf_vectors(index: Any, slots: IdArray | None) -> tuple[IdArray, FloatArray]:
    lists, d, code_size = index.invlists, int(index.d), int(index.code_size)
    coarse = int(index.coarse_code_size())
    found: list[IdArray] = [np.empty(0, np.int64)]
    vectors: list[FloatArray] = [np.empty((0, d), np.float32)]
    for no in range(index.nlist):
        size = lists.list_size(no)
        if not size:
            continue
        ids = _faiss.rev_swig_ptr(lists.get_ids(no), size).astype(np.int64)
        offsets = np.flatnonzero(ids >= 0 if slots is None else np.isin(ids, slots))
        if not len(offsets):
            continue
        found.append(ids[offsets])
        codes = _faiss.rev_swig_ptr(lists.get_codes(no), size * code_size)
        codes = codes.reshape(size, code_size)[offsets]
        if not is_lossy(index):  # IVF,Flat: the codes are the vectors
            vectors.append(np.array(codes.view(np.float32)))
        else:  # SQ8: decode with the list number in front, as sa_encode writes it
            prefix = np.frombuffer(int(no).to_bytes(8, "little"), np.uint8)[:coarse]
            standalone = np.hstack([np.tile(prefix, (len(offsets), 1)), codes])
            vectors.append(index.sa_decode(np.ascontiguousarray(standalone)))
    return np.concatenate(found), np.concatenate(vectors)
