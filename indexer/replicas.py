"""Several model servers behind one captioner: health-aware choice of a replica per request.

Each request goes to the healthy replica with the fewest requests open (ties in turn),
so replicas of different speeds each get what they can take. A replica that fails a
request (unreachable, or a transient HTTP status) is left out for ``cooldown``
seconds and the request is retried on another; when none is healthy, the one that
fell ill first is tried again. A retry never commits twice: windows commit once their
answer is back, under ids derived from the content.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence

__all__ = ["Replicas"]


class Replicas:
    """The chat-completions URLs of the replicas, with their open requests and health."""

    def __init__(self, urls: Sequence[str], cooldown: float = 10.0) -> None:
        if not urls:
            raise ValueError("at least one replica URL is needed")
        if len(set(urls)) != len(urls):
            raise ValueError(f"replica URLs repeat: {', '.join(urls)}")
        self.urls = list(urls)
        self.cooldown = cooldown
        self._open = dict.fromkeys(self.urls, 0)
        self._down_until = dict.fromkeys(self.urls, 0.0)
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def acquire(self, avoid: Sequence[str] = ()) -> str:
        """A replica for one request (call :meth:`release` when it ends).

        ``avoid``: replicas this request already failed on, skipped while any other
        is healthy.
        """
        now = time.monotonic()
        with self._lock:
            healthy = [u for u in self.urls if self._down_until[u] <= now]
            fresh = [u for u in healthy if u not in avoid] or healthy
            if fresh:
                turn = next(self._turn)
                order = self.urls[turn % len(self.urls) :] + self.urls[: turn % len(self.urls)]
                url = min((u for u in order if u in fresh), key=lambda u: self._open[u])
            else:  # every replica is cooling down: the one that fell ill first
                url = min(self.urls, key=lambda u: self._down_until[u])
            self._open[url] += 1
            return url

    def release(self, url: str, *, failed: bool = False) -> None:
        """The request on ``url`` ended; ``failed`` leaves the replica out for a while."""
        with self._lock:
            self._open[url] -= 1
            if failed:
                self._down_until[url] = time.monotonic() + self.cooldown
            else:
                self._down_until[url] = 0.0
