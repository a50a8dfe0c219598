"""The async vLLM engine on a GPU: the tiny random Qwen3-VL, real tokenizer and processor.

What only the real ``AsyncLLM`` can show: windows submitted from several threads are
rendered by vLLM's renderer threads and answered, each prompt is as long as the
project's layout says (so the async render path builds the same prompt as the offline
path, whose token ids ``test_vllm_captioner.py`` pins), constrained answers parse, and a
refinement window submitted last, with refinement priority, is answered too.
Skipped without CUDA (tests/conftest.py) or without vLLM.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.clips import make_clip
from vidseek.indexer import model_inputs
from vidseek.indexer.engine import REFINE_PRIORITY
from vidseek.indexer.parse import parse_events

pytestmark = pytest.mark.gpu

NTSC = 30000 / 1001


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("vllm")
    from tests.support.tiny_qwen import build_tiny_qwen3_vl
    from vidseek.indexer.engine_vllm import AsyncVllmEngine

    directory = build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl"))
    bound = model_inputs.max_constrained_output_tokens()
    engine = AsyncVllmEngine(
        str(Path(directory)),
        max_new_tokens=bound,
        constrained_json=True,
        gpu_memory_utilization=0.25,
        max_model_len=bound + 4096,
        renderer_workers=4,
        enforce_eager=True,
    )
    yield engine
    engine.close()


def test_concurrent_windows_get_the_project_layout_and_parse(engine):
    clips = [
        make_clip(start_second=0, count=8, fps=30.0, index=0, height=64, width=96),
        make_clip(start_second=3725, count=8, fps=NTSC, index=62, height=64, width=96),
        make_clip(start_second=600, count=6, fps=25.0, index=10, height=64, width=96),
    ]
    futures: dict[int, Any] = {}

    def submit(clip):
        futures[clip.window.index] = engine.submit(clip)

    threads = [threading.Thread(target=submit, args=(clip,)) for clip in clips]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refine_clip = make_clip(
        start_second=3725, count=8, fps=NTSC, index=99, height=64, width=96, query="a red car"
    )
    refine = engine.submit(refine_clip, priority=REFINE_PRIORITY)

    for clip in clips:
        output = futures[clip.window.index].result(300)
        expected = model_inputs.prompt_token_ids(engine.tokenizer, clip)
        assert output.prompt_tokens == len(expected)
        parsed = parse_events(output.text, clip.window.start_seconds, clip.window.end_seconds)
        assert parsed.error is None, output.text[-200:]
    answer = refine.result(300)
    assert answer.prompt_tokens == len(model_inputs.prompt_token_ids(engine.tokenizer, refine_clip))
    assert '"start"' in answer.text and '"end"' in answer.text  # the span grammar held
    stats = engine.stats.snapshot()
    assert stats["completed"] == 4 and stats["failed"] == 0 and stats["preprocess_s"] > 0
