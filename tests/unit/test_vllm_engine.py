"""The async vLLM engine up to vLLM itself: a stand-in ``AsyncLLM`` that records requests.

The stand-in holds every request until the test opens its gate, so the test sees how
many windows vLLM would hold at once. The prompts are built by the real code from the
tiny Qwen3-VL's real tokenizer, exactly as for the offline backend.
"""

from __future__ import annotations

import asyncio
import threading
import time
import types
from typing import Any

import pytest

from tests.support.clips import make_clip
from tests.support.fake_vllm import install_fake_vllm
from vidseek.indexer import model_inputs
from vidseek.indexer.engine import INGEST_PRIORITY, REFINE_PRIORITY, CaptionEngine
from vidseek.indexer.engine_vllm import AsyncVllmEngine, async_engine_kwargs
from vidseek.storage.errors import ConfigError


@pytest.fixture
def fake_vllm(monkeypatch):
    return install_fake_vllm(monkeypatch)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoProcessor

    from tests.support.tiny_qwen import build_tiny_qwen3_vl

    directory = build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl"))
    return AutoProcessor.from_pretrained(directory).tokenizer


class FakeRenderer:
    def __init__(self) -> None:
        self.rendered: list[dict[str, Any]] = []

    async def render_cmpl_async(self, prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.rendered.extend(prompts)
        await asyncio.sleep(0)
        return [{"type": "rendered", "source": p} for p in prompts]


class FakeAsyncLLM:
    """Records requests; each waits for ``gate`` before its one final output."""

    def __init__(self, kwargs: dict[str, Any], tokenizer: Any) -> None:
        self.kwargs = kwargs
        self.tokenizer = tokenizer
        self.renderer = FakeRenderer()
        self.gate = asyncio.Event()  # built inside the engine's loop
        self.requests: list[tuple[dict[str, Any], Any, str, int]] = []
        self.in_engine = 0
        self.most_in_engine = 0
        self.shut_down = False
        self.metrics: Any = None  # RequestOutput.metrics of the answers

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    async def generate(
        self, prompt: dict[str, Any], params: Any, request_id: str, *, priority: int
    ):
        self.requests.append((prompt, params, request_id, priority))
        self.in_engine += 1
        self.most_in_engine = max(self.most_in_engine, self.in_engine)
        await self.gate.wait()
        self.in_engine -= 1
        frames = prompt["source"]["multi_modal_data"]["video"][0][1]["frames_indices"]
        yield types.SimpleNamespace(
            prompt_token_ids=list(range(100 + len(frames))),
            outputs=[
                types.SimpleNamespace(text=f'{{"events": []}} {request_id}', token_ids=[7, 8])
            ],
            metrics=self.metrics,
        )

    def shutdown(self) -> None:
        self.shut_down = True


def _engine(tokenizer: Any, **options: Any) -> tuple[AsyncVllmEngine, list[FakeAsyncLLM]]:
    made: list[FakeAsyncLLM] = []

    def factory(kwargs: dict[str, Any]) -> FakeAsyncLLM:
        llm = FakeAsyncLLM(kwargs, tokenizer)
        made.append(llm)
        return llm

    engine = AsyncVllmEngine(
        "/models/qwen3-vl", llm_factory=factory, bare_video_token=True, **options
    )
    return engine, made


def _until(condition, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_windows_from_many_threads_are_all_in_the_engine_at_once(fake_vllm, tokenizer):
    engine, (llm,) = _engine(tokenizer, max_new_tokens=256, renderer_workers=6)
    assert isinstance(engine, CaptionEngine)
    futures: list[Any] = []
    lock = threading.Lock()

    def job(first: int) -> None:
        for k in range(4):
            future = engine.submit(make_clip(start_second=60 * (first + k), index=first + k))
            with lock:
                futures.append(future)

    threads = [threading.Thread(target=job, args=(4 * j,)) for j in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _until(lambda: llm.in_engine == 12)  # none waits for another's answer
    assert engine.stats.in_flight == 12
    engine._loop.call_soon_threadsafe(llm.gate.set)
    outputs = [f.result(10) for f in futures]
    engine.close()

    assert llm.most_in_engine == 12 and llm.shut_down
    assert len({rid for _, _, rid, _ in llm.requests}) == 12
    assert all(o.prompt_tokens == 104 and o.output_tokens == 2 for o in outputs)
    assert llm.kwargs["scheduling_policy"] == "priority"
    assert llm.kwargs["renderer_num_workers"] == 6
    assert llm.kwargs["mm_processor_cache_gb"] == 0
    # The rendered prompts are the offline backend's requests: absolute indices, real fps.
    sources = {
        p["multi_modal_data"]["video"][0][1]["frames_indices"][0] for p in llm.renderer.rendered
    }
    assert sources == {round(60 * s * 30.0) for s in range(12)}
    first = llm.renderer.rendered[0]
    assert first["mm_processor_kwargs"] == model_inputs.processor_kwargs()
    stats = engine.stats.snapshot()
    assert stats["completed"] == 12 and stats["in_flight"] == 0 and stats["max_in_flight"] == 12
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(make_clip())


def _ingest_and_refine(engine: AsyncVllmEngine, llm: FakeAsyncLLM) -> dict[int, Any]:
    """One ingestion and one refinement window through ``engine``; params by priority."""
    ingest = engine.submit(make_clip(index=0))
    refine = engine.submit(make_clip(index=1, query="a dog jumps"), priority=REFINE_PRIORITY)
    assert _until(lambda: len(llm.requests) == 2)
    engine._loop.call_soon_threadsafe(llm.gate.set)
    ingest.result(10), refine.result(10)
    engine.close()
    return {priority: params for _, params, _, priority in llm.requests}


def test_priority_and_grounding_reach_the_engine(fake_vllm, tokenizer):
    engine, (llm,) = _engine(tokenizer, max_new_tokens=64)
    by_priority = _ingest_and_refine(engine, llm)
    assert set(by_priority) == {INGEST_PRIORITY, REFINE_PRIORITY}
    events = by_priority[INGEST_PRIORITY].kwargs["structured_outputs"].kwargs["grammar"]
    span = by_priority[REFINE_PRIORITY].kwargs["structured_outputs"].kwargs["grammar"]
    assert events == model_inputs.events_grammar_ebnf()
    assert span == model_inputs.span_grammar_ebnf()
    assert by_priority[INGEST_PRIORITY].kwargs["max_tokens"] == 64


def test_fixed_length_captions_leave_grounding_decoding_as_in_production(fake_vllm, tokenizer):
    # Benchmarks force caption answers to a fixed length; refinement must stay real.
    engine, (llm,) = _engine(tokenizer, max_new_tokens=512, fixed_caption_tokens=256)
    by_priority = _ingest_and_refine(engine, llm)
    caption = by_priority[INGEST_PRIORITY].kwargs
    grounding = by_priority[REFINE_PRIORITY].kwargs
    assert caption["max_tokens"] == 256 and caption["ignore_eos"] is True
    assert "structured_outputs" not in caption
    assert "ignore_eos" not in grounding and grounding["max_tokens"] == 512
    assert grounding["structured_outputs"].kwargs["grammar"] == model_inputs.span_grammar_ebnf()


def test_a_caption_length_spread_keeps_grounding_as_in_production(fake_vllm, tokenizer):
    engine, (llm,) = _engine(
        tokenizer, max_new_tokens=512, fixed_caption_tokens=256, caption_tokens_spread=0.5
    )
    by_priority = _ingest_and_refine(engine, llm)
    caption = by_priority[INGEST_PRIORITY].kwargs
    assert 128 <= caption["max_tokens"] <= 384 and caption["ignore_eos"] is True
    assert by_priority[REFINE_PRIORITY].kwargs["max_tokens"] == 512


@pytest.mark.parametrize("spread", [-0.1, 1.0, float("nan")])
def test_a_caption_length_spread_outside_0_1_is_refused(fake_vllm, tokenizer, spread):
    with pytest.raises(ValueError, match="caption_tokens_spread"):
        _engine(tokenizer, fixed_caption_tokens=256, caption_tokens_spread=spread)


def test_spread_tokens_is_fixed_per_window_and_uniform_over_windows():
    from vidseek.indexer.engine_vllm import spread_tokens

    windows = [make_clip(index=i).window for i in range(400)]
    lengths = [spread_tokens(256, 0.5, w) for w in windows]
    assert lengths == [spread_tokens(256, 0.5, w) for w in windows]
    assert min(lengths) >= 128 and max(lengths) <= 384
    assert abs(sum(lengths) / len(lengths) - 256) < 15
    assert sum(n < 256 for n in lengths) > 150 and sum(n > 256 for n in lengths) > 150


def test_an_engine_error_fails_only_its_window(fake_vllm, tokenizer):
    engine, (llm,) = _engine(tokenizer)

    async def broken(prompt, params, request_id, *, priority):
        raise RuntimeError("CUDA error: out of memory")
        yield  # an async generator

    good = engine.submit(make_clip(index=0))
    assert _until(lambda: len(llm.requests) == 1)
    llm.generate = broken  # type: ignore[method-assign]
    bad = engine.submit(make_clip(index=1))
    with pytest.raises(RuntimeError, match="out of memory"):
        bad.result(10)
    engine._loop.call_soon_threadsafe(llm.gate.set)
    assert good.result(10).text
    engine.close()
    assert engine.stats.failed == 1 and engine.stats.completed == 1


def test_the_engine_cores_timestamps_split_a_requests_time(fake_vllm, tokenizer):
    engine, (llm,) = _engine(tokenizer)
    engine._loop.call_soon_threadsafe(llm.gate.set)
    llm.metrics = types.SimpleNamespace(
        queued_ts=10.0, scheduled_ts=10.5, first_token_ts=11.25, last_token_ts=13.0
    )
    timed = engine.submit(make_clip(index=0)).result(10)
    parts = timed.engine_seconds
    assert parts is not None and parts.pop("render") >= 0  # the fake renderer's time
    assert parts.pop("transit") >= 0  # what the engine core's timestamps leave out
    assert parts == {"queued": 0.5, "prefill": 0.75, "decode": 1.75}
    # Stats off (the default: no metrics), or timestamps not yet set: no split.
    for metrics in (None, types.SimpleNamespace(queued_ts=10.0, scheduled_ts=0.0)):
        llm.metrics = metrics
        assert engine.submit(make_clip(index=1)).result(10).engine_seconds is None
    engine.close()


def test_the_engine_can_end_its_build_with_a_refinement_of_a_given_frame_size(fake_vllm, tokenizer):
    made: list[FakeAsyncLLM] = []

    def factory(kwargs: dict[str, Any]) -> FakeAsyncLLM:
        made.append(FakeAsyncLLM(kwargs, tokenizer))
        made[-1].gate.set()  # answers at once
        return made[-1]

    engine = AsyncVllmEngine(
        "/models/qwen3-vl",
        llm_factory=factory,
        bare_video_token=True,
        grounding_warm_up=(352, 640),
        data_parallel_size=2,
    )
    (llm,) = made
    assert len(llm.requests) == 2  # one per engine core, answered before the build returned
    for prompt, params, _, priority in llm.requests:
        frames = prompt["source"]["multi_modal_data"]["video"][0][0]
        assert frames.shape == (2, 352, 640, 3) and priority == REFINE_PRIORITY
        grammar = params.kwargs["structured_outputs"].kwargs["grammar"]
        assert grammar == model_inputs.span_grammar_ebnf()
    assert engine.stats.snapshot()["submitted"] == 0  # not counted as windows
    engine.close()
    plain, made_without = _engine(tokenizer)
    assert made_without[0].requests == []  # none by default
    plain.close()


@pytest.mark.parametrize("failure", ["hangs", "fails"])
def test_a_refinement_warm_up_that_fails_or_hangs_leaves_a_working_engine(
    fake_vllm, tokenizer, monkeypatch, caplog, failure
):
    from vidseek.indexer import engine_vllm

    monkeypatch.setattr(engine_vllm, "GROUNDING_WARM_UP_TIMEOUT_S", 0.3)

    async def broken(prompt, params, request_id, *, priority):
        raise RuntimeError("no kernel")
        yield  # an async generator

    made: list[FakeAsyncLLM] = []

    def factory(kwargs: dict[str, Any]) -> FakeAsyncLLM:
        made.append(FakeAsyncLLM(kwargs, tokenizer))  # its gate stays shut: no answer
        if failure == "fails":
            made[-1].generate = broken  # type: ignore[method-assign]
        return made[-1]

    with caplog.at_level("WARNING", logger=engine_vllm.__name__):
        engine = AsyncVllmEngine(
            "/models/qwen3-vl",
            llm_factory=factory,
            bare_video_token=True,
            grounding_warm_up=(352, 640),
        )
    assert "refinement warm-up (640x352) did not finish" in caplog.text
    (llm,) = made
    if failure == "hangs":
        window = engine.submit(make_clip(index=0))
        engine._loop.call_soon_threadsafe(llm.gate.set)
        assert window.result(10).text  # the engine serves windows all the same
    engine.close()


def test_async_engine_kwargs_validate_and_carry_data_parallelism():
    kwargs = async_engine_kwargs(
        "m",
        gpu_memory_utilization=0.9,
        max_model_len=32768,
        renderer_workers=4,
        data_parallel_size=2,
        extra={"load_format": "dummy"},
    )
    assert kwargs["data_parallel_size"] == 2 and kwargs["load_format"] == "dummy"
    assert kwargs["limit_mm_per_prompt"] == {"image": 0, "video": 1}
    with pytest.raises(ValueError, match="renderer_workers"):
        async_engine_kwargs("m", gpu_memory_utilization=0.9, max_model_len=1, renderer_workers=0)
    with pytest.raises(ValueError, match="data_parallel_size"):
        async_engine_kwargs(
            "m",
            gpu_memory_utilization=0.9,
            max_model_len=1,
            renderer_workers=1,
            data_parallel_size=0,
        )


def test_a_long_window_raises_the_engine_step_so_its_video_fits_the_encoder_cache():
    def kwargs(tokens: int) -> dict[str, Any]:
        return async_engine_kwargs(
            "m",
            gpu_memory_utilization=0.9,
            max_model_len=65536,
            renderer_workers=1,
            max_video_tokens=tokens,
        )

    # 10-minute windows of 256x448 at 1 fps: 33,600 video tokens in one piece.
    assert kwargs(33_600)["max_num_batched_tokens"] == 33_600
    # Refinement's 14,400 tokens fit an H200's default step but not an A100's (8,192).
    assert kwargs(14_400)["max_num_batched_tokens"] == 16_384
    # A 60 s window fits every default step, which stays vLLM's to choose.
    assert "max_num_batched_tokens" not in kwargs(6_975)
    with pytest.raises(ValueError, match=r"70000 video tokens does not fit .* 65536"):
        kwargs(70_000)


def test_the_server_sizes_the_engine_for_its_longest_window():
    from vidseek.server.settings import load_settings, max_window_video_tokens

    # Refinement's 128 frames of 640x360 outweigh a 60 s ingest window (61 frames).
    assert max_window_video_tokens(load_settings(environ={})) == 64 * 225
    # 600 s at 1 fps is 601 frames, 301 pairs of 640x360: more than a 65,536-token
    # context, which the vllm captioner's settings refuse by name.
    long = load_settings(environ={"VIDSEEK_WINDOW_SECONDS": "600"})
    assert max_window_video_tokens(long) == 301 * 225
    refused = r"'vllm_max_model_len' = 65536: the largest window \(67725 video tokens"
    with pytest.raises(ConfigError, match=refused):
        load_settings(environ={"VIDSEEK_WINDOW_SECONDS": "600", "VIDSEEK_CAPTIONER": "vllm"})
    smaller = {"VIDSEEK_WINDOW_SECONDS": "600", "VIDSEEK_MAX_FRAME_PIXELS": str(256 * 448)}
    assert max_window_video_tokens(load_settings(environ=smaller)) == 301 * 112
    load_settings(environ={**smaller, "VIDSEEK_CAPTIONER": "vllm"})


class FifoRenderer:
    """Like vLLM's renderer: a first-come, first-served pool of ``workers`` threads."""

    def __init__(self, workers: int, seconds: float) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(workers)
        self.seconds = seconds
        self.finished: list[int] = []  # window indices, in the order their render ended

    async def render_cmpl_async(self, prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        await asyncio.get_running_loop().run_in_executor(self.pool, time.sleep, self.seconds)
        first = prompts[0]["multi_modal_data"]["video"][0][1]["frames_indices"][0]
        self.finished.append(first)
        return [{"type": "rendered", "source": p} for p in prompts]


def test_a_refinement_is_rendered_without_waiting_for_every_ingestion_window(fake_vllm, tokenizer):
    engine, (llm,) = _engine(tokenizer, renderer_workers=2)
    llm.renderer = FifoRenderer(workers=2, seconds=0.2)  # type: ignore[assignment]
    ingest = [engine.submit(make_clip(start_second=60 * (k + 1), index=k)) for k in range(12)]
    # The first renders are done; the other ingestion windows are all waiting before
    # the refinement comes.
    assert _until(lambda: len(llm.renderer.finished) >= 1)
    refine = engine.submit(make_clip(start_second=0, index=99, query="q"), priority=REFINE_PRIORITY)
    assert _until(lambda: len(llm.renderer.finished) == 13)
    engine._loop.call_soon_threadsafe(llm.gate.set)
    for future in [*ingest, refine]:
        future.result(10)
    engine.close()
    # Frame 0 is the refinement's: it finished among the first few renders, not last.
    assert llm.renderer.finished.index(0) <= 4


class CountingRenderer(FifoRenderer):
    """Counts the renders running at once."""

    def __init__(self, workers: int, seconds: float) -> None:
        super().__init__(workers, seconds)
        self.running = 0
        self.most = 0

    async def render_cmpl_async(self, prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            return await super().render_cmpl_async(prompts)
        finally:
            self.running -= 1


def test_the_engine_renders_once_while_built_then_renders_in_parallel(fake_vllm, tokenizer):
    engine, (llm,) = _engine(tokenizer, renderer_workers=4)
    # vLLM builds its processor on the first render: that happens in the constructor,
    # on a 2-frame window, before any real window and with nothing sent to generate.
    (warm_up,) = llm.renderer.rendered
    assert warm_up["multi_modal_data"]["video"][0][0].shape[0] == 2
    assert llm.requests == []
    renderer = llm.renderer = CountingRenderer(workers=4, seconds=0.05)  # type: ignore[assignment]
    futures = [engine.submit(make_clip(start_second=60 * k, index=k)) for k in range(12)]
    assert _until(lambda: len(renderer.finished) == 12)
    engine._loop.call_soon_threadsafe(llm.gate.set)
    for future in futures:
        future.result(10)
    engine.close()
    assert renderer.most == 4
    assert len(llm.requests) == 12


def test_windows_rendered_beforehand_go_to_the_engine_without_rendering_again(fake_vllm, tokenizer):
    # The benchmark's engine-alone measurement: render every window, then submit.
    engine, (llm,) = _engine(tokenizer, max_new_tokens=64)
    clips = [make_clip(start_second=60 * k, index=k) for k in range(3)]
    rendered = [engine.render(clip).result(10) for clip in clips]
    renders = len(llm.renderer.rendered)  # the warm-up's and these three
    assert renders == 4
    futures = [engine.submit(c, rendered=r) for c, r in zip(clips, rendered, strict=True)]
    assert _until(lambda: len(llm.requests) == 3)
    engine._loop.call_soon_threadsafe(llm.gate.set)
    assert all(f.result(10).text for f in futures)
    assert len(llm.renderer.rendered) == renders
    assert [request[0] for request in llm.requests] == [r[0] for r in rendered]
    assert engine.stats.snapshot()["completed"] == 3
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.render(clips[0])


def test_an_engine_whose_warm_up_render_fails_is_shut_down(fake_vllm, tokenizer):
    made: list[FakeAsyncLLM] = []

    class BrokenRenderer(FakeRenderer):
        async def render_cmpl_async(self, prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
            raise RuntimeError("processor failed to load")

    def factory(kwargs: dict[str, Any]) -> FakeAsyncLLM:
        llm = FakeAsyncLLM(kwargs, tokenizer)
        llm.renderer = BrokenRenderer()
        made.append(llm)
        return llm

    with pytest.raises(RuntimeError, match="processor failed to load"):
        AsyncVllmEngine("/models/qwen3-vl", llm_factory=factory, bare_video_token=True)
    assert made[0].shut_down
