"""Window planning from Qwen3-VL token arithmetic.

Qwen3-VL turns every pair of frames into ``H*W / (32*32)`` visual tokens (patch
16, spatial merge 2, temporal patch 2) plus about 11 tokens of ``<t seconds>``
text and vision markers. A window must fit the context with room for the
prompt and the answer; within that, ``window_seconds`` caps its length (shorter
windows give finer events). The plan is reported with the job so its figures
can be checked against this arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vidseek.indexer.types import VideoInfo, Window
from vidseek.indexer.video import resized_shape, sample_indices
from vidseek.storage.errors import InvalidArgument

__all__ = [
    "PlanConfig",
    "WindowPlan",
    "max_window_frames",
    "plan_windows",
    "tokens_per_frame_pair",
]

TOKENS_PER_PAIR_OVERHEAD = 11  # "<t seconds>" text + <|vision_start|>/<|vision_end|>
PROMPT_OVERHEAD_TOKENS = 256  # system + user text + chat markers, generously


def max_window_frames(window_seconds: float, sample_fps: float) -> int:
    """Most frames a window of ``window_seconds`` sampled at ``sample_fps`` can hold."""
    return math.ceil(window_seconds * sample_fps) + 1


def tokens_per_frame_pair(height: int, width: int) -> int:
    """Visual tokens of one temporal pair of frames of this (32-aligned) size, with markers."""
    if height % 32 or width % 32:
        raise InvalidArgument(f"frame size {width}x{height} is not a multiple of 32")
    return height * width // 1024 + TOKENS_PER_PAIR_OVERHEAD


@dataclass(frozen=True)
class PlanConfig:
    """The planner's settings (see the server settings for their help texts)."""

    sample_fps: float = 1.0
    max_frame_pixels: int = 640 * 360
    window_seconds: float = 60.0
    overlap_seconds: float = 0.0
    context_tokens: int = 262_144
    max_output_tokens: int = 1024


@dataclass(frozen=True)
class WindowPlan:
    """The windows of one video and the arithmetic that produced them."""

    windows: list[Window]
    frame_height: int
    frame_width: int
    tokens_per_pair: int
    window_seconds: float
    max_window_seconds_by_context: float
    prompt_tokens_per_window: int

    def summary(self) -> str:
        """One line for job status and logs."""
        return (
            f"{len(self.windows)} windows of <= {self.window_seconds:g} s at "
            f"{self.frame_width}x{self.frame_height}; {self.tokens_per_pair} tokens per frame "
            f"pair; ~{self.prompt_tokens_per_window} prompt tokens per full window "
            f"(context allows <= {self.max_window_seconds_by_context:.0f} s)"
        )


def plan_windows(info: VideoInfo, cfg: PlanConfig) -> WindowPlan:
    """Split a video into windows that fit the model context; frame indices are absolute."""
    if cfg.sample_fps <= 0:
        raise InvalidArgument(f"sample_fps must be > 0, got {cfg.sample_fps}")
    if not 0 <= cfg.overlap_seconds < cfg.window_seconds:
        raise InvalidArgument(
            f"overlap_seconds ({cfg.overlap_seconds}) must be in [0, window_seconds)"
        )
    h, w = resized_shape(info.width, info.height, cfg.max_frame_pixels)
    per_pair = tokens_per_frame_pair(h, w)
    budget = cfg.context_tokens - PROMPT_OVERHEAD_TOKENS - cfg.max_output_tokens
    tokens_per_second = per_pair * cfg.sample_fps / 2
    max_by_context = budget / tokens_per_second
    if max_by_context < 2 / cfg.sample_fps:
        raise InvalidArgument(
            f"context of {cfg.context_tokens} tokens cannot hold one frame pair of "
            f"{w}x{h} ({per_pair} tokens) plus the prompt; lower max_frame_pixels"
        )
    length = min(cfg.window_seconds, max_by_context)
    # Whole sampling steps per window, so windows start on sample boundaries.
    length = max(2 / cfg.sample_fps, math.floor(length * cfg.sample_fps) / cfg.sample_fps)
    step = length - cfg.overlap_seconds
    windows: list[Window] = []
    start = 0.0
    while start < info.duration - 1e-6:
        end = min(start + length, info.duration)
        indices = sample_indices(info, start, end, cfg.sample_fps)
        if indices:
            windows.append(
                Window(
                    index=len(windows),
                    start_seconds=start,
                    end_seconds=end,
                    frame_indices=tuple(indices),
                )
            )
        if end >= info.duration:
            break
        start += step
    pairs_full = math.ceil(length * cfg.sample_fps / 2)
    return WindowPlan(
        windows=windows,
        frame_height=h,
        frame_width=w,
        tokens_per_pair=per_pair,
        window_seconds=length,
        max_window_seconds_by_context=max_by_context,
        prompt_tokens_per_window=pairs_full * per_pair + PROMPT_OVERHEAD_TOKENS,
    )
