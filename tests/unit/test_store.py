"""One storage suite, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from tests.support.storage import (
    BACKENDS,
    add_video,
    database,
    new_events,
    new_window,
    unit_vector,
)
from vidseek.storage.errors import ConfigError, InvalidArgument, NotFound
from vidseek.storage.store import (
    NewEvent,
    NewWindow,
    Store,
    event_id_for,
    rebuild_snapshot,
)
from vidseek.storage.vector_index import HnswParams, IvfParams, SnapshotError, VectorIndex

DIM = 8


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store]:
    s = Store(db_url, tmp_path / "faiss.index", DIM)
    yield s
    s.close()


def _vec(seed: int) -> np.ndarray:
    return unit_vector(seed, DIM)


def _video(store: Store, h: str = "ab" * 32) -> str:
    return add_video(store, h)


def _window(video_id: str, h: str, idx: int, status: str = "parsed") -> NewWindow:
    return new_window(video_id, h, idx, status)


def _events(idx: int, n: int = 3) -> list[NewEvent]:
    return new_events(idx, DIM, n)


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
            event_id_for(_window(vid, h, i).id, j) for i in range(2) for j in range(3)
        }
    finally:
        s2.close()


def test_corrupt_snapshot_is_rebuilt_from_sql(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
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
        # The rebuilt index is saved at once: the next start needs no rebuild.
        assert VectorIndex.load(path, DIM).ntotal == 3
    finally:
        s2.close(snapshot=False)
    path.write_bytes(b"garbage" * 100)
    s3 = Store(db_url, path, DIM)
    assert s3.index.ntotal == 3
    s3.close()
    caplog.clear()
    with caplog.at_level("WARNING"):
        Store(db_url, path, DIM).close()
    assert "rebuilding" not in caplog.text


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


# ---- keyword search -------------------------------------------------------------------

TEXTS = [
    "a man opens the front door",
    "an x-ray image of a hand",
    "the café is closed for the night",
    "日本語のテキストです",
    "a red car drives down the street",
    'he said "hello" and NEAR the AND gate',
]


def _text_store(store: Store, h: str = "ab" * 32) -> tuple[str, dict[int, str]]:
    vid = _video(store, h)
    w = _window(vid, h, 0)
    store.commit_window(w, new_events(0, DIM, len(TEXTS), texts=TEXTS))
    return vid, {event_id_for(w.id, i): t for i, t in enumerate(TEXTS)}


def test_keyword_search_finds_stemmed_words_best_first(store: Store):
    _, by_id = _text_store(store)
    hits = store.keyword_search("opening doors", 5)
    assert [by_id[i] for i, _ in hits] == ["a man opens the front door"]
    hits = store.keyword_search("red car door", 5)
    # Two matching words beat one.
    assert [by_id[i] for i, _ in hits] == [
        "a red car drives down the street",
        "a man opens the front door",
    ]
    assert hits[0][1] > hits[1][1] > 0
    assert [by_id[i] for i, _ in store.keyword_search("CAFÉ", 5)] == [TEXTS[2]]
    assert [by_id[i] for i, _ in store.keyword_search("日本語のテキストです", 5)] == [TEXTS[3]]
    assert len(store.keyword_search("red car door", 1)) == 1


def test_any_queries_leave_out_common_words_in_a_large_corpus(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    from vidseek.storage import fulltext

    vid = _video(store)
    texts = [f"a man kicks a ball number {i}" for i in range(40)] + ["a zebra eats grass"]
    texts += ["a zebra kicks a ball"]
    w = _window(vid, "ab" * 32, 0)
    store.commit_window(w, new_events(0, DIM, len(texts), texts=texts))
    by_id = {event_id_for(w.id, i): t for i, t in enumerate(texts)}
    everything = {by_id[i] for i, _ in store.keyword_search("zebra ball", 100)}
    assert everything == set(texts)  # a small corpus: every word counts
    monkeypatch.setattr(fulltext, "PRUNE_MIN_DOCS", 10)
    counted: list[str] = []
    count = store._keywords.doc_count
    monkeypatch.setattr(
        store._keywords, "doc_count", lambda conn, t: counted.append(t) or count(conn, t)
    )
    # "ball" is in 41 of 42 events: left out of the OR; "zebra" decides.
    assert {by_id[i] for i, _ in store.keyword_search("zebra ball", 100)} == {
        "a zebra eats grass",
        "a zebra kicks a ball",
    }
    # Only common words: ANDed rather than dropped.
    assert {by_id[i] for i, _ in store.keyword_search("ball kicks", 100)} == set(texts) - {
        "a zebra eats grass"
    }
    store.keyword_search("zebra ball", 100)
    assert sorted(counted) == ["ball", "kicks", "zebra"]  # each word counted once


HOSTILE_QUERIES = [
    '"',
    '"unbalanced',
    "x-ray",
    "-ray",
    "foo*",
    "NEAR(a b)",
    "AND OR NOT",
    "col:val",
    "text:door",
    "^door",
    "{a b} + (c)",
    "'; DROP TABLE events; --",
    "\\x00 \u0000 nul",
    "",
    "   \t\n",
    "🙂🙂",
    "door" * 3000,
    " ".join(f"w{i}" for i in range(500)),
]


def test_keyword_search_is_safe_for_any_text(store: Store):
    _, by_id = _text_store(store)
    for query in HOSTILE_QUERIES:
        hits = store.keyword_search(query, 10)
        assert all(i in by_id for i, _ in hits), query
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert [by_id[i] for i, _ in store.keyword_search("x-ray", 10)] == [TEXTS[1]]
    # A column filter in FTS5 syntax is just two words here.
    assert TEXTS[0] in [by_id[i] for i, _ in store.keyword_search("text:door", 10)]
    assert [by_id[i] for i, _ in store.keyword_search('say "hello', 10)] == [TEXTS[5]]
    assert len(store.keyword_search("door", 5)) == 1  # the tables are intact


def test_keyword_search_all_words_mode(store: Store):
    _, by_id = _text_store(store)
    assert [by_id[i] for i, _ in store.keyword_search("red door", 5, match="all")] == []
    assert len(store.keyword_search("red door", 5)) == 2
    hits = store.keyword_search("the red cars", 5, match="all")  # "the": a stop word on PG
    assert [by_id[i] for i, _ in hits] == [TEXTS[4]]
    for query in HOSTILE_QUERIES:
        assert all(i in by_id for i, _ in store.keyword_search(query, 5, match="all"))
    with pytest.raises(InvalidArgument, match="match"):
        store.keyword_search("door", 5, match="some")


def test_keyword_search_ignores_stop_words_unless_nothing_else_is_left(store: Store):
    _, by_id = _text_store(store)
    # "a" and "the" are in most texts; only the content word decides, on both engines.
    assert [by_id[i] for i, _ in store.keyword_search("a the street", 10)] == [TEXTS[4]]
    # Only stop words: nothing on PostgreSQL (its parser drops them), and on SQLite
    # the words themselves are searched rather than nothing.
    hits = store.keyword_search("the", 10)
    if store.engine.dialect.name == "sqlite":
        assert {by_id[i] for i, _ in hits} == {t for t in TEXTS if " the " in f" {t} "}
    else:
        assert hits == []


def test_keyword_search_filters_videos_and_forgets_deleted_events(store: Store):
    a, by_a = _text_store(store, "aa" * 32)
    b, by_b = _text_store(store, "bb" * 32)
    assert {i for i, _ in store.keyword_search("door", 10)} == {
        i for i, t in {**by_a, **by_b}.items() if "door" in t
    }
    only_b = store.keyword_search("door", 10, video_ids=[b])
    assert [i for i, _ in only_b] == [i for i, t in by_b.items() if "door" in t]
    assert store.keyword_search("door", 10, video_ids=[]) == []
    assert store.keyword_search("door", 10, video_ids=["nope"]) == []
    store.delete_video(a)
    assert {i for i, _ in store.keyword_search("door", 10)} == {
        i for i, t in by_b.items() if "door" in t
    }


def test_failed_commit_leaves_no_trace(store: Store):
    h = "9a" * 32
    vid = _video(store, h)
    bad = [*new_events(0, DIM, 2), NewEvent(9.0, 10.0, "bad", np.ones(DIM + 1, np.float32))]
    with pytest.raises(InvalidArgument, match="embedding"):
        store.commit_window(_window(vid, h, 0), bad)
    nan = [NewEvent(1.0, 2.0, "nan", np.full(DIM, np.nan, np.float32))]
    with pytest.raises(InvalidArgument):
        store.commit_window(_window(vid, h, 0), nan)
    assert store.committed_window_ids(vid) == set()
    assert store.index.ntotal == 0 and store.keyword_search("event", 5) == []


# ---- vector search and index kinds ----------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_vector_search_with_video_filter(db_url: str, tmp_path: Path, kind: str):
    s = Store(db_url, tmp_path / "faiss.index", DIM, index_kind=kind)
    try:
        a, b = _video(s, "a1" * 32), _video(s, "b1" * 32)
        wa, wb = _window(a, "a1" * 32, 0), _window(b, "b1" * 32, 0)
        s.commit_window(wa, new_events(0, DIM, 4, seed=1))
        s.commit_window(wb, new_events(0, DIM, 4, seed=2))
        target = new_events(0, DIM, 4, seed=2)[3].embedding
        assert s.vector_search(target, 1)[0][0] == event_id_for(wb.id, 3)
        hits = s.vector_search(target, 10, video_ids=[a])
        assert sorted(i for i, _ in hits) == sorted(event_id_for(wa.id, i) for i in range(4))
        assert [x for _, x in hits] == sorted((x for _, x in hits), reverse=True)
        assert s.vector_search(target, 10, video_ids=[]) == []
    finally:
        s.close()


def test_hnsw_store_deletes_reingests_and_compacts(db_url: str, tmp_path: Path):
    params = HnswParams(max_dead_fraction=0.3)
    s = Store(db_url, tmp_path / "faiss.index", DIM, index_kind="hnsw", hnsw=params)
    try:
        hs = [f"{i:02x}" * 32 for i in range(4)]
        vids = [_video(s, h) for h in hs]
        for k, (v, h) in enumerate(zip(vids, hs, strict=True)):
            s.commit_window(_window(v, h, 0), new_events(0, DIM, 5, seed=k))
        s.delete_video(vids[0])  # 5 of 20 dead: below the threshold
        assert s.index.dead == 5 and s.index.ntotal == 15
        gone = {event_id_for(_window(vids[0], hs[0], 0).id, i) for i in range(5)}
        for e in new_events(0, DIM, 5, seed=0):
            assert not gone & {i for i, _ in s.vector_search(e.embedding, 20)}
        # The same ids come back with new vectors: the tombstoned nodes must not answer.
        again = _video(s, hs[0])
        s.commit_window(_window(again, hs[0], 0), new_events(0, DIM, 5, seed=9))
        for e in new_events(0, DIM, 5, seed=9):
            assert s.vector_search(e.embedding, 1)[0][1] == pytest.approx(1.0, abs=1e-5)
        s.delete_video(vids[1])  # 10 dead of 25 nodes: over 0.3, background rebuild
        s.wait_for_rebuild(timeout=60)
        assert s.index.dead == 0 and s.index.ntotal == 15
        assert s.snapshot() is False  # the rebuild wrote one
        on_disk = VectorIndex.load(tmp_path / "faiss.index", DIM, "hnsw")
        assert on_disk.dead == 0 and set(on_disk.ids().tolist()) == set(s.index.ids().tolist())
    finally:
        s.close()


def test_ivf_store_trains_from_commits_and_from_sql(db_url: str, tmp_path: Path):
    params = IvfParams(nlist=4, nprobe=4)  # trains at 39 * 4 = 156 vectors; probes all
    s = Store(db_url, tmp_path / "faiss.index", DIM, index_kind="ivf", ivf=params)
    try:
        h = "9a" * 32
        vid = _video(s, h)
        for w in range(3):
            s.commit_window(_window(vid, h, w), new_events(w, DIM, 50))
        assert s.index.ntotal == 150 and not s.index.trained
        untrained = s.index
        s.commit_window(_window(vid, h, 3), new_events(3, DIM, 50))
        # The commit crossing 39 * nlist started a background rebuild that trains.
        s.wait_for_rebuild(timeout=60)
        assert s.index is not untrained and not untrained.trained
        assert s.index.trained and s.index.ntotal == 200
        target = new_events(2, DIM, 50)[7].embedding
        wid = _window(vid, h, 2).id
        assert s.vector_search(target, 1)[0][0] == event_id_for(wid, 7)
        old_ids = s.index.ids().tolist()
        assert s.rebuild_index() == 200
        assert s.index.trained and s.index.ids().tolist() == old_ids
        assert s.vector_search(target, 1)[0][0] == event_id_for(wid, 7)
        s.delete_video(vid)
        assert s.index.ntotal == 0 and s.vector_search(target, 5) == []
        assert not s.index.needs_compaction  # IVF removes physically: no tombstones
    finally:
        s.close()
    on_disk = VectorIndex.load(tmp_path / "faiss.index", DIM, "ivf", ivf=params)
    assert on_disk.trained and on_disk.ntotal == 0


def test_offline_ivf_rebuild_trains_on_every_row(db_url: str, tmp_path: Path):
    s = Store(db_url, tmp_path / "a.index", DIM)
    h = "4b" * 32
    vid = _video(s, h)
    for w in range(4):
        s.commit_window(_window(vid, h, w), new_events(w, DIM, 50))
    s.close()
    params = IvfParams(nlist=4, nprobe=2)
    assert rebuild_snapshot(db_url, tmp_path / "b.index", index_kind="ivf", ivf=params) == 200
    loaded = VectorIndex.load(tmp_path / "b.index", DIM, "ivf")
    assert loaded.trained and loaded.ivf == params and loaded.applied_seq == s.index.applied_seq
    assert set(loaded.ids().tolist()) == set(s.index.ids().tolist())
    # Reopening with another nlist refuses the snapshot and rebuilds from SQL.
    s2 = Store(
        db_url, tmp_path / "b.index", DIM, index_kind="ivf", ivf=IvfParams(nlist=2, nprobe=2)
    )
    try:
        assert s2.index.trained and s2.index.ivf.nlist == 2 and s2.index.ntotal == 200
    finally:
        s2.close()


def test_changing_index_kind_rebuilds_from_sql(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    h = "7c" * 32
    s1 = Store(db_url, tmp_path / "faiss.index", DIM)
    vid = _video(s1, h)
    s1.commit_window(_window(vid, h, 0), _events(0))
    s1.close()
    with caplog.at_level(logging.WARNING):
        s2 = Store(db_url, tmp_path / "faiss.index", DIM, index_kind="hnsw")
    try:
        assert "'flat' index, wanted 'hnsw'" in caplog.text
        assert s2.index.kind == "hnsw" and s2.index.ntotal == 3
    finally:
        s2.close()
    assert VectorIndex.load(tmp_path / "faiss.index", DIM, "hnsw").ntotal == 3


def test_rebuild_swaps_in_a_fresh_index_and_snapshots(store: Store):
    h = "5d" * 32
    vid = _video(store, h)
    for i in range(3):
        store.commit_window(_window(vid, h, i), _events(i))
    old = store.index
    assert store.rebuild_index() == 9
    assert store.index is not old
    assert store.index.ids().tolist() == old.ids().tolist()
    assert store.index.applied_seq == old.applied_seq
    assert store.snapshot() is False  # unchanged since the rebuild's snapshot
    store.commit_window(_window(vid, h, 3), _events(3))
    assert store.snapshot() is True


def test_offline_rebuild_snapshot(db_url: str, tmp_path: Path):
    h = "6e" * 32
    s = Store(db_url, tmp_path / "a.index", DIM)
    vid = _video(s, h)
    s.commit_window(_window(vid, h, 0), _events(0))
    s.close()
    assert rebuild_snapshot(db_url, tmp_path / "b.index", index_kind="hnsw") == 3
    loaded = VectorIndex.load(tmp_path / "b.index", DIM, "hnsw")
    assert loaded.ntotal == 3 and loaded.applied_seq == s.index.applied_seq
    with pytest.raises(ConfigError, match="kind"):
        rebuild_snapshot(db_url, tmp_path / "c.index", index_kind="lsh")


def test_dimension_mismatch_is_a_clear_error(db_url: str, tmp_path: Path):
    h = "8f" * 32
    s = Store(db_url, tmp_path / "faiss.index", DIM)
    vid = _video(s, h)
    s.commit_window(_window(vid, h, 0), _events(0))
    s.close()
    (tmp_path / "faiss.index").unlink()
    with pytest.raises(ConfigError, match="different embedder"):
        Store(db_url, tmp_path / "faiss.index", DIM * 2)


def test_unknown_index_kind_and_gpu_without_gpu_are_config_errors(db_url: str, tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown index kind"):
        Store(db_url, tmp_path / "faiss.index", DIM, index_kind="lsh")
    with pytest.raises(ConfigError, match="GPU"):
        Store(db_url, tmp_path / "faiss.index", DIM, use_gpu=True)
    s = Store(db_url, tmp_path / "faiss.index", DIM)  # auto: CPU when FAISS sees no GPU
    assert s.index.gpu is None
    s.close()


def test_second_writer_process_changes_reach_the_first_by_catch_up(db_url: str, tmp_path: Path):
    """Two stores on one database (two processes in production), writing concurrently."""
    s1 = Store(db_url, tmp_path / "one.index", DIM)
    s2 = Store(db_url, tmp_path / "two.index", DIM)
    try:
        errors: list[BaseException] = []

        def write(s: Store, h: str, seed: int) -> None:
            try:
                vid = _video(s, h)
                for i in range(8):
                    s.commit_window(_window(vid, h, i), new_events(i, DIM, 2, seed=seed))
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=write, args=(s1, "c1" * 32, 1)),
            threading.Thread(target=write, args=(s2, "c2" * 32, 2)),
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            s1.catch_up()  # a replica catching up while both write
        for t in threads:
            t.join()
        assert not errors
        s1.catch_up()
        s2.catch_up()
        with s1.engine.connect() as conn:
            sql_ids = {int(r[0]) for r in conn.execute(text("SELECT id FROM events"))}
        assert len(sql_ids) == 32
        assert set(s1.index.ids().tolist()) == sql_ids == set(s2.index.ids().tolist())
    finally:
        s1.close()
        s2.close()


def test_storage_public_api_is_pinned():
    """Server and indexer code import these names; changing them is an API change."""
    from vidseek.storage import fulltext, gpu, locks, schema, store, sync, vector_index

    assert {
        m.__name__.rsplit(".", 1)[1]: sorted(m.__all__)
        for m in (fulltext, gpu, locks, schema, store, sync, vector_index)
    } == {
        "fulltext": [
            "COMMON_FRACTION",
            "KeywordSearch",
            "MATCH_MODES",
            "MAX_QUERY_TOKENS",
            "MAX_WORD_DOCS",
            "PRUNE_MIN_DOCS",
            "STOP_WORDS",
            "TokenFrequencies",
            "content_tokens",
            "for_dialect",
            "query_tokens",
            "word_tokens",
        ],
        "gpu": ["GpuConverter", "GpuMirror", "gpu_count", "make_gpu_converter"],
        "locks": ["DirectoryLock", "ReadWriteLock"],
        "schema": [
            "HEAD",
            "MIGRATIONS_DIR",
            "REVISIONS",
            "SchemaStatus",
            "check_schema",
            "head_revision",
            "include_object",
            "schema_status",
            "upgrade_database",
        ],
        "store": [
            "EventRecord",
            "NewEvent",
            "NewWindow",
            "Store",
            "VideoRecord",
            "build_index_from_sql",
            "catch_up_index",
            "collection_name",
            "event_id_for",
            "rebuild_snapshot",
            "window_id_for",
        ],
        "sync": ["build_index_from_sql", "catch_up_index", "rebuild_snapshot"],
        "vector_index": [
            "AutoParams",
            "EXACT_FILTER_LIMIT",
            "EventFilter",
            "EventHits",
            "EventTable",
            "HnswParams",
            "INDEX_KINDS",
            "IvfParams",
            "SnapshotError",
            "VectorIndex",
        ],
    }
    for m in (fulltext, gpu, locks, schema, store, sync, vector_index):
        for name in m.__all__:
            assert hasattr(m, name), f"{m.__name__}.{name}"
