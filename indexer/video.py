"""Probing video files and decoding frames at absolute indices, in a child process.

Isolation. decord is unmaintained and can segfault, or hang while holding the
GIL, on damaged files. So every probe and decode runs in a worker process
started with the ``spawn`` context; each request has a deadline. A worker that
misses its deadline is killed (:class:`DecodeTimeout`), one that dies is reported
with its signal (:class:`VideoError`), and the next request starts a fresh
worker. Decoded frames come back through an anonymous shared-memory file
(``memfd``) handed to the worker once, not through the pipe: a 60-frame 352x640
window is ~40 MB, which takes ~20 ms this way and ~100 ms through the pipe.

Backends (:class:`FrameBackend`): ``"pyav"``, ``"torchcodec"`` (CPU),
``"torchcodec-cuda"`` (NVDEC, where CUDA is available) and ``"decord"``. All
return frames RGB, upright (the display rotation applied), at the display
aspect ratio (the sample aspect ratio applied: probed ``width`` is the display
width), resized inside the worker so only small frames cross the process
boundary. torchcodec needs the system FFmpeg shared libraries and is imported
only by its backend.

Frame indices and time. Everything downstream (:func:`sample_indices`, the
window planner, the model prompt) treats frame ``i`` as shown at ``i / fps``
seconds from the first frame. A probe demuxes the whole stream (no decoding)
to learn every frame's presentation timestamp, so that this holds for real:

* constant frame rate (every frame interval within 25% of the median): index
  ``i`` is the ``i``-th frame in presentation order, as in decord;
* variable frame rate (``VideoInfo.vfr``): ``fps`` is the typical rate (one over
  the median frame interval) and index ``i`` is a slot on that regular grid,
  meaning *the frame on screen at* ``i / fps`` (the last frame whose timestamp
  is at or before it). ``frame_count`` is the number of slots up to the last
  frame. A slot time is never before its frame's real timestamp and is within
  the frame's display time, so the timestamp the model is told (``i / fps``) is
  when the frame it sees was really on screen; a still stretch repeats a frame
  rather than skipping time, and bursts of frames are sampled at the grid rate.
  Picking the nearest frame instead could show a frame before its time.

Damaged streams. ``read(..., on_error="skip")`` returns :class:`DecodedFrames`:
the frames that decoded, their indices, and the indices that did not (with a
message naming the path), so a caller can index what decodes and report the
gap. The default ``on_error="raise"`` raises :class:`VideoError` if any
requested frame is missing. PyAV and torchcodec keep decoding past a bad
packet; a worker that crashes in ``"skip"`` mode is retried on halves of the
request (a bounded number of times) so one bad frame does not lose a window.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import itertools
import math
import mmap
import multiprocessing
import os
import re
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing import reduction
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, ClassVar, Final, Literal, overload

import numpy as np
import numpy.typing as npt

from vidseek.indexer.types import VideoInfo
from vidseek.storage.errors import (
    ConfigError,
    DecodeTimeout,
    NotFound,
    ResourceExhausted,
    VideoError,
    VidseekError,
)

__all__ = [
    "BACKENDS",
    "DecodeWorker",
    "DecodedFrames",
    "DecordBackend",
    "FrameBackend",
    "FrameReader",
    "PyAVBackend",
    "TorchCodecBackend",
    "TorchCodecCudaBackend",
    "probe",
    "resized_shape",
    "sample_indices",
]

Frames = npt.NDArray[np.uint8]
OnError = Literal["raise", "skip"]

DEFAULT_TIMEOUT: Final = 120.0
# torchcodec's worker imports torch: ~5 s idle, over 60 s seen on a loaded 2-core machine.
DEFAULT_START_TIMEOUT: Final = 180.0
_LOG_TAIL_BYTES: Final = 4096
_MESSAGE_LIMIT: Final = 400
# A frame interval further than this fraction from the median makes a stream VFR.
_VFR_TOLERANCE: Final = 0.25
# Worker restarts one "skip" request may cost while it isolates crashing frames.
_SKIP_CRASH_BUDGET: Final = 8


# --------------------------------------------------------------------------- planning helpers


def resized_shape(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The ``(h, w)`` to decode a ``width`` x ``height`` video at.

    Keeps the aspect ratio, scales down (never up, but for rounding) so that
    ``h * w <= max_pixels``, and rounds each side to a multiple of 32 (at least
    32). Only when ``max_pixels < 32 * 32`` does the result exceed ``max_pixels``.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    h = max(32, round(height * scale / 32) * 32)
    w = max(32, round(width * scale / 32) * 32)
    if h * w > max_pixels:
        h = max(32, math.floor(height * scale / 32) * 32)
        w = max(32, math.floor(width * scale / 32) * 32)
    # Extreme aspect ratios: the 32-pixel minimum of one side pushes the other over.
    if h * w > max_pixels and h == 32:
        w = max(32, max_pixels // (32 * 32) * 32)
    elif h * w > max_pixels and w == 32:
        h = max(32, max_pixels // (32 * 32) * 32)
    return h, w


def sample_indices(info: VideoInfo, start_s: float, end_s: float, fps: float) -> list[int]:
    """Absolute frame indices sampled at ``fps`` within ``[start_s, end_s)``.

    Sample times are ``start_s + k / fps``; each becomes the first index at or
    after it, so its timestamp ``index / info.fps`` lies in the window. That
    timestamp is real for variable-frame-rate video too: there an index is a
    slot on the regular ``info.fps`` grid, decoded as the frame on screen at that
    time (see the module docstring). Indices are clamped to
    ``[0, frame_count - 1]``, sorted and unique; an odd count is padded by
    repeating the last index, because Qwen3-VL merges frames in temporal pairs.
    An empty window gives ``[]``.
    """
    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"sampling fps must be positive, got {fps}")
    if info.fps <= 0 or info.frame_count <= 0:
        raise ValueError(f"{info.path}: video has no frames or no frame rate")
    start_s = max(0.0, start_s)
    if not end_s > start_s:
        return []
    count = math.ceil((end_s - start_s) * fps - 1e-9)
    last = info.frame_count - 1
    picked: list[int] = []
    for k in range(count):
        t = start_s + k / fps
        # Float error can put t * fps a hair above a whole frame (10.0000001):
        # the tolerance keeps that frame 10, not 11.
        index = math.ceil(t * info.fps - 1e-6)
        if index / info.fps >= end_s:
            break
        index = min(max(index, 0), last)
        if not picked or index > picked[-1]:
            picked.append(index)
    if len(picked) % 2:
        picked.append(picked[-1])
    return picked


# --------------------------------------------------------------------------- frame timelines


@dataclass(frozen=True)
class _Timeline:
    """How frame indices map onto the frames of a stream (see the module docstring)."""

    fps: float
    frame_count: int
    vfr: bool
    # Presentation times of the stream's frames, seconds from the first; VFR only.
    times: npt.NDArray[np.float64] | None = None

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps

    def frames(self, indices: Sequence[int]) -> npt.NDArray[np.int64]:
        """The stream frame (presentation order) shown at each index's time."""
        wanted = np.asarray(indices, dtype=np.int64)
        if self.times is None:
            return wanted
        # A slot time a hair below a frame's timestamp (float error) still shows it.
        at = wanted / self.fps + 1e-4 / self.fps
        shown = np.searchsorted(self.times, at, side="right") - 1
        return np.clip(shown, 0, len(self.times) - 1).astype(np.int64)


def _snap_rate(fps: float) -> float:
    """A rate measured from timestamps, snapped to a nearby ratio (29.97002997 -> 30000/1001)."""
    nice = float(Fraction(fps).limit_denominator(1001))
    return nice if abs(nice - fps) <= 1e-4 * fps else fps


def _frame_timeline(pts_seconds: npt.ArrayLike, header_fps: float) -> _Timeline:
    """The timeline of a stream from its frames' timestamps (any order) and header rate.

    Constant frame rate keeps the header rate when it agrees with the mean
    frame interval (so 30000/1001 stays exact); otherwise the rate comes from
    the timestamps. Variable frame rate gets a grid at the median interval.
    """
    times = np.sort(np.asarray(pts_seconds, dtype=np.float64))
    times = times[np.isfinite(times)]
    n = len(times)
    if n == 0:
        raise VideoError("video stream has no frames")
    header_ok = header_fps > 0 and math.isfinite(header_fps)
    steps = np.diff(times)
    steps = steps[steps > 0]
    if not len(steps):
        if not header_ok:
            raise VideoError("video has no usable frame rate (one frame, no rate in the header)")
        return _Timeline(fps=header_fps, frame_count=n, vfr=False)
    median = float(np.median(steps))
    vfr = bool(np.max(np.abs(steps - median)) > _VFR_TOLERANCE * median) or len(steps) < n - 1
    if not vfr:
        mean = float(times[-1] - times[0]) / (n - 1)
        if header_ok and abs(header_fps * mean - 1.0) < 0.005:
            return _Timeline(fps=header_fps, frame_count=n, vfr=False)
        return _Timeline(fps=_snap_rate(1.0 / mean), frame_count=n, vfr=False)
    fps = _snap_rate(1.0 / median)
    relative = times - times[0]
    # Enough slots that the last one shows the last frame.
    slots = math.ceil(float(relative[-1]) * fps - 1e-4) + 1
    return _Timeline(fps=fps, frame_count=slots, vfr=True, times=relative)


# --------------------------------------------------------------------------- shared helpers


def _clean_message(text: str) -> str:
    """One line of a decoder message: no source paths, timestamps or pointers."""
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text)
    text = re.sub(r"\b\w+, /\S+:\d+, ", "", text)  # torchcodec: "function, /src/x.cpp:12, "
    text = re.sub(r" @ 0x[0-9a-f]+", "", text)
    text = re.sub(r"\[Errno -?\d+\] ", "", text)
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _normalize_rotation(degrees: float) -> int:
    return round(degrees / 90.0) % 4 * 90


def _upright(frame: Frames, rotation: int) -> Frames:
    """Apply a counter-clockwise display rotation (0, 90, 180 or 270 degrees)."""
    return np.rot90(frame, rotation // 90) if rotation else frame


def _display_size(
    coded_width: int, coded_height: int, sar: Fraction | None, rotation: int
) -> tuple[int, int]:
    """``(width, height)`` as displayed: sample aspect ratio applied, then rotation."""
    width = coded_width
    if sar and sar > 0 and sar != 1:
        width = max(1, round(coded_width * sar))
    return (coded_height, width) if rotation in (90, 270) else (width, coded_height)


def _resize(frames: Frames, h: int, w: int) -> Frames:
    """Resize ``(T, H, W, 3)`` frames: box filter by the integer factor, then bilinear."""
    t, src_h, src_w, c = frames.shape
    if (src_h, src_w) == (h, w):
        return frames
    fy, fx = max(1, src_h // h), max(1, src_w // w)
    data = frames.astype(np.float32)
    if fy > 1 or fx > 1:
        hh, ww = src_h // fy, src_w // fx
        data = data[:, : hh * fy, : ww * fx].reshape(t, hh, fy, ww, fx, c).mean(axis=(2, 4))
    in_h, in_w = data.shape[1:3]
    ys = np.clip((np.arange(h) + 0.5) * in_h / h - 0.5, 0, in_h - 1)
    xs = np.clip((np.arange(w) + 0.5) * in_w / w - 0.5, 0, in_w - 1)
    y0 = np.floor(ys).astype(np.intp)
    x0 = np.floor(xs).astype(np.intp)
    y1 = np.minimum(y0 + 1, in_h - 1)
    x1 = np.minimum(x0 + 1, in_w - 1)
    wy = (ys - y0).astype(np.float32)[None, :, None, None]
    wx = (xs - x0).astype(np.float32)[None, None, :, None]
    top = data[:, y0][:, :, x0] * (1 - wx) + data[:, y0][:, :, x1] * wx
    bottom = data[:, y1][:, :, x0] * (1 - wx) + data[:, y1][:, :, x1] * wx
    result = top * (1 - wy) + bottom * wy
    resized: Frames = np.clip(np.rint(result), 0, 255).astype(np.uint8)
    return resized


def _groups(frame_numbers: npt.NDArray[np.int64]) -> list[tuple[int, int, int]]:
    """``(frame, first position, end position)`` runs of a non-decreasing frame array."""
    runs: list[tuple[int, int, int]] = []
    for pos, frame in enumerate(frame_numbers.tolist()):
        if runs and runs[-1][0] == frame:
            runs[-1] = (frame, runs[-1][1], pos + 1)
        else:
            runs.append((frame, pos, pos + 1))
    return runs


def _read_runs(
    indices: Sequence[int],
    runs: list[tuple[int, int, int]],
    out: Frames,
    skip_errors: bool,
    batch: Callable[[list[int]], Frames],
    one: Callable[[int], Frames],
) -> dict[int, str]:
    """Fill ``out`` from ``batch`` of every run's frame; if the batch fails, frame by frame.

    ``batch`` and ``one`` raise :class:`VideoError`. One frame at a time names the
    frame that fails (a whole batch fails for one bad frame). Returns the missing
    indices with a message; raises the first one's unless ``skip_errors``.
    """
    try:
        frames = batch([run[0] for run in runs])
    except VideoError:
        missing: dict[int, str] = {}
        for frame, lo, hi in runs:
            try:
                out[lo:hi] = one(frame)
            except VideoError as exc:
                for pos in range(lo, hi):
                    missing[indices[pos]] = f"frame {indices[pos]} was not decoded: {exc}"
        if missing and not skip_errors:
            raise VideoError(missing[min(missing)]) from None
        return missing
    if frames.shape[1:] != out.shape[1:]:
        raise VideoError(f"decoder returned frames of shape {frames.shape}, not {out.shape}")
    for row, (_, lo, hi) in enumerate(runs):
        out[lo:hi] = frames[row]
    return {}


@dataclass(frozen=True)
class _StreamFacts:
    codec: str
    rotation: int
    sar: Fraction | None


def _pyav_stream_facts(path: str) -> _StreamFacts | None:
    """Codec, rotation and sample aspect ratio read with PyAV; None when PyAV can't tell."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(path) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if stream.codec_context is None:
                return None
            codec = str(stream.codec_context.name)
            sar = stream.sample_aspect_ratio
            rotation = 0
            for frame in container.decode(stream):
                rotation = _normalize_rotation(frame.rotation)
                break
            return _StreamFacts(codec, rotation, Fraction(sar) if sar else None)
    except Exception:
        return None


def _diagnose(path: str) -> str | None:
    """Why a file is no usable video, as PyAV sees it; None when it sees no reason."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(path) as container:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams})
                found = f" (streams: {', '.join(kinds)})" if kinds else ""
                return f"no video stream{found}: audio-only or not a video"
            stream = container.streams.video[0]
            if stream.codec_context is None:
                return _unsupported_codec(stream)
            if not any(packet.size for packet in container.demux(stream)):
                return "video stream has no frames (zero duration)"
    except av.FFmpegError as exc:
        message = _clean_message(str(exc)).replace(f": {path!r}", "")
        return f"not a readable video container (damaged, truncated or not a video): {message}"
    except Exception:
        return None
    return None


def _unsupported_codec(stream: Any) -> str:
    tag = ""
    with contextlib.suppress(Exception):
        raw = int(stream.codec_tag) if not isinstance(stream.codec_tag, str) else 0
        tag = raw.to_bytes(4, "little").decode("ascii", "replace") if raw else stream.codec_tag
    return (
        "unsupported video codec"
        + (f" (codec tag {tag!r})" if tag else "")
        + (": FFmpeg has no decoder for it")
    )


# --------------------------------------------------------------------------- backends


class FrameBackend(abc.ABC):
    """One way of decoding video files. Instances live inside the worker process.

    A backend may keep the last file open between calls (a reader decodes one
    video window after window). It raises :class:`VideoError` (with a message
    that need not name the path) for problems it recognises; the worker turns
    any other exception into a :class:`VideoError` too. Indices follow the
    module's timeline rules (VFR slots); probe a file before reading it.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def probe(self, path: str) -> VideoInfo:
        """Facts about the video; width and height are the upright display size."""

    @abc.abstractmethod
    def read(
        self,
        path: str,
        indices: Sequence[int],
        size: tuple[int, int],
        out: Frames,
        *,
        skip_errors: bool = False,
    ) -> dict[int, str]:
        """Decode frames at sorted, unique absolute ``indices`` into ``out``.

        ``out`` has shape ``(len(indices), h, w, 3)`` for ``size == (h, w)``;
        frames are RGB, upright, resized to ``size``. Without ``skip_errors`` a
        frame that cannot be decoded raises :class:`VideoError`; with it, the
        result maps each such index to the reason (its row of ``out`` is left
        as it was) and the other frames are still decoded.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release open files."""


class DecordBackend(FrameBackend):
    """decord 0.6: ``VideoReader.get_batch`` of sorted unique frames, resized by decord.

    decord applies the display rotation itself, but with ``width``/``height`` set
    it mangles rotated videos (a 90-degree video came back with 4 channels), so
    rotated videos are decoded at full size and resized here. decord does not
    report codec, rotation or sample aspect ratio; PyAV reads them when present.
    """

    name = "decord"

    def __init__(self) -> None:
        import decord

        decord.bridge.set_bridge("native")
        self._decord: Any = decord
        self._path: str | None = None
        self._readers: dict[tuple[int, int] | None, Any] = {}
        self._facts: _StreamFacts | None = None  # None: unknown (PyAV missing)
        self._timeline: _Timeline | None = None
        self._decord_resizes = True

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (RuntimeError, self._decord.DECORDError)

    def _stream_facts(self, path: str) -> _StreamFacts | None:
        """Codec, rotation and aspect, which decord does not report; None when unknown."""
        return _pyav_stream_facts(path)

    def _select(self, path: str) -> None:
        if path != self._path:
            self.close()
            self._path = path
            self._facts = self._stream_facts(path)
            self._decord_resizes = not (self._facts and self._facts.rotation)

    def _open(self, path: str, size: tuple[int, int] | None) -> Any:
        self._select(path)
        reader = self._readers.get(size)
        if reader is None:
            kwargs = {} if size is None else {"height": size[0], "width": size[1]}
            try:
                reader = self._decord.VideoReader(path, ctx=self._decord.cpu(0), **kwargs)
            except self._errors() as exc:
                reason = _diagnose(path) or _clean_message(str(exc))
                raise VideoError(f"cannot open video: {reason}") from None
            self._readers[size] = reader
        return reader

    def _load_timeline(self, path: str) -> _Timeline:
        self._select(path)
        if self._timeline is None:
            reader = self._open(path, None)
            try:
                count = len(reader)
                if count <= 0:
                    raise VideoError("video stream has no frames")
                starts = reader.get_frame_timestamp(np.arange(count))[:, 0]
                fps = float(reader.get_avg_fps())
            except self._errors() as exc:
                raise VideoError(f"cannot index video: {_clean_message(str(exc))}") from None
            self._timeline = _frame_timeline(starts, fps)
        return self._timeline

    def probe(self, path: str) -> VideoInfo:
        """See :meth:`FrameBackend.probe`."""
        timeline = self._load_timeline(path)
        reader = self._open(path, None)
        try:
            height, width = reader[0].shape[:2]
            reader.seek(0)
        except self._errors() as exc:
            raise VideoError(f"cannot decode first frame: {_clean_message(str(exc))}") from None
        facts = self._facts
        rotation = facts.rotation if facts else 0
        # decord's frames are already upright: undo the swap to get the coded size.
        coded = (height, width) if rotation in (90, 270) else (width, height)
        width, height = _display_size(*coded, facts.sar if facts else None, rotation)
        return VideoInfo(
            path=path,
            fps=timeline.fps,
            frame_count=timeline.frame_count,
            duration=timeline.duration,
            width=int(width),
            height=int(height),
            codec=facts.codec if facts else "",
            rotation=rotation,
            vfr=timeline.vfr,
        )

    def read(
        self,
        path: str,
        indices: Sequence[int],
        size: tuple[int, int],
        out: Frames,
        *,
        skip_errors: bool = False,
    ) -> dict[int, str]:
        """See :meth:`FrameBackend.read`."""
        timeline = self._load_timeline(path)
        if indices[-1] >= timeline.frame_count:
            raise VideoError(f"frame {indices[-1]} is past the end ({timeline.frame_count} frames)")
        # decord fails a whole batch on one bad frame.
        return _read_runs(
            indices,
            _groups(timeline.frames(indices)),
            out,
            skip_errors,
            lambda frames: self._batch(path, frames, size),
            lambda frame: self._batch(path, [frame], size)[0],
        )

    def _batch(self, path: str, frames: list[int], size: tuple[int, int]) -> Frames:
        h, w = size
        known = self._facts is not None
        try:
            batch = None
            if self._decord_resizes:
                try:
                    batch = self._open(path, size).get_batch(frames).asnumpy()
                except self._errors():
                    if known:
                        raise
                if not known and (batch is None or batch.shape[1:] != (h, w, 3)):
                    # Rotation unknown (no PyAV) and decord's resize failed on it:
                    # a rotated video, most likely. Retry at full size.
                    self._decord_resizes = False
            if not self._decord_resizes:
                batch = _resize(self._open(path, None).get_batch(frames).asnumpy(), h, w)
        except self._errors() as exc:
            self._readers.clear()  # a reader that failed may be stuck in a bad state
            raise VideoError(
                f"cannot decode frames {frames[0]}..{frames[-1]}: {_clean_message(str(exc))}"
            ) from None
        assert batch is not None
        frames_out: Frames = batch
        return frames_out

    def close(self) -> None:
        """See :meth:`FrameBackend.close`."""
        self._readers.clear()
        self._path = None
        self._timeline = None


class _PyAVFile:
    """An open container, its frame index (from demuxing, no decoding) and decoder state."""

    def __init__(self, av: Any, path: str) -> None:
        self.av = av
        self.container = av.open(path)
        try:
            if not self.container.streams.video:
                kinds = sorted({s.type for s in self.container.streams})
                found = f" (streams: {', '.join(kinds)})" if kinds else ""
                raise VideoError(f"no video stream{found}: audio-only or not a video")
            self.stream = self.container.streams.video[0]
            if self.stream.codec_context is None:
                raise VideoError(_unsupported_codec(self.stream))
            self.stream.thread_type = "AUTO"
            self.time_base = Fraction(self.stream.time_base or Fraction(1, 1_000_000))
            rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
            self.header_fps = float(rate) if rate else 0.0
            sar = self.stream.sample_aspect_ratio
            self.sar = Fraction(sar) if sar else None
            self.errors: list[str] = []
            self._scan()
        except BaseException:
            self.container.close()
            raise
        self.rotation = 0
        self.wanted: set[int] | None = None
        self.decoder: Iterator[Any] | None = None
        # Frame number the decoder yielded last; None when unknown (just sought).
        self.last: int | None = None

    def _scan(self) -> None:
        """Timestamps and keyframes of every packet, in presentation order."""
        stamps: list[int] = []
        keys: list[int] = []
        self.has_pts = True
        try:
            for packet in self.container.demux(self.stream):
                if not packet.size:
                    continue
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:
                    self.has_pts = False
                    stamp = len(stamps)
                if packet.is_keyframe:
                    keys.append(stamp)
                stamps.append(stamp)
        except self.av.FFmpegError as exc:
            # A truncated or damaged container: index what demuxes.
            self.errors.append(f"demuxing stopped: {_clean_message(str(exc))}")
        if not stamps:
            raise VideoError("video stream has no frames")
        if not self.has_pts:
            # No timestamps (rare raw streams): frames are counted from the start.
            stamps = list(range(len(stamps)))
        order = np.sort(np.asarray(stamps, dtype=np.int64))
        self.pts = order
        self.keyframes = np.searchsorted(order, np.asarray(sorted(keys), dtype=np.int64))
        if not len(self.keyframes) or self.keyframes[0] != 0:
            self.keyframes = np.concatenate([[0], self.keyframes]).astype(np.int64)
        if self.has_pts:
            seconds = (order - order[0]).astype(np.float64) * float(self.time_base)
            self.timeline = _frame_timeline(seconds, self.header_fps)
        else:
            if not self.header_fps:
                raise VideoError("video has no timestamps and no frame rate")
            self.timeline = _Timeline(self.header_fps, len(order), vfr=False)
        self.container.seek(0)

    def index_of(self, frame: Any) -> int:
        """The frame number (presentation order) of a decoded frame."""
        if frame.pts is None or not self.has_pts:
            return (self.last if self.last is not None else -1) + 1
        return int(np.searchsorted(self.pts, frame.pts))

    def frames(self) -> Iterator[Any]:
        """Decoded frames from the demuxer's position on; decode errors are noted, not raised.

        While ``wanted`` (a set of pts) is set, packets of other frames are sent
        with ``skip_frame=NONREF``: the decoder drops them if no frame refers to
        them (B-frames, mostly), which halves the work on x264's defaults.
        """
        ctx = self.stream.codec_context
        ctx.skip_frame = "DEFAULT"  # a generator before this one may have left NONREF
        skipping = False
        try:
            for packet in self.container.demux(self.stream):
                skip = self.wanted is not None and packet.pts not in self.wanted
                if skip != skipping:
                    ctx.skip_frame = "NONREF" if skip else "DEFAULT"
                    skipping = skip
                try:
                    decoded = ctx.decode(packet)
                except self.av.FFmpegError as exc:
                    self.errors.append(_clean_message(str(exc)))
                    continue
                yield from decoded
        except self.av.FFmpegError as exc:
            self.errors.append(f"demuxing failed: {_clean_message(str(exc))}")
            with contextlib.suppress(self.av.FFmpegError):
                yield from ctx.decode(None)

    def seek(self, frame: int) -> None:
        """Position the demuxer at the keyframe ``frame`` (a frame number)."""
        if frame == 0 or not self.has_pts:
            self.container.seek(0)  # also flushes the decoder
        else:
            self.container.seek(
                int(self.pts[frame]), stream=self.stream, backward=True, any_frame=False
            )
        self.decoder = self.frames()
        self.last = None

    def keyframe_before(self, frame: int) -> int:
        """The last keyframe at or before ``frame`` (0 if none)."""
        if not self.has_pts:
            return 0
        pos = int(np.searchsorted(self.keyframes, frame, side="right")) - 1
        return int(self.keyframes[max(pos, 0)])

    def close(self) -> None:
        self.decoder = None
        self.container.close()


class PyAVBackend(FrameBackend):
    """PyAV (FFmpeg): seek to the keyframe before a frame, decode forward, convert wanted frames.

    Frames are identified by presentation timestamp against the index built
    from demuxing, so decord's frame numbering holds for constant frame rate
    (B-frames included) and gaps are detected, not guessed. A packet that fails
    to decode is noted and decoding goes on: only frames that never come out
    are missing. It seeks only when a keyframe lies between the last decoded
    frame and the next wanted one.
    """

    name = "pyav"
    # Let the decoder drop unwanted non-reference frames (see _PyAVFile.frames).
    skip_nonref: ClassVar[bool] = True

    def __init__(self) -> None:
        import av

        self._av: Any = av
        self._file: _PyAVFile | None = None
        self._path: str | None = None
        self._first_size = (0, 0)

    def _open(self, path: str) -> _PyAVFile:
        if self._file is not None and path == self._path:
            return self._file
        self.close()
        try:
            file = _PyAVFile(self._av, path)
        except self._av.FFmpegError as exc:
            reason = _diagnose(path) or _clean_message(str(exc))
            raise VideoError(f"cannot open video: {reason}") from None
        try:
            file.decoder = file.frames()
            first = next(file.decoder, None)
            if first is None:
                detail = f": {file.errors[-1]}" if file.errors else ""
                raise VideoError(f"no frame could be decoded (damaged video stream){detail}")
        except BaseException:
            file.close()
            raise
        file.rotation = _normalize_rotation(first.rotation)
        file.decoder = itertools.chain([first], file.decoder)
        file.last = file.index_of(first) - 1
        self._first_size = (int(first.width), int(first.height))
        self._file, self._path = file, path
        return file

    def probe(self, path: str) -> VideoInfo:
        """See :meth:`FrameBackend.probe`."""
        file = self._open(path)
        width, height = _display_size(*self._first_size, file.sar, file.rotation)
        timeline = file.timeline
        return VideoInfo(
            path=path,
            fps=timeline.fps,
            frame_count=timeline.frame_count,
            duration=timeline.duration,
            width=width,
            height=height,
            codec=str(file.stream.codec_context.name),
            rotation=file.rotation,
            vfr=timeline.vfr,
        )

    def read(
        self,
        path: str,
        indices: Sequence[int],
        size: tuple[int, int],
        out: Frames,
        *,
        skip_errors: bool = False,
    ) -> dict[int, str]:
        """See :meth:`FrameBackend.read`."""
        file = self._open(path)
        count = file.timeline.frame_count
        if indices[-1] >= count:
            raise VideoError(f"frame {indices[-1]} is past the end ({count} frames)")
        runs = _groups(file.timeline.frames(indices))
        file.errors.clear()
        if self.skip_nonref and file.has_pts:
            file.wanted = {int(file.pts[frame]) for frame, _, _ in runs}
        try:
            missing = self._decode_runs(file, indices, runs, size, out)
            if missing and file.wanted is not None:
                # Frames dropped as non-reference can't be wanted ones, unless
                # packets were queued before this request: decode those again, fully.
                file.wanted = None
                file.decoder = None
                again = [run for run in runs if indices[run[1]] in missing]
                missing = self._decode_runs(file, indices, again, size, out)
        finally:
            file.wanted = None
        if missing and not skip_errors:
            first = min(missing)
            raise VideoError(missing[first])
        return missing

    def _decode_runs(
        self,
        file: _PyAVFile,
        indices: Sequence[int],
        runs: list[tuple[int, int, int]],
        size: tuple[int, int],
        out: Frames,
    ) -> dict[int, str]:
        """Decode the frames of ``runs`` into ``out``; the missing indices, with reasons."""
        h, w = size
        dec_h, dec_w = (w, h) if file.rotation in (90, 270) else (h, w)
        missing: dict[int, str] = {}
        pos = 0
        while pos < len(runs):
            target = runs[pos][0]
            if self._should_seek(file, target):
                self._seek_before(file, target)
            assert file.decoder is not None
            for frame in file.decoder:
                index = file.index_of(frame)
                file.last = index
                while pos < len(runs) and runs[pos][0] < index:
                    # The decoder went past a wanted frame without producing it.
                    self._miss(file, indices, runs[pos], missing, "was not decoded")
                    pos += 1
                if pos == len(runs):
                    break
                if index == runs[pos][0]:
                    image = frame.to_ndarray(
                        format="rgb24", width=dec_w, height=dec_h, interpolation="AREA"
                    )
                    _, lo, hi = runs[pos]
                    out[lo:hi] = _upright(image, file.rotation)
                    pos += 1
                    if pos == len(runs) or self._should_seek(file, runs[pos][0]):
                        break
            else:
                last = file.last
                file.decoder = None
                reason = f"is past the last decodable frame ({last})"
                for run in runs[pos:]:
                    self._miss(file, indices, run, missing, reason)
                pos = len(runs)
        return missing

    @staticmethod
    def _miss(
        file: _PyAVFile,
        indices: Sequence[int],
        run: tuple[int, int, int],
        missing: dict[int, str],
        what: str,
    ) -> None:
        _, lo, hi = run
        cause = f": {file.errors[-1]}" if file.errors else ""
        for pos in range(lo, hi):
            missing[indices[pos]] = f"frame {indices[pos]} {what}{cause}"

    @staticmethod
    def _should_seek(file: _PyAVFile, target: int) -> bool:
        if file.decoder is None or file.last is None or target <= file.last:
            return True
        # Seek only when it skips decoding: a keyframe lies past what we decoded.
        return file.keyframe_before(target) > file.last + 1

    def _seek_before(self, file: _PyAVFile, target: int) -> None:
        """Seek so that the next decoded frame is at or before ``target``."""
        key = file.keyframe_before(target)
        while True:
            file.seek(key)
            assert file.decoder is not None
            first = next(file.decoder, None)
            if first is not None and (key == 0 or file.index_of(first) <= target):
                file.decoder = itertools.chain([first], file.decoder)
                return
            if first is None and key == 0:
                file.decoder = iter(())
                return
            # The seek landed after the target (sparse or odd index): go further back.
            key = file.keyframe_before(key - 1)

    def close(self) -> None:
        """See :meth:`FrameBackend.close`."""
        if self._file is not None:
            self._file.close()
        self._file = None
        self._path = None


class TorchCodecBackend(FrameBackend):
    """torchcodec (FFmpeg through the system libraries): exact-mode ``VideoDecoder``.

    Frames are resized by the decoder itself (``transforms=[Resize]``, applied
    with the colour conversion) and come out upright. The frame timestamps come
    from torchcodec's demuxer scan. One decoder is kept per output size.
    """

    name = "torchcodec"
    device: ClassVar[str] = "cpu"

    def __init__(self) -> None:
        try:
            import torch

            # Through importlib: torchcodec is optional, and typed only where installed.
            decoders = importlib.import_module("torchcodec.decoders")
            transforms = importlib.import_module("torchcodec.transforms")
        except Exception as exc:
            raise RuntimeError(
                f"cannot import torchcodec ({type(exc).__name__}: {_clean_message(str(exc))}); "
                "it needs the FFmpeg shared libraries (e.g. apt-get install ffmpeg)"
            ) from None
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available for NVDEC decoding")
        self._video_decoder: Any = decoders.VideoDecoder
        self._resize: Any = transforms.Resize
        self._demuxer: Any = getattr(decoders, "Demuxer", None)  # torchcodec >= 0.17
        self._path: str | None = None
        self._decoders: dict[tuple[int, int] | None, Any] = {}
        self._timeline: _Timeline | None = None
        self._info: VideoInfo | None = None

    def _select(self, path: str) -> None:
        if path != self._path:
            self.close()
            self._path = path

    def _decoder(self, path: str, size: tuple[int, int] | None) -> Any:
        """The decoder for frames of ``size``; ``None``: full size, for probing only.

        Exact mode (which scans the file) only where frames are read by index.
        """
        self._select(path)
        decoder = self._decoders.get(size)
        if decoder is None:
            try:
                decoder = self._video_decoder(
                    path,
                    dimension_order="NHWC",
                    seek_mode="approximate" if size is None else "exact",
                    num_ffmpeg_threads=0,
                    device=self.device,
                    transforms=None if size is None else [self._resize(size)],
                )
            except (RuntimeError, ValueError) as exc:
                reason = _diagnose(path) or _clean_message(str(exc))
                raise VideoError(f"cannot open video: {reason}") from None
            self._decoders[size] = decoder
        return decoder

    def _load(self, path: str) -> tuple[_Timeline, VideoInfo]:
        self._select(path)
        if self._timeline is None or self._info is None:
            # Scan first: it fails more clearly than the decoder on empty streams.
            starts = self._frame_starts(path)
            decoder = self._decoder(path, None)
            meta = decoder.metadata
            header_fps = float(meta.average_fps_from_header or meta.average_fps or 0.0)
            if starts is None:
                # Older torchcodec: trust the header, constant rate.
                count = int(meta.num_frames or 0)
                if count <= 0 or header_fps <= 0:
                    raise VideoError("video stream has no frames or no frame rate")
                starts = np.arange(count) / header_fps
            timeline = _frame_timeline(starts, header_fps)
            try:
                first = decoder.get_frame_at(0).data
            except (RuntimeError, IndexError) as exc:
                raise VideoError(f"cannot decode first frame: {_clean_message(str(exc))}") from None
            rotation = _normalize_rotation(float(meta.rotation or 0.0))
            par = meta.pixel_aspect_ratio
            height, width = int(first.shape[0]), int(first.shape[1])
            coded = (height, width) if rotation in (90, 270) else (width, height)
            width, height = _display_size(*coded, Fraction(par) if par else None, rotation)
            self._timeline = timeline
            self._info = VideoInfo(
                path=path,
                fps=timeline.fps,
                frame_count=timeline.frame_count,
                duration=timeline.duration,
                width=width,
                height=height,
                codec=str(meta.codec or ""),
                rotation=rotation,
                vfr=timeline.vfr,
            )
        return self._timeline, self._info

    def _frame_starts(self, path: str) -> npt.NDArray[np.float64] | None:
        """Every frame's timestamp from torchcodec's demuxer scan (no decoding); None: no scan."""
        if self._demuxer is None:
            return None
        try:
            pts = self._demuxer(path).streams[0].scan().pts_seconds.numpy()
        except (RuntimeError, ValueError) as exc:
            reason = _diagnose(path) or _clean_message(str(exc))
            raise VideoError(f"cannot open video: {reason}") from None
        if not len(pts):
            raise VideoError("video stream has no frames")
        return np.asarray(pts, dtype=np.float64)

    def probe(self, path: str) -> VideoInfo:
        """See :meth:`FrameBackend.probe`."""
        return self._load(path)[1]

    def read(
        self,
        path: str,
        indices: Sequence[int],
        size: tuple[int, int],
        out: Frames,
        *,
        skip_errors: bool = False,
    ) -> dict[int, str]:
        """See :meth:`FrameBackend.read`."""
        timeline, _ = self._load(path)
        if indices[-1] >= timeline.frame_count:
            raise VideoError(f"frame {indices[-1]} is past the end ({timeline.frame_count} frames)")
        return _read_runs(
            indices,
            _groups(timeline.frames(indices)),
            out,
            skip_errors,
            lambda frames: self._decode(path, size, lambda d: d.get_frames_at(frames)),
            lambda frame: self._decode(path, size, lambda d: d.get_frame_at(frame)),
        )

    def _decode(self, path: str, size: tuple[int, int], get: Callable[[Any], Any]) -> Frames:
        """The frames ``get`` takes from this file's decoder, as an array; VideoError if it fails.

        A decoder that failed may be stuck mid-GOP: it is dropped, so the next
        call starts afresh.
        """
        decoder = self._decoder(path, size)
        try:
            data = get(decoder).data
        except (RuntimeError, IndexError) as exc:
            self._decoders.pop(size, None)
            raise VideoError(_clean_message(str(exc))) from None
        out: Frames = data.cpu().numpy() if self.device != "cpu" else data.numpy()
        return out

    def close(self) -> None:
        """See :meth:`FrameBackend.close`."""
        self._decoders.clear()
        self._path = None
        self._timeline = None
        self._info = None


class TorchCodecCudaBackend(TorchCodecBackend):
    """torchcodec decoding on the GPU (NVDEC); frames are copied back to host memory.

    Unavailable (a :class:`ConfigError` when the worker starts) without CUDA.
    torchcodec falls back to CPU decoding for streams NVDEC cannot handle.
    """

    name = "torchcodec-cuda"
    device: ClassVar[str] = "cuda"


BACKENDS: Final[dict[str, type[FrameBackend]]] = {
    backend.name: backend
    for backend in (DecordBackend, PyAVBackend, TorchCodecBackend, TorchCodecCudaBackend)
}


# --------------------------------------------------------------------------- the worker process


def _anonymous_file(name: str) -> int:
    """A file descriptor of a nameless file that lives in memory where possible."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create(name, os.MFD_CLOEXEC)
    fd, path = tempfile.mkstemp(prefix=f"{name}-")
    os.unlink(path)
    return fd


def _worker_main(conn: Connection, backend_cls: type[FrameBackend]) -> None:
    """Serve probe and read requests until told to stop or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        backend = backend_cls()
    except Exception as exc:
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    buffer_fd = -1
    buffer: mmap.mmap | None = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        op = message[0]
        if op == "stop":
            break
        if op == "fds":
            # Frames go into buffer_fd; our stderr (FFmpeg's log) into log_fd.
            buffer_fd = reduction.recv_handle(conn)
            log_fd = reduction.recv_handle(conn)
            sys.stderr.flush()
            os.dup2(log_fd, 2)
            os.close(log_fd)
            continue
        with contextlib.suppress(OSError):
            os.ftruncate(2, 0)
            os.lseek(2, 0, os.SEEK_SET)
        try:
            if op == "probe":
                reply: Any = backend.probe(message[1])
            elif op == "read":
                _, path, indices, (h, w), nbytes, skip = message
                if buffer is None or len(buffer) < nbytes:
                    if buffer is not None:
                        buffer.close()
                    buffer = mmap.mmap(buffer_fd, nbytes)
                out = np.ndarray((len(indices), h, w, 3), dtype=np.uint8, buffer=buffer)
                try:
                    reply = backend.read(path, indices, (h, w), out, skip_errors=skip)
                finally:
                    del out
            else:
                raise ValueError(f"unknown request {op!r}")
            conn.send(("ok", reply))
        except VideoError as exc:
            conn.send(("error", str(exc)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {_clean_message(str(exc))}"))
        finally:
            sys.stderr.flush()
    with contextlib.suppress(Exception):
        backend.close()


def _resolve_backend(backend: str | type[FrameBackend]) -> type[FrameBackend]:
    if isinstance(backend, str):
        try:
            return BACKENDS[backend]
        except KeyError:
            names = ", ".join(sorted(BACKENDS))
            raise ConfigError(f"unknown video backend {backend!r} (known: {names})") from None
    if isinstance(backend, type) and issubclass(backend, FrameBackend):
        return backend
    raise ConfigError(f"not a video backend: {backend!r}")


def _check_file(path: str) -> None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"video file not found: {path}") from None
    except OSError as exc:
        raise VideoError(f"{path}: cannot access file: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise VideoError(f"{path}: not a regular file")
    if info.st_size == 0:
        raise VideoError(f"{path}: file is empty")


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "the decoder process died"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the decoder process was killed by {name}"
    return f"the decoder process exited with code {exitcode}"


@dataclass(frozen=True)
class DecodedFrames:
    """What a ``read(..., on_error="skip")`` got: the frames that decoded, and the gap.

    ``frames[k]`` is the frame at absolute index ``indices[k]``, in the order
    (and with the repeats) of the request, minus the indices in ``missing``
    (sorted, unique). ``error`` is empty when nothing is missing; otherwise one
    line naming the path, how many frames are missing, where, and the first
    reason.
    """

    frames: Frames
    indices: tuple[int, ...]
    missing: tuple[int, ...]
    error: str = ""

    @property
    def complete(self) -> bool:
        """Whether every requested frame decoded."""
        return not self.missing

    def paired(self) -> DecodedFrames:
        """The same frames, with the last one repeated if needed for an even count.

        Qwen3-VL merges frames in temporal pairs (compare :func:`sample_indices`).
        """
        if len(self.indices) % 2 == 0:
            return self
        return DecodedFrames(
            frames=np.concatenate([self.frames, self.frames[-1:]]),
            indices=(*self.indices, self.indices[-1]),
            missing=self.missing,
            error=self.error,
        )


class _WorkerDied(VideoError):
    """The worker process died during a request (crash, kill, broken pipe)."""


def _spans(indices: Sequence[int]) -> str:
    """``"3, 7..9"`` for ``[3, 7, 8, 9]``: runs of consecutive indices, the first few."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    text = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in runs[:5])
    return text + (", ..." if len(runs) > 5 else "")


class DecodeWorker:
    """A decode worker process with its frame buffer and log; restarts itself after failures.

    One worker serves any number of files, one request at a time (calls from
    several threads are serialised). Each request has a deadline: a worker that
    misses it is killed and :class:`DecodeTimeout` raised; one that dies gives
    :class:`VideoError` naming the signal. Either way the next request starts a
    fresh process. Share one worker between :class:`FrameReader` objects to pay
    the process start once (~1 s for PyAV or decord; 5-20 s for torchcodec,
    which imports torch).
    """

    def __init__(
        self,
        backend: str | type[FrameBackend] = "decord",
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        """Prepare a worker; the process starts on the first request.

        ``backend`` is a name in :data:`BACKENDS` or a :class:`FrameBackend`
        subclass importable by the worker; ``start_timeout`` bounds starting it.
        """
        self.backend = _resolve_backend(backend)
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._buffer_fd = _anonymous_file("vidseek-frames")
        self._log_fd = _anonymous_file("vidseek-decode-log")
        self._buffer: mmap.mmap | None = None
        self._capacity = 0
        self._closed = False

    def __enter__(self) -> DecodeWorker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A worker dropped without close() must not leave a process behind.
        with contextlib.suppress(Exception):
            self.close()

    @property
    def pid(self) -> int | None:
        """The process id of the running worker process, if one runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    def probe(self, path: str | os.PathLike[str], *, timeout: float) -> VideoInfo:
        """Probe a video (see :func:`probe`)."""
        path = os.fspath(path)
        with self._lock:
            self._check_open()
            _check_file(path)
            info = self._call(("probe", path), path=path, timeout=timeout, action="probing")
        assert isinstance(info, VideoInfo)
        _validate_info(path, info)
        return info

    @overload
    def read(
        self,
        path: str | os.PathLike[str],
        indices: Sequence[int] | npt.NDArray[np.integer[Any]],
        height: int,
        width: int,
        *,
        timeout: float,
        on_error: Literal["raise"] = "raise",
    ) -> Frames: ...

    @overload
    def read(
        self,
        path: str | os.PathLike[str],
        indices: Sequence[int] | npt.NDArray[np.integer[Any]],
        height: int,
        width: int,
        *,
        timeout: float,
        on_error: Literal["skip"],
    ) -> DecodedFrames: ...

    def read(
        self,
        path: str | os.PathLike[str],
        indices: Sequence[int] | npt.NDArray[np.integer[Any]],
        height: int,
        width: int,
        *,
        timeout: float,
        on_error: OnError = "raise",
    ) -> Frames | DecodedFrames:
        """Frames of ``path`` at absolute ``indices`` (see :meth:`FrameReader.read`)."""
        path = os.fspath(path)
        wanted = np.asarray(indices, dtype=np.int64)
        if wanted.ndim != 1:
            raise ValueError("indices must be one-dimensional")
        if wanted.size and int(wanted.min()) < 0:
            raise ValueError(f"frame indices must be non-negative, got {int(wanted.min())}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        h, w = int(height), int(width)
        if h <= 0 or w <= 0:
            raise ValueError(f"frame size must be positive, got {h}x{w}")
        if not wanted.size:
            empty = np.empty((0, h, w, 3), dtype=np.uint8)
            return empty if on_error == "raise" else DecodedFrames(empty, (), ())
        unique, inverse = np.unique(wanted, return_inverse=True)
        inverse = inverse.ravel()
        with self._lock:
            self._check_open()
            _check_file(path)
            if on_error == "raise":
                frames, _ = self._read_unique(path, unique.tolist(), h, w, timeout, skip=False)
                return frames if np.array_equal(unique, wanted) else frames[inverse]
            frames, missing = self._read_skipping(
                path, unique.tolist(), h, w, timeout, [_SKIP_CRASH_BUDGET]
            )
        decoded = np.isin(wanted, list(missing), invert=True)
        keep = inverse[decoded]
        error = ""
        if missing:
            gone = sorted(missing)
            error = (
                f"{path}: {len(gone)} of {len(unique)} frames could not be decoded "
                f"({_spans(gone)}): {missing[gone[0]]}"
            )
        return DecodedFrames(
            frames=frames[keep],
            indices=tuple(int(i) for i in wanted[decoded]),
            missing=tuple(sorted(missing)),
            error=error,
        )

    def _read_unique(
        self, path: str, unique: list[int], h: int, w: int, timeout: float, *, skip: bool
    ) -> tuple[Frames, dict[int, str]]:
        """One request for sorted unique indices: a copy of the frames, and what is missing."""
        nbytes = len(unique) * h * w * 3
        span = f"{len(unique)} frames ({unique[0]}..{unique[-1]}) at {w}x{h}"
        self._reserve(nbytes)
        missing = self._call(
            ("read", path, unique, (h, w), nbytes, skip),
            path=path,
            timeout=timeout,
            action=f"decoding {span}",
        )
        assert isinstance(missing, dict) and self._buffer is not None
        view: Frames = np.ndarray((len(unique), h, w, 3), dtype=np.uint8, buffer=self._buffer)
        frames = view.copy()
        del view  # a live view would keep the buffer from being resized or closed
        return frames, missing

    def _read_skipping(
        self, path: str, unique: list[int], h: int, w: int, timeout: float, budget: list[int]
    ) -> tuple[Frames, dict[int, str]]:
        """``_read_unique`` in skip mode; a crashed worker is retried on halves of the request.

        ``budget`` (one shared counter) bounds the retries; past it, the indices
        of a crashing request are reported missing. A hang is not retried: it
        costs a whole deadline each time, so :class:`DecodeTimeout` propagates.
        """
        try:
            return self._read_unique(path, unique, h, w, timeout, skip=True)
        except _WorkerDied as exc:
            if len(unique) == 1 or budget[0] <= 0:
                frames = np.zeros((len(unique), h, w, 3), dtype=np.uint8)
                reason = str(exc).removeprefix(f"{path}: ")
                return frames, {index: reason for index in unique}
            budget[0] -= 1
        half = len(unique) // 2
        first, lost_first = self._read_skipping(path, unique[:half], h, w, timeout, budget)
        second, lost_second = self._read_skipping(path, unique[half:], h, w, timeout, budget)
        return np.concatenate([first, second]), {**lost_first, **lost_second}

    def close(self) -> None:
        """Stop the process and free the buffers. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._conn is not None and self._proc is not None:
                with contextlib.suppress(OSError):
                    self._conn.send(("stop",))
                self._proc.join(2)
            self._kill()
            if self._buffer is not None:
                with contextlib.suppress(BufferError):
                    self._buffer.close()
                self._buffer = None
            for fd in (self._buffer_fd, self._log_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -- internals; callers hold self._lock

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("DecodeWorker is closed")

    def _reserve(self, nbytes: int) -> None:
        """Make the shared frame buffer at least ``nbytes`` long."""
        if nbytes <= self._capacity:
            return
        try:
            os.ftruncate(self._buffer_fd, nbytes)
            if hasattr(os, "posix_fallocate"):
                # Fail here, not with SIGBUS in the worker, when memory is short.
                os.posix_fallocate(self._buffer_fd, 0, nbytes)
        except OSError as exc:
            raise ResourceExhausted(
                f"cannot reserve {nbytes / 2**20:.0f} MiB of shared memory for frames: "
                f"{exc.strerror}"
            ) from None
        if self._buffer is not None:
            self._buffer.close()
        self._buffer = mmap.mmap(self._buffer_fd, nbytes)
        self._capacity = nbytes

    def _start(self) -> None:
        name = self.backend.name
        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=_worker_main, args=(child_conn, self.backend), name=f"vidseek-decode-{name}"
        )
        proc.daemon = True
        proc.start()
        child_conn.close()
        self._proc, self._conn = proc, parent_conn
        try:
            if not parent_conn.poll(self.start_timeout):
                raise VidseekError(
                    f"the {name} decoder process did not start within {self.start_timeout:g} s"
                )
            kind, detail = parent_conn.recv()
            if kind == "fatal":
                raise ConfigError(f"video backend {name!r} is unavailable: {detail}")
            parent_conn.send(("fds",))
            reduction.send_handle(parent_conn, self._buffer_fd, proc.pid)
            reduction.send_handle(parent_conn, self._log_fd, proc.pid)
        except (EOFError, OSError):
            proc.join(5)
            reason = _describe_exit(proc.exitcode)
            self._kill()
            raise VidseekError(f"the {name} decoder process failed to start: {reason}") from None
        except BaseException:
            self._kill()
            raise

    def _kill(self) -> None:
        """Kill the process (if any) and forget it."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
        if conn is not None:
            conn.close()

    def _log_tail(self) -> str:
        """The last lines the worker (FFmpeg, decord) wrote to stderr during this request."""
        try:
            size = os.fstat(self._log_fd).st_size
            data = os.pread(self._log_fd, _LOG_TAIL_BYTES, max(0, size - _LOG_TAIL_BYTES))
        except OSError:
            return ""
        lines = [_clean_message(line) for line in data.decode("utf-8", "replace").splitlines()]
        return " | ".join([line for line in lines if line][-3:])

    def _message(self, path: str, problem: str) -> str:
        log = self._log_tail()
        return f"{path}: {problem}" + (f" (decoder log: {log})" if log else "")

    def _call(self, request: tuple[Any, ...], *, path: str, timeout: float, action: str) -> Any:
        """Send one request and wait for its reply, turning every failure into an error."""
        if self._proc is not None and not self._proc.is_alive():
            self._kill()
        if self._proc is None:
            self._start()
        proc, conn = self._proc, self._conn
        assert proc is not None and conn is not None
        try:
            conn.send(request)
            answered = conn.poll(timeout)
            reply: tuple[str, Any] = conn.recv() if answered else ("", None)
        except (EOFError, OSError):
            proc.join(5)
            reason = _describe_exit(proc.exitcode)
            self._kill()
            raise _WorkerDied(self._message(path, f"{reason} while {action}")) from None
        except BaseException:
            # Interrupted mid-request (KeyboardInterrupt...): a late reply would
            # answer the next request, so this worker cannot be reused.
            self._kill()
            raise
        if not answered:
            self._kill()
            raise DecodeTimeout(
                self._message(
                    path, f"the decoder did not answer within {timeout:g} s while {action}; killed"
                )
            )
        kind, detail = reply
        if kind == "ok":
            return detail
        raise VideoError(self._message(path, str(detail)))


# --------------------------------------------------------------------------- public API


class FrameReader:
    """Decodes frames of one video at absolute indices, in a worker process.

    Use as a context manager (or call :meth:`close`). Failures follow
    :class:`DecodeWorker`: a hang gives :class:`DecodeTimeout`, a crash
    :class:`VideoError`, and the next request starts a fresh worker.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        backend: str | type[FrameBackend] = "decord",
        timeout: float = DEFAULT_TIMEOUT,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        worker: DecodeWorker | None = None,
    ) -> None:
        """Prepare a reader; no process starts before the first request.

        ``backend`` is a name in :data:`BACKENDS` or a :class:`FrameBackend`
        subclass importable by the worker. ``timeout`` is the default deadline of
        each request, in seconds; ``start_timeout`` bounds starting the worker.
        With ``worker``, that shared worker (and its backend) is used and left
        running on :meth:`close`.
        """
        self.path = os.fspath(path)
        self.timeout = timeout
        self._owns_worker = worker is None
        self._worker: DecodeWorker | None = (
            DecodeWorker(backend, start_timeout=start_timeout) if worker is None else worker
        )
        self._info: VideoInfo | None = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def worker(self) -> DecodeWorker:
        """The worker this reader decodes with."""
        if self._worker is None:
            raise ValueError(f"FrameReader for {self.path} is closed")
        return self._worker

    def close(self) -> None:
        """Stop the worker unless it is shared. Idempotent."""
        worker, self._worker = self._worker, None
        if worker is not None and self._owns_worker:
            worker.close()

    def probe(self, *, timeout: float | None = None) -> VideoInfo:
        """Probe the video in the worker; the first success is cached."""
        if self._info is None:
            self._info = self.worker.probe(
                self.path, timeout=self.timeout if timeout is None else timeout
            )
        return self._info

    @overload
    def read(
        self,
        indices: Sequence[int] | npt.NDArray[np.integer[Any]],
        height: int | None = None,
        width: int | None = None,
        *,
        timeout: float | None = None,
        on_error: Literal["raise"] = "raise",
    ) -> Frames: ...

    @overload
    def read(
        self,
        indices: Sequence[int] | npt.NDArray[np.integer[Any]],
        height: int | None = None,
        width: int | None = None,
        *,
        timeout: float | None = None,
        on_error: Literal["skip"],
    ) -> DecodedFrames: ...

    def read(
        self,
        indices: Sequence[int] | npt.NDArray[np.integer[Any]],
        height: int | None = None,
        width: int | None = None,
        *,
        timeout: float | None = None,
        on_error: OnError = "raise",
    ) -> Frames | DecodedFrames:
        """Frames at absolute ``indices`` (any order, repeats allowed) as ``(T, H, W, 3)`` RGB.

        Frames are upright and resized to ``height`` x ``width`` in the worker;
        give both or neither (neither: the probed size). Each distinct index is
        decoded once. An index past the end raises :class:`VideoError`.

        ``on_error="raise"`` (default) returns the array and raises
        :class:`VideoError` if any frame cannot be decoded. ``on_error="skip"``
        returns :class:`DecodedFrames`: the frames that decoded, their indices,
        and the missing indices with a message; it still raises for problems of
        the whole file (not a video, cannot be opened) and for a hang
        (:class:`DecodeTimeout`).
        """
        if (height is None) != (width is None):
            raise ValueError("give both height and width, or neither")
        if height is None or width is None:
            info = self.probe(timeout=timeout)
            height, width = info.height, info.width
        deadline = self.timeout if timeout is None else timeout
        if on_error == "skip":
            return self.worker.read(
                self.path, indices, height, width, timeout=deadline, on_error="skip"
            )
        if on_error != "raise":
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        return self.worker.read(self.path, indices, height, width, timeout=deadline)


def _validate_info(path: str, info: VideoInfo) -> None:
    if not (info.fps > 0 and math.isfinite(info.fps)):
        raise VideoError(f"{path}: video has no usable frame rate ({info.fps})")
    if info.frame_count <= 0:
        raise VideoError(f"{path}: video stream has no frames")
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"{path}: video has no frame size ({info.width}x{info.height})")


def probe(
    path: str | os.PathLike[str],
    *,
    timeout: float,
    backend: str | type[FrameBackend] = "decord",
    start_timeout: float = DEFAULT_START_TIMEOUT,
    worker: DecodeWorker | None = None,
) -> VideoInfo:
    """Probe a video in a worker process: fps, frame count, duration, size, codec, rotation, VFR.

    ``width`` and ``height`` are the displayed size (sample aspect ratio and
    display rotation applied), the size :class:`FrameReader` returns frames at;
    ``frame_count`` is what the backend can index: frames for constant frame
    rate, slots of ``1 / fps`` for variable frame rate (``vfr``; see the module
    docstring). The whole stream is demuxed (not decoded) to find every frame's
    timestamp, so a truncated file reports the frames it has. ``timeout``
    bounds the probe itself, ``start_timeout`` starting the worker; ``worker``
    reuses a running :class:`DecodeWorker` (``backend`` is then ignored). Raises
    :class:`NotFound` for a missing file and :class:`VideoError` (naming the
    path) for anything that is not a usable video.
    """
    if worker is not None:
        return worker.probe(path, timeout=timeout)
    path = os.fspath(path)
    _check_file(path)  # before paying for a process start
    with DecodeWorker(backend, start_timeout=start_timeout) as own:
        return own.probe(path, timeout=timeout)
