"""The FAISS vector index (flat, HNSW and IVF), its snapshots, GPU mirror and lock."""

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
from vidseek.storage.vector_index import HnswParams, IvfParams, SnapshotError, VectorIndex

DIM = 16
KINDS = ["flat", "hnsw", "ivf"]
# 16 cells: the index trains once it holds 39 * 16 = 624 vectors.
SMALL_IVF = IvfParams(nlist=16, nprobe=4)


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
    for other in set(KINDS) - {kind}:
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


def _clustered(n: int, seed: int, centres: int = 40) -> np.ndarray:
    """Unit vectors around ``centres`` random centres (cosine ~0.8 within a cluster)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, DIM)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centres, n)] + 0.5 * rng.standard_normal((n, DIM)).astype(
        np.float32
    ) / np.sqrt(DIM)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _recall(idx: VectorIndex, exact: VectorIndex, queries: np.ndarray, k: int = 10) -> float:
    hits = sum(
        len(set(idx.search(q, k)[1].tolist()) & set(exact.search(q, k)[1].tolist()))
        for q in queries
    )
    return hits / (k * len(queries))


def _flat_and_ivf(x: np.ndarray, params: IvfParams = SMALL_IVF) -> tuple[VectorIndex, VectorIndex]:
    flat, ivf = VectorIndex(DIM, "flat"), VectorIndex(DIM, "ivf", ivf=params)
    flat.add(list(range(len(x))), x)
    ivf.add(list(range(len(x))), x)
    return flat, ivf


def test_ivf_answers_exactly_until_it_trains_at_the_threshold():
    x = _clustered(700, seed=1)
    flat, ivf = VectorIndex(DIM, "flat"), VectorIndex(DIM, "ivf", ivf=SMALL_IVF)
    flat.add(list(range(623)), x[:623])
    ivf.add(list(range(623)), x[:623])
    assert not ivf.trained and not ivf.needs_training
    queries = _clustered(20, seed=2)
    for q in queries:  # untrained: the very same answers as flat, scores included
        s1, i1 = ivf.search(q, 10)
        s2, i2 = flat.search(q, 10)
        assert i1.tolist() == i2.tolist() and np.allclose(s1, s2)
    version = ivf.version
    ivf.add([623], x[623:624])  # the 624th vector crosses 39 * nlist
    assert ivf.trained and ivf.version > version + 1  # training counts as a change
    assert ivf.ntotal == 624 and ivf.ids().tolist() == list(range(624))
    flat.add([623], x[623:624])
    assert _recall(ivf, flat, queries) < 1.0  # nprobe 4 of 16 cells: approximate now
    ivf.ivf = IvfParams(nlist=16, nprobe=16)  # every cell probed: exact again
    assert _recall(ivf, flat, queries) == 1.0
    ivf.add(list(range(624, 700)), x[624:])  # later adds go straight into the cells
    assert ivf.ntotal == 700 and ivf.search(x[650], 1)[1].tolist() == [650]


def test_ivf_recall_against_flat_on_clustered_data():
    flat, ivf = _flat_and_ivf(_clustered(4000, seed=3), IvfParams(nlist=32, nprobe=8))
    assert ivf.trained
    queries = _clustered(50, seed=4)
    assert _recall(ivf, flat, queries) >= 0.95
    ivf.ivf = IvfParams(nlist=32, nprobe=1)
    assert _recall(ivf, flat, queries) < 0.95  # the cells are not the whole answer


def test_ivf_remove_and_replace_after_training():
    x = _clustered(800, seed=5)
    flat, ivf = _flat_and_ivf(x)
    assert ivf.trained
    gone = list(range(0, 800, 7))
    assert ivf.remove([*gone, 5000], seq=3) == len(gone)
    flat.remove(gone)
    assert ivf.ntotal == 800 - len(gone) and ivf.applied_seq == 3 and ivf.dead == 0
    assert ivf.ids().tolist() == flat.ids().tolist()
    ivf.ivf = IvfParams(nlist=16, nprobe=16)
    for i in gone[:20]:
        _, ids = ivf.search(x[i], 50)
        assert not set(gone) & set(ids.tolist())
        assert ids.tolist() == flat.search(x[i], 50)[1].tolist()
    # A replaced vector answers under its id once, with the new vector only.
    ivf.add([1], x[701:702])
    _, ids = ivf.search(x[701], 2)
    assert sorted(ids.tolist()) == [1, 701]
    assert 1 not in ivf.search(x[1], 1)[1].tolist()
    assert ivf.remove([1]) == 1 and ivf.remove([1]) == 0


def test_ivf_filtered_search_after_training():
    x = _clustered(1000, seed=6)
    flat, ivf = _flat_and_ivf(x, IvfParams(nlist=16, nprobe=16))
    allowed = np.arange(3, 1000, 10)
    for q in _clustered(10, seed=7):
        _, ids = ivf.search(q, 10, allowed_ids=allowed)
        assert set(ids.tolist()) <= set(allowed.tolist()) and len(ids) == 10
        assert ids.tolist() == flat.search(q, 10, allowed_ids=allowed)[1].tolist()
    ivf.ivf = IvfParams(nlist=16, nprobe=1)  # fewer cells: still only allowed ids
    _, ids = ivf.search(x[3], 10, allowed_ids=allowed)
    assert ids[0] == 3 and set(ids.tolist()) <= set(allowed.tolist())


def test_ivf_snapshot_round_trip_after_training(tmp_path: Path):
    x = _clustered(900, seed=8)
    _, ivf = _flat_and_ivf(x)
    ivf.remove([10, 11], seq=7)
    ivf.save(tmp_path / "i")
    back = VectorIndex.load(tmp_path / "i", DIM, "ivf")
    assert back.trained and back.ivf == SMALL_IVF and back.applied_seq == 7
    assert back.ids().tolist() == ivf.ids().tolist()
    for q in _clustered(10, seed=9):
        assert back.search(q, 10)[1].tolist() == ivf.search(q, 10)[1].tolist()
    # nprobe is a search setting; nlist is baked into the cells.
    wide = VectorIndex.load(tmp_path / "i", DIM, "ivf", ivf=IvfParams(nlist=16, nprobe=16))
    assert wide.ivf.nprobe == 16 and wide.trained
    with pytest.raises(SnapshotError, match="nlist=16"):
        VectorIndex.load(tmp_path / "i", DIM, "ivf", ivf=IvfParams(nlist=64))
    with pytest.raises(SnapshotError, match="wanted 'flat'"):
        VectorIndex.load(tmp_path / "i", DIM, "flat")
    with pytest.raises(SnapshotError, match="dimension"):
        VectorIndex.load(tmp_path / "i", DIM * 2, "ivf")


def test_untrained_ivf_snapshot_trains_on_load_with_a_smaller_nlist(tmp_path: Path):
    x = _clustered(300, seed=10)
    _, ivf = _flat_and_ivf(x)
    assert not ivf.trained
    ivf.save(tmp_path / "i")
    same = VectorIndex.load(tmp_path / "i", DIM, "ivf")
    assert not same.trained and same.ntotal == 300
    small = VectorIndex.load(tmp_path / "i", DIM, "ivf", ivf=IvfParams(nlist=4, nprobe=4))
    assert small.trained and small.ids().tolist() == list(range(300))
    assert small.saved_version != small.version  # the trained index needs a new snapshot


def test_ivf_training_is_seeded_and_independent_of_insertion_order():
    x = _clustered(1500, seed=11)
    ids = np.arange(1500)
    perm = np.random.default_rng(0).permutation(1500)
    a, b = VectorIndex(DIM, "ivf", ivf=SMALL_IVF), VectorIndex(DIM, "ivf", ivf=SMALL_IVF)
    with a.bulk_load():
        for i in range(0, 1500, 500):
            a.add(ids[i : i + 500], x[i : i + 500])
        assert not a.trained  # deferred to the end of the bulk load
    with b.bulk_load():
        b.add(ids[perm], x[perm])
    assert a.trained and b.trained

    def centroids(idx: VectorIndex) -> np.ndarray:
        q: Any = faiss.downcast_index(idx._index.quantizer)
        return np.asarray(q.reconstruct_n(0, q.ntotal))

    assert np.array_equal(centroids(a), centroids(b))
    other = VectorIndex(DIM, "ivf", ivf=IvfParams(nlist=16, nprobe=4, seed=99))
    other.add(ids, x)
    assert not np.array_equal(centroids(a), centroids(other))


def test_ivf_training_swaps_in_under_concurrent_searches():
    x = _clustered(1300, seed=12)
    idx = VectorIndex(DIM, "ivf", ivf=IvfParams(nlist=16, nprobe=16))  # all cells: exact
    idx.add(list(range(600)), x[:600])
    stop = threading.Event()
    bad: list[object] = []

    def search() -> None:
        while not stop.is_set():
            ids = idx.search(x[5], 10)[1]
            if len(ids) != 10 or ids[0] != 5 or len(set(ids.tolist())) != 10:
                bad.append(ids)

    readers = [threading.Thread(target=search) for _ in range(2)]
    for t in readers:
        t.start()
    for i in range(600, 1300, 50):  # crosses 624 on the first add: trains mid-stream
        idx.add(list(range(i, i + 50)), x[i : i + 50])
    stop.set()
    for t in readers:
        t.join()
    assert idx.trained and not bad
    assert idx.ids().tolist() == list(range(1300))


def test_ivf_parameters_are_validated():
    for bad in (IvfParams(nlist=0), IvfParams(nprobe=0), IvfParams(train_per_list=10)):
        with pytest.raises(ConfigError):
            VectorIndex(DIM, "ivf", ivf=bad)
    with pytest.raises(ConfigError, match="no training"):
        VectorIndex(DIM, "flat").train()


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


def test_older_snapshot_formats_are_refused_for_a_rebuild(tmp_path: Path):
    """Snapshots without the event table (magic v1, v2) cannot describe their hits:
    loading refuses them, and the store rebuilds the index from SQL."""
    old = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    old.add_with_ids(_vecs(range(5)), np.arange(10, 15))
    blob = bytes(faiss.serialize_index(old))
    header = json.dumps({"applied_seq": 17, "dim": DIM, "ntotal": 5, "nbytes": len(blob)})
    for magic in (b"VSKFAISS1", b"VSKFAISS2"):
        data = magic + struct.pack("<I", len(header)) + header.encode() + blob
        (tmp_path / "old").write_bytes(data)
        with pytest.raises(SnapshotError, match="older format"):
            VectorIndex.load(tmp_path / "old", DIM)


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


def _assert_same_context(a: dict[str, tuple[int, float]], b: dict[str, tuple[int, float]]):
    assert a.keys() == b.keys()
    for video, (count, cosine) in a.items():
        assert b[video][0] == count
        assert b[video][1] == pytest.approx(cosine, abs=1e-6)


def _expected_context(vectors: dict[int, np.ndarray], owner: dict[int, str], q: np.ndarray):
    out: dict[str, tuple[int, float]] = {}
    for video in sorted(set(owner.values())):
        mine = [vectors[i] for i in vectors if owner[i] == video]
        if mine:
            total = np.sum(mine, axis=0)
            out[video] = (len(mine), float(total @ q / np.linalg.norm(total)))
    return out


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("flat", SMALL_IVF),
        ("hnsw", SMALL_IVF),
        ("ivf", SMALL_IVF),  # 700 vectors: trained, vectors in the cells
        ("ivf", IvfParams(nlist=16, nprobe=4, encoding="sq8")),
    ],
)
def test_video_context_follows_adds_replacements_removals_and_snapshots(
    tmp_path: Path, kind: str, params: IvfParams
):
    n = 700
    idx = VectorIndex(DIM, kind, ivf=params)
    x = _vecs(range(n), seed=5)
    owner = {i: f"v{i % 7}" for i in range(n)}
    idx.add(list(range(n)), x, videos=[owner[i] for i in range(n)])
    assert kind != "ivf" or idx.trained
    vectors = {i: x[i].astype(np.float64) for i in range(n)}
    # Replace an event's vector, and remove all of one video and part of another.
    idx.add([3], _vecs([3], seed=9), videos=["v3"])
    vectors[3] = _vecs([3], seed=9)[0].astype(np.float64)
    gone = [i for i in range(n) if owner[i] == "v1"] + [5, 12, 19]
    idx.remove(gone)
    for i in gone:
        del vectors[i]
    q = _vecs([10_000])[0]
    expected = _expected_context(vectors, owner, q)
    assert "v1" not in expected
    tolerance = 0.02 if params.encoding == "sq8" else 1e-5  # SQ8 stores 8-bit values
    idx.save(tmp_path / "i")
    loaded = VectorIndex.load(tmp_path / "i", DIM, kind, ivf=params)
    # What a process keeps as it goes equals what a fresh load sums (no drift, even
    # where the index stores 8-bit codes).
    _assert_same_context(
        idx.video_context(q, list(expected)), loaded.video_context(q, list(expected))
    )
    for index in (idx, loaded):
        got = index.video_context(q, [f"v{k}" for k in range(7)] + ["nope"])
        assert got.keys() == expected.keys()
        for video, (count, cosine) in expected.items():
            assert got[video][0] == count
            assert got[video][1] == pytest.approx(cosine, abs=tolerance)


def test_video_context_follows_an_event_that_moves_to_another_video():
    idx = VectorIndex(DIM, "flat")
    x = _vecs(range(4), seed=2)
    idx.add([0, 1, 2, 3], x, videos=["a", "a", "b", "b"])
    idx.apply(add_ids=[1], add_vectors=x[1:2], videos=["b"], remove_ids=[3])
    q = x[1]
    got = idx.video_context(q, ["a", "b"])
    assert got["a"] == (1, pytest.approx(float(x[0] @ q), abs=1e-5))
    total = x[1] + x[2]
    assert got["b"] == (2, pytest.approx(float(total @ q / np.linalg.norm(total)), abs=1e-5))


def test_video_context_survives_training_into_8_bit_cells():
    params = IvfParams(nlist=16, nprobe=16, encoding="sq8")
    idx = VectorIndex(DIM, "ivf", ivf=params, auto_train=False)
    x = _vecs(range(700), seed=4)
    idx.add(list(range(700)), x, videos=[f"v{i % 5}" for i in range(700)])
    q = _vecs([5000])[0]
    before = idx.video_context(q, [f"v{k}" for k in range(5)])
    assert idx.train()
    after = idx.video_context(q, [f"v{k}" for k in range(5)])
    for video, (count, cosine) in before.items():
        assert after[video][0] == count
        assert after[video][1] == pytest.approx(cosine, abs=0.02)  # now the 8-bit values
    idx.remove(list(range(0, 700, 3)))
    rebuilt = VectorIndex(DIM, "ivf", ivf=params)
    rebuilt._index, rebuilt._table, rebuilt._trained = idx._index, idx._table, True
    rebuilt.rebuild_totals()
    _assert_same_context(idx.video_context(q, list(before)), rebuilt.video_context(q, list(before)))
