"""Search through the wire: a real gRPC server on port 0, the SDK, real SQLite + FAISS."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from vidseek.client import Client, InvalidArgumentError, NotFoundError
from vidseek.indexer.embedder import Embedder
from vidseek.server.app import App, create_server
from vidseek.server.settings import load_settings
from vidseek.storage.store import NewEvent, NewWindow, window_id_for
from vidseek.v1 import video_search_pb2 as pb
from vidseek.v1 import video_search_pb2_grpc as pb_grpc

VIDEOS = {
    "kitchen": [
        (0.0, 10.0, "A chef chops onions on a wooden board."),
        (10.0, 20.0, "The chef fries the chopped onions in a pan."),
        (20.0, 30.0, "A dog sleeps on the kitchen floor."),
    ],
    "soccer": [
        (0.0, 15.0, "Players warm up on a soccer field."),
        (15.0, 30.0, "A player kicks the ball into the goal."),
        (30.0, 45.0, "The team celebrates the goal together."),
    ],
    "concert": [
        (0.0, 5.0, "Zorblax appears on a banner above the stage."),
        (5.0, 30.0, "A crowd cheers at a rock concert."),
    ],
}


def _commit(app: App, embedder: Embedder) -> dict[str, str]:
    ids = {}
    for name, events in VIDEOS.items():
        h = hashlib.sha256(name.encode()).hexdigest()
        end = events[-1][1]
        vid = app.store.upsert_video(
            uri=f"/v/{name}.mp4",
            content_hash=h,
            duration=end,
            fps=30.0,
            width=320,
            height=180,
            frame_count=int(end * 30),
        )
        vecs = embedder.embed([t for _, _, t in events])
        app.store.commit_window(
            NewWindow(
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
            ),
            [NewEvent(s, e, t, v) for (s, e, t), v in zip(events, vecs, strict=True)],
        )
        ids[name] = vid
    return ids


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[tuple[Client, int, dict[str, str]]]:
    data_dir: Path = tmp_path_factory.mktemp("search-api")
    settings = load_settings(overrides={"port": 0, "data_dir": str(data_dir)}, environ={})
    server, port, app = create_server(settings, embedder=embedder)
    ids = _commit(app, embedder)
    client = Client(f"127.0.0.1:{port}", timeout=30, retries=0)
    yield client, port, ids
    client.close()
    server.stop(0)
    app.shutdown()


def test_search_over_the_wire_returns_scored_moments(served):
    client, _, ids = served
    moments = client.search("a player scores a goal", top_k=3)
    assert moments[0].video_id == ids["soccer"]
    assert moments[0].video_uri == "/v/soccer.mp4"
    assert 15.0 <= moments[0].start_seconds < moments[0].end_seconds <= 45.0
    assert [m.score for m in moments] == sorted((m.score for m in moments), reverse=True)
    assert all(-1.0 <= m.score <= 1.0 for m in moments)


def test_rare_word_and_filters_over_the_wire(served):
    client, _, ids = served
    assert client.search("Zorblax", top_k=1)[0].video_id == ids["concert"]
    only = client.search("onions", video_ids=[ids["soccer"]], top_k=5, min_score=-1.0)
    assert only and {m.video_id for m in only} == {ids["soccer"]}
    everything = client.search("onions", top_k=50, min_score=-1.0)
    cut = everything[2].score
    assert client.search("onions", top_k=50, min_score=cut) == [
        m for m in everything if m.score >= cut
    ]


def test_top_k_zero_on_the_wire_means_the_default(served):
    _, port, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
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
    ],
)
def test_bad_search_requests_are_invalid_argument(served, kwargs, message):
    client, _, _ = served
    query = kwargs.pop("query")
    with pytest.raises(InvalidArgumentError, match=message):
        client.search(query, **kwargs)


def test_unknown_video_in_filter_is_not_found_and_named(served):
    client, _, ids = served
    with pytest.raises(NotFoundError, match=r"unknown video id.*nosuchvideo"):
        client.search("a door", video_ids=[ids["kitchen"], "nosuchvideo"])
