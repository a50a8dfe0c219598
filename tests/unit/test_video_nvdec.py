"""The NVDEC backend up to the hardware decoder: PyNvVideoCodec replaced by a PyAV stand-in.

The backend's own work is checked here: PyAV's index and probe, frame numbers handed
to the decoder, resizing and turning frames upright with torch, the PyAV fallback
for files NVDEC cannot open, and errors. ``benchmarks/nvdec_decode.py`` runs the real
decoder on the GPU machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.support import fake_nvc
from tests.support.videos import NvdecOnCpu, read_counter, write_video
from vidseek.indexer.video import BACKENDS, DecodeWorker, NvdecBackend, PyAVBackend
from vidseek.storage.errors import VideoError


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nvdec-videos")


@pytest.fixture(scope="module")
def h264(videos: Path) -> str:
    """4 s at 30 fps, H.264 with B-frames where available (else MPEG-4), keyframes every 30."""
    try:
        return write_video(videos / "h264.mp4", seconds=4, codec="libx264")
    except Exception:
        return write_video(videos / "mpeg4.mp4", seconds=4)


@pytest.fixture
def backend():
    fake_nvc.CALLS.clear()
    nvdec = NvdecOnCpu()
    yield nvdec
    nvdec.close()


def _read(backend, path: str, indices: list[int], size: tuple[int, int]) -> np.ndarray:
    out = np.zeros((len(indices), *size, 3), np.uint8)
    assert backend.read(path, indices, size, out) == {}
    return out


def test_nvdec_is_a_named_backend():
    assert BACKENDS["nvdec"] is NvdecBackend


def _batches() -> list[tuple[list[int], str]]:
    return [(frames, thread) for kind, frames, thread in fake_nvc.CALLS if kind == "batch"]


def test_frames_come_from_the_decoder_by_frame_number_and_match_pyav(backend, h264):
    indices = [0, 7, 30, 31, 64, 119]
    frames = _read(backend, h264, indices, (48, 80))
    assert [read_counter(f) for f in frames] == indices
    assert [frames for frames, _ in _batches()] == [indices]  # too few frames to split
    pyav = PyAVBackend()
    try:
        reference = np.zeros_like(frames)
        pyav.read(h264, indices, (48, 80), reference)
    finally:
        pyav.close()
    # Different resampling filters (torch bilinear with antialiasing, FFmpeg's area).
    assert np.abs(frames.astype(np.int16) - reference).mean() < 6.0
    assert backend.probe(h264).frame_count == 120


def test_a_window_is_split_in_runs_decoded_on_several_threads(backend, h264):
    indices = list(range(0, 120, 2))  # 60 frames: 8 runs of 7-8 consecutive frames
    frames = _read(backend, h264, indices, (48, 80))
    assert [read_counter(f) for f in frames] == indices
    batches = _batches()
    assert len(batches) == NvdecOnCpu.threads
    runs = sorted(run for run, _ in batches)
    assert [i for run in runs for i in run] == indices  # consecutive runs, each frame once
    assert all(len(run) >= NvdecOnCpu.min_run_frames for run, _ in batches)
    assert len({thread for _, thread in batches}) > 1
    # A thread opens the file once and keeps its decoder for the next windows.
    _read(backend, h264, indices, (48, 80))
    opened = [thread for kind, _, thread in fake_nvc.CALLS if kind == "open"]
    assert len(opened) == len(set(opened)) <= NvdecOnCpu.threads
    assert len(_batches()) == 2 * NvdecOnCpu.threads


def test_a_decode_pool_of_nvdec_runs_one_process(h264):
    from vidseek.indexer.decode_pool import DecodePool

    pool = DecodePool(NvdecOnCpu, 8)
    try:
        assert pool.size == 1
        frames = pool.submit(lambda w: w.read(h264, [4, 50], 48, 80, timeout=60)).result()
        assert [read_counter(f) for f in frames] == [4, 50]
    finally:
        pool.close()
    assert DecodePool("pyav", 3).size == 3


def test_full_size_frames_are_not_resampled(backend, h264):
    frames = _read(backend, h264, [5, 6], (96, 160))
    assert [read_counter(f) for f in frames] == [5, 6]


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_video_comes_out_upright(backend, videos, rotation):
    path = write_video(videos / f"rot{rotation}.mp4", seconds=1, rotation=rotation)
    info = backend.probe(path)
    upright = (96, 160) if rotation == 180 else (160, 96)
    assert (info.height, info.width) == upright
    size = (upright[0] // 2, upright[1] // 2)
    frames = _read(backend, path, [3, 17], size)
    assert frames.shape == (2, *size, 3)
    assert [read_counter(np.rot90(f, -rotation // 90)) for f in frames] == [3, 17]


def test_a_file_nvdec_cannot_open_is_decoded_with_pyav(backend, videos, caplog):
    path = write_video(videos / "nonvdec.mp4", seconds=1)
    with caplog.at_level(logging.WARNING):
        first = _read(backend, path, [2, 20], (48, 80))
        again = _read(backend, path, [9], (48, 80))
    assert [read_counter(f) for f in first] == [2, 20] and read_counter(again[0]) == 9
    assert "decoding it with PyAV" in caplog.text and "nonvdec.mp4" in caplog.text
    assert caplog.text.count("NVDEC cannot decode") == 1  # not tried again
    assert not [c for c in fake_nvc.CALLS if c[0] == "batch"]


def test_a_frame_past_the_end_is_an_error_naming_it(backend, h264):
    with pytest.raises(VideoError, match="frame 120 is past the end"):
        _read(backend, h264, [3, 120], (48, 80))


def test_without_pynvvideocodec_the_backend_says_what_is_missing():
    class Missing(NvdecBackend):
        module = "vidseek_no_such_module"

    with pytest.raises(RuntimeError, match="cannot import vidseek_no_such_module"):
        Missing()


def test_the_backend_decodes_in_a_worker_process(h264):
    with DecodeWorker(NvdecOnCpu) as worker:
        frames = worker.read(h264, [1, 45, 90], 48, 80, timeout=60)
    assert [read_counter(f) for f in frames] == [1, 45, 90]
