"""A real gRPC server on port 0, the real SDK, real SQLite + FAISS, real decoded video."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.fakes import ColourCaptioner
from vidseek.client import (
    Client,
    InvalidArgumentError,
    JobState,
    NotFoundError,
    UnauthenticatedError,
)
from vidseek.server.app import App, create_server
from vidseek.server.settings import load_settings


@dataclass
class Running:
    client: Client
    app: App
    port: int
    captioner: ColourCaptioner


def _start(data_dir: Path, embedder, **overrides) -> tuple[grpc.Server, Running]:
    settings = load_settings(
        overrides={
            "port": 0,
            "data_dir": str(data_dir),
            "window_seconds": 4.0,
            "sample_fps": 2.0,
            "batch_windows": 2,
            **overrides,
        },
        environ={},
    )
    captioner = ColourCaptioner()
    server, port, app = create_server(
        settings, embedder=embedder, captioner_factory=lambda: captioner
    )
    client = Client(f"127.0.0.1:{port}", token=overrides.get("auth_token"), timeout=30)
    return server, Running(client, app, port, captioner)


@pytest.fixture
def running(data_dir: Path, embedder) -> Iterator[Running]:
    server, r = _start(data_dir, embedder)
    yield r
    r.client.close()
    server.stop(0)
    r.app.shutdown()


def test_ingest_then_search_lands_on_the_right_seconds(running: Running, colour_video: Path):
    job = running.client.ingest(str(colour_video))
    done = running.client.wait_for_job(job.job_id, timeout=120)
    assert done.state is JobState.SUCCEEDED, done.error
    assert done.windows_total == 3 and done.windows_done == 3  # 12 s in 4 s windows
    assert done.events_indexed >= 6
    assert "3 windows" in done.plan

    moments = running.client.search("a blue screen", top_k=3)
    assert moments, "search returned nothing"
    best = moments[0]
    assert best.video_id == done.video_id
    assert best.description == "a blue screen"
    # Blue is seconds 4-6 of the video: the moment must be there, in absolute time.
    assert best.start_seconds >= 3.9 and best.end_seconds <= 6.6
    for m in moments:
        assert 0 <= m.start_seconds < m.end_seconds <= 12.01

    # Windows were decoded at absolute indices of the 30 fps source, 2 fps.
    indices = [i for batch in running.captioner.calls for w in batch for i in w]
    assert indices[:8] == [0, 15, 30, 45, 60, 75, 90, 105]
    assert indices[8:10] == [120, 135]

    video = running.client.get_video(done.video_id)
    assert video.fps == pytest.approx(30) and video.event_count == done.events_indexed
    timeline = running.client.timeline(done.video_id, 2.5, 5.5)
    assert [(e.description, e.start_seconds, e.end_seconds) for e in timeline] == [
        ("a green screen", 2.0, 4.0),
        ("a blue screen", 4.0, 6.0),
    ]


def test_reingest_of_same_content_adds_nothing(running: Running, colour_video: Path):
    first = running.client.wait_for_job(
        running.client.ingest(str(colour_video)).job_id, timeout=120
    )
    again = running.client.wait_for_job(
        running.client.ingest(str(colour_video)).job_id, timeout=120
    )
    assert again.state is JobState.SUCCEEDED
    assert again.video_id == first.video_id
    # Nothing was captioned again; the job still reports the video's events.
    assert again.windows_reused == again.windows_total == first.windows_total
    assert running.client.get_video(first.video_id).event_count == first.events_indexed
    assert again.events_indexed == first.events_indexed


def test_bad_inputs_get_clear_errors_and_server_keeps_serving(running: Running, tmp_path: Path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(NotFoundError) as e:
        running.client.ingest(str(missing))
    assert str(missing) in e.value.message

    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 10)
    with pytest.raises(InvalidArgumentError) as e2:
        running.client.ingest(str(text))
    assert str(text) in e2.value.message

    with pytest.raises(InvalidArgumentError, match="query is empty"):
        running.client.search("   ")
    with pytest.raises(InvalidArgumentError, match="top_k"):
        running.client.search("a door", top_k=10**6)
    with pytest.raises(NotFoundError, match="unknown video"):
        running.client.search("a door", video_ids=["doesnotexist"])

    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert running.client.search("anything") == []


def test_delete_removes_video_from_search(running: Running, colour_video: Path):
    job = running.client.wait_for_job(running.client.ingest(str(colour_video)).job_id, timeout=120)
    assert running.client.search("a red screen")
    assert running.client.delete_video(job.video_id) == job.events_indexed
    assert running.client.search("a red screen") == []
    with pytest.raises(NotFoundError):
        running.client.get_video(job.video_id)
    assert list(running.client.list_videos()) == []


def test_reflection_lists_the_services(running: Running):
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"vidseek.v1.VideoSearch", "grpc.health.v1.Health"} <= names


def test_bearer_token_is_required_when_configured(data_dir: Path, embedder):
    server, r = _start(data_dir, embedder, auth_token="s3cret")
    try:
        assert r.client.search("a door") == []
        with Client(f"127.0.0.1:{r.port}") as anonymous, pytest.raises(UnauthenticatedError):
            anonymous.search("a door")
        with (
            Client(f"127.0.0.1:{r.port}", token="wrong") as wrong,
            pytest.raises(UnauthenticatedError),
        ):
            wrong.search("a door")
    finally:
        r.client.close()
        server.stop(0)
        r.app.shutdown()


def test_ingest_into_a_collection_and_search_it(running: Running, colour_video: Path):
    job = running.client.ingest(str(colour_video), collection="colours")
    assert job.collection == "colours"
    done = running.client.wait_for_job(job.job_id, timeout=120)
    assert done.state is JobState.SUCCEEDED, done.error
    assert (done.collection, done.windows_skipped) == ("colours", 0)
    assert running.client.get_video(done.video_id).collection == "colours"
    assert [v.collection for v in running.client.list_videos()] == ["colours"]

    found = running.client.search("a blue screen", top_k=1, collection="colours")
    assert found[0].video_id == done.video_id and found[0].description == "a blue screen"
    assert running.client.search("a blue screen", collection="other", min_score=-1) == []
    with pytest.raises(InvalidArgumentError, match="collection name is 201 characters"):
        running.client.ingest(str(colour_video), collection="c" * 201)
