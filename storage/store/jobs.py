"""Ingest jobs in SQL: create, update, list, and wait for a change."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from vidseek.storage.errors import NotFound
from vidseek.storage.models import IngestJobRow

__all__ = ["JobTable"]


class JobTable:
    """The ingest-job half of the store (a base of :class:`~vidseek.storage.store.Store`)."""

    def __init__(self, session: sessionmaker[Session]) -> None:
        self._session = session
        self._job_changes = threading.Condition()
        self._job_change_count = 0

    def create_job(self, job_id: str, uri: str, collection: str = "") -> None:
        """Insert a queued ingest job (its video goes into ``collection``)."""
        now = time.time()
        with self._session.begin() as s:
            s.add(
                IngestJobRow(
                    id=job_id,
                    uri=uri,
                    state="queued",
                    created_at=now,
                    updated_at=now,
                    windows_total=0,
                    windows_done=0,
                    windows_unparsed=0,
                    windows_skipped=0,
                    windows_reused=0,
                    events_indexed=0,
                    error="",
                    plan="",
                    collection=collection,
                )
            )

    def update_job(self, job_id: str, **fields: object) -> None:
        """Update columns of a job and its ``updated_at``."""
        with self._session.begin() as s:
            row = s.get(IngestJobRow, job_id)
            if row is None:
                raise NotFound(f"ingest job {job_id!r} not found")
            for k, v in fields.items():
                setattr(row, k, v)
            row.updated_at = time.time()
        self.notify_job_change()

    @property
    def job_change_count(self) -> int:
        """Counts job changes made through this store (see :meth:`wait_for_job_change`)."""
        return self._job_change_count

    def notify_job_change(self) -> None:
        """Wake :meth:`wait_for_job_change` callers (a job changed, or a watcher left)."""
        with self._job_changes:
            self._job_change_count += 1
            self._job_changes.notify_all()

    def wait_for_job_change(self, seen: int, timeout: float) -> None:
        """Wait until :attr:`job_change_count` passes ``seen``, at most ``timeout`` s.

        Changes made by other processes are not signalled: callers re-read the
        job after the timeout as well.
        """
        with self._job_changes:
            self._job_changes.wait_for(lambda: self._job_change_count != seen, timeout)

    def get_job(self, job_id: str) -> IngestJobRow:
        """One ingest job; :class:`NotFound` if unknown."""
        with self._session() as s:
            row = s.get(IngestJobRow, job_id)
            if row is None:
                raise NotFound(f"ingest job {job_id!r} not found")
            return row

    def count_jobs(self, states: Sequence[str] = ()) -> int:
        """How many jobs there are, optionally only in ``states``."""
        with self._session() as s:
            q = select(func.count()).select_from(IngestJobRow)
            if states:
                q = q.where(IngestJobRow.state.in_(list(states)))
            return int(s.scalar(q) or 0)

    def list_jobs(self, offset: int, limit: int, states: Sequence[str] = ()) -> list[IngestJobRow]:
        """Jobs, newest first, optionally only in ``states``."""
        with self._session() as s:
            q = select(IngestJobRow)
            if states:
                q = q.where(IngestJobRow.state.in_(list(states)))
            q = q.order_by(IngestJobRow.created_at.desc(), IngestJobRow.id)
            return list(s.scalars(q.offset(offset).limit(limit)).all())
