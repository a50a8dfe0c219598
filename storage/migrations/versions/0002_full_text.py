"""Full-text search over event text.

SQLite: an external-content FTS5 table ``events_fts`` (rowid = event id, porter
stemming over unicode61 tokens) kept in step with ``events`` by triggers, so
every transaction that writes events (a window commit, a video delete) updates
it atomically. PostgreSQL: a stored generated ``tsvector`` column
``events.text_tsv`` (English configuration) with a GIN index.

Existing events are indexed by the upgrade itself.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SQLITE_UP = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5("
    "text, content='events', content_rowid='id', "
    "tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS events_fts_insert AFTER INSERT ON events BEGIN "
    "INSERT INTO events_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS events_fts_delete AFTER DELETE ON events BEGIN "
    "INSERT INTO events_fts(events_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS events_fts_update AFTER UPDATE OF id, text ON events BEGIN "
    "INSERT INTO events_fts(events_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO events_fts(rowid, text) VALUES (new.id, new.text); END",
    "INSERT INTO events_fts(events_fts) VALUES ('rebuild')",
]
_SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS events_fts_update",
    "DROP TRIGGER IF EXISTS events_fts_delete",
    "DROP TRIGGER IF EXISTS events_fts_insert",
    "DROP TABLE IF EXISTS events_fts",
]
_POSTGRES_UP = [
    "ALTER TABLE events ADD COLUMN text_tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED",
    "CREATE INDEX ix_events_text_tsv ON events USING gin (text_tsv)",
]
_POSTGRES_DOWN = [
    "DROP INDEX ix_events_text_tsv",
    "ALTER TABLE events DROP COLUMN text_tsv",
]


def _run(statements: dict[str, list[str]]) -> None:
    dialect = op.get_bind().dialect.name
    if dialect not in statements:
        raise NotImplementedError(f"full-text search is not implemented for {dialect}")
    for sql in statements[dialect]:
        op.execute(sql)


def upgrade() -> None:
    _run({"sqlite": _SQLITE_UP, "postgresql": _POSTGRES_UP})


def downgrade() -> None:
    _run({"sqlite": _SQLITE_DOWN, "postgresql": _POSTGRES_DOWN})
