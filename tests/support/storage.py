"""Storage test helpers: throwaway SQLite/PostgreSQL databases, windows and events."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from vidseek.storage.store import NewEvent, NewWindow, Store, window_id_for

PG_URL = os.environ.get("TEST_POSTGRES_URL", "")

# Use as: @pytest.fixture(params=BACKENDS) def db_url(request, tmp_path): ...
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped afterwards (skips without PG)."""
    if not PG_URL:
        pytest.skip("TEST_POSTGRES_URL not set")
    schema = "t_" + uuid.uuid4().hex[:10]
    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


@contextmanager
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of ``backend`` ('sqlite' or 'postgres')."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'v.db'}"
    else:
        with postgres_schema() as url:
            yield url


def unit_vector(seed: int, dim: int) -> np.ndarray:
    """A deterministic random unit vector."""
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def add_video(store: Store, content_hash: str = "ab" * 32) -> str:
    """Register a 2-minute video; returns its id."""
    return store.upsert_video(
        uri=f"/videos/{content_hash[:8]}.mp4",
        content_hash=content_hash,
        duration=120.0,
        fps=30.0,
        width=640,
        height=360,
        frame_count=3600,
    )


def new_window(video_id: str, content_hash: str, idx: int, status: str = "parsed") -> NewWindow:
    """Window ``idx`` (60 s each) of a video."""
    return span_window(video_id, content_hash, idx, idx * 60.0, idx * 60.0 + 60.0, status)


def span_window(
    video_id: str,
    content_hash: str,
    idx: int,
    start: float,
    end: float,
    status: str = "parsed",
) -> NewWindow:
    """Window ``idx`` of a video, spanning [start, end] seconds."""
    return NewWindow(
        id=window_id_for(content_hash, start, end, "m", "p1"),
        video_id=video_id,
        window_index=idx,
        start_seconds=start,
        end_seconds=end,
        frame_count=max(1, int(end - start)),
        status=status,
        raw_output="{}",
        parse_error="",
        dropped=[],
        model="m",
        prompt_version="p1",
        prompt_tokens=100,
    )


def new_events(
    idx: int, dim: int, n: int = 3, texts: list[str] | None = None, seed: int = 0
) -> list[NewEvent]:
    """``n`` events of window ``idx`` with vectors seeded by (seed, idx, ordinal)."""
    return [
        NewEvent(
            start_seconds=idx * 60.0 + i,
            end_seconds=idx * 60.0 + i + 5,
            text=texts[i] if texts else f"event {idx}-{i}",
            embedding=unit_vector(seed * 1_000_003 + idx * 100 + i, dim),
        )
        for i in range(n)
    ]
