"""The ``vidseek`` command: parses arguments and calls library functions.

Exit codes: 0 success; 1 some videos failed to ingest or a request failed;
2 bad usage or configuration; 3 the server could not be reached.

Its parts:

* :mod:`~vidseek.server.cli.parser`: the argument parser and ``main``;
* :mod:`~vidseek.server.cli.ingest`: ``vidseek ingest``;
* :mod:`~vidseek.server.cli.queries`: the commands that ask the server;
* :mod:`~vidseek.server.cli.service`: serve, worker and the maintenance commands;
* :mod:`~vidseek.server.cli.common`: what they share (exit codes, the client, JSON output).
"""

from vidseek.server.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from vidseek.server.cli.ingest import VIDEO_SUFFIXES, collect_paths
from vidseek.server.cli.ingest import _IngestRun as _IngestRun  # tests patch its methods
from vidseek.server.cli.parser import build_parser, main
from vidseek.server.cli.queries import parse_seconds

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "VIDEO_SUFFIXES",
    "build_parser",
    "collect_paths",
    "main",
    "parse_seconds",
]
