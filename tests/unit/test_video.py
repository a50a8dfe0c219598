"""Probing, sampling and decoding (indexer/video.py) on small generated videos.

Worker processes take ~0.5-1 s to start, so the tests share one worker per
backend where the test is not about the worker's life cycle.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.videos import (
    BLUE,
    CRASH_INDEX,
    GREEN,
    HANG_INDEX,
    RED,
    SLOW_INDEX,
    DecordWithoutPyAV,
    FaultyBackend,
    PyAVDecodingEveryFrame,
    PyAVInPairs,
    available_codec,
    read_counter,
    region_color,
    torchcodec_missing,
    truncate,
    write_audio_only,
    write_frameless_video,
    write_garbage,
    write_text_as_mp4,
    write_video,
)
from vidseek.indexer.types import VideoInfo
from vidseek.indexer.video import (
    DecodedFrames,
    DecodeWorker,
    FrameReader,
    PyAVBackend,
    _frame_timeline,
    probe,
    resized_shape,
    sample_indices,
)
from vidseek.indexer.video.backend_pyav import _PyAVFile
from vidseek.storage.errors import ConfigError, DecodeTimeout, NotFound, VideoError

_NO_TORCHCODEC = torchcodec_missing()
BACKENDS = [
    "decord",
    "pyav",
    pytest.param(
        "torchcodec", marks=pytest.mark.skipif(bool(_NO_TORCHCODEC), reason=str(_NO_TORCHCODEC))
    ),
]
AVAILABLE = ["decord", "pyav"] + ([] if _NO_TORCHCODEC else ["torchcodec"])
H264 = available_codec("libx264")


def close_to(actual: tuple[int, int, int], expected: tuple[int, int, int], tol: int = 24) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="module")
def rgb_video(videos: Path) -> str:
    """6 s at 30 fps: red for 0-2 s, green 2-4 s, blue 4-6 s; H.264 with B-frames if possible."""
    return write_video(
        videos / "rgb.mp4",
        seconds=6,
        fps=30,
        colors=[RED, RED, GREEN, GREEN, BLUE, BLUE],
        codec=H264,
    )


@pytest.fixture(scope="module")
def long_video(videos: Path) -> str:
    """20 s at 30 fps (600 frames), keyframes every 60: long enough for real seeks."""
    return write_video(videos / "long.mp4", seconds=20, fps=30, width=96, height=64, gop=60)


@pytest.fixture(scope="module")
def workers() -> Iterator[dict[str, DecodeWorker]]:
    """One shared worker per backend."""
    shared = {name: DecodeWorker(name, start_timeout=300) for name in AVAILABLE}
    yield shared
    for each in shared.values():
        each.close()


@pytest.fixture(params=BACKENDS)
def worker(request: pytest.FixtureRequest, workers: dict[str, DecodeWorker]) -> DecodeWorker:
    return workers[request.param]


# --------------------------------------------------------------------------- probing


def test_probe_reports_fps_frames_duration_size(worker: DecodeWorker, rgb_video: str) -> None:
    info = worker.probe(rgb_video, timeout=30)
    assert info == VideoInfo(
        path=rgb_video,
        fps=30.0,
        frame_count=180,
        duration=6.0,
        width=160,
        height=96,
        codec="h264" if H264 == "libx264" else "mpeg4",
        rotation=0,
    )


@pytest.mark.parametrize(
    ("name", "fps", "seconds"),
    [("ntsc.mp4", 30000 / 1001, 3.0), ("slow.mkv", 12, 2.5)],
)
def test_probe_fractional_fps_and_matroska(
    worker: DecodeWorker, videos: Path, name: str, fps: float, seconds: float
) -> None:
    # Matroska has no frame count in its header: PyAV counts packets, like decord.
    path = write_video(videos / f"{worker.backend.name}-{name}", seconds=seconds, fps=fps)
    info = worker.probe(path, timeout=30)
    assert info.fps == pytest.approx(fps, rel=1e-3)
    assert info.frame_count == round(seconds * fps)
    assert info.duration == pytest.approx(info.frame_count / info.fps)


def test_module_probe_uses_its_own_worker(rgb_video: str) -> None:
    info = probe(rgb_video, timeout=30)
    assert (info.fps, info.frame_count, info.width, info.height) == (30.0, 180, 160, 96)


def test_probe_missing_file_is_not_found(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.mp4")
    with pytest.raises(NotFound, match=r"nope\.mp4"):
        probe(missing, timeout=5)


def _bad_inputs(directory: Path, good: str) -> dict[str, str]:
    empty = directory / "empty.mp4"
    empty.write_bytes(b"")
    faststart = write_video(directory / "fast.mp4", seconds=6, codec=H264, faststart=True)
    return {
        "empty": str(empty),
        "text": write_text_as_mp4(directory / "notes.mp4"),
        "random": write_garbage(directory / "random.mp4", 20_000),
        "truncated": truncate(shutil.copy(good, directory / "truncated.mp4"), 0.5),
        "truncated-faststart": truncate(shutil.copy(faststart, directory / "cut-fast.mp4"), 0.5),
        "audio-only": write_audio_only(directory / "tone.m4a"),
        "no-frames": write_frameless_video(directory / "noframes.avi"),
        "directory": str(directory),
    }


def test_bad_inputs_raise_video_error_naming_the_path(
    worker: DecodeWorker, rgb_video: str, tmp_path: Path
) -> None:
    for kind, path in _bad_inputs(tmp_path, rgb_video).items():
        try:
            info = worker.probe(path, timeout=30)
            # A cut file with its index in front may probe fine; decoding must fail.
            frames = worker.read(path, range(info.frame_count), 96, 160, timeout=30)
        except VideoError as caught:
            assert path in str(caught), kind
        else:
            # Unless the cut fell between two frames: the probe demuxes the whole
            # stream, so the file is then a shorter video of the frames it still has
            # (6 s were written), and every one of them reads.
            size = os.path.getsize(path)
            assert kind == "truncated-faststart", f"{kind} ({path}, {size} bytes) read fine"
            assert 0 < info.frame_count < 180 and len(frames) == info.frame_count, info
    with pytest.raises(NotFound, match=r"missing\.mp4"):
        worker.probe(tmp_path / "missing.mp4", timeout=30)
    # The worker still serves good files after all that.
    assert worker.probe(rgb_video, timeout=30).frame_count == 180


def test_bad_input_messages_say_what_is_wrong(
    workers: dict[str, DecodeWorker], tmp_path: Path
) -> None:
    pyav = workers["pyav"]
    with pytest.raises(VideoError, match="empty"):
        pyav.probe(_touch(tmp_path / "empty.mp4"), timeout=30)
    with pytest.raises(VideoError, match="no video stream"):
        pyav.probe(write_audio_only(tmp_path / "tone.m4a"), timeout=30)
    with pytest.raises(VideoError, match="no frames"):
        pyav.probe(write_frameless_video(tmp_path / "none.avi"), timeout=30)
    # decord's own message is vague ("Error reading ..."): FFmpeg's log says why.
    with pytest.raises(VideoError, match="moov atom not found"):
        workers["decord"].probe(write_text_as_mp4(tmp_path / "notes.mp4"), timeout=30)


def _touch(path: Path) -> str:
    path.write_bytes(b"")
    return str(path)


# --------------------------------------------------------------------------- planning helpers


@pytest.mark.parametrize(
    ("width", "height", "max_pixels", "expected"),
    [
        (640, 360, 640 * 360, (352, 640)),
        (1920, 1080, 640 * 360, (352, 640)),
        (1080, 1920, 640 * 360, (640, 352)),
        (1280, 720, 10**9, (704, 1280)),  # never upscaled
        (448, 256, 448 * 256, (256, 448)),
        (10, 10, 10**6, (32, 32)),  # at least 32
        (4000, 100, 500_000, (96, 4000 // 32 * 32)),
        (640, 360, 100, (32, 32)),  # below 32x32 the minimum wins
        (100_000, 10, 100_000, (32, 3104)),  # extreme aspect: the long side gives way
    ],
)
def test_resized_shape_cases(
    width: int, height: int, max_pixels: int, expected: tuple[int, int]
) -> None:
    assert resized_shape(width, height, max_pixels) == expected


def test_resized_shape_invariants() -> None:
    for width in range(40, 4000, 97):
        for height in range(40, 2200, 83):
            for max_pixels in (256 * 448, 640 * 360, 1280 * 720):
                h, w = resized_shape(width, height, max_pixels)
                assert h % 32 == 0 and w % 32 == 0 and h >= 32 and w >= 32
                assert h * w <= max_pixels
                assert h <= max(32, height + 16) and w <= max(32, width + 16)
                if h >= 128 and w >= 128:
                    assert abs(math.log((w / h) / (width / height))) < 0.2


@pytest.mark.parametrize("args", [(0, 10, 100), (10, -1, 100), (10, 10, 0)])
def test_resized_shape_rejects_nonsense(args: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        resized_shape(*args)


def _info(fps: float = 30.0, frames: int = 600) -> VideoInfo:
    return VideoInfo(
        path="v.mp4", fps=fps, frame_count=frames, duration=frames / fps, width=640, height=360
    )


def test_sample_indices_mid_video_window_is_absolute_and_even() -> None:
    assert sample_indices(_info(), 10.0, 20.0, 1.0) == list(range(300, 600, 30))
    assert sample_indices(_info(), 10.0, 20.0, 2.0) == list(range(300, 600, 15))


def test_sample_indices_pads_odd_counts_with_the_last_index() -> None:
    assert sample_indices(_info(), 10.0, 15.0, 1.0) == [300, 330, 360, 390, 420, 420]
    assert sample_indices(_info(), 10.0, 10.5, 1.0) == [300, 300]


def test_sample_indices_clamps_to_the_last_frame() -> None:
    # frame_count 600 at 30 fps ends at 20 s; samples at 20 s and later clamp to 599.
    assert sample_indices(_info(), 18.0, 25.0, 1.0) == [540, 570, 599, 599]
    assert sample_indices(_info(frames=590), 18.0, 20.0, 1.0) == [540, 570]


def test_sample_indices_empty_window_and_bad_fps() -> None:
    assert sample_indices(_info(), 5.0, 5.0, 1.0) == []
    assert sample_indices(_info(), 6.0, 5.0, 1.0) == []
    with pytest.raises(ValueError):
        sample_indices(_info(), 0.0, 5.0, 0.0)


def test_sample_indices_timestamps_stay_in_window_for_ntsc() -> None:
    info = _info(fps=30000 / 1001, frames=10_000)
    for start, end, fps in [(60.0, 120.0, 1.0), (0.5, 30.25, 2.0), (100.0, 101.0, 3.0)]:
        indices = sample_indices(info, start, end, fps)
        assert len(indices) % 2 == 0
        assert indices == sorted(indices)
        for index in indices:
            assert start <= index / info.fps < end
        assert len(set(indices)) == math.ceil((end - start) * fps)


# --------------------------------------------------------------------------- frame timelines


def test_timeline_constant_rate_keeps_the_header_rate() -> None:
    ntsc = 30000 / 1001
    timeline = _frame_timeline(np.arange(300) / ntsc, ntsc)
    assert (timeline.fps, timeline.frame_count, timeline.vfr) == (ntsc, 300, False)
    assert timeline.frames([0, 17, 299]).tolist() == [0, 17, 299]
    # Millisecond timestamps (Matroska) jitter by a tick: still constant.
    assert not _frame_timeline(np.round(np.arange(100) / ntsc, 3), ntsc).vfr


def test_timeline_prefers_timestamps_over_a_wrong_header_and_sorts_them() -> None:
    stamps = np.arange(50) / 25.0
    timeline = _frame_timeline(stamps[::-1], 30.0)  # decode order does not matter
    assert (timeline.fps, timeline.frame_count, timeline.vfr) == (25.0, 50, False)


def test_timeline_variable_rate_maps_slots_to_the_frame_on_screen() -> None:
    times = [0.0, 0.1, 0.15, 0.5, 1.5, 1.55, 1.6, 3.0, 3.2, 3.25]
    timeline = _frame_timeline(np.asarray(times) + 7.0, 0.0)  # any start time
    assert timeline.vfr and timeline.fps == pytest.approx(10.0)
    assert timeline.frame_count == 34  # slots 0..33: slot 33 (3.3 s) shows the last frame
    # Slot i is shown at i / 10 s: the last frame that started by then.
    assert timeline.frames([0, 1, 2, 4, 5, 14, 15, 16, 30, 32, 33]).tolist() == [
        0, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9
    ]  # fmt: skip


def test_timeline_dropped_frame_is_variable_and_repeats_the_frame_before() -> None:
    stamps = np.delete(np.arange(60) / 30.0, 20)  # frame 20 dropped
    timeline = _frame_timeline(stamps, 30.0)
    assert timeline.vfr and timeline.fps == 30.0 and timeline.frame_count == 60
    assert timeline.frames([19, 20, 21, 59]).tolist() == [19, 19, 20, 58]


def test_timeline_single_frame_and_nothing() -> None:
    assert _frame_timeline([0.0], 25.0).frame_count == 1
    with pytest.raises(VideoError, match="no usable frame rate"):
        _frame_timeline([0.0], 0.0)
    with pytest.raises(VideoError, match="no frames"):
        _frame_timeline([], 25.0)


# --------------------------------------------------------------------------- decoding


def test_reader_returns_the_right_colours_at_absolute_indices(
    worker: DecodeWorker, rgb_video: str
) -> None:
    with FrameReader(rgb_video, worker=worker, timeout=30) as reader:
        info = reader.probe()
        indices = sample_indices(info, 0.0, 6.0, 1.0)
        assert indices == [0, 30, 60, 90, 120, 150]
        frames = reader.read(indices)
        assert frames.shape == (6, 96, 160, 3) and frames.dtype == np.uint8
        assert [read_counter(f) for f in frames] == indices
        by_second = dict(zip(indices, frames, strict=True))
        assert close_to(region_color(by_second[30]), RED)  # 1 s
        assert close_to(region_color(by_second[90]), GREEN)  # 3 s
        assert close_to(region_color(by_second[150]), BLUE)  # 5 s


def test_reader_resizes_keeps_order_and_repeats(worker: DecodeWorker, rgb_video: str) -> None:
    with FrameReader(rgb_video, worker=worker, timeout=30) as reader:
        frames = reader.read([151, 31, 31, 91, 179], 48, 80)
        assert frames.shape == (5, 48, 80, 3)
        assert [read_counter(f) for f in frames] == [151, 31, 31, 91, 179]
        assert np.array_equal(frames[1], frames[2])
        assert close_to(region_color(frames[0]), BLUE)
        assert close_to(region_color(frames[1]), RED)
        assert reader.read([], 48, 80).shape == (0, 48, 80, 3)


def test_reader_seeks_forward_and_backward(worker: DecodeWorker, long_video: str) -> None:
    with FrameReader(long_video, worker=worker, timeout=30) as reader:
        for indices in ([599], [0, 1, 2, 3], [400, 401], [100], [0, 300, 599], [598, 599]):
            frames = reader.read(indices, 64, 96)
            assert [read_counter(f) for f in frames] == indices


def test_reader_index_past_the_end_is_a_video_error(worker: DecodeWorker, rgb_video: str) -> None:
    with (
        FrameReader(rgb_video, worker=worker, timeout=30) as reader,
        pytest.raises(VideoError, match=r"rgb\.mp4.*180"),
    ):
        reader.read([179, 180], 96, 160)


def test_worker_serialises_threads(workers: dict[str, DecodeWorker], long_video: str) -> None:
    worker = workers["pyav"]

    def read(start: int) -> list[int]:
        indices = list(range(start, start + 40, 5))
        frames = worker.read(long_video, indices, 64, 96, timeout=30)
        return [read_counter(f) for f in frames]

    starts = [0, 100, 200, 300, 400, 500]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(read, starts))
    assert results == [list(range(s, s + 40, 5)) for s in starts]


def test_backends_decode_the_same_frames(workers: dict[str, DecodeWorker], rgb_video: str) -> None:
    indices = [0, 45, 46, 133, 179]
    decoded = {
        name: worker.read(rgb_video, indices, 64, 128, timeout=30).astype(np.int16)
        for name, worker in workers.items()
    }
    for name in AVAILABLE:
        assert np.abs(decoded[name] - decoded["pyav"]).mean() < 4.0, name


def test_pyav_dropping_non_reference_frames_changes_no_frame(
    workers: dict[str, DecodeWorker], long_video: str, rgb_video: str
) -> None:
    # H.264 with B-frames (rgb_video) and MPEG-4 (long_video), windows back to back.
    with DecodeWorker(PyAVDecodingEveryFrame) as every:
        for path, frames in ((rgb_video, 180), (long_video, 600)):
            for start in range(0, frames, frames // 3):
                wanted = list(range(start, min(start + frames // 3, frames), 7))
                fast = workers["pyav"].read(path, wanted, 48, 80, timeout=30)
                slow = every.read(path, wanted, 48, 80, timeout=30)
                assert np.array_equal(fast, slow), (path, start)
                assert [read_counter(f) for f in fast] == wanted


def test_pyav_indexes_each_file_once_while_switching_between_files(
    long_video: str, rgb_video: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pool worker gets windows of several videos in turn: each file is demuxed
    # once, and what is read after a switch equals a fresh backend's read.
    scans: list[str] = []
    original = _PyAVFile._scan

    def counting_scan(self: _PyAVFile) -> Any:
        scans.append(self.container.name)
        return original(self)

    monkeypatch.setattr(_PyAVFile, "_scan", counting_scan)
    backend = PyAVBackend()
    wanted = {long_video: [[10, 100, 170], [400, 590]], rgb_video: [[3, 90], [120, 179]]}
    try:
        for round_ in range(2):
            for path, runs in wanted.items():
                out = np.zeros((len(runs[round_]), 32, 48, 3), np.uint8)
                backend.read(path, runs[round_], (32, 48), out)
                assert [read_counter(f) for f in out] == runs[round_], (path, round_)
    finally:
        backend.close()
    assert sorted(scans) == sorted(wanted)


def test_pyav_keeps_no_index_of_a_damaged_stream(
    long_video: str, rgb_video: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans: list[str] = []
    original = _PyAVFile._scan

    def damaged_scan(self: _PyAVFile) -> Any:
        scans.append(self.container.name)
        index = original(self)
        if self.container.name == long_video:  # as if demuxing had stopped early
            return replace(index, errors=("demuxing stopped: I/O error",))
        return index

    monkeypatch.setattr(_PyAVFile, "_scan", damaged_scan)
    backend = PyAVBackend()
    try:
        for _ in range(2):
            backend.probe(long_video)
            backend.probe(rgb_video)
    finally:
        backend.close()
    assert scans.count(long_video) == 2 and scans.count(rgb_video) == 1


def test_pyav_indexes_a_file_again_when_it_changes(videos: Path) -> None:
    path = videos / "rewritten.mp4"
    backend = PyAVBackend()
    try:
        write_video(path, seconds=1, fps=30)
        assert backend.probe(str(path)).frame_count == 30
        write_video(videos / "other.mp4", seconds=1, fps=30)
        backend.probe(str(videos / "other.mp4"))  # closes the first file
        write_video(videos / "longer.mp4", seconds=3, fps=30)
        os.replace(videos / "longer.mp4", path)
        assert backend.probe(str(path)).frame_count == 90
        out = np.zeros((1, 32, 48, 3), np.uint8)
        backend.read(str(path), [80], (32, 48), out)
        assert read_counter(out[0]) == 80
    finally:
        backend.close()


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_video_is_decoded_upright(
    worker: DecodeWorker, videos: Path, rotation: int
) -> None:
    path = write_video(
        videos / f"{worker.backend.name}-rot{rotation}.mp4", seconds=1, rotation=rotation
    )
    with FrameReader(path, worker=worker, timeout=30) as reader:
        info = reader.probe()
        assert info.rotation == rotation
        upright = (96, 160) if rotation == 180 else (160, 96)
        assert (info.height, info.width) == upright
        size = (upright[0] // 2, upright[1] // 2)
        for frames in (reader.read([3, 17]), reader.read([3, 17], *size)):
            # Undo the display rotation to find the counter the writer drew.
            assert [read_counter(np.rot90(f, -rotation // 90)) for f in frames] == [3, 17]
        assert frames.shape == (2, *size, 3)


def test_decord_without_pyav_still_decodes_rotated_video_upright(videos: Path) -> None:
    path = write_video(videos / "rot90-nopyav.mp4", seconds=1, rotation=90)
    with FrameReader(path, backend=DecordWithoutPyAV, timeout=30) as reader:
        info = reader.probe()
        assert (info.height, info.width, info.codec) == (160, 96, "")
        frames = reader.read([3, 17], 80, 48)
        assert frames.shape == (2, 80, 48, 3)
        assert [read_counter(np.rot90(f, -1)) for f in frames] == [3, 17]


def test_skip_mode_returns_frames_in_request_order(worker: DecodeWorker, rgb_video: str) -> None:
    got = worker.read(rgb_video, [151, 31, 31, 91], 48, 80, timeout=30, on_error="skip")
    assert isinstance(got, DecodedFrames) and got.complete and got.error == ""
    assert got.indices == (151, 31, 31, 91) and got.missing == ()
    assert [read_counter(f) for f in got.frames] == [151, 31, 31, 91]
    paired = worker.read(rgb_video, [3, 4, 5], 48, 80, timeout=30, on_error="skip").paired()
    assert paired.indices == (3, 4, 5, 5) and len(paired.frames) == 4
    empty = worker.read(rgb_video, [], 48, 80, timeout=30, on_error="skip")
    assert empty.frames.shape == (0, 48, 80, 3) and empty.indices == ()


def test_skip_mode_still_raises_for_the_whole_file(worker: DecodeWorker, tmp_path: Path) -> None:
    bad = write_text_as_mp4(tmp_path / "notes.mp4")
    with pytest.raises(VideoError, match=r"notes\.mp4"):
        worker.read(bad, [0, 1], 32, 32, timeout=30, on_error="skip")


def test_on_error_must_be_raise_or_skip(rgb_video: str) -> None:
    with FrameReader(rgb_video, backend="pyav") as reader, pytest.raises(ValueError, match="skip"):
        reader.read([0], 32, 32, on_error="ignore")  # type: ignore[call-overload]


# --------------------------------------------------------------------------- the worker process


def test_hang_becomes_decode_timeout_and_crash_a_video_error(rgb_video: str, videos: Path) -> None:
    with DecodeWorker(FaultyBackend) as faulty:
        reader = FrameReader(rgb_video, worker=faulty, timeout=1.0)
        assert [read_counter(f) for f in reader.read([0, 1])] == [0, 1]
        first_pid = faulty.pid

        started = time.monotonic()
        with pytest.raises(DecodeTimeout, match=r"rgb\.mp4.*1 s"):
            reader.read([HANG_INDEX])
        assert time.monotonic() - started < 10
        assert faulty.pid is None  # killed
        assert [read_counter(f) for f in reader.read([2, 3])] == [2, 3]
        assert faulty.pid not in (None, first_pid)

        with pytest.raises(VideoError, match=r"rgb\.mp4.*SIGSEGV") as crashed:
            reader.read([CRASH_INDEX, 40])
        assert not isinstance(crashed.value, DecodeTimeout)
        assert [read_counter(f) for f in reader.read([4, 5])] == [4, 5]

        # A worker that dies between requests is replaced silently.
        pid = faulty.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        assert [read_counter(f) for f in reader.read([6, 8])] == [6, 8]

        hanging = shutil.copy(rgb_video, videos / "hang-on-probe.mp4")
        with pytest.raises(DecodeTimeout, match=r"hang-on-probe\.mp4.*probing"):
            faulty.probe(hanging, timeout=1.0)
        assert faulty.probe(rgb_video, timeout=30).frame_count == 180


def test_a_worker_taking_two_requests_decodes_them_at_once_in_one_process(
    rgb_video: str,
) -> None:
    # PyAVInPairs decodes only with a second read running beside it in its process.
    with DecodeWorker(PyAVInPairs) as worker:
        assert worker.requests == 2

        def read(start: int) -> tuple[int | None, list[int]]:
            frames = worker.read(rgb_video, [start, start + 9], 32, 64, timeout=60)
            return worker.pid, [read_counter(f) for f in frames]

        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(read, [0, 1, 2, 3]))
    assert [frames for _, frames in results] == [[k, k + 9] for k in range(4)]
    assert len({pid for pid, _ in results}) == 1


def test_a_hang_on_one_request_channel_leaves_the_other_free_then_both_go_on(
    rgb_video: str,
) -> None:
    with DecodeWorker(FaultyBackend, requests=2) as faulty:
        assert [read_counter(f) for f in faulty.read(rgb_video, [0], 32, 64, timeout=30)] == [0]
        assert [read_counter(f) for f in faulty.read(rgb_video, [1], 32, 64, timeout=30)] == [1]
        first_pid = faulty.pid
        with ThreadPoolExecutor(max_workers=1) as pool:
            hanging = pool.submit(faulty.read, rgb_video, [HANG_INDEX], 32, 64, timeout=8.0)
            # Served on the other channel while the first hangs.
            beside = faulty.read(rgb_video, [2, 3], 32, 64, timeout=30)
            assert not hanging.done()
            with pytest.raises(DecodeTimeout):
                hanging.result()
        assert [read_counter(f) for f in beside] == [2, 3]
        # Both channels take the new process's pipes.
        for start in (20, 30, 40):  # clear of CRASH_INDEX and HANG_INDEX
            frames = faulty.read(rgb_video, [start, start + 1], 32, 64, timeout=30)
            assert [read_counter(f) for f in frames] == [start, start + 1]
        assert faulty.pid not in (None, first_pid)
    with pytest.raises(ValueError, match="requests must be >= 0"):
        DecodeWorker("pyav", requests=-1)


@pytest.mark.parametrize("on_error", ["skip", "raise"])
def test_a_request_whose_process_crashed_beside_it_is_sent_again(
    rgb_video: str, on_error: str
) -> None:
    with DecodeWorker(FaultyBackend, requests=2) as faulty:
        faulty.read(rgb_video, [0], 32, 64, timeout=30)  # the process started
        with ThreadPoolExecutor(max_workers=1) as pool:
            # A one-frame request, decoding when the request beside it crashes the process.
            innocent = pool.submit(
                faulty.read, rgb_video, [SLOW_INDEX], 32, 64, timeout=60, on_error=on_error
            )
            time.sleep(0.5)
            crashed = faulty.read(rgb_video, [CRASH_INDEX], 32, 64, timeout=60, on_error="skip")
            got = innocent.result()
        assert crashed.missing == (CRASH_INDEX,) and "SIGSEGV" in crashed.error
        frames = got.frames if on_error == "skip" else got
        assert [read_counter(f) for f in frames] == [SLOW_INDEX]


def test_closing_a_worker_lets_the_request_in_flight_finish(rgb_video: str) -> None:
    worker = DecodeWorker(FaultyBackend)
    with ThreadPoolExecutor(max_workers=1) as pool:
        reading = pool.submit(worker.read, rgb_video, [SLOW_INDEX], 32, 64, timeout=60)
        time.sleep(0.5)
        pid = worker.pid
        worker.close()
        assert reading.done()  # close() waited for it
        assert [read_counter(f) for f in reading.result()] == [SLOW_INDEX]
    assert pid is not None and not _alive(pid)
    with pytest.raises(ValueError, match="closed"):
        worker.read(rgb_video, [0], 32, 64, timeout=30)


def test_reader_owns_and_stops_its_worker(rgb_video: str) -> None:
    with FrameReader(rgb_video, backend="pyav", timeout=30) as reader:
        reader.read([0, 1], 32, 64)
        pid = reader.worker.pid
        assert pid is not None
    assert not _alive(pid)
    with pytest.raises(ValueError, match="closed"):
        reader.read([0], 32, 64)


def test_a_worker_given_a_niceness_decodes_at_lower_priority(rgb_video: str) -> None:
    with DecodeWorker("pyav", nice=5) as worker:
        assert len(worker.read(rgb_video, [0, 1], 32, 64, timeout=60)) == 2
        assert worker.pid is not None
        niceness = os.getpriority(os.PRIO_PROCESS, worker.pid)
    assert niceness == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)
    with pytest.raises(ValueError, match="nice must be 0-19"):
        DecodeWorker("pyav", nice=20)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="opencv"):
        DecodeWorker("opencv")


def test_bad_indices_are_rejected_before_decoding(rgb_video: str) -> None:
    with FrameReader(rgb_video, backend="pyav") as reader:
        with pytest.raises(ValueError, match="non-negative"):
            reader.read([-1], 32, 32)
        with pytest.raises(ValueError, match="one-dimensional"):
            reader.read(np.zeros((2, 2), dtype=np.int64), 32, 32)
        assert reader.worker.pid is None  # nothing was started


def test_skip_mode_isolates_a_crashing_frame_and_still_times_out_on_a_hang(rgb_video: str) -> None:
    with DecodeWorker(FaultyBackend) as faulty:
        wanted = [0, 3, CRASH_INDEX, 9, 20, 40]
        got = faulty.read(rgb_video, wanted, 48, 80, timeout=30, on_error="skip")
        assert got.missing == (CRASH_INDEX,)
        assert "SIGSEGV" in got.error and "rgb.mp4" in got.error
        assert got.indices == (0, 3, 9, 20, 40)
        assert [read_counter(f) for f in got.frames] == [0, 3, 9, 20, 40]
        with pytest.raises(DecodeTimeout):
            faulty.read(rgb_video, [HANG_INDEX], 48, 80, timeout=1.0, on_error="skip")


@pytest.mark.skipif(bool(_NO_TORCHCODEC), reason=str(_NO_TORCHCODEC))
def test_torchcodec_cuda_needs_cuda(rgb_video: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available: see tests/gpu")
    with pytest.raises(ConfigError, match=r"torchcodec-cuda.*CUDA"):
        probe(rgb_video, timeout=30, backend="torchcodec-cuda")
