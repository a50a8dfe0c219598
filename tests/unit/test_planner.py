from __future__ import annotations

import pytest

from vidseek.indexer.planner import (
    PROMPT_OVERHEAD_TOKENS,
    TOKENS_PER_PAIR_OVERHEAD,
    PlanConfig,
    plan_windows,
    tokens_per_frame_pair,
)
from vidseek.indexer.types import VideoInfo
from vidseek.storage.errors import InvalidArgument


def _info(seconds: float, fps: float = 30.0, w: int = 1920, h: int = 1080) -> VideoInfo:
    return VideoInfo(
        path="/v.mp4",
        fps=fps,
        frame_count=round(seconds * fps),
        duration=seconds,
        width=w,
        height=h,
    )


def test_tokens_per_pair_is_the_qwen3_vl_arithmetic():
    # 640x352: 20x11 merged 32-px patches per frame pair, plus markers.
    assert tokens_per_frame_pair(352, 640) == 220 + TOKENS_PER_PAIR_OVERHEAD
    with pytest.raises(InvalidArgument):
        tokens_per_frame_pair(360, 640)


def test_two_hour_video_windows_are_capped_by_setting():
    plan = plan_windows(_info(7200), PlanConfig(window_seconds=60))
    assert (plan.frame_height, plan.frame_width) == (352, 640)
    assert len(plan.windows) == 120
    w = plan.windows[61]
    assert (w.start_seconds, w.end_seconds) == (3660.0, 3720.0)
    assert w.frame_indices[0] == 3660 * 30 and w.frame_indices[1] == 3661 * 30
    assert len(w.frame_indices) == 60
    assert plan.prompt_tokens_per_window == 30 * 231 + PROMPT_OVERHEAD_TOKENS


def test_context_limit_shortens_windows():
    cfg = PlanConfig(window_seconds=3600, context_tokens=32768, max_output_tokens=1024)
    plan = plan_windows(_info(7200), cfg)
    # (32768 - 256 - 1024) tokens / (231 tokens per pair / 2 s) = 272.6 s -> 272 s windows.
    assert plan.window_seconds == 272
    assert plan.max_window_seconds_by_context == pytest.approx((32768 - 256 - 1024) / 115.5)
    assert all(p.prompt_tokens_per_window <= cfg.context_tokens for p in [plan])
    assert len(plan.windows) == -(-7200 // 272)
    assert "272 s" in plan.summary()


def test_full_256k_context_fits_about_37_minutes_at_1fps():
    plan = plan_windows(_info(7200), PlanConfig(window_seconds=10**6))
    assert 36 * 60 < plan.window_seconds < 38 * 60


def test_overlap_and_last_window():
    plan = plan_windows(_info(130), PlanConfig(window_seconds=60, overlap_seconds=10))
    starts = [w.start_seconds for w in plan.windows]
    assert starts == [0, 50, 100]
    assert plan.windows[-1].end_seconds == 130


def test_bad_configs_are_refused():
    with pytest.raises(InvalidArgument, match="cannot hold one frame pair"):
        plan_windows(_info(60), PlanConfig(context_tokens=1500, max_output_tokens=1024))
    with pytest.raises(InvalidArgument, match="overlap"):
        plan_windows(_info(60), PlanConfig(window_seconds=10, overlap_seconds=10))
