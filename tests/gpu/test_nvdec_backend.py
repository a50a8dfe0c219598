"""The NVDEC backend on a real GPU (PyNvVideoCodec): the frames PyAV's index names, upright.

Skipped without CUDA (tests/conftest.py). The counter that ``write_video`` draws in
every frame shows which frame the hardware decoder returned for each index, through
H.264 B-frames, keyframe seeks, display rotation, a window split over the decoder
threads, windows of several files decoded at once, 1080p and the decoder process.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.support.videos import read_counter, write_video
from vidseek.indexer.video import DecodeWorker

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def workers():
    with DecodeWorker("nvdec", start_timeout=300) as nvdec, DecodeWorker("pyav") as pyav:
        yield nvdec, pyav


def test_nvdec_returns_the_indexed_frames_of_an_h264_video_with_b_frames(workers, tmp_path: Path):
    nvdec, pyav = workers
    path = write_video(
        tmp_path / "b.mp4", seconds=8, codec="libx264", gop=60, width=320, height=192
    )
    indices = [0, 1, 29, 61, 62, 150, 239]
    frames = nvdec.read(path, indices, 96, 160, timeout=120)
    assert [read_counter(f) for f in frames] == indices
    reference = pyav.read(path, indices, 96, 160, timeout=120)
    assert np.abs(frames.astype(np.int16) - reference).mean() < 6.0
    later = nvdec.read(path, [10, 200], 96, 160, timeout=120)  # back and forth
    assert [read_counter(f) for f in later] == [10, 200]


@pytest.mark.parametrize("rotation", [90, 270])
def test_nvdec_frames_come_out_upright(workers, tmp_path: Path, rotation: int):
    nvdec, _ = workers
    path = write_video(tmp_path / f"r{rotation}.mp4", seconds=1, codec="libx264", rotation=rotation)
    frames = nvdec.read(path, [3, 17], 80, 48, timeout=120)
    assert frames.shape == (2, 80, 48, 3)
    assert [read_counter(np.rot90(f, -rotation // 90)) for f in frames] == [3, 17]


def test_nvdec_splits_a_1080p_window_over_its_threads_in_order(workers, tmp_path: Path):
    nvdec, _ = workers
    path = write_video(
        tmp_path / "hd.mp4", seconds=10, codec="libx264", gop=60, width=1920, height=1080
    )
    indices = list(range(0, 300, 5))  # 60 frames: runs on 8 threads
    frames = nvdec.read(path, indices, 256, 448, timeout=300)
    assert [read_counter(f) for f in frames] == indices


def test_nvdec_decodes_windows_of_several_files_at_once_each_whole(workers, tmp_path: Path):
    nvdec, _ = workers
    paths = [
        write_video(tmp_path / f"f{k}.mp4", seconds=6, codec="libx264", gop=30 + 15 * k)
        for k in range(3)
    ]
    work = [(path, list(range(start, start + 60, 2))) for start in (0, 40, 90) for path in paths]

    def read(item: tuple[str, list[int]]) -> list[int]:
        path, indices = item
        return [read_counter(f) for f in nvdec.read(path, indices, 48, 80, timeout=300)]

    assert nvdec.requests == 8
    with ThreadPoolExecutor(max_workers=nvdec.requests) as pool:
        got = list(pool.map(read, work))
    assert got == [indices for _, indices in work]


def test_nvdec_colours_of_an_hd_file_naming_no_matrix_are_ffmpegs(tmp_path: Path):
    """NVDEC's own RGB output converts HD with BT.709 when the file names no matrix;
    FFmpeg, and so PyAV, with BT.601. The NV12 output converted here follows FFmpeg."""
    from vidseek.indexer.video import NvdecBackend, PyAVBackend

    class NvdecRgb(NvdecBackend):
        native_output = False

    path = write_video(
        tmp_path / "hd-colours.mp4", seconds=2, codec="libx264", width=1920, height=1080
    )
    indices, size = [0, 20, 40], (256, 448)
    diffs = {}
    reference = np.zeros((3, *size, 3), np.uint8)
    pyav = PyAVBackend()
    try:
        pyav.read(path, indices, size, reference)
    finally:
        pyav.close()
    for name, backend in (("nv12", NvdecBackend()), ("rgb", NvdecRgb())):
        frames = np.zeros_like(reference)
        try:
            assert backend.read(path, indices, size, frames) == {}
        finally:
            backend.close()
        diffs[name] = float(np.abs(frames.astype(np.int16) - reference).mean())
    assert diffs["nv12"] < diffs["rgb"], diffs
    assert diffs["nv12"] < 4.0, diffs
