"""The shared captioning engine: many windows in flight, refinement first, bounded memory.

Real pieces: generated videos, the decoder processes, SQLite, the ingestion pipeline.
The engines are doubles that hold windows and answer them out of order
(:class:`~tests.support.engines.HeldEngine`), or the real :class:`BatchingEngine`
around a gated captioner.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.support.clips import make_clip
from tests.support.engines import HeldEngine
from tests.support.fakes import GatedCaptioner
from tests.support.videos import write_video
from vidseek.indexer.engine import (
    INGEST_PRIORITY,
    REFINE_PRIORITY,
    BatchingEngine,
    BoundedEngine,
    as_engine,
)
from vidseek.indexer.pipeline import IngestConfig, Ingestor, IngestResult
from vidseek.indexer.planner import PlanConfig
from vidseek.storage.store import Store

PLAN = PlanConfig(sample_fps=2.0, window_seconds=2.0, max_frame_pixels=160 * 96)


@pytest.fixture
def store(tmp_path: Path, embedder):
    s = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "faiss.index", embedder.dim)
    yield s
    s.close()


@pytest.fixture
def video(tmp_path: Path) -> str:
    return write_video(tmp_path / "v.mp4", seconds=20)  # 10 windows of 2 s


def _ingest_in_background(ingestor: Ingestor, uri: str) -> tuple[threading.Thread, list]:
    out: list[IngestResult | BaseException] = []

    def run() -> None:
        try:
            out.append(ingestor.ingest(uri))
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _committed_indices(store: Store, video_id: str) -> list[int]:
    return sorted(w.window_index for w in store.window_rows(video_id))


# --- the pipeline against a concurrent engine ---------------------------------------------


def test_the_engine_sees_more_windows_than_a_batch_and_answers_commit_out_of_order(
    store, embedder, video
):
    engine = HeldEngine()
    config = IngestConfig(plan=PLAN, batch_windows=2, max_in_flight=6, decode_processes=2)
    ingestor = Ingestor(store, engine, embedder, config)
    try:
        thread, out = _ingest_in_background(ingestor, video)
        assert engine.wait_held(6)  # six windows at once, three times batch_windows
        time.sleep(0.3)
        assert len(engine.held) == 6  # and no more: the per-video cap holds
        while thread.is_alive():
            engine.release(2)  # newest first: window 5 commits before window 0
            time.sleep(0.05)
        (result,) = out
        assert isinstance(result, IngestResult) and not result.interrupted
    finally:
        ingestor.close()
    assert [i for i, _ in engine.submitted] == list(range(10))
    assert result.progress.windows_done == 10
    assert _committed_indices(store, result.video_id) == list(range(10))
    spans = [(e.start_seconds, e.end_seconds) for e in store.timeline(result.video_id, 0.0, None)]
    assert spans == sorted(set(spans)) and len(spans) >= 10  # every window's events, once


def test_decoding_stops_while_the_engine_is_full(store, embedder, video):
    engine = HeldEngine()
    config = IngestConfig(plan=PLAN, max_in_flight=3, decode_processes=2, decode_ahead=2)
    ingestor = Ingestor(store, engine, embedder, config)
    decoded: list[int] = []
    decode = ingestor.decode_pool.submit

    def counting_submit(fn, **kwargs):  # every window's decode goes through the pool
        decoded.append(1)
        return decode(fn, **kwargs)

    ingestor.decode_pool.submit = counting_submit  # type: ignore[method-assign]
    try:
        thread, out = _ingest_in_background(ingestor, video)
        assert engine.wait_held(3)
        time.sleep(1.0)  # an engine slower than decoding
        # 1 probe + 3 windows in the engine + at most 2 decoded ahead + 1 in hand.
        assert len(engine.held) == 3 and len(decoded) <= 1 + 3 + 2 + 1
        while thread.is_alive():
            engine.release()
            time.sleep(0.05)
    finally:
        ingestor.close()
    (result,) = out
    assert result.progress.windows_done == 10


def test_an_answer_commits_while_the_next_window_is_still_decoding(store, embedder, video):
    engine = HeldEngine()
    config = IngestConfig(plan=PLAN, max_in_flight=4, decode_processes=1, decode_ahead=1)
    ingestor = Ingestor(store, engine, embedder, config)
    gate = threading.Event()
    decode = ingestor.decode_pool.submit

    def gated_submit(fn, **kwargs):  # window 1 and later decode only once the gate opens
        window = getattr(fn, "keywords", {}).get("w")
        if window is None or window.index == 0:
            return decode(fn, **kwargs)
        return decode(lambda worker: gate.wait(30) and fn(worker), **kwargs)

    ingestor.decode_pool.submit = gated_submit  # type: ignore[method-assign]
    try:
        thread, out = _ingest_in_background(ingestor, video)
        assert engine.wait_held(1)
        engine.release()  # window 0 answered while window 1 cannot decode
        video_id = store.list_videos(0, 1)[0].id
        deadline = time.monotonic() + 10
        while not _committed_indices(store, video_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _committed_indices(store, video_id) == [0]
        gate.set()
        while thread.is_alive():
            engine.release()
            time.sleep(0.05)
    finally:
        gate.set()
        ingestor.close()
    (result,) = out
    assert result.progress.windows_done == 10


def test_a_failed_window_still_commits_the_others_in_flight_and_a_rerun_does_the_rest(
    store, embedder, video
):
    engine = HeldEngine()
    config = IngestConfig(plan=PLAN, max_in_flight=4, decode_processes=1)
    ingestor = Ingestor(store, engine, embedder, config)
    try:
        thread, out = _ingest_in_background(ingestor, video)
        assert engine.wait_held(4)
        engine.release(1, error=RuntimeError("engine died"))  # window 3 fails
        engine.release()  # windows 0-2 answer
        thread.join(30)
        assert isinstance(out[0], RuntimeError) and "engine died" in str(out[0])
        video_id = store.list_videos(0, 10)[0].id
        assert _committed_indices(store, video_id) == [0, 1, 2]

        rerun_engine = HeldEngine(auto_release=1)
        again = Ingestor(store, rerun_engine, embedder, config)
        try:
            result = again.ingest(video)
        finally:
            again.close()
    finally:
        ingestor.close()
    assert result.progress.windows_reused == 3
    assert sorted(i for i, _ in rerun_engine.submitted) == list(range(3, 10))
    assert _committed_indices(store, video_id) == list(range(10))


def test_stopping_commits_the_windows_in_flight_and_sends_no_more(store, embedder, video):
    engine = HeldEngine()
    stop = threading.Event()
    config = IngestConfig(plan=PLAN, max_in_flight=4, decode_processes=1)
    ingestor = Ingestor(store, engine, embedder, config)
    out: list[IngestResult] = []
    thread = threading.Thread(
        target=lambda: out.append(ingestor.ingest(video, should_stop=stop.is_set)), daemon=True
    )
    try:
        thread.start()
        assert engine.wait_held(4)
        stop.set()
        engine.release()
        thread.join(30)
    finally:
        ingestor.close()
    (result,) = out
    assert result.interrupted and result.progress.windows_done == 4
    assert len(engine.submitted) == 4


# --- the engines ---------------------------------------------------------------------------


def test_batching_engine_serves_refinement_before_queued_ingestion():
    gated = GatedCaptioner()
    engine = BatchingEngine(gated, max_batch=2)
    try:
        first = engine.submit(make_clip(index=0))  # the call in progress
        assert gated.waiting.wait(10)
        ingest = [engine.submit(make_clip(index=i)) for i in (1, 2, 3)]
        refine = engine.submit(make_clip(index=9, query="a red screen"), priority=REFINE_PRIORITY)
        gated.gate.set()
        for future in [first, *ingest, refine]:
            future.result(10)
    finally:
        engine.close()
    windows_per_call = [[frames[0] // 30 for frames in call] for call in gated.calls]
    # The refinement window (start 0, index 9) is the second call, alone; then 1-3 in twos.
    assert len(gated.calls) == 4 and len(gated.calls[1]) == 1
    assert [len(c) for c in gated.calls] == [1, 1, 2, 1]
    assert windows_per_call[0] == [0]
    assert engine.stats.snapshot()["completed"] == 5


def test_batching_engine_fails_a_batch_and_refuses_after_close():
    class Broken:
        model_id = "broken"

        def describe(self, clips):
            raise ValueError("no model")

        def close(self):
            pass

    engine = BatchingEngine(Broken())
    with pytest.raises(ValueError, match="no model"):
        engine.submit(make_clip()).result(10)
    engine.close()
    assert engine.stats.failed == 1
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(make_clip())


def test_bounded_engine_blocks_ingestion_at_the_cap_but_never_refinement():
    inner = HeldEngine()
    engine = BoundedEngine(inner, max_in_flight=2)
    engine.submit(make_clip(index=0))
    engine.submit(make_clip(index=1))
    third: list[object] = []
    blocked = threading.Thread(
        target=lambda: third.append(engine.submit(make_clip(index=2))), daemon=True
    )
    blocked.start()
    time.sleep(0.3)
    assert not third  # waiting for room
    refine = engine.submit(make_clip(index=3, query="q"), priority=REFINE_PRIORITY)
    assert [p for _, p in inner.submitted] == [INGEST_PRIORITY, INGEST_PRIORITY, REFINE_PRIORITY]
    inner.release(1)  # the refinement answers: no ingestion room is freed by it
    assert refine.result(5).text
    time.sleep(0.2)
    assert not third
    inner.release(1)  # an ingestion window answers: the blocked one goes in
    blocked.join(5)
    assert third and inner.stats.max_in_flight == 3


def _submit_in_background(engine: BoundedEngine, index: int) -> tuple[threading.Thread, list]:
    done: list[float] = []

    def run() -> None:
        engine.submit(make_clip(index=index))
        done.append(time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def test_a_refinement_holds_new_ingestion_windows_until_it_is_answered():
    inner = HeldEngine()
    engine = BoundedEngine(inner, max_in_flight=4, refine_hold=30.0)
    engine.submit(make_clip(index=0))  # in the engine before the refinement: not held
    refine = engine.submit(make_clip(index=1, query="q"), priority=REFINE_PRIORITY)
    thread, done = _submit_in_background(engine, 2)
    time.sleep(0.3)
    assert not done and [i for i, _ in inner.submitted] == [0, 1]  # held back
    second = engine.submit(make_clip(index=3, query="q"), priority=REFINE_PRIORITY)
    assert engine.holds == 1  # one hold for refinements that overlap
    inner.release(1)  # the second refinement answers; the first is still in the engine
    time.sleep(0.2)
    assert second.result(5).text and not done
    inner.release(1)  # the first refinement answers: the window goes in at once
    thread.join(5)
    assert done and refine.result(5).text
    assert [i for i, _ in inner.submitted] == [0, 1, 3, 2]


def test_a_hold_lasts_at_most_refine_hold_and_ingestion_then_runs_as_long():
    inner = HeldEngine()
    engine = BoundedEngine(inner, max_in_flight=8, refine_hold=0.4)
    started = time.monotonic()
    engine.submit(make_clip(index=0, query="q"), priority=REFINE_PRIORITY)  # never answered
    thread, done = _submit_in_background(engine, 1)
    thread.join(5)
    assert done and 0.35 <= done[0] - started < 2.0  # held for refine_hold, not until answered
    # A refinement right after the hold ran out starts no new hold: ingestion first
    # gets as long as the hold lasted.
    engine.submit(make_clip(index=2, query="q"), priority=REFINE_PRIORITY)
    thread, done = _submit_in_background(engine, 3)
    thread.join(5)
    assert done and done[0] - started < 0.75 and engine.holds == 1
    inner.release()  # every refinement answers
    time.sleep(0.5)  # ingestion has now run as long as the hold lasted
    engine.submit(make_clip(index=4, query="q"), priority=REFINE_PRIORITY)
    assert engine.holds == 2
    thread, done = _submit_in_background(engine, 5)
    time.sleep(0.2)
    assert not done
    inner.release(1)
    thread.join(5)
    assert done


def test_no_hold_by_default_or_after_a_refinement_that_failed_to_submit():
    inner = HeldEngine()
    engine = BoundedEngine(inner, max_in_flight=4)
    engine.submit(make_clip(index=0, query="q"), priority=REFINE_PRIORITY)
    engine.submit(make_clip(index=1))  # not held: refine_hold is 0
    assert engine.holds == 0 and len(inner.submitted) == 2

    class Refusing(HeldEngine):
        def submit(self, clip, *, priority=INGEST_PRIORITY):
            if priority == REFINE_PRIORITY:
                raise RuntimeError("engine closed")
            return super().submit(clip, priority=priority)

    refusing = Refusing()
    engine = BoundedEngine(refusing, max_in_flight=4, refine_hold=30.0)
    with pytest.raises(RuntimeError, match="engine closed"):
        engine.submit(make_clip(index=0, query="q"), priority=REFINE_PRIORITY)
    thread, done = _submit_in_background(engine, 1)
    thread.join(5)
    assert done  # the refinement never reached the engine: nothing holds ingestion


def test_after_a_hold_that_ended_early_ingestion_runs_only_as_long_as_it_lasted():
    inner = HeldEngine()
    engine = BoundedEngine(inner, max_in_flight=8, refine_hold=30.0)
    engine.submit(make_clip(index=0, query="q"), priority=REFINE_PRIORITY)
    time.sleep(0.2)
    inner.release()  # answered after about 0.2 s: the hold lasted that long, not 30 s
    engine.submit(make_clip(index=1, query="q"), priority=REFINE_PRIORITY)
    assert engine.holds == 1  # at once: within the 0.2 s that ingestion is owed
    inner.release()
    time.sleep(0.4)
    engine.submit(make_clip(index=2, query="q"), priority=REFINE_PRIORITY)
    assert engine.holds == 2  # 0.4 s later, well under the 30 s limit: a new hold


@pytest.mark.parametrize("hold", [-1.0, float("nan"), float("inf")])
def test_a_negative_hold_is_refused(hold):
    with pytest.raises(ValueError, match="refine_hold"):
        BoundedEngine(HeldEngine(), max_in_flight=1, refine_hold=hold)


def test_as_engine_wraps_a_plain_captioner_and_keeps_an_engine():
    held = HeldEngine(auto_release=1)
    assert as_engine(held) is held
    wrapped = as_engine(GatedCaptioner(), max_batch=3)
    try:
        assert isinstance(wrapped, BatchingEngine) and wrapped.max_batch == 3
    finally:
        wrapped.close()
    futures = [held.submit(make_clip(index=i)) for i in range(3)]
    assert [f.result(10).text for f in futures]


def test_a_pool_of_two_backends_reports_the_windows_each_decoded(store, embedder, video):
    """What a mixed pool's parts contribute (``nvdec+pyav`` on a GPU host) is counted by
    backend: here PyAV and decord, both on the CPU, taking windows from one queue."""
    engine = HeldEngine()
    config = IngestConfig(
        plan=PLAN, max_in_flight=10, decode_processes=2, decode_backend="pyav+decord"
    )
    ingestor = Ingestor(store, engine, embedder, config)
    try:
        thread, out = _ingest_in_background(ingestor, video)
        while thread.is_alive():
            engine.release(10)
            time.sleep(0.05)
        (result,) = out
        assert isinstance(result, IngestResult) and result.progress.windows_done == 10
    finally:
        ingestor.close()
    used = ingestor.timings.decoders()
    # Two windows are decoded ahead from the start, one on each process.
    assert set(used) == {"pyav", "decord"} and sum(u["windows"] for u in used.values()) == 10
    assert sum(u["seconds"] for u in used.values()) == pytest.approx(
        ingestor.timings.snapshot()["decode"], abs=1e-2
    )
