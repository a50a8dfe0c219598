"""One writer, many readers: searches keep answering during ingestion and rebuilds."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from tests.support.storage import add_video, database, new_events, new_window
from vidseek.storage.store import Store, event_id_for

DIM = 32


# The index kind does not depend on the database: HNSW runs on SQLite only.
CASES = [
    ("sqlite", "flat"),
    ("sqlite", "hnsw"),
    pytest.param("postgres", "flat", marks=pytest.mark.postgres),
]


@pytest.mark.parametrize(("backend", "kind"), CASES)
def test_searches_answer_during_commits_deletes_and_rebuilds(
    backend: str, kind: str, tmp_path: Path
):
    with database(backend, tmp_path) as url:
        _run(url, tmp_path, kind)


def _run(db_url: str, tmp_path: Path, kind: str) -> None:
    store = Store(db_url, tmp_path / "faiss.index", DIM, index_kind=kind)
    try:
        base, doomed = "b0" * 32, "d0" * 32
        vid, gone = add_video(store, base), add_video(store, doomed)
        for i in range(3):  # 3,000 events to start from
            store.commit_window(new_window(vid, base, i), new_events(i, DIM, 1000, seed=1))
        store.commit_window(new_window(gone, doomed, 0), new_events(0, DIM, 50, seed=2))
        queries = [e.embedding for e in new_events(0, DIM, 20, seed=1)]

        stop = threading.Event()
        phase = {"writing": False, "rebuilding": False}
        answered = {"writing": 0, "rebuilding": 0, "total": 0}
        errors: list[BaseException] = []
        count_lock = threading.Lock()

        def searcher(n: int) -> None:
            try:
                while not stop.is_set():
                    q = queries[n % len(queries)]
                    hits = store.vector_search(q, 10)
                    scores = [s for _, s in hits]
                    assert len(hits) == 10 and scores == sorted(scores, reverse=True)
                    found = store.hydrate([i for i, _ in hits])
                    # A deleted id may still be in FAISS for an instant; SQL drops it.
                    assert set(found) <= {i for i, _ in hits}
                    assert store.keyword_search(f"event {n % 30}-{n % 20}", 3)
                    with count_lock:
                        answered["total"] += 1
                        for p, on in phase.items():
                            answered[p] += on
                    n += 1
                    time.sleep(0.002)  # let the writer have the GIL now and then
            except BaseException as exc:
                errors.append(exc)
                stop.set()

        def rebuilder() -> None:
            try:
                for _ in range(2):
                    phase["rebuilding"] = True
                    store.rebuild_index()
                    phase["rebuilding"] = False
                    time.sleep(0.05)
            except BaseException as exc:
                errors.append(exc)

        readers = [threading.Thread(target=searcher, args=(n,)) for n in range(3)]
        for t in readers:
            t.start()
        rebuild = threading.Thread(target=rebuilder)
        phase["writing"] = True
        rebuild.start()
        new_ids = []
        for i in range(6, 30):  # the one writer: commits and a delete meanwhile
            w = new_window(vid, base, i)
            store.commit_window(w, new_events(i, DIM, 20, seed=1))
            new_ids += [event_id_for(w.id, j) for j in range(20)]
            if i == 15:
                store.delete_video(gone)
        phase["writing"] = False
        rebuild.join()
        stop.set()
        for t in readers:
            t.join()

        assert not errors, errors[0]
        assert answered["writing"] > 0 and answered["rebuilding"] > 0, answered
        with store.engine.connect() as conn:
            sql_ids = {int(r[0]) for r in conn.execute(text("SELECT id FROM events"))}
        assert len(sql_ids) == 3000 + 24 * 20
        assert set(store.index.ids().tolist()) == sql_ids
        for j, e in enumerate(new_events(29, DIM, 20, seed=1)):
            (best, score), *_ = store.vector_search(e.embedding, 1)
            assert best == new_ids[-20 + j] and score == pytest.approx(1.0, abs=1e-5)
        assert np.isin(store.event_ids_of_videos([gone]), store.index.ids()).sum() == 0
    finally:
        store.close()
