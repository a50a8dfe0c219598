"""The FAISS GPU mirror on a real GPU (``faiss-gpu``): same answers as the CPU, deletes honoured.

Skipped without CUDA (tests/conftest.py). Checks what the CPU tests can only
simulate with a cloning stand-in: that ``faiss.index_cpu_to_gpu`` copies of the
store's flat index return the CPU index's exact neighbours, pick up adds
incrementally, are re-uploaded after a delete (GPU indexes cannot remove ids)
so a deleted id never comes back, and survive concurrent searches and writes.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.storage import add_video, new_events, new_window, unit_vector
from vidseek.storage.gpu import gpu_count
from vidseek.storage.store import Store

pytestmark = pytest.mark.gpu

DIM = 384
WINDOWS = 40
PER_WINDOW = 50  # 2,000 events per video


def _fill(store: Store, content_hash: str, seed: int) -> str:
    vid = add_video(store, content_hash)
    for w in range(WINDOWS):
        store.commit_window(
            new_window(vid, content_hash, w), new_events(w, DIM, PER_WINDOW, seed=seed)
        )
    return vid


@pytest.fixture
def stores(tmp_path: Path):
    if gpu_count() == 0:
        pytest.fail("CUDA is visible but FAISS sees no GPU: install faiss-gpu, not faiss-cpu")
    url = f"sqlite:///{tmp_path / 'v.db'}"
    gpu = Store(url, tmp_path / "gpu.index", DIM, use_gpu=True)
    try:
        yield gpu, url, tmp_path
    finally:
        gpu.close()


def _cpu_answer(url: str, path: Path, q: np.ndarray, k: int) -> list[tuple[int, float]]:
    cpu = Store(url, path, DIM, use_gpu=False)
    try:
        return cpu.vector_search(q, k)
    finally:
        cpu.close(snapshot=False)


def test_gpu_search_matches_the_cpu_and_never_returns_deleted_ids(stores):
    gpu, url, tmp = stores
    mirror = gpu.index.gpu
    assert mirror is not None
    a = _fill(gpu, "aa" * 32, seed=1)
    _fill(gpu, "bb" * 32, seed=2)
    queries = [unit_vector(10_000 + i, DIM) for i in range(20)]
    for q in queries:
        got = gpu.vector_search(q, 10)
        want = _cpu_answer(url, tmp / f"cpu{time.monotonic_ns()}.index", q, 10)
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-4)
    assert mirror.searches >= 20 and mirror.uploads == 1

    # Adds reach the device copy without a re-upload.
    c = _fill(gpu, "cc" * 32, seed=3)
    probe = gpu.timeline(c, 0.0, None)[0]
    vec = new_events(0, DIM, PER_WINDOW, seed=3)[0].embedding
    assert gpu.vector_search(vec, 1)[0][0] == probe.id
    assert mirror.uploads == 1

    # A delete makes the copy stale: the next search re-uploads, the ids are gone.
    deleted = set(gpu.event_ids_of_videos([a]).tolist())
    assert gpu.delete_video(a) == WINDOWS * PER_WINDOW
    for q in queries:
        assert not {i for i, _ in gpu.vector_search(q, 50)} & deleted
    assert mirror.uploads == 2


def test_gpu_mirror_under_concurrent_searches_and_commits(stores):
    gpu, _, _ = stores
    _fill(gpu, "aa" * 32, seed=1)
    errors: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:
        rng = np.random.default_rng(threading.get_ident() % 2**32)
        try:
            while not stop.is_set():
                q = rng.standard_normal(DIM).astype(np.float32)
                hits = gpu.vector_search(q / np.linalg.norm(q), 10)
                assert len(hits) == 10
                assert all(a[1] >= b[1] - 1e-5 for a, b in itertools.pairwise(hits))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=search) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        b = _fill(gpu, "bb" * 32, seed=2)
        gpu.delete_video(b)
        _fill(gpu, "cc" * 32, seed=3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[0]
    assert gpu.index.ntotal == 2 * WINDOWS * PER_WINDOW
