"""A 2-hour video through the whole server with the tiny random Qwen3-VL model.

Low resolution keeps it fast; the point is the arithmetic at length: the
windows planned from token counts, the plan shown in the job status, absolute
frame indices and timestamps an hour in, and every window accounted for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.recording import tiny_model_server
from tests.support.videos import write_video
from vidseek.client import Client, JobState
from vidseek.indexer import model_inputs
from vidseek.indexer.planner import PlanConfig, plan_windows
from vidseek.indexer.video import probe

HOURS = 2
SOURCE_FPS = 2


@pytest.mark.slow
def test_two_hour_video_is_planned_by_the_arithmetic_and_fully_ingested(
    tiny_qwen_dir: Path, data_dir: Path, tmp_path: Path, embedder: Any
):
    video = write_video(
        tmp_path / "two_hours.mp4",
        seconds=HOURS * 3600,
        fps=SOURCE_FPS,
        width=96,
        height=64,
        gop=120,
    )
    # What the arithmetic says for this video (the planner is unit-tested on its own).
    info = probe(video, timeout=60)
    assert (info.duration, info.frame_count) == (HOURS * 3600.0, HOURS * 3600 * SOURCE_FPS)
    plan = plan_windows(info, PlanConfig(sample_fps=1.0, window_seconds=60.0, max_output_tokens=8))
    assert (len(plan.windows), plan.frame_width, plan.frame_height) == (120, 96, 64)
    # 96x64 / 1024 = 6 visual tokens per frame pair, plus 11 of timestamp and markers;
    # a 60 s window at 1 fps is 30 pairs, plus the prompt's 256.
    assert plan.tokens_per_pair == 6 + 11
    assert plan.prompt_tokens_per_window == 30 * 17 + 256

    server, port, app, holder = tiny_model_server(
        tiny_qwen_dir,
        data_dir,
        embedder,
        constrained_json=False,
        sample_fps=1.0,
        window_seconds=60.0,
        batch_windows=8,
        max_new_tokens=8,
    )
    try:
        with Client(f"127.0.0.1:{port}") as client:
            job = client.wait_for_job(client.ingest(video).job_id, timeout=1200)
            assert job.state is JobState.SUCCEEDED, job.error
            assert (job.windows_total, job.windows_done) == (120, 120)
            assert job.plan == plan.summary()
            assert job.plan.startswith("120 windows of <= 60 s at 96x64; ")

            windows = app.store.window_rows(job.video_id)
            assert [w.window_index for w in windows] == list(range(120))
            assert all(w.frame_count == 60 and w.raw_output for w in windows)
            assert windows[-1].end_seconds == HOURS * 3600.0

            # An hour in: absolute source indices (2 fps source, 1 fps sampled) and time tags.
            clip = next(c for c in holder["c"].clips if c.window.start_seconds == 3600.0)
            assert clip.window.frame_indices[:3] == (7200, 7202, 7204)
            assert model_inputs.timestamp_tags(clip)[:2] == ["<3600.5 seconds>", "<3602.5 seconds>"]
    finally:
        server.stop(0)
        app.shutdown()
