"""The ingestion pipeline: uri -> probe -> plan -> decode -> caption -> parse -> embed -> commit.

A window is the unit of work and of commit: each window's events are committed
in one transaction as soon as its answer arrives, in any order, so an interrupted
ingest resumes at the uncommitted windows, and re-running an ingest of the same
content commits nothing twice (window and event ids derive from the content hash).
Windows decode in parallel on a pool of decoder processes, a few ahead of the
engine, and go to the captioning engine as soon as they are decoded; at most
``max_in_flight`` of one video wait for answers (backpressure: decoding stops
while the engine is full, so frames never pile up in memory).

Damaged video: a window is captioned from the frames that decode (the model
sees their real absolute timestamps; an odd frame out is dropped, since
Qwen3-VL takes frames in pairs). A window with fewer than two decodable frames
is *skipped*: counted in ``IngestProgress.windows_skipped``, logged with the
missing frame range, and not committed, so a later run of the same file tries
it again.

Overlapping windows (``overlap_seconds > 0``) see the same stretch twice. An
event that repeats an already committed event of the same video (both ends within
:func:`span_tolerance`, text near-identical, see :func:`drop_duplicates`) is
dropped, with a reason in the window's ``dropped`` list. Answers commit in the
order they arrive, so of two overlapping windows the one committed second drops
the repeat.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from vidseek.indexer.captioner import Captioner
from vidseek.indexer.decode_pool import DecodePool
from vidseek.indexer.embedder import Embedder
from vidseek.indexer.engine import CaptionEngine, as_engine
from vidseek.indexer.parse import parse_events
from vidseek.indexer.planner import PlanConfig, WindowPlan, plan_windows
from vidseek.indexer.prompt import PROMPT_VERSION
from vidseek.indexer.types import CaptionOutput, ParsedEvent, VideoInfo, Window, WindowClip
from vidseek.indexer.video import DecodeWorker, probe
from vidseek.storage.errors import InvalidArgument, NotFound
from vidseek.storage.store import EventRecord, NewEvent, NewWindow, Store, window_id_for

__all__ = [
    "IngestConfig",
    "IngestProgress",
    "IngestResult",
    "Ingestor",
    "StageTimes",
    "content_hash",
    "drop_duplicates",
    "register_video",
    "span_tolerance",
    "window_ids",
]

# Two descriptions at least this similar (difflib ratio of their normalised
# text) are the same description.
SAME_TEXT_RATIO = 0.85

log = logging.getLogger(__name__)


def register_video(store: Store, path: Path, chash: str, info: VideoInfo, collection: str) -> str:
    """The video's id, registered from ``path`` with its probed facts (see ``upsert_video``)."""
    return store.upsert_video(
        uri=str(path),
        content_hash=chash,
        duration=info.duration,
        fps=info.fps,
        width=info.width,
        height=info.height,
        frame_count=info.frame_count,
        collection=collection,
    )


def window_ids(chash: str, plan: WindowPlan, model: str) -> dict[int, int]:
    """Each planned window's id (by window index): content, span, model and prompt version."""
    return {
        w.index: window_id_for(chash, w.start_seconds, w.end_seconds, model, PROMPT_VERSION)
        for w in plan.windows
    }


def content_hash(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of the file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(chunk):
            h.update(data)
    return h.hexdigest()


@dataclass(frozen=True)
class IngestConfig:
    plan: PlanConfig = field(default_factory=PlanConfig)
    decode_backend: str = "pyav"
    decode_timeout: float = 120.0
    batch_windows: int = 4
    """Windows per call of a synchronous captioner (the transformers backend)."""
    max_in_flight: int = 32
    """Windows of one video sent to the engine and not yet committed."""
    decode_processes: int = 1
    """Decoder processes of an ingestor that has no shared pool."""
    decode_nice: int = 0
    """Niceness added to ingestion's decoder processes (0-19)."""
    decode_threads: int = 0
    """Threads each of ingestion's decodes uses (PyAV; 0: FFmpeg's choice)."""
    decode_lookahead: int = 0
    """How far down the decode pool's queue its processes look for the windows they
    prefer (see :class:`~vidseek.indexer.decode_pool.DecodePool`; 0: oldest first)."""
    decode_ahead: int = 0
    """Windows decoded ahead of the engine per video (0: the decode pool's size, at least 2)."""


@dataclass
class IngestProgress:
    """Counters reported to the job while a video is ingested."""

    video_id: str = ""
    plan: str = ""
    windows_total: int = 0
    windows_done: int = 0
    windows_unparsed: int = 0
    windows_skipped: int = 0
    windows_reused: int = 0
    """Windows an earlier run had already committed (not captioned again)."""
    events_indexed: int = 0
    gap: str = ""
    """The first decoding gap met ("" if none): which frames of which window did not decode."""


@dataclass(frozen=True)
class IngestResult:
    video_id: str
    progress: IngestProgress
    """Its ``windows_reused`` counts the windows an earlier run had committed."""
    interrupted: bool


class StageTimes:
    """Seconds spent in each stage of ingestion, summed over windows (thread-safe).

    ``decode``: in decoder processes; ``submit_wait``: a job waiting for room in the
    engine (backpressure); ``answer_wait``: a job with nothing to do but wait for
    answers; ``commit``: parsing, embedding and the SQL commit.

    Beside the seconds it counts what was committed (:meth:`counts`):
    ``windows_<status>`` per window status (and ``windows_skipped``) and
    ``video_seconds``, the length of the windows committed. ``decode`` is also kept
    by decoder backend (:meth:`decoders`), which tells what each part of a pool that
    mixes backends (``nvdec+pyav``) contributes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}
        self._counts: dict[str, float] = {}
        self._decoders: dict[str, tuple[int, float]] = {}

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._seconds[stage] = self._seconds.get(stage, 0.0) + seconds

    def add_decode(self, backend: str, seconds: float) -> None:
        """One window decoded by ``backend`` in ``seconds`` (also the ``decode`` stage)."""
        with self._lock:
            self._seconds["decode"] = self._seconds.get("decode", 0.0) + seconds
            windows, total = self._decoders.get(backend, (0, 0.0))
            self._decoders[backend] = (windows + 1, total + seconds)

    def decoders(self) -> dict[str, dict[str, float]]:
        """Windows decoded and their seconds, by decoder backend."""
        with self._lock:
            return {
                name: {"windows": windows, "seconds": round(seconds, 3)}
                for name, (windows, seconds) in sorted(self._decoders.items())
            }

    def count(self, name: str, amount: float = 1.0) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0.0) + amount

    def snapshot(self) -> dict[str, float]:
        """Seconds by stage."""
        with self._lock:
            return {k: round(v, 3) for k, v in self._seconds.items()}

    def counts(self) -> dict[str, float]:
        """What was committed (see the class docstring)."""
        with self._lock:
            return dict(self._counts)


class Ingestor:
    """Runs the pipeline for one video at a time against a store.

    ``captioner`` is a :class:`~vidseek.indexer.engine.CaptionEngine` (shared with other
    jobs) or a plain captioner, which gets an engine of its own that batches up to
    ``config.batch_windows`` windows per call. ``decode_pool`` is shared too; without
    one the ingestor starts its own of ``config.decode_processes`` processes.
    """

    def __init__(
        self,
        store: Store,
        captioner: Captioner | CaptionEngine,
        embedder: Embedder,
        config: IngestConfig,
        *,
        decode_pool: DecodePool | None = None,
        timings: StageTimes | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config
        self._owns_engine = not isinstance(captioner, CaptionEngine)
        self.engine = as_engine(captioner, max_batch=config.batch_windows)
        self._owns_pool = decode_pool is None
        self.decode_pool = decode_pool or DecodePool(
            config.decode_backend,
            max(1, config.decode_processes),
            nice=config.decode_nice,
            codec_threads=config.decode_threads,
            lookahead=config.decode_lookahead,
        )
        self.timings = timings or StageTimes()

    def close(self) -> None:
        """Stop what this ingestor started itself (its decoder processes, its engine)."""
        if self._owns_pool:
            self.decode_pool.close()
        if self._owns_engine:
            self.engine.close()

    def ingest(
        self,
        uri: str,
        *,
        on_progress: Callable[[IngestProgress], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        collection: str = "",
    ) -> IngestResult:
        """Index one video file into ``collection``; commits window by window.

        Windows go to the engine as soon as they are decoded, at most
        ``config.max_in_flight`` at a time, and each commits when its answer arrives,
        in whatever order answers come. ``should_stop`` is checked between windows:
        nothing more is sent, the windows in flight are committed, the rest are left
        for a later run (``interrupted=True``). If the engine fails a window, the
        windows in flight are still committed, then the failure is raised.
        """
        path = Path(uri)
        if not path.exists():
            raise NotFound(f"video file not found: {uri}")
        if not path.is_file():
            raise InvalidArgument(f"not a regular file: {uri}")
        info = self.decode_pool.submit(
            lambda worker: probe(str(path), timeout=self.config.decode_timeout, worker=worker)
        ).result()
        chash = content_hash(path)
        video_id = register_video(self.store, path.resolve(), chash, info, collection)
        plan = plan_windows(info, self.config.plan)
        model = self.engine.model_id
        ids = window_ids(chash, plan, model)
        done_ids = self.store.committed_window_ids(video_id)
        todo = [w for w in plan.windows if ids[w.index] not in done_ids]
        reused = len(plan.windows) - len(todo)
        progress = IngestProgress(
            video_id=video_id,
            plan=plan.summary(),
            windows_total=len(plan.windows),
            windows_done=reused,
            windows_reused=reused,
        )
        log.info("ingest %s (%s): %s; %d to do", uri, video_id, progress.plan, len(todo))
        if on_progress:
            on_progress(progress)
        in_flight: dict[Future[CaptionOutput], WindowClip] = {}
        failures: list[BaseException] = []

        def commit_answers(block: bool, decoding: Future[Any] | None = None) -> None:
            """Commit the windows whose answers have come (waiting for one if ``block``).

            With ``decoding``, the wait also ends when that decode finishes, so answers
            are committed while the next window decodes, not after it.
            """
            if not in_flight:
                return
            started = time.perf_counter()
            waiting: list[Future[Any]] = [*in_flight, *([decoding] if decoding else [])]
            done, _ = wait(waiting, timeout=None if block else 0, return_when=FIRST_COMPLETED)
            if decoding is not None:
                done.discard(decoding)
            if block:
                stage = "answer_wait" if decoding is None else "decode_wait"
                self.timings.add(stage, time.perf_counter() - started)
            for future in sorted(done, key=lambda f: in_flight[f].window.index):
                clip = in_flight.pop(future)
                try:
                    out = future.result()
                except Exception as exc:
                    failures.append(exc)
                    continue
                started = time.perf_counter()
                w = clip.window
                self._commit(
                    video_id, ids[w.index], w, clip, out.text, out.prompt_tokens, model, progress
                )
                self.timings.add("commit", time.perf_counter() - started)
                if on_progress:
                    on_progress(progress)

        stopped = False
        decoded_windows = self._decode_ahead(str(path), info, plan, todo)
        try:
            for decoding in decoded_windows:
                while in_flight and not decoding.done():
                    commit_answers(block=True, decoding=decoding)
                started = time.perf_counter()
                clip, note = decoding.result()
                self.timings.add("decode_wait", time.perf_counter() - started)
                if note:
                    log.warning("%s: %s", uri, note)
                    progress.gap = progress.gap or note
                if clip is None:
                    progress.windows_skipped += 1
                    self.timings.count("windows_skipped")
                    if on_progress:
                        on_progress(progress)
                else:
                    while len(in_flight) >= self.config.max_in_flight:
                        commit_answers(block=True)
                    if failures or should_stop():
                        stopped = not failures
                        break
                    started = time.perf_counter()
                    in_flight[self.engine.submit(clip)] = clip
                    self.timings.add("submit_wait", time.perf_counter() - started)
                commit_answers(block=False)
                if failures:
                    break
                if should_stop():
                    stopped = True
                    break
        finally:
            decoded_windows.close()  # cancels the decodes not yet started
            while in_flight:
                commit_answers(block=True)
        if failures:
            raise failures[0]
        return IngestResult(
            video_id=video_id,
            progress=progress,
            interrupted=stopped and progress.windows_done < progress.windows_total,
        )

    def _commit(
        self,
        video_id: str,
        window_id: int,
        w: Window,
        clip: WindowClip,
        raw: str,
        prompt_tokens: int,
        model: str,
        progress: IngestProgress,
    ) -> None:
        parsed = parse_events(raw, w.start_seconds, w.end_seconds)
        found = parsed.events
        if self.config.plan.overlap_seconds > 0 and found:
            earlier = self.store.timeline(video_id, w.start_seconds, w.end_seconds)
            tolerance = span_tolerance(self.config.plan.sample_fps)
            found, repeats = drop_duplicates(found, earlier, tolerance)
            parsed.dropped.extend(repeats)
        vecs = self.embedder.embed([e.description for e in found])
        events = [
            NewEvent(
                start_seconds=e.start_seconds,
                end_seconds=e.end_seconds,
                text=e.description,
                embedding=vecs[i],
            )
            for i, e in enumerate(found)
        ]
        # "partial": complete events were salvaged from an answer that was cut short.
        if parsed.error is None:
            status = "parsed"
        else:
            status = "partial" if events else "unparsed"
        committed = self.store.commit_window(
            NewWindow(
                id=window_id,
                video_id=video_id,
                window_index=w.index,
                start_seconds=w.start_seconds,
                end_seconds=w.end_seconds,
                frame_count=len(clip.frames),
                status=status,
                raw_output=raw,
                parse_error=parsed.error or "",
                dropped=parsed.dropped,
                model=model,
                prompt_version=PROMPT_VERSION,
                prompt_tokens=prompt_tokens,
            ),
            events,
        )
        progress.windows_done += 1
        if committed:
            self.timings.count(f"windows_{status}")
            self.timings.count("video_seconds", w.end_seconds - w.start_seconds)
            progress.events_indexed += len(events)
            if status == "unparsed":
                progress.windows_unparsed += 1
                log.warning(
                    "window %d of %s: unparseable model output (%s)",
                    w.index,
                    video_id,
                    parsed.error,
                )

    def _decode_ahead(
        self, path: str, info: VideoInfo, plan: WindowPlan, todo: Sequence[Window]
    ) -> Generator[Future[tuple[WindowClip | None, str]], None, None]:
        """Decodes of the windows in plan order, up to ``decode_ahead`` windows ahead.

        The windows ahead decode in parallel on the pool. Each future holds the clip
        and a note on its decoding gap ("" if none); a window too damaged to caption
        comes back as ``None``. The next decode starts when the consumer comes back
        for another. Closing the generator cancels the decodes not yet started.
        """
        # At least 2 by default: one window decodes while the last one waits for room.
        ahead = max(1, self.config.decode_ahead or max(2, self.decode_pool.size))
        pending: deque[Future[tuple[WindowClip | None, str]]] = deque()
        windows = iter(todo)

        def decode(worker: DecodeWorker, w: Window) -> tuple[WindowClip | None, str]:
            started = time.perf_counter()
            try:
                return _decode_window(worker, path, self.config.decode_timeout, info, plan, w)
            finally:
                self.timings.add_decode(worker.decoded_by, time.perf_counter() - started)

        def more() -> None:
            w = next(windows, None)
            if w is not None:
                # What decoding it costs, for a pool that sends the largest to the GPU.
                cost = info.width * info.height * (w.end_seconds - w.start_seconds)
                pending.append(self.decode_pool.submit(partial(decode, w=w), cost=cost))

        for _ in range(ahead):
            more()
        try:
            while pending:
                yield pending.popleft()
                more()  # the consumer has taken the last one's frames
        finally:
            for future in pending:
                future.cancel()


def _gap_note(w: Window, missing: Sequence[int], error: str) -> str:
    return (
        f"window {w.index} ({w.start_seconds:.1f}-{w.end_seconds:.1f} s): "
        f"{len(missing)} of {len(w.frame_indices)} frames did not decode: {error}"
    )


def _decode_window(
    worker: DecodeWorker, path: str, timeout: float, info: VideoInfo, plan: WindowPlan, w: Window
) -> tuple[WindowClip | None, str]:
    """One window's clip from the frames that decode, and a note on any gap."""
    got = worker.read(
        path,
        list(w.frame_indices),
        plan.frame_height,
        plan.frame_width,
        timeout=timeout,
        on_error="skip",
    )
    if not got.missing:
        return WindowClip(
            window=w, frames=got.frames, fps=info.fps, total_frames=info.frame_count
        ), ""
    keep = len(got.indices) - len(got.indices) % 2  # Qwen3-VL takes frames in pairs
    note = _gap_note(w, got.missing, got.error)
    if keep < 2:
        return None, note + "; window skipped"
    window = replace(w, frame_indices=tuple(got.indices[:keep]))
    clip = WindowClip(
        window=window, frames=got.frames[:keep], fps=info.fps, total_frames=info.frame_count
    )
    return clip, note + f"; captioned from the {keep} that did"


def span_tolerance(sample_fps: float) -> float:
    """How far apart two ends of the same event may be: two sampled frames, at least 1 s."""
    return max(1.0, 2.0 / sample_fps)


def _normalised(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def drop_duplicates(
    events: Sequence[ParsedEvent], earlier: Sequence[EventRecord], tolerance: float
) -> tuple[list[ParsedEvent], list[str]]:
    """``events`` without those repeating one of ``earlier``, and a reason per dropped one.

    A repeat has both ends within ``tolerance`` seconds of an earlier event and
    a normalised text at least :data:`SAME_TEXT_RATIO` similar to it.
    """
    kept: list[ParsedEvent] = []
    reasons: list[str] = []
    for e in events:
        text = _normalised(e.description)
        twin = next(
            (
                o
                for o in earlier
                if abs(o.start_seconds - e.start_seconds) <= tolerance
                and abs(o.end_seconds - e.end_seconds) <= tolerance
                and difflib.SequenceMatcher(None, text, _normalised(o.text)).ratio()
                >= SAME_TEXT_RATIO
            ),
            None,
        )
        if twin is None:
            kept.append(e)
        else:
            reasons.append(
                f"duplicate of event {twin.id} ({twin.start_seconds:.1f}-{twin.end_seconds:.1f} s)"
                " from an overlapping window"
            )
    return kept, reasons
