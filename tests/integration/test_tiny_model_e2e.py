"""The whole pipeline with the real transformers Qwen3-VL code on a tiny random model.

Random weights write noise: the pipeline must survive it (raw output recorded per
window, unparseable windows marked, ingestion goes on), and every stored event
must be searchable and lie inside its window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.recording import tiny_model_server
from vidseek.client import Client, JobState
from vidseek.indexer import model_inputs


@pytest.mark.slow
def test_tiny_qwen_runs_through_the_whole_pipeline(
    tiny_qwen_dir: Path,
    colour_video: Path,
    data_dir: Path,
    embedder: Any,
):
    server, port, app, holder = tiny_model_server(
        tiny_qwen_dir,
        data_dir,
        embedder,
        constrained_json=True,
        window_seconds=4.0,
        sample_fps=1.0,
        max_new_tokens=model_inputs.max_constrained_output_tokens(),
    )
    try:
        with Client(f"127.0.0.1:{port}") as client:
            job = client.wait_for_job(client.ingest(str(colour_video)).job_id, timeout=300)
            assert job.state is JobState.SUCCEEDED, job.error
            assert (job.windows_total, job.windows_done) == (3, 3)

            windows = app.store.window_rows(job.video_id)
            assert len(windows) == 3
            assert all(w.raw_output for w in windows), "raw model output must be kept"
            assert all(w.model == str(tiny_qwen_dir) for w in windows)
            unparsed = [w for w in windows if w.status == "unparsed"]
            assert job.windows_unparsed == len(unparsed)
            assert all(w.parse_error for w in unparsed)

            # What the model was shown for the window starting mid-video (8 s of 12 s,
            # 1 fps of a 30 fps source): absolute frame indices, absolute time tags.
            clip = next(c for c in holder["c"].clips if c.window.start_seconds == 8.0)
            assert clip.window.frame_indices == (240, 270, 300, 330)
            assert clip.fps == pytest.approx(30.0)
            assert model_inputs.timestamp_tags(clip) == ["<8.5 seconds>", "<10.5 seconds>"]
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(tiny_qwen_dir)
            text = tok.decode(model_inputs.prompt_token_ids(tok, clip))
            assert "<8.5 seconds><|vision_start|>" in text
            assert "<10.5 seconds><|vision_start|>" in text

            events = app.store.timeline(job.video_id, 0.0, None)
            assert len(events) == job.events_indexed
            for e in events:
                assert e.start_seconds < e.end_seconds
                assert any(
                    w.start_seconds <= e.start_seconds and e.end_seconds <= w.end_seconds
                    for w in windows
                ), f"event outside every window: {e}"
            if events:
                moments = client.search(events[0].text, top_k=5)
                stored = {e.text for e in events}
                assert moments and all(m.description in stored for m in moments)
                assert moments[0].description == events[0].text
    finally:
        server.stop(0)
        app.shutdown()
