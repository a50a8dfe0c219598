"""The FAISS vector index (flat and HNSW), its snapshots, GPU mirror and lock."""

from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from tests.support.storage import unit_vector
from vidseek.storage.errors import ConfigError
from vidseek.storage.gpu import GpuMirror, gpu_count, make_gpu_converter
from vidseek.storage.locks import ReadWriteLock
from vidseek.storage.vector_index import HnswParams, SnapshotError, VectorIndex

DIM = 16
KINDS = ["flat", "hnsw"]


def _vecs(ids: range | list[int], seed: int = 0) -> np.ndarray:
    return np.stack([unit_vector(seed * 100_003 + i, DIM) for i in ids])


@pytest.mark.parametrize("kind", KINDS)
def test_add_replace_remove_and_search(kind: str):
    idx = VectorIndex(DIM, kind)
    idx.add(list(range(50)), _vecs(range(50)), seq=3)
    assert idx.ntotal == 50 and idx.applied_seq == 3
    scores, ids = idx.search(_vecs([7])[0], 3)
    assert ids[0] == 7 and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert list(scores) == sorted(scores, reverse=True)
    # Replaying an add replaces the vector; it never duplicates the id.
    idx.add([7], _vecs([7], seed=1), seq=4)
    assert idx.ntotal == 50 and sorted(idx.ids().tolist()) == list(range(50))
    assert idx.search(_vecs([7], seed=1)[0], 1)[1].tolist() == [7]
    assert 7 not in idx.search(_vecs([7])[0], 50)[1][:1]
    assert idx.remove([7, 8, 999], seq=5) == 2
    assert idx.ntotal == 48 and idx.applied_seq == 5
    assert not {7, 8} & set(idx.search(_vecs([8])[0], 48)[1].tolist())
    assert len(idx.search(_vecs([8])[0], 100)[1]) == 48
    assert idx.remove([7]) == 0


def test_hnsw_tombstones_are_never_returned_and_trigger_compaction():
    idx = VectorIndex(DIM, "hnsw", HnswParams(max_dead_fraction=0.25))
    idx.add(list(range(100)), _vecs(range(100)))
    idx.remove(list(range(0, 20)))
    assert (idx.ntotal, idx.dead, idx.needs_compaction) == (80, 20, False)
    for q in range(20):
        _, ids = idx.search(_vecs([q])[0], 80)
        assert len(ids) == 80 and ids.min() >= 20
    idx.remove([20, 21, 22, 23, 24, 25])
    assert idx.needs_compaction
    # A removed id added again is live once, with its new vector.
    idx.add([3], _vecs([3], seed=5))
    assert idx.ntotal == 75 and idx.search(_vecs([3], seed=5)[0], 1)[1].tolist() == [3]
    assert idx.search(_vecs([3])[0], 75)[1].tolist().count(3) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_filtered_search_returns_only_allowed_ids(kind: str):
    idx = VectorIndex(DIM, kind)
    idx.add(list(range(200)), _vecs(range(200)))
    idx.remove([5])
    _, ids = idx.search(_vecs([3])[0], 10, allowed_ids=np.array([1, 2, 5, 150]))
    assert sorted(ids.tolist()) == [1, 2, 150]
    assert idx.search(_vecs([3])[0], 10, allowed_ids=np.array([], np.int64))[1].size == 0


def test_hnsw_recall_is_high_on_a_small_corpus():
    idx, flat = VectorIndex(DIM, "hnsw"), VectorIndex(DIM, "flat")
    x = _vecs(range(3000))
    idx.add(list(range(3000)), x)
    flat.add(list(range(3000)), x)
    queries = _vecs(range(50), seed=7)
    hits = sum(
        len(set(idx.search(q, 10)[1].tolist()) & set(flat.search(q, 10)[1].tolist()))
        for q in queries
    )
    assert hits / 500 >= 0.95


@pytest.mark.parametrize("kind", KINDS)
def test_snapshot_round_trip_keeps_ids_tombstones_and_seq(tmp_path: Path, kind: str):
    idx = VectorIndex(DIM, kind)
    idx.add(list(range(30)), _vecs(range(30)), seq=41)
    idx.remove([0, 1, 2], seq=42)
    idx.save(tmp_path / "i")
    back = VectorIndex.load(tmp_path / "i", DIM, kind)
    assert back.applied_seq == 42 and back.ids().tolist() == list(range(3, 30))
    assert back.dead == (3 if kind == "hnsw" else 0)
    assert back.search(_vecs([9])[0], 1)[1].tolist() == [9]
    assert back.saved_version == back.version
    other = "hnsw" if kind == "flat" else "flat"
    with pytest.raises(SnapshotError, match="wanted"):
        VectorIndex.load(tmp_path / "i", DIM, other)
    with pytest.raises(SnapshotError, match="dimension"):
        VectorIndex.load(tmp_path / "i", DIM * 2, kind)
    if kind == "hnsw":  # another graph degree needs a rebuild; other parameters do not
        with pytest.raises(SnapshotError, match="M=32"):
            VectorIndex.load(tmp_path / "i", DIM, kind, HnswParams(m=16))
        tuned = VectorIndex.load(tmp_path / "i", DIM, kind, HnswParams(ef_search=300))
        assert tuned.hnsw.ef_search == 300 and tuned.ntotal == 27
    with pytest.raises(SnapshotError, match="no snapshot"):
        VectorIndex.load(tmp_path / "missing", DIM, kind)


def test_corrupt_snapshots_are_detected(tmp_path: Path):
    idx = VectorIndex(DIM)
    idx.add(list(range(30)), _vecs(range(30)), seq=9)
    idx.save(tmp_path / "i")
    good = (tmp_path / "i").read_bytes()
    flipped = bytearray(good)
    flipped[-100] ^= 0xFF  # inside the vectors: FAISS would load it without complaint
    cases = {
        "truncated": good[: len(good) - 10],
        "checksum": bytes(flipped),
        "bad magic": b"garbage" * 100,
        "unreadable": good[:12],
    }
    for what, data in cases.items():
        (tmp_path / "bad").write_bytes(data)
        with pytest.raises(SnapshotError) as err:
            VectorIndex.load(tmp_path / "bad", DIM)
        assert what in str(err.value) or what == "unreadable", (what, err.value)


def test_skeleton_format_snapshot_still_loads(tmp_path: Path):
    """Snapshots of the first release: magic v1, IndexIDMap2 over a flat index, no CRC."""
    old = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    old.add_with_ids(_vecs(range(5)), np.arange(10, 15))
    blob = bytes(faiss.serialize_index(old))
    header = json.dumps({"applied_seq": 17, "dim": DIM, "ntotal": 5, "nbytes": len(blob)})
    data = b"VSKFAISS1" + struct.pack("<I", len(header)) + header.encode() + blob
    (tmp_path / "old").write_bytes(data)
    back = VectorIndex.load(tmp_path / "old", DIM)
    assert back.applied_seq == 17 and back.ids().tolist() == [10, 11, 12, 13, 14]
    assert back.search(_vecs([2])[0], 1)[1].tolist() == [12]
    with pytest.raises(SnapshotError):
        VectorIndex.load(tmp_path / "old", DIM, "hnsw")


def test_save_leaves_no_temp_file_and_replaces_atomically(tmp_path: Path):
    idx = VectorIndex(DIM)
    idx.add([1], _vecs([1]), seq=1)
    idx.save(tmp_path / "i")
    idx.add([2], _vecs([2]), seq=2)
    idx.save(tmp_path / "i")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i"]
    assert VectorIndex.load(tmp_path / "i", DIM).applied_seq == 2


# ---- GPU mirror ------------------------------------------------------------------------


class _CloneConverter:
    """Stands in for faiss.index_cpu_to_gpu on CPU-only machines: an independent copy
    that, like a GPU index, is only ever added to (removal raises)."""

    def __init__(self) -> None:
        self.uploads = 0

    def __call__(self, index: Any) -> Any:
        self.uploads += 1
        copy = faiss.clone_index(index)

        class NoRemove:
            def add_with_ids(self, x: Any, ids: Any) -> None:
                copy.add_with_ids(x, ids)

            def search(self, q: Any, k: int) -> Any:
                return copy.search(q, k)

            def remove_ids(self, _sel: Any) -> int:
                raise RuntimeError("GPU indexes cannot remove ids")

        return NoRemove()


def test_gpu_mirror_serves_unfiltered_searches_and_reuploads_after_removals():
    convert = _CloneConverter()
    mirror = GpuMirror(convert)
    idx = VectorIndex(DIM, "flat", gpu=mirror)
    idx.add(list(range(40)), _vecs(range(40)))
    assert idx.search(_vecs([4])[0], 1)[1].tolist() == [4]
    assert (convert.uploads, mirror.searches) == (1, 1)
    idx.add([100], _vecs([100]))  # adds go to the copy incrementally
    assert idx.search(_vecs([100])[0], 1)[1].tolist() == [100]
    assert convert.uploads == 1 and mirror.current
    idx.remove([100, 4])  # a removal makes the copy stale; it must not answer
    assert not mirror.current
    assert not {4, 100} & set(idx.search(_vecs([4])[0], 40)[1].tolist())
    assert convert.uploads == 2
    # Filtered searches stay on the CPU.
    before = mirror.searches
    assert idx.search(_vecs([5])[0], 3, allowed_ids=np.array([5]))[1].tolist() == [5]
    assert mirror.searches == before


def test_gpu_mirror_is_safe_under_concurrent_searches_and_writes():
    mirror = GpuMirror(_CloneConverter())
    idx = VectorIndex(DIM, "flat", gpu=mirror)
    idx.add(list(range(100)), _vecs(range(100)))
    stop = threading.Event()
    bad: list[object] = []

    def search() -> None:
        while not stop.is_set():
            _, ids = idx.search(_vecs([1])[0], 5)
            if len(set(ids.tolist())) != len(ids) or (ids >= 1000).any():
                bad.append(ids)

    readers = [threading.Thread(target=search) for _ in range(3)]
    for t in readers:
        t.start()
    for i in range(100, 160):
        idx.add([i], _vecs([i]))
        if i % 10 == 0:
            idx.remove([i - 50])
    stop.set()
    for t in readers:
        t.join()
    assert not bad and mirror.searches > 0
    _, ids = idx.search(_vecs([1])[0], 200)
    assert sorted(ids.tolist()) == sorted(idx.ids().tolist())


@pytest.mark.skipif(gpu_count() > 0, reason="checks the CPU-only build")
def test_gpu_converter_needs_a_gpu_build():
    with pytest.raises(ConfigError, match="faiss-gpu"):
        make_gpu_converter()
    with pytest.raises(ConfigError, match="flat"):
        VectorIndex(DIM, "hnsw", gpu=GpuMirror(_CloneConverter()))


# ---- readers-writer lock ---------------------------------------------------------------


def test_readers_share_the_lock_and_a_writer_waits_for_them():
    lock = ReadWriteLock()
    inside = threading.Barrier(3, timeout=5)
    log: list[str] = []

    def reader() -> None:
        with lock.read():
            inside.wait()  # all three readers are inside at once
            time.sleep(0.05)
            log.append("r")

    def writer() -> None:
        with lock.write():
            log.append("w")

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    with lock.read():
        inside.wait()
    w = threading.Thread(target=writer)
    w.start()
    for t in [*readers, w]:
        t.join()
    assert log == ["r", "r", "w"]


def test_a_waiting_writer_blocks_new_readers():
    lock = ReadWriteLock()
    order: list[str] = []
    reading = threading.Event()
    release = threading.Event()

    def first_reader() -> None:
        with lock.read():
            reading.set()
            release.wait(5)
            order.append("r1")

    def writer() -> None:
        with lock.write():
            order.append("w")

    def late_reader() -> None:
        with lock.read():
            order.append("r2")

    t1 = threading.Thread(target=first_reader)
    t1.start()
    reading.wait(5)
    tw = threading.Thread(target=writer)
    tw.start()
    while not lock._writers_waiting:  # the writer is queued
        time.sleep(0.001)
    t2 = threading.Thread(target=late_reader)
    t2.start()
    time.sleep(0.05)
    release.set()
    for t in (t1, tw, t2):
        t.join()
    assert order == ["r1", "w", "r2"]
