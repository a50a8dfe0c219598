"""Caption throughput of the vLLM backend: random weights of the real Qwen3-VL-4B shape.

Runs the project's engines on synthetic windows of a long video, all submitted at
once, and prints video-hours captioned per GPU-hour and tokens per second:

- ``--engine llm`` (default): the offline backend
  (:class:`~vidseek.indexer.captioner_vllm.VllmCaptioner`: the same requests, prompt
  layout and processor kwargs as ingestion) in one ``LLM.generate`` call, which
  prepares the windows one at a time on one thread;
- ``--engine async``: the production engine
  (:class:`~vidseek.indexer.engine_vllm.AsyncVllmEngine`), whose renderer threads
  prepare windows in parallel; with ``--prerender`` every window is rendered first
  and only the engine's part is timed.

With ``--engine async``, ``--in-flight N`` keeps N windows in the engine, as ingestion's
bound on windows in flight does, instead of submitting all at once: the pass is then
the engine's steady state (a full batch of windows at every stage of their answers),
not one wave of prefills followed by one wave of decoding. ``--passes P`` goes P times
over the windows (each window is rendered once and sent P times; vLLM's prefix cache
is off, and its encoder cache, shared by requests and sized to one step's tokens,
holds a few windows, so a window sent again ``--windows`` submissions later is encoded
again: more than twice the windows the cache holds are required). The steady rate
is taken between 10% and 90% of the answers. ``--refine-interval S`` sends a search
refinement's grounding clip (``--refine-seconds`` of 640x352 frames at 2 fps, as the
server's defaults make it, with a query; span grammar, at most 40 tokens) ahead of the
windows every S seconds, rendered when sent, one at a time, and reports its latency:
what a refinement waits for in an engine kept full, for a given step size. vLLM then
keeps its stats, which split each answer's time in the engine (queued, prefill,
decode; the ``*_p50_s`` fields) and give the time between two of its tokens, one
engine step (``*_step_p50_ms``). Windows go through the production bound on windows in
flight (:class:`~vidseek.indexer.engine.BoundedEngine`); ``--refine-hold S [S ...]``
times a run for each value of its hold for refinements
(``VIDSEEK_REFINE_HOLD_SECONDS``), one after another on the same engine.

No weights are downloaded: the model directory holds the real Qwen tokenizer and
processor (built offline by ``tests/support/tiny_qwen.py``) and a ``config.json`` of
the real 4B shape (text: hidden 2560, 36 layers, 32 heads / 8 KV heads, MLP 9728,
vocab 151936; vision: depth 24, hidden 1024, patch 16, temporal patch 2, merge 2,
deepstack [5, 11, 17]); vLLM fills the weights at random (``load_format="dummy"``). The
``fp8`` variant adds the FP8 checkpoint's ``quantization_config`` (fine-grained FP8,
128x128 weight blocks, dynamic activations), so vLLM runs its block-FP8 kernels. Speed
does not depend on weight values, except through answer length: answers are forced
to exactly ``--output-tokens`` tokens (``ignore_eos``, no grammar) unless
``--constrained``.

On the lent H100 (vLLM 0.26, no FlashInfer, no DeepGEMM)::

    VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_USE_DEEP_GEMM=0 \\
        python benchmarks/caption_throughput.py --variants bf16 fp8 --windows 64

The script touches CUDA only through vLLM, after the engine is built. VllmCaptioner
makes vLLM spawn (not fork) its engine process, which re-imports this module: hence
the ``__main__`` guard.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmarks.* and tests.support, when run as a script

from benchmarks.engine_load import (  # noqa: E402
    REFINE_SIZE,
    Prerendered,
    RefineProber,
    engine_parts,
    pixels,
    profiled_pass,
    refine_clip,
    steady_rate,
    stream,
)
from vidseek.indexer.engine import BoundedEngine  # noqa: E402
from vidseek.indexer.types import Window, WindowClip  # noqa: E402
from vidseek.indexer.vllm_plugin import align_rows, gemm_settings  # noqa: E402

# Qwen3-VL-4B-Instruct's config.json (text_config / vision_config), the fields that
# decide compute; the rest are Qwen3VLConfig defaults.
TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5000000.0,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "tie_word_embeddings": True,
    "dtype": "bfloat16",
}
VISION_CONFIG: dict[str, Any] = {
    "depth": 24,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_heads": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "in_channels": 3,
    "patch_size": 16,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "out_hidden_size": 2560,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [5, 11, 17],
}
FP8_QUANTIZATION_CONFIG: dict[str, Any] = {
    "quant_method": "fp8",
    "fmt": "e4m3",
    "activation_scheme": "dynamic",
    "weight_block_size": [128, 128],
}


def build_model_dir(directory: Path, fp8: bool) -> Path:
    """A weightless Qwen3-VL-4B directory: real tokenizer/processor, real-shape config."""
    from transformers import Qwen3VLConfig

    from tests.support.tiny_qwen import build_tiny_qwen3_vl

    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        tiny = build_tiny_qwen3_vl(Path(scratch) / "tiny")
        for path in tiny.iterdir():
            if path.name != "config.json" and not path.name.endswith(".safetensors"):
                shutil.copy2(path, directory / path.name)
    config = Qwen3VLConfig(
        text_config=TEXT_CONFIG,
        vision_config=VISION_CONFIG,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=True,
    )
    config.architectures = ["Qwen3VLForConditionalGeneration"]
    config.save_pretrained(directory)
    if fp8:
        path = directory / "config.json"
        data = json.loads(path.read_text())
        data["quantization_config"] = FP8_QUANTIZATION_CONFIG
        path.write_text(json.dumps(data, indent=2))
    return directory


def synthetic_clips(
    count: int,
    window_seconds: float,
    sample_fps: float,
    height: int,
    width: int,
    source_fps: float,
    seed: int = 0,
) -> list[WindowClip]:
    """Consecutive windows of one long video, distinct random frames, absolute indices."""
    frames_per_window = round(window_seconds * sample_fps)
    frames_per_window += frames_per_window % 2
    rng = np.random.default_rng(seed)
    total_frames = round(count * window_seconds * source_fps)
    clips = []
    for index in range(count):
        start = index * window_seconds
        indices = tuple(
            round((start + k / sample_fps) * source_fps) for k in range(frames_per_window)
        )
        frames = rng.integers(0, 256, size=(frames_per_window, height, width, 3), dtype=np.uint8)
        window = Window(
            index=index,
            start_seconds=start,
            end_seconds=start + window_seconds,
            frame_indices=indices,
        )
        clips.append(
            WindowClip(window=window, frames=frames, fps=source_fps, total_frames=total_frames)
        )
    return clips


def dummy_engine_options(args: argparse.Namespace, **fixed: Any) -> dict[str, Any]:
    """A benchmark's vLLM engine arguments: random weights in BF16, then ``fixed``, the
    step and sequence caps of ``--max-num-batched-tokens`` / ``--max-num-seqs``, and
    last ``--engine-args``, which override them all."""
    options: dict[str, Any] = {"load_format": "dummy", "dtype": "bfloat16", **fixed}
    if args.max_num_batched_tokens:
        options["max_num_batched_tokens"] = args.max_num_batched_tokens
    if args.max_num_seqs:
        options["max_num_seqs"] = args.max_num_seqs
    options.update(args.engine_args)
    return options


Timed = tuple[float, list[Any], dict[str, Any]]
"""One timed run on an engine: seconds, the answers, what else was measured."""


def run_variant(
    variant: str,
    clips: Sequence[WindowClip],
    args: argparse.Namespace,
    emit: Callable[[dict[str, Any]], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """Build the engine for one variant, warm it up, and time ``clips`` through it: a
    row per run (one, or one per ``--refine-hold`` value on the same engine), each
    given to ``emit`` as soon as its run ends."""
    model_dir = build_model_dir(Path(args.work_dir) / variant, fp8=(variant == "fp8"))
    rows: list[dict[str, Any]] = []

    def ended(build_seconds: float, run: Timed) -> None:
        rows.append(result_row(variant, clips, args, build_seconds, run))
        emit(rows[-1])

    # The async passes send windows again: no prefix cache, as in the ingest benchmark.
    if args.engine == "llm":
        _time_offline(model_dir, dummy_engine_options(args), clips, args, ended)
    else:
        options = dummy_engine_options(args, enable_prefix_caching=False)
        _time_async(model_dir, options, clips, args, ended)
    return rows


def result_row(
    variant: str,
    clips: Sequence[WindowClip],
    args: argparse.Namespace,
    build_seconds: float,
    run: Timed,
) -> dict[str, Any]:
    """One run's figures, with the engine and the windows it ran."""
    import torch
    import vllm

    elapsed, outputs, measured = run
    sent = len(outputs)  # each window once, or --passes times
    video_seconds = sum(c.window.end_seconds - c.window.start_seconds for c in clips)
    video_seconds *= sent / len(clips)
    prompt_tokens = sum(o.prompt_tokens for o in outputs)
    output_tokens = sum(o.output_tokens for o in outputs)
    height, width = clips[0].frames.shape[1:3]
    return {
        "variant": variant,
        "engine": args.engine,
        "device": torch.cuda.get_device_name(0),
        "vllm": vllm.__version__,
        **gemm_settings(),
        "windows": len(clips),
        "windows_sent": sent,
        "window_seconds": clips[0].window.end_seconds - clips[0].window.start_seconds,
        "frames_per_window": int(clips[0].frames.shape[0]),
        "frame_size": f"{width}x{height}",
        "output_tokens_per_window": args.output_tokens,
        "output_tokens_spread": args.output_tokens_spread,
        "constrained": args.constrained,
        "enforce_eager": args.enforce_eager,
        "engine_args": args.engine_args,
        "engine_build_s": round(build_seconds, 1),
        "elapsed_s": round(elapsed, 2),
        "video_hours_per_gpu_hour": round(video_seconds / elapsed, 1),
        "prompt_tokens_per_window": round(prompt_tokens / sent, 1),
        "prompt_tokens_per_s": round(prompt_tokens / elapsed),
        "output_tokens_per_s": round(output_tokens / elapsed),
        "windows_per_s": round(sent / elapsed, 2),
        **measured,
    }


def _time_offline(
    model_dir: Path,
    engine_options: dict[str, Any],
    clips: Sequence[WindowClip],
    args: argparse.Namespace,
    ended: Callable[[float, Timed], None],
) -> None:
    """Every window in one ``LLM.generate`` call (``VllmCaptioner``), which prepares
    the windows one at a time on its one thread."""
    from benchmarks.sampling import GpuSampler
    from vidseek.indexer.captioner_vllm import VllmCaptioner

    started = time.perf_counter()
    captioner = VllmCaptioner(
        str(model_dir),
        max_new_tokens=args.output_tokens,
        constrained_json=args.constrained,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        enforce_eager=args.enforce_eager,
        engine_options=engine_options,
        sampling_options={} if args.constrained else {"ignore_eos": True},
    )
    build_seconds = time.perf_counter() - started
    try:
        captioner.describe(clips[: args.warmup])
        with GpuSampler() as gpu:
            started = time.perf_counter()
            results = captioner.describe_detailed(clips)
            elapsed = time.perf_counter() - started
    finally:
        captioner.close()
    ended(build_seconds, (elapsed, [r.output for r in results], gpu.report()))


def _time_async(
    model_dir: Path,
    engine_options: dict[str, Any],
    clips: Sequence[WindowClip],
    args: argparse.Namespace,
    ended: Callable[[float, Timed], None],
) -> None:
    """The windows through the production engine (``AsyncVllmEngine``), whose renderer
    threads prepare windows in parallel: all at once, or ``--in-flight`` at a time for
    ``--passes`` passes (module doc), once per ``--refine-hold`` value; ``ended`` gets
    the engine's build time and each run as it ends. With ``--prerender`` every window
    is rendered first and only the engine's part is timed."""
    from vidseek.indexer.engine_vllm import AsyncVllmEngine
    from vidseek.indexer.model_inputs import max_video_tokens

    frames, height, width = clips[0].frames.shape[:3]
    largest = max_video_tokens(frames, height * width)
    if args.refine_interval > 0:
        probe = refine_clip(args.refine_seconds, 0)
        largest = max(largest, max_video_tokens(*pixels(probe)))
    if args.profile_steps:
        engine_options = {**profiler_options(args), **engine_options}
    started = time.perf_counter()
    # With refinement probes vLLM keeps its stats, which time each answer's parts.
    engine_options = {"disable_log_stats": not args.refine_interval, **engine_options}
    # Captions are forced to --output-tokens unless --constrained; refinement probes
    # decode as in production, their span grammar ending the answer, unless
    # --refine-unconstrained (no grammar, at most REFINE_UNCONSTRAINED_MAX_TOKENS tokens).
    engine = AsyncVllmEngine(
        str(model_dir),
        max_new_tokens=REFINE_UNCONSTRAINED_MAX_TOKENS
        if args.refine_unconstrained
        else args.output_tokens,
        constrained_json=not args.refine_unconstrained,
        fixed_caption_tokens=0 if args.constrained else args.output_tokens,
        caption_tokens_spread=args.output_tokens_spread,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        renderer_workers=args.renderer_workers,
        enforce_eager=args.enforce_eager,
        max_video_tokens=largest,
        engine_options=engine_options,
        # As the server does: the refinement clips' kernels compile while it builds.
        grounding_warm_up=REFINE_SIZE if args.refine_interval > 0 else None,
    )
    build_seconds = time.perf_counter() - started
    measured: dict[str, Any] = {"renderer_workers": args.renderer_workers}
    try:
        for future in [engine.submit(clip) for clip in clips[: args.warmup]]:
            future.result()
        rendered: list[Any] = [None] * len(clips)
        if args.prerender:
            started = time.perf_counter()
            rendered = [f.result() for f in [engine.render(clip) for clip in clips]]
            measured["render_s"] = round(time.perf_counter() - started, 2)
        measured.update(
            prerender=args.prerender,
            in_flight=args.in_flight or len(clips) * args.passes,
            passes=args.passes,
        )
        source = Prerendered(engine, clips, rendered)
        for hold in args.refine_hold:
            ended(build_seconds, _time_pass(source, clips, hold, args, measured))
        if args.profile_steps:
            profiled_pass(source, clips, args.passes, args.in_flight)
            print(f"vLLM's profile of {args.profile_steps} steps: {args.profile_dir}", flush=True)
    finally:
        engine.close()


REFINE_UNCONSTRAINED_MAX_TOKENS = 40
"""A refinement probe's answer length without its grammar: the span grammar's bound."""


def profiler_options(args: argparse.Namespace) -> dict[str, Any]:
    """vLLM's torch profiler for ``--profile-steps`` engine steps into ``--profile-dir``
    (read by ``benchmarks/engine_profile.py``), without Python stacks."""
    from vllm.config import ProfilerConfig

    config = ProfilerConfig(
        profiler="torch",
        torch_profiler_dir=str(Path(args.profile_dir).resolve()),
        torch_profiler_with_stack=False,
        ignore_frontend=True,
        max_iterations=args.profile_steps,
    )
    return {"profiler_config": config}


def _time_pass(
    source: Prerendered,
    clips: Sequence[WindowClip],
    hold: float,
    args: argparse.Namespace,
    measured: dict[str, Any],
) -> Timed:
    """``--passes`` passes over ``clips`` under the production bound on windows in
    flight and its hold of ``hold`` seconds for refinements, with the probes."""
    from benchmarks.sampling import GpuSampler

    bounded = BoundedEngine(source, args.in_flight or len(clips) * args.passes, refine_hold=hold)
    with GpuSampler() as gpu, RefineProber(bounded, args) as prober:
        started = time.perf_counter()
        outputs, answered_at = stream(bounded, clips, args.passes)
        elapsed = time.perf_counter() - started
    window_seconds = clips[0].window.end_seconds - clips[0].window.start_seconds
    return (
        elapsed,
        outputs,
        {
            **measured,
            **steady_rate(answered_at, window_seconds, gpu),
            **prober.report(answered_at),
            **engine_parts("window", outputs),
            "refine_hold_s": hold,
            "refine_holds": bounded.holds,
            **gpu.report(),
        },
    )


def encoder_cache_windows(args: argparse.Namespace, pixels: int) -> int:
    """How many windows vLLM's encoder cache holds: it is sized to one step's tokens
    (``max_num_batched_tokens``; vidseek's default below a larger window's)."""
    from vidseek.indexer.captioner_vllm import DEFAULT_STEP_TOKENS
    from vidseek.indexer.model_inputs import max_video_tokens
    from vidseek.indexer.planner import max_window_frames

    window = max_video_tokens(max_window_frames(args.window_seconds, args.sample_fps), pixels)
    step = args.engine_args.get("max_num_batched_tokens") or args.max_num_batched_tokens
    step = max(step or DEFAULT_STEP_TOKENS, window)
    return -(-step // window)


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object of engine arguments")
    return value


def answer_spread(text: str) -> float:
    """``--output-tokens-spread``: a fraction F in [0, 1) (answers of --output-tokens x
    [1 - F, 1 + F])."""
    value = float(text)
    if not 0 <= value < 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _size(text: str) -> tuple[int, int]:
    height, width = (int(part) for part in text.lower().split("x"))
    if height % 32 or width % 32:
        raise argparse.ArgumentTypeError("frame size must be multiples of 32 (HxW)")
    return height, width


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run each variant, print one JSON line per variant and a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["bf16", "fp8"], choices=["bf16", "fp8"])
    parser.add_argument("--windows", type=int, default=64, help="windows in flight")
    parser.add_argument("--window-seconds", type=float, default=60.0)
    parser.add_argument("--sample-fps", type=float, default=1.0)
    parser.add_argument("--frame-size", type=_size, default=(256, 448), help="HxW, e.g. 352x640")
    parser.add_argument("--source-fps", type=float, default=30.0)
    parser.add_argument("--output-tokens", type=int, default=256)
    parser.add_argument("--constrained", action="store_true", help="grammar on, no forced length")
    parser.add_argument(
        "--output-tokens-spread",
        type=answer_spread,
        default=0.0,
        help="async: each window's forced answer length drawn from --output-tokens x "
        "[1 - F, 1 + F] (fixed per window), as a real model's answers differ in length",
    )
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--max-model-len", type=int, default=16384)
    parser.add_argument("--max-num-batched-tokens", type=int, default=0)
    parser.add_argument("--max-num-seqs", type=int, default=0)
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument(
        "--engine",
        choices=["llm", "async"],
        default="llm",
        help="llm: one LLM.generate call (windows prepared on one thread); async: the "
        "production AsyncVllmEngine (windows prepared on --renderer-workers threads)",
    )
    parser.add_argument("--renderer-workers", type=int, default=8, help="async: threads")
    parser.add_argument(
        "--prerender",
        action="store_true",
        help="async: render every window first, then time the engine alone (holds every "
        "window's float32 patches in memory: about 83 MB a 60-frame 448x256 window)",
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=0,
        help="async: keep this many windows in the engine, the next sent as one is "
        "answered (0: all at once)",
    )
    parser.add_argument(
        "--passes", type=int, default=1, help="async: times each window is sent (module doc)"
    )
    parser.add_argument(
        "--refine-interval",
        type=float,
        default=0.0,
        help="async: seconds between refinement probes sent ahead of the windows (0: none)",
    )
    parser.add_argument(
        "--refine-seconds", type=float, default=16.0, help="a refinement clip's length"
    )
    parser.add_argument(
        "--refine-hold",
        type=float,
        nargs="+",
        default=[0.0],
        help="async: VIDSEEK_REFINE_HOLD_SECONDS (new windows held back while a refinement "
        "runs); several values: a timed run each, one after another on the same engine",
    )
    parser.add_argument(
        "--refine-unconstrained",
        action="store_true",
        help=f"async: refinement probes decode without the span grammar, "
        f"{REFINE_UNCONSTRAINED_MAX_TOKENS} tokens at most (what the grammar costs a refinement)",
    )
    parser.add_argument(
        "--profile-steps",
        type=int,
        default=0,
        help="async: after the timed runs, one more pass with vLLM's torch profiler on for "
        "this many engine steps in its steady part (summary: benchmarks/engine_profile.py)",
    )
    parser.add_argument("--profile-dir", default="", help="the profiler's traces (work dir)")
    parser.add_argument(
        "--engine-args",
        type=json_object,
        default={},
        help='more vLLM engine arguments as JSON, e.g. \'{"kv_cache_dtype": "fp8"}\'',
    )
    parser.add_argument("--warmup", type=int, default=2, help="windows run once before timing")
    parser.add_argument("--work-dir", default="", help="model directories go here (temp dir)")
    parser.add_argument("--json-out", default="", help="append one JSON line per variant here")
    args = parser.parse_args(argv)
    streaming = (
        args.in_flight
        or args.passes != 1
        or args.refine_interval
        or any(args.refine_hold)
        or args.profile_steps
    )
    if args.engine != "async" and streaming:
        parser.error("--in-flight, --passes, --refine-*, --profile-* options need --engine async")
    if args.profile_steps < 0:
        parser.error("--profile-steps must be >= 0")
    if args.output_tokens_spread and (args.engine != "async" or args.constrained):
        parser.error("--output-tokens-spread needs --engine async and forced answers")
    if args.refine_unconstrained and args.constrained:
        # Windows under their grammar share the engine's grammar switch with the probes.
        parser.error("--refine-unconstrained cannot be combined with --constrained")
    try:
        align_rows()  # its setting read now, not after the runs
    except ValueError as exc:
        parser.error(str(exc))
    values = (args.in_flight, args.refine_interval, *args.refine_hold)
    if not all(0 <= v < math.inf for v in values) or args.passes < 1:  # NaN fails too
        parser.error("--in-flight, --refine-interval and --refine-hold must be >= 0, --passes >= 1")
    height, width = args.frame_size
    if args.passes > 1 and args.windows <= 2 * encoder_cache_windows(args, height * width):
        parser.error(
            f"--passes {args.passes} sends each of --windows {args.windows} again, and "
            "vLLM's encoder cache (one step's tokens) would still hold some of them: "
            f"give more than {2 * encoder_cache_windows(args, height * width)} windows"
        )

    if not args.work_dir:
        args.work_dir = tempfile.mkdtemp(prefix="vidseek-bench-")
    args.profile_dir = args.profile_dir or str(Path(args.work_dir) / "profile")
    clips = synthetic_clips(
        args.windows, args.window_seconds, args.sample_fps, height, width, args.source_fps
    )

    def emit(result: dict[str, Any]) -> None:
        print(json.dumps(result), flush=True)
        if args.json_out:
            with open(args.json_out, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(result) + "\n")

    rows = [row for variant in args.variants for row in run_variant(variant, clips, args, emit)]

    print(
        f"\n{'variant':8} {'video-h/GPU-h':>13} {'prompt tok/s':>12} {'out tok/s':>9} "
        f"{'s/pass':>7} {'tok/window':>10}"
    )
    for row in rows:
        print(
            f"{row['variant']:8} {row['video_hours_per_gpu_hour']:>13} "
            f"{row['prompt_tokens_per_s']:>12} {row['output_tokens_per_s']:>9} "
            f"{row['elapsed_s']:>7} {row['prompt_tokens_per_window']:>10}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
