"""The NVDEC backend up to the hardware decoder: PyNvVideoCodec replaced by a PyAV stand-in.

The backend's own work is checked here: PyAV's index and probe, frame numbers handed
to the decoder, resizing and turning frames upright with torch, the PyAV fallback
for files NVDEC cannot open, and errors. ``benchmarks/nvdec_decode.py`` runs the real
decoder on the GPU machine.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support import fake_nvc
from tests.support.videos import NvdecOnCpu, read_counter, write_video
from vidseek.indexer.video import (
    BACKENDS,
    DecodeWorker,
    NvdecBackend,
    PyAVBackend,
    pool_backends,
    side_backend,
)
from vidseek.storage.errors import ConfigError, VideoError


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
    fake_nvc.FAIL_AT.clear()
    nvdec = NvdecOnCpu()
    yield nvdec
    nvdec.close()
    fake_nvc.FAIL_AT.clear()
    fake_nvc.OPEN_FAULTS.clear()
    fake_nvc.BATCH_FAULTS.clear()


def _read(backend, path: str, indices: list[int], size: tuple[int, int]) -> np.ndarray:
    out = np.zeros((len(indices), *size, 3), np.uint8)
    assert backend.read(path, indices, size, out) == {}
    return out


def test_nvdec_is_a_named_backend_whose_side_processes_decode_with_pyav():
    assert BACKENDS["nvdec"] is NvdecBackend
    # Probing and refinement run beside the pool: on the CPU, not in a second GPU context.
    assert side_backend("nvdec") == "pyav"
    assert side_backend("pyav") == "pyav" and side_backend("decord") == "decord"


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


def _gradients(path: Path, colorspace: int | None, colour_range: int | None = None) -> str:
    """1 s of smooth, saturated colour gradients (H.264 4:2:0: its stream carries the
    tag), tagged with ``colorspace`` (FFmpeg's AVColorSpace) and ``colour_range``
    (AVColorRange: 1 limited, 2 full) or naming none."""
    import av

    yy, xx = np.mgrid[0:96, 0:160]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"crf": "10"})
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        if colorspace is not None:
            stream.codec_context.colorspace = colorspace
        if colour_range is not None:
            stream.codec_context.color_range = colour_range
        for k in range(30):
            image = np.stack([40 + xx * 1.2, 220 - yy * 1.5 - k, 30 + (xx + yy) * 0.6], axis=-1)
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return str(path)


@pytest.mark.parametrize(
    ("colorspace", "colour_range"),
    [(None, None), (1, 1), (1, 2)],
    ids=["names-none", "bt709", "bt709-full-range"],
)
def test_frames_get_the_colours_ffmpeg_converts_the_file_with(
    videos, colorspace, colour_range, monkeypatch
):
    path = _gradients(
        videos / f"gradients-{colorspace}-{colour_range}.mp4", colorspace, colour_range
    )
    indices, size = [0, 14, 29], (96, 160)
    pyav = PyAVBackend()
    try:
        reference = np.zeros((3, *size, 3), np.uint8)
        pyav.read(path, indices, size, reference)
    finally:
        pyav.close()
    fake_nvc.OUTPUTS.clear()
    nvdec = NvdecOnCpu()
    try:
        frames = _read(nvdec, path, indices, size)
        assert fake_nvc.OUTPUTS == [fake_nvc.OutputColorType.NATIVE]  # NV12 out of the decoder
        # The other matrix (BT.601 <-> BT.709), as NVDEC's own RGB output does for HD files
        # naming none: visibly different colours.
        coded = nvdec._pyav().picture_format(path)
        assert coded.matrix == (1 if colorspace == 1 else 2)
        assert coded.colour_range == (colour_range or 0)
        other_matrix = coded._replace(matrix=6 if coded.matrix == 1 else 1)
        monkeypatch.setattr(PyAVBackend, "picture_format", lambda self, _: other_matrix)
        nvdec.close()
        other = _read(nvdec, path, indices, size)
    finally:
        nvdec.close()
    assert np.abs(frames.astype(np.int16) - reference).mean() < 2.0  # about 1.2
    assert np.abs(other.astype(np.int16) - reference).mean() > 4.0  # about 5


def test_without_native_output_nvdec_converts_to_rgb_itself(h264):
    class NvdecRgb(NvdecOnCpu):
        native_output = False

    fake_nvc.OUTPUTS.clear()
    nvdec = NvdecRgb()
    try:
        frames = _read(nvdec, h264, [0, 7, 30], (48, 80))
    finally:
        nvdec.close()
    assert fake_nvc.OUTPUTS == [fake_nvc.OutputColorType.RGB]
    assert [read_counter(f) for f in frames] == [0, 7, 30]


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


def test_on_two_gpus_a_window_is_decoded_on_both_with_each_threads_decoders_on_one(h264):
    class NvdecOnTwoGpus(NvdecOnCpu):
        gpu_count = 2

    fake_nvc.CALLS.clear()
    fake_nvc.OPENED_ON.clear()
    nvdec = NvdecOnTwoGpus()
    try:
        indices = list(range(0, 120, 2))  # 60 frames: 15 runs, at least 4 frames each
        for _ in range(2):
            assert [read_counter(f) for f in _read(nvdec, h264, indices, (48, 80))] == indices
    finally:
        nvdec.close()
    batches = _batches()
    assert len(batches) == 2 * (60 // NvdecOnCpu.min_run_frames)  # more runs than one GPU's
    gpu_of = dict(fake_nvc.OPENED_ON)
    assert len(gpu_of) == len(fake_nvc.OPENED_ON)  # a thread opened its decoder once
    per_gpu = [sum(1 for gpu in gpu_of.values() if gpu == g) for g in (0, 1)]
    assert min(per_gpu) >= 1 and max(per_gpu) <= NvdecOnCpu.threads


def test_a_decode_pool_of_nvdec_runs_one_process(h264):
    from vidseek.indexer.decode_pool import DecodePool

    pool = DecodePool(NvdecOnCpu, 8)
    try:
        assert pool.processes == 1 and pool.size == NvdecOnCpu.concurrent_requests
        frames = pool.submit(lambda w: w.read(h264, [4, 50], 48, 80, timeout=60)).result()
        assert [read_counter(f) for f in frames] == [4, 50]
    finally:
        pool.close()
    pyav = DecodePool("pyav", 3)
    assert pyav.size == pyav.processes == 3


def test_nvdecs_process_decodes_the_pools_windows_at_once_each_on_its_own_thread(h264):
    from tests.support.videos import NvdecOnCpuInPairs
    from vidseek.indexer.decode_pool import DecodePool

    # Its reads decode only with a second one running beside them in the process.
    pool = DecodePool(NvdecOnCpuInPairs, 1)
    starts = list(range(0, 2 * pool.size))

    def read(worker: DecodeWorker, start: int) -> tuple[int | None, list[int], str]:
        frames = worker.read(h264, list(range(start, start + 60)), 48, 80, timeout=60)
        return worker.pid, [read_counter(f) for f in frames], worker.decoded_by

    try:
        futures = [pool.submit(lambda w, k=k: read(w, k)) for k in starts]
        results = [f.result() for f in futures]
    finally:
        pool.close()
    assert [frames for _, frames, _ in results] == [list(range(k, k + 60)) for k in starts]
    assert len({pid for pid, _, _ in results}) == 1  # one process took them all
    assert {by for _, _, by in results} == {"nvdec-on-cpu"}


def test_requests_for_a_new_file_at_once_probe_it_once(backend, h264, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    probes: list[str] = []
    probe = PyAVBackend.probe

    def slow_probe(self, path):
        probes.append(path)
        time.sleep(0.5)  # the other requests arrive meanwhile
        return probe(self, path)

    monkeypatch.setattr(PyAVBackend, "probe", slow_probe)
    windows = [list(range(start, start + 20)) for start in (0, 30, 60, 90)]
    with ThreadPoolExecutor(max_workers=len(windows)) as pool:
        got = list(pool.map(lambda indices: _read(backend, h264, indices, (48, 80)), windows))
    assert [[read_counter(f) for f in frames] for frames in got] == windows
    assert probes == [h264]


def test_a_whole_window_is_converted_a_few_frames_at_a_time(backend, h264, monkeypatch):
    converted: list[int] = []
    convert = backend._nv12_to_rgb

    def counting(batch, size, picture):
        converted.append(len(batch))
        return convert(batch, size, picture)

    monkeypatch.setattr(backend, "_nv12_to_rgb", counting)
    backend._active = NvdecOnCpu.threads - 1  # the process full: the window whole
    indices = list(range(0, 120, 2))
    assert [read_counter(f) for f in _read(backend, h264, indices, (48, 80))] == indices
    assert [frames for frames, _ in _batches()] == [indices]  # one run from the decoder
    step = NvdecOnCpu.convert_frames
    assert converted == [step] * (60 // step) + [60 % step] * bool(60 % step)


def test_a_window_is_split_over_its_share_of_the_threads(backend, h264):
    indices = list(range(0, 120, 2))  # 60 frames: 8 runs when alone
    _read(backend, h264, indices, (48, 80))
    assert len(_batches()) == NvdecOnCpu.threads
    fake_nvc.CALLS.clear()
    backend._active = NvdecOnCpu.threads // 2 - 1  # two a request with this one
    assert [read_counter(f) for f in _read(backend, h264, indices, (48, 80))] == indices
    assert len(_batches()) == 2
    fake_nvc.CALLS.clear()
    backend._active = NvdecOnCpu.threads - 1  # the process full: the window whole
    assert [read_counter(f) for f in _read(backend, h264, indices, (48, 80))] == indices
    assert [frames for frames, _ in _batches()] == [indices]


def test_a_pool_mixing_nvdec_and_pyav_decodes_on_both_from_one_queue(h264):
    from vidseek.indexer.decode_pool import DecodePool

    pool = DecodePool([NvdecOnCpu, "pyav"], 3)
    try:
        assert pool.processes == 3  # NVDEC's one process and two of PyAV's
        assert pool.size == NvdecOnCpu.concurrent_requests + 2

        def read(worker, start: int):
            frames = worker.read(h264, [start, start + 30], 48, 80, timeout=60)
            return worker.backend, [read_counter(f) for f in frames]

        results = [f.result() for f in [pool.submit(lambda w, k=k: read(w, k)) for k in range(12)]]
    finally:
        pool.close()
    assert [frames for _, frames in results] == [[k, k + 30] for k in range(12)]
    assert {backend for backend, _ in results} == {NvdecOnCpu, PyAVBackend}


@pytest.mark.parametrize(("threads", "expected"), [(1, "thread_count=1"), (0, "ThreadType.AUTO")])
def test_a_pool_gives_its_processes_decoders_the_threads_asked_for(h264, threads, expected):
    from tests.support.videos import PyAVReportingThreads
    from vidseek.indexer.decode_pool import DecodePool

    pool = DecodePool(PyAVReportingThreads, 1, codec_threads=threads)
    try:
        codec = pool.submit(lambda w: w.probe(h264, timeout=60)).result().codec
    finally:
        pool.close()
    assert f"codec_threads={threads}" in codec and expected in codec, codec


def test_mixed_backends_are_named_with_a_plus_and_probe_and_refine_with_the_cpus():
    assert pool_backends("nvdec+pyav") == [("nvdec", 0), ("pyav", 0)]
    assert pool_backends("pyav") == [("pyav", 0)]
    assert pool_backends("nvdec:2 + pyav") == [("nvdec", 2), ("pyav", 0)]
    assert side_backend("nvdec+pyav") == "pyav" == side_backend("pyav:3+nvdec:2")
    with pytest.raises(ConfigError, match="processes of 'nvdec' must be >= 1"):
        pool_backends("nvdec:0+pyav")
    with pytest.raises(ConfigError, match="processes of 'nvdec'"):
        pool_backends("nvdec:two")
    with pytest.raises(ConfigError, match="'ffmpeg' in 'nvdec\\+ffmpeg'"):
        pool_backends("nvdec+ffmpeg")
    with pytest.raises(ConfigError, match="twice"):
        pool_backends("pyav+pyav")


@pytest.mark.parametrize(
    ("backends", "processes", "sizes"),
    [
        (["pyav"], 8, [8]),
        (["nvdec"], 8, [1]),
        (["nvdec", "pyav"], 8, [1, 7]),
        (["nvdec", "pyav"], 1, [1, 1]),
        (["pyav", "decord"], 5, [3, 2]),
    ],
)
def test_a_capped_backend_gets_its_cap_and_the_others_share_the_rest(backends, processes, sizes):
    from vidseek.indexer.decode_pool import pool_sizes

    assert pool_sizes([BACKENDS[b] for b in backends], processes) == sizes


@pytest.mark.parametrize(
    ("cores", "processes"), [(1, 1), (2, 1), (3, 2), (4, 3), (16, 12), (32, 24)]
)
def test_the_default_pool_is_three_quarters_of_the_cores_the_process_may_use(
    monkeypatch, cores, processes
):
    from vidseek.indexer import decode_pool

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert decode_pool.default_decode_processes() == processes
    pool = decode_pool.DecodePool("pyav")  # processes start on first use: none here
    try:
        assert pool.size == processes
    finally:
        pool.close()


def test_a_count_in_the_setting_fixes_a_backends_processes_past_its_cap():
    from vidseek.indexer.decode_pool import DecodePool, pool_sizes

    nvdec, pyav = BACKENDS["nvdec"], BACKENDS["pyav"]
    assert pool_sizes([nvdec, pyav], 8, [2, 0]) == [2, 6]
    assert pool_sizes([nvdec, pyav], 8, [0, 3]) == [1, 3]
    pool = DecodePool("pyav:2+decord", 5)  # processes start on first use: none here
    try:
        assert pool.size == 5
        assert [w.backend.name for w in pool._workers] == ["pyav"] * 2 + ["decord"] * 3
    finally:
        pool.close()


def test_threads_keep_the_decoders_of_files_that_take_turns(backend, h264, videos):
    other = write_video(videos / "other.mp4", seconds=4)
    indices = list(range(0, 120, 2))
    for _ in range(3):  # two jobs taking turns on the decoder process
        for path in (h264, other):
            assert [read_counter(f) for f in _read(backend, path, indices, (48, 80))] == indices
    opens = [(path, thread) for kind, path, thread in fake_nvc.CALLS if kind == "open"]
    assert len(opens) == len(set(opens)) <= 2 * NvdecOnCpu.threads  # not one per run
    assert len(_batches()) == 6 * NvdecOnCpu.threads


def test_decoders_of_many_files_taking_turns_stay_open(backend, h264, videos):
    paths = [h264] + [write_video(videos / f"turn{k}.mp4", seconds=1) for k in range(5)]
    for _ in range(2):
        for path in paths:
            assert [read_counter(f) for f in _read(backend, path, [8, 16], (48, 80))] == [8, 16]
    opens = [(path, thread) for kind, path, thread in fake_nvc.CALLS if kind == "open"]
    assert len(opens) == len(set(opens))  # the second round opened none


@pytest.mark.parametrize(("files_kept", "opens"), [(3, 3), (2, 6)])
def test_a_thread_keeps_the_decoders_its_share_of_gpu_memory_holds(videos, files_kept, opens):
    paths = [write_video(videos / f"budget{k}.mp4", seconds=1) for k in range(3)]
    decoder = 160 * 96 * NvdecOnCpu.decoder_bytes_per_pixel  # the test videos' frames

    class Budget(NvdecOnCpu):
        decoder_memory_gib = files_kept * decoder * NvdecOnCpu.threads / 2**30

    fake_nvc.CALLS.clear()
    nvdec = Budget()
    try:
        for _ in range(2):  # three files taking turns, each read on one thread
            for path in paths:
                assert read_counter(_read(nvdec, path, [7], (48, 80))[0]) == 7
    finally:
        nvdec.close()
    assert len([c for c in fake_nvc.CALLS if c[0] == "open"]) == opens


def test_out_of_gpu_memory_with_nothing_to_free_decodes_that_request_with_pyav(
    backend, h264, caplog
):
    fake_nvc.OPEN_FAULTS.append("CUDA error: out of memory")
    with caplog.at_level(logging.WARNING):
        assert [read_counter(f) for f in _read(backend, h264, [5, 9], (48, 80))] == [5, 9]
    assert "no GPU memory" in caplog.text and not _batches()
    assert backend.decoded_by == "pyav"
    # For memory_retry_seconds every request is PyAV's, without trying a decoder.
    assert [read_counter(f) for f in _read(backend, h264, [5, 9], (48, 80))] == [5, 9]
    assert not _batches() and len([c for c in fake_nvc.CALLS if c[0] == "fault"]) == 1


def test_after_running_out_of_gpu_memory_nvdec_tries_again_later(h264, caplog):
    class RetryAtOnce(NvdecOnCpu):
        memory_retry_seconds = 0.0

    fake_nvc.CALLS.clear()
    nvdec = RetryAtOnce()
    try:
        fake_nvc.OPEN_FAULTS.append("CUDA error: out of memory")
        assert [read_counter(f) for f in _read(nvdec, h264, [5, 9], (48, 80))] == [5, 9]
        assert not _batches() and nvdec.decoded_by == "pyav"
        # Not a refusal: the next request is NVDEC's again.
        assert [read_counter(f) for f in _read(nvdec, h264, [5, 9], (48, 80))] == [5, 9]
        assert len(_batches()) == 1 and nvdec.decoded_by == ""
    finally:
        nvdec.close()
        fake_nvc.OPEN_FAULTS.clear()


def test_out_of_gpu_memory_opening_a_decoder_frees_the_threads_others(backend, h264, videos):
    other = write_video(videos / "after-oom.mp4", seconds=1)
    assert [read_counter(f) for f in _read(backend, h264, [5, 9], (48, 80))] == [5, 9]
    fake_nvc.OPEN_FAULTS.append("CUDA error: out of memory")
    assert [read_counter(f) for f in _read(backend, other, [5, 9], (48, 80))] == [5, 9]
    (fault,) = [thread for kind, _, thread in fake_nvc.CALLS if kind == "fault"]
    # That thread dropped its decoder of the first file, opened the second, and opens
    # the first again when it next needs it; no file went to PyAV.
    assert read_counter(_read(backend, h264, [5], (48, 80))[0]) == 5
    opens = [(path, thread) for kind, path, thread in fake_nvc.CALLS if kind == "open"]
    assert (other, fault) in opens and opens.count((h264, fault)) == 2
    assert not fake_nvc.OPEN_FAULTS


def test_out_of_gpu_memory_while_decoding_decodes_that_request_with_pyav(h264, videos, caplog):
    """vLLM beside NVDEC may hold the memory a decoder needs for a while: every batch
    of the request fails (as on the H200, worded as PyNvVideoCodec does), and none of
    its frames may be lost."""

    class OneThread(NvdecOnCpu):  # every run on one thread, whose decoders are seen
        threads = 1
        memory_retry_seconds = 0.0

    fake_nvc.CALLS.clear()
    nvdec = OneThread()
    try:
        other = write_video(videos / "kept-before-oom.mp4", seconds=1)
        assert read_counter(_read(nvdec, other, [5], (48, 80))[0]) == 5
        fake_nvc.BATCH_FAULTS.extend([fake_nvc.NO_DECODER_MEMORY] * 64)  # more than asked
        indices = list(range(0, 120, 4))
        with caplog.at_level(logging.WARNING):
            frames = _read(nvdec, h264, indices, (48, 80))
        assert [read_counter(f) for f in frames] == indices
        assert "no GPU memory" in caplog.text and nvdec.decoded_by == "pyav"
        fake_nvc.BATCH_FAULTS.clear()
        # The thread freed its decoders: the first file's is opened again.
        opened = len([c for c in fake_nvc.CALLS if c[0] == "open"])
        assert read_counter(_read(nvdec, other, [7], (48, 80))[0]) == 7
        assert len([c for c in fake_nvc.CALLS if c[0] == "open"]) == opened + 1
        assert fake_nvc.CALLS[-1][0] == "batch"
    finally:
        nvdec.close()
        fake_nvc.BATCH_FAULTS.clear()


def test_a_file_replaced_at_the_same_path_gets_a_new_decoder(backend, videos):
    path = videos / "replaced.mp4"
    write_video(path, seconds=1)
    assert read_counter(_read(backend, str(path), [20], (48, 80))[0]) == 20
    write_video(videos / "longer.mp4", seconds=3)
    os.replace(videos / "longer.mp4", path)
    assert read_counter(_read(backend, str(path), [80], (48, 80))[0]) == 80


def test_a_gpu_error_loses_only_its_frame(backend, h264):
    fake_nvc.FAIL_AT.add(40)
    indices = list(range(0, 120, 4))
    out = np.zeros((len(indices), 48, 80, 3), np.uint8)
    missing = backend.read(h264, indices, (48, 80), out, skip_errors=True)
    assert list(missing) == [40] and "failed to decode frame 40" in missing[40]
    kept = [i for i in indices if i != 40]
    assert [read_counter(f) for f, i in zip(out, indices, strict=True) if i != 40] == kept
    with pytest.raises(VideoError, match="frame 40 was not decoded"):
        _read(backend, h264, [36, 40], (48, 80))


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
    assert caplog.text.count("NVDEC cannot decode") == 1
    assert len([c for c in fake_nvc.CALLS if c[0] == "refuse"]) == 1  # not tried again yet
    assert not [c for c in fake_nvc.CALLS if c[0] == "batch"]


def test_frames_not_in_the_nv12_layout_send_the_file_to_pyav(backend, h264, caplog, monkeypatch):
    batch = fake_nvc.SimpleDecoder.get_batch_frames_by_index

    def padded(self, indices):  # a plane with 8 more rows, as a coded 1088-row picture
        return [np.pad(f, ((0, 8), (0, 0))) for f in batch(self, indices)]

    monkeypatch.setattr(fake_nvc.SimpleDecoder, "get_batch_frames_by_index", padded)
    with caplog.at_level(logging.WARNING):
        frames = _read(backend, h264, [3, 40, 77], (48, 80))
    assert [read_counter(f) for f in frames] == [3, 40, 77]  # PyAV's
    assert "not NV12" in caplog.text and "decoding it with PyAV" in caplog.text


def test_nvdec_tries_a_refused_file_again_later(videos, caplog):
    class RetryAtOnce(NvdecOnCpu):
        cpu_retry_seconds = 0.0

    fake_nvc.CALLS.clear()
    path = write_video(videos / "nonvdec-again.mp4", seconds=1)
    nvdec = RetryAtOnce()
    try:
        with caplog.at_level(logging.WARNING):
            for index in (2, 9):
                assert read_counter(_read(nvdec, path, [index], (48, 80))[0]) == index
    finally:
        nvdec.close()
    assert len([c for c in fake_nvc.CALLS if c[0] == "refuse"]) == 2
    assert caplog.text.count("NVDEC cannot decode") == 1  # warned once


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


@pytest.fixture
def faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake's fault directory, seen by the decode worker processes started after this."""
    monkeypatch.setenv(fake_nvc.FAULTS_ENV, str(tmp_path))
    return tmp_path


def _pid(pool) -> int | None:
    return pool.submit(lambda w: w.pid).result()


def test_a_worker_names_the_backend_that_decoded_each_request(h264, faults):
    """What NVDEC's process hands to PyAV counts as PyAV's (the pool's per-backend
    figures), and a request that fails as the worker's own backend's."""
    from tests.support.videos import NvdecOnCpuRetryAtOnce
    from vidseek.indexer.decode_pool import DecodePool

    pool = DecodePool(NvdecOnCpuRetryAtOnce, 1)
    try:
        frames, by = _read_naming(pool, h264, [1, 2])
        assert [read_counter(f) for f in frames] == [1, 2] and by == "nvdec-on-cpu"
        fake_nvc.fail_once(faults, 40, "oom")
        result, by = _read_naming(pool, h264, _SPREAD, on_error="skip")
        assert result.complete and not list(faults.iterdir()) and by == "pyav"
        failed, by = _read_naming(pool, h264, [120])
        assert "past the end" in str(failed) and by == "nvdec-on-cpu"
        frames, by = _read_naming(pool, h264, [5])
        assert [read_counter(f) for f in frames] == [5]
        assert by == "nvdec-on-cpu"  # NVDEC again: no waiting here
    finally:
        pool.close()


def _read_naming(pool, path: str, indices: list[int], **kwargs):
    """A pool read (or its VideoError) and the backend its worker names for it, as the
    calling thread sees it (what ingestion counts)."""

    def read(worker: DecodeWorker):
        try:
            return worker.read(path, indices, 48, 80, timeout=60, **kwargs), worker.decoded_by
        except VideoError as exc:
            return exc, worker.decoded_by

    return pool.submit(read).result()


def _read_in(pool, path: str, indices: list[int], **kwargs):
    return pool.submit(lambda w: w.read(path, indices, 48, 80, timeout=60, **kwargs)).result()


_SPREAD = list(range(0, 120, 4))


@pytest.fixture
def warm_pool(h264):
    """A one-process NVDEC pool (the fake) that has decoded once, and that process's pid."""
    from vidseek.indexer.decode_pool import DecodePool

    pool = DecodePool(NvdecOnCpu, 1)
    try:
        assert [read_counter(f) for f in _read_in(pool, h264, [1, 2])] == [1, 2]
        yield pool, _pid(pool)
    finally:
        pool.close()


def test_a_cuda_error_that_breaks_the_process_fails_its_request_and_restarts_it(
    h264, faults, warm_pool
):
    pool, first = warm_pool
    fake_nvc.fail_once(faults, 40, "sticky")
    # Every CUDA call after the error fails in that process; the request is retried in
    # a fresh one, where it decodes whole (the fault was one-off).
    result = _read_in(pool, h264, _SPREAD, on_error="skip")
    assert result.complete and [read_counter(f) for f in result.frames] == _SPREAD
    assert not list(faults.iterdir())
    replaced = _pid(pool)
    assert replaced not in (None, first)
    frames = _read_in(pool, h264, _SPREAD)  # later requests on the fresh process
    assert [read_counter(f) for f in frames] == _SPREAD and _pid(pool) == replaced


def test_a_request_that_breaks_cuda_when_frames_must_all_decode_fails_naming_it(
    h264, faults, warm_pool
):
    pool, _ = warm_pool
    fake_nvc.fail_once(faults, 40, "sticky")
    with pytest.raises(VideoError, match=r"illegal memory access.*restarted"):
        _read_in(pool, h264, _SPREAD)
    assert _pid(pool) is None  # replaced before the next request
    assert [read_counter(f) for f in _read_in(pool, h264, _SPREAD)] == _SPREAD


def test_out_of_memory_sends_requests_to_pyav_for_a_while_and_keeps_the_process(
    h264, faults, warm_pool, caplog
):
    pool, first = warm_pool
    fake_nvc.fail_once(faults, 40, "oom")
    with caplog.at_level(logging.WARNING, logger="vidseek.indexer.video.backend_nvdec"):
        result, by = _read_naming(pool, h264, _SPREAD, on_error="skip")
    # The decoder process's warning reaches this process's log, naming the process.
    (record,) = [r for r in caplog.records if "no GPU memory" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert f"(decoder process {first})" in record.getMessage()
    assert not list(faults.iterdir())  # the batch failed; its frames were decoded with PyAV
    assert result.complete and [read_counter(f) for f in result.frames] == _SPREAD
    assert by == "pyav" and _pid(pool) == first
    # Within memory_retry_seconds the next request is PyAV's too: a fault left for
    # NVDEC's next batch is not taken.
    fake_nvc.fail_once(faults, 40, "sticky")
    result, by = _read_naming(pool, h264, _SPREAD, on_error="skip")
    assert result.complete
    assert list(faults.iterdir()) and by == "pyav" and _pid(pool) == first
