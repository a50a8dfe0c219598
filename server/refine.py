"""Second-level grounding of search moments (``refine=true``).

Search finds moments from stored event descriptions, whose spans are as coarse as
the captioning (1 fps, events of several seconds). Refinement looks again: for each
of the top moments it decodes the clip ``[start - pad, end + pad]`` (clamped to the
video) at a higher rate (``fps``, 2 by default), with the **absolute** source frame
indices and the source fps, so the model reads absolute ``<t seconds>`` tags; it then
asks the captioning model where the query happens in that clip (a grounding window:
:attr:`~vidseek.indexer.types.Window.query`, answer constrained to
``{"start": s, "end": e}``). All clips are in the engine at once.

A refined moment gets the model's span (clamped to its clip) and keeps the span it
had as ``coarse_start_seconds`` / ``coarse_end_seconds``. Refinement is best effort
and bounded:

- in count: only the first ``max_moments`` moments are refined;
- in time: nothing waits past ``min(deadline, now + timeout)``. Loading the model,
  decoding and the model call run in the background and the request waits for
  them with the remaining time. The moments' clips decode at once, one per process
  of this refiner's own decoder pool (never the ingest jobs'), with the remaining
  time as their deadline, and each goes to the engine, ahead of ingestion, as soon
  as it is decoded. Work that overruns finishes in the background and its answer
  is dropped;
- in failure: a missing or undecodable video, an unavailable or failing model, an
  unreadable, empty or inverted span all leave the moment coarse (logged), never
  an error.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar

from vidseek.indexer.decode_pool import DecodePool
from vidseek.indexer.engine import REFINE_PRIORITY, CaptionEngine
from vidseek.indexer.parse import parse_span
from vidseek.indexer.types import CaptionOutput, VideoInfo, Window, WindowClip
from vidseek.indexer.video import DecodeWorker, resized_shape, sample_indices, side_backend
from vidseek.server.search import MomentResult
from vidseek.storage.errors import CaptionerUnavailable
from vidseek.storage.store import Store

__all__ = ["RefineConfig", "Refiner"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RefineConfig:
    """How moments are refined (see the ``refine_*`` settings for their help texts)."""

    fps: float = 2.0
    pad_seconds: float = 5.0
    max_pixels: int = 640 * 360
    max_frames: int = 128
    max_moments: int = 3
    timeout: float = 30.0
    decode_backend: str = "pyav"

    def __post_init__(self) -> None:
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"fps must be a positive finite number, got {self.fps}")
        if not self.pad_seconds >= 0:
            raise ValueError(f"pad_seconds must be >= 0, got {self.pad_seconds}")
        if self.max_pixels < 32 * 32:
            raise ValueError(f"max_pixels must be >= 1024, got {self.max_pixels}")
        if self.max_frames < 2:
            raise ValueError(f"max_frames must be >= 2, got {self.max_frames}")
        if self.max_moments < 0:
            raise ValueError(f"max_moments must be >= 0, got {self.max_moments}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout}")


class _Late(Exception):
    """A step did not finish before the refinement deadline."""


class Refiner:
    """Refines search moments to the second with the captioning model (see the module docstring).

    ``captioner`` returns the shared captioning engine, loading it on first use (e.g.
    :meth:`~vidseek.server.jobs.JobRunner.captioner`); it is called on a background
    thread, so a model that takes minutes to load only makes early requests coarse.
    ``decode_pool`` is the pool of decoder processes to use (default: a new one of
    ``config.decode_backend``, or PyAV beside NVDEC, with a process per refined
    moment, closed by :meth:`close`).
    """

    def __init__(
        self,
        store: Store,
        captioner: Callable[[], CaptionEngine],
        config: RefineConfig | None = None,
        *,
        decode_pool: DecodePool | None = None,
    ) -> None:
        self.store = store
        self.config = config or RefineConfig()
        self._captioner_provider = captioner
        self._owns_pool = decode_pool is None
        self._pool = decode_pool or DecodePool(
            side_backend(self.config.decode_backend), max(1, self.config.max_moments)
        )
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refine-load")
        self._load_lock = threading.Lock()
        self._load: Future[CaptionEngine] | None = None

    def close(self) -> None:
        """Stop the background loading (work in flight finishes) and the decoder processes."""
        self._loader.shutdown(wait=False, cancel_futures=True)
        if self._owns_pool:
            self._pool.close()

    def refine(
        self, query: str, moments: Sequence[MomentResult], deadline: float
    ) -> list[MomentResult]:
        """One moment per input, in order: refined where possible, else as given.

        ``deadline`` is a :func:`time.monotonic` instant; the call returns by then
        (or ``timeout`` seconds from now, if sooner). Never raises for model,
        decoding or storage trouble: the moments concerned stay coarse.
        """
        result = list(moments)
        latest = time.monotonic() + self.config.timeout
        deadline = min(deadline, latest) if not math.isnan(deadline) else latest
        try:
            self._refine(query, result, deadline)
        except (_Late, CaptionerUnavailable) as late:
            log.warning("refinement: %s; moments left coarse", late)
        except Exception:  # best effort by contract: the coarse moments are a valid answer
            log.exception("refinement failed; moments left coarse")
        return result

    # ---- steps ------------------------------------------------------------------

    def _refine(self, query: str, result: list[MomentResult], deadline: float) -> None:
        """Replace entries of ``result`` by refined moments."""
        chosen = list(range(min(self.config.max_moments, len(result))))
        if not chosen or not query.strip():
            return
        if time.monotonic() >= deadline:
            raise _Late("the deadline had already passed")
        loading = self._captioner_future()  # loads the model while frames decode
        decoding = {
            self._pool.submit(partial(self._clip, query, i, result[i], deadline)): i for i in chosen
        }
        answers: dict[Future[CaptionOutput], tuple[int, WindowClip]] = {}
        waiting = set(decoding)
        try:
            while waiting:
                done, waiting = wait(
                    waiting,
                    timeout=max(0.0, deadline - time.monotonic()),
                    return_when=FIRST_COMPLETED,
                )
                if not done:
                    log.warning(
                        "refinement: %d of %d clips did not decode in time; left coarse",
                        len(waiting),
                        len(decoding),
                    )
                    break
                for future in done:
                    position = decoding[future]
                    try:
                        clip = future.result()
                    except Exception as exc:  # a deleted, moved or damaged file: coarse
                        log.warning(
                            "refinement: moment %d of video %s not decoded: %s",
                            position,
                            result[position].video_id,
                            exc,
                        )
                        continue
                    engine = self._wait(loading, deadline, "the model did not load in time")
                    answers[engine.submit(clip, priority=REFINE_PRIORITY)] = (position, clip)
            if not answers:
                return
            _, late = wait(answers, timeout=max(0.0, deadline - time.monotonic()))
            if late:
                log.warning(
                    "refinement: the model did not answer %d of %d clips in time; "
                    "those moments left coarse",
                    len(late),
                    len(answers),
                )
            for answer, (position, clip) in answers.items():
                if answer in late:
                    continue
                try:
                    result[position] = _refined(result[position], clip, answer.result())
                except Exception as exc:  # a failed model call leaves its moment coarse
                    log.warning("refinement: moment %d not answered: %s", position, exc)
        finally:
            # What overran is not waited for: queued decodes and model calls are dropped.
            for queued in waiting:
                queued.cancel()
            for answer in answers:
                answer.cancel()

    def _captioner_future(self) -> Future[CaptionEngine]:
        """The (possibly finished) loading of the captioner; a failed load is retried."""
        with self._load_lock:
            load = self._load
            if load is None or (load.done() and load.exception() is not None):
                load = self._loader.submit(self._captioner_provider)
                self._load = load
            return load

    def _clip(
        self,
        query: str,
        position: int,
        moment: MomentResult,
        deadline: float,
        worker: DecodeWorker,
    ) -> WindowClip:
        """The padded clip around a moment at the refinement rate, as a grounding window.

        Runs on a process of the decode pool (``worker``); raises if the video is gone,
        damaged, or there is no time left.
        """
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise _Late(f"no time left to decode moment {position}")
        video = self.store.get_video(moment.video_id)
        cfg = self.config
        start = max(0.0, moment.start_seconds - cfg.pad_seconds)
        end = min(video.duration, moment.end_seconds + cfg.pad_seconds)
        if not end > start:
            raise ValueError(f"empty clip [{start:g}, {end:g}] (video of {video.duration:g} s)")
        # A long moment is sampled more sparsely so that its clip keeps to max_frames.
        fps = min(cfg.fps, cfg.max_frames / (end - start))
        info = VideoInfo(
            path=video.uri,
            fps=video.fps,
            frame_count=video.frame_count,
            duration=video.duration,
            width=video.width,
            height=video.height,
        )
        indices = sample_indices(info, start, end, fps)
        indices = indices[: cfg.max_frames - cfg.max_frames % 2]  # even: frames go in pairs
        if not indices:
            raise ValueError(f"no frames sampled in [{start:g}, {end:g}]")
        height, width = resized_shape(video.width, video.height, cfg.max_pixels)
        frames = worker.read(video.uri, indices, height, width, timeout=timeout)
        window = Window(
            index=position,
            start_seconds=start,
            end_seconds=end,
            frame_indices=tuple(indices),
            query=query,
        )
        return WindowClip(
            window=window, frames=frames, fps=video.fps, total_frames=video.frame_count
        )

    @staticmethod
    def _wait(future: Future[T], deadline: float, late: str) -> T:
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            raise _Late(late) from None


def _refined(moment: MomentResult, clip: WindowClip, output: CaptionOutput) -> MomentResult:
    """The moment with the model's span, or unchanged if the answer gives none."""
    window = clip.window
    span = parse_span(output.text, window.start_seconds, window.end_seconds)
    if span.start_seconds is None or span.end_seconds is None:
        log.info(
            "refinement: no usable span for moment %d of video %s (%s)",
            window.index,
            moment.video_id,
            span.error,
        )
        return moment
    return replace(
        moment,
        start_seconds=span.start_seconds,
        end_seconds=span.end_seconds,
        coarse_start_seconds=(
            moment.coarse_start_seconds if moment.refined else moment.start_seconds
        ),
        coarse_end_seconds=moment.coarse_end_seconds if moment.refined else moment.end_seconds,
        refined=True,
    )
