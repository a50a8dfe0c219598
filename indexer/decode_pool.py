"""A pool of decoder processes that every ingest job shares.

Each process is a :class:`~vidseek.indexer.video.DecodeWorker` (its own crash and
deadline isolation, frames handed back through its shared-memory buffer, resized
inside the worker so only model-sized frames cross the process boundary). Any window
of any video goes to the next idle process, so one long video decodes on all of them
at once: each process seeks to its window's keyframe, which costs at most one
keyframe interval per window.

:func:`default_decode_processes` sizes the pool to the machine: half its cores,
leaving the rest to the model's front end (vLLM's renderer threads and engine core)
and to embedding and commits. A backend may cap its processes
(:attr:`~vidseek.indexer.video.FrameBackend.max_processes`): NVDEC runs one process
that decodes on several threads, because GPU decoders in separate processes slowed
each other down (8 processes were 3-11x slower than 8 threads of one).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from vidseek.indexer.video import DecodeWorker, FrameBackend
from vidseek.indexer.video.worker import resolve_backend

__all__ = ["DecodePool", "default_decode_processes"]

T = TypeVar("T")


def default_decode_processes() -> int:
    """Half the cores this process may use (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


class DecodePool:
    """``processes`` decoder processes (started on first use) behind one queue of calls.

    :meth:`submit` runs ``fn(worker)`` on the next idle worker and returns a future;
    calls beyond the pool's size wait in order. ``nice`` (0-19) lowers the processes'
    CPU priority (see :class:`DecodeWorker`).
    """

    def __init__(
        self, backend: str | type[FrameBackend] = "pyav", processes: int = 0, *, nice: int = 0
    ) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0 (0: sized to the machine), got {processes}")
        self.backend = backend
        self.size = processes or default_decode_processes()
        cap = resolve_backend(backend).max_processes
        if cap:
            self.size = min(self.size, cap)
        self._idle: queue.SimpleQueue[DecodeWorker] = queue.SimpleQueue()
        self._workers = [DecodeWorker(backend, nice=nice) for _ in range(self.size)]
        for worker in self._workers:
            self._idle.put(worker)
        self._executor = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="decode")
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[[DecodeWorker], T]) -> Future[T]:
        """Run ``fn`` with an idle worker; the future holds its result or error."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the decode pool is closed")
            return self._executor.submit(self._run, fn)

    def _run(self, fn: Callable[[DecodeWorker], T]) -> T:
        worker = self._idle.get()
        try:
            return fn(worker)
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        """Stop every worker process (waiting calls are cancelled)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        for worker in self._workers:
            worker.close()
