"""The ingestion pipeline on damaged video: what decodes is indexed, the gap is reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.fakes import ColourCaptioner
from tests.support.videos import available_codec, corrupt_frames, write_video
from vidseek.indexer.pipeline import (
    IngestConfig,
    Ingestor,
    IngestResult,
    drop_duplicates,
    span_tolerance,
)
from vidseek.indexer.planner import PlanConfig
from vidseek.indexer.types import ParsedEvent
from vidseek.storage.store import EventRecord, Store

H264 = available_codec("libx264")


def _ingest(
    tmp_path: Path, embedder, video: str, window: float = 2.0, overlap: float = 0.0
) -> tuple[IngestResult, ColourCaptioner, Store]:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "faiss.index", embedder.dim)
    captioner = ColourCaptioner()
    plan = PlanConfig(
        sample_fps=2.0,
        window_seconds=window,
        overlap_seconds=overlap,
        max_frame_pixels=160 * 96,
    )
    config = IngestConfig(plan=plan, batch_windows=3)
    ingestor = Ingestor(store, captioner, embedder, config)
    try:
        result = ingestor.ingest(video)
    finally:
        ingestor.close()
    return result, captioner, store


@pytest.fixture
def damaged(tmp_path: Path):
    def make(first: int, end: int) -> str:
        path = write_video(tmp_path / "damaged.mp4", seconds=20, codec=H264, gop=30)
        return corrupt_frames(path, first, end)

    return make


def test_a_window_whose_frames_all_fail_is_skipped_and_reported(tmp_path, embedder, damaged):
    # Frames 300-359 (10-12 s) are noise: the window [10, 12) has nothing to caption.
    result, captioner, store = _ingest(tmp_path, embedder, damaged(300, 360))
    try:
        p = result.progress
        assert (p.windows_total, p.windows_done, p.windows_skipped) == (10, 9, 1)
        assert p.gap.startswith("window 5 (10.0-12.0 s): 4 of 4 frames did not decode")
        assert p.gap.endswith("window skipped")
        captioned = {w for batch in captioner.calls for w in batch}
        assert all(not (300 <= i < 360) for w in captioned for i in w)
        spans = [(w.start_seconds, w.status) for w in store.window_rows(result.video_id)]
        assert 10.0 not in [s for s, _ in spans] and len(spans) == 9
    finally:
        store.close()


def test_a_partly_damaged_window_is_captioned_from_the_frames_that_decode(
    tmp_path, embedder, damaged
):
    # Frames 300-329 (10-11 s) are noise; the keyframe at 330 and what follows decode.
    result, captioner, store = _ingest(tmp_path, embedder, damaged(300, 330))
    try:
        p = result.progress
        assert (p.windows_done, p.windows_skipped) == (10, 0)
        assert "window 5 (10.0-12.0 s): 2 of 4 frames did not decode" in p.gap
        assert p.gap.endswith("captioned from the 2 that did")
        captioned = [w for batch in captioner.calls for w in batch]
        assert (330, 345) in captioned  # the real indices, so the model reads 11.0 and 11.5 s
        rows = {w.window_index: w for w in store.window_rows(result.video_id)}
        assert rows[5].frame_count == 2 and rows[5].status == "parsed"
    finally:
        store.close()


def test_events_repeated_by_overlapping_windows_are_committed_once(tmp_path, embedder):
    video = write_video(tmp_path / "colours.mp4", seconds=6)  # six colours, one a second
    result, _, store = _ingest(tmp_path, embedder, video, window=4.0, overlap=2.0)
    try:
        starts = sorted(w.start_seconds for w in store.window_rows(result.video_id))
        assert starts[:2] == [0.0, 2.0]  # windows did overlap: [0, 4), [2, 6), ...
        events = store.timeline(result.video_id, 0.0, None)
        spans = [(e.start_seconds, e.end_seconds) for e in events]
        assert spans == [(float(t), float(t + 1)) for t in range(6)]
        dropped = [r for w in store.window_rows(result.video_id) for r in json.loads(w.dropped)]
        # [2, 6) repeats blue and yellow of [0, 4); a last window [4, 6) repeats two more.
        assert len(dropped) in (2, 4) and all("from an overlapping window" in r for r in dropped)
    finally:
        store.close()


def _earlier(start: float, end: float, text: str) -> EventRecord:
    return EventRecord(id=7, video_id="v", start_seconds=start, end_seconds=end, text=text)


@pytest.mark.parametrize(
    ("start", "end", "text", "repeat"),
    [
        (10.0, 14.0, "A man opens the red door.", True),  # same span, same words
        (10.5, 13.5, "a man opens the red door", True),  # within the tolerance
        (10.0, 14.0, "A man opens the red doors.", True),  # near-identical text
        (12.0, 14.0, "A man opens the red door.", False),  # start too far off
        (10.0, 14.0, "A woman closes the blue window.", False),  # different text
    ],
)
def test_drop_duplicates_needs_the_same_span_and_near_identical_text(start, end, text, repeat):
    earlier = [_earlier(10.0, 14.0, "A man opens the red door.")]
    new = [ParsedEvent(start_seconds=start, end_seconds=end, description=text)]
    kept, reasons = drop_duplicates(new, earlier, span_tolerance(2.0))
    assert (kept == []) is repeat
    assert len(reasons) == int(repeat)
