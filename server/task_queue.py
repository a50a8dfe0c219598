"""Ingest jobs on a PostgreSQL task queue: procrastinate, for ``vidseek worker`` processes.

With ``VIDSEEK_JOB_QUEUE=procrastinate`` a server records each ingest job in its own
table (progress, results, as in the embedded mode) and defers one procrastinate job
for it; any number of ``vidseek worker`` processes, on any host sharing the
PostgreSQL database, claim those and run them. procrastinate provides the claiming
(``FOR UPDATE SKIP LOCKED``), worker heartbeats, stalled-job detection and abort
requests; vidseek adds no locking of its own.

- **A worker dies** (SIGKILL, lost host): its heartbeat stops. Every
  ``VIDSEEK_WORKER_STALLED_SECONDS / 2`` each worker asks procrastinate for the jobs
  of workers silent for ``VIDSEEK_WORKER_STALLED_SECONDS`` and sends them back to the
  queue; another worker resumes them at their first uncommitted window. Window ids are content
  hashes and a commit inserts the window row first, so a window is committed at most
  once even if two runs overlap.
- **A worker is stopped** (SIGTERM): procrastinate asks its running jobs to abort
  (reason shutdown); they commit what is in flight and are queued again at once.
- **A job is cancelled** through the API: procrastinate deletes it if it has not
  started, else asks its worker to abort it (reason user request); the job ends
  ``cancelled`` with what was committed kept.

The queue's tables live in the same database as vidseek's; they are created on first
use (under an advisory lock, so workers starting together do not race).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

import procrastinate
import psycopg
from procrastinate.exceptions import JobAborted
from procrastinate.job_context import AbortReason, JobContext
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy, RetryDecision
from procrastinate.schema import SchemaManager
from sqlalchemy.engine import make_url

from vidseek.storage.errors import ConfigError

__all__ = [
    "INGEST_TASK",
    "QUEUE",
    "JobQueue",
    "conninfo",
    "ensure_schema",
    "retry_stalled_jobs",
    "run_worker",
    "worker_app",
]

log = logging.getLogger(__name__)

QUEUE = "vidseek-ingest"
INGEST_TASK = "vidseek.ingest_job"
# Any constant key: held while the queue's schema is checked and created.
_SCHEMA_LOCK_KEY = 0x76696473  # "vids"


def conninfo(database_url: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL."""
    url = make_url(database_url)
    if not url.drivername.startswith("postgresql"):
        raise ConfigError(
            f"the task queue needs PostgreSQL, not {url.drivername} ({url.render_as_string()})"
        )
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def ensure_schema(database_url: str) -> bool:
    """Create procrastinate's tables in the database if they are absent; True if created."""
    with psycopg.connect(conninfo(database_url), autocommit=False) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        exists = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
        if exists is not None and exists[0] is not None:
            return False
        log.info("creating the task queue's tables (procrastinate) in the database")
        conn.execute(SchemaManager.get_schema())
        conn.commit()
        return True


def _app(database_url: str) -> procrastinate.App:
    return procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=conninfo(database_url))
    )


class JobQueue:
    """The server's side of the queue: defers ingest jobs and cancels them."""

    def __init__(self, database_url: str) -> None:
        ensure_schema(database_url)
        self.app = _app(database_url)
        self.app.open()

    def defer(self, job_id: str) -> int:
        """Queue vidseek job ``job_id`` for a worker; returns procrastinate's job id."""
        task = self.app.configure_task(INGEST_TASK, queue=QUEUE, queueing_lock=job_id)
        return task.defer(job_id=job_id)

    def cancel(self, job_id: str) -> bool:
        """Delete the job if no worker has it, else ask its worker to abort it.

        False if the queue holds no such job still to do or running.
        """
        cancelled = False
        for job in self.app.job_manager.list_jobs(queue=QUEUE, queueing_lock=job_id):
            if job.id is not None and job.status in ("todo", "doing"):
                cancelled |= self.app.job_manager.cancel_job_by_id(job.id, abort=True)
        return cancelled

    def close(self) -> None:
        self.app.close()


class _RetryWhenShutDown(BaseRetryStrategy):
    """Queue a job again at once when its worker stops mid-job (procrastinate calls
    this for an abort only if the reason is the worker's shutdown)."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, JobAborted):
            return RetryDecision(retry_in={"seconds": 0})
        return None


RunJob = Callable[[str, Callable[[], bool], Callable[[], bool]], str]
"""``run(job_id, should_stop, is_cancelled) -> outcome``; the outcome ``"interrupted"``
means the job stopped early and must run again."""


def worker_app(database_url: str, run_job: RunJob) -> procrastinate.App:
    """A procrastinate app whose ingest task runs jobs with ``run_job``."""
    app = _app(database_url)

    @app.task(name=INGEST_TASK, queue=QUEUE, pass_context=True, retry=_RetryWhenShutDown())
    def ingest_job(context: JobContext, job_id: str) -> str:
        outcome = run_job(
            job_id,
            context.should_abort,
            lambda: context.abort_reason() == AbortReason.USER_REQUEST,
        )
        if outcome == "interrupted":
            raise JobAborted(f"ingest job {job_id} stopped with its worker; queued again")
        return outcome

    del ingest_job  # registered on the app
    return app


async def retry_stalled_jobs(app: procrastinate.App, stalled_seconds: float) -> int:
    """Send ingest jobs whose worker is silent for ``stalled_seconds`` back to the queue."""
    manager = app.job_manager
    stalled = await manager.get_stalled_jobs(
        queue=QUEUE, task_name=INGEST_TASK, seconds_since_heartbeat=stalled_seconds
    )
    n = 0
    for job in stalled:
        try:
            await manager.retry_job(job)
        except Exception:  # another worker retried it first, or it just finished
            log.debug("could not retry stalled task %s", job.id, exc_info=True)
            continue
        log.warning("ingest task %s %s lost its worker; queued again", job.id, job.task_kwargs)
        n += 1
    return n


async def run_worker(
    app: procrastinate.App,
    *,
    name: str,
    concurrency: int,
    heartbeat_seconds: float,
    stalled_seconds: float,
    stop: threading.Event | None = None,
) -> None:
    """Run a worker on the ingest queue until SIGTERM/SIGINT (or, if given, until
    ``stop`` is set: then no signal handlers are installed, e.g. off the main thread).

    Beside it, every ``stalled_seconds / 2`` it retries stalled jobs
    (:func:`retry_stalled_jobs`). That check runs outside the worker's job slots:
    as a procrastinate periodic task it would wait for a free slot, which ingest
    jobs can hold for hours.
    """

    async def reap() -> None:
        while True:
            await asyncio.sleep(stalled_seconds / 2)
            try:
                await retry_stalled_jobs(app, stalled_seconds)
            except Exception:  # the database may be briefly away; try again next time
                log.warning("checking for stalled ingest jobs failed", exc_info=True)

    async def stop_when_asked(worker: asyncio.Task[None]) -> None:
        assert stop is not None
        while not stop.is_set():
            await asyncio.sleep(0.1)
        worker.cancel()  # procrastinate stops gracefully, as on SIGTERM

    async with app.open_async():
        reaper = asyncio.create_task(reap(), name="vidseek-retry-stalled")
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=[QUEUE],
                name=name,
                concurrency=concurrency,
                update_heartbeat_interval=heartbeat_seconds,
                stalled_worker_timeout=stalled_seconds,
                # vidseek's own job table keeps the history; finished queue rows go.
                delete_jobs="successful",
                install_signal_handlers=stop is None,
                # On SIGTERM, abort running jobs at once (reason shutdown): they commit
                # their windows in flight and go back to the queue.
                shutdown_graceful_timeout=0,
            ),
            name="vidseek-worker",
        )
        watcher = asyncio.create_task(stop_when_asked(worker)) if stop is not None else None
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        finally:
            for task in (reaper, watcher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
