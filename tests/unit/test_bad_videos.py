"""The bad-file matrix: every awkward input gets a clear per-video error or a correct index.

Each case is generated here (PyAV writers in tests/support/videos.py) and run
through every backend's worker. An "error" case must raise :class:`VideoError`
(:class:`NotFound` for a missing file) naming the path and the problem, and
leave the worker serving; an "index" case must probe to the right facts and
decode the sampled frames at the right absolute indices, reporting anything
that does not decode as missing (``on_error="skip"``) rather than failing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.support.videos import (
    available_codec,
    corrupt_frames,
    read_counter,
    torchcodec_missing,
    truncate,
    write_audio_only,
    write_frameless_video,
    write_garbage,
    write_text_as_mp4,
    write_unknown_codec,
    write_video,
)
from vidseek.indexer.types import VideoInfo
from vidseek.indexer.video import DecodeWorker, resized_shape, sample_indices
from vidseek.storage.errors import NotFound, VideoError

_NO_TORCHCODEC = torchcodec_missing()
BACKENDS = [
    "pyav",
    pytest.param(
        "torchcodec", marks=pytest.mark.skipif(bool(_NO_TORCHCODEC), reason=str(_NO_TORCHCODEC))
    ),
    "decord",
]
AVAILABLE = ["pyav", "decord"] + ([] if _NO_TORCHCODEC else ["torchcodec"])
H264 = available_codec("libx264")
VFR_TIMES = (0.0, 0.1, 0.15, 0.5, 1.5, 1.55, 1.6, 3.0, 3.2, 3.25)
CORRUPT = (120, 150)  # one whole GOP of 30 frames, 4-5 s into a 10 s video


@dataclass(frozen=True)
class Case:
    """How to make one input, and what every backend must make of it."""

    make: Callable[[Path], str]
    error: str | None = None  # regex of the message; None: must index
    error_on: frozenset[str] = frozenset()  # backends allowed to refuse an "index" case
    check: Callable[[VideoInfo], None] | None = None
    rotation: int = 0
    allowed_missing: frozenset[int] = frozenset()
    # More frames a backend may lose (on top of allowed_missing).
    also_missing_on: dict[str, frozenset[int]] = field(default_factory=dict)
    required_missing: frozenset[int] = frozenset()


def _missing(d: Path) -> str:
    return str(d / "missing.mp4")


def _empty(d: Path) -> str:
    (d / "empty.mp4").write_bytes(b"")
    return str(d / "empty.mp4")


def _truncated_index_at_end(d: Path) -> str:
    return truncate(write_video(d / "cut-end.mp4", seconds=6, codec=H264), 0.5)


def _truncated_faststart(d: Path) -> str:
    path = write_video(d / "cut-front.mp4", seconds=6, codec=H264, faststart=True)
    return truncate(path, 0.5)


def _corrupt_middle(d: Path) -> str:
    path = write_video(d / "corrupt.mp4", seconds=10, codec=H264, gop=30)
    return corrupt_frames(path, *CORRUPT)


def _check_faststart(info: VideoInfo) -> None:
    # Half the bytes: about half the 180 frames are indexed, not the header's 180.
    assert 20 <= info.frame_count < 180 and info.fps == pytest.approx(30)


def _check_single(info: VideoInfo) -> None:
    assert (info.frame_count, info.fps, info.vfr) == (1, 30.0, False)
    assert info.duration == pytest.approx(1 / 30)


def _check_vfr(info: VideoInfo) -> None:
    # Typical interval 0.1 s: a 10 fps grid, up to a slot showing the last frame (3.25 s).
    assert info.vfr and info.fps == pytest.approx(10.0)
    assert info.frame_count == 34


def _check_rotated(info: VideoInfo) -> None:
    assert (info.rotation, info.width, info.height) == (90, 96, 160)


def _check_8k(info: VideoInfo) -> None:
    assert (info.width, info.height, info.frame_count) == (7680, 4320, 1)


def _check_anamorphic(info: VideoInfo) -> None:
    # 160x96 stored, pixels twice as wide as tall: shown (and resized) as 320x96.
    assert (info.width, info.height) == (320, 96)


def _corrupt_samples() -> frozenset[int]:
    return frozenset(i for i in range(*CORRUPT) if i % 15 == 0)


CASES: dict[str, Case] = {
    "missing file": Case(_missing, error=r"not found"),
    "empty file": Case(_empty, error=r"file is empty"),
    "text renamed .mp4": Case(
        lambda d: write_text_as_mp4(d / "notes.mp4"), error=r"not a readable video container"
    ),
    "random bytes": Case(
        lambda d: write_garbage(d / "random.mp4", 50_000),
        error=r"not a readable video container|no video stream|no frame",
    ),
    "truncated, index at end": Case(_truncated_index_at_end, error=r"not a readable video"),
    "truncated, index at front": Case(
        _truncated_faststart,
        check=_check_faststart,
        # decord gives up on the partial last packet while opening.
        error_on=frozenset({"decord"}),
    ),
    "corrupt middle": Case(
        _corrupt_middle,
        allowed_missing=frozenset(range(*CORRUPT)),
        # decord's frame-threaded decoder has packets of the damaged GOP in flight
        # while it is still outputting the GOP before, and can fail on those frames.
        also_missing_on={"decord": frozenset(range(CORRUPT[0] - 30, CORRUPT[0]))},
        required_missing=_corrupt_samples(),
    ),
    "audio only": Case(lambda d: write_audio_only(d / "tone.m4a"), error=r"no video stream"),
    "zero duration": Case(
        lambda d: write_frameless_video(d / "noframes.avi"), error=r"no frame|no video stream"
    ),
    "single frame": Case(
        lambda d: write_video(d / "one.mp4", seconds=1 / 30, codec=H264), check=_check_single
    ),
    "variable frame rate": Case(
        lambda d: write_video(d / "vfr.mp4", timestamps=VFR_TIMES, codec=H264), check=_check_vfr
    ),
    "rotated phone video": Case(
        lambda d: write_video(d / "phone.mp4", seconds=2, codec=H264, rotation=90),
        check=_check_rotated,
        rotation=90,
    ),
    "8K": Case(
        lambda d: write_video(d / "8k.mp4", seconds=1 / 30, codec=H264, width=7680, height=4320),
        check=_check_8k,
    ),
    "non-square pixels": Case(
        lambda d: write_video(
            d / "anamorphic.mp4", seconds=1, codec=H264, sample_aspect_ratio=Fraction(2)
        ),
        check=_check_anamorphic,
    ),
    "unsupported codec": Case(
        lambda d: write_unknown_codec(d / "unknown.mp4"), error=r"unsupported video codec"
    ),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """Makes each case's file once, on first use."""
    directory = tmp_path_factory.mktemp("bad-videos")
    made: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in made:
            made[name] = CASES[name].make(directory)
        return made[name]

    yield get


@pytest.fixture(scope="module")
def workers() -> Iterator[dict[str, DecodeWorker]]:
    shared = {name: DecodeWorker(name, start_timeout=300) for name in AVAILABLE}
    yield shared
    for worker in shared.values():
        worker.close()


def _expected_counter(case: str, index: int, info: VideoInfo) -> int:
    if case == "variable frame rate":
        # The frame on screen at index / fps.
        return int(np.searchsorted(VFR_TIMES, index / info.fps + 1e-9, side="right")) - 1
    return index


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_video_matrix(
    case: str,
    backend: str,
    inputs: Callable[[str], str],
    workers: dict[str, DecodeWorker],
) -> None:
    spec = CASES[case]
    path = inputs(case)
    worker = workers[backend]
    if spec.error is not None or backend in spec.error_on:
        expected = NotFound if case == "missing file" else VideoError
        with pytest.raises(expected) as caught:
            info = worker.probe(path, timeout=60)
            # Some damage only shows when decoding: that must fail as clearly.
            worker.read(path, range(info.frame_count), 32, 32, timeout=60)
        message = str(caught.value)
        assert path in message
        if spec.error is not None:
            assert re.search(spec.error, message), message
        return

    info = worker.probe(path, timeout=60)
    assert info.path == path and info.frame_count > 0 and info.fps > 0
    if spec.check is not None:
        spec.check(info)
    indices = sample_indices(info, 0.0, info.duration, 2.0)
    h, w = resized_shape(info.width, info.height, 640 * 360)
    got = worker.read(path, indices, h, w, timeout=60, on_error="skip")
    allowed = spec.allowed_missing | spec.also_missing_on.get(backend, frozenset())
    assert set(got.missing) <= allowed, got.error
    assert spec.required_missing <= set(got.missing)
    assert (got.error != "") == bool(got.missing)
    if got.missing:
        assert path in got.error
    assert got.frames.shape == (len(got.indices), h, w, 3)
    assert list(got.indices) == [i for i in indices if i not in got.missing]
    for index, frame in zip(got.indices, got.frames, strict=True):
        upright = np.rot90(frame, -spec.rotation // 90)
        assert read_counter(upright) == _expected_counter(case, index, info), (index, case)


def test_corrupt_middle_raises_by_default_naming_the_frame(
    inputs: Callable[[str], str], workers: dict[str, DecodeWorker]
) -> None:
    path = inputs("corrupt middle")
    for worker in workers.values():
        with pytest.raises(VideoError, match=rf"{re.escape(path)}.*frame 1[23]\d"):
            worker.read(path, [0, 130, 200], 32, 32, timeout=60)
        # Frames outside the damage still decode in raise mode.
        frames = worker.read(path, [0, 100, 200, 299], 96, 160, timeout=60)
        assert [read_counter(f) for f in frames] == [0, 100, 200, 299]


def test_truncated_faststart_indexes_what_is_there(
    inputs: Callable[[str], str], workers: dict[str, DecodeWorker]
) -> None:
    path = inputs("truncated, index at front")
    for name in {"pyav", "torchcodec"} & set(workers):
        worker = workers[name]
        info = worker.probe(path, timeout=60)
        got = worker.read(path, range(info.frame_count), 96, 160, timeout=60, on_error="skip")
        counters = [read_counter(f) for f in got.frames]
        # Frames come back in order; only frames near the cut may be missing
        # (PyAV's frame-threaded decoder loses a few when draining after the cut).
        assert counters[0] == 0 and counters == sorted(counters), name
        assert all(i >= info.frame_count - 8 for i in got.missing), name
