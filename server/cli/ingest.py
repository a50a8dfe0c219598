"""``vidseek ingest``: the paths to ingest, the jobs in flight with their progress, the summary."""

from __future__ import annotations

import argparse
import contextlib
import queue
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidseek.client import (
    Client,
    FailedPreconditionError,
    IngestJob,
    UnavailableError,
    VidseekClientError,
)
from vidseek.server.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, _client, _print_json
from vidseek.storage.errors import ConfigError

VIDEO_SUFFIXES = frozenset(
    {
        ".mp4",
        ".mkv",
        ".mov",
        ".avi",
        ".webm",
        ".m4v",
        ".mpg",
        ".mpeg",
        ".ts",
        ".flv",
        ".wmv",
        ".3gp",
    }
)


def collect_paths(paths: Sequence[str], recursive: bool, glob: str | None) -> list[Path]:
    """Expand the command-line paths: files as given, directories by suffix or glob."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            if not recursive:
                raise ConfigError(f"{p} is a directory; pass --recursive to ingest its videos")
            pattern = glob or "*"
            out.extend(
                sorted(
                    f
                    for f in p.rglob(pattern)
                    if f.is_file() and (glob or f.suffix.lower() in VIDEO_SUFFIXES)
                )
            )
        else:
            out.append(p)
    return [p.absolute() for p in out]


def cmd_ingest(ns: argparse.Namespace) -> int:
    paths = collect_paths(ns.paths, ns.recursive, ns.glob)
    if ns.manifest:
        paths += [
            Path(line.strip()).absolute()
            for line in Path(ns.manifest).read_text().splitlines()
            if line.strip()
        ]
    if ns.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {ns.workers}")
    interrupted = False
    with _client(ns) as client:
        run = _IngestRun(client, ns.collection, quiet=ns.json)
        try:
            if ns.no_wait:
                run.submit_all(paths)
            else:
                run.run(paths, ns.workers)
        except KeyboardInterrupt:
            interrupted = True
            run.cancel()
        results = run.finish(paths)
    failed = sum(r["status"] == "failed" for r in results.values())
    if ns.json:
        _print_json({"results": results, "failed": failed, "interrupted": interrupted})
    else:
        _summary(results)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failed else EXIT_OK


class _IngestRun:
    """Submits videos, keeps at most ``workers`` jobs in flight, and shows progress.

    Two bars on stderr: videos done (with ETA) and windows done across the jobs
    in flight and finished. When stderr is not a terminal (a log file, CI), plain
    progress lines every ``line_every`` seconds instead, and one per finished video.

    Each job in flight is followed by a thread streaming its changes
    (``wait_for_job``: ``WatchIngestJob``, polling only where the server cannot
    stream); the main thread applies them as they come. A job whose stream breaks
    is polled with ``GetIngestJob`` from then on.
    """

    def __init__(
        self, client: Client, collection: str, quiet: bool, line_every: float = 10.0
    ) -> None:
        self.client = client
        self.collection = collection
        self.quiet = quiet
        self.lines = not quiet and not sys.stderr.isatty()
        self.line_every = line_every
        self._last_line = 0.0
        self._finished = 0  # videos done (any outcome), for the plain lines
        self.results: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, str] = {}  # job id -> path
        self._counts: dict[str, tuple[int, int]] = {}  # job id -> (windows done, total)
        self._bars: list[Any] = []
        self._updates: queue.Queue[IngestJob] = queue.Queue()
        self._unwatched: set[str] = set()  # jobs whose stream broke: polled instead

    def _submit(self, path: Path) -> bool:
        """Queue one video; False (and a failed result) if the server refused it."""
        try:
            job = self.client.ingest(str(path), collection=self.collection)
        except UnavailableError:
            raise
        except VidseekClientError as exc:
            self.results[str(path)] = {"status": "failed", "error": exc.message}
            self._say(f"vidseek: failed: {path}: {exc.message}")
            return False
        self.pending[job.job_id] = str(path)
        threading.Thread(target=self._watch, args=(job.job_id,), daemon=True).start()
        return True

    def _watch(self, job_id: str) -> None:
        """Stream one job's changes into the update queue (a background thread)."""
        try:
            self._updates.put(self.client.wait_for_job(job_id, on_progress=self._updates.put))
        except VidseekClientError:
            self._unwatched.add(job_id)

    def submit_all(self, paths: Sequence[Path]) -> None:
        """Queue every video and return (``--no-wait``)."""
        for p in paths:
            self._submit(p)
        for job_id, path in self.pending.items():
            self.results[path] = {"status": "queued", "job_id": job_id}
        self.pending.clear()

    def run(self, paths: Sequence[Path], workers: int) -> None:
        """Ingest ``paths`` with at most ``workers`` jobs in flight; returns when all ended."""
        from tqdm import tqdm

        bars = self.quiet or self.lines
        videos = tqdm(total=len(paths), unit="video", desc="videos ", disable=bars, file=sys.stderr)
        windows = tqdm(total=0, unit="window", desc="windows", disable=bars, file=sys.stderr)
        self._bars = [videos, windows]
        todo = list(paths)
        while todo or self.pending:
            while todo and len(self.pending) < workers:
                if not self._submit(todo.pop(0)):
                    videos.update(1)  # refused at submission: done, as failed
                    self._finished += 1
            self._poll(videos, windows)
            if self.lines and time.monotonic() - self._last_line >= self.line_every:
                self._progress_line(len(paths))
        if self.lines:
            self._progress_line(len(paths))
        self._close_bars()

    def _say(self, line: str) -> None:
        """A line on stderr (above the bars when they are drawn); nothing with --json."""
        if self.quiet:
            return
        if self.lines:
            print(line, file=sys.stderr, flush=True)
        else:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)

    def _progress_line(self, videos: int) -> None:
        self._last_line = time.monotonic()
        done = sum(d for d, _ in self._counts.values())
        total = sum(t for _, t in self._counts.values())
        self._say(
            f"vidseek: {self._finished}/{videos} videos done, {done}/{total} windows, "
            f"{len(self.pending)} in flight"
        )

    def _poll(self, videos: Any = None, windows: Any = None, wait: float = 0.5) -> None:
        """Apply the job changes that came in (waiting up to ``wait`` s for the first)."""
        changes: list[IngestJob] = []
        try:
            changes.append(self._updates.get(timeout=wait))
            while True:
                changes.append(self._updates.get_nowait())
        except queue.Empty:
            pass
        changes += [self.client.get_job(j) for j in list(self._unwatched) if j in self.pending]
        for job in changes:
            if job.job_id not in self.pending:
                continue  # a change that came after the job's end was applied
            self._counts[job.job_id] = (job.windows_done, job.windows_total)
            if job.state.done:
                path = self.pending.pop(job.job_id)
                self.results[path] = _job_result(job)
                self._finished += 1
                if videos is not None:
                    videos.update(1)
                why = f": {job.error}" if job.state.value == "failed" else ""
                if self.lines or why:  # a failure shows as it happens (above the bars)
                    self._say(f"vidseek: {job.state.value}: {path}{why}")
        if windows is not None:
            windows.total = sum(t for _, t in self._counts.values())
            windows.update(sum(d for d, _ in self._counts.values()) - windows.n)

    def cancel(self) -> None:
        """Cancel the jobs in flight and wait until each has committed its current window.

        A second Ctrl-C stops waiting; the server still finishes those windows.
        """
        self._close_bars()
        if not self.pending:
            return
        print(
            f"vidseek: interrupted; cancelling {len(self.pending)} job(s) after their "
            "current window (Ctrl-C again to stop waiting)",
            file=sys.stderr,
        )
        for job_id in list(self.pending):
            # A job that ended meanwhile refuses; the poll below records how it ended.
            with contextlib.suppress(FailedPreconditionError):
                self.client.cancel_job(job_id)
        try:
            while self.pending:
                self._poll()
        except KeyboardInterrupt:
            for job_id, path in self.pending.items():
                self.results[path] = {"status": "cancelled", "job_id": job_id}
            self.pending.clear()

    def finish(self, paths: Sequence[Path]) -> dict[str, dict[str, Any]]:
        """The result of every path, in input order; paths never submitted are 'not started'."""
        return {
            str(p): self.results.get(str(p), {"status": "not started", "error": ""}) for p in paths
        }

    def _close_bars(self) -> None:
        for bar in self._bars:
            bar.close()
        self._bars = []


def _job_result(job: IngestJob) -> dict[str, Any]:
    if job.state.value == "succeeded":
        already = job.windows_total > 0 and job.windows_reused == job.windows_total
        status = "skipped" if already else "indexed"
    else:
        status = job.state.value  # failed or cancelled
    return {
        "status": status,
        "job_id": job.job_id,
        "video_id": job.video_id,
        "error": job.error if job.state.value != "succeeded" else "",
        "note": job.error if job.state.value == "succeeded" else "",
        "windows": job.windows_total,
        "windows_done": job.windows_done,
        "events": job.events_indexed,
        "windows_unparsed": job.windows_unparsed,
        "windows_skipped": job.windows_skipped,
        "windows_reused": job.windows_reused,
        "plan": job.plan,
    }


def _detail(r: dict[str, Any]) -> str:
    status = r["status"]
    if status == "indexed":
        text = (
            f"{r['events']} events in {r['windows']} windows "
            f"({r['windows_unparsed']} unparsed, {r['windows_skipped']} skipped"
            + (f", {r['windows_reused']} from an earlier run" if r["windows_reused"] else "")
            + ")"
        )
        return text + (f"; {r['note']}" if r.get("note") else "")
    if status == "skipped":
        return "already indexed (same content)"
    if status == "cancelled":
        return f"cancelled after {r.get('windows_done', 0)} of {r.get('windows', 0)} windows"
    if status == "queued":
        return f"job {r['job_id']}"
    return str(r.get("error", ""))


def _summary(results: dict[str, dict[str, Any]]) -> None:
    width = max((len(p) for p in results), default=0)
    for path, r in results.items():
        print(f"{r['status']:<11} {path:<{width}}  {_detail(r)}")
    counts: dict[str, int] = {}
    for r in results.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to ingest")
