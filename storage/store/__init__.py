"""The store: keeps SQL (source of truth) and the FAISS index (derived) consistent.

Write path: one SQL transaction per window inserts the window, its events (the
full-text index follows by trigger or generated column) and their change-log
entries; only after it commits are the vectors applied to FAISS: straight from
the committed window when the log holds nothing else the index lacks, else by
replaying the log. A crash between the two loses nothing: on start the index
loads its snapshot and replays the change log after the snapshot's sequence number.
Deletes go the same way (``del`` entries), so every FAISS copy, in this process
or a search replica, converges on SQL.

Read path: FAISS returns events with their videos and spans from the index's
event table (no SQL); search reads from SQL only the texts of the events on
its page, and drops events SQL no longer knows (deleted meanwhile).

Parts: :mod:`.records` (what goes in and comes out, and the deterministic ids),
:mod:`.jobs` (ingest jobs), and here the :class:`Store` itself.

Concurrency: one writer at a time (``_write_lock`` in-process; on PostgreSQL an
advisory lock across processes, see :meth:`Store._lock_change_log`), any number
of readers. A rebuild builds a new index from SQL without blocking either, then
catches it up and swaps it in under the write lock; searches already running
finish on the old index.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidseek.storage import fulltext
from vidseek.storage.db import make_engine, make_sessionmaker
from vidseek.storage.errors import ConfigError, InvalidArgument, NotFound
from vidseek.storage.gpu import GpuMirror, gpu_count, make_gpu_converter
from vidseek.storage.models import (
    ChangeLog,
    EventRow,
    VideoRow,
    VideoTermRow,
    WindowRow,
)
from vidseek.storage.schema import check_schema, schema_status, upgrade_database
from vidseek.storage.store.jobs import JobTable
from vidseek.storage.store.records import (
    EventRecord,
    NewEvent,
    NewWindow,
    VideoRecord,
    collection_name,
    event_id_for,
    event_record,
    video_record,
    window_id_for,
)
from vidseek.storage.sync import build_index_from_sql, catch_up_index, rebuild_snapshot
from vidseek.storage.terms import TermStats, add_terms, term_share
from vidseek.storage.vector_index import (
    INDEX_KINDS,
    AutoParams,
    EventFilter,
    EventHits,
    HnswParams,
    IvfParams,
    SnapshotError,
    VectorIndex,
)

__all__ = [
    "EventRecord",
    "NewEvent",
    "NewWindow",
    "Store",
    "VideoRecord",
    "build_index_from_sql",
    "catch_up_index",
    "collection_name",
    "event_id_for",
    "rebuild_snapshot",
    "window_id_for",
]

log = logging.getLogger(__name__)

_PG_CHANGE_LOG_LOCK = 0x7669_6473_636C  # "vidscl": serialises change-log writers


class Store(JobTable):
    """SQL + FAISS behind one object. Writes are serialised; reads run concurrently.

    ``index_kind``: ``"flat"`` (exact, default), ``"hnsw"`` (approximate; see
    :mod:`vidseek.storage.vector_index` for its tombstone deletes and rebuilds),
    tuned by ``hnsw``, ``"ivf"`` (approximate), tuned by ``ivf``, or ``"auto"``
    (exact while small, then IVF with 8-bit codes), tuned by ``auto``. ``ivf``
    and ``auto`` are exact until they hold enough vectors to train; the commit
    that crosses that line starts a background rebuild from SQL that trains
    them (commits never wait for k-means), and every :meth:`rebuild_index`
    retrains them on the whole corpus.
    ``use_gpu``: ``None`` searches on a GPU copy of a flat index when FAISS sees
    a GPU, ``True`` requires one, ``False`` never uses one.
    ``create_empty_schema``: create the schema in an empty database (the embedded
    default needs no extra step); a database at an older revision is always
    refused with :class:`~vidseek.storage.errors.SchemaOutdated`.
    ``keep_index=False`` makes a store that writes SQL (windows, events, the change
    log) but holds no vector index: an ingest worker's, whose commits search servers
    apply from the change log. It loads, catches up and snapshots nothing; its
    vector searches find nothing.
    """

    def __init__(
        self,
        database_url: str,
        index_path: Path,
        dim: int,
        *,
        index_kind: str = "flat",
        hnsw: HnswParams | None = None,
        ivf: IvfParams | None = None,
        auto: AutoParams | None = None,
        use_gpu: bool | None = None,
        create_empty_schema: bool = True,
        keep_index: bool = True,
    ) -> None:
        if index_kind not in INDEX_KINDS:
            raise ConfigError(
                f"unknown index kind {index_kind!r}; expected one of {', '.join(INDEX_KINDS)}"
            )
        self.index_kind = index_kind
        self.hnsw = hnsw or HnswParams()
        self.hnsw.validate()
        self.ivf = ivf or IvfParams()
        self.ivf.validate()
        self.auto = auto or AutoParams()
        self.auto.validate()
        self._gpu_factory = _gpu_factory(use_gpu, index_kind)
        self.engine = make_engine(database_url)
        try:
            if create_empty_schema and schema_status(self.engine).state == "empty":
                log.info("empty database: creating the vidseek schema")
                upgrade_database(database_url)
            check_schema(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        JobTable.__init__(self, make_sessionmaker(self.engine))
        self._keywords = fulltext.for_dialect(self.engine.dialect.name)
        self._frequencies = fulltext.TokenFrequencies(self._keywords)
        self._term_stats = TermStats()
        self.index_path = index_path
        self.dim = dim
        # Lock order: _rebuild_lock, _write_lock, _snapshot_lock, then the index's lock.
        self._write_lock = threading.Lock()
        self._snapshot_lock = threading.Lock()
        self._rebuild_lock = threading.Lock()
        self._background_lock = threading.Lock()
        self._background: threading.Thread | None = None
        self._stats_lock = threading.Lock()
        self.unknown_ids_dropped = 0
        self.keep_index = keep_index
        self._index = self._load_index() if keep_index else self._new_index()
        self.catch_up()

    # ---- vector index lifecycle -------------------------------------------------

    @property
    def index(self) -> VectorIndex:
        """The current vector index (replaced wholesale by a rebuild)."""
        return self._index

    def _new_index(self) -> VectorIndex:
        gpu = self._gpu_factory() if self._gpu_factory else None
        return VectorIndex(
            self.dim,
            self.index_kind,
            self.hnsw,
            gpu,
            ivf=self.ivf,
            auto=self.auto,
            auto_train=False,
        )

    def _load_index(self) -> VectorIndex:
        gpu = self._gpu_factory() if self._gpu_factory else None
        try:
            return VectorIndex.load(
                self.index_path,
                self.dim,
                self.index_kind,
                self.hnsw,
                gpu,
                ivf=self.ivf,
                auto=self.auto,
                auto_train=False,
            )
        except SnapshotError as exc:
            if self.index_path.exists():
                log.warning("vector index snapshot is unusable, rebuilding from SQL: %s", exc)
            index = build_index_from_sql(self.engine, self._new_index())
            # Save at once, so a bad snapshot costs one rebuild, not one per start.
            with self._snapshot_lock:
                index.save(self.index_path)
            return index

    def rebuild_index(self) -> int:
        """Rebuild the vector index from SQL, swap it in, snapshot it; returns its size.

        Searches and commits continue during the build; the new index is caught
        up with what they committed meanwhile before it replaces the old one.
        """
        with self._rebuild_lock:
            fresh = build_index_from_sql(self.engine, self._new_index())
            with self._write_lock:
                catch_up_index(self._session, fresh)
                self._index = fresh
            self.snapshot()
            return fresh.ntotal

    def start_rebuild(self) -> bool:
        """Start :meth:`rebuild_index` in a background thread; False if one is running."""
        with self._background_lock:
            if self._background is not None and self._background.is_alive():
                return False
            self._background = threading.Thread(
                target=self._rebuild_in_background, name="vidseek-index-rebuild", daemon=True
            )
            self._background.start()
            return True

    def wait_for_rebuild(self, timeout: float | None = None) -> None:
        """Wait for a background rebuild (if any) to finish."""
        with self._background_lock:
            thread = self._background
        if thread is not None:
            thread.join(timeout)

    def _rebuild_in_background(self) -> None:
        try:
            n = self.rebuild_index()
            log.info("vector index rebuilt from SQL: %d vectors", n)
        except Exception:
            log.exception("background vector index rebuild failed; the old index stays in use")

    def catch_up(self) -> int:
        """Apply change-log entries newer than the index; returns how many were applied.

        Call it periodically in a search replica that does not write itself.
        """
        if not self.keep_index:
            return 0
        with self._write_lock:
            applied = catch_up_index(self._session, self._index)
        self._train_in_background()
        return applied

    def change_log_lag(self) -> int:
        """Change-log entries in SQL that the vector index has not applied yet (0 for a
        store that keeps no index)."""
        if not self.keep_index:
            return 0
        with self._session() as s:
            latest = s.scalar(select(func.max(ChangeLog.seq))) or 0
        return max(0, int(latest) - self._index.applied_seq)

    def _train_in_background(self) -> None:
        """Start a rebuild (which trains) if an ``ivf``/``auto`` index has grown enough."""
        if self._index.needs_training:
            self.start_rebuild()

    def snapshot(self, force: bool = False) -> bool:
        """Write the vector index to disk atomically if it changed since the last one.

        Returns whether a snapshot was written. Searches and commits continue
        while the file is written; memory briefly holds a second copy of the index
        (the serialised blob).
        """
        if not self.keep_index:
            return False
        with self._snapshot_lock:
            index = self._index
            if not force and index.saved_version == index.version and self.index_path.exists():
                return False
            index.save(self.index_path)
            return True

    # ---- search -----------------------------------------------------------------

    def vector_search(
        self, query: npt.NDArray[np.float32], k: int, video_ids: Sequence[str] | None = None
    ) -> list[tuple[int, float]]:
        """(event id, cosine) of the ``k`` nearest events, best first.

        ``video_ids`` restricts the search to those videos.
        """
        hits = self.search_events(query, k, EventFilter(video_ids=video_ids))
        return list(zip(hits.ids.tolist(), hits.scores.tolist(), strict=True))

    def search_events(
        self, query: npt.NDArray[np.float32], k: int, where: EventFilter | None = None
    ) -> EventHits:
        """The ``k`` nearest events admitted by ``where``, with their videos and spans.

        Answered by the vector index and its event table alone (no SQL); see
        :meth:`VectorIndex.search_events`.
        """
        if where is not None and where.video_ids is not None and not where.video_ids:
            return self._index.search_events(query, 0)
        return self._index.search_events(query, k, where)

    def video_context(
        self, query: npt.NDArray[np.float32], video_ids: Sequence[str]
    ) -> dict[str, tuple[int, float]]:
        """Event count and context cosine of each indexed video of ``video_ids`` (no SQL;
        see :meth:`VectorIndex.video_context`)."""
        return self._index.video_context(query, video_ids)

    def video_term_share(self, query: str, video_ids: Sequence[str]) -> dict[str, float]:
        """Each video's idf-weighted share of the query's content words (see
        :func:`~vidseek.storage.terms.term_share`; word counts cached for a minute)."""
        with self.engine.connect() as conn:
            return term_share(conn, query, video_ids, self._term_stats)

    def describe_events(self, ids: Sequence[int]) -> dict[int, tuple[str, float, float]]:
        """(video id, start, end) of the indexed events among ``ids`` (no SQL)."""
        return self._index.describe(ids)

    def event_texts(self, ids: Iterable[int]) -> dict[int, str]:
        """The text of each event of ``ids`` that SQL holds (one plain query)."""
        wanted = list(ids)
        if not wanted:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(EventRow.id, EventRow.text).where(EventRow.id.in_(wanted)))
            return {int(r[0]): r[1] for r in rows}

    def keyword_search(
        self,
        query: str,
        k: int,
        video_ids: Sequence[str] | None = None,
        *,
        match: str = "any",
    ) -> list[tuple[int, float]]:
        """(event id, score) of the ``k`` events whose text best matches ``query``.

        Best first; higher is better (``-bm25`` on SQLite, ``ts_rank_cd`` on
        PostgreSQL). Any user text is safe: it is split into words, which are
        passed as data, never as query syntax. An event matches if it contains
        any of the words (``match="any"``) or all of them (``"all"``; much
        cheaper when some words are common), after stemming; in a large corpus an
        ``any`` query leaves out words most events contain. ``video_ids``
        restricts to those videos. See :mod:`vidseek.storage.fulltext`.
        """
        with self.engine.connect() as conn:
            drop: set[str] = set()
            if match == "any":
                tokens = fulltext.content_tokens(query)
                drop = self._frequencies.common(conn, tokens, self._index.ntotal)
            return self._keywords.search(conn, query, k, video_ids, match, drop)

    # ---- writes -----------------------------------------------------------------

    @staticmethod
    def _lock_change_log(s: Session) -> None:
        """Serialise change-log writers across processes (PostgreSQL).

        Readers apply the log in ``seq`` order and remember the last one applied,
        so a smaller ``seq`` must never become visible after a larger one.
        PostgreSQL hands out sequence values at insert, not at commit; holding a
        transaction-scoped advisory lock from before the first insert to the
        commit makes commit order equal ``seq`` order. SQLite's single database
        write lock already does.
        """
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_CHANGE_LOG_LOCK})

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
        collection: str = "",
    ) -> str:
        """Register a video by content hash; returns its id (existing or new).

        An existing video keeps its collection unless it has none and
        ``collection`` names one.
        """
        video_id = content_hash[:16]
        with self._write_lock, self._session.begin() as s:
            row = s.get(VideoRow, video_id)
            if row is None:
                s.add(
                    VideoRow(
                        id=video_id,
                        uri=uri,
                        content_hash=content_hash,
                        duration=duration,
                        fps=fps,
                        width=width,
                        height=height,
                        frame_count=frame_count,
                        created_at=time.time(),
                        collection=collection,
                    )
                )
            elif collection and not row.collection:
                row.collection = collection
        return video_id

    def get_video(self, video_id: str) -> VideoRecord:
        """One video with its event count; :class:`NotFound` if unknown."""
        with self._session() as s:
            row = s.get(VideoRow, video_id)
            if row is None:
                raise NotFound(f"video {video_id!r} not found")
            n = s.scalar(select(func.count()).where(EventRow.video_id == video_id)) or 0
            return video_record(row, int(n))

    def has_video_at(self, uri: str) -> bool:
        """Whether a video was registered from ``uri`` (any content)."""
        with self._session() as s:
            return s.scalar(select(VideoRow.id).where(VideoRow.uri == uri).limit(1)) is not None

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
            return [video_record(v, int(n or 0)) for v, n in rows]

    def video_ids_in_collection(self, collection: str) -> tuple[str, ...]:
        """The ids of the videos in ``collection``, sorted."""
        with self._session() as s:
            q = select(VideoRow.id).where(VideoRow.collection == collection)
            return tuple(s.scalars(q.order_by(VideoRow.id)).all())

    def existing_video_ids(self, video_ids: Iterable[str]) -> set[str]:
        """The subset of ``video_ids`` that exist."""
        ids = list(video_ids)
        with self._session() as s:
            return set(s.scalars(select(VideoRow.id).where(VideoRow.id.in_(ids))).all())

    def delete_video(self, video_id: str) -> int:
        """Delete a video, its windows and events (SQL, change log, then FAISS).

        On an ``hnsw`` index the vectors become tombstones; once they exceed the
        configured share, a background rebuild compacts the index.
        """
        with self._write_lock:
            with self._session.begin() as s:
                self._lock_change_log(s)
                if s.get(VideoRow, video_id) is None:
                    raise NotFound(f"video {video_id!r} not found")
                ids = list(s.scalars(select(EventRow.id).where(EventRow.video_id == video_id)))
                if ids:
                    s.connection().execute(
                        insert(ChangeLog), [{"op": "del", "event_id": i} for i in ids]
                    )
                s.execute(delete(VideoTermRow).where(VideoTermRow.video_id == video_id))
                s.execute(delete(EventRow).where(EventRow.video_id == video_id))
                s.execute(delete(WindowRow).where(WindowRow.video_id == video_id))
                s.execute(delete(VideoRow).where(VideoRow.id == video_id))
            if not self.keep_index:
                return len(ids)
            catch_up_index(self._session, self._index)
            compact = self._index.needs_compaction
        if compact:
            self.start_rebuild()
        return len(ids)

    # ---- windows and events -----------------------------------------------------

    def committed_window_ids(self, video_id: str) -> set[int]:
        """Ids of the windows of a video already committed."""
        with self._session() as s:
            return set(s.scalars(select(WindowRow.id).where(WindowRow.video_id == video_id)))

    def commit_window(self, window: NewWindow, events: Sequence[NewEvent]) -> bool:
        """Commit a window and its events atomically; False if it was already committed.

        Each embedding must be ``dim`` finite float32 values (L2-normalised).
        """
        vectors = np.zeros((len(events), self.dim), np.float32)
        for i, e in enumerate(events):
            vec = np.asarray(e.embedding, dtype=np.float32)
            if vec.size != self.dim or not np.isfinite(vec).all():
                raise InvalidArgument(
                    f"event embedding must be {self.dim} finite floats, got shape {vec.shape}"
                )
            vectors[i] = vec.reshape(self.dim)
        ids = np.array([event_id_for(window.id, i) for i in range(len(events))], np.int64)
        rows = [
            {
                "id": int(ids[i]),
                "video_id": window.video_id,
                "window_id": window.id,
                "start_seconds": e.start_seconds,
                "end_seconds": e.end_seconds,
                "text": e.text,
                "model": window.model,
                "prompt_version": window.prompt_version,
                "embedding": vectors[i].tobytes(),
            }
            for i, e in enumerate(events)
        ]
        with self._write_lock:
            index = self._index
            try:
                with self._session.begin() as s:
                    self._lock_change_log(s)
                    if s.get(WindowRow, window.id) is not None:
                        return False
                    conn = s.connection()
                    conn.execute(
                        insert(WindowRow),
                        {
                            "id": window.id,
                            "video_id": window.video_id,
                            "window_index": window.window_index,
                            "start_seconds": window.start_seconds,
                            "end_seconds": window.end_seconds,
                            "frame_count": window.frame_count,
                            "status": window.status,
                            "raw_output": window.raw_output,
                            "parse_error": window.parse_error,
                            "dropped": json.dumps(list(window.dropped)),
                            "model": window.model,
                            "prompt_version": window.prompt_version,
                            "prompt_tokens": window.prompt_tokens,
                            "created_at": time.time(),
                        },
                    )
                    last_seq = None
                    if rows:
                        conn.execute(insert(EventRow), rows)
                        add_terms(conn, window.video_id, (e.text for e in events))
                        conn.execute(
                            insert(ChangeLog),
                            [{"op": "add", "event_id": r["id"]} for r in rows],
                        )
                    if rows and self.keep_index:
                        # If every change-log entry the index has not applied is one of
                        # ours, apply our vectors directly instead of reading them back.
                        pending, last_seq = conn.execute(
                            select(func.count(), func.max(ChangeLog.seq)).where(
                                ChangeLog.seq > index.applied_seq
                            )
                        ).one()
                        if pending != len(rows):
                            last_seq = None
            except IntegrityError:
                # A concurrent writer (another process) committed the same window first.
                return False
            if not self.keep_index:
                return True
            if last_seq is not None:
                index.apply(
                    add_ids=ids,
                    add_vectors=vectors,
                    videos=[window.video_id] * len(events),
                    start=[e.start_seconds for e in events],
                    end=[e.end_seconds for e in events],
                    seq=int(last_seq),
                )
            else:
                catch_up_index(self._session, index)
        self._train_in_background()
        return True

    def window_rows(self, video_id: str) -> list[WindowRow]:
        """All committed windows of a video in time order."""
        with self._session() as s:
            return list(
                s.scalars(
                    select(WindowRow)
                    .where(WindowRow.video_id == video_id)
                    .order_by(WindowRow.start_seconds)
                )
            )

    def timeline(self, video_id: str, start: float, end: float | None) -> list[EventRecord]:
        """Events of a video overlapping [start, end] in time order."""
        with self._session() as s:
            if s.get(VideoRow, video_id) is None:
                raise NotFound(f"video {video_id!r} not found")
            q = select(EventRow).where(EventRow.video_id == video_id, EventRow.end_seconds >= start)
            if end is not None:
                q = q.where(EventRow.start_seconds <= end)
            q = q.order_by(EventRow.start_seconds, EventRow.end_seconds, EventRow.id)
            return [event_record(r) for r in s.scalars(q)]

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
        out = {r.id: event_record(r) for r in rows}
        with self._stats_lock:
            self.unknown_ids_dropped += len(set(ids)) - len(out)
        return out

    def video_uris(self, video_ids: Iterable[str]) -> dict[str, str]:
        """uri of each known video id."""
        with self._session() as s:
            rows = s.execute(
                select(VideoRow.id, VideoRow.uri).where(VideoRow.id.in_(list(video_ids)))
            ).all()
            return {r[0]: r[1] for r in rows}

    def close(self, snapshot: bool = True) -> None:
        """Wait for a background rebuild, snapshot the index (if asked) and release
        the engine."""
        self.wait_for_rebuild()
        try:
            if snapshot:
                self.snapshot()
        finally:
            self.engine.dispose()


def _gpu_factory(use_gpu: bool | None, index_kind: str) -> Callable[[], GpuMirror] | None:
    """How each new index gets its GPU mirror, or None for CPU-only search."""
    if use_gpu is False or (use_gpu is None and (gpu_count() == 0 or index_kind != "flat")):
        return None
    if index_kind != "flat":
        raise ConfigError("GPU search needs index_kind 'flat' (FAISS has no GPU HNSW)")
    converter = make_gpu_converter()
    return lambda: GpuMirror(converter)
