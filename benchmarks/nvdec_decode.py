"""NVDEC against the CPU decode pool: 60 s windows at 1 fps, frames at the model's size.

For each video, the first ``--windows`` 60 s windows (1 frame a second, 30 fps
sources) are decoded to RGB frames of ``--frame-size`` in host memory, as ingestion
hands them to the model, two ways in the same run:

* ``<backend> pool`` for each of ``--pool-backends`` (``pyav``, ``nvdec``): the
  project's :class:`~vidseek.indexer.decode_pool.DecodePool` with ``--processes``
  decoder processes of that backend, the production path. ``mean_abs_diff`` is how
  far a backend's first window is from the first backend's, per pixel (0-255), and
  ``diff_vs_bt601`` / ``diff_vs_bt709`` how far it is from PyAV's frames converted
  from YUV with each colour matrix (which one a decoder applies to a file that names
  none shows there);
* ``nvdec threads``: NVIDIA's ``PyNvVideoCodec`` ``SimpleDecoder`` called directly,
  RGB out in device memory, resized on the GPU (``torch`` bilinear with
  antialiasing), then copied to the host; ``--threads`` decoders in parallel in this
  process, one per thread.

Prints one JSON line per (video, path, parallelism): video-hours decoded per hour
of wall time. NVDEC needs a CUDA GPU, ``PyNvVideoCodec`` and the driver's
``libnvcuvid``.

    python benchmarks/nvdec_decode.py /root/videos/360p_1800s_0.mp4 /root/videos/1080p_600s_0.mp4
"""

from __future__ import annotations

import argparse
import json
import sys
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


def time_pool(
    path: str, windows: list[list[int]], size: tuple[int, int], processes: int, backend: str
) -> tuple[float, Any, int]:
    """Seconds to decode ``windows`` on a decode pool of ``backend``, the first window, and
    the pool's size (a backend may cap its processes)."""
    from vidseek.indexer.decode_pool import DecodePool

    h, w = size
    pool = DecodePool(backend, processes)
    try:
        warm = [pool.submit(lambda wk, i=i: wk.read(path, i, h, w, timeout=600)) for i in windows]
        first = warm[0].result()
        for f in warm[1:processes]:
            f.result()
        for f in warm[processes:]:
            f.cancel()
        started = time.perf_counter()
        futures = [
            pool.submit(lambda wk, i=i: wk.read(path, i, h, w, timeout=600)) for i in windows
        ]
        for f in futures:
            f.result()
        return time.perf_counter() - started, first, pool.size
    finally:
        pool.close()


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
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--processes", type=int, nargs="+", default=[8])
    parser.add_argument("--pool-backends", nargs="+", default=["pyav", "nvdec"])
    parser.add_argument("--json-out", default="")
    args = parser.parse_args(argv)
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
        hours = len(windows) * 60 / 3600
        base = {"video": Path(video).name, "height": info.height, "windows": len(windows)}
        reference = None
        matrices = {
            m: pyav_window(video, windows[0], args.frame_size, m).astype("int16")
            for m in ("ITU601", "ITU709")
        }
        for backend in args.pool_backends:
            for n in args.processes:
                name = f"{backend} pool"
                try:
                    elapsed, first, size = time_pool(video, windows, args.frame_size, n, backend)
                except Exception as exc:  # report and go on: the other paths still count
                    emit({**base, "run": name, "parallel": n, "error": f"{exc!r}"[:500]})
                    continue
                row = {**base, "run": name, "parallel": size, **rate(hours, elapsed)}
                for m, frames in matrices.items():
                    row[f"diff_vs_bt{m[3:]}"] = round(float(abs(first - frames).mean()), 2)
                if reference is None:
                    reference = first.astype("int16")
                else:  # how far this backend's pixels are from the first one's
                    row["mean_abs_diff"] = round(float(abs(first - reference).mean()), 2)
                emit(row)
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
