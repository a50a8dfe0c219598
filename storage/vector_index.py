"""The FAISS vector index: event ids and L2-normalised vectors only, derived from SQL.

Scores are inner products of normalised vectors, i.e. cosine similarities.
Three kinds:

``flat`` (default)
    ``IndexIDMap(IndexFlatIP)``: exact. Removal is physical (``remove_ids``,
    one O(n) pass per batch).
``hnsw``
    ``IndexIDMap(IndexHNSWFlat)``: approximate, for large corpora. HNSW graphs
    cannot remove nodes, so a removed id becomes a *tombstone*: its ``id_map``
    slot is overwritten with ``-1`` (plain ``IndexIDMap``, not ``IndexIDMap2``,
    whose reverse map would then disagree), and every search carries an
    ``IDSelector`` that only admits ids >= 0. Tombstones still cost graph
    traversal; once more than ``HnswParams.max_dead_fraction`` of the nodes are
    dead, :attr:`VectorIndex.needs_compaction` turns true and the store rebuilds
    the index from SQL in the background and swaps it in. A removed id that is
    added again gets a fresh node, so a stale vector can never answer for it.

    Trade-off, measured by ``benchmarks/storage_bench.py`` on a shared 2-core VM
    at 1M x 384-d (defaults M=32, efConstruction=40): search p50 1-3 ms against
    ~170 ms (CPU time) for flat, recall@10 0.84-0.92 for efSearch 128-512 on
    clustered synthetic data, build ~1,000 vectors/s (17 min for 1M), +~360 MiB
    of graph. A higher efConstruction buys recall with build time.
``ivf``
    ``IndexIVFFlat`` (inner product): approximate. k-means splits the space into
    ``IvfParams.nlist`` cells; a search scans the ``nprobe`` cells nearest the
    query, i.e. about ``nprobe/nlist`` of the vectors, exactly.

    *Training.* Cells need k-means on at least 39 vectors per cell, so a new
    index is an ``IndexIDMap(IndexFlatIP)`` and answers exactly, like ``flat``,
    until it holds ``39 * nlist`` vectors. The add that crosses that line trains
    it: k-means on a seeded sample of ``train_per_list * nlist`` vectors, drawn
    over the ids in sorted order, so the same vectors give the same cells in any
    insertion order; then every vector moves into its cell and the flat index is
    dropped. k-means runs without the write lock (searches go on, on the flat
    index); only the move blocks. The store turns ``auto_train`` off and rebuilds
    from SQL in the background instead, so no commit waits for k-means. A build
    from SQL (``Store.rebuild_index``, ``rebuild_snapshot``) loads everything
    first (:meth:`VectorIndex.bulk_load`) and trains once on a sample of all
    rows, so rebuilding also retrains cells that were trained on an early,
    smaller corpus. ``nlist`` is fixed once trained (a snapshot of another
    ``nlist`` is refused and rebuilt); ``nprobe`` is a search setting.

    *Deletes.* No tombstones: IVF stores the ids in its cells itself (no
    ``IndexIDMap``, whose ``remove_ids`` assumes the sub-index renumbers like
    ``IndexFlat``), and ``remove_ids`` removes physically, scanning the cells
    (O(n) per batch, like flat). No direct map: it would cost a hash table per
    vector to speed up removals that are already cheap next to a commit.

    Trade-off, measured by ``benchmarks/storage_bench.py`` on a shared 2-core VM
    at 1M x 384-d with nlist 1024: rebuild from SQL 31 s at load average 1 and
    77 s at 4.7 (read, train, add, snapshot; flat's read, build and snapshot
    alone took 15-26 s), search p50 2.0-2.8 ms at nprobe 16 and 3.9-4.6 ms at
    nprobe 32 against 115-130 ms of CPU time for flat, recall@10 1.000 at every
    nprobe measured (4-128) on both synthetic distributions. That data is easy
    for IVF (tight clusters). On real MiniLM
    caption embeddings (17K ActivityNet sentences) recall@10 reached 0.95 only
    with ~12% of the cells probed (nlist 128, nprobe 16): tune ``nprobe`` on
    real data. The cost of a search grows with ``nprobe * N / nlist``; ~4*sqrt(N)
    cells is the usual choice, and 1024 suits roughly 100K-2M vectors. Memory:
    the vectors and ids, as for flat, plus the centroids; training peaks at
    about twice the vectors.

Every index remembers ``applied_seq``: the last change-log sequence number it
reflects. Snapshots are one file written atomically (temp file, fsync, rename,
fsync of the directory) holding that number, a CRC of the FAISS blob and the
blob, so a loaded snapshot plus the change log after its number is always the
full state, and a torn or corrupted file is detected, never half-trusted.

Concurrency: searches share a read lock and run in parallel (FAISS releases the
GIL); adds and removals take the write lock.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from vidseek.storage.errors import ConfigError
from vidseek.storage.gpu import GpuMirror
from vidseek.storage.locks import ReadWriteLock

__all__ = ["INDEX_KINDS", "HnswParams", "IvfParams", "SnapshotError", "VectorIndex"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]

INDEX_KINDS = ("flat", "hnsw", "ivf")

_MAGIC_V1 = b"VSKFAISS1"  # skeleton format: IndexIDMap2(IndexFlatIP), no CRC
_MAGIC = b"VSKFAISS2"
_INT64_MAX = (1 << 63) - 1
_MIN_POINTS_PER_LIST = 39  # below this FAISS k-means warns and cells come out poor
# The bundled FAISS stubs lack the HNSW search parameters and the attributes of
# downcast index classes; go through an untyped alias for those.
_faiss: Any = faiss


class SnapshotError(Exception):
    """A snapshot on disk is missing, truncated, corrupt or of another shape."""


@dataclass(frozen=True)
class HnswParams:
    """Build and search parameters of the ``hnsw`` index kind.

    ``m``: graph degree (memory ~ 8*m bytes per vector on top of the vector);
    ``ef_construction``: build beam width (build time vs graph quality);
    ``ef_search``: search beam width (latency vs recall; raised to ``k`` if lower);
    ``max_dead_fraction``: share of tombstoned nodes that triggers a rebuild.
    """

    m: int = 32
    ef_construction: int = 40
    ef_search: int = 256
    max_dead_fraction: float = 0.2

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values FAISS would reject or misuse."""
        if self.m < 4 or self.ef_construction < 1 or self.ef_search < 1:
            raise ConfigError(f"HNSW parameters out of range: {self}")
        if not 0.0 < self.max_dead_fraction <= 1.0:
            raise ConfigError(f"max_dead_fraction must be in (0, 1], got {self.max_dead_fraction}")


@dataclass(frozen=True)
class IvfParams:
    """Training and search parameters of the ``ivf`` index kind.

    ``nlist``: number of k-means cells (fixed at training; search cost grows with
    N/nlist); ``nprobe``: cells scanned per search (latency vs recall; capped at
    ``nlist``); ``train_per_list``: training sample size per cell (FAISS wants at
    least 39; the index answers exactly until it holds ``39 * nlist`` vectors);
    ``niter``: k-means iterations; ``seed``: seeds the sample and k-means, so the
    same vectors always give the same cells.
    """

    nlist: int = 1024
    nprobe: int = 32
    train_per_list: int = 64
    niter: int = 10
    seed: int = 1234

    @property
    def train_threshold(self) -> int:
        """Vectors needed before the index trains (FAISS's minimum per cell, 39)."""
        return _MIN_POINTS_PER_LIST * self.nlist

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values FAISS would reject or misuse."""
        if self.nlist < 1 or self.nprobe < 1 or self.niter < 1:
            raise ConfigError(f"IVF parameters out of range: {self}")
        if self.train_per_list < _MIN_POINTS_PER_LIST:
            raise ConfigError(
                f"train_per_list must be >= {_MIN_POINTS_PER_LIST}, got {self.train_per_list}"
            )


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
    if kind in ("flat", "ivf"):  # an ivf index starts untrained, as a flat one
        return faiss.IndexIDMap(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, hnsw.m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = hnsw.ef_construction
        inner.hnsw.efSearch = hnsw.ef_search
        return faiss.IndexIDMap(inner)
    raise ConfigError(f"unknown index kind {kind!r}; expected one of {', '.join(INDEX_KINDS)}")


def _flat_vectors(index: Any) -> FloatArray:
    """The vectors of an ``IndexIDMap(IndexFlatIP)`` as a view (valid until it changes)."""
    n, d = int(index.ntotal), int(index.d)
    if n == 0:
        return np.empty((0, d), np.float32)
    flat = _faiss.downcast_index(index.index)
    arr: FloatArray = _faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)
    return arr


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


def _faiss_ids(index: Any) -> IdArray:
    """Every id stored in ``index`` (tombstones included), in storage order."""
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
    """A thread-safe FAISS index of event ids -> normalised vectors (see module doc)."""

    def __init__(
        self,
        dim: int,
        kind: str = "flat",
        hnsw: HnswParams | None = None,
        gpu: GpuMirror | None = None,
        *,
        ivf: IvfParams | None = None,
        auto_train: bool = True,
    ) -> None:
        self.dim = dim
        self.kind = kind
        self.hnsw = hnsw or HnswParams()
        self.hnsw.validate()
        self.ivf = ivf or IvfParams()
        self.ivf.validate()
        self._index = _new_faiss_index(dim, kind, self.hnsw)
        if gpu is not None and kind != "flat":
            raise ConfigError("GPU search is only available for the flat index kind")
        self._gpu = gpu
        self.applied_seq = 0
        # Live ids. Lets adds skip the O(n) removal pass when ids are new (the common
        # case), and makes `ntotal` and membership O(1). ~64 bytes per id.
        self._live: set[int] = set()
        self._dead = 0
        self._trained = False  # ivf: the IVF index has replaced the flat one
        self._defer_training = False
        self.auto_train = auto_train
        """``ivf``: train in the add that crosses the threshold (else the owner
        calls :meth:`train` or rebuilds when :attr:`needs_training`)."""
        self._lock = ReadWriteLock()
        self.version = 0
        """Bumped by every change; snapshots and GPU copies compare it."""
        self.saved_version = -1
        """``version`` of the last snapshot this object wrote or was loaded from."""

    # ---- state -----------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Number of live (searchable) vectors."""
        return len(self._live)

    @property
    def dead(self) -> int:
        """Tombstoned HNSW nodes still in the graph (always 0 for ``flat``)."""
        return self._dead

    @property
    def needs_compaction(self) -> bool:
        """True when tombstones exceed ``HnswParams.max_dead_fraction`` of the graph."""
        physical = int(self._index.ntotal)
        return self._dead > 0 and self._dead > self.hnsw.max_dead_fraction * physical

    @property
    def trained(self) -> bool:
        """``ivf`` only: True once searches go through the trained IVF cells."""
        return self._trained

    @property
    def needs_training(self) -> bool:
        """``ivf`` only: untrained, and holding enough vectors to train."""
        return self.kind == "ivf" and not self._trained and self.ntotal >= self.ivf.train_threshold

    @property
    def gpu(self) -> GpuMirror | None:
        """The GPU copy used for unfiltered searches, if any."""
        return self._gpu

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._live

    def ids(self) -> IdArray:
        """All live ids, sorted."""
        with self._lock.read():
            arr = _faiss_ids(self._index)
        return np.sort(arr[arr >= 0])

    # ---- changes ---------------------------------------------------------------------

    def add(
        self, ids: IdArray | Sequence[int], vectors: FloatArray, seq: int | None = None
    ) -> None:
        """Add (or replace) vectors under ``ids``; ``seq`` advances ``applied_seq``."""
        self.apply(add_ids=ids, add_vectors=vectors, seq=seq)

    def remove(self, ids: IdArray | Sequence[int], seq: int | None = None) -> int:
        """Remove ``ids``; returns how many were present."""
        return self.apply(remove_ids=ids, seq=seq)

    def apply(
        self,
        *,
        add_ids: IdArray | Sequence[int] = (),
        add_vectors: FloatArray | None = None,
        remove_ids: IdArray | Iterable[int] = (),
        seq: int | None = None,
    ) -> int:
        """Remove ``remove_ids``, then add or replace ``add_ids``, atomically for readers.

        Replays are idempotent: an id that is already present is replaced, never
        duplicated. Returns how many of ``remove_ids`` were present.
        """
        ids = np.ascontiguousarray(np.asarray(add_ids, dtype=np.int64).reshape(-1))
        if len(ids):
            if add_vectors is None:
                raise ValueError("add_ids given without add_vectors")
            vectors = np.ascontiguousarray(add_vectors, dtype=np.float32).reshape(-1, self.dim)
            if len(vectors) != len(ids):
                raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
            if len(np.unique(ids)) != len(ids):
                raise ValueError("duplicate ids in one add")
            if (ids < 0).any():
                raise ValueError("ids must be >= 0")
        else:
            vectors = np.empty((0, self.dim), np.float32)
        with self._lock.write():
            gone = {int(i) for i in remove_ids} & self._live
            replaced = {int(i) for i in ids} & self._live
            if gone or replaced:
                self._drop(gone | replaced)
            if len(ids):
                if len(ids) < _SMALL_BATCH:
                    with _omp_threads(1):
                        self._index.add_with_ids(vectors, ids)
                else:
                    self._index.add_with_ids(vectors, ids)
                self._live.update(int(i) for i in ids)
                if self._gpu is not None:
                    self._gpu.add(ids, vectors)
            if seq is not None:
                self.applied_seq = max(self.applied_seq, seq)
            if gone or replaced or len(ids) or seq is not None:
                self.version += 1
        if len(ids) and self.auto_train and not self._defer_training and self.needs_training:
            self.train()
        return len(gone)

    @contextmanager
    def bulk_load(self) -> Iterator[VectorIndex]:
        """Defer ``ivf`` training to the end of a bulk load (a build from SQL).

        Adds inside the block go to the exact flat index; on leaving it, the index
        trains once on a sample of everything loaded rather than on the first
        batches (which, read in insertion order, may be a few videos).
        """
        self._defer_training = True
        try:
            yield self
        finally:
            self._defer_training = False
        if self.needs_training:
            self.train()

    def train(self) -> bool:
        """Train an untrained ``ivf`` index and move its vectors into the IVF cells.

        Needs at least ``IvfParams.train_threshold`` vectors; returns whether it
        trained. k-means runs on a seeded sample of the vectors (drawn over the
        ids in sorted order, so the insertion order does not matter) without
        holding the write lock: searches and adds continue on the flat index.
        Only moving the vectors into the cells (about ``nlist`` inner products
        per vector) blocks them.
        """
        if self.kind != "ivf":
            raise ConfigError(f"a {self.kind!r} index needs no training")
        p = self.ivf
        with self._lock.read():
            if not self.needs_training:
                return False
            vectors = _flat_vectors(self._index)
            ids = faiss.vector_to_array(self._index.id_map)
            n = len(ids)
            rng = np.random.default_rng(p.seed)
            order = np.argsort(ids, kind="stable")
            ranks = np.sort(rng.choice(n, min(n, p.train_per_list * p.nlist), replace=False))
            sample = np.ascontiguousarray(vectors[order[ranks]])  # in id order
            del vectors
        ivf: Any = faiss.index_factory(self.dim, f"IVF{p.nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = p.seed
        ivf.cp.niter = p.niter
        ivf.train(sample)
        del sample
        ivf.nprobe = min(p.nprobe, p.nlist)
        with self._lock.write():
            if self._trained:
                return False
            # No IndexIDMap around IVF: IVF stores the ids itself, and IndexIDMap's
            # remove_ids assumes the sub-index renumbers like IndexFlat, which IVF
            # does not. No direct map either: remove_ids scans the lists (O(n) per
            # batch, like flat) and saves ~40 bytes per vector of hash table.
            _add_to_cells(
                ivf, _flat_vectors(self._index), faiss.vector_to_array(self._index.id_map)
            )
            self._index = ivf
            self._trained = True
            self.version += 1
        return True

    def _drop(self, present: set[int]) -> None:
        """Remove ids known to be live. Caller holds the write lock."""
        arr = np.fromiter(present, dtype=np.int64, count=len(present))
        if self.kind != "hnsw":
            self._index.remove_ids(faiss.IDSelectorBatch(arr))
        else:
            id_map = faiss.vector_to_array(self._index.id_map)
            hit = np.isin(id_map, arr)
            id_map[hit] = -1
            faiss.copy_array_to_vector(id_map, self._index.id_map)
            self._dead += int(hit.sum())
        self._live -= present
        if self._gpu is not None:
            self._gpu.invalidate()

    # ---- search ----------------------------------------------------------------------

    def search(
        self, query: FloatArray, k: int, allowed_ids: IdArray | None = None
    ) -> tuple[FloatArray, IdArray]:
        """Top-``k`` (scores, ids) for one query vector, best first; missing slots dropped.

        ``allowed_ids`` restricts results to those ids. On ``hnsw`` a very
        selective filter can return fewer than ``k`` hits (the graph walk meets few
        admitted nodes); use an exact scan of the allowed vectors for small sets.
        """
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        with self._lock.read():
            n = self.ntotal
            if n == 0 or k <= 0 or (allowed_ids is not None and len(allowed_ids) == 0):
                return np.empty(0, np.float32), np.empty(0, np.int64)
            k = min(k, n)
            if allowed_ids is None and self._gpu is not None:
                scores, ids = self._gpu.search(self._index, q, k)
            else:
                with _omp_threads(1):
                    scores, ids = self._cpu_search(q, k, allowed_ids)
        keep = ids[0] >= 0
        return scores[0][keep].astype(np.float32), ids[0][keep].astype(np.int64)

    def _cpu_search(
        self, q: FloatArray, k: int, allowed_ids: IdArray | None
    ) -> tuple[FloatArray, IdArray]:
        sel: Any = None
        if allowed_ids is not None:
            # Tombstones carry id -1, which no allowed id equals.
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_ids, dtype=np.int64))
        elif self._dead:
            sel = faiss.IDSelectorRange(0, _INT64_MAX)
        if self.kind == "hnsw":
            params: Any = _faiss.SearchParametersHNSW(efSearch=max(self.hnsw.ef_search, k))
            if sel is not None:
                params.sel = sel
        elif self._trained:
            params = _faiss.SearchParametersIVF(nprobe=min(self.ivf.nprobe, self.ivf.nlist))
            if sel is not None:
                params.sel = sel
        else:
            params = _faiss.SearchParameters(sel=sel) if sel is not None else None
        scores, ids = self._index.search(q, k, params=params)
        del sel  # kept alive until here: params only borrows it
        return scores, ids

    # ---- snapshots -------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write an atomic snapshot of the index and its ``applied_seq``.

        Serialises under the read lock (searches continue; writers wait for the
        in-memory copy only), then writes the file without holding it.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock.read():
            blob: Any = faiss.serialize_index(self._index)
            version = self.version
            meta = {
                "applied_seq": self.applied_seq,
                "dim": self.dim,
                "kind": self.kind,
                "hnsw": asdict(self.hnsw),
                "ivf": asdict(self.ivf),
                "trained": self._trained,
                "ntotal": int(self._index.ntotal),
                "live": self.ntotal,
            }
        view = memoryview(blob)
        header = json.dumps({**meta, "nbytes": len(view), "crc32": zlib.crc32(view)}).encode()
        _atomic_write(path, [_MAGIC, struct.pack("<I", len(header)), header, view])
        self.saved_version = version

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
        auto_train: bool = True,
    ) -> VectorIndex:
        """Load a snapshot; raises :class:`SnapshotError` if it is unusable, or of
        another dimension, kind, HNSW degree or trained IVF ``nlist`` (the caller
        then rebuilds from SQL).

        The file is read twice, streaming: once to verify length and checksum, then
        into FAISS. Garbage never reaches the deserialiser (a corrupt size field
        could make it allocate without bound), and memory peaks at one index.
        """
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed below; `with` would hide the error)
        except FileNotFoundError as exc:
            raise SnapshotError(f"no snapshot at {path}") from exc
        with f:
            magic = f.read(len(_MAGIC))
            if magic == _MAGIC_V1:
                return cls._load_v1(path, magic + f.read(), dim, kind, gpu)
            try:
                if magic != _MAGIC:
                    raise ValueError("bad magic")
                (hlen,) = struct.unpack("<I", f.read(4))
                meta = json.loads(f.read(hlen))
                start = f.tell()
                size = os.fstat(f.fileno()).st_size - start
                if size != int(meta["nbytes"]):
                    raise ValueError(f"truncated: {size} of {meta['nbytes']} bytes")
                crc = 0
                while chunk := f.read(1 << 24):
                    crc = zlib.crc32(chunk, crc)
                if crc != int(meta["crc32"]):
                    raise ValueError("checksum mismatch")
                if int(meta["dim"]) != dim:
                    raise SnapshotError(f"snapshot {path} has dimension {meta['dim']}, not {dim}")
                if meta["kind"] != kind:
                    raise SnapshotError(
                        f"snapshot {path} is a {meta['kind']!r} index, wanted {kind!r}"
                    )
                if kind == "hnsw" and hnsw is not None and int(meta["hnsw"]["m"]) != hnsw.m:
                    raise SnapshotError(
                        f"snapshot {path} has HNSW M={meta['hnsw']['m']}, wanted {hnsw.m}"
                    )
                trained = bool(meta.get("trained", False))
                wanted = ivf.nlist if ivf is not None else None
                if kind == "ivf" and trained and wanted not in (None, meta["ivf"]["nlist"]):
                    raise SnapshotError(
                        f"snapshot {path} has IVF nlist={meta['ivf']['nlist']}, wanted {wanted}"
                    )
                f.seek(start)
                index: Any = faiss.read_index(_faiss.PyCallbackIOReader(f.read))
                if isinstance(index, faiss.IndexIVF) != trained:
                    raise ValueError("index type and header disagree")
            except SnapshotError:
                raise
            except Exception as exc:  # FAISS raises RuntimeError; struct/json raise others
                raise SnapshotError(f"unreadable snapshot {path}: {exc}") from exc
        params = HnswParams(**meta["hnsw"]) if hnsw is None else hnsw
        if ivf is None and "ivf" in meta:
            ivf = IvfParams(**meta["ivf"])
        out = cls(dim, kind, params, gpu, ivf=ivf, auto_train=auto_train)
        id_map = _faiss_ids(index)
        if (
            index.d != dim
            or int(index.ntotal) != int(meta["ntotal"])
            or len(id_map) != index.ntotal
        ):
            raise SnapshotError(f"snapshot {path} and its metadata disagree")
        live = id_map[id_map >= 0]
        if kind != "hnsw" and len(live) != len(id_map):
            raise SnapshotError(f"snapshot {path}: {kind} index with tombstones")
        out._live = set(live.tolist())
        if len(out._live) != len(live) or len(live) != int(meta["live"]):
            raise SnapshotError(f"snapshot {path} holds duplicate or miscounted ids")
        if kind == "hnsw":
            graph = _faiss.downcast_index(index.index).hnsw
            graph.efSearch = out.hnsw.ef_search
            graph.efConstruction = out.hnsw.ef_construction
        if trained:
            index.nprobe = min(out.ivf.nprobe, out.ivf.nlist)
        out._index = index
        out._trained = trained
        out._dead = len(id_map) - len(live)
        out.applied_seq = int(meta["applied_seq"])
        out.saved_version = out.version
        if out.auto_train and out.needs_training:  # saved untrained with a larger nlist
            out.train()
        return out

    @classmethod
    def _load_v1(
        cls, path: Path, data: bytes, dim: int, kind: str, gpu: GpuMirror | None
    ) -> VectorIndex:
        """Read a skeleton-format snapshot (IndexIDMap2 over a flat index)."""
        if kind != "flat":
            raise SnapshotError(f"snapshot {path} is a 'flat' index, wanted {kind!r}")
        try:
            (hlen,) = struct.unpack_from("<I", data, len(_MAGIC_V1))
            start = len(_MAGIC_V1) + 4
            meta = json.loads(data[start : start + hlen])
            blob = memoryview(data)[start + hlen :]
            if len(blob) != int(meta["nbytes"]):
                raise ValueError(f"truncated: {len(blob)} of {meta['nbytes']} bytes")
            old: Any = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
            ids = faiss.vector_to_array(old.id_map).astype(np.int64)
            vectors = _faiss.downcast_index(old.index).reconstruct_n(0, int(old.ntotal))
        except Exception as exc:
            raise SnapshotError(f"unreadable snapshot {path}: {exc}") from exc
        if old.d != dim:
            raise SnapshotError(f"snapshot {path} has dimension {old.d}, expected {dim}")
        out = cls(dim, "flat", None, gpu)
        out.add(ids, vectors, seq=int(meta["applied_seq"]))
        return out


def _atomic_write(path: Path, chunks: Sequence[bytes | memoryview]) -> None:
    """Write ``chunks`` to ``path`` so that readers see the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
