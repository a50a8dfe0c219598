"""What the commands share: the exit codes, the client built from the flags, JSON output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vidseek.client import Client
from vidseek.server.settings import client_environment
from vidseek.storage.errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130


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
