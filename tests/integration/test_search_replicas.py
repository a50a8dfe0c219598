"""Search replicas: servers that share one database and catch their index up from the change log.

One server ingests (role ``all``); two replicas (role ``search``) on other ports and data
directories see the video within their catch-up interval, and both stop returning it
after a delete made through the ingesting server. PostgreSQL, as in a real deployment.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.support.fakes import ColourCaptioner
from tests.support.storage import postgres_schema
from tests.support.waiting import eventually
from vidseek.client import Client, FailedPreconditionError
from vidseek.server.app import create_server
from vidseek.server.settings import load_settings
from vidseek.server.worker import worker_main

pytestmark = pytest.mark.postgres

CATCH_UP_S = 0.2


def test_replicas_see_ingests_and_deletes_within_their_catch_up_interval(
    tmp_path: Path, embedder, colour_video: Path
):
    with postgres_schema() as url:
        servers = []
        for name, role in (("ingest", "all"), ("replica-1", "search"), ("replica-2", "search")):
            settings = load_settings(
                overrides={
                    "port": 0,
                    "data_dir": str(tmp_path / name),
                    "database_url": url,
                    "role": role,
                    "catch_up_seconds": CATCH_UP_S,
                    "window_seconds": 6.0,
                },
                environ={},
            )
            servers.append(
                create_server(settings, embedder=embedder, captioner_factory=ColourCaptioner)
            )
        try:
            ingest, *replicas = (Client(f"127.0.0.1:{port}", retries=0) for _, port, _ in servers)

            def found(client: Client) -> bool:
                return any(m.video_id for m in client.search("a red screen", min_score=-1.0))

            assert not any(found(r) for r in replicas)
            job = ingest.wait_for_job(ingest.ingest(str(colour_video)).job_id, timeout=60)
            assert job.state.value == "succeeded"
            seen = [eventually(lambda r=r: found(r)) for r in replicas]
            deleted = ingest.delete_video(job.video_id)
            assert deleted > 0
            gone = [eventually(lambda r=r: not found(r)) for r in replicas]
            with pytest.raises(FailedPreconditionError, match="search replica"):
                replicas[0].ingest(str(colour_video))
            for client in (ingest, *replicas):
                client.close()
        finally:
            for server, _, app in servers:
                server.stop(0)
                app.shutdown()
    # Each replica caught up within a few intervals (searches poll every 50 ms).
    assert max(seen) < 20 * CATCH_UP_S + 2 and max(gone) < 20 * CATCH_UP_S + 2


def test_replicas_see_what_queue_workers_ingest_and_deletes(
    tmp_path: Path, embedder, colour_video: Path
):
    """The same through the task queue: the server only queues, a worker ingests."""
    with postgres_schema() as url:

        def settings(name: str, **overrides: object):
            return load_settings(
                overrides={
                    "port": 0,
                    "data_dir": str(tmp_path / name),
                    "database_url": url,
                    "catch_up_seconds": CATCH_UP_S,
                    "window_seconds": 6.0,
                    **overrides,
                },
                environ={},
            )

        servers = [
            create_server(
                settings(name, **overrides), embedder=embedder, captioner_factory=ColourCaptioner
            )
            for name, overrides in (
                ("server", {"job_queue": "procrastinate"}),
                ("replica-1", {"role": "search"}),
                ("replica-2", {"role": "search"}),
            )
        ]
        stop = threading.Event()
        worker = threading.Thread(
            target=worker_main,
            args=(settings("worker", worker_heartbeat_seconds=0.5, worker_stalled_seconds=2.0),),
            kwargs={
                "name": "w",
                "embedder": embedder,
                "captioner_factory": ColourCaptioner,
                "stop": stop,
            },
        )
        worker.start()
        try:
            clients = [Client(f"127.0.0.1:{port}", retries=0) for _, port, _ in servers]
            server = clients[0]

            def found(client: Client) -> bool:
                return any(m.video_id for m in client.search("a red screen", min_score=-1.0))

            job = server.wait_for_job(server.ingest(str(colour_video)).job_id, timeout=60)
            assert job.state.value == "succeeded" and job.events_indexed > 0
            # The server, which ran no job itself, sees it through the change log too.
            seen = [eventually(lambda c=c: found(c)) for c in clients]
            assert servers[0][2].store.change_log_lag() == 0
            assert server.delete_video(job.video_id) > 0
            gone = [eventually(lambda c=c: not found(c)) for c in clients]
            for client in clients:
                client.close()
        finally:
            stop.set()
            worker.join(60)
            for grpc_server, _, app in servers:
                grpc_server.stop(0)
                app.shutdown()
    assert not worker.is_alive()
    assert max(seen) < 20 * CATCH_UP_S + 2 and max(gone) < 20 * CATCH_UP_S + 2
