"""SQLAlchemy models. SQL is the source of truth; the FAISS index is derived from ``events``.

Every event row carries its text, span, window, model, prompt version and its
embedding, so the vector index can always be rebuilt from SQL alone. The
``change_log`` table records every add and delete of an event with a strictly
increasing sequence number; vector indexes apply it in order to catch up.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "MAX_COLLECTION_CHARS",
    "Base",
    "ChangeLog",
    "EventRow",
    "IngestJobRow",
    "VideoRow",
    "VideoTermRow",
    "WindowRow",
]

# Longest collection name (the width of the ``collection`` columns).
MAX_COLLECTION_CHARS = 200

# SQLite only auto-increments INTEGER PRIMARY KEY, not BIGINT.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of all vidseek tables."""


class VideoRow(Base):
    __tablename__ = "videos"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    duration: Mapped[float] = mapped_column(Float)
    fps: Mapped[float] = mapped_column(Float)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    frame_count: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float)
    # The collection the video was ingested into ("" for none); a search filter.
    collection: Mapped[str] = mapped_column(String(MAX_COLLECTION_CHARS), default="", index=True)


class IngestJobRow(Base):
    __tablename__ = "ingest_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    video_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    windows_total: Mapped[int] = mapped_column(Integer, default=0)
    windows_done: Mapped[int] = mapped_column(Integer, default=0)
    windows_unparsed: Mapped[int] = mapped_column(Integer, default=0)
    # Windows left out because none of their frames decoded.
    windows_skipped: Mapped[int] = mapped_column(Integer, default=0)
    # Windows an earlier run had already committed (same content), not captioned again.
    windows_reused: Mapped[int] = mapped_column(Integer, default=0)
    events_indexed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    plan: Mapped[str] = mapped_column(Text, default="")
    collection: Mapped[str] = mapped_column(String(MAX_COLLECTION_CHARS), default="")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class WindowRow(Base):
    """One captioned window: the unit of work and of commit."""

    __tablename__ = "windows"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    video_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("videos.id", ondelete="CASCADE"), index=True
    )
    window_index: Mapped[int] = mapped_column(Integer)
    start_seconds: Mapped[float] = mapped_column(Float)
    end_seconds: Mapped[float] = mapped_column(Float)
    frame_count: Mapped[int] = mapped_column(Integer)
    # "parsed" or "unparsed" (model output kept, no events).
    status: Mapped[str] = mapped_column(String(16))
    raw_output: Mapped[str] = mapped_column(Text)
    parse_error: Mapped[str] = mapped_column(Text, default="")
    dropped: Mapped[str] = mapped_column(Text, default="[]")
    model: Mapped[str] = mapped_column(Text)
    prompt_version: Mapped[str] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    video_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("videos.id", ondelete="CASCADE"), index=True
    )
    window_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("windows.id", ondelete="CASCADE"), index=True
    )
    start_seconds: Mapped[float] = mapped_column(Float)
    end_seconds: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    prompt_version: Mapped[str] = mapped_column(String(64))
    # float32 little-endian, L2-normalised.
    embedding: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_events_video_start", "video_id", "start_seconds"),)


class VideoTermRow(Base):
    """How many of a video's events use each content word (search's video-level words)."""

    __tablename__ = "video_terms"

    video_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("videos.id", ondelete="CASCADE"), primary_key=True
    )
    term: Mapped[str] = mapped_column(String(64), primary_key=True)
    events: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_video_terms_term", "term"),)


class ChangeLog(Base):
    """Ordered adds and deletes of events, applied by vector indexes to catch up."""

    __tablename__ = "change_log"

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    op: Mapped[str] = mapped_column(String(3))  # "add" | "del"
    event_id: Mapped[int] = mapped_column(BigInteger)
