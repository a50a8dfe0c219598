"""Video-level words for search ranking.

``video_terms`` counts, per video and content word, the events of the video that
use it (see ``vidseek.storage.terms``). Window commits keep it from now on; the
upgrade fills it from the events already committed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BATCH = 5_000


def upgrade() -> None:
    op.create_table(
        "video_terms",
        sa.Column(
            "video_id",
            sa.String(32),
            sa.ForeignKey("videos.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("term", sa.String(64), primary_key=True),
        sa.Column("events", sa.Integer(), nullable=False),
    )
    op.create_index("ix_video_terms_term", "video_terms", ["term"])
    _fill(op.get_bind())


def _fill(conn: sa.Connection) -> None:
    """Count the words of every committed event, one video at a time."""
    from vidseek.storage.terms import document_terms

    terms = sa.table(
        "video_terms",
        sa.column("video_id", sa.String),
        sa.column("term", sa.String),
        sa.column("events", sa.Integer),
    )
    events = sa.table("events", sa.column("video_id", sa.String), sa.column("text", sa.Text))
    videos = [v for (v,) in conn.execute(sa.select(events.c.video_id).distinct())]
    for video in videos:
        counts: Counter[str] = Counter()
        for (text,) in conn.execute(sa.select(events.c.text).where(events.c.video_id == video)):
            counts.update(document_terms(text))
        rows = [{"video_id": video, "term": t, "events": n} for t, n in sorted(counts.items())]
        for start in range(0, len(rows), _BATCH):
            conn.execute(sa.insert(terms), rows[start : start + _BATCH])


def downgrade() -> None:
    op.drop_index("ix_video_terms_term", table_name="video_terms")
    op.drop_table("video_terms")
