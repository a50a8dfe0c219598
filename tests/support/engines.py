"""Test doubles of captioning engines that answer out of order, or not until told."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from tests.support.fakes import ColourCaptioner
from vidseek.indexer.engine import INGEST_PRIORITY, EngineStats
from vidseek.indexer.types import CaptionOutput, WindowClip


class HeldEngine:
    """A concurrent engine that holds every window until :meth:`release` answers them.

    Answers come from :class:`ColourCaptioner` (events from the pixels), released
    newest first, so commits happen out of window order. ``auto_release`` answers
    a window as soon as that many are held (0: only on :meth:`release`).
    """

    model_id = ColourCaptioner.model_id

    def __init__(self, auto_release: int = 0) -> None:
        self.captioner = ColourCaptioner()
        self.auto_release = auto_release
        self.held: list[tuple[WindowClip, Future[CaptionOutput]]] = []
        self.submitted: list[tuple[int, int]] = []  # (window index, priority)
        self._stats = EngineStats()
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)

    @property
    def stats(self) -> EngineStats:
        return self._stats

    def submit(self, clip: WindowClip, *, priority: int = INGEST_PRIORITY) -> Future[CaptionOutput]:
        future: Future[CaptionOutput] = Future()
        with self._lock:
            self.held.append((clip, future))
            self.submitted.append((clip.window.index, priority))
            self._stats.started()
            self.changed.notify_all()
            ready = self.auto_release and len(self.held) >= self.auto_release
        if ready:
            self.release(1)
        return future

    def wait_held(self, count: int, timeout: float = 30.0) -> bool:
        """Whether ``count`` windows came to be held within ``timeout`` seconds."""
        with self._lock:
            return self.changed.wait_for(lambda: len(self.held) >= count, timeout)

    def release(self, count: int | None = None, error: Exception | None = None) -> None:
        """Answer the newest ``count`` held windows (all if None), newest first."""
        with self._lock:
            n = len(self.held) if count is None else min(count, len(self.held))
            taken = [self.held.pop() for _ in range(n)]
        for clip, future in taken:
            if error is not None:
                self._stats.finished(None)
                future.set_exception(error)
                continue
            (output,) = self.captioner.describe([clip])
            self._stats.finished(output)
            future.set_result(output)

    def close(self) -> None:
        self.release(error=RuntimeError("closed"))
