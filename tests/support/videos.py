"""Writers of small test videos (PyAV only: the tests never need the ffmpeg binary).

A generated frame has two parts:

* the top quarter is a frame counter: ``COUNTER_BITS`` blocks side by side, white
  for a 1 bit and black for a 0 bit (most significant bit first), so that a
  decoded frame tells which absolute index it is (:func:`read_counter`);
* the rest is one solid colour, picked per second of video from ``colors``
  (:func:`region_color` reads it back).

Blocks and colours are large and flat, so lossy codecs keep them readable.

The module also holds test decoders for the worker process (:class:`FaultyBackend`,
:class:`DecordWithoutPyAV`); they live here so that a spawned worker can import them.
"""

from __future__ import annotations

import ctypes.util
import dataclasses
import importlib.util
import os
import signal
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from vidseek.indexer.types import VideoInfo
from vidseek.indexer.video import (
    DecordBackend,
    FrameBackend,
    Frames,
    NvdecBackend,
    PyAVBackend,
    _StreamFacts,
)

__all__ = [
    "BLUE",
    "COUNTER_BITS",
    "CRASH_INDEX",
    "GREEN",
    "HANG_INDEX",
    "RED",
    "WHITE",
    "DecordWithoutPyAV",
    "FaultyBackend",
    "PyAVDecodingEveryFrame",
    "PyAVReportingThreads",
    "available_codec",
    "corrupt_frames",
    "read_counter",
    "region_color",
    "torchcodec_missing",
    "truncate",
    "write_audio_only",
    "write_frameless_video",
    "write_garbage",
    "write_text_as_mp4",
    "write_unknown_codec",
    "write_video",
]

RGB = tuple[int, int, int]

RED: RGB = (255, 0, 0)
GREEN: RGB = (0, 255, 0)
BLUE: RGB = (0, 0, 255)
WHITE: RGB = (255, 255, 255)
_PALETTE: tuple[RGB, ...] = (RED, GREEN, BLUE, (255, 255, 0), (255, 0, 255), (0, 255, 255))

COUNTER_BITS = 10


def torchcodec_missing() -> str | None:
    """Why the torchcodec backend cannot run here, or None when it can.

    Checked without importing torchcodec (which imports torch, seconds of start-up).
    """
    if importlib.util.find_spec("torchcodec") is None:
        return "torchcodec is not installed"
    if ctypes.util.find_library("avcodec") is None:
        return "torchcodec needs the FFmpeg shared libraries (apt-get install ffmpeg)"
    return None


def available_codec(preferred: str = "libx264") -> str:
    """``preferred`` if this PyAV build can encode with it, else ``"mpeg4"``."""
    return preferred if preferred in av.codecs_available else "mpeg4"


def _frame(index: int, width: int, height: int, color: RGB, counter: bool) -> npt.NDArray[np.uint8]:
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = color
    if counter:
        strip = height // 4
        img[:strip] = 0
        for bit in range(COUNTER_BITS):
            if (index >> (COUNTER_BITS - 1 - bit)) & 1:
                x0, x1 = bit * width // COUNTER_BITS, (bit + 1) * width // COUNTER_BITS
                img[:strip, x0:x1] = 255
    return img


def write_video(
    path: str | os.PathLike[str],
    *,
    seconds: float | None = None,
    fps: float = 30,
    width: int = 160,
    height: int = 96,
    colors: Sequence[RGB] | None = None,
    codec: str = "mpeg4",
    counter: bool = True,
    gop: int = 30,
    rotation: int = 0,
    faststart: bool = False,
    timestamps: Sequence[float] | None = None,
    sample_aspect_ratio: Fraction | None = None,
) -> str:
    """Write a video of ``round(seconds * fps)`` frames and return its path.

    ``colors[k]`` is the colour of second ``k`` (the last one repeats); by default
    the colour changes every second through red, green, blue, yellow, magenta,
    cyan. ``gop`` is the keyframe interval (exact: x264's scene-cut keyframes
    are off). ``rotation`` sets the display matrix (counter-clockwise degrees).
    ``faststart`` puts the MP4 index first, so that a truncated copy still opens
    and fails only when decoding reaches the cut. ``timestamps`` (seconds, one
    per frame, increasing) replaces ``seconds``: frame ``i`` (counter ``i``) is
    shown from ``timestamps[i]``, which makes variable-frame-rate video.
    ``sample_aspect_ratio`` makes the pixels non-square (anamorphic video).
    """
    schedule = tuple(colors) if colors else _PALETTE
    rate = Fraction(fps).limit_denominator(1001)
    if timestamps is not None:
        times = [Fraction(t).limit_denominator(1000) for t in timestamps]
        time_base = Fraction(1, 1000)
    else:
        if seconds is None:
            raise ValueError("give seconds or timestamps")
        times = [Fraction(i) / rate for i in range(round(seconds * fps))]
        time_base = 1 / rate
    if not times:
        raise ValueError("a video needs at least one frame; see write_frameless_video")
    options = {"movflags": "faststart"} if faststart else {}
    codec_options = {"x264-params": "scenecut=0"} if codec == "libx264" else {}
    if codec == "libx264" and width * height > 1920 * 1080:
        codec_options["preset"] = "ultrafast"  # 8K at the default preset takes seconds a frame
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream(codec, rate=rate, options=codec_options)
        assert isinstance(stream, av.VideoStream)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.time_base = time_base
        if codec == "mpeg4":
            stream.codec_context.bit_rate = 2_000_000
        if sample_aspect_ratio is not None:
            stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
        if rotation:
            stream.set_display_rotation(rotation)
        for i, t in enumerate(times):
            color = schedule[min(int(t), len(schedule) - 1)]
            frame = av.VideoFrame.from_ndarray(
                _frame(i, width, height, color, counter), format="rgb24"
            )
            frame.pts = round(t / time_base)
            frame.time_base = time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return str(path)


def write_frameless_video(path: str | os.PathLike[str]) -> str:
    """Write an AVI whose video stream has no frames (MP4 would drop the empty track)."""
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=30)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        out.start_encoding()
    return str(path)


def write_audio_only(path: str | os.PathLike[str], *, seconds: float = 1.0) -> str:
    """Write an audio-only file (a sine tone in AAC) and return its path."""
    sample_rate = 16_000
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=sample_rate)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono"
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        chunk = 1024
        for start in range(0, samples.shape[1], chunk):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + chunk]),
                format="fltp",
                layout="mono",
            )
            frame.sample_rate = sample_rate
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return str(path)


def write_garbage(path: str | os.PathLike[str], nbytes: int, *, seed: int = 0) -> str:
    """Write ``nbytes`` of random bytes and return the path."""
    Path(path).write_bytes(np.random.default_rng(seed).bytes(nbytes))
    return str(path)


def write_text_as_mp4(path: str | os.PathLike[str]) -> str:
    """Write a plain text file (whatever its name says) and return the path."""
    Path(path).write_text("This is not a video.\n" * 200, encoding="utf-8")
    return str(path)


def truncate(path: str | os.PathLike[str], keep_fraction: float) -> str:
    """Cut a file down to its first ``keep_fraction`` of bytes, in place; return the path."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep_fraction)])
    return str(path)


def write_unknown_codec(path: str | os.PathLike[str]) -> str:
    """Write an MP4 whose video track names a codec nobody has (fourcc ``vsk0``).

    It is a real H.264 (or MPEG-4) file with the sample entry's fourcc in the
    ``stsd`` box overwritten, so demuxers find a video track that no decoder reads.
    """
    codec = available_codec("libx264")
    write_video(path, seconds=1, codec=codec)
    data = bytearray(Path(path).read_bytes())
    entry = data.index(b"stsd")
    fourcc = data.index(b"avc1" if codec == "libx264" else b"mp4v", entry)
    data[fourcc : fourcc + 4] = b"vsk0"
    Path(path).write_bytes(bytes(data))
    return str(path)


def corrupt_frames(path: str | os.PathLike[str], first: int, end: int, *, seed: int = 0) -> str:
    """Overwrite the packets of frames ``first <= i < end`` (presentation order) with noise.

    The container and its index stay intact, so the damage shows only when
    those frames are decoded. Returns the path.
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [
            (int(p.pts), int(p.pos), int(p.size))
            for p in container.demux(stream)
            if p.size and p.pts is not None and p.pos is not None
        ]
    order = sorted(pts for pts, _, _ in packets)
    lo, hi = order[first], order[end] if end < len(order) else order[-1] + 1
    data = bytearray(Path(path).read_bytes())
    rng = np.random.default_rng(seed)
    for pts, pos, size in packets:
        if lo <= pts < hi:
            data[pos : pos + size] = rng.bytes(size)
    Path(path).write_bytes(bytes(data))
    return str(path)


def read_counter(frame: npt.NDArray[np.uint8]) -> int:
    """The frame index that :func:`write_video` drew into ``frame`` (any size, same aspect)."""
    height, width = frame.shape[:2]
    strip = height / 4
    block = width / COUNTER_BITS
    value = 0
    y0, y1 = int(strip * 0.25), max(int(strip * 0.75), int(strip * 0.25) + 1)
    for bit in range(COUNTER_BITS):
        x0 = int(block * (bit + 0.25))
        x1 = max(int(block * (bit + 0.75)), x0 + 1)
        luma = float(frame[y0:y1, x0:x1].mean())
        value = (value << 1) | int(luma > 128)
    return value


def region_color(frame: npt.NDArray[np.uint8]) -> RGB:
    """The mean colour of the middle of the frame's colour region, rounded."""
    height, width = frame.shape[:2]
    patch = frame[height // 2 : height * 7 // 8, width // 4 : width * 3 // 4]
    r, g, b = (round(float(c)) for c in patch.reshape(-1, 3).mean(axis=0))
    return (r, g, b)


# --------------------------------------------------------------------------- fault injection

CRASH_INDEX = 7
"""Reading this frame with :class:`FaultyBackend` kills the worker with SIGSEGV."""
HANG_INDEX = 11
"""Reading this frame with :class:`FaultyBackend` hangs the worker."""
SLOW_INDEX = 13
"""Reading this frame with :class:`FaultyBackend` takes 3 s more."""


class FaultyBackend(PyAVBackend):
    """PyAV, except that it crashes or hangs on demand, like decord on a damaged file.

    Reads that include :data:`CRASH_INDEX` segfault, reads that include
    :data:`HANG_INDEX` sleep for an hour (:data:`SLOW_INDEX`: 3 s, then decode), and
    probing a path whose name contains ``"hang"`` sleeps too. It is importable by
    name, so a spawned worker can load it.
    """

    name = "faulty"

    def probe(self, path: str) -> VideoInfo:
        if "hang" in os.path.basename(path):
            time.sleep(3600)
        return super().probe(path)

    def read(
        self,
        path: str,
        indices: Sequence[int],
        size: tuple[int, int],
        out: Frames,
        *,
        skip_errors: bool = False,
    ) -> dict[int, str]:
        if CRASH_INDEX in indices:
            os.kill(os.getpid(), signal.SIGSEGV)
        if HANG_INDEX in indices:
            time.sleep(3600)
        if SLOW_INDEX in indices:
            time.sleep(3)
        return super().read(path, indices, size, out, skip_errors=skip_errors)


class _InPairs(FrameBackend):
    """A backend whose reads each wait (up to 30 s) for a second read beside them in the
    same process: it decodes only where a process serves two requests at once
    (``concurrent_requests``). Mixed in before the backend it holds back."""

    pair = threading.Barrier(2, timeout=30)

    def read(
        self,
        path: str,
        indices: Sequence[int],
        size: tuple[int, int],
        out: Frames,
        *,
        skip_errors: bool = False,
    ) -> dict[int, str]:
        self.pair.wait()
        return super().read(path, indices, size, out, skip_errors=skip_errors)


class _PyAVPerThread(PyAVBackend):
    """PyAV decoding on each calling thread's own PyAV (one is not thread-safe)."""

    def __init__(self) -> None:
        super().__init__()
        self._own = threading.local()

    def read(
        self,
        path: str,
        indices: Sequence[int],
        size: tuple[int, int],
        out: Frames,
        *,
        skip_errors: bool = False,
    ) -> dict[int, str]:
        pyav = getattr(self._own, "pyav", None) or PyAVBackend()
        self._own.pyav = pyav
        return pyav.read(path, indices, size, out, skip_errors=skip_errors)


class PyAVInPairs(_InPairs, _PyAVPerThread):
    """PyAV in a process taking two requests at once, decoding only two at a time."""

    name = "pyav-in-pairs"
    concurrent_requests = 2


class DecordWithoutPyAV(DecordBackend):
    """decord as deployed without PyAV: codec and display rotation are unknown."""

    name = "decord-without-pyav"

    def _stream_facts(self, path: str) -> _StreamFacts | None:
        return None


class PyAVDecodingEveryFrame(PyAVBackend):
    """PyAV without dropping unwanted non-reference frames: the reference for that shortcut."""

    name = "pyav-every-frame"
    skip_nonref = False


class PyAVReportingThreads(PyAVBackend):
    """PyAV whose probe names, in ``codec``, the threads its decoder was given."""

    name = "pyav-reporting-threads"

    def probe(self, path: str) -> VideoInfo:
        info = super().probe(path)
        file = self._open(path)
        threads = file.stream.codec_context.thread_count
        kind = file.stream.codec_context.thread_type
        return dataclasses.replace(
            info,
            codec=f"{info.codec} codec_threads={self.codec_threads} "
            f"thread_count={threads} thread_type={kind}",
        )


class NvdecOnCpu(NvdecBackend):
    """The NVDEC backend with :mod:`tests.support.fake_nvc` for PyNvVideoCodec, on the CPU."""

    name = "nvdec-on-cpu"
    device = "cpu"
    module = "tests.support.fake_nvc"
    # Out of GPU memory, requests stay on PyAV for the rest of a test (10 s in
    # production, longer than any two requests here).
    memory_retry_seconds = 600.0


class NvdecOnCpuInPairs(_InPairs, NvdecOnCpu):
    """:class:`NvdecOnCpu` decoding only two requests at a time: it decodes only where
    its process takes requests at once."""


class NvdecOnCpuRetryAtOnce(NvdecOnCpu):
    """:class:`NvdecOnCpu` that tries NVDEC again at once after running out of GPU
    memory (importable by a decode worker process, unlike a class in a test)."""

    memory_retry_seconds = 0.0
