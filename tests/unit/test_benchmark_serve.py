"""The ingest benchmark's served engine (``benchmarks/vllm_serve.py``) up to ``vllm serve``."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.vllm_serve import ForcedCaptions, ServedEngine, cli_flags, serve_command
from vidseek.indexer.engine_vllm import async_engine_kwargs
from vidseek.indexer.types import Window, WindowClip


def test_engine_arguments_become_serve_flags():
    flags = cli_flags(
        {
            "max_model_len": 8,
            "limit_mm_per_prompt": {"image": 0, "video": 1},
            "enable_prefix_caching": False,
            "enforce_eager": False,
            "disable_log_stats": True,
        }
    )
    assert flags == [
        "--max-model-len",
        "8",
        "--limit-mm-per-prompt",
        json.dumps({"image": 0, "video": 1}),
        "--no-enable-prefix-caching",
        "--no-enforce-eager",
        "--disable-log-stats",
    ]


def test_a_server_gets_the_in_process_engines_arguments():
    kwargs = async_engine_kwargs(
        "/models/fp8",
        gpu_memory_utilization=0.8,
        max_model_len=4096,
        renderer_workers=4,
        data_parallel_size=2,
    )
    command = serve_command(kwargs, 8123, api_servers=3)
    assert command[1:5] == ["-m", "vllm.entrypoints.cli.main", "serve", "/models/fp8"]
    assert "--model" not in command
    pairs = dict(itertools.pairwise(command))
    assert pairs["--scheduling-policy"] == "priority"  # refinement ahead, as in process
    assert pairs["--data-parallel-size"] == "2" and pairs["--api-server-count"] == "3"
    assert pairs["--renderer-num-workers"] == "4" and pairs["--port"] == "8123"
    assert "--trust-request-chat-template" in command
    assert "--disable-log-stats" not in command  # the log shows the server's queue


def _clip(query: str | None, start: float = 0.0) -> WindowClip:
    frames = [round((start + k) * 30) for k in range(4)]
    window = Window(0, start, start + 4.0, frames, query=query)
    return WindowClip(window, np.zeros((4, 32, 32, 3), np.uint8), fps=30.0, total_frames=120)


def test_captions_are_forced_and_grounding_decodes_as_in_production():
    captioner = ForcedCaptions(
        "http://127.0.0.1:9/v1", "bench", caption_tokens=256, max_new_tokens=64
    )
    caption = captioner.request_body(_clip(None), priority=1)
    assert caption["max_tokens"] == 256 and caption["ignore_eos"] is True
    assert "structured_outputs" not in caption
    grounding = captioner.request_body(_clip("a dog"), priority=0)
    assert grounding["max_tokens"] == 64 and "ignore_eos" not in grounding
    assert "grammar" in grounding["structured_outputs"]


def test_a_spread_gives_each_caption_its_own_fixed_length():
    captioner = ForcedCaptions(
        "http://127.0.0.1:9/v1",
        "bench",
        caption_tokens=256,
        caption_tokens_spread=0.5,
        max_new_tokens=64,
    )
    clips = [_clip(None, start=4.0 * k) for k in range(50)]
    lengths = [captioner.request_body(c, priority=1)["max_tokens"] for c in clips]
    assert all(128 <= n <= 384 for n in lengths) and len(set(lengths)) > 20
    assert lengths == [captioner.request_body(c, priority=1)["max_tokens"] for c in clips]
    assert captioner.request_body(_clip("a dog"), priority=0)["max_tokens"] == 64


def test_a_server_that_dies_starting_is_reported_with_its_log(tmp_path: Path):
    kwargs = {"model": str(tmp_path / "no-such-model"), "max_model_len": 64}
    with pytest.raises(RuntimeError, match="vllm serve exited") as failed:
        ServedEngine(
            kwargs,
            replicas=1,
            gpus_each=1,
            api_servers=1,
            caption_tokens=8,
            max_new_tokens=8,
            max_concurrency=2,
            log_dir=tmp_path,
            ready_timeout=120,
        )
    assert (tmp_path / "vllm-serve-0.log").read_text()[-200:] in str(failed.value)
