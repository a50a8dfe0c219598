"""The store: keeps SQL (source of truth) and the FAISS index (derived) consistent.

Write path: one SQL transaction per window inserts the window, its events and
their change-log entries; only after it commits are the vectors added to FAISS.
A crash between the two loses nothing: on start the index loads its snapshot
and replays the change log after the snapshot's sequence number.

Read path: FAISS returns ids; ids are hydrated from SQL, and ids SQL does not
know (deleted meanwhile) are dropped and counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from vidseek.storage.db import create_schema, make_engine, make_sessionmaker
from vidseek.storage.errors import NotFound
from vidseek.storage.models import ChangeLog, EventRow, IngestJobRow, VideoRow, WindowRow
from vidseek.storage.vector_index import SnapshotError, VectorIndex

__all__ = [
    "EventRecord",
    "NewEvent",
    "NewWindow",
    "Store",
    "VideoRecord",
    "event_id_for",
    "window_id_for",
]

log = logging.getLogger(__name__)

_INT63 = (1 << 63) - 1


def _id64(*parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _INT63


def window_id_for(
    content_hash: str, start_seconds: float, end_seconds: float, model: str, prompt_version: str
) -> int:
    """Deterministic window id: the same content and window always get the same id."""
    return _id64("w", content_hash, f"{start_seconds:.3f}", f"{end_seconds:.3f}", model,
                 prompt_version)


def event_id_for(window_id: int, ordinal: int) -> int:
    """Deterministic event id from its window and its position in the window's output."""
    return _id64("e", window_id, ordinal)


@dataclass(frozen=True)
class VideoRecord:
    id: str
    uri: str
    content_hash: str
    duration: float
    fps: float
    width: int
    height: int
    frame_count: int
    event_count: int
    created_at: float


@dataclass(frozen=True)
class EventRecord:
    id: int
    video_id: str
    start_seconds: float
    end_seconds: float
    text: str


@dataclass(frozen=True)
class NewEvent:
    start_seconds: float
    end_seconds: float
    text: str
    embedding: npt.NDArray[np.float32]


@dataclass(frozen=True)
class NewWindow:
    id: int
    video_id: str
    window_index: int
    start_seconds: float
    end_seconds: float
    frame_count: int
    status: str
    raw_output: str
    parse_error: str
    dropped: Sequence[str]
    model: str
    prompt_version: str
    prompt_tokens: int


class Store:
    """SQL + FAISS behind one object. Writes are serialised; reads run concurrently."""

    def __init__(self, database_url: str, index_path: Path, dim: int) -> None:
        self.engine = make_engine(database_url)
        create_schema(self.engine)
        self._session = make_sessionmaker(self.engine)
        self.index_path = index_path
        self.dim = dim
        self._write_lock = threading.Lock()
        self.unknown_ids_dropped = 0
        self.index = self._load_index()
        self.catch_up()

    # ---- vector index lifecycle -------------------------------------------------

    def _load_index(self) -> VectorIndex:
        try:
            return VectorIndex.load(self.index_path, self.dim)
        except SnapshotError as exc:
            if self.index_path.exists():
                log.warning("vector index snapshot is unusable, rebuilding from SQL: %s", exc)
            return self._build_from_sql()

    def _build_from_sql(self) -> VectorIndex:
        index = VectorIndex(self.dim)
        with self._session() as s:
            max_seq = s.scalar(select(func.max(ChangeLog.seq))) or 0
            rows = s.execute(select(EventRow.id, EventRow.embedding)).all()
        if rows:
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            index.add(ids, vecs.reshape(len(rows), self.dim))
        index.applied_seq = int(max_seq)
        return index

    def rebuild_index(self) -> int:
        """Rebuild the vector index from SQL, swap it in, snapshot it; returns its size."""
        fresh = self._build_from_sql()
        with self._write_lock:
            self.index = fresh
            self._catch_up_locked()
            self.index.save(self.index_path)
        return self.index.ntotal

    def catch_up(self) -> int:
        """Apply change-log entries newer than the index; returns how many were applied."""
        with self._write_lock:
            return self._catch_up_locked()

    def _catch_up_locked(self) -> int:
        applied = 0
        while True:
            with self._session() as s:
                entries = s.execute(
                    select(ChangeLog.seq, ChangeLog.op, ChangeLog.event_id)
                    .where(ChangeLog.seq > self.index.applied_seq)
                    .order_by(ChangeLog.seq)
                    .limit(10_000)
                ).all()
                if not entries:
                    return applied
                add_ids = [e.event_id for e in entries if e.op == "add"]
                vecs = dict(
                    s.execute(
                        select(EventRow.id, EventRow.embedding).where(EventRow.id.in_(add_ids))
                    ).all()
                ) if add_ids else {}
            for e in entries:
                if e.op == "add" and e.event_id in vecs:
                    vec = np.frombuffer(vecs[e.event_id], dtype=np.float32)
                    self.index.add(np.array([e.event_id]), vec, seq=e.seq)
                else:  # a delete, or an add whose row was deleted since
                    self.index.remove(np.array([e.event_id]), seq=e.seq)
                applied += 1

    def snapshot(self) -> None:
        """Write the vector index to disk atomically."""
        with self._write_lock:
            self.index.save(self.index_path)

    # ---- videos and jobs --------------------------------------------------------

    def upsert_video(
        self,
        *,
        uri: str,
        content_hash: str,
        duration: float,
        fps: float,
        width: int,
        height: int,
        frame_count: int,
    ) -> str:
        """Register a video by content hash; returns its id (existing or new)."""
        video_id = content_hash[:16]
        with self._write_lock, self._session.begin() as s:
            row = s.get(VideoRow, video_id)
            if row is None:
                s.add(VideoRow(id=video_id, uri=uri, content_hash=content_hash, duration=duration,
                               fps=fps, width=width, height=height, frame_count=frame_count,
                               created_at=time.time()))
        return video_id

    def get_video(self, video_id: str) -> VideoRecord:
        """One video with its event count; :class:`NotFound` if unknown."""
        with self._session() as s:
            row = s.get(VideoRow, video_id)
            if row is None:
                raise NotFound(f"video {video_id!r} not found")
            n = s.scalar(select(func.count()).where(EventRow.video_id == video_id)) or 0
            return _video_record(row, int(n))

    def list_videos(self, offset: int, limit: int) -> list[VideoRecord]:
        """Videos in creation order."""
        with self._session() as s:
            counts = (
                select(EventRow.video_id, func.count().label("n"))
                .group_by(EventRow.video_id)
                .subquery()
            )
            rows = s.execute(
                select(VideoRow, counts.c.n)
                .outerjoin(counts, counts.c.video_id == VideoRow.id)
                .order_by(VideoRow.created_at, VideoRow.id)
                .offset(offset)
                .limit(limit)
            ).all()
            return [_video_record(v, int(n or 0)) for v, n in rows]

    def existing_video_ids(self, video_ids: Iterable[str]) -> set[str]:
        """The subset of ``video_ids`` that exist."""
        ids = list(video_ids)
        with self._session() as s:
            return set(s.scalars(select(VideoRow.id).where(VideoRow.id.in_(ids))).all())

    def delete_video(self, video_id: str) -> int:
        """Delete a video, its windows and events (SQL, change log, then FAISS)."""
        with self._write_lock:
            with self._session.begin() as s:
                if s.get(VideoRow, video_id) is None:
                    raise NotFound(f"video {video_id!r} not found")
                ids = list(s.scalars(select(EventRow.id).where(EventRow.video_id == video_id)))
                s.add_all([ChangeLog(op="del", event_id=i) for i in ids])
                s.execute(delete(EventRow).where(EventRow.video_id == video_id))
                s.execute(delete(WindowRow).where(WindowRow.video_id == video_id))
                s.execute(delete(VideoRow).where(VideoRow.id == video_id))
            self._catch_up_locked()
        return len(ids)

    def create_job(self, job_id: str, uri: str) -> None:
        """Insert a queued ingest job."""
        now = time.time()
        with self._session.begin() as s:
            s.add(IngestJobRow(id=job_id, uri=uri, state="queued", created_at=now,
                               updated_at=now, windows_total=0, windows_done=0,
                               windows_unparsed=0, events_indexed=0, error="", plan=""))

    def update_job(self, job_id: str, **fields: object) -> None:
        """Update columns of a job and its ``updated_at``."""
        with self._session.begin() as s:
            row = s.get(IngestJobRow, job_id)
            if row is None:
                raise NotFound(f"ingest job {job_id!r} not found")
            for k, v in fields.items():
                setattr(row, k, v)
            row.updated_at = time.time()

    def get_job(self, job_id: str) -> IngestJobRow:
        """One ingest job; :class:`NotFound` if unknown."""
        with self._session() as s:
            row = s.get(IngestJobRow, job_id)
            if row is None:
                raise NotFound(f"ingest job {job_id!r} not found")
            return row

    def list_jobs(self, offset: int, limit: int, states: Sequence[str] = ()) -> list[IngestJobRow]:
        """Jobs, newest first, optionally only in ``states``."""
        with self._session() as s:
            q = select(IngestJobRow)
            if states:
                q = q.where(IngestJobRow.state.in_(list(states)))
            q = q.order_by(IngestJobRow.created_at.desc(), IngestJobRow.id)
            return list(s.scalars(q.offset(offset).limit(limit)).all())

    # ---- windows and events -----------------------------------------------------

    def committed_window_ids(self, video_id: str) -> set[int]:
        """Ids of the windows of a video already committed."""
        with self._session() as s:
            return set(s.scalars(select(WindowRow.id).where(WindowRow.video_id == video_id)))

    def commit_window(self, window: NewWindow, events: Sequence[NewEvent]) -> bool:
        """Commit a window and its events atomically; False if it was already committed."""
        rows = [
            EventRow(id=event_id_for(window.id, i), video_id=window.video_id, window_id=window.id,
                     start_seconds=e.start_seconds, end_seconds=e.end_seconds, text=e.text,
                     model=window.model, prompt_version=window.prompt_version,
                     embedding=np.ascontiguousarray(e.embedding, dtype=np.float32).tobytes())
            for i, e in enumerate(events)
        ]
        with self._write_lock:
            try:
                with self._session.begin() as s:
                    if s.get(WindowRow, window.id) is not None:
                        return False
                    s.add(WindowRow(
                        id=window.id, video_id=window.video_id, window_index=window.window_index,
                        start_seconds=window.start_seconds, end_seconds=window.end_seconds,
                        frame_count=window.frame_count, status=window.status,
                        raw_output=window.raw_output, parse_error=window.parse_error,
                        dropped=json.dumps(list(window.dropped)), model=window.model,
                        prompt_version=window.prompt_version, prompt_tokens=window.prompt_tokens,
                        created_at=time.time()))
                    s.flush()
                    s.add_all(rows)
                    s.flush()
                    s.add_all([ChangeLog(op="add", event_id=r.id) for r in rows])
            except IntegrityError:
                # A concurrent writer (another process) committed the same window first.
                return False
            self._catch_up_locked()
        return True

    def window_rows(self, video_id: str) -> list[WindowRow]:
        """All committed windows of a video in time order."""
        with self._session() as s:
            return list(s.scalars(select(WindowRow).where(WindowRow.video_id == video_id)
                                  .order_by(WindowRow.start_seconds)))

    def timeline(self, video_id: str, start: float, end: float | None) -> list[EventRecord]:
        """Events of a video overlapping [start, end] in time order."""
        with self._session() as s:
            if s.get(VideoRow, video_id) is None:
                raise NotFound(f"video {video_id!r} not found")
            q = select(EventRow).where(EventRow.video_id == video_id,
                                       EventRow.end_seconds >= start)
            if end is not None:
                q = q.where(EventRow.start_seconds <= end)
            q = q.order_by(EventRow.start_seconds, EventRow.end_seconds, EventRow.id)
            return [_event_record(r) for r in s.scalars(q)]

    def event_ids_of_videos(self, video_ids: Iterable[str]) -> npt.NDArray[np.int64]:
        """All event ids of the given videos."""
        with self._session() as s:
            ids = s.scalars(select(EventRow.id).where(EventRow.video_id.in_(list(video_ids))))
            return np.fromiter(ids, dtype=np.int64)

    def hydrate(self, ids: Sequence[int]) -> dict[int, EventRecord]:
        """Event rows for ``ids``; ids SQL does not know are absent (and counted)."""
        if not ids:
            return {}
        with self._session() as s:
            rows = s.scalars(select(EventRow).where(EventRow.id.in_(list(ids)))).all()
        out = {r.id: _event_record(r) for r in rows}
        self.unknown_ids_dropped += len(set(ids)) - len(out)
        return out

    def video_uris(self, video_ids: Iterable[str]) -> dict[str, str]:
        """uri of each known video id."""
        with self._session() as s:
            rows = s.execute(select(VideoRow.id, VideoRow.uri)
                             .where(VideoRow.id.in_(list(video_ids)))).all()
            return {r[0]: r[1] for r in rows}

    def close(self) -> None:
        """Snapshot the index and release the engine."""
        try:
            self.snapshot()
        finally:
            self.engine.dispose()


def _video_record(row: VideoRow, event_count: int) -> VideoRecord:
    return VideoRecord(id=row.id, uri=row.uri, content_hash=row.content_hash,
                       duration=row.duration, fps=row.fps, width=row.width, height=row.height,
                       frame_count=row.frame_count, event_count=event_count,
                       created_at=row.created_at)


def _event_record(row: EventRow) -> EventRecord:
    return EventRecord(id=row.id, video_id=row.video_id, start_seconds=row.start_seconds,
                       end_seconds=row.end_seconds, text=row.text)
