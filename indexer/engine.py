"""The captioning engine: one model that every ingest job and search refinement share.

A :class:`CaptionEngine` takes one window at a time (:meth:`CaptionEngine.submit`) and
answers with a future, so callers keep many windows in flight and handle each answer
when it arrives, in any order. Engines:

- :class:`~vidseek.indexer.engine_vllm.AsyncVllmEngine`: vLLM's async engine in this
  process. Every submitted window is a vLLM request at once; vLLM's continuous batching
  keeps the GPU full, its renderer threads preprocess windows in parallel, and its
  priority scheduler serves refinement before ingestion.
- :class:`~vidseek.indexer.captioner_openai.OpenAICaptioner`: concurrent HTTP requests to
  one or more OpenAI-compatible servers (``vllm serve``).
- :class:`BatchingEngine`: any synchronous :class:`~vidseek.indexer.captioner.Captioner`
  (the transformers backend, test fakes). One thread takes up to ``max_batch`` waiting
  windows, most urgent first, per ``describe`` call.

:class:`BoundedEngine` puts a cap on the ingestion windows in flight: a caller that
submits past it waits until an answer comes back (backpressure, so decoded frames never
pile up in memory when the model is slower than decoding). Refinement is never held
back by the cap. With ``refine_hold`` it also holds new ingestion windows back while a
refinement is in the engine, for at most that many seconds: vLLM's priority puts a
refinement in the next step, but each of its answer's tokens takes a whole step, and
in an engine kept full most of a step is the prompts of windows that have just come
in. No new window enters while it holds; windows already sent go on (some still
rendering, some waiting in vLLM or part-way through their prompts).

Priorities follow vLLM: a lower number is served first. :data:`REFINE_PRIORITY` (0) goes
ahead of :data:`INGEST_PRIORITY` (1).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from vidseek.indexer.captioner import Captioner
from vidseek.indexer.types import CaptionOutput, WindowClip

__all__ = [
    "INGEST_PRIORITY",
    "REFINE_PRIORITY",
    "BatchingEngine",
    "BoundedEngine",
    "CaptionEngine",
    "EngineStats",
    "as_engine",
]

log = logging.getLogger(__name__)

REFINE_PRIORITY = 0
INGEST_PRIORITY = 1


@dataclass
class EngineStats:
    """What an engine has done so far (seconds summed over windows; thread-safe updates)."""

    submitted: int = 0
    completed: int = 0
    failed: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    """The most windows the engine held at once."""
    preprocess_s: float = 0.0
    """Time spent turning windows into model inputs (prompt, vision patches)."""
    generate_s: float = 0.0
    """Time from a window entering the model's queue to its answer."""
    prompt_tokens: int = 0
    output_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def started(self) -> None:
        with self._lock:
            self.submitted += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def finished(
        self,
        output: CaptionOutput | None,
        *,
        preprocess_s: float = 0.0,
        generate_s: float = 0.0,
    ) -> None:
        with self._lock:
            self.in_flight -= 1
            self.preprocess_s += preprocess_s
            self.generate_s += generate_s
            if output is None:
                self.failed += 1
                return
            self.completed += 1
            self.prompt_tokens += output.prompt_tokens
            self.output_tokens += output.output_tokens

    def snapshot(self) -> dict[str, float]:
        """The counters as a plain dict."""
        with self._lock:
            return {
                "submitted": self.submitted,
                "completed": self.completed,
                "failed": self.failed,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "preprocess_s": round(self.preprocess_s, 3),
                "generate_s": round(self.generate_s, 3),
                "prompt_tokens": self.prompt_tokens,
                "output_tokens": self.output_tokens,
            }


@runtime_checkable
class CaptionEngine(Protocol):
    """Captions windows submitted one at a time by many threads."""

    @property
    def model_id(self) -> str:
        """The model name recorded with every event."""
        ...

    @property
    def stats(self) -> EngineStats:
        """Counters of what the engine has done."""
        ...

    def submit(self, clip: WindowClip, *, priority: int = INGEST_PRIORITY) -> Future[CaptionOutput]:
        """Queue one window; the future holds its raw answer or the engine's failure."""
        ...

    def close(self) -> None:
        """Stop the engine; windows still waiting fail with RuntimeError."""
        ...


class BatchingEngine:
    """A synchronous captioner as an engine: one thread, batches of waiting windows.

    Waiting windows are taken most urgent first (lowest priority number, then oldest),
    up to ``max_batch`` per :meth:`Captioner.describe` call; windows of different
    priorities are not mixed in one call, so a refinement never waits for ingestion
    windows queued after it. A failing call fails every window of its batch.
    """

    def __init__(self, captioner: Captioner, *, max_batch: int = 4) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.captioner = captioner
        self.max_batch = max_batch
        self._stats = EngineStats()
        self._heap: list[tuple[int, int, WindowClip, Future[CaptionOutput]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="caption-batches", daemon=True)
        self._thread.start()

    @property
    def model_id(self) -> str:
        return self.captioner.model_id

    @property
    def stats(self) -> EngineStats:
        return self._stats

    def submit(self, clip: WindowClip, *, priority: int = INGEST_PRIORITY) -> Future[CaptionOutput]:
        future: Future[CaptionOutput] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the captioning engine is closed")
            heapq.heappush(self._heap, (priority, next(self._seq), clip, future))
            self._stats.started()
            self._cond.notify()
        return future

    def _next_batch(self) -> list[tuple[WindowClip, Future[CaptionOutput]]] | None:
        with self._cond:
            while not self._heap and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            priority = self._heap[0][0]
            batch: list[tuple[WindowClip, Future[CaptionOutput]]] = []
            while self._heap and len(batch) < self.max_batch and self._heap[0][0] == priority:
                _, _, clip, future = heapq.heappop(self._heap)
                if future.set_running_or_notify_cancel():
                    batch.append((clip, future))
                else:
                    self._stats.finished(None)
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            if not batch:
                continue
            started = time.perf_counter()
            try:
                outputs = self.captioner.describe([clip for clip, _ in batch])
                if len(outputs) != len(batch):
                    raise RuntimeError(
                        f"captioner returned {len(outputs)} outputs for {len(batch)} windows"
                    )
            except BaseException as exc:
                for _, future in batch:
                    self._stats.finished(None)
                    future.set_exception(exc)
                continue
            share = (time.perf_counter() - started) / len(batch)
            for (_, future), output in zip(batch, outputs, strict=True):
                self._stats.finished(output, generate_s=share)
                future.set_result(output)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            waiting, self._heap = self._heap, []
            self._cond.notify_all()
        for _, _, _, future in waiting:
            self._stats.finished(None)
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError("the captioning engine is closed"))
        self._thread.join()
        self.captioner.close()


class BoundedEngine:
    """An engine with at most ``max_in_flight`` ingestion windows in it at once.

    :meth:`submit` of an ingestion window blocks while the cap is reached, until an
    answer frees a place. Windows of a more urgent priority (refinement) pass at once.

    ``refine_hold`` (seconds, 0: off): a refinement submitted while no hold is on starts
    one, and :meth:`submit` of an ingestion window then also waits until every
    refinement in the engine has its answer, or the hold has lasted ``refine_hold``
    seconds. So that back-to-back refinements cannot starve ingestion, a new hold starts
    only once ingestion has run for as long as the last hold lasted.
    """

    def __init__(
        self, inner: CaptionEngine, max_in_flight: int, *, refine_hold: float = 0.0
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if not 0 <= refine_hold <= threading.TIMEOUT_MAX:  # NaN and infinity refused
            raise ValueError(f"refine_hold must be >= 0 seconds and finite, got {refine_hold}")
        self.inner = inner
        self.max_in_flight = max_in_flight
        self.refine_hold = refine_hold
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._hold = threading.Condition()
        self._refining = 0  # refinement windows in the engine
        # The current or last hold; it is on while _refining > 0 and before _hold_end.
        self._hold_start = self._hold_end = 0.0
        self.holds = 0  # holds started, for tests and metrics

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def stats(self) -> EngineStats:
        return self.inner.stats

    def submit(self, clip: WindowClip, *, priority: int = INGEST_PRIORITY) -> Future[CaptionOutput]:
        if priority < INGEST_PRIORITY:
            return self._submit_refinement(clip, priority)
        self._slots.acquire()
        try:
            self._wait_for_hold()  # after the slot: a window that waited for it waits here too
            future = self.inner.submit(clip, priority=priority)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def _submit_refinement(self, clip: WindowClip, priority: int) -> Future[CaptionOutput]:
        if not self.refine_hold:
            return self.inner.submit(clip, priority=priority)
        with self._hold:
            now = time.monotonic()
            self._refining += 1
            held_last = self._hold_end - self._hold_start
            if not self._holding(now) and now >= self._hold_end + held_last:
                self._hold_start, self._hold_end = now, now + self.refine_hold
                self.holds += 1
        try:
            future = self.inner.submit(clip, priority=priority)
        except BaseException:
            self._refinement_done()
            raise
        future.add_done_callback(lambda _: self._refinement_done())
        return future

    def _refinement_done(self) -> None:
        with self._hold:
            self._refining -= 1
            if self._refining == 0:
                self._hold_end = min(self._hold_end, time.monotonic())  # ends the hold
                self._hold.notify_all()

    def _holding(self, now: float) -> bool:
        return self._refining > 0 and now < self._hold_end

    def _wait_for_hold(self) -> None:
        if not self.refine_hold:
            return
        with self._hold:
            while self._holding(now := time.monotonic()):
                self._hold.wait(self._hold_end - now)

    def close(self) -> None:
        self.inner.close()


def as_engine(captioner: Captioner | CaptionEngine, *, max_batch: int = 4) -> CaptionEngine:
    """``captioner`` itself if it is an engine, else a :class:`BatchingEngine` around it."""
    if isinstance(captioner, CaptionEngine):
        return captioner
    return BatchingEngine(captioner, max_batch=max_batch)
