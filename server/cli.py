"""The ``vidseek`` command: parses arguments and calls library functions.

Exit codes: 0 success; 1 some videos failed to ingest or a request failed;
2 bad usage or configuration; 3 the server could not be reached.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vidseek.client import (
    Client,
    FailedPreconditionError,
    IngestJob,
    InvalidArgumentError,
    Moment,
    NotFoundError,
    SearchPage,
    UnavailableError,
    VidseekClientError,
)
from vidseek.server.logs import log_handler, route_library_logs
from vidseek.server.settings import Settings, client_environment, load_settings
from vidseek.storage.errors import ConfigError

__all__ = ["VIDEO_SUFFIXES", "collect_paths", "main", "parse_seconds"]

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
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130


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


# The settings the offline maintenance commands read (the rest would only clutter --help).
_DB_SETTINGS = ("data_dir", "database_url")
_INDEX_SETTINGS = (
    *_DB_SETTINGS,
    "index_kind",
    "auto_index_threshold",
    "ivf_nlist",
    "ivf_nprobe",
    "hnsw_ef_search",
)


def _add_setting_flags(parser: argparse.ArgumentParser, names: Sequence[str] | None = None) -> None:
    """A ``--flag`` per setting (``names``: only those); VIDSEEK_* variables still apply."""
    for name, help_text in Settings.help().items():
        if names is not None and name not in names:
            continue
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=None,
            help=help_text,
            metavar=name.upper(),
        )


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def _client(ns: argparse.Namespace) -> Client:
    """A client from the flags, the VIDSEEK_* client variables filling in what they omit."""
    env = client_environment()
    if ns.token and ns.token_file:
        raise ConfigError("give --token or --token-file, not both")
    token = ns.token
    token_file = ns.token_file or ("" if token else env.get("VIDSEEK_TOKEN_FILE", ""))
    if token_file:
        token = _read_file(token_file, "token file").decode().strip()
    elif not token:
        token = env.get("VIDSEEK_TOKEN", "")
    ca_file = ns.ca_file or env.get("VIDSEEK_CA_FILE", "")
    roots = _read_file(ca_file, "CA file") if ca_file else None
    tls = ns.tls or env.get("VIDSEEK_TLS", "").lower() in ("1", "true", "yes")
    ns.server = ns.server or env.get("VIDSEEK_SERVER", "localhost:50051")
    client = Client(
        ns.server,
        token=token or None,
        tls=tls,
        root_certificates=roots,
        timeout=ns.timeout,
    )
    client.wait_until_ready(ns.connect_timeout)
    return client


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _service_settings(ns: argparse.Namespace) -> Settings:
    """The settings of a long-running process, its logs set up in their format."""
    settings = _settings(ns)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(log_handler(settings.log_format))
    route_library_logs()
    return settings


def cmd_serve(ns: argparse.Namespace) -> int:
    from vidseek.server.app import serve

    settings = _service_settings(ns)
    serve(
        settings,
        ready=lambda port: print(f"vidseek listening on {settings.host}:{port}", flush=True),
    )
    return EXIT_OK


def cmd_worker(ns: argparse.Namespace) -> int:
    from vidseek.server.worker import worker_main

    worker_main(_service_settings(ns), name=ns.name)
    return EXIT_OK


def _settings(ns: argparse.Namespace) -> Settings:
    return load_settings(
        overrides={k: getattr(ns, k) for k in Settings.help() if getattr(ns, k, None) is not None}
    )


def cmd_db_upgrade(ns: argparse.Namespace) -> int:
    from vidseek.storage.schema import upgrade_database

    settings = _settings(ns)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    before, after = upgrade_database(settings.resolved_database_url)
    print(f"database schema: {before.message()} -> {after.message()}")
    return EXIT_OK


def cmd_index_rebuild(ns: argparse.Namespace) -> int:
    from vidseek.server.app import rebuild_index

    n = rebuild_index(_settings(ns))
    print(f"vector index rebuilt from SQL: {n} vectors")
    return EXIT_OK


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


def cmd_search(ns: argparse.Namespace) -> int:
    with _client(ns) as client:
        page = client.search(
            ns.query,
            ns.top_k,
            video_ids=ns.video_id or (),
            collection=ns.collection,
            start_seconds=ns.start_seconds,
            end_seconds=ns.end_seconds,
            min_score=ns.min_score,
            group_by_video=ns.group_by_video,
            moments_per_video=ns.per_video,
            refine=ns.refine,
            page_token=ns.page_token,
        )
    if ns.json:
        _print_json(_page_json(page))
        return EXIT_OK
    if not page:
        print("no matches")
    if ns.group_by_video:
        for v in page.videos:
            print(f"{v.score:6.3f}  {v.video_id}  {v.video_uri}")
            for m in v.moments:
                print(f"        {_moment_line(m)}")
    else:
        for m in page:
            print(f"{m.score:6.3f}  {m.video_id}  {_moment_line(m)}")
    if page.next_page_token:
        print(f"next page: --page-token {page.next_page_token}")
    return EXIT_OK


def _page_json(page: SearchPage) -> dict[str, Any]:
    return {
        "moments": [asdict(m) for m in page],
        "videos": [asdict(v) for v in page.videos],
        "next_page_token": page.next_page_token,
    }


def _moment_line(m: Moment) -> str:
    span = f"{_hms(m.start_seconds)}-{_hms(m.end_seconds)}"
    if m.refined and m.coarse_start_seconds is not None and m.coarse_end_seconds is not None:
        span += f" (refined from {_hms(m.coarse_start_seconds)}-{_hms(m.coarse_end_seconds)})"
    return f"{span}  {m.description}"


def parse_seconds(text: str) -> float:
    """Seconds from ``90``, ``90.5``, ``1:30`` (M:SS) or ``1:02:03.5`` (H:MM:SS)."""
    parts = text.strip().split(":")
    try:
        if len(parts) > 3 or not all(parts):
            raise ValueError(text)
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use seconds, M:SS or H:MM:SS)"
        ) from None
    if any(v < 0 for v in values) or any(v >= 60 for v in values[1:]):
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use seconds, M:SS or H:MM:SS)")
    total = 0.0
    for v in values:
        total = total * 60 + v
    return total


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


def _rows(items: Iterable[Any], ns: argparse.Namespace, columns: Sequence[str]) -> int:
    rows = [asdict(i) for i in items]
    if ns.json:
        _print_json(rows)
        return EXIT_OK
    print("  ".join(columns))
    for r in rows:
        print("  ".join(str(r[c].value if hasattr(r[c], "value") else r[c]) for c in columns))
    return EXIT_OK


def cmd_jobs(ns: argparse.Namespace) -> int:
    with _client(ns) as client:
        return _rows(
            client.list_jobs(),
            ns,
            ["job_id", "state", "windows_done", "windows_total", "events_indexed", "uri", "error"],
        )


def cmd_cancel(ns: argparse.Namespace) -> int:
    """Cancel jobs; a running one stops after its current window. Exit 1 if any refused."""
    failed = 0
    out: list[dict[str, Any]] = []
    with _client(ns) as client:
        for job_id in ns.job_ids:
            try:
                job = client.cancel_job(job_id)
                out.append({"job_id": job_id, "state": job.state.value, "error": ""})
            except (FailedPreconditionError, NotFoundError, InvalidArgumentError) as exc:
                failed += 1
                out.append({"job_id": job_id, "state": "", "error": exc.message})
    if ns.json:
        _print_json(out)
    else:
        for r in out:
            what = r["error"] or (
                "cancelled" if r["state"] == "cancelled" else "stops after its current window"
            )
            print(f"{r['job_id']}  {what}")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_videos(ns: argparse.Namespace) -> int:
    with _client(ns) as client:
        return _rows(
            client.list_videos(),
            ns,
            ["video_id", "duration_seconds", "event_count", "collection", "uri"],
        )


def cmd_video(ns: argparse.Namespace) -> int:
    """One video's record (NotFound: exit 1)."""
    with _client(ns) as client:
        video = client.get_video(ns.video_id)
    if ns.json:
        _print_json(asdict(video))
    else:
        for key, value in asdict(video).items():
            print(f"{key}: {value}")
    return EXIT_OK


def cmd_timeline(ns: argparse.Namespace) -> int:
    """A video's events in time order, optionally within --from/--to."""
    with _client(ns) as client:
        events = client.timeline(ns.video_id, ns.start_seconds or 0.0, ns.end_seconds or 0.0)
    if ns.json:
        _print_json([asdict(e) for e in events])
    else:
        for e in events:
            print(f"{_hms(e.start_seconds)}-{_hms(e.end_seconds)}  {e.description}")
    return EXIT_OK


def cmd_delete(ns: argparse.Namespace) -> int:
    """Delete videos and their events. Exit 1 if any was not found."""
    failed = 0
    out: list[dict[str, Any]] = []
    with _client(ns) as client:
        for video_id in ns.video_ids:
            try:
                n = client.delete_video(video_id)
                out.append({"video_id": video_id, "events_deleted": n, "error": ""})
            except NotFoundError as exc:
                failed += 1
                out.append({"video_id": video_id, "events_deleted": 0, "error": exc.message})
    if ns.json:
        _print_json(out)
    else:
        for r in out:
            what = r["error"] or f"deleted ({r['events_deleted']} events)"
            print(f"{r['video_id']}  {what}")
    return EXIT_FAILED if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidseek", description="Long-video search service.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gRPC server (settings: flags or VIDSEEK_* env)")
    _add_setting_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "worker",
        help="run ingest jobs from the PostgreSQL task queue (servers with "
        "VIDSEEK_JOB_QUEUE=procrastinate queue them)",
    )
    p.add_argument("--name", default="", help="worker name in logs (default: host-pid)")
    _add_setting_flags(p)
    p.set_defaults(func=cmd_worker)

    def client_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--server",
            default="",
            help="server address host:port (default: $VIDSEEK_SERVER, else localhost:50051)",
        )
        p.add_argument(
            "--token",
            default="",
            help="bearer token, if the server requires one (visible to ps; see --token-file)",
        )
        p.add_argument(
            "--token-file",
            default="",
            help="file holding the bearer token (default: $VIDSEEK_TOKEN_FILE or $VIDSEEK_TOKEN)",
        )
        p.add_argument("--tls", action="store_true", help="connect with TLS (system CA roots)")
        p.add_argument("--ca-file", default="", help="PEM CA certificates to trust (implies --tls)")
        p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
        p.add_argument(
            "--connect-timeout",
            type=float,
            default=60.0,
            help="seconds to wait for the server to come up",
        )
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("db", help="database schema")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    p = db_sub.add_parser("upgrade", help="create or migrate the schema to this version")
    _add_setting_flags(p, _DB_SETTINGS)
    p.set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("index", help="the FAISS vector index")
    index_sub = p.add_subparsers(dest="index_command", required=True)
    p = index_sub.add_parser("rebuild", help="rebuild the vector index from SQL")
    _add_setting_flags(p, _INDEX_SETTINGS)
    p.set_defaults(func=cmd_index_rebuild)

    p = sub.add_parser("ingest", help="index video files through the server")
    p.add_argument("paths", nargs="*", help="video files or directories")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into directories")
    p.add_argument("--glob", default=None, help="file pattern inside directories")
    p.add_argument("--manifest", default=None, help="file with one video path per line")
    p.add_argument("--no-wait", action="store_true", help="queue and return at once")
    p.add_argument(
        "--workers",
        type=int,
        default=4,
        metavar="N",
        help="jobs this command keeps in flight (default 4; the server's "
        "VIDSEEK_INGEST_WORKERS decides how many run at once)",
    )
    p.add_argument(
        "--collection",
        default="",
        metavar="NAME",
        help="put the videos into this collection (search can be restricted to it)",
    )
    client_flags(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="find moments matching a text query")
    p.add_argument("query")
    p.add_argument(
        "-k",
        "--top-k",
        type=int,
        default=10,
        help="results per page: moments, or videos with --group-by-video (default 10)",
    )
    p.add_argument(
        "--video",
        "--video-id",
        dest="video_id",
        action="append",
        metavar="ID",
        help="restrict to this video (repeatable)",
    )
    p.add_argument(
        "--collection", default="", metavar="NAME", help="restrict to the videos of a collection"
    )
    for flag, dest, which in (
        ("--from", "start_seconds", "ending at or after"),
        ("--to", "end_seconds", "starting at or before"),
    ):
        p.add_argument(
            flag,
            dest=dest,
            type=parse_seconds,
            default=None,
            metavar="TIME",
            help=f"only events {which} this time of their video (seconds or H:MM:SS)",
        )
    p.add_argument(
        "--group-by-video", action="store_true", help="group moments by video, best video first"
    )
    p.add_argument(
        "--per-video",
        type=int,
        default=0,
        metavar="N",
        help="with --group-by-video: moments per video (default: the server's, 3)",
    )
    p.add_argument(
        "--min-score",
        type=float,
        default=0.0,
        help="drop results scoring below this (scores are in [0, 1], or [-1, 1] with "
        "VIDSEEK_VIDEO_RANKER=off; default 0)",
    )
    p.add_argument(
        "--refine", action="store_true", help="ask the server to refine the best moments' spans"
    )
    p.add_argument(
        "--page-token", default="", metavar="TOKEN", help="the next page of an earlier search"
    )
    client_flags(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("jobs", help="list ingest jobs")
    client_flags(p)
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("cancel", help="cancel ingest jobs (a running one stops after its window)")
    p.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    client_flags(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("videos", help="list indexed videos")
    client_flags(p)
    p.set_defaults(func=cmd_videos)

    p = sub.add_parser("video", help="show one indexed video")
    p.add_argument("video_id")
    client_flags(p)
    p.set_defaults(func=cmd_video)

    p = sub.add_parser("timeline", help="a video's events in time order")
    p.add_argument("video_id")
    p.add_argument(
        "--from",
        dest="start_seconds",
        type=parse_seconds,
        default=None,
        help="events ending at or after this time (seconds, M:SS or H:MM:SS)",
    )
    p.add_argument(
        "--to",
        dest="end_seconds",
        type=parse_seconds,
        default=None,
        help="events starting at or before this time",
    )
    client_flags(p)
    p.set_defaults(func=cmd_timeline)

    p = sub.add_parser("delete", help="delete videos and their events from the index")
    p.add_argument("video_ids", nargs="+", metavar="VIDEO_ID")
    client_flags(p)
    p.set_defaults(func=cmd_delete)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vidseek`` command."""
    ns = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO, handlers=[log_handler()]
    )
    try:
        code = int(ns.func(ns))
        sys.stdout.flush()  # here, where a closed pipe can still be handled
        return code
    except BrokenPipeError:
        # Whoever read our output has gone (`vidseek jobs | head`): not an error.
        # Point stdout at /dev/null so the interpreter's last flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except ConfigError as exc:
        print(f"vidseek: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UnavailableError as exc:
        print(
            f"vidseek: server {getattr(ns, 'server', '')} unavailable: {exc.message}",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    except VidseekClientError as exc:
        print(f"vidseek: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("vidseek: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
