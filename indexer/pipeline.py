"""The ingestion pipeline: uri -> probe -> plan -> decode -> caption -> parse -> embed -> commit.

A window is the unit of work and of commit: each window's events are committed
in one transaction as soon as it is done, so an interrupted ingest resumes at
the first uncommitted window, and re-running an ingest of the same content
commits nothing twice (window and event ids derive from the content hash).
Decoding of the next batch of windows overlaps captioning of the current one.

Damaged video: a window is captioned from the frames that decode (the model
sees their real absolute timestamps; an odd frame out is dropped, since
Qwen3-VL takes frames in pairs). A window with fewer than two decodable frames
is *skipped*: counted in ``IngestProgress.windows_skipped``, logged with the
missing frame range, and not committed, so a later run of the same file tries
it again.

Overlapping windows (``overlap_seconds > 0``) see the same stretch twice. An
event of a later window that repeats an already committed event of the same
video (both ends within :func:`span_tolerance`, text near-identical, see
:func:`drop_duplicates`) is dropped, with a reason in the window's ``dropped``
list.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from vidseek.indexer.captioner import Captioner
from vidseek.indexer.embedder import Embedder
from vidseek.indexer.parse import parse_events
from vidseek.indexer.planner import PlanConfig, WindowPlan, plan_windows
from vidseek.indexer.prompt import PROMPT_VERSION
from vidseek.indexer.types import ParsedEvent, VideoInfo, Window, WindowClip
from vidseek.indexer.video import DecodeWorker, FrameReader, probe
from vidseek.storage.errors import InvalidArgument, NotFound
from vidseek.storage.store import EventRecord, NewEvent, NewWindow, Store, window_id_for

__all__ = [
    "IngestConfig",
    "IngestProgress",
    "IngestResult",
    "Ingestor",
    "content_hash",
    "drop_duplicates",
    "span_tolerance",
]

# Two descriptions at least this similar (difflib ratio of their normalised
# text) are the same description.
SAME_TEXT_RATIO = 0.85

log = logging.getLogger(__name__)


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


class Ingestor:
    """Runs the pipeline for one video at a time against a store."""

    def __init__(
        self, store: Store, captioner: Captioner, embedder: Embedder, config: IngestConfig
    ) -> None:
        self.store = store
        self.captioner = captioner
        self.embedder = embedder
        self.config = config
        # One decoder process for probing and reading every video of this ingestor.
        self._worker = DecodeWorker(config.decode_backend)

    def close(self) -> None:
        """Stop the decoder process."""
        self._worker.close()

    def ingest(
        self,
        uri: str,
        *,
        on_progress: Callable[[IngestProgress], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        collection: str = "",
    ) -> IngestResult:
        """Index one video file into ``collection``; commits window by window.

        ``should_stop`` is checked between windows: the current window is
        committed, the rest are left for a later run (``interrupted=True``).
        """
        path = Path(uri)
        if not path.exists():
            raise NotFound(f"video file not found: {uri}")
        if not path.is_file():
            raise InvalidArgument(f"not a regular file: {uri}")
        info = probe(str(path), timeout=self.config.decode_timeout, worker=self._worker)
        chash = content_hash(path)
        video_id = self.store.upsert_video(
            uri=str(path.resolve()),
            content_hash=chash,
            duration=info.duration,
            fps=info.fps,
            width=info.width,
            height=info.height,
            frame_count=info.frame_count,
            collection=collection,
        )
        plan = plan_windows(info, self.config.plan)
        model = self.captioner.model_id
        ids = {
            w.index: window_id_for(chash, w.start_seconds, w.end_seconds, model, PROMPT_VERSION)
            for w in plan.windows
        }
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
        interrupted = False
        with FrameReader(
            str(path), timeout=self.config.decode_timeout, worker=self._worker
        ) as reader:
            for decoded in self._decoded_batches(reader, info, plan, todo):
                for _, note in decoded:
                    if note:
                        log.warning("%s: %s", uri, note)
                        progress.gap = progress.gap or note
                clips = [c for c, _ in decoded if c is not None]
                progress.windows_skipped += len(decoded) - len(clips)
                if not clips:
                    if on_progress:
                        on_progress(progress)
                    continue
                outputs = self.captioner.describe(clips)
                if len(outputs) != len(clips):
                    raise RuntimeError(
                        f"captioner returned {len(outputs)} outputs for {len(clips)} windows"
                    )
                for clip, out in zip(clips, outputs, strict=True):
                    w = clip.window
                    self._commit(
                        video_id,
                        ids[w.index],
                        w,
                        clip,
                        out.text,
                        out.prompt_tokens,
                        model,
                        progress,
                    )
                    if on_progress:
                        on_progress(progress)
                if should_stop():
                    interrupted = progress.windows_done < progress.windows_total
                    break
        return IngestResult(
            video_id=video_id,
            progress=progress,
            interrupted=interrupted,
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
            progress.events_indexed += len(events)
            if status == "unparsed":
                progress.windows_unparsed += 1
                log.warning(
                    "window %d of %s: unparseable model output (%s)",
                    w.index,
                    video_id,
                    parsed.error,
                )

    def _decoded_batches(
        self, reader: FrameReader, info: VideoInfo, plan: WindowPlan, todo: Sequence[Window]
    ) -> Iterator[list[tuple[WindowClip | None, str]]]:
        """Decoded batches of windows; the next batch decodes while the caller captions.

        Each window comes with a note on its decoding gap ("" if none); a window
        too damaged to caption comes back as ``None``.
        """
        n = max(1, self.config.batch_windows)
        batches = [list(todo[i : i + n]) for i in range(0, len(todo), n)]

        def decode(batch: list[Window]) -> list[tuple[WindowClip | None, str]]:
            return [_decode_window(reader, info, plan, w) for w in batch]

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        # The pool's thread only reads frames; progress is updated by the caller.
        try:
            pending = [pool.submit(decode, b) for b in batches[:1]]
            for i in range(len(batches)):
                clips = pending.pop().result()
                if i + 1 < len(batches):
                    pending.append(pool.submit(decode, batches[i + 1]))
                yield clips
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _gap_note(w: Window, missing: Sequence[int], error: str) -> str:
    return (
        f"window {w.index} ({w.start_seconds:.1f}-{w.end_seconds:.1f} s): "
        f"{len(missing)} of {len(w.frame_indices)} frames did not decode: {error}"
    )


def _decode_window(
    reader: FrameReader, info: VideoInfo, plan: WindowPlan, w: Window
) -> tuple[WindowClip | None, str]:
    """One window's clip from the frames that decode, and a note on any gap."""
    got = reader.read(list(w.frame_indices), plan.frame_height, plan.frame_width, on_error="skip")
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
