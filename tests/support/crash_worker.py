"""Crash-test worker: a resumable, ingestion-like run of real ``Store`` commits.

    python tests/support/crash_worker.py DB_URL INDEX_PATH --kind flat
        [--kill-hook HOOK --kill-at N] [--pace SECONDS]

It works through :data:`JOBS` like the server's job runner: each job's state
lives in ``ingest_jobs`` and each window commits in one transaction, so a run
that is killed resumes at its first uncommitted window. The "captioner" is
deterministic (text and embedding from the window and a generation number), so
a clean run and a run killed many times must end in the same state. Video C is
ingested, deleted and ingested again at a second generation: the same event ids
come back with different vectors.

``--kill-hook`` makes the worker SIGKILL itself at the N-th occurrence of a
point inside real code paths:

``sql-commit``       a transaction (window, delete, job update, migration) has
                     flushed everything and is about to send COMMIT
``after-commit``     the SQL commit returned; FAISS has not applied it yet
``snapshot-partial`` half of a snapshot chunk is written to the temp file
``snapshot-fsync``   the temp file is complete, not yet renamed
``snapshot-rename``  the rename is done, the directory not yet fsynced

Without a hook the parent kills the process at a random moment instead.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import signal
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DIM = 16
SNAPSHOT_EVERY = 3
VOCAB = ["door", "car", "dog", "kitchen", "red", "runs", "opens", "table", "window", "street"]
# (job id, operation, video, generation of the captioner's output)
JOBS: list[tuple[str, str, str, int]] = [
    ("j1", "ingest", "A", 1),
    ("j2", "ingest", "B", 1),
    ("j3", "ingest", "C", 1),
    ("j4", "delete", "C", 1),
    ("j5", "ingest", "D", 1),
    ("j6", "ingest", "C", 2),
    ("j7", "ingest", "E", 1),
]
WINDOWS = {"A": 9, "B": 7, "C": 8, "D": 9, "E": 8}
HOOKS = ("sql-commit", "after-commit", "snapshot-partial", "snapshot-fsync", "snapshot-rename")


def content_hash(video: str) -> str:
    """The fake file's content hash."""
    return hashlib.sha256(f"video {video}".encode()).hexdigest()


def events_in(video: str, w: int) -> int:
    """How many events the fake captioner finds in window ``w`` (0-3; 0 = unparsed)."""
    return (w * 7 + ord(video)) % 4


def event_text(video: str, w: int, i: int, gen: int) -> str:
    """Deterministic caption text with a unique token ``tok<video><w>x<i>``."""
    words = " ".join(VOCAB[(w + i * 3 + j + gen) % len(VOCAB)] for j in range(3))
    return f"{words} tok{video.lower()}{w}x{i} gen{gen}"


def embedding(video: str, w: int, i: int, gen: int) -> np.ndarray:
    """Deterministic unit vector of event ``i`` of window ``w``."""
    seed = int.from_bytes(hashlib.sha256(f"{video}/{w}/{i}/{gen}".encode()).digest()[:8], "big")
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _Countdown:
    def __init__(self, at: int) -> None:
        self.left = at

    def tick(self) -> None:
        self.left -= 1
        if self.left <= 0:
            _kill()


def install_hook(hook: str, at: int) -> None:
    """Arrange for SIGKILL at the ``at``-th occurrence of ``hook``."""
    from sqlalchemy import Engine, event
    from sqlalchemy.orm import Session

    from vidseek.storage.vector_index import snapshot

    countdown = _Countdown(at)
    if hook == "sql-commit":
        event.listen(Engine, "commit", lambda _conn: countdown.tick())
    elif hook == "after-commit":
        event.listen(Session, "after_commit", lambda _s: countdown.tick())
    elif hook in ("snapshot-fsync", "snapshot-rename"):
        real_os = os

        class _Os:
            def __getattr__(self, name: str) -> Any:
                return getattr(real_os, name)

            def fsync(self, fd: int) -> None:
                real_os.fsync(fd)
                # A snapshot fsyncs its temp file, then the directory after the rename.
                if hook == "snapshot-fsync" and not stat.S_ISDIR(real_os.fstat(fd).st_mode):
                    countdown.tick()

            def replace(self, src: Any, dst: Any) -> None:
                real_os.replace(src, dst)
                if hook == "snapshot-rename":
                    countdown.tick()

        snapshot.os = _Os()  # type: ignore[assignment]
    elif hook == "snapshot-partial":
        import builtins

        def _open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            f = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115 (returned open)
            if "w" not in mode:
                return f
            countdown.left -= 1
            if countdown.left > 0:
                return f
            real_write: Callable[[Any], int] = f.write
            writes = [0]

            def write(chunk: Any) -> int:
                # Snapshot chunks: magic, header length, header, FAISS blob, event table.
                # Cut the blob.
                data = memoryview(chunk).cast("B")
                writes[0] += 1
                if writes[0] == 4:
                    real_write(data[: len(data) // 2])
                    f.flush()
                    _kill()
                return real_write(data)

            f.write = write
            return f

        snapshot.open = _open  # type: ignore[attr-defined]
    else:
        raise SystemExit(f"unknown hook {hook!r}")


def run(db_url: str, index_path: Path, kind: str, pace: float) -> None:
    """Work through :data:`JOBS`, resuming where an earlier run stopped."""
    from vidseek.storage.errors import NotFound
    from vidseek.storage.store import NewEvent, NewWindow, Store, window_id_for

    store = Store(db_url, index_path, DIM, index_kind=kind)
    print("READY", flush=True)
    commits = 0
    for job_id, op, video, gen in JOBS:
        try:
            state = store.get_job(job_id).state
        except NotFound:
            store.create_job(job_id, f"/videos/{video}.mp4")
            state = "queued"
        if state == "succeeded":
            continue
        store.update_job(job_id, state="running")
        chash = content_hash(video)
        if op == "delete":
            # NotFound: a run killed before marking the job done had deleted it already.
            with contextlib.suppress(NotFound):
                store.delete_video(chash[:16])
            store.update_job(job_id, state="succeeded")
            continue
        vid = store.upsert_video(
            uri=f"/videos/{video}.mp4",
            content_hash=chash,
            duration=60.0 * WINDOWS[video],
            fps=30.0,
            width=640,
            height=360,
            frame_count=1800 * WINDOWS[video],
        )
        done = store.committed_window_ids(vid)
        for w in range(WINDOWS[video]):
            start, end = 60.0 * w, 60.0 * (w + 1)
            wid = window_id_for(chash, start, end, "fake-captioner", "p1")
            if wid in done:
                continue
            n = events_in(video, w)
            events = [
                NewEvent(
                    start + i,
                    start + i + 5.0,
                    event_text(video, w, i, gen),
                    embedding(video, w, i, gen),
                )
                for i in range(n)
            ]
            store.commit_window(
                NewWindow(
                    id=wid,
                    video_id=vid,
                    window_index=w,
                    start_seconds=start,
                    end_seconds=end,
                    frame_count=60,
                    status="parsed" if n else "unparsed",
                    raw_output=f"output {video}/{w}/{gen}",
                    parse_error="" if n else "no JSON",
                    dropped=[],
                    model="fake-captioner",
                    prompt_version="p1",
                    prompt_tokens=100 + w,
                ),
                events,
            )
            commits += 1
            if commits % SNAPSHOT_EVERY == 0:
                store.snapshot()
            if pace:
                time.sleep(pace)
        store.update_job(job_id, state="succeeded", windows_total=WINDOWS[video])
    store.close()
    print("DONE", flush=True)


def main(argv: list[str]) -> int:
    """Parse arguments, install the kill hook, run the jobs."""
    p = argparse.ArgumentParser()
    p.add_argument("db_url")
    p.add_argument("index_path", type=Path)
    p.add_argument("--kind", default="flat")
    p.add_argument("--kill-hook", choices=HOOKS)
    p.add_argument("--kill-at", type=int, default=1)
    p.add_argument("--pace", type=float, default=0.0)
    args = p.parse_args(argv)
    if args.kill_hook:
        install_hook(args.kill_hook, args.kill_at)
    run(args.db_url, args.index_path, args.kind, args.pace)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
