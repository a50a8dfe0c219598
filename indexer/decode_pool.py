"""A pool of decoder processes that every ingest job shares.

Each process is a :class:`~vidseek.indexer.video.DecodeWorker` (its own crash and
deadline isolation, frames handed back through its shared-memory buffer, resized
inside the worker so only model-sized frames cross the process boundary). Any window
of any video goes to the next idle process, so one long video decodes on all of them
at once: each process seeks to its window's keyframe, which costs at most one
keyframe interval per window.

:func:`default_decode_processes` sizes the pool to the machine: three quarters of
its cores (one left at least), leaving the rest to the model's front end (vLLM's
renderer threads and engine core) and to embedding and commits. Each process decodes
on one thread (see :class:`DecodeWorker`), so half the cores left cores idle: on 16
cores of the H200 host beside ``vllm serve``, 12 processes ingested 227 video-hours
per GPU-hour end to end against 177 with 8 (``benchmarks/ingest_throughput.py``,
2026-11-30).

A backend may cap its processes
(:attr:`~vidseek.indexer.video.FrameBackend.max_processes`): NVDEC runs one process
that decodes on several threads, because GPU decoders in separate processes slowed
each other down (8 processes were 3-11x slower than 8 threads of one). Such a
process takes several windows at once
(:attr:`~vidseek.indexer.video.FrameBackend.concurrent_requests`): the pool hands it
that many, and it decodes each on its own thread.

A pool may mix backends (``"nvdec+pyav"``, or a list of them): each takes windows
from the same queue as soon as one of its processes is idle, so NVDEC's process and
PyAV's decode side by side, each at its own speed. A backend given a count
(``"nvdec:2+pyav"``) gets it; else a backend with a cap gets its cap; the others
share the rest of the processes (at least one each).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from vidseek.indexer.video import DecodeWorker, FrameBackend, pool_backends
from vidseek.indexer.video.worker import resolve_backend

__all__ = ["DecodePool", "default_decode_processes"]

T = TypeVar("T")


def default_decode_processes() -> int:
    """Three quarters of the cores this process may use, rounded up, leaving at least
    one core to the rest (at least 1 process)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores - 1, cores - cores // 4))


Backend = str | type[FrameBackend]


def pool_sizes(
    backends: Sequence[type[FrameBackend]], processes: int, fixed: Sequence[int] = ()
) -> list[int]:
    """Processes for each of ``backends`` out of ``processes``: ``fixed[k]`` when given
    (> 0), else a capped backend gets its cap (at most ``processes``), and the others
    share what is left, at least one each."""
    fixed = list(fixed) or [0] * len(backends)
    sizes = [
        n or (min(b.max_processes, processes) if b.max_processes else 0)
        for b, n in zip(backends, fixed, strict=True)
    ]
    free = [k for k, b in enumerate(backends) if not (fixed[k] or b.max_processes)]
    left = max(0, processes - sum(sizes))
    for n, k in enumerate(free):
        sizes[k] = max(1, left // len(free) + (n < left % len(free)))
    return sizes


class DecodePool:
    """``processes`` decoder processes (started on first use) behind one queue of calls.

    :meth:`submit` runs ``fn(worker)`` on the next idle worker and returns a future;
    calls beyond the pool's :attr:`size` wait in order. :attr:`size` counts the
    decodes the pool runs at once: a process of a backend that decodes several
    requests at once (:attr:`~vidseek.indexer.video.FrameBackend.concurrent_requests`,
    NVDEC) counts that many. ``backend`` is one backend, several
    joined by ``+`` (``"nvdec+pyav"``) or a list (see the module docstring). ``nice``
    (0-19) lowers the processes' CPU priority and ``codec_threads`` sets the threads
    each decode uses (see :class:`DecodeWorker`).
    """

    def __init__(
        self,
        backend: Backend | Sequence[Backend] = "pyav",
        processes: int = 0,
        *,
        nice: int = 0,
        codec_threads: int = 0,
    ) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0 (0: sized to the machine), got {processes}")
        self.backend = backend
        fixed: list[int] = []
        if isinstance(backend, str):
            named = pool_backends(backend)
            parts: list[Backend] = [name for name, _ in named]
            fixed = [count for _, count in named]
        elif isinstance(backend, Sequence):
            parts = list(backend)
        else:
            parts = [backend]
        sizes = pool_sizes(
            [resolve_backend(b) for b in parts], processes or default_decode_processes(), fixed
        )
        self._idle: queue.SimpleQueue[DecodeWorker] = queue.SimpleQueue()
        self._workers = [
            DecodeWorker(part, nice=nice, codec_threads=codec_threads)
            for part, size in zip(parts, sizes, strict=True)
            for _ in range(size)
        ]
        self.processes = len(self._workers)
        for worker in self._workers:
            for _ in range(worker.requests):  # a process taking several requests at once
                self._idle.put(worker)
        self.size = sum(worker.requests for worker in self._workers)  # decodes at once
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
