"""SearchService on a real SQLite store with the real MiniLM embedder, plus the pure ranking."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from vidseek.indexer.embedder import Embedder
from vidseek.server.search import (
    RankingParams,
    ScoredEvent,
    SearchQuery,
    SearchService,
    flatten,
    merge_moments,
    rank_videos,
)
from vidseek.storage.errors import InvalidArgument, NotFound
from vidseek.storage.store import EventRecord, NewEvent, NewWindow, Store, window_id_for

CORPUS: dict[str, list[tuple[float, float, str]]] = {
    "kitchen": [
        (0, 10, "A chef chops onions on a wooden board."),
        (10, 20, "The chef fries the chopped onions in a pan."),
        (20, 30, "The chef plates the dish and serves it."),
        (30, 40, "A dog sleeps on the kitchen floor."),
    ],
    "soccer": [
        (0, 15, "Players warm up on a soccer field."),
        (15, 30, "A player kicks the ball into the goal."),
        (30, 45, "The team celebrates the goal together."),
    ],
    "guitar": [
        (0, 20, "A woman tunes an acoustic guitar."),
        (20, 60, "She plays a song on the guitar and sings."),
    ],
    "concert": [
        (0, 5, "Zorblax appears on a banner above the stage."),
        (5, 30, "A crowd cheers at a rock concert."),
    ],
    "cooking2": [
        (0, 30, "A man cooks onions in a frying pan."),
        (30, 50, "He washes the pan in the sink."),
    ],
}


def index_videos(
    store: Store, embedder: Embedder, corpus: Mapping[str, Sequence[tuple[float, float, str]]]
) -> dict[str, str]:
    """Commit each video's events as one window; returns name -> video id."""
    ids = {}
    for name, events in corpus.items():
        h = hashlib.sha256(name.encode()).hexdigest()
        end = max(e for _, e, _ in events)
        vid = store.upsert_video(
            uri=f"/videos/{name}.mp4",
            content_hash=h,
            duration=end,
            fps=30.0,
            width=320,
            height=180,
            frame_count=int(end * 30),
        )
        vecs = embedder.embed([t for _, _, t in events])
        window = NewWindow(
            id=window_id_for(h, 0.0, end, "m", "p"),
            video_id=vid,
            window_index=0,
            start_seconds=0.0,
            end_seconds=end,
            frame_count=int(end),
            status="parsed",
            raw_output="",
            parse_error="",
            dropped=(),
            model="m",
            prompt_version="p",
            prompt_tokens=0,
        )
        store.commit_window(
            window, [NewEvent(s, e, t, v) for (s, e, t), v in zip(events, vecs, strict=True)]
        )
        ids[name] = vid
    return ids


@pytest.fixture(scope="module")
def indexed(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[tuple[SearchService, dict[str, str]]]:
    root: Path = tmp_path_factory.mktemp("search")
    store = Store(f"sqlite:///{root / 'v.db'}", root / "faiss.index", embedder.dim)
    ids = index_videos(store, embedder, CORPUS)
    yield SearchService(store, embedder), ids
    store.close()


def name_of(ids: dict[str, str], video_id: str) -> str:
    return {v: k for k, v in ids.items()}[video_id]


# ---- pure ranking --------------------------------------------------------------------


def ev(
    i: int, start: float, end: float, cosine: float, keyword: float = 0.0, video: str = "v"
) -> ScoredEvent:
    return ScoredEvent(EventRecord(i, video, start, end, f"event {i}"), cosine, keyword)


def test_strong_adjacent_events_merge_into_one_moment_scored_by_its_best():
    params = RankingParams(merge_margin=0.05, merge_gap_seconds=1.0, keyword_weight=0.0)
    moments = merge_moments(
        [
            ev(1, 0, 10, 0.80),
            ev(2, 10.5, 20, 0.78),
            ev(3, 15, 25, 0.77),  # chain: 0..25
            ev(4, 40, 50, 0.79),  # strong but 15 s away: its own moment
            ev(5, 25, 30, 0.40),
        ],  # weak neighbour: not merged
        params,
    )
    spans = [(m.start_seconds, m.end_seconds, m.event_ids, m.description) for m in moments]
    assert spans[0] == (0, 25, (1, 2, 3), "event 1")
    assert moments[0].score == pytest.approx(0.80)
    assert spans[1][:3] == (40, 50, (4,))
    assert spans[2][:3] == (25, 30, (5,))
    assert [m.score for m in moments] == sorted((m.score for m in moments), reverse=True)


def test_gap_zero_merges_only_overlapping_or_touching_events():
    params = RankingParams(merge_margin=1.0, merge_gap_seconds=0.0, keyword_weight=0.0)
    moments = merge_moments([ev(1, 0, 10, 0.5), ev(2, 10, 20, 0.5), ev(3, 20.5, 30, 0.5)], params)
    assert sorted((m.start_seconds, m.end_seconds) for m in moments) == [(0, 20), (20.5, 30)]


def test_moments_never_span_two_videos():
    params = RankingParams(merge_margin=1.0, keyword_weight=0.0)
    moments = merge_moments([ev(1, 0, 10, 0.9, video="a"), ev(2, 5, 15, 0.9, video="b")], params)
    assert sorted((m.video_id, m.event_ids) for m in moments) == [("a", (1,)), ("b", (2,))]


def test_keyword_evidence_lifts_an_event_past_a_slightly_closer_embedding():
    events = [
        ev(1, 0, 10, 0.50, keyword=1.0, video="named"),
        ev(2, 0, 10, 0.55, keyword=0.0, video="similar"),
    ]
    hybrid = rank_videos(events, RankingParams(keyword_weight=0.15, mean_weight=0.0))
    dense = rank_videos(events, RankingParams(keyword_weight=0.0, mean_weight=0.0))
    assert [v.video_id for v in hybrid] == ["named", "similar"]
    assert [v.video_id for v in dense] == ["similar", "named"]
    # Scores stay in [-1, 1]: a weighted mean of a cosine and a [0, 1] keyword score.
    assert hybrid[0].score == pytest.approx((0.50 + 0.15) / 1.15)


def test_video_score_counts_the_other_events_and_ranks_alternatives_below_the_best():
    params = RankingParams(keyword_weight=0.0, mean_weight=0.5, alt_penalty=1.0, merge_margin=0.0)
    events = [
        ev(1, 0, 10, 0.6, video="a"),
        ev(2, 20, 30, 0.5, video="a"),
        ev(3, 0, 10, 0.6, video="b"),
        ev(4, 20, 30, 0.0, video="b"),
    ]
    videos = rank_videos(events, params)
    assert [v.video_id for v in videos] == ["a", "b"]
    a = videos[0]
    assert a.score == pytest.approx((0.6 + 0.5 * 0.55) / 1.5)
    assert [m.event_ids for m in a.moments] == [(1,), (2,)]
    assert a.moments[0].score == pytest.approx(a.score)  # the best moment carries the video's
    assert a.moments[1].score == pytest.approx(a.score - 0.1)
    flat = flatten(videos)
    assert [m.score for m in flat] == sorted((m.score for m in flat), reverse=True)


def test_overlapping_alternatives_are_dropped_above_max_overlap():
    params = RankingParams(keyword_weight=0.0, merge_margin=0.0, max_overlap=0.5)
    events = [ev(1, 0, 10, 0.9), ev(2, 1, 10, 0.8), ev(3, 20, 30, 0.7)]
    (video,) = rank_videos(events, params)
    assert [m.event_ids for m in video.moments] == [(1,), (3,)]


def test_depth_returns_only_the_videos_that_can_reach_the_top():
    events = [ev(i, 0, 10, 0.9 - i / 100, video=f"v{i:02d}") for i in range(30)]
    assert len(rank_videos(events, RankingParams(), depth=5)) == 5
    assert len(rank_videos(events, RankingParams(), depth=3, grouped=True)) == 3
    full = flatten(rank_videos(events, RankingParams()))[:5]
    assert flatten(rank_videos(events, RankingParams(), depth=5)) == full


# ---- the service on a real store -----------------------------------------------------


def test_search_finds_the_right_video_and_seconds(indexed):
    service, ids = indexed
    moments = service.search(SearchQuery("a player scores a goal with the ball"))
    best = moments[0]
    assert name_of(ids, best.video_id) == "soccer"
    assert best.start_seconds >= 15 and best.end_seconds <= 45
    assert best.video_uri == "/videos/soccer.mp4"
    assert [m.score for m in moments] == sorted((m.score for m in moments), reverse=True)
    assert all(-1.0 <= m.score <= 1.0 for m in moments)


def test_a_rare_name_is_found_by_the_keyword_leg(indexed):
    service, ids = indexed
    (best, *_) = service.search(SearchQuery("Zorblax", top_k=3))
    assert name_of(ids, best.video_id) == "concert"
    assert best.description.startswith("Zorblax")
    assert (best.start_seconds, best.end_seconds) == (0, 5)


def test_grouped_results_bound_moments_per_video(indexed):
    service, ids = indexed
    page = service.search_page(
        SearchQuery("the chef cooks onions", top_k=2, group_by_video=True, moments_per_video=2)
    )
    assert len(page.videos) == 2
    assert {name_of(ids, v.video_id) for v in page.videos} == {"kitchen", "cooking2"}
    assert page.videos[0].score >= page.videos[1].score
    for v in page.videos:
        assert 1 <= len(v.moments) <= 2
        assert all(m.video_id == v.video_id for m in v.moments)
        assert v.moments[0].score == pytest.approx(v.score)
    assert page.moments == tuple(m for v in page.videos for m in v.moments)


def test_video_filter_restricts_results(indexed):
    service, ids = indexed
    moments = service.search(
        SearchQuery("onions in a pan", video_ids=(ids["guitar"],), min_score=-1.0)
    )
    assert moments and {m.video_id for m in moments} == {ids["guitar"]}


def test_time_range_keeps_events_overlapping_it(indexed):
    service, ids = indexed
    moments = service.search(
        SearchQuery(
            "the chef",
            video_ids=(ids["kitchen"],),
            start_seconds=21,
            end_seconds=35,
            min_score=-1.0,
        )
    )
    assert moments
    for m in moments:
        assert m.end_seconds >= 21 and m.start_seconds <= 35
    instant = service.search(
        SearchQuery("a dog", start_seconds=35, end_seconds=35, min_score=-1.0, top_k=100)
    )
    assert instant and all(m.start_seconds <= 35 <= m.end_seconds for m in instant)


def test_min_score_cuts_results(indexed):
    service, _ = indexed
    everything = service.search(SearchQuery("a guitar song", top_k=100, min_score=-1.0))
    cut = everything[len(everything) // 2].score
    kept = service.search(SearchQuery("a guitar song", top_k=100, min_score=cut))
    assert kept == [m for m in everything if m.score >= cut]
    assert service.search(SearchQuery("a guitar song", min_score=1.01)) == []


def test_pages_continue_where_the_last_one_ended(indexed):
    service, _ = indexed
    q = SearchQuery("people doing things", top_k=3, min_score=-1.0)
    whole = service.search(SearchQuery("people doing things", top_k=9, min_score=-1.0))
    first = service.search_page(q)
    second = service.search_page(
        SearchQuery(q.text, top_k=3, min_score=-1.0, page_token=first.next_page_token)
    )
    third = service.search_page(
        SearchQuery(q.text, top_k=3, min_score=-1.0, page_token=second.next_page_token)
    )
    assert list(first.moments + second.moments + third.moments) == whole
    last = service.search_page(
        SearchQuery(q.text, top_k=100, min_score=-1.0, page_token=third.next_page_token)
    )
    assert last.next_page_token == ""
    with pytest.raises(InvalidArgument, match="different request"):
        service.search_page(SearchQuery("another query", top_k=3, page_token=first.next_page_token))
    with pytest.raises(InvalidArgument, match="invalid page_token"):
        service.search_page(SearchQuery(q.text, page_token="not-a-token!"))


def test_grouped_pages_are_pages_of_videos(indexed):
    service, _ = indexed
    q = dict(text="someone cooking", group_by_video=True, min_score=-1.0)
    first = service.search_page(SearchQuery(**q, top_k=2))  # type: ignore[arg-type]
    second = service.search_page(SearchQuery(**q, top_k=2, page_token=first.next_page_token))  # type: ignore[arg-type]
    whole = service.search_page(SearchQuery(**q, top_k=4))  # type: ignore[arg-type]
    assert first.videos + second.videos == whole.videos


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (SearchQuery(""), "query is empty"),
        (SearchQuery(" \n\t "), "query is empty"),
        (SearchQuery("x" * 100_000), "100000 characters; the limit is 2000"),
        (SearchQuery("a door", top_k=10**6), "top_k must be between 1 and 1000"),
        (SearchQuery("a door", top_k=-1), "top_k must be between 1 and 1000"),
        (SearchQuery("a door", start_seconds=30, end_seconds=10), "inverted time range"),
        (SearchQuery("a door", start_seconds=-1), "start_seconds must be"),
        (SearchQuery("a door", end_seconds=float("nan")), "end_seconds must be"),
        (SearchQuery("a door", min_score=float("nan")), "min_score must be"),
        (SearchQuery("a door", moments_per_video=-2), "moments_per_video"),
        (SearchQuery("a door", video_ids=("",)), "empty id"),
    ],
)
def test_bad_requests_are_invalid_arguments(indexed, query, message):
    service, _ = indexed
    with pytest.raises(InvalidArgument, match=message):
        service.search(query)


def test_unknown_video_in_filter_is_not_found(indexed):
    service, ids = indexed
    with pytest.raises(NotFound, match=r"unknown video id.*doesnotexist"):
        service.search(SearchQuery("a door", video_ids=(ids["kitchen"], "doesnotexist")))


def test_top_k_zero_means_the_default(indexed):
    service, _ = indexed
    q = dict(text="something happens", min_score=-1.0)
    assert service.search(SearchQuery(**q, top_k=0)) == service.search(  # type: ignore[arg-type]
        SearchQuery(**q, top_k=service.default_top_k)
    )  # type: ignore[arg-type]
    small = SearchService(service.store, service.embedder, default_top_k=4)
    assert len(small.search(SearchQuery(**q))) == 4  # type: ignore[arg-type]


def test_empty_index_answers_nothing(tmp_path: Path, embedder: Embedder):
    store = Store(f"sqlite:///{tmp_path / 'e.db'}", tmp_path / "faiss.index", embedder.dim)
    try:
        assert SearchService(store, embedder).search_page(SearchQuery("a door")).moments == ()
    finally:
        store.close()
