"""NVDEC against the CPU decode pool: 60 s windows at 1 fps, frames at the model's size.

For each video, the first ``--windows`` 60 s windows (1 frame a second, 30 fps
sources) are decoded to RGB frames of ``--frame-size`` in host memory, as ingestion
hands them to the model, two ways in the same run:

* ``<backend> pool`` for each of ``--pool-backends`` (``pyav``, ``nvdec``,
  ``pyav-1thread``, PyAV decoding each file on one thread, as ingestion's pool does,
  and as they were before: ``nvdec-3files``, NVDEC keeping 3 files' decoders a
  thread, ``nvdec-1request``, NVDEC's process taking one window at a time split
  over its threads, and ``pyav-no-index-cache``, PyAV demuxing a file again whenever
  it switches; ``pyav`` is PyAV with FFmpeg's own threading; ``nvdec-processes``,
  NVDEC in ``--processes`` processes of one decoder thread each, whole windows): the
  project's :class:`~vidseek.indexer.decode_pool.DecodePool` with ``--processes``
  decoder processes of that backend, the production path. With ``--interleave K``
  the video's windows are decoded from K files (the video and remuxed copies)
  taking turns, as K ingest jobs at once ask for them; the first window of each file
  (at least one a process) opens the decoders (``warm_s``) and the rest are timed;
  ``gpu_memory_gib`` is what the pool took on the GPU and ``decoder_cpu_s`` the
  CPU-seconds its processes used in the timed part (``_per_window``: a window's
  share). ``mean_abs_diff`` is how far a backend's first window is from the first
  backend's, per pixel (0-255), and ``diff_vs_bt601`` / ``diff_vs_bt709`` how far it
  is from PyAV's frames converted from YUV with each colour matrix (which one a
  decoder applies to a file that names none shows there);
* ``nvdec threads``: NVIDIA's ``PyNvVideoCodec`` ``SimpleDecoder`` called directly,
  RGB out in device memory, resized on the GPU (``torch`` bilinear with
  antialiasing), then copied to the host; ``--threads`` decoders in parallel in this
  process, one per thread.

Prints one JSON line per (video, path, parallelism): video-hours decoded per hour
of wall time. NVDEC needs a CUDA GPU, ``PyNvVideoCodec`` and the driver's
``libnvcuvid``. ``--mps`` runs everything under an NVIDIA MPS daemon
(``benchmarks/mps.py``), as ``ingest_throughput.py --mps`` does.

    python benchmarks/nvdec_decode.py /root/videos/360p_1800s_0.mp4 /root/videos/1080p_600s_0.mp4
    python benchmarks/nvdec_decode.py 360p_1800s_0.mp4 --interleave 24 --threads \
        --pool-backends pyav nvdec nvdec-3files
    python benchmarks/nvdec_decode.py 360p_1800s_0.mp4 1080p_600s_0.mp4 --threads \
        --processes 8 --pool-backends pyav-1thread nvdec nvdec-processes --mps
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.caption_throughput import _size  # noqa: E402
from benchmarks.make_videos import with_copies  # noqa: E402
from benchmarks.mps import mps_daemon  # noqa: E402
from benchmarks.sampling import HostCpu, visible_gpus  # noqa: E402
from vidseek.indexer.video.backend_nvdec import NvdecBackend  # noqa: E402
from vidseek.indexer.video.backend_pyav import PyAVBackend  # noqa: E402
from vidseek.indexer.video.frames import FrameBackend  # noqa: E402


def window_indices(frame_count: int, fps: float, windows: int) -> list[list[int]]:
    """Frame indices of the first ``windows`` 60 s windows at 1 frame a second."""
    step = round(fps)
    per = 60 * step
    out = []
    for w in range(windows):
        first = w * per
        if first + per > frame_count:
            break
        out.append(list(range(first, first + per, step)))
    return out


def nvdec_window(path: str, indices: list[int], size: tuple[int, int], local: Any) -> int:
    """One window through NVDEC in this thread's decoder; the frames end on the host."""
    import PyNvVideoCodec as nvc
    import torch

    decoders = local.__dict__.setdefault("decoders", {})
    decoder = decoders.get(path)
    if decoder is None:
        decoder = decoders[path] = nvc.SimpleDecoder(
            path, gpu_id=0, use_device_memory=True, output_color_type=nvc.OutputColorType.RGB
        )
    frames = decoder.get_batch_frames_by_index(indices)
    batch = torch.stack([torch.from_dlpack(f) for f in frames])  # N, H, W, 3 uint8 on the GPU
    if batch.shape[-1] != 3:  # planar RGB
        batch = batch.permute(0, 2, 3, 1)
    x = batch.permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True)
    host = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu()
    return int(host.shape[0])


def time_nvdec(path: str, windows: list[list[int]], size: tuple[int, int], threads: int) -> float:
    import threading

    local = threading.local()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(partial(nvdec_window, path, size=size, local=local), windows[:threads]))
        started = time.perf_counter()  # decoders opened and warm
        frames = sum(pool.map(partial(nvdec_window, path, size=size, local=local), windows))
        elapsed = time.perf_counter() - started
    assert frames == sum(len(w) for w in windows)
    return elapsed


def gpu_memory_gib() -> float | None:
    """Memory in use on the first visible GPU (NVML), or None without one."""
    try:
        import pynvml

        pynvml.nvmlInit()
        (first, *_) = visible_gpus(pynvml.nvmlDeviceGetCount()) or [0]
        handle = pynvml.nvmlDeviceGetHandleByIndex(first)
        return float(pynvml.nvmlDeviceGetMemoryInfo(handle).used) / 2**30
    except Exception:
        return None


def time_pool(
    work: list[tuple[str, list[int]]],
    size: tuple[int, int],
    processes: int,
    backend: str | type[FrameBackend],
    warm: int,
) -> dict[str, Any]:
    """A decode pool of ``backend`` on ``work`` (file, frame indices), in order: the first
    ``warm`` windows start the processes and open the decoders (``warm_s``), the rest
    are timed (``elapsed_s``). Also the first window's frames, the pool's size (a
    backend may cap its processes) and the GPU memory the pool took."""
    from vidseek.indexer.decode_pool import DecodePool

    h, w = size
    before = gpu_memory_gib()
    pool = DecodePool(backend, processes)

    def read(path: str, indices: list[int], worker: Any) -> Any:
        return worker.read(path, indices, h, w, timeout=600)

    def decode(items: list[tuple[str, list[int]]]) -> list[Any]:
        futures = [pool.submit(partial(read, path, indices)) for path, indices in items]
        return [f.result() for f in futures]

    try:
        started = time.perf_counter()
        first = decode(work[:warm])[0]
        warm_s = time.perf_counter() - started
        with HostCpu(period=0.5) as cpu:
            started = time.perf_counter()
            decode(work[warm:])
            elapsed = time.perf_counter() - started
        decoders_cpu_s = cpu.report()["cpu_seconds"].get("decoders", 0.0)
        after = gpu_memory_gib()
        memory = None if before is None or after is None else round(after - before, 2)
        return {
            "elapsed": elapsed,
            "warm_s": round(warm_s, 2),
            "first": first,
            "size": pool.size,
            "processes": pool.processes,
            "gpu_memory_gib": memory,
            "decoder_cpu_s": decoders_cpu_s,
            "decoder_cpu_s_per_window": round(decoders_cpu_s / max(1, len(work) - warm), 3),
        }
    finally:
        pool.close()


class NvdecThreeFiles(NvdecBackend):
    """The NVDEC backend keeping 3 files' decoders a thread (its setting until 2026-11-30)."""

    open_files = 3


class PyAVNoIndexCache(PyAVBackend):
    """PyAV without its stream-index cache: each switch of file demuxes it again."""

    index_cache_size = 0


class PyAVOneThread(PyAVBackend):
    """PyAV decoding each file on one thread (FFmpeg's own threading off)."""

    codec_threads = 1


class NvdecOneRequest(NvdecBackend):
    """The NVDEC backend's process taking one window at a time, split over its threads
    (its setting until 2026-12-01)."""

    concurrent_requests = 1


class NvdecProcesses(NvdecBackend):
    """NVDEC with one decoder thread a process and no cap on processes: each window
    decoded whole (no split into runs, each paying a keyframe's lead) by one of
    ``--processes`` processes sharing the GPU. Without MPS such processes took turns on
    the GPU (3-11x slower than threads); ``--mps`` asks whether they still do."""

    threads = 1
    max_processes = 0


POOL_BACKENDS: dict[str, str | type[FrameBackend]] = {
    "pyav": "pyav",
    "pyav-1thread": PyAVOneThread,
    "pyav-no-index-cache": PyAVNoIndexCache,
    "nvdec": "nvdec",
    "nvdec-3files": NvdecThreeFiles,
    "nvdec-1request": NvdecOneRequest,
    "nvdec-processes": NvdecProcesses,
}


def pyav_window(path: str, indices: list[int], size: tuple[int, int], matrix: str) -> Any:
    """PyAV's frames ``indices`` at ``size``, converted to RGB with colour matrix ``matrix``
    (``ITU601``, ``ITU709``) whatever the file says, decoded from the start."""
    import av
    import numpy as np
    from av.video.reformatter import Colorspace

    h, w = size
    wanted, out = set(indices), []
    with av.open(path) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if n in wanted:
                out.append(
                    frame.to_ndarray(
                        format="rgb24",
                        width=w,
                        height=h,
                        interpolation="AREA",
                        src_colorspace=Colorspace[matrix],
                    )
                )
            if n >= indices[-1]:
                break
    return np.stack(out)


def rate(hours: float, elapsed: float) -> dict[str, float]:
    return {
        "elapsed_s": round(elapsed, 2),
        "video_hours_per_hour": round(hours / (elapsed / 3600), 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--frame-size", type=_size, default=(256, 448), help="HxW")
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--processes", type=int, nargs="+", default=[8])
    parser.add_argument(
        "--pool-backends", nargs="+", default=["pyav", "nvdec"], choices=list(POOL_BACKENDS)
    )
    parser.add_argument("--interleave", type=int, default=1, help="files taking turns")
    parser.add_argument("--json-out", default="")
    parser.add_argument(
        "--mps", action="store_true", help="run under NVIDIA MPS (benchmarks/mps.py)"
    )
    args = parser.parse_args(argv)
    if not args.mps:
        return run(args)
    # Every CUDA process starts inside the block: MPS clients.
    with tempfile.TemporaryDirectory(prefix="vidseek-nvdec-mps-") as work, mps_daemon(Path(work)):
        return run(args)


def run(args: argparse.Namespace) -> int:
    """The benchmark's measurements, one JSON line each."""
    from vidseek.indexer.video import DecodeWorker, probe

    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    def emit(row: dict[str, Any]) -> None:
        line = json.dumps({**row, "date": date})
        print(line, flush=True)
        if args.json_out:
            with open(args.json_out, "a") as out:
                out.write(line + "\n")

    for video in args.videos:
        with DecodeWorker("pyav") as worker:
            info = probe(video, timeout=300, worker=worker)
        windows = window_indices(info.frame_count, info.fps, args.windows)
        files = [str(f) for f in with_copies([Path(video)], args.interleave)]
        work = [(f, indices) for indices in windows for f in files]  # files take turns
        base = {
            "video": Path(video).name,
            "height": info.height,
            "windows": len(work),
            "files": len(files),
            "mps": args.mps,
        }
        reference = None
        matrices = {
            m: pyav_window(video, windows[0], args.frame_size, m).astype("int16")
            for m in ("ITU601", "ITU709")
        }
        for backend in args.pool_backends:
            for n in args.processes:
                name = f"{backend} pool"
                warm = max(n, len(files))
                hours = (len(work) - warm) * 60 / 3600
                try:
                    run = time_pool(work, args.frame_size, n, POOL_BACKENDS[backend], warm)
                except Exception as exc:  # report and go on: the other paths still count
                    emit({**base, "run": name, "parallel": n, "error": f"{exc!r}"[:500]})
                    continue
                first = run["first"]
                row = {
                    **base,
                    "run": name,
                    "parallel": run["size"],  # windows decoded at once
                    "processes": run["processes"],
                    **rate(hours, run["elapsed"]),
                    "warm_s": run["warm_s"],
                    "gpu_memory_gib": run["gpu_memory_gib"],
                    "decoder_cpu_s": run["decoder_cpu_s"],
                    "decoder_cpu_s_per_window": run["decoder_cpu_s_per_window"],
                }
                for m, frames in matrices.items():
                    row[f"diff_vs_bt{m[3:]}"] = round(float(abs(first - frames).mean()), 2)
                if reference is None:
                    reference = first.astype("int16")
                else:  # how far this backend's pixels are from the first one's
                    row["mean_abs_diff"] = round(float(abs(first - reference).mean()), 2)
                emit(row)
        hours = len(windows) * 60 / 3600
        for n in args.threads:
            try:
                elapsed = time_nvdec(video, windows, args.frame_size, n)
            except Exception as exc:
                emit({**base, "run": "nvdec threads", "parallel": n, "error": f"{exc!r}"[:500]})
                continue
            emit({**base, "run": "nvdec threads", "parallel": n, **rate(hours, elapsed)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
