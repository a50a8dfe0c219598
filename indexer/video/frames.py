"""What every backend shares: the :class:`FrameBackend` interface and frame helpers.

Resizing, display rotation and aspect, runs of repeated frames, decoder
messages, and what PyAV can tell about a file that another decoder cannot.
"""

from __future__ import annotations

import abc
import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from vidseek.indexer.types import VideoInfo
from vidseek.storage.errors import VideoError

Frames = npt.NDArray[np.uint8]

_MESSAGE_LIMIT: Final = 400


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


# --------------------------------------------------------------------------- the backend interface


class FrameBackend(abc.ABC):
    """One way of decoding video files. Instances live inside the worker process.

    A backend may keep the last file open between calls (a reader decodes one
    video window after window). It raises :class:`VideoError` (with a message
    that need not name the path) for problems it recognises; the worker turns
    any other exception into a :class:`VideoError` too. Indices follow the
    package's timeline rules (VFR slots); probe a file before reading it.
    """

    name: ClassVar[str]
    # Decoder processes worth running at once (0: as many as the pool is given).
    max_processes: ClassVar[int] = 0
    # Requests one process decodes at once, each on its own thread of the process (the
    # backend's read must then be safe to call from several threads); 1: one at a time.
    concurrent_requests: ClassVar[int] = 1
    # A hardware decoder, whose time grows less with a window's pixels than a CPU's: in a
    # decode pool beside CPU backends its processes take the costliest windows waiting,
    # the others the cheapest (see vidseek.indexer.decode_pool).
    prefers_large_windows: ClassVar[bool] = False
    # The backend of decoder processes beside the shared pool (probing, refinement)
    # where this one should run no more processes ("": this one).
    side_backend: ClassVar[str] = ""
    # Why this process can decode no more ("" while it can), e.g. a CUDA error that broke
    # its CUDA context: the worker answers the request, then its process is replaced.
    broken: str = ""
    # Threads a decode uses where the library takes a number (PyAV); 0: its default.
    codec_threads: int = 0
    # The backend that decoded the last read, where it can hand a file to another (NVDEC
    # to PyAV; such a backend sets it in each read); "": this one.
    decoded_by: str = ""

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
