"""The ``vllm`` engine: Qwen3-VL in vLLM's async engine (``AsyncLLM``) in this process.

Every window submitted becomes a vLLM request at once, so the GPU sees the windows of
every running job and every refinement together and vLLM's continuous batching keeps it
full. A window's path through vLLM:

1. **Render** (``AsyncLLM.renderer.render_cmpl_async``): chat text to token ids and the
   video's frames to vision patches, on vLLM's renderer thread pool
   (``renderer_workers`` threads, vLLM's ``renderer_num_workers``). This is the CPU side
   of a request; vLLM's offline ``LLM.generate`` does it serially on one thread, which
   is what starves the GPU there.
2. **Generate** (``AsyncLLM.generate`` with the rendered input): queued in the engine
   core process with the window's priority (``scheduling_policy="priority"``: lower is
   sooner, so refinement overtakes ingestion in the queue).

The renderer pool serves renders in arrival order, so ingestion windows wait for a
render slot here (one per renderer thread) and refinement windows do not: a refinement
is rendered after at most one round of ingestion renders.

The engine renders one small synthetic window while it is built, before any real
window. That first render builds the Hugging Face processor, which vLLM caches
(``functools.lru_cache``, not guarded against concurrent misses); the build deep-copies
vLLM's thread-pooled tokenizer several times and took 60-90 s on the H200 (vLLM 0.26,
8 renderer threads). Left to the first real windows, every renderer thread missed the
cold cache at once (no window rendered within 110 s), and even alone it held the first
minute of every ingest with the GPU idle.

The requests are exactly those of the offline backend
(:func:`~vidseek.indexer.captioner_vllm.window_request`: absolute frame indices and the
real fps, so the model reads absolute ``<t seconds>``; the same prompt layout and the
same grammar-constrained greedy decoding).

Several GPUs: ``data_parallel_size=N`` starts one engine core per GPU under this one
``AsyncLLM``, which spreads requests over them (vLLM's data parallelism).

The asyncio loop runs on one background thread; :meth:`AsyncVllmEngine.submit` is
thread-safe and returns a ``concurrent.futures.Future``. vLLM is imported only when the
engine is built; ``llm_factory`` replaces ``AsyncLLM`` in tests.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

import numpy as np

from vidseek.indexer import model_inputs
from vidseek.indexer.captioner_vllm import (
    DecodingSpec,
    engine_kwargs,
    processor_expands_bare_video_token,
    sampling_params,
    spawn_engine_workers,
    vllm_prompt_text,
    window_request,
    window_sampling_params,
)
from vidseek.indexer.engine import INGEST_PRIORITY, REFINE_PRIORITY, EngineStats
from vidseek.indexer.types import CaptionOutput, Window, WindowClip

__all__ = ["AsyncVllmEngine", "async_engine_kwargs", "engine_seconds"]

log = logging.getLogger(__name__)


def async_engine_kwargs(
    model: str,
    *,
    gpu_memory_utilization: float,
    max_model_len: int,
    renderer_workers: int,
    data_parallel_size: int = 1,
    seed: int = 0,
    enforce_eager: bool = False,
    max_video_tokens: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``AsyncEngineArgs`` keyword arguments: the offline ones plus the async engine's own.

    Priority scheduling serves refinement first; ``renderer_workers`` threads render
    windows in parallel (vLLM refuses more than one with its processor cache on, which
    :func:`~vidseek.indexer.captioner_vllm.engine_kwargs` turns off).
    """
    if renderer_workers < 1:
        raise ValueError(f"renderer_workers must be >= 1, got {renderer_workers}")
    if data_parallel_size < 1:
        raise ValueError(f"data_parallel_size must be >= 1, got {data_parallel_size}")
    kwargs = engine_kwargs(
        model,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        seed=seed,
        enforce_eager=enforce_eager,
        max_video_tokens=max_video_tokens,
    )
    kwargs.update(
        scheduling_policy="priority",
        renderer_num_workers=renderer_workers,
        data_parallel_size=data_parallel_size,
        disable_log_stats=True,
    )
    kwargs.update(extra or {})
    return kwargs


def _default_llm_factory(kwargs: dict[str, Any]) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    # The offline LLM's scheduler defaults (on an H100/H200: 16,384 tokens and 1,024
    # sequences a step). With AsyncLLM's own default context vLLM keeps its generic
    # 2,048 tokens a step, under one 60 s window's prompt (~3,800 tokens); an ingest
    # on the H200 with that setting ran far below the offline engine.
    return AsyncLLM.from_engine_args(
        AsyncEngineArgs(**kwargs), usage_context=UsageContext.LLM_CLASS
    )


def _final_output_kind() -> Any:
    try:
        from vllm.sampling_params import RequestOutputKind
    except ImportError:  # tests without vLLM: the engine returns what it returns
        return None
    return RequestOutputKind.FINAL_ONLY


def engine_seconds(
    metrics: Any, render: float = 0.0, generate: float | None = None
) -> dict[str, float] | None:
    """A request's time in vLLM, from the engine core's timestamps in its
    ``RequestOutput.metrics`` (``RequestStateStats``; present when the engine keeps
    stats, ``disable_log_stats=False``): queued, prefill (to the first token), decode.
    ``render`` is the seconds its rendering took before it was sent; with ``generate``
    (the seconds from sending it to its answer), ``transit`` is what the engine core's
    timestamps leave out of that: the hand-over to the engine core and the answer's
    way back."""
    try:
        queued, scheduled = float(metrics.queued_ts), float(metrics.scheduled_ts)
        first, last = float(metrics.first_token_ts), float(metrics.last_token_ts)
    except (AttributeError, TypeError, ValueError):
        return None
    if not 0 < queued <= scheduled <= first <= last:
        return None
    parts = {
        "render": render,
        "queued": scheduled - queued,
        "prefill": first - scheduled,
        "decode": last - first,
    }
    if generate is not None:
        parts["transit"] = max(0.0, generate - (last - queued))
    return parts


GROUNDING_WARM_UP_TIMEOUT_S = 300.0
"""The longest the refinement warm-up may add to an engine's build."""


def _since(started: float) -> float:
    return time.perf_counter() - started


def _blank_clip(height: int, width: int, query: str | None = None) -> WindowClip:
    """A black 2-frame clip of the first second, for warming the engine up."""
    window = Window(index=0, start_seconds=0.0, end_seconds=1.0, frame_indices=(0, 1), query=query)
    frames = np.zeros((2, height, width, 3), np.uint8)
    return WindowClip(window=window, frames=frames, fps=2.0, total_frames=2)


def spread_tokens(tokens: int, spread: float, window: Window) -> int:
    """``tokens`` x a factor in [1 - ``spread``, 1 + ``spread``], uniform over windows and
    fixed for each (from its position in its video), at least 1."""
    key = f"{window.index}:{window.start_seconds:.3f}".encode()
    unit = zlib.crc32(key) / 0xFFFFFFFF
    return max(1, round(tokens * (1.0 - spread + 2.0 * spread * unit)))


PROFILE_TIMEOUT_S = 600.0
"""How long :meth:`AsyncVllmEngine.profile` waits for vLLM (stopping writes the trace)."""


class AsyncVllmEngine:
    """Qwen3-VL in an in-process ``AsyncLLM`` (implements ``CaptionEngine``).

    ``model`` is a hub id or a local checkpoint directory; ``engine_options`` go to
    ``AsyncEngineArgs`` on top of :func:`async_engine_kwargs` (e.g.
    ``load_format="dummy"``, ``quantization``); ``sampling_options`` to every
    ``SamplingParams``. ``fixed_caption_tokens`` (benchmarks with random weights, which
    never end an answer) makes every captioning window's answer exactly that many
    tokens, unconstrained, while grounding windows (refinement) decode as in
    production; with ``caption_tokens_spread`` F each window's length is instead drawn
    from ``fixed_caption_tokens`` x [1 - F, 1 + F] (:func:`spread_tokens`: the same
    for a window every time), as a real model's answers differ in length.
    ``max_video_tokens`` bounds the windows it will be sent (see
    :func:`~vidseek.indexer.captioner_vllm.engine_kwargs`). Building the engine takes
    minutes on a real model (the processor's first build included); build one per
    process. ``grounding_warm_up`` (``(height, width)``): the build ends with a 2-frame
    refinement of that frame size through the engine (one per engine core), so that
    vLLM compiles the vision kernels for it (Triton, on first use of a frame size: "JIT
    compilation during inference" in its log) and the span grammar then, not in a
    user's first search.
    """

    def __init__(
        self,
        model: str,
        *,
        max_new_tokens: int = 1024,
        constrained_json: bool = True,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int = 65536,
        renderer_workers: int = 8,
        data_parallel_size: int = 1,
        seed: int = 0,
        enforce_eager: bool = False,
        max_video_tokens: int = 0,
        engine_options: Mapping[str, Any] | None = None,
        sampling_options: Mapping[str, Any] | None = None,
        fixed_caption_tokens: int = 0,
        caption_tokens_spread: float = 0.0,
        worker_multiproc_method: str | None = "spawn",
        llm_factory: Callable[[dict[str, Any]], Any] | None = None,
        bare_video_token: bool | None = None,
        grounding_warm_up: tuple[int, int] | None = None,
    ) -> None:
        self._model_id = model
        self._cores = data_parallel_size
        self._stats = EngineStats()
        self._ids = itertools.count()
        kwargs = async_engine_kwargs(
            model,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            renderer_workers=renderer_workers,
            data_parallel_size=data_parallel_size,
            seed=seed,
            enforce_eager=enforce_eager,
            max_video_tokens=max_video_tokens,
            extra=engine_options,
        )
        spawn_engine_workers(worker_multiproc_method)
        self._bare_video_token = (
            processor_expands_bare_video_token() if bare_video_token is None else bare_video_token
        )
        sampling_extra = dict(sampling_options or {})
        kind = _final_output_kind()
        if kind is not None:
            sampling_extra.setdefault("output_kind", kind)
        self._params, self._grounding_params = window_sampling_params(
            max_new_tokens, constrained_json, sampling_extra
        )
        if not 0.0 <= caption_tokens_spread < 1.0:
            raise ValueError(
                f"caption_tokens_spread must be in [0, 1), got {caption_tokens_spread}"
            )
        self._fixed_tokens = fixed_caption_tokens
        self._tokens_spread = caption_tokens_spread if fixed_caption_tokens else 0.0
        self._fixed_extra = {**sampling_extra, "ignore_eos": True}
        self._fixed_params: dict[int, Any] = {}  # forced answer length -> its params
        if fixed_caption_tokens:
            self._params = self._forced(fixed_caption_tokens)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="vllm-async-engine", daemon=True
        )
        self._thread.start()
        factory = llm_factory or _default_llm_factory

        async def build() -> Any:
            # Built inside the loop: AsyncLLM binds its output handler to the running loop.
            return factory(kwargs)

        try:
            self._llm: Any = asyncio.run_coroutine_threadsafe(build(), self._loop).result()
        except BaseException:
            self._stop_loop()
            raise
        self._tokenizer: Any = self._llm.get_tokenizer()
        self._render_slots = asyncio.Semaphore(renderer_workers)
        self._closed = False
        try:
            self._warm_up()
            if grounding_warm_up is not None:
                self._warm_up_grounding(*grounding_warm_up)
        except BaseException:
            self.close()
            raise

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def stats(self) -> EngineStats:
        return self._stats

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def request(self, clip: WindowClip) -> dict[str, Any]:
        """The prompt dict that :meth:`submit` renders for ``clip``."""
        text = vllm_prompt_text(self._tokenizer, clip, bare_video_token=self._bare_video_token)
        return window_request(clip, text)

    def render(self, clip: WindowClip) -> Future[Any]:
        """``clip`` rendered by vLLM's renderer (its processor run), for :meth:`submit`.

        Rendering every window first and then submitting them all lets a benchmark
        time the engine apart from the front end (``benchmarks/caption_throughput.py
        --engine async --prerender``); ingestion does not use it. Such renders are not
        counted in :attr:`stats` (their windows show no preprocessing time), and the
        caller keeps each render with its own clip.
        """
        if self._closed:
            raise RuntimeError("the captioning engine is closed")
        render = self._llm.renderer.render_cmpl_async([self.request(clip)])
        return asyncio.run_coroutine_threadsafe(render, self._loop)

    def submit(
        self, clip: WindowClip, *, priority: int = INGEST_PRIORITY, rendered: Any = None
    ) -> Future[CaptionOutput]:
        """Caption ``clip``; ``rendered`` is its :meth:`render` result, if already made."""
        if self._closed:
            raise RuntimeError("the captioning engine is closed")
        return self._submit(clip, priority, rendered, self._stats)

    def _submit(
        self, clip: WindowClip, priority: int, rendered: Any, stats: EngineStats
    ) -> Future[CaptionOutput]:
        prompt = self.request(clip)  # validates the clip here, in the caller's thread
        if model_inputs.is_grounding(clip.window):
            params = self._grounding_params
        elif self._tokens_spread:
            params = self._forced(
                spread_tokens(self._fixed_tokens, self._tokens_spread, clip.window)
            )
        else:
            params = self._params
        request_id = f"vidseek-{next(self._ids)}"
        stats.started()
        try:
            return asyncio.run_coroutine_threadsafe(
                self._generate(request_id, prompt, params, priority, rendered, stats), self._loop
            )
        except BaseException:
            stats.finished(None)
            raise

    async def _generate(
        self,
        request_id: str,
        prompt: dict[str, Any],
        params: Any,
        priority: int,
        rendered: Any,
        stats: EngineStats,
    ) -> CaptionOutput:
        output: CaptionOutput | None = None
        preprocess_s = generate_s = 0.0
        try:
            started = time.perf_counter()
            if rendered is None:
                rendered = await self._render(prompt, priority)
            rendered_at = time.perf_counter()
            preprocess_s = rendered_at - started
            final: Any = None
            async for out in self._llm.generate(rendered[0], params, request_id, priority=priority):
                final = out
            generate_s = time.perf_counter() - rendered_at
            if final is None or not final.outputs:
                raise RuntimeError(f"vLLM gave no answer for request {request_id}")
            completion = final.outputs[0]
            output = CaptionOutput(
                text=str(completion.text),
                prompt_tokens=len(final.prompt_token_ids or []),
                output_tokens=len(completion.token_ids),
                engine_seconds=engine_seconds(
                    getattr(final, "metrics", None), preprocess_s, generate_s
                ),
            )
            return output
        finally:
            stats.finished(output, preprocess_s=preprocess_s, generate_s=generate_s)

    def _forced(self, tokens: int) -> Any:
        """Sampling params forcing an answer of exactly ``tokens`` tokens (one per length)."""
        params = self._fixed_params.get(tokens)
        if params is None:
            params = sampling_params(DecodingSpec(max_tokens=tokens), self._fixed_extra)
            self._fixed_params[tokens] = params
        return params

    def _warm_up(self) -> None:
        """Render a 2-frame window once, so vLLM builds its processor now (module doc)."""
        started = time.perf_counter()
        render = self._llm.renderer.render_cmpl_async([self.request(_blank_clip(64, 64))])
        asyncio.run_coroutine_threadsafe(render, self._loop).result()
        log.info("vLLM processor built in %.1f s", _since(started))

    def _warm_up_grounding(self, height: int, width: int) -> None:
        """2-frame refinements of ``height`` x ``width`` frames, one for each engine core
        (vLLM's data parallelism sends each to the least busy), answered (class doc).

        Best effort: the engine is kept if they fail or take longer than
        :data:`GROUNDING_WARM_UP_TIMEOUT_S`, and they are not counted in :attr:`stats`.
        """
        clip = _blank_clip(height, width, query="warm-up")
        started = time.perf_counter()
        aside = EngineStats()
        try:
            futures = [self._submit(clip, REFINE_PRIORITY, None, aside) for _ in range(self._cores)]
            for future in futures:
                future.result(timeout=max(0.0, GROUNDING_WARM_UP_TIMEOUT_S - _since(started)))
        except Exception as exc:  # a timeout included: the first refinement compiles instead
            log.warning("vLLM refinement warm-up (%dx%d) did not finish: %r", width, height, exc)
            return
        log.info(
            "vLLM answered a %dx%d refinement warm-up in %.1f s", width, height, _since(started)
        )

    async def _render(self, prompt: dict[str, Any], priority: int) -> Any:
        if priority >= INGEST_PRIORITY:
            # vLLM's renderer pool is first come, first served: ingestion holds at
            # most one render per renderer thread, so a refinement waits for at
            # most one round of renders, not for every ingestion window in flight.
            async with self._render_slots:
                return await self._llm.renderer.render_cmpl_async([prompt])
        return await self._llm.renderer.render_cmpl_async([prompt])

    def profile(self, on: bool) -> None:
        """Start (``on``) or stop vLLM's profiler in its engine cores.

        The engine must be built with a ``vllm.config.ProfilerConfig`` as
        ``engine_options["profiler_config"]`` (``profiler="torch"``,
        ``torch_profiler_dir=...``); vLLM writes its traces there when the profiler stops
        (``benchmarks/engine_profile.py`` reads them).
        """
        call = self._llm.start_profile() if on else self._llm.stop_profile()
        asyncio.run_coroutine_threadsafe(call, self._loop).result(timeout=PROFILE_TIMEOUT_S)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def close(self) -> None:
        """Shut the engine down (its GPU workers exit); waiting windows fail."""
        if self._closed:
            return
        self._closed = True
        llm = self._llm
        try:
            llm.shutdown()
        except Exception:  # best effort: the engine core may already be gone
            log.debug("vLLM async engine shutdown failed", exc_info=True)
        for task in asyncio.all_tasks(self._loop):
            self._loop.call_soon_threadsafe(task.cancel)
        self._stop_loop()
