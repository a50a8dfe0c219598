"""Commands that ask the server: search, jobs, cancel, videos, video, timeline, delete."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from vidseek.client import (
    FailedPreconditionError,
    InvalidArgumentError,
    Moment,
    NotFoundError,
    SearchPage,
)
from vidseek.server.cli.common import EXIT_FAILED, EXIT_OK, _client, _print_json


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
