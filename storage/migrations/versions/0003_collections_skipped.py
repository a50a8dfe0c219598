"""Video collections and skipped windows.

``videos.collection`` names the collection a video was ingested into (empty:
none), so that searches can be restricted to one; ``ingest_jobs.collection``
carries it from the request to the video row. ``ingest_jobs.windows_skipped``
counts windows left out because none of their frames decoded, and
``ingest_jobs.windows_reused`` those an earlier run had already committed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("videos") as batch:
        batch.add_column(sa.Column("collection", sa.String(200), nullable=False, server_default=""))
        batch.create_index("ix_videos_collection", ["collection"])
    with op.batch_alter_table("ingest_jobs") as batch:
        batch.add_column(sa.Column("collection", sa.String(200), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("windows_skipped", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("windows_reused", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("ingest_jobs") as batch:
        batch.drop_column("windows_reused")
        batch.drop_column("windows_skipped")
        batch.drop_column("collection")
    with op.batch_alter_table("videos") as batch:
        batch.drop_index("ix_videos_collection")
        batch.drop_column("collection")
