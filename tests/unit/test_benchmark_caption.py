"""The engine benchmark's production-engine path (``caption_throughput.py --engine async``)
up to vLLM: a stand-in ``AsyncLLM`` that answers at once and counts renders."""

from __future__ import annotations

import argparse
import asyncio
import types
from pathlib import Path
from typing import Any

import pytest

from benchmarks.caption_throughput import _time_async, synthetic_clips
from tests.support.fake_vllm import install_fake_vllm
from vidseek.indexer import engine_vllm


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoProcessor

    from tests.support.tiny_qwen import build_tiny_qwen3_vl

    directory = build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl"))
    return AutoProcessor.from_pretrained(directory).tokenizer


class AnsweringLLM:
    def __init__(self, kwargs: dict[str, Any], tokenizer: Any) -> None:
        self.kwargs = kwargs
        self.tokenizer = tokenizer
        self.renders = 0
        self.requests: list[dict[str, Any]] = []
        self.renderer = types.SimpleNamespace(render_cmpl_async=self._render)

    async def _render(self, prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.renders += len(prompts)
        await asyncio.sleep(0)
        return [{"rendered": p} for p in prompts]

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    async def generate(self, prompt: dict[str, Any], params: Any, request_id: str, *, priority):
        self.requests.append(prompt)
        yield types.SimpleNamespace(
            prompt_token_ids=[1, 2, 3],
            outputs=[types.SimpleNamespace(text="x", token_ids=[7] * params.kwargs["max_tokens"])],
        )

    def shutdown(self) -> None:
        pass


@pytest.mark.parametrize("prerender", [False, True])
def test_every_window_is_rendered_once_and_answered(
    monkeypatch, tmp_path: Path, tokenizer, prerender
):
    install_fake_vllm(monkeypatch)
    made: list[AnsweringLLM] = []

    def factory(kwargs: dict[str, Any]) -> AnsweringLLM:
        made.append(AnsweringLLM(kwargs, tokenizer))
        return made[-1]

    monkeypatch.setattr(engine_vllm, "_default_llm_factory", factory)
    clips = synthetic_clips(5, 4.0, 1.0, 32, 64, 30.0)
    args = argparse.Namespace(
        output_tokens=16,
        constrained=False,
        gpu_memory_utilization=0.5,
        max_model_len=4096,
        renderer_workers=3,
        enforce_eager=False,
        warmup=2,
        prerender=prerender,
    )
    _, elapsed, outputs, measured = _time_async(tmp_path, {"load_format": "dummy"}, clips, args)
    (llm,) = made
    assert llm.kwargs["renderer_num_workers"] == 3 and llm.kwargs["load_format"] == "dummy"
    assert [o.output_tokens for o in outputs] == [16] * 5  # forced to --output-tokens
    assert llm.renders == 1 + 2 + 5  # the engine's warm-up, the warm-up windows, the pass
    assert len(llm.requests) == 2 + 5
    assert measured["prerender"] is prerender and ("render_s" in measured) is prerender
    assert elapsed > 0


@pytest.mark.parametrize(
    ("text", "problem"), [("[1]", "must be a JSON object"), ("{kv", "not JSON")]
)
def test_engine_arguments_that_are_not_a_json_object_are_refused(capsys, text, problem):
    from benchmarks.caption_throughput import main

    with pytest.raises(SystemExit):
        main(["--engine-args", text])
    assert problem in capsys.readouterr().err


def test_both_benchmarks_build_engine_arguments_alike_with_engine_args_last():
    from benchmarks.caption_throughput import dummy_engine_options
    from benchmarks.ingest_throughput import engine_options

    args = argparse.Namespace(
        max_num_batched_tokens=32768,
        max_num_seqs=0,
        engine_args={"enable_prefix_caching": True, "kv_cache_dtype": "fp8"},
    )
    common = {"load_format": "dummy", "dtype": "bfloat16", "max_num_batched_tokens": 32768}
    assert dummy_engine_options(args) == {**common, **args.engine_args}
    assert engine_options(args) == {**common, **args.engine_args}  # overrides the cache's off
    args.engine_args = {}
    assert engine_options(args) == {**common, "enable_prefix_caching": False}
