"""WatchIngestJob: streamed progress of a real ingest, watcher limits, clients that leave."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.fakes import GatedCaptioner
from vidseek.client import Client, IngestJob
from vidseek.server.app import create_server
from vidseek.server.settings import load_settings
from vidseek.v1 import video_search_pb2 as pb
from vidseek.v1 import video_search_pb2_grpc as pb_grpc


@pytest.fixture
def gated(data_dir: Path, embedder) -> Iterator[tuple[int, GatedCaptioner]]:
    # Two RPC threads: at most one watcher at a time.
    settings = load_settings(
        overrides={"port": 0, "data_dir": str(data_dir), "window_seconds": 6.0, "grpc_workers": 2},
        environ={},
    )
    captioner = GatedCaptioner()
    server, port, app = create_server(
        settings, embedder=embedder, captioner_factory=lambda: captioner
    )
    try:
        yield port, captioner
    finally:
        captioner.gate.set()
        server.stop(0)
        app.shutdown()


def test_the_stream_follows_a_real_ingest_and_ends_with_the_final_job(gated, colour_video: Path):
    port, captioner = gated
    seen: list[IngestJob] = []
    with Client(f"127.0.0.1:{port}", retries=0) as client:
        job_id = client.ingest(str(colour_video)).job_id
        threading.Timer(1.0, captioner.gate.set).start()
        final = client.wait_for_job(job_id, timeout=120, on_progress=seen.append)
        assert final.state.value == "succeeded" and final == client.get_job(job_id)
    assert seen[-1] == final and len(seen) >= 2
    assert all(a != b for a, b in itertools.pairwise(seen))  # only changes are sent
    assert [j.windows_done for j in seen] == sorted(j.windows_done for j in seen)
    assert seen[0].state.value in ("queued", "running") and final.windows_done == 2


def test_a_second_watcher_is_turned_away_and_a_cancelled_one_frees_its_thread(
    gated, colour_video: Path
):
    port, captioner = gated
    with (
        Client(f"127.0.0.1:{port}", retries=0) as client,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = pb_grpc.VideoSearchStub(channel)
        job_id = client.ingest(str(colour_video)).job_id
        assert captioner.waiting.wait(60)  # the job is running, held at its first window
        first = stub.WatchIngestJob(pb.GetIngestJobRequest(job_id=job_id), timeout=60)
        assert next(first).state == pb.JOB_STATE_RUNNING
        second = stub.WatchIngestJob(pb.GetIngestJobRequest(job_id=job_id), timeout=60)
        with pytest.raises(grpc.RpcError) as err:
            next(second)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        first.cancel()  # the client goes away: its server thread is freed at once
        t = time.monotonic()
        while True:
            third = stub.WatchIngestJob(pb.GetIngestJobRequest(job_id=job_id), timeout=60)
            try:
                assert next(third).job_id == job_id
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() - t < 2.0, "the cancelled watch kept its thread"
                time.sleep(0.05)
        # The SDK falls back to polling when the server turns its watch away.
        polled: list[IngestJob] = []
        waiter = threading.Thread(
            target=lambda: polled.append(client.wait_for_job(job_id, timeout=60, poll_interval=0.1))
        )
        waiter.start()
        captioner.gate.set()
        assert [j.state for j in third][-1] == pb.JOB_STATE_SUCCEEDED
        waiter.join(60)
        assert polled and polled[0].state.value == "succeeded"


def test_watching_an_unknown_job_is_not_found(gated):
    port, _ = gated
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = pb_grpc.VideoSearchStub(channel).WatchIngestJob(
            pb.GetIngestJobRequest(job_id="nope"), timeout=10
        )
        with pytest.raises(grpc.RpcError) as err:
            next(stream)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
