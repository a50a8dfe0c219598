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

Which call an idle process takes. A call may say what it costs
(:meth:`DecodePool.submit`'s ``cost``: ingestion gives a window's source pixels times
its seconds). With a ``lookahead`` above 0 (``VIDSEEK_DECODE_LOOKAHEAD``; 0, oldest
first, is the default until its effect end to end is measured), in a pool mixing a
backend that :attr:`~vidseek.indexer.video.FrameBackend.prefers_large_windows` (a
hardware decoder) with ones that do not, the first takes the costliest of the oldest
``lookahead`` calls per decode the pool runs at once and the others the cheapest. A
hardware decoder's cost grows less with the pixels than a CPU's: a 1080p window took a
PyAV process 6.7x the CPU-seconds of a 360p one (on a Xeon core) and NVDEC's process
1.1-1.5x the CPU-seconds and 3.6-4.0x the time of one of its slots (on the H200), so
the same cores decode more when the largest windows go to the GPU. Once the oldest
call has been passed over :attr:`~DecodePool.size` times the next idle process takes
it, so no call waits for ever. It matters when windows of different sizes wait at
once: several videos of different resolutions ingested together
(``VIDSEEK_INGEST_WORKERS`` above 1). Otherwise (one kind of backend, no costs given,
or a lookahead of 0) calls are taken oldest first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

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


@dataclass(eq=False)
class _Call:
    """A call waiting for a process: what to run, its future and what it costs."""

    fn: Callable[[DecodeWorker], Any]
    future: Future[Any]
    cost: float


def _run(call: _Call, worker: DecodeWorker) -> None:
    """``call`` on ``worker``, its result or error into its future."""
    try:
        result = call.fn(worker)
    except BaseException as exc:
        call.future.set_exception(exc)
    else:
        call.future.set_result(result)


Take = Literal["oldest", "costliest", "cheapest"]


class DecodePool:
    """``processes`` decoder processes (started on first use) behind one queue of calls.

    :meth:`submit` runs ``fn(worker)`` on the next idle worker and returns a future;
    calls beyond the pool's :attr:`size` wait in the queue, and which one an idle
    process takes is the module docstring's. :attr:`size` counts the decodes the pool
    runs at once: a process of a backend that decodes several requests at once
    (:attr:`~vidseek.indexer.video.FrameBackend.concurrent_requests`, NVDEC) counts
    that many. ``backend`` is one backend, several joined by ``+`` (``"nvdec+pyav"``)
    or a list (see the module docstring). ``nice`` (0-19) lowers the processes' CPU
    priority and ``codec_threads`` sets the threads each decode uses (see
    :class:`DecodeWorker`). ``lookahead`` is how far down the queue a process looks
    for the call it prefers, in calls per decode the pool runs at once (0: every
    process takes the oldest).
    """

    def __init__(
        self,
        backend: Backend | Sequence[Backend] = "pyav",
        processes: int = 0,
        *,
        nice: int = 0,
        codec_threads: int = 0,
        lookahead: int = 0,
    ) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0 (0: sized to the machine), got {processes}")
        if lookahead < 0:
            raise ValueError(f"lookahead must be >= 0 (0: oldest first), got {lookahead}")
        self.lookahead = lookahead
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
        classes = [resolve_backend(b) for b in parts]
        sizes = pool_sizes(classes, processes or default_decode_processes(), fixed)
        mixed = lookahead > 0 and len({cls.prefers_large_windows for cls in classes}) == 2
        self._workers: list[DecodeWorker] = []
        # One slot for each decode at once: its process and which waiting call it takes.
        self._slots: list[tuple[DecodeWorker, Take]] = []
        for part, cls, size in zip(parts, classes, sizes, strict=True):
            take: Take = "oldest"
            if mixed:
                take = "costliest" if cls.prefers_large_windows else "cheapest"
            for _ in range(size):
                worker = DecodeWorker(part, nice=nice, codec_threads=codec_threads)
                self._workers.append(worker)
                self._slots += [(worker, take)] * worker.requests
        self.processes = len(self._workers)
        self.size = len(self._slots)  # decodes at once
        self._pending: list[_Call] = []  # oldest first
        self._passed = 0  # times the oldest waiting call was passed over
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []  # one a slot, started on first use
        self._closed = False

    def submit(self, fn: Callable[[DecodeWorker], T], *, cost: float = 0.0) -> Future[T]:
        """Run ``fn`` with an idle worker; the future holds its result or error. ``cost``
        (any unit, the same for all calls) is what decoding it costs, such as its
        pixels: see the module docstring."""
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the decode pool is closed")
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._serve, args=slot, name=f"decode-{k}", daemon=True)
                    for k, slot in enumerate(self._slots)
                ]
                for thread in self._threads:
                    thread.start()
            self._pending.append(_Call(fn, future, cost))
            self._cond.notify()
        return future

    def _pick(self, take: Take) -> int:
        """Where in the queue the call is that a slot taking ``take`` takes now."""
        if take == "oldest" or self._passed >= self.size:
            pick = 0
        else:
            window = range(min(len(self._pending), self.lookahead * self.size))
            choose = max if take == "costliest" else min  # the first of equals: the oldest
            pick = choose(window, key=lambda k: self._pending[k].cost)
        self._passed = self._passed + 1 if pick else 0
        return pick

    def _serve(self, worker: DecodeWorker, take: Take) -> None:
        """A slot's thread: take waiting calls and run them on ``worker`` until closed."""
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                call = self._pending.pop(self._pick(take))
            if call.future.set_running_or_notify_cancel():  # else cancelled while it waited
                _run(call, worker)
            del call  # an idle slot holds no frames

    def close(self) -> None:
        """Stop every worker process (waiting calls are cancelled)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            waiting, self._pending = self._pending, []
            self._cond.notify_all()
        for call in waiting:
            call.future.cancel()
        for thread in self._threads:
            thread.join()
        for worker in self._workers:
            worker.close()
