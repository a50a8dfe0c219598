"""What the ingest benchmark samples while it runs: GPU utilisation and memory (NVML),
host memory of the process tree, and percentiles of latencies."""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any, Self


def visible_gpus(count: int) -> list[int]:
    """NVML's indices of this process's GPUs (``count`` on the host): those of
    ``CUDA_VISIBLE_DEVICES`` (all when unset), which under ``--mps`` count within the
    MPS daemon's GPUs (:data:`benchmarks.mps.DAEMON_GPUS`)."""
    from benchmarks.mps import DAEMON_GPUS

    def parse(text: str) -> list[int]:
        return [int(i) for i in text.split(",") if i.strip()]

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = parse(visible) if visible is not None else list(range(count))
    daemon = os.environ.get(DAEMON_GPUS)
    if not daemon:
        return ids
    served = parse(daemon)
    return [served[i] for i in ids]


class BackgroundLoop:
    """Runs :meth:`_run` on a daemon thread for the duration of a ``with`` block, if
    :meth:`_wanted`; :meth:`_run` ends when ``_stop`` is set."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _wanted(self) -> bool:
        return True

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        if self._wanted():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class GpuSampler(BackgroundLoop):
    """NVML utilisation and memory of the visible GPUs, sampled every ``period`` s."""

    def __init__(self, period: float = 0.1) -> None:
        super().__init__()
        self.period = period
        self.samples: list[float] = []
        self.times: list[float] = []  # perf_counter of each sample
        self.peak_memory_gib = 0.0
        try:
            import pynvml

            pynvml.nvmlInit()
            ids = visible_gpus(pynvml.nvmlDeviceGetCount())
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in ids]
            self._nvml: Any = pynvml
        except Exception:  # no NVML (CPU run): report no GPU figures
            self._handles = []
            self._nvml = None

    def _wanted(self) -> bool:
        return bool(self._handles)

    def _run(self) -> None:
        nvml = self._nvml
        while not self._stop.wait(self.period):
            busy = [nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100 for h in self._handles]
            used = sum(nvml.nvmlDeviceGetMemoryInfo(h).used for h in self._handles)
            self.samples.append(sum(busy) / len(busy))
            self.times.append(time.perf_counter())
            self.peak_memory_gib = max(self.peak_memory_gib, used / 2**30)

    def busy_between(self, start: float, end: float) -> float | None:
        """Mean utilisation of the samples taken between two ``perf_counter`` times."""
        window = [b for b, t in zip(self.samples, self.times, strict=True) if start <= t <= end]
        return round(statistics.fmean(window), 3) if window else None

    def report(self) -> dict[str, Any]:
        if not self.samples:
            return {"gpu_busy": None, "gpu_peak_memory_gib": None}
        return {
            "gpu_busy": round(statistics.fmean(self.samples), 3),
            "gpu_peak_memory_gib": round(self.peak_memory_gib, 1),
            "gpus": len(self._handles),
        }


class HostMemory(BackgroundLoop):
    """Peak resident memory of this process and its children (decoders, engine core)."""

    def __init__(self, period: float = 0.5) -> None:
        import psutil

        super().__init__()
        self._process = psutil.Process()
        self._period = period
        self.peak_gib = 0.0

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            total = 0
            for proc in [self._process, *self._process.children(recursive=True)]:
                with contextlib.suppress(Exception):  # a child that just exited
                    total += proc.memory_info().rss
            self.peak_gib = max(self.peak_gib, total / 2**30)


class HostCpu(BackgroundLoop):
    """CPU-seconds this process and its descendants used while the block ran, by part.

    Parts: ``decoders`` (the processes named ``vidseek-decode``: the ingest pool,
    probing and refinement), ``engine_core`` (vLLM's engine core processes, whose
    process titles name ``EngineCore``), ``this_process`` (the benchmark: the vidseek
    server, its jobs, embedding, commits and the captioner's client) and ``other``
    (vLLM's API servers and anything else). Processes are sampled every ``period``
    s, so one that ends between samples loses its last interval.
    """

    def __init__(self, period: float = 1.0) -> None:
        import psutil

        from vidseek.indexer.video.worker import PROCESS_NAME

        super().__init__()
        self._period = period
        self._psutil = psutil
        self._decoder_name = PROCESS_NAME
        self._process = psutil.Process()
        # CPU-seconds of the processes running at the start; those started later
        # count from 0.
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}  # part and CPU-seconds, last seen
        self._started = 0.0
        self._elapsed = 0.0

    def __enter__(self) -> Self:
        self._started = time.monotonic()
        self._sample(first=True)
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._sample()
        self._elapsed = time.monotonic() - self._started

    def _part(self, proc: Any) -> str:
        if proc.pid == self._process.pid:
            return "this_process"
        name = proc.name()
        if name == self._decoder_name:
            return "decoders"
        if "EngineCore" in name or "EngineCore" in " ".join(proc.cmdline()):
            return "engine_core"
        return "other"

    def _sample(self, first: bool = False) -> None:
        for proc in [self._process, *self._process.children(recursive=True)]:
            with contextlib.suppress(self._psutil.Error):  # a child that just exited
                times = proc.cpu_times()
                used = times.user + times.system
                if first:
                    self._first[proc.pid] = used
                self._last[proc.pid] = (self._part(proc), used)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._sample()

    def report(self) -> dict[str, Any]:
        """CPU-seconds by part, and the cores they kept busy on average."""
        seconds: dict[str, float] = {}
        for pid, (part, used) in self._last.items():
            seconds[part] = seconds.get(part, 0.0) + used - self._first.get(pid, 0.0)
        elapsed = self._elapsed or (time.monotonic() - self._started)
        return {
            "cpu_seconds": {k: round(v, 1) for k, v in sorted(seconds.items())},
            "cpu_cores_busy": {k: round(v / elapsed, 2) for k, v in sorted(seconds.items())},
        }


def steady_span(
    curve: Sequence[tuple[float, int]],
) -> tuple[tuple[float, int], tuple[float, int]] | None:
    """The points of a ``(time, windows done)`` curve where 10% and 90% of its windows
    were done: the steady part of a run, without start-up and tail. None for fewer than
    10 windows or no time between the two."""
    if len(curve) < 2 or curve[-1][1] < 10:
        return None
    total = curve[-1][1]
    start = next(p for p in curve if p[1] >= 0.1 * total)
    end = next(p for p in curve if p[1] >= 0.9 * total)
    return (start, end) if end[0] > start[0] else None


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
