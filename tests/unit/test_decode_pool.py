"""Which waiting call a decode pool's idle process takes: oldest first, or in a pool mixing
a hardware decoder with CPU ones, the costliest to the first and the cheapest to the
others, with no call passed over for ever; and ingestion's calls say what they cost.

The calls here never touch their worker's process (none is started): each records the
backend of the process that took it and waits until the test lets it finish, so the
order in which processes become idle is the test's.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.fakes import ColourCaptioner
from tests.support.videos import write_video
from vidseek.indexer.decode_pool import DecodePool
from vidseek.indexer.pipeline import IngestConfig, Ingestor
from vidseek.indexer.planner import PlanConfig
from vidseek.indexer.video import PyAVBackend
from vidseek.storage.store import Store


class OnGpu(PyAVBackend):
    """A backend that prefers large windows (as NVDEC), one process of one request."""

    name = "on-gpu"
    max_processes = 1
    prefers_large_windows = True


class Calls:
    """Calls that record (name, backend) when a process takes them, then wait for
    :meth:`finish`."""

    def __init__(self, pool: DecodePool) -> None:
        self.pool = pool
        self.taken: queue.Queue[tuple[str, str]] = queue.Queue()
        self.gates: dict[str, threading.Event] = {}
        self.by: dict[str, str] = {}

    def submit(self, name: str, cost: float = 0.0) -> Any:
        gate = self.gates[name] = threading.Event()

        def fn(worker: Any) -> str:
            self.taken.put((name, worker.backend.name))
            assert gate.wait(10)
            return name

        return self.pool.submit(fn, cost=cost)

    def next_taken(self) -> tuple[str, str]:
        name, backend = self.taken.get(timeout=10)
        self.by[name] = backend
        return name, backend

    def finish(self, name: str) -> None:
        self.gates[name].set()


@pytest.fixture
def pools() -> Any:
    made: list[tuple[DecodePool, Calls]] = []

    def make(backend: Any, processes: int, **options: Any) -> Calls:
        calls = Calls(DecodePool(backend, processes, **options))
        made.append((calls.pool, calls))
        return calls

    yield make
    for pool, calls in made:
        for gate in calls.gates.values():
            gate.set()
        pool.close()


def _busy(calls: Calls, size: int) -> list[str]:
    """Every process of the pool busy with a call of its own ("busy-0", ...)."""
    names = [f"busy-{k}" for k in range(size)]
    for name in names:
        calls.submit(name)
    for _ in names:
        calls.next_taken()
    return names


@pytest.mark.parametrize(
    ("backend", "options"),
    [
        ("pyav", {"lookahead": 2}),
        ([OnGpu, "pyav"], {"lookahead": 0}),
        ([OnGpu, "pyav"], {}),
    ],
    ids=["one backend", "mixed, lookahead 0", "mixed, by default"],
)
def test_a_pool_takes_calls_oldest_first_whatever_they_cost(pools, backend, options):
    calls = pools(backend, 2, **options)
    busy = _busy(calls, 2)
    for name, cost in [("small", 1), ("large", 9), ("middle", 5)]:
        calls.submit(name, cost)
    order = []
    # A process preferring large windows, if any, is idle first: it would take "large".
    for name in [*sorted(busy, key=lambda n: calls.by[n] != "on-gpu"), "small"]:
        calls.finish(name)
        order.append(calls.next_taken()[0])
    assert order == ["small", "large", "middle"]


def test_a_negative_lookahead_is_refused_naming_it():
    with pytest.raises(ValueError, match="lookahead must be >= 0"):
        DecodePool("pyav", 1, lookahead=-1)


def test_in_a_mixed_pool_the_hardware_decoder_takes_the_costliest_and_the_cpu_the_cheapest(
    pools,
):
    calls = pools([OnGpu, "pyav"], 3, lookahead=2)  # one OnGpu process, two PyAV
    busy = _busy(calls, 3)
    on_gpu = next(n for n in busy if calls.by[n] == "on-gpu")
    on_cpu = [n for n in busy if calls.by[n] == "pyav"]
    for name, cost in [("s1", 1), ("L1", 9), ("s2", 1), ("L2", 9), ("s3", 1)]:
        calls.submit(name, cost)

    calls.finish(on_gpu)
    assert calls.next_taken() == ("L1", "on-gpu")  # the costliest; of equals the oldest
    calls.finish(on_cpu[0])
    assert calls.next_taken() == ("s1", "pyav")  # the cheapest; of equals the oldest
    calls.finish(on_cpu[1])
    assert calls.next_taken() == ("s2", "pyav")
    calls.finish("L1")
    assert calls.next_taken() == ("L2", "on-gpu")
    calls.finish("s1")
    assert calls.next_taken() == ("s3", "pyav")


def test_a_call_passed_over_as_many_times_as_the_pool_runs_decodes_is_taken_next(pools):
    calls = pools([OnGpu, "pyav"], 2, lookahead=2)  # size 2: one OnGpu, one PyAV
    busy = _busy(calls, 2)
    on_cpu = next(n for n in busy if calls.by[n] == "pyav")
    calls.submit("large", 9)  # the oldest; the OnGpu process stays busy
    for k in range(4):
        calls.submit(f"small-{k}", 1)
    taken = []
    for name in [on_cpu, "small-0", "small-1"]:
        calls.finish(name)
        taken.append(calls.next_taken())
    # Passed over twice (the pool's size), the large call goes to the next idle process.
    assert taken == [("small-0", "pyav"), ("small-1", "pyav"), ("large", "pyav")]
    calls.finish("large")
    assert calls.next_taken() == ("small-2", "pyav")


def test_a_process_looks_only_as_far_down_the_queue_as_the_lookahead(pools):
    calls = pools([OnGpu, "pyav"], 2, lookahead=1)  # looks at the oldest 2 calls
    busy = _busy(calls, 2)
    on_gpu = next(n for n in busy if calls.by[n] == "on-gpu")
    for name, cost in [("s1", 1), ("s2", 2), ("large", 9)]:
        calls.submit(name, cost)
    calls.finish(on_gpu)
    assert calls.next_taken() == ("s2", "on-gpu")  # "large" is third: out of its sight


def test_a_call_cancelled_while_it_waits_is_skipped_and_a_failing_one_fails_alone(pools):
    calls = pools("pyav", 1)
    (busy,) = _busy(calls, 1)
    cancelled = calls.submit("cancelled")
    assert cancelled.cancel()

    def fail(worker: Any) -> None:
        raise SystemExit("a call's own exit")

    failing = calls.pool.submit(fail)
    after = calls.submit("after")
    calls.finish(busy)
    assert calls.next_taken() == ("after", "pyav")  # the slot lived through the failure
    calls.finish("after")
    assert after.result(10) == "after" and cancelled.cancelled()
    with pytest.raises(SystemExit, match="own exit"):
        failing.result(10)


def test_an_idle_process_holds_on_to_no_result(pools):
    """A call's frames are freed once its caller lets go of them, not kept by the slot
    that decoded them until its next call."""
    calls = pools("pyav", 1)

    class Frames:
        pass

    made: list[weakref.ref[Frames]] = []

    def decode(worker: Any) -> Frames:
        frames = Frames()
        made.append(weakref.ref(frames))
        return frames

    future = calls.pool.submit(decode)
    assert isinstance(future.result(10), Frames)
    del future
    deadline = time.monotonic() + 5
    while made[0]() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert made[0]() is None


def test_closing_a_pool_waits_for_running_calls_and_cancels_the_waiting(pools):
    calls = pools("pyav", 1)
    (busy,) = _busy(calls, 1)
    waiting = calls.submit("waiting", 1)
    closing = threading.Thread(target=calls.pool.close)
    closing.start()
    closing.join(0.3)
    assert closing.is_alive()  # the running call holds it
    calls.finish(busy)
    closing.join(10)
    assert not closing.is_alive()
    assert waiting.cancelled()
    with pytest.raises(RuntimeError, match="closed"):
        calls.pool.submit(lambda worker: None)


class RecordingPool(DecodePool):
    """A decode pool that notes what each call said it costs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.costs: list[float] = []

    def submit(self, fn: Callable[[Any], Any], *, cost: float = 0.0) -> Any:
        self.costs.append(cost)
        return super().submit(fn, cost=cost)


def test_ingestion_gives_each_window_its_pixels_times_its_seconds_as_its_cost(
    tmp_path: Path, embedder
):
    video = write_video(tmp_path / "v.mp4", seconds=6, width=160, height=96)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "faiss.index", embedder.dim)
    pool = RecordingPool("pyav", 1)
    plan = PlanConfig(sample_fps=2.0, window_seconds=4.0, max_frame_pixels=160 * 96)
    ingestor = Ingestor(
        store, ColourCaptioner(), embedder, IngestConfig(plan=plan), decode_pool=pool
    )
    try:
        result = ingestor.ingest(video)
    finally:
        ingestor.close()
        pool.close()
    assert result.progress.windows_total == 2
    # The probe first (no cost), then the windows of 4 s and 2 s of 160x96.
    assert pool.costs == [0.0, 160 * 96 * 4.0, 160 * 96 * 2.0]
