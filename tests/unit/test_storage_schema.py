"""Schema migrations and version checks, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import column, insert, table, text

from tests.support.storage import BACKENDS, add_video, database, new_events, new_window
from vidseek.storage.db import make_engine, make_sessionmaker
from vidseek.storage.errors import SchemaOutdated
from vidseek.storage.models import Base, EventRow, WindowRow
from vidseek.storage.schema import (
    HEAD,
    MIGRATIONS_DIR,
    REVISIONS,
    check_schema,
    head_revision,
    include_object,
    schema_status,
    upgrade_database,
)
from vidseek.storage.store import Store, event_id_for

DIM = 8


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


def _state(url: str) -> str:
    engine = make_engine(url)
    try:
        return schema_status(engine).state
    finally:
        engine.dispose()


_OLD_VIDEOS = table(
    "videos",
    *(
        column(c)
        for c in (
            "id",
            "uri",
            "content_hash",
            "duration",
            "fps",
            "width",
            "height",
            "frame_count",
            "created_at",
        )
    ),
)


def _insert_old_rows(url: str) -> int:
    """Rows written by code of an older revision (plain ORM inserts, no Store)."""
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine).begin() as s:
            # The videos table of revision 0001 (later revisions add columns).
            s.execute(
                insert(_OLD_VIDEOS).values(
                    id="v1",
                    uri="/old.mp4",
                    content_hash="0" * 64,
                    duration=60.0,
                    fps=25.0,
                    width=320,
                    height=240,
                    frame_count=1500,
                    created_at=0.0,
                )
            )
            w = new_window("v1", "0" * 64, 0)
            s.add(
                WindowRow(
                    id=w.id,
                    video_id="v1",
                    window_index=0,
                    start_seconds=0.0,
                    end_seconds=60.0,
                    frame_count=60,
                    status="parsed",
                    raw_output="",
                    parse_error="",
                    dropped="[]",
                    model="m",
                    prompt_version="p1",
                    prompt_tokens=1,
                    created_at=0.0,
                )
            )
            s.flush()
            ev = new_events(0, DIM, 1, texts=["a dog barks at the mailman"])[0]
            s.add(
                EventRow(
                    id=event_id_for(w.id, 0),
                    video_id="v1",
                    window_id=w.id,
                    start_seconds=1.0,
                    end_seconds=2.0,
                    text=ev.text,
                    model="m",
                    prompt_version="p1",
                    embedding=ev.embedding.tobytes(),
                )
            )
        return event_id_for(w.id, 0)
    finally:
        engine.dispose()


def test_revision_list_matches_the_migration_scripts():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    scripts = ScriptDirectory.from_config(cfg)
    assert [r.revision for r in reversed(list(scripts.walk_revisions()))] == list(REVISIONS)
    assert head_revision() == HEAD


def test_migrations_match_the_models(db_url: str):
    before, after = upgrade_database(db_url)
    assert (before.state, after.state, after.revision) == ("empty", "current", head_revision())
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"include_object": include_object, "compare_type": True}
            )
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()
    assert upgrade_database(db_url)[0].state == "current"  # idempotent


def test_empty_database_is_created_at_head_by_default(db_url: str, tmp_path: Path):
    assert _state(db_url) == "empty"
    with pytest.raises(SchemaOutdated, match="vidseek db upgrade"):
        Store(db_url, tmp_path / "faiss.index", DIM, create_empty_schema=False)
    assert _state(db_url) == "empty"
    s = Store(db_url, tmp_path / "faiss.index", DIM)
    s.close()
    assert _state(db_url) == "current"


def test_outdated_database_is_refused_until_upgraded(db_url: str, tmp_path: Path):
    upgrade_database(db_url, "0001")
    old_event = _insert_old_rows(db_url)
    with pytest.raises(SchemaOutdated, match=r"revision 0001 .* run `vidseek db upgrade`"):
        Store(db_url, tmp_path / "faiss.index", DIM)
    before, after = upgrade_database(db_url)
    assert (before.state, before.revision, after.state) == ("outdated", "0001", "current")
    s = Store(db_url, tmp_path / "faiss.index", DIM)
    try:
        # Data written before the upgrade is searchable by keyword and by vector, and
        # its words are counted for the video ranking.
        assert [i for i, _ in s.keyword_search("barking dogs", 5)] == [old_event]
        assert s.index.ids().tolist() == [old_event]
        with s.engine.connect() as conn:
            terms = conn.execute(text("SELECT video_id, term, events FROM video_terms")).all()
        assert sorted(terms) == [("v1", "barks", 1), ("v1", "dog", 1), ("v1", "mailman", 1)]
    finally:
        s.close()


def test_pre_migration_skeleton_database_is_stamped_and_upgraded(db_url: str, tmp_path: Path):
    # What the skeleton's create_schema made: revision 0001's tables, with no version stamp.
    upgrade_database(db_url, "0001")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    old_event = _insert_old_rows(db_url)
    assert _state(db_url) == "unversioned"
    with pytest.raises(SchemaOutdated, match="predates migrations; run `vidseek db upgrade`"):
        Store(db_url, tmp_path / "faiss.index", DIM)
    before, after = upgrade_database(db_url)
    assert (before.state, after.state) == ("unversioned", "current")
    s = Store(db_url, tmp_path / "faiss.index", DIM)
    try:
        assert [i for i, _ in s.keyword_search("dog", 5)] == [old_event]
    finally:
        s.close()


def test_database_from_a_newer_vidseek_is_refused(db_url: str, tmp_path: Path):
    upgrade_database(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
        with pytest.raises(SchemaOutdated, match="newer vidseek"):
            check_schema(engine)
    finally:
        engine.dispose()
    with pytest.raises(SchemaOutdated, match="newer vidseek"):
        Store(db_url, tmp_path / "faiss.index", DIM)
    with pytest.raises(SchemaOutdated, match="newer vidseek"):
        upgrade_database(db_url)


def test_foreign_tables_alone_do_not_make_a_database_vidseek_s(db_url: str, tmp_path: Path):
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE someone_elses (x INTEGER)"))
        conn.execute(text("CREATE TABLE videos (x INTEGER)"))
    engine.dispose()
    with pytest.raises(SchemaOutdated, match="not created by vidseek"):
        upgrade_database(db_url)


def test_concurrent_upgrades_of_an_empty_database_both_succeed(db_url: str, tmp_path: Path):
    results: list[str] = []
    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            results.append(upgrade_database(db_url)[1].state)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == ["current"] * 3
    s = Store(db_url, tmp_path / "faiss.index", DIM)
    try:
        vid = add_video(s)
        s.commit_window(new_window(vid, "ab" * 32, 0), new_events(0, DIM))
        assert s.index.ntotal == 3
    finally:
        s.close()
