"""Search through the wire: a real gRPC server on port 0, the SDK, real SQLite + FAISS."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.support.refiners import RaisingRefiner, ShiftRefiner, assert_shifted
from tests.support.search_corpus import index_videos, name_of
from vidseek.client import AsyncClient, Client, InvalidArgumentError, NotFoundError, SearchPage
from vidseek.indexer.embedder import Embedder
from vidseek.server.app import App, create_server
from vidseek.server.settings import load_settings
from vidseek.v1 import video_search_pb2 as pb
from vidseek.v1 import video_search_pb2_grpc as pb_grpc


@dataclass
class Served:
    client: Client
    port: int
    ids: dict[str, str]
    app: App


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Served]:
    data_dir: Path = tmp_path_factory.mktemp("search-api")
    settings = load_settings(overrides={"port": 0, "data_dir": str(data_dir)}, environ={})
    server, port, app = create_server(settings, embedder=embedder)
    ids = index_videos(app.store, embedder)
    client = Client(f"127.0.0.1:{port}", timeout=30, retries=0)
    yield Served(client, port, ids, app)
    client.close()
    server.stop(0)
    app.shutdown()


def test_search_over_the_wire_returns_scored_moments(served):
    client, ids = served.client, served.ids
    moments = client.search("a player scores a goal", top_k=3)
    assert moments[0].video_id == ids["soccer"]
    assert moments[0].video_uri == "/videos/soccer.mp4"
    assert 15.0 <= moments[0].start_seconds < moments[0].end_seconds <= 45.0
    assert [m.score for m in moments] == sorted((m.score for m in moments), reverse=True)
    assert all(-1.0 <= m.score <= 1.0 for m in moments)


def test_rare_word_and_filters_over_the_wire(served):
    client, ids = served.client, served.ids
    assert client.search("Zorblax", top_k=1)[0].video_id == ids["concert"]
    only = client.search("onions", video_ids=[ids["soccer"]], top_k=5, min_score=-1.0)
    assert only and {m.video_id for m in only} == {ids["soccer"]}
    everything = client.search("onions", top_k=50, min_score=-1.0)
    cut = everything[2].score
    assert client.search("onions", top_k=50, min_score=cut) == [
        m for m in everything if m.score >= cut
    ]


def test_top_k_zero_on_the_wire_means_the_default(served):
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = pb_grpc.VideoSearchStub(channel)
        zero = stub.Search(pb.SearchRequest(query="something", top_k=0, min_score=-1.0))
        ten = stub.Search(pb.SearchRequest(query="something", top_k=10, min_score=-1.0))
    assert list(zero.moments) == list(ten.moments)
    assert 0 < len(zero.moments) <= 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": ""}, "query is empty"),
        ({"query": "x" * 100_000}, "the limit is 2000"),
        ({"query": "a door", "top_k": 10**6}, "top_k must be between 1 and 1000"),
        ({"query": "a door", "top_k": -5}, "top_k must be between 1 and 1000"),
        ({"query": "a door", "min_score": float("nan")}, "min_score must be a finite number"),
        (
            {"query": "a door", "start_seconds": 30.0, "end_seconds": 10.0},
            "inverted time range: end_seconds 10.0 is before start_seconds 30.0",
        ),
        ({"query": "a door", "start_seconds": -1.0}, "start_seconds must be a finite number >= 0"),
        ({"query": "a door", "moments_per_video": -1}, "moments_per_video must be between"),
        ({"query": "a door", "page_token": "not a token"}, "invalid page_token"),
        ({"query": "a door", "collection": "c" * 201}, "collection name is 201 characters"),
        (
            {"query": "a door", "video_ids": [f"v{i}" for i in range(1001)]},
            "video_ids names 1001 videos; the limit is 1000",
        ),
    ],
)
def test_bad_search_requests_are_invalid_argument(served, kwargs, message):
    query = kwargs.pop("query")
    with pytest.raises(InvalidArgumentError, match=message):
        served.client.search(query, **kwargs)


def test_unknown_video_in_filter_is_not_found_and_named(served):
    client, ids = served.client, served.ids
    with pytest.raises(NotFoundError, match=r"unknown video id.*nosuchvideo"):
        client.search("a door", video_ids=[ids["kitchen"], "nosuchvideo"])


def test_time_range_over_the_wire(served):
    client, ids = served.client, served.ids
    ranged = client.search(
        "the chef", video_ids=[ids["kitchen"]], start_seconds=21, end_seconds=35, min_score=-1
    )
    assert ranged
    assert all(m.end_seconds >= 21 and m.start_seconds <= 35 for m in ranged)
    late = client.search("something happens", top_k=100, start_seconds=40, min_score=-1)
    assert late and all(m.end_seconds >= 40 for m in late)
    assert {name_of(ids, m.video_id) for m in late} == {"kitchen", "soccer", "guitar", "cooking2"}
    early = client.search("something happens", top_k=100, end_seconds=4.5, min_score=-1)
    assert early and all(m.start_seconds <= 4.5 for m in early)
    # start 0 is sent (an explicit bound), and keeps everything, like no bound.
    everything = client.search("something happens", top_k=100, min_score=-1)
    assert client.search("something happens", top_k=100, start_seconds=0, min_score=-1) == (
        everything
    )


def test_collection_filter_over_the_wire(served):
    client, ids = served.client, served.ids
    music = client.search("people doing things", top_k=100, collection="music", min_score=-1)
    assert {name_of(ids, m.video_id) for m in music} == {"guitar", "concert"}
    assert client.search("onions", collection="no-such-collection", min_score=-1) == []
    # With video ids too, a video must be in both.
    both = client.search(
        "onions", collection="food", video_ids=[ids["cooking2"], ids["soccer"]], min_score=-1
    )
    assert both and {m.video_id for m in both} == {ids["cooking2"]}


def test_grouped_search_over_the_wire(served):
    client, ids = served.client, served.ids
    page = client.search(
        "someone cooks onions", top_k=2, group_by_video=True, moments_per_video=2, min_score=-1
    )
    assert [name_of(ids, v.video_id) for v in page.videos][:1] in (["kitchen"], ["cooking2"])
    assert len(page.videos) == 2 and page.next_page_token
    assert page.videos[0].score >= page.videos[1].score
    for v in page.videos:
        assert 1 <= len(v.moments) <= 2
        assert v.video_uri == f"/videos/{name_of(ids, v.video_id)}.mp4"
        assert all(m.video_id == v.video_id for m in v.moments)
        assert v.moments[0].score == pytest.approx(v.score)
    assert list(page) == [m for v in page.videos for m in v.moments]
    flat = client.search("someone cooks onions", top_k=2, min_score=-1)
    assert flat.videos == ()


@pytest.mark.parametrize("group_by_video", [False, True])
def test_paging_through_every_page_without_duplicates(served, group_by_video):
    client = served.client
    q = {"min_score": -1.0, "group_by_video": group_by_video, "moments_per_video": 10}
    pages = list(client.search_pages("people doing things", top_k=2, **q))  # type: ignore[arg-type]
    whole = client.search("people doing things", top_k=1000, **q)  # type: ignore[arg-type]
    assert len(pages) > 2 and whole.next_page_token == ""
    assert all(len(p.videos if group_by_video else p) == 2 for p in pages[:-1])
    assert pages[-1].next_page_token == ""
    got = [m for p in pages for m in p]
    keys = [(m.video_id, m.event_ids) for m in got]
    assert len(keys) == len(set(keys))
    assert got == list(whole)
    if group_by_video:
        assert [v for p in pages for v in p.videos] == list(whole.videos)


def test_page_token_of_another_query_is_invalid_argument(served):
    client = served.client
    first = client.search("people doing things", top_k=1, min_score=-1)
    assert first.next_page_token
    for other in (
        {"query": "another query"},
        {"query": "people doing things", "group_by_video": True},
        {"query": "people doing things", "collection": "food"},
        {"query": "people doing things", "start_seconds": 1.0},
    ):
        with pytest.raises(InvalidArgumentError, match="page_token belongs to a different request"):
            client.search(
                other.pop("query"),  # type: ignore[arg-type]
                top_k=1,
                min_score=-1,
                page_token=first.next_page_token,
                **other,  # type: ignore[arg-type]
            )
    # top_k may change between pages.
    second = client.search(
        "people doing things", top_k=3, min_score=-1, page_token=first.next_page_token
    )
    assert list(first) + list(second) == list(
        client.search("people doing things", top_k=4, min_score=-1)
    )


def test_refine_with_a_known_answer_through_the_server(served, monkeypatch):
    client = served.client
    refiner = ShiftRefiner()
    monkeypatch.setattr(served.app.search, "refiner", refiner)
    coarse = client.search("a player scores a goal", top_k=8, min_score=-1)
    refined = client.search("a player scores a goal", top_k=8, min_score=-1, refine=True)
    limit = served.app.search.max_refine
    assert len(refined) == len(coarse) > limit
    assert_shifted(coarse[:limit], refined[:limit])
    assert refined[limit:] == coarse[limit:]
    assert all(m.coarse_start_seconds is None for m in refined[limit:])
    ((query, n, _),) = refiner.calls
    assert (query, n) == ("a player scores a goal", limit)


def test_refine_deadline_comes_from_the_call_deadline(served, monkeypatch):
    refiner = ShiftRefiner()
    monkeypatch.setattr(served.app.search, "refiner", refiner)
    with Client(f"127.0.0.1:{served.port}", timeout=4.0, retries=0) as hurried:
        assert hurried.search("a goal", refine=True)[0].refined
    ((_, _, left),) = refiner.calls
    assert 2.0 < left < 4.0 - 0.4  # the call's deadline minus the margin, not the 20 s budget


def test_a_failing_refiner_returns_the_coarse_moments(served, monkeypatch, caplog):
    client = served.client
    coarse = client.search("a crowd at a concert", top_k=5, min_score=-1)
    monkeypatch.setattr(served.app.search, "refiner", RaisingRefiner())
    again = client.search("a crowd at a concert", top_k=5, min_score=-1, refine=True)
    assert again == coarse and not any(m.refined for m in again)
    assert "refiner failed" in caplog.text


def test_refine_without_a_refiner_returns_the_coarse_moments(served, monkeypatch):
    client = served.client
    monkeypatch.setattr(served.app.search, "refiner", None)
    coarse = client.search("a guitar", top_k=5, min_score=-1)
    assert client.search("a guitar", top_k=5, min_score=-1, refine=True) == coarse


def test_time_range_and_grouping_on_the_raw_wire(served):
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = pb_grpc.VideoSearchStub(channel)
        resp = stub.Search(
            pb.SearchRequest(
                query="onions", group_by_video=True, top_k=1, start_seconds=0.0, min_score=-1
            )
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.Search(pb.SearchRequest(query="onions", start_seconds=5, end_seconds=1))
    assert len(resp.videos) == 1 and resp.next_page_token
    assert list(resp.moments) == list(resp.videos[0].moments)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inverted time range" in err.value.details()


def test_async_client_has_the_same_search(served):
    q = {"min_score": -1.0, "collection": "food", "group_by_video": True}

    async def run() -> tuple[SearchPage, list[SearchPage]]:
        async with AsyncClient(f"127.0.0.1:{served.port}", retries=0) as client:
            first = await client.search("onions", 1, **q)  # type: ignore[arg-type]
            pages = [p async for p in client.search_pages("onions", 1, **q)]  # type: ignore[arg-type]
            return first, pages

    first, pages = asyncio.run(run())
    sync = list(served.client.search_pages("onions", 1, **q))  # type: ignore[arg-type]
    assert first == sync[0] and first.videos == sync[0].videos
    assert [p.videos for p in pages] == [p.videos for p in sync]
    assert len(pages) == 2  # the two videos of "food", one per page


def test_async_client_lists_jobs_waits_and_reads_timelines(served):
    video = sorted(served.ids.values())[0]

    async def run() -> tuple[list[object], list[object]]:
        async with AsyncClient(f"127.0.0.1:{served.port}", retries=0) as client:
            await client.wait_until_ready(10)
            jobs = [j async for j in client.list_jobs(page_size=1)]
            events = await client.timeline(video)
            with pytest.raises(NotFoundError):
                await client.wait_for_job("no-such-job", timeout=1)
            return jobs, events

    jobs, events = asyncio.run(run())
    assert jobs == list(served.client.list_jobs())
    assert events == served.client.timeline(video) and events


def test_async_client_wait_until_ready_gives_up_on_a_silent_address():
    from vidseek.client import UnavailableError

    async def run() -> None:
        async with AsyncClient("127.0.0.1:1", retries=0) as client:
            await client.wait_until_ready(0.5)

    with pytest.raises(UnavailableError, match=r"no server answered within 0\.5 s"):
        asyncio.run(run())


def test_unknown_search_option_is_a_type_error(served):
    with pytest.raises(TypeError, match=r"unknown search option.*video_id"):
        served.client.search("a", video_id="x")  # type: ignore[call-arg]
