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

import os
import signal
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from vidseek.indexer.types import VideoInfo
from vidseek.indexer.video import DecordBackend, Frames, PyAVBackend

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
    "available_codec",
    "read_counter",
    "region_color",
    "truncate",
    "write_audio_only",
    "write_frameless_video",
    "write_garbage",
    "write_text_as_mp4",
    "write_video",
]

RGB = tuple[int, int, int]

RED: RGB = (255, 0, 0)
GREEN: RGB = (0, 255, 0)
BLUE: RGB = (0, 0, 255)
WHITE: RGB = (255, 255, 255)
_PALETTE: tuple[RGB, ...] = (RED, GREEN, BLUE, (255, 255, 0), (255, 0, 255), (0, 255, 255))

COUNTER_BITS = 10


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
    seconds: float,
    fps: float = 30,
    width: int = 160,
    height: int = 96,
    colors: Sequence[RGB] | None = None,
    codec: str = "mpeg4",
    counter: bool = True,
    gop: int = 30,
    rotation: int = 0,
    faststart: bool = False,
) -> str:
    """Write a video of ``round(seconds * fps)`` frames and return its path.

    ``colors[k]`` is the colour of second ``k`` (the last one repeats); by default
    the colour changes every second through red, green, blue, yellow, magenta,
    cyan. ``gop`` is the keyframe interval. ``rotation`` sets the display matrix
    (counter-clockwise degrees). ``faststart`` puts the MP4 index first, so that a
    truncated copy still opens and fails only when decoding reaches the cut.
    """
    schedule = tuple(colors) if colors else _PALETTE
    rate = Fraction(fps).limit_denominator(1001)
    n_frames = round(seconds * fps)
    if n_frames <= 0:
        raise ValueError("a video needs at least one frame; see write_frameless_video")
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream(codec, rate=rate)
        assert isinstance(stream, av.VideoStream)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "mpeg4":
            stream.codec_context.bit_rate = 2_000_000
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(n_frames):
            color = schedule[min(int(i / fps), len(schedule) - 1)]
            frame = av.VideoFrame.from_ndarray(
                _frame(i, width, height, color, counter), format="rgb24"
            )
            frame.pts = i
            frame.time_base = 1 / rate
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


class FaultyBackend(PyAVBackend):
    """PyAV, except that it crashes or hangs on demand, like decord on a damaged file.

    Reads that include :data:`CRASH_INDEX` segfault, reads that include
    :data:`HANG_INDEX` sleep for an hour, and probing a path whose name contains
    ``"hang"`` sleeps too. It is importable by name, so a spawned worker can load it.
    """

    name = "faulty"

    def probe(self, path: str) -> VideoInfo:
        if "hang" in os.path.basename(path):
            time.sleep(3600)
        return super().probe(path)

    def read(self, path: str, indices: Sequence[int], size: tuple[int, int], out: Frames) -> None:
        if CRASH_INDEX in indices:
            os.kill(os.getpid(), signal.SIGSEGV)
        if HANG_INDEX in indices:
            time.sleep(3600)
        super().read(path, indices, size, out)


class DecordWithoutPyAV(DecordBackend):
    """decord as deployed without PyAV: codec and display rotation are unknown."""

    name = "decord-without-pyav"

    def _stream_facts(self, path: str) -> tuple[str, int] | None:
        return None
