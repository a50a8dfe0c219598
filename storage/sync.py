"""Keeping a vector index derived from SQL: full builds and catch-up from the change log.

:func:`build_index_from_sql` fills a fresh index with every event (streaming,
one batch read ahead); :func:`catch_up_index` applies the change log after the
index's ``applied_seq``; :func:`rebuild_snapshot` is the offline rebuild that
``vidseek index rebuild`` runs. Each reads what the index keeps per event:
id, video, span and embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from vidseek.storage.db import make_engine, make_sessionmaker
from vidseek.storage.errors import ConfigError
from vidseek.storage.models import ChangeLog, EventRow
from vidseek.storage.schema import check_schema
from vidseek.storage.vector_index import (
    INDEX_KINDS,
    AutoParams,
    HnswParams,
    IvfParams,
    VectorIndex,
)

__all__ = ["build_index_from_sql", "catch_up_index", "rebuild_snapshot"]

_CATCH_UP_BATCH = 5_000
_BUILD_BATCH = 20_000
# What the vector index needs of an event row: id, video, span and embedding.
_INDEX_COLUMNS = (
    EventRow.id,
    EventRow.video_id,
    EventRow.start_seconds,
    EventRow.end_seconds,
    EventRow.embedding,
)


def _vectors(blob: bytes, n: int, dim: int) -> npt.NDArray[np.float32]:
    """``n`` float32 vectors of ``dim`` from concatenated embedding blobs."""
    if len(blob) != n * dim * 4:
        raise ConfigError(
            f"stored embeddings have {len(blob) // max(n, 1) // 4} dimensions, but the store "
            f"was opened with dim={dim} (a different embedder?)"
        )
    return np.frombuffer(blob, dtype=np.float32).reshape(n, dim)


def _index_rows(rows: Sequence[Any], dim: int) -> dict[str, object]:
    """:meth:`VectorIndex.apply` arguments adding event rows of :data:`_INDEX_COLUMNS`."""
    n = len(rows)
    return {
        "add_ids": np.fromiter((r[0] for r in rows), dtype=np.int64, count=n),
        "videos": [r[1] for r in rows],
        "start": np.fromiter((r[2] for r in rows), dtype=np.float64, count=n),
        "end": np.fromiter((r[3] for r in rows), dtype=np.float64, count=n),
        "add_vectors": _vectors(b"".join(r[4] for r in rows), n, dim),
    }


def build_index_from_sql(engine: Engine, index: VectorIndex) -> VectorIndex:
    """Fill the empty ``index`` with every event of SQL; set its ``applied_seq``.

    Streams rows in batches (memory: the index plus two batches); the next batch
    is read from SQL while FAISS adds the current one. An ``ivf`` index trains
    once at the end, on a sample of all rows (memory then peaks at about twice the
    vectors). Returns ``index``.
    """
    with engine.connect() as conn:
        # Invariant: read the sequence number before the rows. Rows read later may
        # include changes after it, and replaying those is idempotent; a row older
        # than the number but missing from the scan would be lost for good.
        max_seq = conn.scalar(select(func.max(ChangeLog.seq))) or 0
    # An ivf index trains on leaving bulk_load, after the connection is closed:
    # k-means need not hold a read transaction open.
    with (
        index.bulk_load(),
        engine.connect() as conn,
        ThreadPoolExecutor(1, "vidseek-sql-read") as reader,
    ):
        result = conn.execution_options(yield_per=_BUILD_BATCH).execute(select(*_INDEX_COLUMNS))
        parts = result.partitions()

        def read() -> dict[str, object] | None:
            part = next(parts, None)
            return None if part is None else _index_rows(part, index.dim)

        pending = reader.submit(read)
        while (batch := pending.result()) is not None:
            pending = reader.submit(read)  # the reader alone fetches from `result`
            index.apply(**batch)  # type: ignore[arg-type]
    index.apply(seq=int(max_seq))
    return index


def catch_up_index(session: sessionmaker[Session], index: VectorIndex) -> int:
    """Apply change-log entries newer than ``index.applied_seq``; returns how many.

    Entries are read in batches; within a batch only each id's last operation
    matters, and an add whose row has since been deleted becomes a removal. The
    caller serialises catch-ups of one index (the store's write lock).
    """
    applied = 0
    while True:
        with session() as s:
            entries = s.execute(
                select(ChangeLog.seq, ChangeLog.op, ChangeLog.event_id)
                .where(ChangeLog.seq > index.applied_seq)
                .order_by(ChangeLog.seq)
                .limit(_CATCH_UP_BATCH)
            ).all()
            if not entries:
                return applied
            last_op: dict[int, str] = {}
            for e in entries:
                last_op[int(e.event_id)] = e.op
            wanted = [i for i, op in last_op.items() if op == "add"]
            rows = (
                s.execute(select(*_INDEX_COLUMNS).where(EventRow.id.in_(wanted))).all()
                if wanted
                else []
            )
        found = {int(r[0]) for r in rows}
        index.apply(
            **_index_rows(rows, index.dim),  # type: ignore[arg-type]
            remove_ids=[i for i in last_op if i not in found],
            seq=int(entries[-1].seq),
        )
        applied += len(entries)


def rebuild_snapshot(
    database_url: str,
    index_path: Path,
    *,
    dim: int | None = None,
    index_kind: str = "flat",
    hnsw: HnswParams | None = None,
    ivf: IvfParams | None = None,
    auto: AutoParams | None = None,
) -> int:
    """Rebuild the vector index snapshot from SQL (``vidseek index rebuild``).

    For a stopped server, or a change of index kind: the server loads the new
    snapshot on its next start. (A running server rebuilds in place with
    :meth:`Store.rebuild_index`.) ``dim`` defaults to the stored embeddings'
    dimension. Refuses an outdated schema. Returns the number of vectors.
    """
    engine = make_engine(database_url)
    try:
        check_schema(engine)
        if dim is None:
            with engine.connect() as conn:
                nbytes = conn.scalar(select(func.length(EventRow.embedding)).limit(1))
            if nbytes is None:
                raise ConfigError("the database has no events; pass the embedding dimension")
            dim = int(nbytes) // 4
        if index_kind not in INDEX_KINDS:
            raise ConfigError(f"unknown index kind {index_kind!r}")
        index = build_index_from_sql(engine, VectorIndex(dim, index_kind, hnsw, ivf=ivf, auto=auto))
        catch_up_index(make_sessionmaker(engine), index)
        index.save(index_path)
        return index.ntotal
    finally:
        engine.dispose()
