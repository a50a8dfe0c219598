"""The database schema's version: check it, and upgrade it with Alembic.

Migrations live in ``vidseek/storage/migrations`` and run programmatically
(no ``alembic.ini`` in the working directory is needed). States a database can be in:

``current``      at this code's head revision: usable.
``empty``        no vidseek tables at all: :func:`upgrade_database` creates them at
                 head (the :class:`~vidseek.storage.store.Store` does so by default).
``unversioned``  tables of the pre-Alembic skeleton without a version stamp:
                 :func:`upgrade_database` stamps them as revision ``0001`` and upgrades.
``outdated``     at an older revision: run ``vidseek db upgrade``.
``unknown``      at a revision this code does not know (a newer vidseek migrated it).

Concurrent upgraders are serialised: PostgreSQL by an advisory lock, SQLite by
``BEGIN IMMEDIATE`` around the whole upgrade, which also makes SQLite's DDL
all-or-nothing.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text

from vidseek.storage.db import enable_wal
from vidseek.storage.errors import SchemaOutdated

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "HEAD",
    "MIGRATIONS_DIR",
    "REVISIONS",
    "SchemaStatus",
    "check_schema",
    "head_revision",
    "include_object",
    "schema_status",
    "upgrade_database",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
UPGRADE_HINT = "run `vidseek db upgrade`"
# The shipped revisions, oldest first (a test pins them to the migration scripts).
# Checking a database needs only these names, not Alembic, which keeps start-up lean.
REVISIONS = ("0001", "0002", "0003", "0004")
HEAD = REVISIONS[-1]

# Tables of revision 0001, i.e. of the pre-Alembic skeleton.
_SKELETON_TABLES = frozenset({"videos", "ingest_jobs", "windows", "events", "change_log"})
# Objects created by raw DDL in migrations, invisible to the ORM models.
_FULL_TEXT_TABLE = "events_fts"
_FULL_TEXT_COLUMN = "text_tsv"
_PG_LOCK_KEY = 0x7669_6473_6462  # "vidsdb": serialises concurrent upgraders


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands relative to this code's migrations."""

    state: str
    """``current``, ``empty``, ``unversioned``, ``outdated`` or ``unknown``."""
    revision: str | None
    """The database's revision (None when it has no version stamp)."""
    head: str
    """The revision this code needs."""

    @property
    def ok(self) -> bool:
        """True when the schema is at head."""
        return self.state == "current"

    def message(self) -> str:
        """A one-line explanation, naming the fix."""
        if self.state == "current":
            return f"database schema is at revision {self.head} (current)"
        if self.state == "empty":
            return f"database has no vidseek schema; {UPGRADE_HINT} to create it"
        if self.state == "unversioned":
            return f"database schema predates migrations; {UPGRADE_HINT}"
        if self.state == "outdated":
            return (
                f"database schema is at revision {self.revision} but this vidseek needs "
                f"{self.head}; {UPGRADE_HINT}"
            )
        return (
            f"database schema is at revision {self.revision}, unknown to this vidseek (head "
            f"{self.head}): it was migrated by a newer vidseek; upgrade vidseek"
        )


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic filter: leave out full-text objects the ORM models do not describe."""
    if type_ == "table" and name is not None and name.startswith(_FULL_TEXT_TABLE):
        return False
    if type_ == "column" and name == _FULL_TEXT_COLUMN:
        return False
    return not (type_ == "index" and name == "ix_events_text_tsv")


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    """The newest revision of the migration scripts (read by Alembic)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def _status(conn: Connection) -> SchemaStatus:
    tables = set(inspect(conn).get_table_names())
    heads: list[str] = []
    if "alembic_version" in tables:
        heads = sorted(conn.scalars(text("SELECT version_num FROM alembic_version")))
    if not heads:
        state = "unversioned" if tables & _SKELETON_TABLES else "empty"
        return SchemaStatus(state, None, HEAD)
    if len(heads) > 1:
        return SchemaStatus("unknown", ",".join(heads), HEAD)
    revision = heads[0]
    if revision == HEAD:
        return SchemaStatus("current", revision, HEAD)
    return SchemaStatus("outdated" if revision in REVISIONS else "unknown", revision, HEAD)


def schema_status(engine: Engine) -> SchemaStatus:
    """The schema state of the database behind ``engine`` (reads only)."""
    with engine.connect() as conn:
        return _status(conn)


def check_schema(engine: Engine) -> None:
    """Raise :class:`SchemaOutdated` (naming ``vidseek db upgrade``) unless at head."""
    status = schema_status(engine)
    if not status.ok:
        raise SchemaOutdated(status.message())


def _migration_engine(url: str) -> Engine:
    """An engine whose transactions really are transactions, also on SQLite.

    Python's sqlite3 module (before 3.12) neither begins a transaction for DDL
    nor lets one be held across statements of its choosing; take control of
    BEGIN so the whole upgrade is one ``BEGIN IMMEDIATE`` transaction.
    """
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        enable_wal(dbapi_conn)
        dbapi_conn.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def upgrade_database(url: str, revision: str = "head") -> tuple[SchemaStatus, SchemaStatus]:
    """Bring the database at ``url`` to ``revision`` (default: head).

    Creates the schema in an empty database and stamps a pre-Alembic skeleton
    database as ``0001`` first. Safe to run concurrently and repeatedly.
    Returns the status before and after. Raises :class:`SchemaOutdated` for a
    database at a revision this code does not know.
    """
    from alembic import command

    engine = _migration_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            before = _status(conn)
            if before.state == "unknown":
                raise SchemaOutdated(before.message())
            cfg = _config()
            cfg.attributes["connection"] = conn
            if before.state == "unversioned":
                missing = _SKELETON_TABLES - set(inspect(conn).get_table_names())
                if missing:
                    raise SchemaOutdated(
                        f"database has some vidseek tables but not {sorted(missing)}; it was "
                        "not created by vidseek and cannot be upgraded"
                    )
                command.stamp(cfg, "0001")
            command.upgrade(cfg, revision)
            after = _status(conn)
    finally:
        engine.dispose()
    return before, after
