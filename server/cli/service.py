"""The service's commands (serve, worker, db upgrade, index rebuild) and their settings flags."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from vidseek.server.cli.common import EXIT_OK
from vidseek.server.logs import log_handler, route_library_logs
from vidseek.server.settings import Settings, load_settings

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
