"""Hand-made windows of video for engine and captioner tests."""

from __future__ import annotations

import numpy as np

from vidseek.indexer.types import Window, WindowClip


def make_clip(
    start_second: int = 0,
    count: int = 4,
    fps: float = 30.0,
    index: int = 0,
    height: int = 32,
    width: int = 32,
    query: str | None = None,
) -> WindowClip:
    """A window of ``count`` random frames sampled at 1 fps from ``start_second`` on."""
    indices = tuple(round((start_second + k) * fps) for k in range(count))
    rng = np.random.default_rng(start_second * 1000 + index)
    frames = rng.integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)
    window = Window(
        index=index,
        start_seconds=start_second,
        end_seconds=start_second + count,
        frame_indices=indices,
        query=query,
    )
    return WindowClip(window=window, frames=frames, fps=fps, total_frames=round(3600 * fps))
