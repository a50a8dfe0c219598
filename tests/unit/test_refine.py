"""Search refinement with test doubles: known answers, and every way it must fall back to coarse.

Real pieces: a generated video (2 s per colour), the decoder process, SQLite. The
captioner is a double whose answer is known: :class:`GroundingCaptioner` finds the
queried colour in the pixels it is given and answers its span in the absolute times
of those frames, so a refined span is right only if the clip was sampled at the right
absolute frames and the answer was mapped back without offsets.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.clips import make_clip
from tests.support.engines import HeldEngine
from tests.support.fakes import (
    FixedAnswerCaptioner,
    GarbageCaptioner,
    GatedCaptioner,
    GroundingCaptioner,
)
from vidseek.indexer.captioner import Captioner
from vidseek.indexer.decode_pool import DecodePool
from vidseek.indexer.embedder import Embedder
from vidseek.indexer.engine import REFINE_PRIORITY, BatchingEngine
from vidseek.indexer.parse import parse_span
from vidseek.server.app import build_app, refine_config
from vidseek.server.refine import RefineConfig, Refiner
from vidseek.server.search import MomentResult
from vidseek.server.settings import load_settings
from vidseek.storage.errors import CaptionerUnavailable, ConfigError
from vidseek.storage.store import Store

QUERY = "a blue screen"


@pytest.fixture(scope="module")
def decode_pool() -> Iterator[DecodePool]:
    shared = DecodePool("pyav", 2)
    yield shared
    shared.close()


@pytest.fixture
def video(colour_video: Path, tmp_path: Path) -> Path:
    """A private copy of the 12 s colour video (blue from 4 s to 6 s), so it can be deleted."""
    return Path(shutil.copy(colour_video, tmp_path / "colours.mp4"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'v.db'}", tmp_path / "faiss.index", 8)
    yield s
    s.close()


@pytest.fixture
def video_id(store: Store, video: Path) -> str:
    return store.upsert_video(
        uri=str(video),
        content_hash="cd" * 32,
        duration=12.0,
        fps=30.0,
        width=160,
        height=96,
        frame_count=360,
    )


Make = Callable[..., tuple[Refiner, BatchingEngine]]


@pytest.fixture
def make(store: Store, decode_pool: DecodePool) -> Iterator[Make]:
    refiners: list[Refiner] = []

    engines: list[BatchingEngine] = []

    def build(inner: Captioner, **config: object) -> tuple[Refiner, BatchingEngine]:
        engine = BatchingEngine(inner, max_batch=4)
        options: dict[str, object] = {"fps": 2.0, "pad_seconds": 2.0, "max_moments": 2}
        config = RefineConfig(**(options | config))  # type: ignore[arg-type]
        refiner = Refiner(store, lambda: engine, config, decode_pool=decode_pool)
        refiners.append(refiner)
        engines.append(engine)
        return refiner, engine

    yield build
    for refiner in refiners:
        refiner.close()
    for engine in engines:
        inner = engine.captioner
        if isinstance(inner, GatedCaptioner):
            inner.gate.set()
        engine.close()


def moment(video_id: str, start: float, end: float, score: float = 0.5) -> MomentResult:
    return MomentResult(
        video_id=video_id,
        start_seconds=start,
        end_seconds=end,
        description="a blue screen",
        score=score,
        event_ids=(1,),
    )


def soon(seconds: float = 60.0) -> float:
    return time.monotonic() + seconds


def test_known_answer_is_mapped_back_to_absolute_seconds(make: Make, video_id: str) -> None:
    fake = GroundingCaptioner()
    refiner, _ = make(fake)
    coarse = [
        moment(video_id, 3.0, 6.0),  # clip [1, 8]: blue frames 4.0 ... 5.5
        moment(video_id, 8.5, 9.5),  # clip [6.5, 11.5]: no blue, the answer is prose
        moment(video_id, 4.0, 5.0),  # beyond max_moments=2: not looked at
    ]
    refined = refiner.refine(QUERY, coarse, soon())

    assert refined[0] == MomentResult(
        video_id=video_id,
        start_seconds=4.0,
        end_seconds=6.0,
        description="a blue screen",
        score=0.5,
        event_ids=(1,),
        coarse_start_seconds=3.0,
        coarse_end_seconds=6.0,
        refined=True,
    )
    assert refined[1:] == coarse[1:]

    # Each refined moment went to the model as soon as it decoded, as a grounding
    # window of absolute source frames at the refinement rate (30 fps source, 2 fps:
    # every 15th frame).
    sent = sorted((c for call in fake.calls for c in call), key=lambda c: c.window.start_seconds)
    assert [c.window.query for c in sent] == [QUERY, QUERY]
    first = sent[0]
    assert (first.window.start_seconds, first.window.end_seconds) == (1.0, 8.0)
    assert first.window.frame_indices == tuple(range(30, 240, 15))
    assert first.fps == 30.0 and first.total_frames == 360
    assert first.frames.shape[1:] == (96, 160, 3)
    assert (sent[1].window.start_seconds, sent[1].window.end_seconds) == (6.5, 11.5)


def test_clip_is_clamped_to_the_video(make: Make, video_id: str) -> None:
    fake = FixedAnswerCaptioner('{"start": 10.25, "end": 99}')
    refiner, _ = make(fake, pad_seconds=5.0)
    (refined,) = refiner.refine(QUERY, [moment(video_id, 9.0, 11.0)], soon())
    # Clip [4, 12] (the video ends at 12 s); the answer's end is clamped to it.
    assert (refined.start_seconds, refined.end_seconds) == (10.25, 12.0)
    assert (refined.coarse_start_seconds, refined.coarse_end_seconds) == (9.0, 11.0)


def test_long_moments_are_sampled_within_max_frames(make: Make, video_id: str) -> None:
    fake = GroundingCaptioner()
    refiner, _ = make(fake, max_frames=8, pad_seconds=0.0)
    (refined,) = refiner.refine(QUERY, [moment(video_id, 0.0, 12.0)], soon())
    (call,) = fake.calls
    assert len(call[0].window.frame_indices) <= 8
    assert refined.refined and 4.0 <= refined.start_seconds < refined.end_seconds <= 12.0


def test_deadline_already_passed_returns_coarse(make: Make, video_id: str) -> None:
    fake = GroundingCaptioner()
    refiner, _ = make(fake)
    coarse = [moment(video_id, 3.0, 6.0)]
    started = time.monotonic()
    assert refiner.refine(QUERY, coarse, time.monotonic() - 1.0) == coarse
    assert time.monotonic() - started < 0.5
    assert fake.calls == []


def test_deleted_file_returns_coarse(make: Make, video_id: str, video: Path) -> None:
    fake = GroundingCaptioner()
    refiner, _ = make(fake)
    video.unlink()
    coarse = [moment(video_id, 3.0, 6.0)]
    assert refiner.refine(QUERY, coarse, soon()) == coarse
    assert fake.calls == []


def test_unknown_video_is_left_coarse_and_others_are_refined(make: Make, video_id: str) -> None:
    refiner, _ = make(GroundingCaptioner())
    coarse = [moment("no-such-video", 3.0, 6.0), moment(video_id, 3.0, 6.0)]
    refined = refiner.refine(QUERY, coarse, soon())
    assert refined[0] == coarse[0]
    assert refined[1].refined and (refined[1].start_seconds, refined[1].end_seconds) == (4.0, 6.0)


@pytest.mark.parametrize(
    "inner",
    [
        GarbageCaptioner(),
        FixedAnswerCaptioner('{"start": 5, "end": 4}'),  # inverted
        FixedAnswerCaptioner('{"start": 5, "end": 5}'),  # empty
        FixedAnswerCaptioner('{"start": 20, "end": 30}'),  # outside the clip
        FixedAnswerCaptioner('{"start": "soon", "end": null}'),
        FixedAnswerCaptioner(""),
    ],
    ids=["garbage", "inverted", "empty", "outside", "unreadable", "blank"],
)
def test_unusable_answers_return_coarse(make: Make, video_id: str, inner: Captioner) -> None:
    refiner, _ = make(inner)
    coarse = [moment(video_id, 3.0, 6.0)]
    assert refiner.refine(QUERY, coarse, soon()) == coarse


def _refiner_holding_second_moment(
    store: Store, engine: object, decode_pool: DecodePool, gate: threading.Event
) -> Refiner:
    """A refiner of 2 moments on the shared pool, moment 1's decode held until ``gate``."""

    class HoldSecondMoment:
        def submit(self, fn):
            if fn.args[1] == 1:
                return decode_pool.submit(lambda worker: gate.wait(30) and fn(worker))
            return decode_pool.submit(fn)

    config = RefineConfig(fps=2.0, pad_seconds=2.0, max_moments=2)
    return Refiner(store, lambda: engine, config, decode_pool=HoldSecondMoment())  # type: ignore[arg-type]


def test_a_decoded_clip_goes_to_the_engine_while_the_others_decode(
    store: Store, decode_pool: DecodePool, video_id: str
) -> None:
    engine = HeldEngine()
    gate = threading.Event()
    refiner = _refiner_holding_second_moment(store, engine, decode_pool, gate)
    out: list[list[MomentResult]] = []
    coarse = [moment(video_id, 3.0, 6.0), moment(video_id, 8.5, 9.5)]
    thread = threading.Thread(target=lambda: out.append(refiner.refine(QUERY, coarse, soon())))
    try:
        thread.start()
        assert engine.wait_held(1)
        time.sleep(0.2)
        assert engine.submitted == [(0, REFINE_PRIORITY)]  # moment 1 is still decoding
        gate.set()
        assert engine.wait_held(2)
        engine.release()
        thread.join(30)
    finally:
        gate.set()
        engine.release()
        refiner.close()
    assert sorted(engine.submitted) == [(0, REFINE_PRIORITY), (1, REFINE_PRIORITY)]
    assert len(out) == 1 and len(out[0]) == 2


def test_moments_answered_in_time_are_refined_when_another_overruns(
    store: Store, decode_pool: DecodePool, video_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = BatchingEngine(GroundingCaptioner(), max_batch=4)
    gate = threading.Event()  # moment 1 decodes only after the deadline
    refiner = _refiner_holding_second_moment(store, engine, decode_pool, gate)
    coarse = [moment(video_id, 3.0, 6.0), moment(video_id, 3.5, 5.5)]
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="vidseek.server.refine"):
            refined = refiner.refine(QUERY, coarse, started + 3.0)
        assert time.monotonic() - started < 4.0
    finally:
        gate.set()
        refiner.close()
        engine.close()
    assert refined[0].refined and (refined[0].start_seconds, refined[0].end_seconds) == (4.0, 6.0)
    assert refined[1] == coarse[1]
    assert "1 of 2 clips did not decode in time" in caplog.text


def test_engine_busy_with_ingestion_returns_coarse_in_bounded_time(
    make: Make, video_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    slow = GatedCaptioner()
    refiner, engine = make(slow)
    coarse = [moment(video_id, 3.0, 6.0)]
    ingesting = engine.submit(make_clip(start_second=0, index=0))  # held by the gate
    assert slow.waiting.wait(30)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="vidseek.server.refine"):
        result = refiner.refine(QUERY, coarse, started + 1.0)
    assert result == coarse
    assert time.monotonic() - started < 1.5
    assert "did not answer 1 of 1 clips in time" in caplog.text
    slow.gate.set()
    assert ingesting.result(30).text  # the ingestion window still gets its answer
    assert _eventually(lambda: engine.stats.in_flight == 0)  # the late refinement finished


@pytest.mark.parametrize("deadline", [float("inf"), float("nan")])
def test_without_a_usable_deadline_the_timeout_bounds_it(
    make: Make, video_id: str, deadline: float
) -> None:
    slow = GatedCaptioner()
    refiner, _ = make(slow, timeout=2.0)
    coarse = [moment(video_id, 3.0, 6.0)]
    started = time.monotonic()
    try:
        assert refiner.refine(QUERY, coarse, deadline) == coarse
        assert time.monotonic() - started < 2.5
    finally:
        slow.gate.set()


def test_captioner_that_cannot_load_returns_coarse(
    store: Store, decode_pool: DecodePool, video_id: str
) -> None:
    attempts = []

    def unavailable() -> BatchingEngine:
        attempts.append(1)
        raise CaptionerUnavailable("could not load the captioning model: no weights")

    refiner = Refiner(
        store, unavailable, RefineConfig(decode_backend="pyav"), decode_pool=decode_pool
    )
    try:
        coarse = [moment(video_id, 3.0, 6.0)]
        assert refiner.refine(QUERY, coarse, soon()) == coarse
        assert refiner.refine(QUERY, coarse, soon()) == coarse
        assert len(attempts) == 2  # a failed load is tried again on the next request
    finally:
        refiner.close()


def test_count_bound_and_empty_inputs(make: Make, video_id: str) -> None:
    fake = GroundingCaptioner()
    refiner, _ = make(fake, max_moments=0)
    coarse = [moment(video_id, 3.0, 6.0)]
    assert refiner.refine(QUERY, coarse, soon()) == coarse
    assert refiner.refine(QUERY, [], soon()) == []
    assert fake.calls == []


def _eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    done = threading.Event()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        done.wait(0.02)
    return condition()


# --- the answer parser ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ('{"start": 97.5, "end": 99}', (97.5, 99.0)),
        ('```json\n{"start_time": "1:37", "end_time": "1:39.5"}\n```', (97.0, 99.5)),
        ("The moment is [96, 98].", (96.0, 98.0)),
        ('{"timestamp": [96, 97]}', (96.0, 97.0)),
        ('{"events": [{"start": 90, "end": 100, "description": "x"}]}', (95.0, 100.0)),
        ('{"start": 100, "end": 200}', (100.0, 110.0)),
        ('{"start": 9, "end": 3}', None),
        ('{"start": 0, "end": 1}', None),
        ('{"start": 100, "end": 100}', None),
        ('{"events": []}', None),
        ("the the <|im_start|> 12:xx {", None),
        ('{"start": NaN, "end": 100}', None),
        ("[" * 10_000, None),
    ],
)
def test_parse_span(text: str, span: tuple[float, float] | None) -> None:
    result = parse_span(text, 95.0, 110.0)
    if span is None:
        assert result.start_seconds is None and result.end_seconds is None and result.error
    else:
        assert (result.start_seconds, result.end_seconds) == span and result.error is None


# --- settings -------------------------------------------------------------------------


def test_refine_settings_defaults_validation_and_config() -> None:
    settings = load_settings(environ={"VIDSEEK_REFINE_FPS": "4", "VIDSEEK_DECODE_BACKEND": "pyav"})
    assert refine_config(settings) == RefineConfig(
        fps=4.0,
        pad_seconds=5.0,
        max_pixels=640 * 360,
        max_frames=128,
        max_moments=3,
        timeout=30.0,
        decode_backend="pyav",
    )
    for name, value in [
        ("VIDSEEK_REFINE_FPS", "0"),
        ("VIDSEEK_REFINE_PAD_SECONDS", "-1"),
        ("VIDSEEK_REFINE_MAX_PIXELS", "100"),
        ("VIDSEEK_REFINE_MAX_FRAMES", "1"),
        ("VIDSEEK_REFINE_MAX_MOMENTS", "-1"),
        ("VIDSEEK_REFINE_TIMEOUT", "0"),
    ]:
        with pytest.raises(ConfigError, match=name.removeprefix("VIDSEEK_").lower()):
            load_settings(environ={name: value})


def test_build_app_hands_search_a_refiner_bounded_by_the_settings(
    tmp_path: Path, embedder: Embedder
) -> None:
    settings = load_settings(
        overrides={"data_dir": str(tmp_path / "data"), "refine_max_moments": 2}, environ={}
    )
    app = build_app(settings, embedder=embedder)
    try:
        assert isinstance(app.refiner, Refiner)
        assert app.search.refiner is app.refiner
        assert app.refiner.config == refine_config(settings)
        assert (app.search.max_refine, app.search.refine_budget_s) == (2, settings.refine_timeout)
    finally:
        app.shutdown()
