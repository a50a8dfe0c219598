"""Long H.264 test videos for ingestion benchmarks, encoded in parallel segments.

Content as in ``decode_bench.py`` (a textured background panning slowly, four moving
boxes), 30 fps, x264 ``superfast`` with 3 B-frames and a keyframe every 250 frames,
CRF 23. A long video is encoded as ``segments`` pieces in parallel processes, each
starting with a keyframe, then joined without re-encoding (packets copied, timestamps
shifted), so an hour of 1080p takes minutes on a many-core machine instead of an hour.

    python benchmarks/make_videos.py OUT_DIR 360p:3600 360p:3600 1080p:3600 --processes 16

Each spec is ``<height>p:<seconds>``; the file is ``OUT_DIR/<height>p_<seconds>s_<n>.mp4``
(n counts same-spec videos; each has its own seed). Existing files are kept.

``--copies K`` adds ``K - 1`` copies of every video (``<name>_copy<k>.mp4``): the same
packets remuxed under another title, so each is a distinct file (its own content hash,
so its own video to the indexer) that decodes like the original. A long ingestion run
needs many video-hours, and copying takes seconds where encoding takes minutes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

FPS = 30
GOP = 250
SIZES = {360: (640, 360), 720: (1280, 720), 1080: (1920, 1080)}


def _texture(width: int, height: int, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """A background twice the frame size: smooth colour blobs, so panning shows motion."""
    small = rng.integers(0, 256, size=(height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(small, 32, axis=0), 32, axis=1)
    return np.ascontiguousarray(big[: 2 * height, : 2 * width])


def scene_frames(
    width: int, height: int, first_frame: int, frames: int, seed: int
) -> Iterator[npt.NDArray[np.uint8]]:
    """RGB frames ``first_frame ..`` of the test scene with ``seed`` (see the docstring)."""
    rng = np.random.default_rng(seed)
    background = _texture(width, height, rng)
    boxes = [
        (rng.integers(0, 256, 3).astype(np.uint8), rng.uniform(0.05, 0.2), rng.uniform(0, 6.28))
        for _ in range(4)
    ]
    for i in range(first_frame, first_frame + frames):
        t = i / FPS
        x = int((math.sin(t / 7) + 1) / 2 * width)
        y = int((math.cos(t / 11) + 1) / 2 * height)
        img = background[y : y + height, x : x + width].copy()
        for color, size, phase in boxes:
            bw, bh = int(width * size), int(height * size)
            bx = int((math.sin(t * 0.7 + phase) + 1) / 2 * (width - bw))
            by = int((math.cos(t * 0.5 + phase) + 1) / 2 * (height - bh))
            img[by : by + bh, bx : bx + bw] = color
        yield img


def encode_segment(
    path: Path, width: int, height: int, first_frame: int, frames: int, seed: int
) -> Path:
    """Frames ``first_frame ..`` of the video with ``seed``, as one H.264 file."""
    options = {"preset": "superfast", "crf": "23", "x264-params": "bframes=3:threads=1"}
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options=options)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = GOP
        scene = scene_frames(width, height, first_frame, frames, seed)
        for pts, img in enumerate(scene):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = pts
            frame.time_base = Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def join_segments(parts: list[Path], path: Path, title: str = "") -> None:
    """Concatenate H.264 segments of identical settings into one MP4, copying packets."""
    with av.open(str(parts[0])) as first:
        template = first.streams.video[0]
        with av.open(str(path), "w") as out:
            if title:
                out.metadata["title"] = title
            stream = out.add_stream_from_template(template)
            offset = 0
            for part in parts:
                with av.open(str(part)) as src:
                    video = src.streams.video[0]
                    last = 0
                    for packet in src.demux(video):
                        if packet.dts is None:
                            continue
                        packet.pts = (packet.pts or 0) + offset
                        packet.dts += offset
                        last = max(last, packet.pts + (packet.duration or 0))
                        packet.stream = stream
                        out.mux(packet)
                    offset = last


def make_video(
    out_dir: Path, height: int, seconds: int, n: int, processes: int, pool: ProcessPoolExecutor
) -> Path:
    """The ``n``-th video of ``height`` lines and ``seconds`` (made once)."""
    width, h = SIZES[height]
    path = out_dir / f"{height}p_{seconds}s_{n}.mp4"
    if path.exists():
        return path
    frames = seconds * FPS
    segments = max(1, min(processes, frames // (GOP * 4)))
    per = math.ceil(frames / segments / GOP) * GOP  # segments start on keyframes
    jobs = []
    for k in range(segments):
        first = k * per
        count = min(per, frames - first)
        if count <= 0:
            break
        part = out_dir / f".{path.stem}.part{k:03d}.mp4"
        jobs.append(pool.submit(encode_segment, part, width, h, first, count, 1000 * height + n))
    parts = [job.result() for job in jobs]
    tmp = path.with_suffix(".joining.mp4")
    join_segments(parts, tmp)
    tmp.rename(path)
    for part in parts:
        part.unlink()
    return path


def copy_video(source: Path, path: Path, title: str) -> Path:
    """``source``'s packets remuxed into ``path`` with ``title`` (made once)."""
    if path.exists():
        return path
    tmp = path.with_suffix(".copying.mp4")
    join_segments([source], tmp, title)
    tmp.rename(path)
    return path


def with_copies(paths: list[Path], copies: int) -> list[Path]:
    """``paths`` and ``copies - 1`` remuxed copies of each (see the module docstring)."""
    every = list(paths)
    for k in range(1, copies):
        for path in paths:
            name = path.with_name(f"{path.stem}_copy{k}.mp4")
            every.append(copy_video(path, name, f"{path.stem} copy {k}"))
    return every


def make_videos(out_dir: Path, specs: list[str], processes: int) -> list[Path]:
    """Every video of ``specs`` (``"<height>p:<seconds>"``), encoded on ``processes``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    paths = []
    with ProcessPoolExecutor(max_workers=processes) as pool:
        for spec in specs:
            height_text, seconds_text = spec.lower().split(":")
            height, seconds = int(height_text.rstrip("p")), int(seconds_text)
            if height not in SIZES:
                raise SystemExit(f"{spec}: height must be one of {sorted(SIZES)}")
            counts[spec] = counts.get(spec, -1) + 1
            paths.append(make_video(out_dir, height, seconds, counts[spec], processes, pool))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("specs", nargs="+", help="<height>p:<seconds>, e.g. 1080p:3600")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--copies", type=int, default=1, help="remuxed copies of each, in all")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    made = make_videos(args.out_dir, args.specs, args.processes)
    for path in with_copies(made, args.copies):
        print(path, f"{path.stat().st_size / 1e6:.1f} MB")
    print(f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
