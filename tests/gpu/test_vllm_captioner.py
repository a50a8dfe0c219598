"""The vLLM backends end to end on a GPU: the tiny random Qwen3-VL, real tokenizer and processor.

Checks what only the real engine can show, for the in-process engine
(:class:`VllmCaptioner`) and for a real ``vllm`` OpenAI-compatible server
(:class:`OpenAICaptioner`): the prompt token ids vLLM actually fed the model are exactly
:func:`model_inputs.prompt_token_ids` (the project's layout, no outer vision pair), the
``<t seconds>`` tags in them are the windows' absolute times, and constrained answers
parse. Skipped without CUDA (tests/conftest.py) or without vLLM.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vidseek.indexer import model_inputs
from vidseek.indexer.parse import parse_span
from vidseek.indexer.types import Window, WindowClip

pytestmark = pytest.mark.gpu

NTSC = 30000 / 1001


def make_clip(
    start_second: int, count: int, fps: float, index: int, query: str | None = None
) -> WindowClip:
    indices = tuple(round((start_second + k) * fps) for k in range(count))
    rng = np.random.default_rng(index)
    frames = rng.integers(0, 256, size=(count, 64, 96, 3), dtype=np.uint8)
    window = Window(
        index=index,
        start_seconds=float(start_second),
        end_seconds=float(start_second + count),
        frame_indices=indices,
        query=query,
    )
    return WindowClip(window=window, frames=frames, fps=fps, total_frames=round(7200 * fps))


def check_span(text: str, clip: WindowClip) -> None:
    """A grounding answer is exactly one JSON span (the grammar's shape)."""
    payload = json.loads(text)
    assert set(payload) == {"start", "end"}, text
    assert all(isinstance(payload[k], int | float) for k in ("start", "end"))
    result = parse_span(text, clip.window.start_seconds, clip.window.end_seconds)
    # Random weights pick any numbers: parse_span clamps them into the clip or rejects them.
    if result.error is None:
        assert result.start_seconds is not None and result.end_seconds is not None
        lo, hi = clip.window.start_seconds, clip.window.end_seconds
        assert lo <= result.start_seconds < result.end_seconds <= hi


def check_answer(text: str) -> None:
    payload = json.loads(text)
    assert isinstance(payload["events"], list)
    for event in payload["events"]:
        assert set(event) == {"start", "end", "description"}
        assert isinstance(event["start"], int | float)
        assert isinstance(event["end"], int | float)
        assert isinstance(event["description"], str)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("vllm")
    from tests.support.tiny_qwen import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl"))


@pytest.fixture(scope="module")
def captioner(tiny_model: Path) -> Iterator[Any]:
    from vidseek.indexer.captioner_vllm import VllmCaptioner

    bound = model_inputs.max_constrained_output_tokens()
    captioner = VllmCaptioner(
        str(tiny_model),
        # The grammar bounds every answer, so this budget can never cut one short.
        max_new_tokens=bound,
        constrained_json=True,
        gpu_memory_utilization=0.25,
        max_model_len=bound + 4096,
        enforce_eager=True,
    )
    yield captioner
    captioner.close()


def test_vllm_reads_absolute_timestamps_in_the_project_layout_and_answers_parse(captioner):
    clips = [
        make_clip(start_second=0, count=8, fps=30.0, index=0),
        make_clip(start_second=3725, count=8, fps=NTSC, index=62),  # mid-video, 1 h 2 min in
        make_clip(start_second=600, count=7, fps=25.0, index=10),  # odd frame count
    ]
    results = captioner.describe_detailed(clips)
    assert len(results) == len(clips)
    tokenizer = captioner.tokenizer

    for clip, result in zip(clips, results, strict=True):
        assert result.prompt_token_ids == model_inputs.prompt_token_ids(tokenizer, clip)
        text = str(tokenizer.decode(result.prompt_token_ids, skip_special_tokens=False))
        tags = re.findall(r"<\d+(?:\.\d+)? seconds>", text)
        assert tags == model_inputs.timestamp_tags(clip)
        assert "<|vision_start|><|vision_start|>" not in text
        assert "<|vision_end|><|vision_end|>" not in text

        assert result.finish_reason == "stop", result.output.text[-200:]
        check_answer(result.output.text)
        assert result.output.prompt_tokens == len(result.prompt_token_ids)

    mid = tokenizer.decode(results[1].prompt_token_ids, skip_special_tokens=False)
    first_tag = model_inputs.timestamp_tags(clips[1])[0]
    assert first_tag == "<3725.5 seconds>"
    assert first_tag in mid

    # describe() is the same call without the token ids (greedy, but batch composition
    # may change a random model's near-ties, so only the shape is compared).
    again = captioner.describe(clips[:2])
    assert len(again) == 2
    assert [o.prompt_tokens for o in again] == [r.output.prompt_tokens for r in results[:2]]


def test_vllm_grounding_windows_answer_one_span_beside_captioning_windows(captioner):
    """Search refinement's requests share a generate() call with captioning ones."""
    clips = [
        make_clip(start_second=3725, count=8, fps=NTSC, index=0, query="a red car turns left"),
        make_clip(start_second=600, count=8, fps=25.0, index=1),
    ]
    results = captioner.describe_detailed(clips)
    tokenizer = captioner.tokenizer
    for clip, result in zip(clips, results, strict=True):
        assert result.prompt_token_ids == model_inputs.prompt_token_ids(tokenizer, clip)
        assert result.finish_reason == "stop", result.output.text[-200:]
    grounding = str(tokenizer.decode(results[0].prompt_token_ids, skip_special_tokens=False))
    assert "a red car turns left" in grounding and "<3725.5 seconds>" in grounding
    check_span(results[0].output.text, clips[0])
    check_answer(results[1].output.text)


# --- a real OpenAI-compatible vLLM server ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``vllm serve`` of the tiny model (stock template; request templates trusted)."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    bound = model_inputs.max_constrained_output_tokens()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tiny_model), "--served-model-name", "tiny",
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(bound + 4096), "--gpu-memory-utilization", "0.25",
        "--enforce-eager", "--trust-request-chat-template",
        "--limit-mm-per-prompt", json.dumps({"image": 0, "video": 1}),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"vllm server exited {process.returncode}:\n{log_path.read_text()[-4000:]}"
                )
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm server not ready:\n{log_path.read_text()[-4000:]}")
            time.sleep(2)
        yield base + "/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        print(f"--- vllm server log tail ---\n{log_path.read_text()[-3000:]}")


def test_openai_server_reads_absolute_timestamps_in_the_project_layout(vllm_server, tiny_model):
    from transformers import AutoTokenizer

    from vidseek.indexer.captioner_openai import OpenAICaptioner

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    clips = [
        make_clip(start_second=3725, count=8, fps=NTSC, index=62),
        make_clip(start_second=600, count=7, fps=25.0, index=10),
    ]
    captioner = OpenAICaptioner(
        vllm_server,
        "tiny",
        max_new_tokens=model_inputs.max_constrained_output_tokens(),
        frame_format="png",
        tokenizer=tokenizer,  # every prompt token is compared, tags included
    )
    answers = captioner.describe_detailed(clips)
    for clip, answer in zip(clips, answers, strict=True):
        assert answer.prompt_token_ids == model_inputs.prompt_token_ids(tokenizer, clip)
        text = str(tokenizer.decode(answer.prompt_token_ids, skip_special_tokens=False))
        tags = re.findall(r"<\d+(?:\.\d+)? seconds>", text)
        assert tags == model_inputs.timestamp_tags(clip)
        assert answer.finish_reason == "stop", answer.output.text[-200:]
        check_answer(answer.output.text)
    assert model_inputs.timestamp_tags(clips[0])[0] == "<3725.5 seconds>"

    # A grounding request through the server: same layout, one constrained span.
    clip = make_clip(start_second=3725, count=8, fps=NTSC, index=3, query="a red car turns left")
    (answer,) = captioner.describe_detailed([clip])
    assert answer.prompt_token_ids == model_inputs.prompt_token_ids(tokenizer, clip)
    assert answer.finish_reason == "stop", answer.output.text[-200:]
    check_span(answer.output.text, clip)


def test_openai_server_with_its_stock_template_keeps_the_outer_pair(vllm_server):
    from vidseek.indexer.captioner_openai import OpenAICaptioner, PromptLayoutError

    captioner = OpenAICaptioner(vllm_server, "tiny", max_new_tokens=16, send_chat_template=False)
    with pytest.raises(PromptLayoutError, match="outer"):
        captioner.describe([make_clip(start_second=60, count=4, fps=30.0, index=1)])
