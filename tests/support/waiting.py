"""Waiting in tests for what other threads or processes do."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["eventually"]


def eventually(
    check: Callable[[], object],
    timeout: float = 10.0,
    what: str = "the condition",
    poll: float = 0.05,
) -> float:
    """Seconds until ``check()`` was true; fails naming ``what`` after ``timeout``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(poll)
    return time.monotonic() - started
