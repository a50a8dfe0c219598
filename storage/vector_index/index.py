"""The vector index: FAISS over event vectors, with the event table beside it.

FAISS holds L2-normalised vectors under *slots*; :class:`EventTable` maps slots
to event ids, videos and spans (see :mod:`.table`). Scores are inner products,
i.e. cosine similarities. Four kinds:

``auto`` (default)
    Exact (``flat``) while the index holds fewer than ``AutoParams.threshold``
    vectors; then IVF with 8-bit scalar-quantised cells (``IVF<nlist>,SQ8``),
    ``nlist`` about ``4 * sqrt(N)`` and a fixed share of the cells probed, a
    quarter of flat's memory. It trains again, with more cells, once the corpus
    has grown ``AutoParams.regrow`` times. The store trains it by a background
    rebuild from SQL, as for ``ivf``.
``flat``
    ``IndexIDMap(IndexFlatIP)``: exact. Removal is physical (``remove_ids``,
    one O(n) pass per batch).
``hnsw``
    ``IndexIDMap(IndexHNSWFlat)``: approximate. HNSW graphs cannot remove nodes,
    so a removed slot becomes a *tombstone*: its ``id_map`` entry is overwritten
    with ``-1`` and searches admit only ids >= 0. Once more than
    ``HnswParams.max_dead_fraction`` of the nodes are dead,
    :attr:`VectorIndex.needs_compaction` turns true and the store rebuilds the
    index from SQL in the background. Measured by ``benchmarks/storage_bench.py``
    at 1M x 384-d: search p50 1-3 ms, recall@10 0.84-0.92 for efSearch 128-512
    on clustered synthetic data, build ~1,000 vectors/s, +~360 MiB of graph.
``ivf``
    ``IndexIVFFlat`` (or ``SQ8`` cells with ``IvfParams.encoding``): k-means
    splits the space into ``nlist`` cells; a search scans the ``nprobe`` cells
    nearest the query, exactly. The index is exact (flat) until it holds
    ``39 * nlist`` vectors; then it trains: k-means on a seeded sample of
    ``train_per_list * nlist`` vectors drawn over the event ids in sorted order
    (so insertion order does not matter), every vector moves into its cell, the
    flat index is dropped. k-means runs without the write lock; only the move
    blocks. A build from SQL loads everything first (:meth:`bulk_load`) and
    trains once on a sample of all rows. IVF stores the slots in its cells
    itself (no ``IndexIDMap``) and removes physically. Measured at 1M x 384-d
    with nlist 1024: search p50 2.0-4.6 ms at nprobe 16-32; on real MiniLM
    caption embeddings recall needs a larger share of the cells probed than on
    synthetic clusters (``benchmarks/index_recall.py``).

Filters. :meth:`VectorIndex.search_events` takes an :class:`EventFilter`
(videos, time range). The table turns it into a bitmap over slots that FAISS
checks per candidate (``IDSelectorBitmap``), so a filtered search costs what an
unfiltered one does, and never widens. On IVF a filter admitting a share ``s``
of the vectors probes ``nprobe / s`` cells (all of them for a very selective
filter), so the admitted vectors near the query are still scanned: a selective
filter is an exact search of its subset. On HNSW, a filter admitting at most
:data:`EXACT_FILTER_LIMIT` vectors is answered by an exact scan of them.

Every index remembers ``applied_seq``: the last change-log sequence number it
reflects; snapshots (:mod:`.snapshot`) store it with the index and the table.

Concurrency: searches share a read lock and run in parallel (FAISS releases the
GIL); adds and removals take the write lock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from vidseek.storage.errors import ConfigError
from vidseek.storage.gpu import GpuMirror
from vidseek.storage.locks import ReadWriteLock
from vidseek.storage.vector_index.params import (
    INDEX_KINDS,
    AutoParams,
    HnswParams,
    IvfParams,
)
from vidseek.storage.vector_index.table import EventFilter, EventTable
from vidseek.storage.vector_index.totals import (
    VideoTotals,
    as_stored,
    flat_vectors,
    is_lossy,
    stored_vectors,
    sum_stored,
)

__all__ = ["EXACT_FILTER_LIMIT", "EventHits", "VectorIndex"]

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]

_INT64_MAX = (1 << 63) - 1
EXACT_FILTER_LIMIT = 50_000
"""On ``hnsw``, a filter admitting at most this many vectors is searched exactly."""
# The bundled FAISS stubs lack the HNSW search parameters and the attributes of
# downcast index classes; go through an untyped alias for those.
_faiss: Any = faiss


@dataclass(frozen=True)
class EventHits:
    """Search results, best first: event ids, scores, and each event's video and span."""

    ids: IdArray
    scores: FloatArray
    videos: list[str]
    start: npt.NDArray[np.float64]
    end: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.ids)


def _no_hits() -> EventHits:
    return EventHits(np.empty(0, np.int64), np.empty(0, np.float32), [], np.empty(0), np.empty(0))


@contextmanager
def _omp_threads(n: int) -> Iterator[None]:
    """Run this thread's FAISS calls on ``n`` OpenMP threads (the setting is per thread).

    One query, or a window's handful of vectors, is work for one core: waking a
    team of OpenMP threads for it costs more than it saves, and on a loaded
    machine waiting for the team took 20-30 ms where the search itself took 1.
    Concurrent searches from several threads use the cores instead.
    """
    before = faiss.omp_get_max_threads()
    if before == n:
        yield
        return
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


_SMALL_BATCH = 1000
_IVF_ADD_BATCH = 16_384


def _new_faiss_index(dim: int, kind: str, hnsw: HnswParams) -> Any:
    if kind in ("auto", "flat", "ivf"):  # auto and ivf start untrained, as a flat index
        return faiss.IndexIDMap(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, hnsw.m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = hnsw.ef_construction
        inner.hnsw.efSearch = hnsw.ef_search
        return faiss.IndexIDMap(inner)
    raise ConfigError(f"unknown index kind {kind!r}; expected one of {', '.join(INDEX_KINDS)}")


def _add_to_cells(ivf: Any, vectors: FloatArray, ids: IdArray) -> None:
    """``ivf.add_with_ids(vectors, ids)``, with the cell assignment done by numpy.

    FAISS assigns through its flat search (BLAS plus a top-1 pass); one numpy
    matrix product and an argmax per block is 1.5-2x faster on a 2-core VM, and
    the assignment is most of the cost of moving 1M vectors into the cells.
    """
    quantizer = _faiss.downcast_index(ivf.quantizer)
    centroids = _faiss.rev_swig_ptr(quantizer.get_xb(), ivf.nlist * ivf.d)
    centroids_t = np.ascontiguousarray(centroids.reshape(ivf.nlist, ivf.d).T)
    for i in range(0, len(ids), _IVF_ADD_BATCH):
        x = np.ascontiguousarray(vectors[i : i + _IVF_ADD_BATCH])
        xids = np.ascontiguousarray(ids[i : i + _IVF_ADD_BATCH], dtype=np.int64)
        cells = np.argmax(x @ centroids_t, axis=1).astype(np.int64)
        ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(xids), faiss.swig_ptr(cells))


def faiss_ids(index: Any) -> IdArray:
    """Every id (slot) stored in ``index`` (tombstones included), in storage order."""
    if not isinstance(index, faiss.IndexIVF):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    lists: Any = index.invlists
    parts = [np.empty(0, np.int64)]
    for no in range(index.nlist):
        size = lists.list_size(no)
        if size:
            parts.append(_faiss.rev_swig_ptr(lists.get_ids(no), size).astype(np.int64))
    return np.concatenate(parts)


class VectorIndex:
    """A thread-safe FAISS index of events -> normalised vectors (see module doc).

    Events are added with their video and span (:meth:`add`, :meth:`apply`);
    without them (``videos=None``) they belong to no video and span [0, 0],
    which suits tests and benchmarks of the vectors alone.
    """

    def __init__(
        self,
        dim: int,
        kind: str = "flat",
        hnsw: HnswParams | None = None,
        gpu: GpuMirror | None = None,
        *,
        ivf: IvfParams | None = None,
        auto: AutoParams | None = None,
        auto_train: bool = True,
    ) -> None:
        self.dim = dim
        self.kind = kind
        self.hnsw = hnsw or HnswParams()
        self.hnsw.validate()
        self.ivf = ivf or IvfParams()
        self.ivf.validate()
        self.auto = auto or AutoParams()
        self.auto.validate()
        self._index = _new_faiss_index(dim, kind, self.hnsw)
        if gpu is not None and kind != "flat":
            raise ConfigError("GPU search is only available for the flat index kind")
        self._gpu = gpu
        self.applied_seq = 0
        self._table = EventTable()
        self._totals = VideoTotals(dim)
        self._dead = 0  # hnsw tombstones
        self._trained = False  # auto/ivf: the IVF index has replaced the flat one
        self.trained_size = 0
        """``auto``/``ivf``: vectors held when the index trained."""
        self._defer_training = False
        self.auto_train = auto_train
        """``auto``/``ivf``: train in the add that crosses the threshold (else the
        owner calls :meth:`train` or rebuilds when :attr:`needs_training`)."""
        self._lock = ReadWriteLock()
        self.version = 0
        """Bumped by every change; snapshots and GPU copies compare it."""
        self.saved_version = -1
        """``version`` of the last snapshot this object wrote or was loaded from."""

    # ---- state -----------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Number of live (searchable) vectors."""
        return self._table.live

    @property
    def dead(self) -> int:
        """Tombstoned HNSW nodes still in the graph (always 0 for other kinds)."""
        return self._dead

    @property
    def needs_compaction(self) -> bool:
        """True when tombstones (``hnsw``) or table holes outweigh the live vectors."""
        if self._dead > 0 and self._dead > self.hnsw.max_dead_fraction * self._index.ntotal:
            return True
        return self._table.holes > max(100_000, self._table.live)

    @property
    def trained(self) -> bool:
        """``auto``/``ivf``: True once searches go through trained IVF cells."""
        return self._trained

    @property
    def needs_training(self) -> bool:
        """Untrained ``auto``/``ivf`` index holding enough vectors to train; or a
        trained ``auto`` index that has outgrown its cells (retrained by a rebuild)."""
        n = self.ntotal
        if self.kind == "ivf":
            return not self._trained and n >= self.ivf.train_threshold
        if self.kind == "auto":
            if self._trained:
                return n >= self.auto.regrow * max(self.trained_size, 1)
            return n >= self.auto.threshold
        return False

    @property
    def gpu(self) -> GpuMirror | None:
        """The GPU copy used for unfiltered searches, if any."""
        return self._gpu

    def __contains__(self, event_id: object) -> bool:
        if not isinstance(event_id, int | np.integer):
            return False
        with self._lock.read():
            return bool(self._table.lookup(np.array([event_id]))[0] >= 0)

    def ids(self) -> IdArray:
        """All live event ids, sorted."""
        with self._lock.read():
            return self._table.ids()

    # ---- changes ---------------------------------------------------------------------

    def add(
        self,
        ids: IdArray | Sequence[int],
        vectors: FloatArray,
        seq: int | None = None,
        *,
        videos: Sequence[str] | None = None,
        start: npt.ArrayLike | None = None,
        end: npt.ArrayLike | None = None,
    ) -> None:
        """Add (or replace) vectors under ``ids``; ``seq`` advances ``applied_seq``."""
        self.apply(add_ids=ids, add_vectors=vectors, videos=videos, start=start, end=end, seq=seq)

    def remove(self, ids: IdArray | Sequence[int], seq: int | None = None) -> int:
        """Remove ``ids``; returns how many were present."""
        return self.apply(remove_ids=ids, seq=seq)

    def apply(
        self,
        *,
        add_ids: IdArray | Sequence[int] = (),
        add_vectors: FloatArray | None = None,
        videos: Sequence[str] | None = None,
        start: npt.ArrayLike | None = None,
        end: npt.ArrayLike | None = None,
        remove_ids: IdArray | Iterable[int] = (),
        seq: int | None = None,
    ) -> int:
        """Remove ``remove_ids``, then add or replace ``add_ids``, atomically for readers.

        ``videos``, ``start`` and ``end`` describe the added events (one entry
        each). Replays are idempotent: an id that is already present is
        replaced, never duplicated. Returns how many of ``remove_ids`` were present.
        """
        ids = np.ascontiguousarray(np.asarray(add_ids, dtype=np.int64).reshape(-1))
        n = len(ids)
        if n:
            if add_vectors is None:
                raise ValueError("add_ids given without add_vectors")
            vectors = np.ascontiguousarray(add_vectors, dtype=np.float32).reshape(-1, self.dim)
            if len(vectors) != n:
                raise ValueError(f"{n} ids but {len(vectors)} vectors")
            if len(np.unique(ids)) != n:
                raise ValueError("duplicate ids in one add")
            if (ids < 0).any():
                raise ValueError("ids must be >= 0")
        else:
            vectors = np.empty((0, self.dim), np.float32)
        vids = [""] * n if videos is None else list(videos)
        starts = np.zeros(n) if start is None else np.asarray(start, np.float64).reshape(-1)
        ends = np.zeros(n) if end is None else np.asarray(end, np.float64).reshape(-1)
        removing = np.fromiter((int(i) for i in remove_ids), dtype=np.int64)
        with self._lock.write():
            gone = self._table.lookup(removing)
            gone = np.unique(gone[gone >= 0])
            replaced = self._table.lookup(ids)
            stale = np.union1d(gone, replaced[replaced >= 0])
            if len(stale):
                old_slots, old_vectors = stored_vectors(self._index, stale)
                self._totals.remove(self._table.video[old_slots], old_vectors)
                self._drop(stale)
            if n:
                slots = self._table.append(ids, vids, starts, ends)
                self._totals.add(self._table.video[slots], as_stored(self._index, vectors))
                if n < _SMALL_BATCH:
                    with _omp_threads(1):
                        self._index.add_with_ids(vectors, slots)
                else:
                    self._index.add_with_ids(vectors, slots)
                if self._gpu is not None:
                    self._gpu.add(slots, vectors)
            if seq is not None:
                self.applied_seq = max(self.applied_seq, seq)
            if len(stale) or n or seq is not None:
                self.version += 1
        if n and self.auto_train and not self._defer_training and self._can_train():
            self.train()
        return len(gone)

    def _can_train(self) -> bool:
        return not self._trained and self.needs_training

    @contextmanager
    def bulk_load(self) -> Iterator[VectorIndex]:
        """Defer training to the end of a bulk load (a build from SQL).

        Adds inside the block go to the exact flat index; on leaving it, the index
        trains once on a sample of everything loaded rather than on the first
        batches (which, read in insertion order, may be a few videos).
        """
        self._defer_training = True
        try:
            yield self
        finally:
            self._defer_training = False
        if self._can_train():
            self.train()

    def train(self) -> bool:
        """Train an untrained ``auto``/``ivf`` index; move its vectors into the cells.

        Needs the kind's threshold of vectors; returns whether it trained.
        k-means runs on a seeded sample of the vectors (drawn over the event ids
        in sorted order, so the insertion order does not matter) without holding
        the write lock: searches and adds continue on the flat index. Only moving
        the vectors into the cells (about ``nlist`` inner products per vector)
        blocks them. A trained index is trained again only by a rebuild.
        """
        if self.kind not in ("auto", "ivf"):
            raise ConfigError(f"a {self.kind!r} index needs no training")
        with self._lock.read():
            if not self._can_train():
                return False
            n = self.ntotal
            p = self.auto.ivf_for(n, self.ivf) if self.kind == "auto" else self.ivf
            vectors = flat_vectors(_faiss.downcast_index(self._index.index))
            slots = faiss.vector_to_array(self._index.id_map)
            rng = np.random.default_rng(p.seed)
            order = np.argsort(self._table.event_id[slots], kind="stable")
            ranks = np.sort(rng.choice(n, min(n, p.train_per_list * p.nlist), replace=False))
            sample = np.ascontiguousarray(vectors[order[ranks]])  # in event id order
            del vectors
        ivf: Any = faiss.index_factory(self.dim, p.factory, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = p.seed
        ivf.cp.niter = p.niter
        ivf.train(sample)
        del sample
        ivf.nprobe = min(p.nprobe, p.nlist)
        with self._lock.write():
            if self._trained:
                return False
            flat = _faiss.downcast_index(self._index.index)
            _add_to_cells(ivf, flat_vectors(flat), faiss.vector_to_array(self._index.id_map))
            self._index = ivf
            self.ivf = p
            self._trained = True
            if is_lossy(ivf):  # 8-bit codes: sum what is now stored
                self._totals = VideoTotals(self.dim)
                sum_stored(ivf, self._table.video, self._totals)
            self.trained_size = self.ntotal
            self.version += 1
        return True

    def _drop(self, slots: IdArray) -> None:
        """Remove live ``slots``. Caller holds the write lock."""
        if self.kind != "hnsw":
            self._index.remove_ids(faiss.IDSelectorBatch(slots))
        else:
            id_map = faiss.vector_to_array(self._index.id_map)
            hit = np.isin(id_map, slots)
            id_map[hit] = -1
            faiss.copy_array_to_vector(id_map, self._index.id_map)
            self._dead += int(hit.sum())
        self._table.release(slots)
        if self._gpu is not None:
            self._gpu.invalidate()

    # ---- search ----------------------------------------------------------------------

    def search(
        self, query: FloatArray, k: int, allowed_ids: IdArray | None = None
    ) -> tuple[FloatArray, IdArray]:
        """Top-``k`` (scores, event ids) for one query vector, best first.

        ``allowed_ids`` restricts results to those event ids.
        """
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        with self._lock.read():
            mask = None
            if allowed_ids is not None:
                slots = self._table.lookup(np.asarray(allowed_ids, np.int64))
                mask = np.zeros(self._table.size, np.bool_)
                mask[slots[slots >= 0]] = True
            scores, slots = self._search_slots(q, k, mask)
            return scores, self._table.event_id[slots]

    def search_events(
        self, query: FloatArray, k: int, where: EventFilter | None = None
    ) -> EventHits:
        """Top-``k`` events admitted by ``where``, best first, with their videos and spans.

        The filter goes into FAISS as a bitmap (see the module doc): the cost
        does not grow with how much of the index the filter hides.
        """
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        with self._lock.read():
            t = self._table
            mask = None if where is None or where.unbounded else t.mask(where)
            scores, slots = self._search_slots(q, k, mask)
            return EventHits(
                ids=t.event_id[slots],
                scores=scores,
                videos=t.video_ids(slots),
                start=t.start[slots],
                end=t.end[slots],
            )

    def video_context(
        self, query: FloatArray, video_ids: Sequence[str]
    ) -> dict[str, tuple[int, float]]:
        """Each known video's event count and context cosine: the query's cosine with
        the normalised sum of the video's event vectors (see :mod:`.totals`)."""
        q = np.asarray(query, dtype=np.float32).reshape(self.dim)
        with self._lock.read():
            known, codes = self._table.known(video_ids)
            counts, cosines = self._totals.context(codes, q)
        return {
            v: (int(c), float(x))
            for v, c, x in zip(known, counts.tolist(), cosines.tolist(), strict=True)
            if c > 0
        }

    def rebuild_totals(self) -> None:
        """Sum the per-video totals again from the stored vectors (after a load)."""
        with self._lock.write():
            self._totals = VideoTotals(self.dim)
            sum_stored(self._index, self._table.video, self._totals)

    def describe(self, event_ids: Sequence[int]) -> dict[int, tuple[str, float, float]]:
        """(video id, start, end) of each live event of ``event_ids``."""
        with self._lock.read():
            t = self._table
            slots = t.lookup(np.asarray(event_ids, np.int64))
            slots = slots[slots >= 0]
            return {
                int(i): (v, float(s), float(e))
                for i, v, s, e in zip(
                    t.event_id[slots].tolist(),
                    t.video_ids(slots),
                    t.start[slots].tolist(),
                    t.end[slots].tolist(),
                    strict=True,
                )
            }

    def _search_slots(
        self, q: FloatArray, k: int, mask: npt.NDArray[np.bool_] | None
    ) -> tuple[FloatArray, IdArray]:
        """(scores, slots) of the top ``k`` live slots admitted by ``mask``. Caller
        holds the read lock."""
        n = self.ntotal
        admitted = n if mask is None else int(np.count_nonzero(mask))
        if admitted == 0 or k <= 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        if admitted == n:
            mask = None
        k = min(k, admitted)
        if mask is None and self._gpu is not None:
            scores, slots = self._gpu.search(self._index, q, k)
        elif mask is not None and self.kind == "hnsw" and admitted <= EXACT_FILTER_LIMIT:
            return self._exact_hnsw_subset(q, k, mask)
        else:
            with _omp_threads(1):
                scores, slots = self._cpu_search(q, k, mask, admitted)
        keep = slots[0] >= 0
        return scores[0][keep].astype(np.float32), slots[0][keep].astype(np.int64)

    def _cpu_search(
        self, q: FloatArray, k: int, mask: npt.NDArray[np.bool_] | None, admitted: int
    ) -> tuple[FloatArray, IdArray]:
        sel: Any = None
        bitmap = None
        if mask is not None:
            # Bit i of byte i >> 3 (little bit order) admits slot i; tombstones are -1.
            bitmap = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
        elif self._dead:
            sel = faiss.IDSelectorRange(0, _INT64_MAX)
        if self.kind == "hnsw":
            params: Any = _faiss.SearchParametersHNSW(efSearch=max(self.hnsw.ef_search, k))
            if sel is not None:
                params.sel = sel
        elif self._trained:
            nprobe = min(self.ivf.nprobe, self.ivf.nlist)
            if mask is not None:
                # Probe more cells the fewer vectors the filter admits, so that about
                # as many admitted vectors are scanned as without a filter.
                nprobe = min(self.ivf.nlist, math.ceil(nprobe * self.ntotal / admitted))
            params = _faiss.SearchParametersIVF(nprobe=nprobe)
            if sel is not None:
                params.sel = sel
        else:
            params = _faiss.SearchParameters(sel=sel) if sel is not None else None
        scores, slots = self._index.search(q, k, params=params)
        del sel, bitmap  # kept alive until here: params only borrows them
        return scores, slots

    def _exact_hnsw_subset(
        self, q: FloatArray, k: int, mask: npt.NDArray[np.bool_]
    ) -> tuple[FloatArray, IdArray]:
        """Exact top-``k`` over the admitted slots of an HNSW index (its flat storage)."""
        id_map = faiss.vector_to_array(self._index.id_map)
        admit = np.append(mask, False)  # id -1 (a tombstone) reads the appended False
        positions = np.flatnonzero(admit[id_map])
        storage = _faiss.downcast_index(_faiss.downcast_index(self._index.index).storage)
        sims = flat_vectors(storage)[positions] @ q[0]
        top = np.argsort(-sims, kind="stable")[:k]
        return sims[top].astype(np.float32), id_map[positions[top]].astype(np.int64)

    # ---- snapshots -------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write an atomic snapshot of the index, its table and ``applied_seq``."""
        from vidseek.storage.vector_index.snapshot import write_snapshot

        write_snapshot(self, path)

    @classmethod
    def load(
        cls,
        path: Path,
        dim: int,
        kind: str = "flat",
        hnsw: HnswParams | None = None,
        gpu: GpuMirror | None = None,
        *,
        ivf: IvfParams | None = None,
        auto: AutoParams | None = None,
        auto_train: bool = True,
    ) -> VectorIndex:
        """Load a snapshot; raises :class:`~.snapshot.SnapshotError` if it is
        unusable, of an older format, or of another dimension, kind, HNSW degree
        or trained ``ivf`` ``nlist`` (the caller then rebuilds from SQL)."""
        from vidseek.storage.vector_index.snapshot import read_snapshot

        return read_snapshot(
            cls(dim, kind, hnsw, gpu, ivf=ivf, auto=auto, auto_train=auto_train),
            path,
            requested_ivf=ivf,
            requested_hnsw=hnsw,
        )
