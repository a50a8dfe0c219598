"""Ingest jobs on a PostgreSQL task queue: procrastinate, for ``vidseek worker`` processes.

With ``VIDSEEK_JOB_QUEUE=procrastinate`` a server records each ingest job in its own
table (progress, results, as in the embedded mode) and defers one procrastinate job
for it; any number of ``vidseek worker`` processes, on any host sharing the
PostgreSQL database, claim those and run them. procrastinate provides the claiming
(``FOR UPDATE SKIP LOCKED``), worker heartbeats, stalled-job detection, abort
requests and retries.

- **A worker dies** (SIGKILL, lost host): its heartbeat stops. Every
  ``VIDSEEK_WORKER_STALLED_SECONDS / 2`` each worker asks procrastinate for the jobs
  of workers silent for ``VIDSEEK_WORKER_STALLED_SECONDS`` (never its own) and sends
  them back to the queue; another worker resumes them at their first uncommitted
  window.
- **Two runs of one job never overlap.** A run holds the job's PostgreSQL advisory
  lock (:func:`fenced`) on a connection of its own, which dies with its process. A
  worker that only looked dead (heartbeats starved) still holds it, so the retry
  waits (:class:`JobBusy`, retried after half the stalled interval) and, once it gets
  the lock, finds the job finished or resumes it. Window ids are content hashes and a
  commit inserts the window row first, so a window is committed at most once anyway.
- **A worker is stopped** (SIGTERM): procrastinate asks its running jobs to abort
  (reason shutdown); they commit what is in flight and are queued again at once.
- **A job is cancelled** through the API: procrastinate deletes it if it has not
  started, else asks its worker to abort it; the job ends ``cancelled`` with what
  was committed kept. The cancellation is stored in the queue (``abort_requested``),
  so it holds when a SIGTERM comes before the worker notices, and a stalled job
  whose cancellation was asked for is ended, not retried.

The queue's tables live in the same database as vidseek's; they are created on first
use (under an advisory lock, so workers starting together do not race).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import procrastinate
import psycopg
from procrastinate.exceptions import AlreadyEnqueued, JobAborted
from procrastinate.job_context import JobContext
from procrastinate.jobs import Job, Status
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

    def ensure_queued(self, job_id: str) -> bool:
        """Queue vidseek job ``job_id`` unless a task for it waits or runs; True if queued."""
        live = self.app.job_manager.list_jobs(queue=QUEUE, queueing_lock=job_id)
        if any(job.status in ("todo", "doing") for job in live):
            return False
        try:
            self.defer(job_id)
        except AlreadyEnqueued:  # another server queued it meanwhile
            return False
        return True

    def cancel(self, job_id: str) -> str:
        """Cancel vidseek job ``job_id`` in the queue; returns what became of it.

        ``"cancelled"``: no worker had it, and none will. ``"aborting"``: a worker runs
        it and is asked to stop; it records the job ``cancelled`` itself. ``"absent"``:
        the queue holds no live task for it (nobody will run it).
        """
        result = "absent"
        for job in self.app.job_manager.list_jobs(queue=QUEUE, queueing_lock=job_id):
            if job.id is None or job.status not in ("todo", "doing"):
                continue
            if self.app.job_manager.cancel_job_by_id(job.id, abort=True):
                result = "aborting" if job.status == "doing" else "cancelled"
        return result

    def close(self) -> None:
        self.app.close()


class JobBusy(Exception):
    """Another process still runs this vidseek job (it holds the job's fence)."""


class _RetryWhenShutDown(BaseRetryStrategy):
    """Queue a job again at once when its worker stops mid-job (procrastinate calls
    this for an abort only if the reason is the worker's shutdown), and later when
    another process still runs it."""

    def __init__(self, busy_retry_seconds: int = 30) -> None:
        self.busy_retry_seconds = busy_retry_seconds

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, JobAborted):
            return RetryDecision(retry_in={"seconds": 0})
        if isinstance(exception, JobBusy):
            return RetryDecision(retry_in={"seconds": round(self.busy_retry_seconds)})
        return None


def _fence_key(job_id: str) -> int:
    digest = hashlib.sha256(f"vidseek-ingest-job:{job_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def fenced(database_url: str, job_id: str) -> Iterator[psycopg.Connection[Any] | None]:
    """A connection holding job ``job_id``'s advisory lock, or None if another holds it.

    The lock lives as long as the connection, so it goes with a process that dies:
    two runs of one job never overlap, even when a worker that only looked dead
    (heartbeats starved) goes on.
    """
    conn = psycopg.connect(conninfo(database_url), autocommit=True)
    held = False
    try:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_fence_key(job_id),)).fetchone()
        held = row is not None and bool(row[0])
        yield conn if held else None
    finally:
        try:
            if held:  # at once: the server frees a closed connection's locks only later
                conn.execute("SELECT pg_advisory_unlock(%s)", (_fence_key(job_id),))
        except psycopg.Error:
            log.warning("could not unlock job %s's fence; it goes with the connection", job_id)
        finally:
            conn.close()


def _abort_requested(conn: psycopg.Connection[Any], task_id: int | None) -> bool:
    """Whether the job's cancellation was asked for (procrastinate's stored flag)."""
    row = conn.execute(
        "SELECT abort_requested FROM procrastinate_jobs WHERE id = %s", (task_id,)
    ).fetchone()
    return bool(row is not None and row[0])


RunJob = Callable[[str, Callable[[], bool], Callable[[], bool]], str]
"""``run(job_id, should_stop, is_cancelled) -> outcome``; the outcome ``"interrupted"``
means the job stopped early and must run again."""


def worker_app(
    database_url: str,
    run_job: RunJob,
    running: set[str] | None = None,
    *,
    busy_retry_seconds: int = 30,
) -> procrastinate.App:
    """A procrastinate app whose ingest task runs jobs with ``run_job``.

    Each run holds the job's fence (:func:`fenced`); a task whose job another process
    still runs is retried after ``busy_retry_seconds``. ``running`` holds the vidseek
    job ids this process runs now. A job counts as cancelled when its cancellation
    is stored in the queue, whatever else stopped it (e.g. a SIGTERM after a cancel).
    """
    app = _app(database_url)
    here = running if running is not None else set()

    @app.task(
        name=INGEST_TASK,
        queue=QUEUE,
        pass_context=True,
        retry=_RetryWhenShutDown(busy_retry_seconds),
    )
    def ingest_job(context: JobContext, job_id: str) -> str:
        with fenced(database_url, job_id) as conn:
            if conn is None:
                raise JobBusy(f"ingest job {job_id} is still running in another process")
            here.add(job_id)
            try:
                outcome = run_job(
                    job_id, context.should_abort, lambda: _abort_requested(conn, context.job.id)
                )
            finally:
                here.discard(job_id)
        if outcome == "interrupted":
            raise JobAborted(f"ingest job {job_id} stopped with its worker; queued again")
        return outcome

    del ingest_job  # registered on the app
    return app


async def retry_stalled_jobs(
    app: procrastinate.App,
    stalled_seconds: float,
    *,
    running: set[str] | frozenset[str] = frozenset(),
    on_cancelled: Callable[[str], None] | None = None,
) -> int:
    """Send ingest jobs whose worker is silent for ``stalled_seconds`` back to the queue.

    Jobs in ``running`` (this process's own) are left alone. A stalled job whose
    cancellation was asked for is ended instead, and ``on_cancelled`` records it.
    """
    manager = app.job_manager
    stalled = await manager.get_stalled_jobs(
        queue=QUEUE, task_name=INGEST_TASK, seconds_since_heartbeat=stalled_seconds
    )
    n = 0
    for job in stalled:
        job_id = str(job.task_kwargs.get("job_id", ""))
        if job_id in running or job.id is None:
            continue
        try:
            details = list(await manager.list_jobs_async(id=job.id))
            if details and details[0].abort_requested:
                await manager.finish_job_by_id_async(job.id, Status.ABORTED, delete_job=False)
                if on_cancelled is not None:
                    on_cancelled(job_id)
                log.warning(
                    "ingest task %s (job %s) lost its worker while cancelled", job.id, job_id
                )
                continue
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
    running: set[str] | frozenset[str] = frozenset(),
    on_cancelled: Callable[[str], None] | None = None,
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
                await retry_stalled_jobs(
                    app, stalled_seconds, running=running, on_cancelled=on_cancelled
                )
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
