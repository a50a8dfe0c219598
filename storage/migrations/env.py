"""Alembic environment of vidseek's schema.

Migrations run programmatically (:func:`vidseek.storage.schema.upgrade_database`
passes an open connection in ``config.attributes["connection"]``); the
``alembic`` command line works too, with ``-c storage/alembic.ini`` and
``-x url=...`` (or ``sqlalchemy.url``) naming the database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from vidseek.storage.db import make_engine
from vidseek.storage.models import Base
from vidseek.storage.schema import include_object


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("name the database: alembic -x url=sqlite:///path/vidseek.db ...")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
_main()
