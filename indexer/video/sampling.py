"""Frame indices and time: the decode size, which frames to sample, and stream timelines.

Frame ``i`` is shown at ``i / fps`` seconds from the first frame; for variable
frame rate an index is a slot on a regular grid (see the package docstring).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

import numpy as np
import numpy.typing as npt

from vidseek.indexer.types import VideoInfo
from vidseek.storage.errors import VideoError

# A frame interval further than this fraction from the median makes a stream VFR.
_VFR_TOLERANCE: Final = 0.25


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
    time (see the package docstring). Indices are clamped to
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
    """How frame indices map onto the frames of a stream (see the package docstring)."""

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
