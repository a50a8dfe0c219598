"""Crash consistency: SIGKILL a real ingestion-like run many times, resume, verify.

``tests/support/crash_worker.py`` commits windows through the real ``Store``
(SQLite or PostgreSQL + FAISS, snapshots every few windows, a delete and a re-ingest of the
same ids). This test kills it at seeded random points: at random moments, and
inside SQL commits and snapshot writes (see the worker's hooks). After every
kill it opens the store as a restarting server would (load snapshot, catch up
from the change log) and checks:

* every committed window has exactly its events, each once, with the text and
  embedding the captioner produced; no event lacks its window; windows of
  finished work are never lost;
* the FAISS ids are exactly the SQL event ids, each vector is the SQL one;
* the full-text index holds each event once;
* no snapshot is ever unusable (atomic writes), so no restart rebuilds.

When the plan completes, the final state must equal a clean uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from tests.support import crash_worker as cw
from tests.support.storage import BACKENDS, database
from vidseek.storage.store import Store, event_id_for

WORKER = Path(cw.__file__)
SEED = 20251128
# Kill schedule: 6 at random moments plus 4 at each hook point = 26 attempts;
# a hook set beyond the remaining work lets the run finish instead.
SCHEDULE = ["timer"] * 6 + [h for h in cw.HOOKS for _ in range(4)]
MIN_KILLS = 20
VIDEO_OF = {cw.content_hash(v)[:16]: v for v in cw.WINDOWS}

pytestmark = pytest.mark.slow


def _start(db: str, index: Path, kind: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), db, str(index), "--kind", kind, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = proc.communicate(timeout=180)
    assert "unusable" not in err, err
    return proc.returncode, err


def _round(rng: np.random.Generator, mode: str, db: str, index: Path, kind: str) -> str:
    """One worker run ending in a kill ('killed') or in completion ('completed')."""
    if mode == "timer":
        proc = _start(db, index, kind, "--pace", "0.01")
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "READY", _finish(proc)
        time.sleep(float(rng.uniform(0.0, 0.4)))
        proc.send_signal(signal.SIGKILL)
    else:
        at = int(rng.integers(1, 4 if mode.startswith("snapshot") else 13))
        proc = _start(db, index, kind, "--kill-hook", mode, "--kill-at", str(at))
    rc, err = _finish(proc)
    if rc == -signal.SIGKILL:
        return "killed"
    assert rc == 0, err
    return "completed"


def _rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(text(sql)))


def _dump(store: Store) -> dict[str, Any]:
    """Everything a clean run and a crashed-and-resumed run must agree on."""
    return {
        "videos": _rows(
            store, "SELECT id, uri, content_hash, duration, fps, width, height FROM videos"
        ),
        "windows": _rows(
            store,
            "SELECT id, video_id, window_index, start_seconds, end_seconds, status, raw_output,"
            " parse_error, prompt_tokens FROM windows",
        ),
        "events": _rows(
            store,
            "SELECT id, video_id, window_id, start_seconds, end_seconds, text, embedding"
            " FROM events",
        ),
        "jobs": _rows(store, "SELECT id, state, windows_total FROM ingest_jobs"),
        "faiss": store.index.ids().tolist(),
    }


def _check(
    db: str, index: Path, kind: str, finished_windows: set[int], caplog: pytest.LogCaptureFixture
) -> dict[str, Any]:
    caplog.clear()
    store = Store(db, index, cw.DIM, index_kind=kind)
    try:
        # Snapshots are written atomically: a kill never leaves an unusable one behind.
        assert "unusable" not in caplog.text
        dump = _dump(store)
        by_window: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        for ev in dump["events"]:
            by_window[ev[2]].append(ev)
        for wid, vid, w, *_ in dump["windows"]:
            video = VIDEO_OF[vid]
            ordinal = {event_id_for(wid, i): i for i in range(cw.events_in(video, w))}
            evs = by_window.pop(wid, [])
            assert sorted(e[0] for e in evs) == sorted(ordinal), f"window {video}/{w}"
            gens = {int(e[5].rsplit("gen", 1)[1]) for e in evs}
            assert len(gens) <= 1, f"window {video}/{w} mixes generations"
            for e in evs:
                i, gen = ordinal[e[0]], min(gens)
                assert e[5] == cw.event_text(video, w, i, gen)
                assert e[6] == cw.embedding(video, w, i, gen).tobytes()
        assert not by_window, "events without their window"
        # Windows of finished work survive every later crash (C is deleted on purpose).
        present = {r[0] for r in dump["windows"]}
        assert finished_windows <= present, "a committed window was lost"
        finished_windows |= {r[0] for r in dump["windows"] if VIDEO_OF[r[1]] != "C"}

        ids = store.index.ids()
        assert len(np.unique(ids)) == len(ids) == store.index.ntotal
        assert set(ids.tolist()) == {e[0] for e in dump["events"]}, "FAISS and SQL disagree"
        for e in dump["events"]:
            (best, score), *_ = store.vector_search(np.frombuffer(e[6], np.float32), 1)
            assert best == e[0] and score == pytest.approx(1.0, abs=1e-5)
            token = e[5].split()[3]
            assert [i for i, _ in store.keyword_search(token, 5)] == [e[0]]
        with store.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                indexed = conn.scalar(text("SELECT count(*) FROM events_fts_docsize"))
            else:
                indexed = conn.scalar(
                    text("SELECT count(*) FROM events WHERE text_tsv IS NOT NULL")
                )
        assert indexed == len(dump["events"]), "full-text index out of step"
        return dump
    finally:
        store.close(snapshot=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_at_random_points_loses_nothing(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="vidseek.storage")
    databases = contextlib.ExitStack()
    with databases:
        _kill_and_resume(backend, tmp_path, caplog, databases)


def _kill_and_resume(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, databases: contextlib.ExitStack
) -> None:
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    clean_db = databases.enter_context(database(backend, clean_dir))
    proc = _start(clean_db, clean_dir / "faiss.index", "flat")
    assert _finish(proc)[0] == 0
    clean = _check(clean_db, clean_dir / "faiss.index", "flat", set(), caplog)
    assert len(clean["events"]) > 50 and all(j[1] == "succeeded" for j in clean["jobs"])

    rng = np.random.default_rng(SEED)
    schedule = list(rng.permutation(SCHEDULE))
    kills: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    epoch = 0
    while schedule:
        # An epoch is one database taken from empty to the end of the plan.
        kind = ("flat", "hnsw")[epoch % 2]
        d = tmp_path / f"epoch{epoch}"
        d.mkdir()
        db, index = databases.enter_context(database(backend, d)), d / "faiss.index"
        finished: set[int] = set()
        while True:
            mode = schedule.pop() if schedule else "last"
            outcome = "last" if mode == "last" else _round(rng, mode, db, index, kind)
            if outcome == "killed":
                kills[str(mode)] += 1
                kinds[kind] += 1
            if outcome == "last":
                assert _finish(_start(db, index, kind))[0] == 0
            state = _check(db, index, kind, finished, caplog)
            if outcome != "killed":
                break
        assert state == clean, f"epoch {epoch} ({kind}) differs from a clean run"
        epoch += 1

    print(f"kills by point: {dict(kills)}; by index kind: {dict(kinds)}; epochs: {epoch}")
    assert sum(kills.values()) >= MIN_KILLS, kills
    assert set(kills) == {"timer", *cw.HOOKS}, f"some kill points never hit: {kills}"
    assert kinds["flat"] and kinds["hnsw"], kinds
