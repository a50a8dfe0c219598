"""Decode benchmark: decord, torchcodec and PyAV against a plain ffmpeg full decode.

    python benchmarks/decode_bench.py [--seconds 120] [--sizes 360p 1080p] [--fps 1 2]
                                      [--repeat 3] [--workdir DIR] [--json FILE]

Generates (once, cached in ``--workdir``) H.264 test videos with PyAV: 30 fps,
keyframes every 250 frames (x264 defaults otherwise, ``veryfast`` preset, CRF
23), content that pans over a textured background with moving objects so the
bitrate is like real footage. Then, for each size and sampling rate, it times:

* ``ffmpeg full decode``: ``ffmpeg -v error -i FILE -f null -`` (decode every
  frame, no conversion) — the floor a sampler can reach when keyframes are
  250 frames apart; skipped with a note if the ``ffmpeg`` binary is missing;
* ``<backend> reader``: the real code path, :class:`FrameReader` in its worker
  process: probe, then every 60 s window's :func:`sample_indices`, read at the
  planner's default size (``resized_shape(w, h, 640*360)``); worker start-up
  is excluded (paid once per service) and reported separately;
* ``<backend> raw`` (at ``--raw-fps``): the library called directly in this
  process, same frames and size, the obvious way: decord ``get_batch`` with
  decord's resize, torchcodec ``get_frames_at`` with its ``Resize`` transform,
  PyAV decoding every frame and converting the sampled ones.

Measurements are interleaved in ``--repeat`` rounds (ffmpeg, then every backend,
per size), because a shared machine's load drifts: each figure is the median
over rounds, scaled to wall seconds per hour of video, and ``x ffmpeg`` is the
median of the per-round ratios to that round's ffmpeg run. Prints a markdown
table with the machine and date (and writes JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmarks.make_videos, when run as a script

from benchmarks.make_videos import FPS, GOP, scene_frames  # noqa: E402
from vidseek.indexer.video import (  # noqa: E402
    DecodeWorker,
    FrameReader,
    resized_shape,
    sample_indices,
)

SIZES = {"360p": (640, 360), "1080p": (1920, 1080)}
BACKENDS = ("decord", "torchcodec", "pyav")
WINDOW_SECONDS = 60.0
MAX_PIXELS = 640 * 360


# --------------------------------------------------------------------------- test videos


def make_video(path: Path, width: int, height: int, seconds: float, seed: int = 0) -> None:
    """Write a realistic-ish H.264 test video (see the module docstring)."""
    frames = round(seconds * FPS)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        options = {"preset": "veryfast", "crf": "23"} if codec == "libx264" else {}
        stream = out.add_stream(codec, rate=FPS, options=options)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = GOP
        if codec == "mpeg4":
            stream.codec_context.bit_rate = width * height * 4
        for i, img in enumerate(scene_frames(width, height, 0, frames, seed)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    tmp.rename(path)


# --------------------------------------------------------------------------- measurements


def time_ffmpeg(path: Path) -> float:
    """Wall seconds of ``ffmpeg -i path -f null -`` (all frames decoded, nothing converted)."""
    started = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"], check=True
    )
    return time.perf_counter() - started


def windows(frame_count: int, fps: float, sample_fps: float) -> list[list[int]]:
    """The sampled indices of consecutive 60 s windows, as the planner makes them."""
    from vidseek.indexer.types import VideoInfo

    info = VideoInfo("", fps, frame_count, frame_count / fps, 1, 1)
    out, start = [], 0.0
    while start < info.duration - 1e-6:
        end = min(start + WINDOW_SECONDS, info.duration)
        out.append(sample_indices(info, start, end, sample_fps))
        start = end
    return out


def time_reader(path: Path, tiny: Path, backend: str, sample_fps: float) -> tuple[float, float]:
    """(seconds to probe + read every window, seconds to start the worker) via FrameReader.

    The worker is started by probing ``tiny`` (a one-second video), outside the timing.
    """
    with DecodeWorker(backend) as worker:
        started = time.perf_counter()
        worker.probe(tiny, timeout=600)
        startup = time.perf_counter() - started
        with FrameReader(path, timeout=600, worker=worker) as reader:
            started = time.perf_counter()
            info = reader.probe()
            h, w = resized_shape(info.width, info.height, MAX_PIXELS)
            count = 0
            for indices in windows(info.frame_count, info.fps, sample_fps):
                count += len(reader.read(indices, h, w))
            elapsed = time.perf_counter() - started
    assert count > 0
    return elapsed, startup


def _raw_decord(path: Path, indices: list[int], h: int, w: int) -> int:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), height=h, width=w)
    return sum(len(reader.get_batch(chunk).asnumpy()) for chunk in _chunks(indices))


def _raw_torchcodec(path: Path, indices: list[int], h: int, w: int) -> int:
    decoders: Any = importlib.import_module("torchcodec.decoders")  # optional, maybe untyped
    transforms: Any = importlib.import_module("torchcodec.transforms")
    VideoDecoder, Resize = decoders.VideoDecoder, transforms.Resize
    decoder = VideoDecoder(
        str(path), dimension_order="NHWC", num_ffmpeg_threads=0, transforms=[Resize((h, w))]
    )
    return sum(len(decoder.get_frames_at(chunk).data.numpy()) for chunk in _chunks(indices))


def _raw_pyav(path: Path, indices: list[int], h: int, w: int) -> int:
    wanted = set(indices)
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")
                count += 1
    return count


RAW: dict[str, Callable[[Path, list[int], int, int], int]] = {
    "decord": _raw_decord,
    "torchcodec": _raw_torchcodec,
    "pyav": _raw_pyav,
}


def _chunks(indices: list[int], size: int = 120) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def time_raw(path: Path, backend: str, sample_fps: float) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, width, height = stream.frames, stream.width, stream.height
    h, w = resized_shape(width, height, MAX_PIXELS)
    indices = [i for window in windows(frames, FPS, sample_fps) for i in window]
    indices = sorted(set(indices))
    started = time.perf_counter()
    count = RAW[backend](path, indices, h, w)
    elapsed = time.perf_counter() - started
    assert count == len(indices), (backend, count, len(indices))
    return elapsed


# --------------------------------------------------------------------------- report


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "av": av.__version__}
    for name in ("decord", "torchcodec", "torch"):
        try:
            found[name] = str(__import__(name).__version__)
        except Exception as exc:  # a missing backend is reported, not fatal
            found[name] = f"unavailable ({type(exc).__name__})"
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        line = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout
        found["ffmpeg"] = line.split("\n", 1)[0].split(" ")[2]
    return found


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="length of each test video")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--fps", nargs="+", type=float, default=[1.0, 2.0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vidseek-decode-bench"))
    parser.add_argument(
        "--raw-fps",
        nargs="*",
        type=float,
        default=[1.0],
        help="sampling rates of the in-process raw runs (none: skip them)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    have_ffmpeg = shutil.which("ffmpeg") is not None
    files: dict[str, Path] = {}
    facts: dict[str, str] = {}
    for size in args.sizes:
        width, height = SIZES[size]
        path = args.workdir / f"{size}-{args.seconds:g}s.mp4"
        if not path.exists():
            print(f"generating {path} ...", file=sys.stderr, flush=True)
            make_video(path, width, height, args.seconds)
        files[size] = path
        mbps = path.stat().st_size * 8 / args.seconds / 1e6
        facts[size] = f"{width}x{height}, {mbps:.1f} Mbit/s"

    tiny = args.workdir / "tiny.mp4"
    if not tiny.exists():
        make_video(tiny, 64, 64, 1.0)
    per_hour = 3600.0 / args.seconds
    runs: dict[str, dict[str, list[float]]] = {}
    ratios: dict[str, dict[str, list[float]]] = {}
    startups: dict[str, list[float]] = {}
    columns = [(size, fps) for size in args.sizes for fps in args.fps]
    broken: set[str] = set()
    for backend in args.backends:
        if any(fps in args.raw_fps for fps in args.fps):
            time_raw(tiny, backend, args.raw_fps[0])  # imports and first-use costs, untimed

    def note(row: str, column: str, seconds: float, floor: float | None) -> None:
        runs.setdefault(row, {}).setdefault(column, []).append(seconds)
        if floor:
            ratios.setdefault(row, {}).setdefault(column, []).append(seconds / floor)
        print(f"{row:>20} {column:>12}: {seconds * per_hour:7.1f} s/h", file=sys.stderr)

    # Rounds interleave every measurement, so that load from other processes
    # hits all columns alike; ratios to ffmpeg are taken within a round.
    for _ in range(args.repeat):
        for size in args.sizes:
            path = files[size]
            floor = time_ffmpeg(path) if have_ffmpeg else None
            for fps in args.fps:
                column = f"{size} {fps:g} fps"
                if floor is not None:
                    note("ffmpeg full decode", column, floor, None)
                for backend in args.backends:
                    if backend in broken:
                        continue
                    try:
                        elapsed, startup = time_reader(path, tiny, backend, fps)
                    except Exception as exc:
                        print(f"{backend}: {type(exc).__name__}: {exc}", file=sys.stderr)
                        broken.add(backend)
                        continue
                    note(f"{backend} reader", column, elapsed, floor)
                    startups.setdefault(backend, []).append(startup)
                    if fps in args.raw_fps:
                        note(f"{backend} raw", column, time_raw(path, backend, fps), floor)

    results = {
        row: {col: statistics.median(values) * per_hour for col, values in cols.items()}
        for row, cols in runs.items()
    }
    ratio_medians = {
        row: {col: statistics.median(values) for col, values in cols.items()}
        for row, cols in ratios.items()
    }

    heads = [f"{size} {fps:g} fps" for size, fps in columns]
    lines = [
        f"Decode benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{_cpu()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()),
        f"Videos: {args.seconds:g} s, {FPS} fps, H.264, keyframe every {GOP} frames; "
        + "; ".join(f"{s}: {f}" for s, f in facts.items()),
        f"Frames read at resized_shape(w, h, {MAX_PIXELS}); windows of {WINDOW_SECONDS:g} s. "
        f"Wall seconds per hour of video, median of {args.repeat} interleaved rounds; "
        "(x ffmpeg): median of the per-round ratios to the ffmpeg full decode.",
        "",
        "| backend | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(heads),
    ]
    for row, values in results.items():
        cells = []
        for head in heads:
            value = values.get(head)
            if value is None:
                cells.append("-")
                continue
            ratio = ratio_medians.get(row, {}).get(head)
            cells.append(f"{value:.0f}" + (f" ({ratio:.2f}x)" if ratio else ""))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if not have_ffmpeg:
        lines.append("")
        lines.append("No `ffmpeg` binary on PATH: the full-decode column is missing.")
    if startups:
        lines.append("")
        lines.append(
            "Worker start (process + imports, once per service), median: "
            + ", ".join(f"{b} {statistics.median(s):.1f} s" for b, s in startups.items())
        )
    print("\n".join(lines))
    if args.json:
        payload: dict[str, Any] = {
            "results_s_per_hour": results,
            "ratio_to_ffmpeg": ratio_medians,
            "runs_s": runs,
            "startup_s": startups,
            "versions": _versions(),
            "videos": facts,
            "seconds": args.seconds,
            "repeat": args.repeat,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
