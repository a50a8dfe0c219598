"""Load on the captioning engine for the engine benchmark (``caption_throughput.py --engine
async``): windows kept in flight through the production bound, refinement probes sent
ahead of them, and what the pass measured (steady rate, each answer's parts in vLLM).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from benchmarks.sampling import BackgroundLoop, percentile, steady_span
from vidseek.indexer.engine import INGEST_PRIORITY, REFINE_PRIORITY, BoundedEngine
from vidseek.indexer.types import Window, WindowClip


def pixels(clip: WindowClip) -> tuple[int, int]:
    frames, height, width = clip.frames.shape[:3]
    return frames, height * width


class Prerendered:
    """``engine`` (an ``AsyncVllmEngine``) as a plain caption engine that hands each of
    ``clips`` its render made beforehand (``None``: rendered when submitted)."""

    def __init__(self, engine: Any, clips: Sequence[WindowClip], rendered: Sequence[Any]):
        self.engine = engine
        self._rendered = {id(clip): r for clip, r in zip(clips, rendered, strict=True)}

    @property
    def model_id(self) -> str:
        return str(self.engine.model_id)

    @property
    def stats(self) -> Any:
        return self.engine.stats

    def submit(self, clip: WindowClip, *, priority: int = INGEST_PRIORITY) -> Future[Any]:
        future: Future[Any] = self.engine.submit(
            clip, priority=priority, rendered=self._rendered.get(id(clip))
        )
        return future

    def close(self) -> None:
        self.engine.close()


def stream(
    engine: BoundedEngine,
    clips: Sequence[WindowClip],
    passes: int,
    answered_at: list[float] | None = None,
) -> tuple[list[Any], list[float]]:
    """Every window ``passes`` times through ``engine``, whose bound holds each back until
    an answer makes room. Returns the answers in submission order and the
    ``perf_counter`` time of each answer, in the order they came (appended to
    ``answered_at`` as they come, when given)."""
    answered_at = [] if answered_at is None else answered_at
    futures = []
    for n in range(len(clips) * passes):
        future = engine.submit(clips[n % len(clips)])
        future.add_done_callback(lambda _: answered_at.append(time.perf_counter()))
        futures.append(future)
    return [future.result() for future in futures], answered_at


PROFILE_FROM = 0.3
"""The share of a profiled pass's answers in before the profiler starts: the engine
is then past its first wave of prefills (``--in-flight`` windows at once)."""


def profiled_pass(
    source: Prerendered, clips: Sequence[WindowClip], passes: int, in_flight: int
) -> None:
    """A pass like a timed one, with vLLM's profiler started once :data:`PROFILE_FROM`
    of its answers are in and stopped at its end (vLLM's ``max_iterations`` usually
    stops it first). It is not timed: the profiler slows the engine."""
    bounded = BoundedEngine(source, in_flight or len(clips) * passes)
    answered_at: list[float] = []
    total = len(clips) * passes
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(stream, bounded, clips, passes, answered_at)
        while len(answered_at) < PROFILE_FROM * total and not running.done():
            time.sleep(0.05)
        source.engine.profile(True)
        try:
            running.result()
        finally:
            source.engine.profile(False)


def engine_parts(name: str, outputs: Sequence[Any]) -> dict[str, Any]:
    """Medians of where answers spent their time (``engine_seconds``: rendering, then vLLM
    with its stats on), and of the time between two of an answer's tokens: one engine
    step while it decodes."""
    parts = [(o.engine_seconds, o.output_tokens) for o in outputs if o.engine_seconds]
    if not parts:
        return {}
    report = {
        f"{name}_{part}_p50_s": _round(percentile([p.get(part, 0.0) for p, _ in parts], 50))
        for part in ("render", "queued", "prefill", "decode", "transit")
    }
    steps = [p["decode"] / (n - 1) * 1000 for p, n in parts if n > 1]
    report[f"{name}_step_p50_ms"] = _round(percentile(steps, 50))
    return report


Bound = tuple[float, int]
"""A point in a pass: ``(time, answers in by then)``."""


def steady_bounds(answered_at: Sequence[float]) -> tuple[Bound, Bound] | None:
    """``((time, answers), (time, answers))`` at 10% and 90% of a pass's answers
    (:func:`~benchmarks.sampling.steady_span`), or ``None`` when too few came."""
    return steady_span([(t, n) for n, t in enumerate(sorted(answered_at), start=1)])


def steady_rate(answered_at: Sequence[float], window_seconds: float, gpu: Any) -> dict[str, Any]:
    """Windows a second, video-hours per GPU-hour and GPU busy fraction between the
    answers at 10% and 90% of the pass (the engine filling and emptying left out), as
    the ingest benchmark takes its steady part (:func:`~benchmarks.sampling.steady_span`)."""
    span = steady_bounds(answered_at)
    if span is None:
        return {}
    (t0, n0), (t1, n1) = span
    rate = (n1 - n0) / (t1 - t0)
    return {
        "steady_s": round(t1 - t0, 2),
        "steady_windows_per_s": round(rate, 2),
        "steady_video_hours_per_gpu_hour": round(rate * window_seconds, 1),
        "steady_gpu_busy": gpu.busy_between(t0, t1),
    }


REFINE_QUERY = "a person in a red jacket opens the door of a car"
REFINE_FPS = 2.0
REFINE_SIZE = (352, 640)  # a 360p source within the server's 640x360 refinement pixels


def refine_clip(seconds: float, index: int, seed: int = 1) -> WindowClip:
    """A search refinement's grounding clip as the server makes it by default: ``seconds``
    of a 30 fps source at 2 fps, 640x352 frames, absolute frame indices, a query."""
    count = max(2, round(seconds * REFINE_FPS))
    count += count % 2
    source_fps = 30.0
    start = 600.0 + 37.0 * index  # moments somewhere in a long video
    indices = tuple(round((start + k / REFINE_FPS) * source_fps) for k in range(count))
    rng = np.random.default_rng(seed + index)
    frames = rng.integers(0, 256, size=(count, *REFINE_SIZE, 3), dtype=np.uint8)
    window = Window(
        index=index,
        start_seconds=start,
        end_seconds=start + count / REFINE_FPS,
        frame_indices=indices,
        query=REFINE_QUERY,
    )
    return WindowClip(window=window, frames=frames, fps=source_fps, total_frames=7200 * 30)


class RefineProber(BackgroundLoop):
    """Sends a refinement's grounding clip ahead of the windows every ``--refine-interval``
    seconds, one at a time, while the pass runs, and times each from submission to
    answer (rendering included: the server renders a refinement when it is asked)."""

    def __init__(self, engine: Any, args: argparse.Namespace) -> None:
        super().__init__()
        self._engine = engine
        self._interval = args.refine_interval
        self._seconds = args.refine_seconds
        self.sent_at: list[float] = []
        self.latencies: list[float] = []
        self.outputs: list[Any] = []

    def _wanted(self) -> bool:
        return self._interval > 0

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self._interval):
            clip = refine_clip(self._seconds, n)
            n += 1
            started = time.perf_counter()
            output = self._engine.submit(clip, priority=REFINE_PRIORITY).result()
            self.sent_at.append(started)
            self.latencies.append(time.perf_counter() - started)
            self.outputs.append(output)

    def report(self, answered_at: Sequence[float] = ()) -> dict[str, Any]:
        """The probes' latencies, over the whole pass and over the probes sent in its
        steady part (:func:`steady_bounds` of the windows' ``answered_at``), where the
        engine holds ``--in-flight`` windows at every stage of their answers."""
        if self._interval <= 0:
            return {}
        span = steady_bounds(answered_at)
        steady = [
            latency
            for sent, latency in zip(self.sent_at, self.latencies, strict=True)
            if span is not None and span[0][0] <= sent <= span[1][0]
        ]
        return {
            "refine_probes": len(self.latencies),
            "refine_interval_s": self._interval,
            "refine_frames": refine_clip(self._seconds, 0).frames.shape[0],
            "refine_p50_s": _round(percentile(self.latencies, 50)),
            "refine_p99_s": _round(percentile(self.latencies, 99)),
            "refine_max_s": _round(max(self.latencies, default=None)),
            "refine_steady_probes": len(steady),
            "refine_steady_p50_s": _round(percentile(steady, 50)),
            "refine_steady_p99_s": _round(percentile(steady, 99)),
            "refine_latencies_s": [round(x, 2) for x in self.latencies],
            # Each probe's parts (render, queued, prefill, decode), in the probes' order.
            "refine_parts_s": [
                {k: round(v, 3) for k, v in o.engine_seconds.items()} if o.engine_seconds else None
                for o in self.outputs
            ],
            "refine_output_tokens_mean": (
                round(sum(o.output_tokens for o in self.outputs) / len(self.outputs), 1)
                if self.outputs
                else None
            ),
            **engine_parts("refine", self.outputs),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
