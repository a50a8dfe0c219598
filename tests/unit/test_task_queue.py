"""The task queue's pieces against a real PostgreSQL (procrastinate's own tables)."""

from __future__ import annotations

import pytest
from procrastinate.exceptions import AlreadyEnqueued, JobAborted
from procrastinate.jobs import Job

from tests.support.storage import postgres_schema
from vidseek.server.task_queue import (
    INGEST_TASK,
    QUEUE,
    JobQueue,
    _RetryWhenShutDown,
    conninfo,
    ensure_schema,
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

            assert queue.cancel("job-a") is True
            assert queue.cancel("no-such-job") is False
            status = {j.queueing_lock: j.status for j in queue.app.job_manager.list_jobs()}
            assert status == {"job-a": "cancelled", "job-b": "todo"}
        finally:
            queue.close()


def test_only_a_shutdown_abort_is_retried():
    job = Job(id=1, queue=QUEUE, lock=None, queueing_lock=None, task_name=INGEST_TASK)
    strategy = _RetryWhenShutDown()
    decision = strategy.get_retry_decision(exception=JobAborted("stop"), job=job)
    assert decision is not None and decision.retry_at is not None
    assert strategy.get_retry_decision(exception=RuntimeError("bug"), job=job) is None
