"""Search on few, long videos: bounded reads, filters pushed into FAISS, the auto index.

The corpus is 5 videos of 10,000 events each (50K events, hours per video), with
a word-hashing embedder (tests.support.long_videos). The reference below ranks
with the documented candidate rules over *every* event (numpy over the SQL
embeddings), so it checks that the bounded path returns the same moments.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, select

from tests.support.long_videos import WordHashEmbedder, commit_long_videos
from vidseek.server.search import (
    RankingParams,
    ScoredEvent,
    SearchQuery,
    SearchService,
    flatten,
    rank_videos,
)
from vidseek.storage.models import EventRow
from vidseek.storage.store import EventRecord, Store
from vidseek.storage.vector_index import AutoParams

QUERIES = ["man rides horse", "dog swims river quickly", "woman sings stage", "red car"]


@pytest.fixture(scope="module")
def long_corpus(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Store, WordHashEmbedder, dict[str, list[tuple[float, float, str]]]]]:
    root: Path = tmp_path_factory.mktemp("long")
    embedder = WordHashEmbedder()
    store = Store(f"sqlite:///{root / 'v.db'}", root / "i", embedder.dim, index_kind="flat")
    events = commit_long_videos(store, embedder)
    yield store, embedder, events
    store.close()


class Reads:
    """Counts SQL statements and the event rows search reads at the store boundary."""

    def __init__(self, store: Store) -> None:
        self.statements = 0
        self.event_rows = 0
        self.hydrated = 0
        self._store = store
        event.listen(store.engine, "before_cursor_execute", self._count)
        self._texts, self._hydrate = store.event_texts, store.hydrate
        store.event_texts = self._event_texts  # type: ignore[method-assign]
        store.hydrate = self._hydrate_spy  # type: ignore[method-assign]

    def _count(self, *_: Any) -> None:
        self.statements += 1

    def _event_texts(self, ids: Any) -> dict[int, str]:
        out = self._texts(ids)
        self.event_rows += len(out)
        return out

    def _hydrate_spy(self, ids: Any) -> dict[int, EventRecord]:
        out = self._hydrate(ids)
        self.hydrated += len(out)
        return out

    def close(self) -> None:
        event.remove(self._store.engine, "before_cursor_execute", self._count)
        del self._store.event_texts, self._store.hydrate  # back to the class methods


@pytest.mark.parametrize(
    ("query", "bound"),
    [
        (SearchQuery("man rides horse", top_k=10), 10),
        (SearchQuery("dog swims river", top_k=3, group_by_video=True, moments_per_video=4), 12),
        (SearchQuery("woman sings", top_k=5, start_seconds=1000.0, end_seconds=9000.0), 5),
    ],
)
def test_search_reads_rows_bounded_by_the_page_not_the_library(long_corpus, query, bound):
    store, embedder, _ = long_corpus
    service = SearchService(store, embedder)
    service.search_page(query)  # counts the query words' document frequencies (cached)
    reads = Reads(store)
    try:
        page = service.search_page(query)
    finally:
        reads.close()
    assert page.moments and all(m.description for m in page.moments)
    # Texts are read for the page's moments only; nothing is hydrated through the ORM.
    assert reads.event_rows <= bound and reads.hydrated == 0
    # Keyword leg, page texts, video URIs: a handful of statements, not one per event.
    assert reads.statements <= 4


def _reference(
    store: Store,
    embedder: WordHashEmbedder,
    q: SearchQuery,
    videos: set[str] | None,
    p: RankingParams,
) -> list[tuple[str, float, float, tuple[int, ...]]]:
    """The documented dense-only candidate rules, exhaustively over every event."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(
                EventRow.id,
                EventRow.video_id,
                EventRow.start_seconds,
                EventRow.end_seconds,
                EventRow.embedding,
            )
        ).all()
    vec = embedder.embed([q.text])[0]
    admitted = [
        r
        for r in rows
        if (videos is None or r[1] in videos)
        and (q.start_seconds is None or r[3] >= q.start_seconds)
        and (q.end_seconds is None or r[2] <= q.end_seconds)
    ]
    sims = np.array([float(np.frombuffer(r[4], np.float32) @ vec) for r in admitted])
    order = sorted(range(len(admitted)), key=lambda i: (-sims[i], admitted[i][0]))
    top = order[: p.dense_candidates]
    candidates: list[str] = []
    for i in top:
        if admitted[i][1] not in candidates:
            candidates.append(admitted[i][1])
    candidates = candidates[: p.candidate_videos]
    pooled = [i for i in order if admitted[i][1] in candidates][
        : len(candidates) * p.events_per_video
    ]
    events = [
        ScoredEvent(EventRecord(r[0], r[1], r[2], r[3], ""), float(sims[i]))
        for i in pooled
        for r in [admitted[i]]
    ]
    moments = flatten(rank_videos(events, p, depth=q.top_k + 1))[: q.top_k]
    return [(m.video_id, m.start_seconds, m.end_seconds, m.event_ids) for m in moments]


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"video": 1},
        {"collection": "b"},
        {"start_seconds": 7200.0, "end_seconds": 10800.0},
        {"collection": "a", "start_seconds": 20000.0},
        {"video": 3, "end_seconds": 600.0},
    ],
)
def test_filtered_search_matches_an_exhaustive_reference(long_corpus, filters):
    store, embedder, events = long_corpus
    service = SearchService(store, embedder, keyword=False)
    ids = sorted(events)
    f = dict(filters)
    video_ids: tuple[str, ...] = ()
    videos: set[str] | None = None
    if "video" in f:
        video_ids = (ids[f.pop("video")],)
        videos = set(video_ids)
    if "collection" in f:
        videos = set(store.video_ids_in_collection(f["collection"]))
    for text in QUERIES:
        q = SearchQuery(text, top_k=8, min_score=-1.0, video_ids=video_ids, **f)
        got = [(m.video_id, m.start_seconds, m.end_seconds, m.event_ids) for m in service.search(q)]
        assert got == _reference(store, embedder, q, videos, service.params), (text, filters)
        for vid, start, end, _ in got:
            assert videos is None or vid in videos
            assert q.start_seconds is None or end >= q.start_seconds
            assert q.end_seconds is None or start <= q.end_seconds


def test_hybrid_search_respects_filters_on_long_videos(long_corpus):
    store, embedder, events = long_corpus
    service = SearchService(store, embedder)
    target = sorted(events)[2]
    q = SearchQuery("horse river", top_k=20, video_ids=(target,), start_seconds=3000.0)
    page = service.search(q)
    assert page and all(m.video_id == target and m.end_seconds >= 3000.0 for m in page)
    grouped = service.search_page(replace(q, video_ids=(), group_by_video=True, top_k=5))
    assert len(grouped.videos) == 5 and len({v.video_id for v in grouped.videos}) == 5


def test_auto_index_switches_to_ivf_at_the_threshold_and_keeps_recall(tmp_path: Path):
    embedder = WordHashEmbedder()
    auto = AutoParams(threshold=3_000, min_nlist=16, max_nlist=64, probe_fraction=0.5)
    url = f"sqlite:///{tmp_path / 'v.db'}"
    store = Store(url, tmp_path / "i", embedder.dim, index_kind="auto", auto=auto)
    before = commit_long_videos(
        store, embedder, videos=2, events_per_video=1_400, window_events=700
    )
    assert store.index.ntotal == 2_800 and not store.index.trained
    queries = embedder.embed([f"{a} {b}" for a in QUERIES for b in ("dog", "blue", "stage")])
    exact = [{i for i, _ in store.vector_search(v, 10)} for v in queries]  # flat: exact
    commit_long_videos(store, embedder, videos=1, events_per_video=400, seed=1)
    store.wait_for_rebuild(60)
    index = store.index
    assert index.trained and index.ivf.encoding == "sq8" and index.ivf.nlist == 64
    assert index.trained_size == 3_200 and not index.needs_training
    # The same question over the same (old) videos, before and after the switch.
    old = sorted(before)
    recall = [
        len({i for i, _ in store.vector_search(v, 10, old)} & e) / 10
        for v, e in zip(queries, exact, strict=True)
    ]
    assert np.mean(recall) >= 0.9, recall
    store.close()
    again = Store(url, tmp_path / "i", embedder.dim, index_kind="auto", auto=auto)
    try:
        assert again.index.trained and again.index.ivf == index.ivf
        assert again.index.ntotal == 3_200
    finally:
        again.close()
