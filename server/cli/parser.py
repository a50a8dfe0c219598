"""The argument parser (``build_parser``) and the entry point (``main``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from vidseek.client import UnavailableError, VidseekClientError
from vidseek.server.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from vidseek.server.cli.ingest import cmd_ingest
from vidseek.server.cli.queries import (
    cmd_cancel,
    cmd_delete,
    cmd_jobs,
    cmd_search,
    cmd_timeline,
    cmd_video,
    cmd_videos,
    parse_seconds,
)
from vidseek.server.cli.service import (
    _DB_SETTINGS,
    _INDEX_SETTINGS,
    _add_setting_flags,
    cmd_db_upgrade,
    cmd_index_rebuild,
    cmd_serve,
    cmd_worker,
)
from vidseek.server.logs import log_handler
from vidseek.storage.errors import ConfigError


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
