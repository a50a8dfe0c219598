"""One storage suite, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from vidseek.storage.errors import NotFound
from vidseek.storage.store import NewEvent, NewWindow, Store, event_id_for, window_id_for
from vidseek.storage.vector_index import SnapshotError, VectorIndex

DIM = 8
PG_URL = os.environ.get("VIDSEEK_TEST_POSTGRES_URL", "")


def _postgres_url() -> str:
    if not PG_URL:
        pytest.skip("VIDSEEK_TEST_POSTGRES_URL not set")
    schema = "t_" + uuid.uuid4().hex[:10]
    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'v.db'}"
    return _postgres_url()


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store]:
    s = Store(db_url, tmp_path / "faiss.index", DIM)
    yield s
    s.close()


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _video(store: Store, h: str = "ab" * 32) -> str:
    return store.upsert_video(uri="/v.mp4", content_hash=h, duration=120.0, fps=30.0,
                              width=640, height=360, frame_count=3600)


def _window(video_id: str, h: str, idx: int, status: str = "parsed") -> NewWindow:
    start, end = idx * 60.0, idx * 60.0 + 60.0
    return NewWindow(id=window_id_for(h, start, end, "m", "p1"), video_id=video_id,
                     window_index=idx, start_seconds=start, end_seconds=end, frame_count=60,
                     status=status, raw_output="{}", parse_error="", dropped=[], model="m",
                     prompt_version="p1", prompt_tokens=100)


def _events(idx: int, n: int = 3) -> list[NewEvent]:
    return [NewEvent(start_seconds=idx * 60.0 + i, end_seconds=idx * 60.0 + i + 5,
                     text=f"event {idx}-{i}", embedding=_vec(idx * 100 + i)) for i in range(n)]


def test_commit_window_is_idempotent_and_searchable(store: Store):
    h = "ab" * 32
    vid = _video(store, h)
    w = _window(vid, h, 0)
    assert store.commit_window(w, _events(0)) is True
    assert store.commit_window(w, _events(0)) is False  # same window again: nothing added
    assert store.index.ntotal == 3
    assert store.committed_window_ids(vid) == {w.id}
    scores, ids = store.index.search(_vec(1), 1)
    assert int(ids[0]) == event_id_for(w.id, 1)
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    got = store.hydrate([int(ids[0])])[int(ids[0])]
    assert (got.text, got.start_seconds, got.end_seconds) == ("event 0-1", 1.0, 6.0)
    assert store.get_video(vid).event_count == 3


def test_upsert_video_by_content_hash_is_stable(store: Store):
    a = _video(store, "cd" * 32)
    b = _video(store, "cd" * 32)
    assert a == b and len(store.list_videos(0, 10)) == 1


def test_delete_video_removes_rows_and_vectors(store: Store):
    h = "ef" * 32
    vid = _video(store, h)
    store.commit_window(_window(vid, h, 0), _events(0))
    store.commit_window(_window(vid, h, 1), _events(1))
    assert store.delete_video(vid) == 6
    assert store.index.ntotal == 0
    with pytest.raises(NotFound):
        store.get_video(vid)
    with pytest.raises(NotFound):
        store.delete_video(vid)


def test_restart_catches_up_from_change_log(db_url: str, tmp_path: Path):
    h = "12" * 32
    s1 = Store(db_url, tmp_path / "faiss.index", DIM)
    vid = _video(s1, h)
    s1.commit_window(_window(vid, h, 0), _events(0))
    s1.snapshot()  # snapshot holds window 0 only
    s1.commit_window(_window(vid, h, 1), _events(1))
    s1.engine.dispose()  # "crash": no final snapshot

    s2 = Store(db_url, tmp_path / "faiss.index", DIM)
    try:
        assert s2.index.ntotal == 6
        assert set(map(int, s2.index.ids())) == {
            event_id_for(_window(vid, h, i).id, j) for i in range(2) for j in range(3)}
    finally:
        s2.close()


def test_corrupt_snapshot_is_rebuilt_from_sql(db_url: str, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture):
    h = "34" * 32
    path = tmp_path / "faiss.index"
    s1 = Store(db_url, path, DIM)
    vid = _video(s1, h)
    s1.commit_window(_window(vid, h, 0), _events(0))
    s1.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with caplog.at_level("WARNING"):
        s2 = Store(db_url, path, DIM)
    try:
        assert s2.index.ntotal == 3
        assert "rebuilding from SQL" in caplog.text
    finally:
        s2.close()
    path.write_bytes(b"garbage" * 100)
    s3 = Store(db_url, path, DIM)
    assert s3.index.ntotal == 3
    s3.close()


def test_hydrate_drops_ids_sql_does_not_know(store: Store):
    before = store.unknown_ids_dropped
    assert store.hydrate([123456789]) == {}
    assert store.unknown_ids_dropped == before + 1


def test_timeline_is_in_time_order_and_filtered(store: Store):
    h = "56" * 32
    vid = _video(store, h)
    store.commit_window(_window(vid, h, 1), _events(1))
    store.commit_window(_window(vid, h, 0), _events(0))
    all_events = store.timeline(vid, 0.0, None)
    assert [e.start_seconds for e in all_events] == sorted(e.start_seconds for e in all_events)
    assert [e.text for e in store.timeline(vid, 60.5, 61.5)] == ["event 1-0", "event 1-1"]


def test_vector_index_snapshot_round_trip(tmp_path: Path):
    idx = VectorIndex(DIM)
    idx.add(np.array([5, 7]), np.stack([_vec(5), _vec(7)]), seq=42)
    idx.save(tmp_path / "i")
    back = VectorIndex.load(tmp_path / "i", DIM)
    assert back.applied_seq == 42 and sorted(back.ids().tolist()) == [5, 7]
    with pytest.raises(SnapshotError, match="dimension"):
        VectorIndex.load(tmp_path / "i", DIM * 2)
    with pytest.raises(SnapshotError, match="no snapshot"):
        VectorIndex.load(tmp_path / "missing", DIM)


def test_vector_index_filter_restricts_results():
    idx = VectorIndex(DIM)
    idx.add(np.arange(10), np.stack([_vec(i) for i in range(10)]))
    _, ids = idx.search(_vec(3), 5, allowed_ids=np.array([1, 2]))
    assert sorted(ids.tolist()) == [1, 2]
