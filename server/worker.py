"""``vidseek worker``: an ingest worker process on the PostgreSQL task queue.

A worker holds no state of its own: it claims ingest jobs from the procrastinate
queue in the shared PostgreSQL database (see :mod:`vidseek.server.task_queue`), runs
``VIDSEEK_INGEST_WORKERS`` of them at once through the same job runner, engine and
decode pool as the embedded server, and commits windows and events to SQL. It keeps
no vector index: the search servers apply its commits from the change log. Run any
number, on any host that can read the video files at the paths given to the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from vidseek.indexer.captioner import Captioner
from vidseek.indexer.embedder import Embedder
from vidseek.indexer.engine import CaptionEngine
from vidseek.server.app import embedder_for, job_runner
from vidseek.server.metrics import Metrics
from vidseek.server.settings import Settings
from vidseek.server.task_queue import conninfo, ensure_schema, run_worker, worker_app
from vidseek.storage.errors import ConfigError
from vidseek.storage.store import Store

__all__ = ["worker_main"]

log = logging.getLogger(__name__)


def worker_main(
    settings: Settings,
    *,
    name: str = "",
    embedder: Embedder | None = None,
    captioner_factory: Callable[[], Captioner | CaptionEngine] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run an ingest worker until SIGTERM/SIGINT, or until ``stop`` is set if given
    (then it may run off the main thread).

    On a signal, running jobs commit their windows in flight and go back to the
    queue at once, for this worker after a restart or for another one.
    """
    url = settings.resolved_database_url
    conninfo(url)  # ConfigError unless PostgreSQL
    if settings.role != "all":
        raise ConfigError(f"setting 'role' = {settings.role!r}: a worker runs ingest jobs")
    ensure_schema(url)
    emb = embedder or embedder_for(settings)
    store = Store(
        url,
        Path(settings.index_path),
        emb.dim,
        index_kind=settings.index_kind,
        use_gpu=False,
        keep_index=False,
    )
    runner = job_runner(settings, store, emb, captioner_factory)
    metrics = None
    try:
        if settings.metrics_port:
            metrics = Metrics()
            metrics.watch(store, runner)
            port = metrics.serve(settings.metrics_host, settings.metrics_port)
            log.info("worker metrics on http://%s:%d/metrics", settings.metrics_host, port)
        name = name or f"{socket.gethostname()}-{os.getpid()}"
        # The model loads before the first job is claimed: a worker whose model cannot
        # load takes no jobs (it exits, saying why), and a long load cannot starve the
        # heartbeats of a worker that holds jobs.
        log.info("vidseek worker %s: loading the captioning model", name)
        runner.captioner()
        running: set[str] = set()

        def cancelled(job_id: str) -> None:  # a cancelled job whose worker died
            store.update_job(job_id, state="cancelled")

        log.info(
            "vidseek worker %s: %d job(s) at once, heartbeat %g s, stalled after %g s",
            name,
            settings.ingest_workers,
            settings.worker_heartbeat_seconds,
            settings.worker_stalled_seconds,
        )
        asyncio.run(
            run_worker(
                worker_app(
                    url,
                    runner.run,
                    running,
                    busy_retry_seconds=max(1, round(settings.worker_stalled_seconds / 2)),
                ),
                name=name,
                concurrency=settings.ingest_workers,
                heartbeat_seconds=settings.worker_heartbeat_seconds,
                stalled_seconds=settings.worker_stalled_seconds,
                stop=stop,
                running=running,
                on_cancelled=cancelled,
            )
        )
    finally:
        runner.stop(timeout=settings.grace_seconds)
        if metrics is not None:
            metrics.close()
        store.close()
        log.info("vidseek worker stopped")
