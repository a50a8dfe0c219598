"""Engine and session creation for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["create_schema", "make_engine", "make_sessionmaker"]


def enable_wal(dbapi_conn: sqlite3.Connection, wait_seconds: float = 30.0) -> None:
    """Switch a SQLite connection's database to WAL mode.

    Changing the journal mode can answer "database is locked" at once, without
    waiting on the busy timeout, while another connection switches it too
    (several processes opening a new database): retry until ``wait_seconds``.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL mode, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            enable_wal(dbapi_conn)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def create_schema(engine: Engine) -> None:
    """Bring the database behind ``engine`` to the newest schema (Alembic migrations).

    Kept for callers of the skeleton API; prefer
    :func:`vidseek.storage.schema.upgrade_database`.
    """
    from vidseek.storage.schema import upgrade_database

    upgrade_database(engine.url.render_as_string(hide_password=False))
