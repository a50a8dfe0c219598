"""Initial schema: videos, ingest jobs, windows, events and the change log.

The tables of the pre-Alembic skeleton, unchanged: a database created by it is
stamped at this revision by ``upgrade_database`` and upgraded from here.

Revision ID: 0001
Revises:
Create Date: 2025-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# SQLite only auto-increments INTEGER PRIMARY KEY, not BIGINT.
_BIG_INT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "videos",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("fps", sa.Float(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("frame_count", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("content_hash"),
    )
    op.create_table(
        "ingest_jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("video_id", sa.String(32), nullable=True),
        sa.Column("windows_total", sa.Integer(), nullable=False),
        sa.Column("windows_done", sa.Integer(), nullable=False),
        sa.Column("windows_unparsed", sa.Integer(), nullable=False),
        sa.Column("events_indexed", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ingest_jobs_state", "ingest_jobs", ["state"])
    op.create_table(
        "windows",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("video_id", sa.String(32), nullable=False),
        sa.Column("window_index", sa.Integer(), nullable=False),
        sa.Column("start_seconds", sa.Float(), nullable=False),
        sa.Column("end_seconds", sa.Float(), nullable=False),
        sa.Column("frame_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("raw_output", sa.Text(), nullable=False),
        sa.Column("parse_error", sa.Text(), nullable=False),
        sa.Column("dropped", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["video_id"], ["videos.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_windows_video_id", "windows", ["video_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("video_id", sa.String(32), nullable=False),
        sa.Column("window_id", sa.BigInteger(), nullable=False),
        sa.Column("start_seconds", sa.Float(), nullable=False),
        sa.Column("end_seconds", sa.Float(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["video_id"], ["videos.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["window_id"], ["windows.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_events_video_id", "events", ["video_id"])
    op.create_index("ix_events_window_id", "events", ["window_id"])
    op.create_index("ix_events_video_start", "events", ["video_id", "start_seconds"])
    op.create_table(
        "change_log",
        sa.Column("seq", _BIG_INT_PK, autoincrement=True, nullable=False),
        sa.Column("op", sa.String(3), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )


def downgrade() -> None:
    op.drop_table("change_log")
    op.drop_index("ix_events_video_start", table_name="events")
    op.drop_index("ix_events_window_id", table_name="events")
    op.drop_index("ix_events_video_id", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_windows_video_id", table_name="windows")
    op.drop_table("windows")
    op.drop_index("ix_ingest_jobs_state", table_name="ingest_jobs")
    op.drop_table("ingest_jobs")
    op.drop_table("videos")
