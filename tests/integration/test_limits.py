"""Server limits: RPCs in flight beyond the cap, messages beyond the size limit."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.support.fakes import GatedCaptioner
from vidseek.client import Client, InvalidArgumentError, ResourceExhaustedError
from vidseek.server.app import create_server
from vidseek.server.settings import load_settings
from vidseek.v1 import video_search_pb2 as pb
from vidseek.v1 import video_search_pb2_grpc as pb_grpc


def test_rpcs_beyond_the_cap_and_oversized_messages_are_resource_exhausted(
    data_dir: Path, embedder, colour_video: Path
):
    settings = load_settings(
        overrides={
            "port": 0,
            "data_dir": str(data_dir),
            "window_seconds": 6.0,
            "max_concurrent_rpcs": 1,
            "max_message_bytes": 65536,
        },
        environ={},
    )
    captioner = GatedCaptioner()
    server, port, app = create_server(
        settings, embedder=embedder, captioner_factory=lambda: captioner
    )
    try:
        with (
            Client(f"127.0.0.1:{port}", retries=0) as client,
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            with pytest.raises(ResourceExhaustedError):  # 100 KB > 64 KiB
                client.search("x" * 100_000)
            job_id = client.ingest(str(colour_video)).job_id
            assert captioner.waiting.wait(60)
            # One RPC in flight (a watch of the held job): the next one is turned away.
            watch = pb_grpc.VideoSearchStub(channel).WatchIngestJob(
                pb.GetIngestJobRequest(job_id=job_id), timeout=60
            )
            assert next(watch).job_id == job_id
            with pytest.raises(ResourceExhaustedError):
                client.search("a red screen")
            watch.cancel()
            captioner.gate.set()
        with Client(f"127.0.0.1:{port}") as patient:  # retries with backoff
            assert patient.wait_for_job(job_id, timeout=60).state.value == "succeeded"
            assert patient.search("a red screen", min_score=-1.0)
    finally:
        captioner.gate.set()
        server.stop(0)
        app.shutdown()


def test_jobs_beyond_the_queue_cap_are_resource_exhausted_with_a_hint(
    data_dir: Path, embedder, colour_video: Path
):
    settings = load_settings(
        overrides={"port": 0, "data_dir": str(data_dir), "max_queued_jobs": 2},
        environ={},
    )
    captioner = GatedCaptioner()
    server, port, app = create_server(
        settings, embedder=embedder, captioner_factory=lambda: captioner
    )
    try:
        with Client(f"127.0.0.1:{port}", retries=0) as client:
            first = client.ingest(str(colour_video)).job_id  # running, held by the gate
            client.ingest(str(colour_video))  # queued
            with pytest.raises(ResourceExhaustedError, match=r"MAX_QUEUED_JOBS=2.*retry") as info:
                client.ingest(str(colour_video))
            assert info.value.retry_after == 30.0  # google.rpc.RetryInfo in the status details
            assert app.store.count_jobs() == 2  # the refused one left no job behind
            captioner.gate.set()
            assert client.wait_for_job(first, timeout=60).state.value == "succeeded"
            assert client.ingest(str(colour_video)).job_id  # room again
    finally:
        captioner.gate.set()
        server.stop(0)
        app.shutdown()


def test_bad_fields_come_back_as_field_violations(data_dir: Path, embedder):
    settings = load_settings(overrides={"port": 0, "data_dir": str(data_dir)}, environ={})
    server, port, app = create_server(settings, embedder=embedder, captioner_factory=GatedCaptioner)
    try:
        with Client(f"127.0.0.1:{port}", retries=0) as client:
            with pytest.raises(InvalidArgumentError) as bad_k:
                client.search("a red screen", top_k=100_000)
            with pytest.raises(InvalidArgumentError) as inverted:
                client.search("a red screen", start_seconds=10.0, end_seconds=5.0)
            with pytest.raises(InvalidArgumentError) as missing:
                client.get_job("")
    finally:
        server.stop(0)
        app.shutdown()
    (violation,) = bad_k.value.field_violations
    assert violation.field == "top_k" and "top_k must be between" in violation.description
    assert [v.field for v in inverted.value.field_violations] == ["end_seconds"]
    assert [v.field for v in missing.value.field_violations] == ["job_id"]
    assert "top_k must be between" in bad_k.value.message  # the plain message is unchanged
    assert bad_k.value.retry_after is None
