"""SearchService on a real SQLite store with the real MiniLM embedder, plus the pure ranking."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.refiners import RaisingRefiner, ShiftRefiner, assert_shifted
from tests.support.search_corpus import COLLECTIONS, index_videos, name_of
from vidseek.indexer.embedder import Embedder
from vidseek.server.search import (
    MomentResult,
    RankingParams,
    ScoredEvent,
    SearchQuery,
    SearchService,
    flatten,
    merge_moments,
    rank_videos,
)
from vidseek.storage.errors import InvalidArgument, NotFound
from vidseek.storage.store import EventRecord, Store


@pytest.fixture(scope="module")
def indexed(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[tuple[SearchService, dict[str, str]]]:
    root: Path = tmp_path_factory.mktemp("search")
    store = Store(f"sqlite:///{root / 'v.db'}", root / "faiss.index", embedder.dim)
    ids = index_videos(store, embedder)
    yield SearchService(store, embedder), ids
    store.close()


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
        (SearchQuery("a door", collection="c" * 201), "collection name is 201 characters"),
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


# ---- collections ---------------------------------------------------------------------


def test_collection_filter_keeps_its_videos(indexed):
    service, ids = indexed
    moments = service.search(SearchQuery("something", collection="music", top_k=100, min_score=-1))
    assert {name_of(ids, m.video_id) for m in moments} == {"guitar", "concert"}
    # Surrounding spaces do not matter, as on ingest.
    assert (
        service.search(SearchQuery("something", collection=" music ", top_k=100, min_score=-1))
        == moments
    )


def test_collection_and_video_ids_intersect(indexed):
    service, ids = indexed
    both = service.search(
        SearchQuery(
            "onions",
            collection="food",
            video_ids=(ids["kitchen"], ids["guitar"]),
            top_k=100,
            min_score=-1,
        )
    )
    assert {name_of(ids, m.video_id) for m in both} == {"kitchen"}
    disjoint = SearchQuery("onions", collection="music", video_ids=(ids["kitchen"],), min_score=-1)
    assert service.search_page(disjoint).moments == ()


def test_unknown_collection_matches_nothing_without_error(indexed):
    service, _ = indexed
    page = service.search_page(SearchQuery("onions", collection="no-such", min_score=-1))
    assert (page.moments, page.videos, page.next_page_token) == ((), (), "")
    grouped = SearchQuery("onions", collection="no-such", group_by_video=True, min_score=-1)
    assert service.search_page(grouped).videos == ()


def test_page_tokens_are_bound_to_the_collection(indexed):
    service, _ = indexed
    first = service.search_page(SearchQuery("a", collection="food", top_k=1, min_score=-1))
    assert first.next_page_token
    with pytest.raises(InvalidArgument, match="different request"):
        service.search_page(
            SearchQuery("a", collection="music", top_k=1, page_token=first.next_page_token)
        )
    assert set(COLLECTIONS.values()) == {"food", "music"}


# ---- refinement ----------------------------------------------------------------------


def _refining(service: SearchService, refiner: object, **kwargs: float) -> SearchService:
    return SearchService(service.store, service.embedder, refiner=refiner, **kwargs)  # type: ignore[arg-type]


def test_refine_refines_the_first_moments_of_the_page(indexed):
    service, _ = indexed
    refiner = ShiftRefiner()
    refining = _refining(service, refiner, max_refine=2)
    q = SearchQuery("the chef cooks onions", top_k=4, min_score=-1)
    coarse = service.search(q)
    got = refining.search(replace(q, refine=True))
    assert len(got) == 4
    assert_shifted(coarse[:2], got[:2])
    assert got[2:] == coarse[2:]  # beyond max_refine: untouched
    assert [(query, n) for query, n, _ in refiner.calls] == [("the chef cooks onions", 2)]
    # Without refine=True the refiner is not asked.
    assert refining.search(q) == coarse and len(refiner.calls) == 1


def test_refine_of_groups_follows_group_order(indexed):
    service, _ = indexed
    refiner = ShiftRefiner()
    q = SearchQuery("cooking", top_k=3, group_by_video=True, moments_per_video=2, min_score=-1)
    page = _refining(service, refiner, max_refine=3).search_page(replace(q, refine=True))
    flags = [m.refined for v in page.videos for m in v.moments]
    assert flags[:3] == [True] * 3 and not any(flags[3:])
    assert page.moments == tuple(m for v in page.videos for m in v.moments)
    assert [v.video_id for v in page.videos] == [v.video_id for v in service.search_page(q).videos]


def test_refine_budget_and_caller_deadline_bound_the_refiner(indexed):
    service, _ = indexed
    refiner = ShiftRefiner()
    refining = _refining(service, refiner, refine_budget_s=7.0)
    q = SearchQuery("a guitar", refine=True)
    refining.search_page(q)
    refining.search_page(q, deadline=time.monotonic() + 2.0)
    refining.search_page(q, deadline=time.monotonic() + 60.0)
    (_, _, budget), (_, _, caller), (_, _, capped) = refiner.calls
    assert 6.0 < budget <= 7.0
    assert 1.0 < caller <= 2.0
    assert 6.0 < capped <= 7.0
    # No time left: the refiner is not even asked.
    page = refining.search_page(q, deadline=time.monotonic() - 1.0)
    assert len(refiner.calls) == 3 and not any(m.refined for m in page.moments)


class _WrongLength:
    def refine(self, query, moments, deadline):
        return list(moments)[:-1]


class _BadSpan:
    def refine(self, query, moments, deadline):
        return [replace(m, start_seconds=m.end_seconds + 5, refined=True) for m in moments]


@pytest.mark.parametrize("refiner", [RaisingRefiner(), _WrongLength(), _BadSpan(), None])
def test_refiner_trouble_or_absence_returns_the_coarse_moments(indexed, refiner, caplog):
    service, _ = indexed
    q = SearchQuery("a player scores a goal", top_k=3, min_score=-1)
    coarse = service.search(q)
    assert coarse
    assert _refining(service, refiner).search(replace(q, refine=True)) == coarse
    if isinstance(refiner, RaisingRefiner):
        assert "refiner failed" in caplog.text


def test_moment_result_defaults_are_coarse():
    m = MomentResult("v", 1.0, 2.0, "d", 0.5, (1,))
    assert (m.refined, m.coarse_start_seconds, m.coarse_end_seconds) == (False, None, None)


@pytest.mark.parametrize("depth", [1, 3, 11])
def test_ranking_to_a_depth_gives_the_first_moments_of_a_full_ranking(depth: int):
    import random

    rng = random.Random(depth)
    events = [
        ev(i, start, start + rng.uniform(1, 8), rng.uniform(0.2, 0.9), rng.random(), f"v{i % 4}")
        for i, start in enumerate(rng.uniform(0, 600) for _ in range(120))
    ]
    full = flatten(rank_videos(events))
    cut = flatten(rank_videos(events, depth=depth))
    assert cut[:depth] == full[:depth]
    assert len(cut) >= min(depth, len(full))
