"""The task queue's pieces against a real PostgreSQL (procrastinate's own tables)."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from procrastinate.exceptions import AlreadyEnqueued, JobAborted
from procrastinate.jobs import Job

from tests.support.storage import postgres_schema
from vidseek.server.task_queue import (
    INGEST_TASK,
    QUEUE,
    JobBusy,
    JobQueue,
    _app,
    _RetryWhenShutDown,
    conninfo,
    ensure_schema,
    fenced,
    retry_stalled_jobs,
)
from vidseek.storage.errors import ConfigError


def test_conninfo_is_the_libpq_form_of_the_sqlalchemy_url():
    url = "postgresql+psycopg://vid:secret@db:5433/lib?options=-csearch_path%3Dx"
    assert conninfo(url) == "postgresql://vid:secret@db:5433/lib?options=-csearch_path%3Dx"
    with pytest.raises(ConfigError, match="needs PostgreSQL, not sqlite"):
        conninfo("sqlite:///tmp/v.db")


@pytest.mark.postgres
def test_jobs_are_queued_once_and_cancelled_before_a_worker_takes_them():
    with postgres_schema() as url:
        assert ensure_schema(url) is True
        assert ensure_schema(url) is False  # idempotent
        queue = JobQueue(url)
        try:
            queue.defer("job-a")
            queue.defer("job-b")
            with pytest.raises(AlreadyEnqueued):
                queue.defer("job-a")  # one queue entry per vidseek job
            jobs = {j.queueing_lock: j for j in queue.app.job_manager.list_jobs(queue=QUEUE)}
            assert set(jobs) == {"job-a", "job-b"}
            assert jobs["job-a"].task_name == INGEST_TASK
            assert jobs["job-a"].task_kwargs == {"job_id": "job-a"}

            # A job recorded but never queued is queued once; a waiting one is left alone.
            assert queue.ensure_queued("job-c") is True
            assert queue.ensure_queued("job-c") is False
            assert queue.ensure_queued("job-b") is False

            assert queue.cancel("job-a") == "cancelled"
            assert queue.cancel("no-such-job") == "absent"
            status = {j.queueing_lock: j.status for j in queue.app.job_manager.list_jobs()}
            assert status == {"job-a": "cancelled", "job-b": "todo", "job-c": "todo"}
        finally:
            queue.close()


def test_a_shutdown_abort_is_retried_at_once_and_a_busy_job_later():
    job = Job(id=1, queue=QUEUE, lock=None, queueing_lock=None, task_name=INGEST_TASK)
    strategy = _RetryWhenShutDown(busy_retry_seconds=30)
    now = datetime.datetime.now(datetime.UTC)
    at_once = strategy.get_retry_decision(exception=JobAborted("stop"), job=job)
    assert at_once is not None and at_once.retry_at is not None
    assert at_once.retry_at < now + datetime.timedelta(seconds=5)
    later = strategy.get_retry_decision(exception=JobBusy("running elsewhere"), job=job)
    assert later is not None and later.retry_at is not None
    assert later.retry_at > now + datetime.timedelta(seconds=25)
    assert strategy.get_retry_decision(exception=RuntimeError("bug"), job=job) is None


@pytest.mark.postgres
def test_a_job_runs_in_one_process_at_a_time():
    with postgres_schema() as url:
        with fenced(url, "job-a") as first:
            assert first is not None
            with fenced(url, "job-a") as second, fenced(url, "job-b") as other:
                assert second is None  # held by the first run
                assert other is not None
        with fenced(url, "job-a") as again:
            assert again is not None  # released with its connection


@pytest.mark.postgres
def test_stalled_jobs_are_retried_or_ended_if_cancelled_but_never_ones_running_here():
    with postgres_schema() as url:
        queue = JobQueue(url)
        for job_id in ("lost", "lost-cancelled", "mine"):
            queue.defer(job_id)
        queue.close()

        async def scenario() -> tuple[int, list[str], dict[str, str]]:
            app = _app(url)
            async with app.open_async():
                manager = app.job_manager
                worker = await manager.register_worker()
                tasks = {}
                for _ in range(3):  # a worker takes all three, then dies
                    job = await manager.fetch_job([QUEUE], worker)
                    assert job is not None and job.id is not None
                    tasks[job.task_kwargs["job_id"]] = job.id
                await app.connector.execute_query_async(
                    "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'"
                )
                await manager.cancel_job_by_id_async(tasks["lost-cancelled"], abort=True)
                cancelled: list[str] = []
                retried = await retry_stalled_jobs(
                    app, 5, running={"mine"}, on_cancelled=cancelled.append
                )
                status = {
                    str(j.task_kwargs["job_id"]): str(j.status)
                    for j in await manager.list_jobs_async(queue=QUEUE)
                }
                return retried, cancelled, status

        retried, cancelled, status = asyncio.run(scenario())
    assert retried == 1 and cancelled == ["lost-cancelled"]
    assert status == {"lost": "todo", "lost-cancelled": "aborted", "mine": "doing"}


@pytest.mark.postgres
def test_a_queue_mode_runner_queues_the_unfinished_jobs_it_finds(tmp_path, embedder):
    from tests.support.fakes import ColourCaptioner
    from vidseek.indexer.pipeline import IngestConfig
    from vidseek.server.jobs import JobRunner
    from vidseek.storage.store import Store

    with postgres_schema() as url:
        store = Store(url, tmp_path / "index", embedder.dim)
        store.create_job("left-behind", "/videos/a.mp4")  # recorded, never queued
        queue = JobQueue(url)
        runner = JobRunner(store, embedder, ColourCaptioner, IngestConfig(), [], task_queue=queue)
        try:
            runner.start()
            runner.start()  # a second server start queues nothing twice
            tasks = list(queue.app.job_manager.list_jobs(queue=QUEUE))
        finally:
            runner.stop()
            store.close()
    assert [(t.queueing_lock, t.status) for t in tasks] == [("left-behind", "todo")]
