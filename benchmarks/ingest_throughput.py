"""End-to-end ingestion throughput: video files -> committed events, through the real server.

One command runs, per model variant (``bf16``, ``fp8``: random weights of the real
Qwen3-VL-4B shape, ``load_format="dummy"``, see ``caption_throughput.py``):

1. **The naive baseline**: bare ``vllm.LLM.generate`` (the offline engine, the
   project's ``VllmCaptioner``) on ``--baseline-windows`` windows decoded beforehand
   from the first videos, all in one call.
2. **End to end**: ``create_server`` (the real gRPC server, job runner, decode pool,
   SQLite and FAISS), the SDK's ``Client.ingest`` for every video at once, waiting for
   every job through ``wait_for_job``. The captioning engine is the production
   ``AsyncVllmEngine``, built once per variant and used for every window setting
   (``--window-seconds``, e.g. 60 and 600: what the 256K context buys).
   While it runs, search refinement (``Refiner.refine``, the ``refine=true`` path
   minus the search) asks about a random 5 s moment of an ingesting video every
   ``--refine-interval`` seconds; its latency is reported.

Caption answers are forced to ``--output-tokens`` tokens (``ignore_eos``, no grammar;
random weights never stop); refinement answers decode as in production, under the span
grammar that ends them within 40 tokens. With random weights no window parses into
events: embedding and commit cost only the window rows here. Reported per run:
video-hours per GPU-hour, GPU busy fraction (NVML utilisation, sampled 10 times a
second over the run), the same two over the steady state, peak GPU and host memory,
where the time goes (decode in the pool's processes, by the backend that decoded, waits
of the job threads, vLLM preprocessing and generation summed over windows), the host's
CPU-seconds by part (``cpu_seconds``, ``cpu_cores_busy``: decoder processes, vLLM's
engine core, this process, the rest such as vLLM's API servers), and refinement latency
p50/p99, whole and the engine's share (a clip's submission to its answer).
A decode-only pass times the decode pool per resolution and size.

On the lent GPU machine (vLLM 0.26; see the README's GPU section)::

    VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_USE_DEEP_GEMM=0 python benchmarks/ingest_throughput.py \\
        --videos 360p:3600 360p:3600 360p:3600 1080p:3600 --variants fp8 \\
        --json-out benchmarks/results/ingest_throughput_h200.jsonl

``--decode-lookahead 0 2`` runs end to end once per value of ``VIDSEEK_DECODE_LOOKAHEAD``
on the same engine (0: oldest first, the default; 2: a pool mixing NVDEC and PyAV sends
the largest windows to NVDEC), as several ``--decode-backend`` values do.

``--engine serve`` captions through ``vllm serve`` instead (``benchmarks/vllm_serve.py``:
the production OpenAI captioner in front of ``--serve-replicas`` servers, each over
``--data-parallel`` GPUs with ``--api-servers`` front-end processes), the in-process
engine's arguments as its flags. ``--engine tiny`` runs the same flow on the CPU with
the tiny random Qwen3-VL and the transformers backend (a check of the plumbing, not a
measurement). vLLM spawns its engine process, which re-imports this module: hence the
``__main__`` guard.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib.metadata
import itertools
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmarks.* and tests.support, when run as a script

from benchmarks.caption_throughput import _size, answer_spread, json_object  # noqa: E402
from benchmarks.ingest_engines import (  # noqa: E402
    KeepOpen,
    benchmark_embedder,
    build_engine,
    model_dir,
    vllm_options,
)
from benchmarks.make_videos import make_videos, with_copies  # noqa: E402
from benchmarks.mps import mps_daemon  # noqa: E402
from benchmarks.sampling import (  # noqa: E402
    GpuSampler,
    HostCpu,
    HostMemory,
    percentile,
    steady_span,
)
from vidseek.indexer.types import WindowClip  # noqa: E402
from vidseek.indexer.vllm_plugin import gemm_settings  # noqa: E402


def decode_windows(
    video: Path, count: int, window_seconds: float, args: argparse.Namespace
) -> list[WindowClip]:
    """The first ``count`` windows of ``video``, decoded as ingestion decodes them."""
    from vidseek.indexer.decode_pool import DecodePool
    from vidseek.indexer.pipeline import _decode_window
    from vidseek.indexer.planner import plan_windows
    from vidseek.indexer.video import probe

    pool = DecodePool("pyav", args.decode_processes)
    try:
        info = pool.submit(lambda w: probe(str(video), timeout=120, worker=w)).result()
        plan = plan_windows(info, plan_config(window_seconds, args))
        futures = [
            pool.submit(lambda w, win=win: _decode_window(w, str(video), 600, info, plan, win))
            for win in plan.windows[:count]
        ]
        clips = [clip for clip, _ in (f.result() for f in futures) if clip is not None]
    finally:
        pool.close()
    return clips


def plan_config(window_seconds: float, args: argparse.Namespace) -> Any:
    from vidseek.indexer.planner import PlanConfig

    height, width = args.frame_size
    return PlanConfig(
        sample_fps=args.sample_fps,
        max_frame_pixels=height * width,
        window_seconds=window_seconds,
        max_output_tokens=args.output_tokens,
    )


def run_baseline(directory: Path, clips: list[WindowClip], args: argparse.Namespace) -> dict:
    """Bare ``LLM.generate`` on pre-decoded windows, all in one call."""
    from vidseek.indexer.captioner_vllm import VllmCaptioner

    started = time.perf_counter()
    captioner = VllmCaptioner(str(directory), **vllm_options(args))
    build_s = time.perf_counter() - started
    try:
        captioner.describe(clips[:2])  # warm-up
        with GpuSampler() as gpu:
            started = time.perf_counter()
            outputs = captioner.describe(clips)
            elapsed = time.perf_counter() - started
    finally:
        captioner.close()
    video_s = sum(c.window.end_seconds - c.window.start_seconds for c in clips)
    return {
        "run": "baseline LLM.generate",
        "windows": len(clips),
        "engine_build_s": round(build_s, 1),
        "elapsed_s": round(elapsed, 2),
        "video_hours_per_gpu_hour": round(video_s / elapsed, 1),
        "prompt_tokens_per_window": round(sum(o.prompt_tokens for o in outputs) / len(clips)),
        **gpu.report(),
    }


def run_end_to_end(
    engine: Any,
    embedder: Any,
    videos: list[Path],
    window_seconds: float,
    decode_backend: str,
    args: argparse.Namespace,
    work: Path,
    emit: Any = print,
    lookahead: int = 0,
) -> dict[str, Any]:
    """Ingest every video at once through the server, decoding with ``decode_backend``;
    refinement probes meanwhile."""
    from vidseek.client import Client
    from vidseek.server.app import create_server
    from vidseek.server.search import MomentResult
    from vidseek.server.settings import load_settings

    height, width = args.frame_size
    data_dir = Path(tempfile.mkdtemp(prefix=f"ingest-{int(window_seconds)}s-", dir=work))
    settings = load_settings(
        {
            "data_dir": str(data_dir),
            "host": "127.0.0.1",
            "port": 0,
            "sample_fps": args.sample_fps,
            "max_frame_pixels": height * width,
            "window_seconds": window_seconds,
            "max_new_tokens": args.output_tokens,
            "max_in_flight": args.max_in_flight,
            "decode_processes": args.decode_processes,
            "decode_backend": decode_backend,
            "decode_nice": args.decode_nice,
            "decode_threads": args.decode_threads,
            "decode_lookahead": lookahead,
            "ingest_workers": args.ingest_workers or len(videos),
            "refine_timeout": args.refine_timeout,
            "refine_hold_seconds": args.refine_hold,
            "grpc_workers": 16,
        },
        environ={},
    )
    gpus = max(1, args.data_parallel) * (args.serve_replicas if args.engine == "serve" else 1)
    kept = KeepOpen(engine)
    server, port, app = create_server(settings, embedder=embedder, captioner_factory=lambda: kept)
    before = engine.stats.snapshot()
    latencies: list[float] = []
    late = 0
    done = threading.Event()
    client = Client(f"127.0.0.1:{port}", timeout=60)

    def probe_refinement(job_ids: list[str]) -> None:
        nonlocal late
        rng = random.Random(0)
        while not done.wait(args.refine_interval):
            ready = [j for j in (client.get_job(i) for i in job_ids) if j.video_id]
            if not ready:
                continue
            job = rng.choice(ready)
            video = app.store.get_video(job.video_id)
            start = rng.uniform(0, max(0.0, video.duration - 10))
            moment = MomentResult(
                video_id=video.id,
                start_seconds=start,
                end_seconds=start + 5,
                description="a box moves across the screen",
                score=0.5,
                event_ids=(0,),
            )
            assert app.refiner is not None
            started = time.monotonic()
            app.refiner.refine(moment.description, [moment], started + args.refine_timeout)
            elapsed = time.monotonic() - started
            latencies.append(elapsed)
            late += elapsed >= args.refine_timeout * 0.99

    curve: list[tuple[float, int]] = []  # (perf_counter, windows committed), every second

    def report_progress(started: float, gpu: GpuSampler, emit: Any) -> None:
        """Records the windows done each second; a line every ``--progress-interval`` s.

        The lines let a run cut short still tell its rate. If no window completes for
        ``--stall-dump`` s, every thread's stack goes to stderr once (where a stalled
        engine waits shows there).
        """
        completed, changed, dumped = -1, time.monotonic(), False
        emitted = time.perf_counter()
        while not done.wait(1.0):
            jobs = app.store.list_jobs(0, 10_000)
            curve.append((time.perf_counter(), sum(j.windows_done for j in jobs)))
            if time.perf_counter() - emitted < args.progress_interval:
                continue
            emitted = time.perf_counter()
            now_completed = engine.stats.snapshot()["completed"]
            if now_completed != completed:
                completed, changed = now_completed, time.monotonic()
            elif args.stall_dump and not dumped and time.monotonic() - changed > args.stall_dump:
                print(f"no window completed for {args.stall_dump:g} s; stacks:", file=sys.stderr)
                faulthandler.dump_traceback(sys.stderr, all_threads=True)
                dumped = True
            emit(
                {
                    "run": "end to end (progress)",
                    "window_seconds": window_seconds,
                    "decode_backend": decode_backend,
                    "decode_lookahead": lookahead,
                    "elapsed_s": round(time.perf_counter() - started, 1),
                    "windows_done": curve[-1][1],
                    "windows_total": sum(j.windows_total for j in jobs),
                    "stage_seconds": app.jobs.timings.snapshot(),
                    "decoders": app.jobs.timings.decoders(),
                    "engine": engine.stats.snapshot(),
                    "refine_probes": len(latencies),
                    "refine_p50_s": _round(percentile(latencies, 50)),
                    "refine_engine_p50_s": _round(percentile(kept.refine_engine_s, 50)),
                    **gpu.report(),
                }
            )

    try:
        with GpuSampler() as gpu, HostMemory() as host, HostCpu() as cpu:
            started = time.perf_counter()
            progress = threading.Thread(
                target=report_progress, args=(started, gpu, emit), daemon=True
            )
            progress.start()
            jobs = [client.ingest(str(v)) for v in videos]
            prober = threading.Thread(target=probe_refinement, args=([j.job_id for j in jobs],))
            if args.refine_interval > 0:
                prober.start()
            finished = [client.wait_for_job(j.job_id, timeout=args.timeout) for j in jobs]
            elapsed = time.perf_counter() - started
            done.set()
            if prober.is_alive():
                prober.join()
            holds = getattr(app.jobs.loaded_engine(), "holds", 0)
    finally:
        done.set()
        client.close()
        server.stop(grace=None)
        app.shutdown()
    after = engine.stats.snapshot()
    video_s = sum(_durations.get(f.uri, 0.0) for f in finished)
    stats = {k: round(after[k] - before.get(k, 0), 3) for k in after if k != "max_in_flight"}
    return {
        "run": "end to end",
        "window_seconds": window_seconds,
        "decode_backend": decode_backend,
        "decode_lookahead": lookahead,
        "videos": [v.name for v in videos],
        "video_hours": round(video_s / 3600, 2),
        "elapsed_s": round(elapsed, 1),
        "video_hours_per_gpu_hour": round(video_s / elapsed / gpus, 1),
        "jobs": [f.state.name for f in finished],
        "windows": sum(f.windows_done for f in finished),
        "stage_seconds": app.jobs.timings.snapshot(),
        "decoders": app.jobs.timings.decoders(),
        "engine": stats,
        "engine_max_in_flight": after["max_in_flight"],
        "refine_probes": len(latencies),
        "refine_p50_s": _round(percentile(latencies, 50)),
        "refine_p99_s": _round(percentile(latencies, 99)),
        "refine_late": late,
        "refine_engine_p50_s": _round(percentile(kept.refine_engine_s, 50)),
        "refine_engine_p99_s": _round(percentile(kept.refine_engine_s, 99)),
        "refine_latencies_s": [round(x, 2) for x in latencies],
        "refine_hold_s": args.refine_hold,
        "refine_holds": holds,
        "host_peak_memory_gib": round(host.peak_gib, 1),
        **cpu.report(),
        **steady_state(curve, window_seconds, gpus, gpu),
        **gpu.report(),
    }


def steady_state(
    curve: list[tuple[float, int]], window_seconds: float, gpus: int, gpu: GpuSampler
) -> dict[str, Any]:
    """Rate and GPU busy fraction between 10% and 90% of the windows committed.

    Start-up (the first windows decoding) and the tail (the last windows of each
    video, when the engine empties) are left out. Windows count as ``window_seconds``
    of video each (only a video's last window is shorter).
    """
    span = steady_span(curve)
    if span is None:
        return {}
    start, end = span
    hours = (end[1] - start[1]) * window_seconds / 3600
    return {
        "steady_s": round(end[0] - start[0], 1),
        "steady_video_hours_per_gpu_hour": round(hours / ((end[0] - start[0]) / 3600) / gpus, 1),
        "steady_gpu_busy": gpu.busy_between(start[0], end[0]),
    }


# Each video's length in seconds, by resolved path (what a job's ``uri`` holds).
_durations: dict[str, float] = {}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def decode_only(videos: list[Path], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The decode pool alone: seconds per hour of video, per resolution and pool size."""
    from vidseek.indexer.decode_pool import DecodePool
    from vidseek.indexer.pipeline import _decode_window
    from vidseek.indexer.planner import plan_windows
    from vidseek.indexer.video import probe

    results = []
    seen: set[str] = set()
    for video in videos:
        resolution = video.name.split("_")[0]
        if resolution in seen:
            continue
        seen.add(resolution)
        for size in args.decode_sizes:
            pool = DecodePool("pyav", size)
            try:
                info = pool.submit(lambda w, v=video: probe(str(v), timeout=120, worker=w)).result()
                plan = plan_windows(info, plan_config(60.0, args))
                windows = plan.windows[: args.decode_windows]
                started = time.perf_counter()
                read = partial(_decode_window, path=str(video), timeout=600, info=info, plan=plan)
                futures = [pool.submit(partial(read, w=win)) for win in windows]
                for f in futures:
                    f.result()
                elapsed = time.perf_counter() - started
            finally:
                pool.close()
            seconds = sum(w.end_seconds - w.start_seconds for w in windows)
            results.append(
                {
                    "run": "decode pool",
                    "backend": "pyav",
                    "video": resolution,
                    "processes": size,
                    "video_seconds": seconds,
                    "wall_s_per_video_hour": round(elapsed / seconds * 3600, 1),
                    "video_hours_per_hour": round(seconds / elapsed, 1),
                }
            )
    return results


def versions() -> dict[str, Any]:
    info: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
            info["gpus_visible"] = torch.cuda.device_count()
    except ImportError:
        pass
    for name in ("vllm", "transformers", "av", "PyNvVideoCodec"):
        with contextlib.suppress(Exception):  # not installed: not reported
            info[name] = importlib.metadata.version(name)
    info["cpus"] = len(os.sched_getaffinity(0))
    info.update(gemm_settings())
    return info


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["vllm", "serve", "tiny"], default="vllm")
    parser.add_argument("--variants", nargs="+", default=["fp8"], choices=["bf16", "fp8"])
    parser.add_argument("--videos", nargs="+", default=["360p:3600"] * 3 + ["1080p:3600"])
    parser.add_argument("--video-dir", type=Path, default=Path("/tmp/vidseek-bench-videos"))
    parser.add_argument("--make-processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--window-seconds", type=float, nargs="+", default=[60.0, 600.0])
    parser.add_argument("--sample-fps", type=float, default=1.0)
    parser.add_argument("--frame-size", type=_size, default=(256, 448), help="HxW")
    parser.add_argument("--output-tokens", type=int, default=256)
    parser.add_argument(
        "--output-tokens-spread",
        type=answer_spread,
        default=0.0,
        help="vllm/serve: each window's forced answer length drawn from --output-tokens x "
        "[1 - F, 1 + F] (fixed per window), as a real model's answers differ in length",
    )
    parser.add_argument("--baseline-windows", type=int, default=64, help="0: no baseline")
    parser.add_argument("--copies", type=int, default=1, help="remuxed copies of each video")
    parser.add_argument("--ingest-workers", type=int, default=0, help="0: one per video")
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--decode-processes", type=int, default=0, help="0: 3/4 of the cores")
    parser.add_argument(
        "--decode-backend",
        nargs="+",
        default=["pyav"],
        help="end to end: pyav, nvdec, nvdec+pyav, ...; several: one end-to-end run each, "
        "on the same engine",
    )
    parser.add_argument("--decode-nice", type=int, default=5, help="VIDSEEK_DECODE_NICE")
    parser.add_argument(
        "--decode-lookahead",
        type=int,
        nargs="+",
        default=[0],
        help="VIDSEEK_DECODE_LOOKAHEAD (0: oldest first); several: a run each",
    )
    parser.add_argument(
        "--decode-threads", type=int, default=1, help="VIDSEEK_DECODE_THREADS (0: FFmpeg's)"
    )
    parser.add_argument("--decode-sizes", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--decode-windows", type=int, default=10)
    parser.add_argument("--renderer-workers", type=int, default=8)
    parser.add_argument("--data-parallel", type=int, default=1, help="GPUs (vLLM data parallel)")
    parser.add_argument("--api-servers", type=int, default=1, help="serve: front-end processes")
    parser.add_argument("--serve-replicas", type=int, default=1, help="serve: servers, own GPUs")
    parser.add_argument(
        "--serve-port", type=int, default=8100, help="serve: the first server's port (then +1...)"
    )
    parser.add_argument("--refine-interval", type=float, default=1.0, help="0: no probes")
    parser.add_argument("--refine-timeout", type=float, default=30.0)
    parser.add_argument(
        "--refine-hold",
        type=float,
        default=0.0,
        help="VIDSEEK_REFINE_HOLD_SECONDS: hold new windows back while a refinement runs",
    )
    parser.add_argument("--progress-interval", type=float, default=30.0)
    parser.add_argument(
        "--stall-dump", type=float, default=120.0, help="seconds without a window: dump stacks"
    )
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--max-model-len", type=int, default=65536)
    parser.add_argument("--max-num-batched-tokens", type=int, default=0)
    parser.add_argument("--max-num-seqs", type=int, default=0)
    parser.add_argument(
        "--engine-args", type=json_object, default={}, help="more engine arguments (JSON)"
    )
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--embedder-dir", default="", help="MiniLM config+tokenizer (no weights)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="per job, seconds")
    parser.add_argument("--work-dir", default="", help="model and data directories (temp)")
    parser.add_argument("--json-out", default="", help="append one JSON line per run here")
    parser.add_argument(
        "--mps", action="store_true", help="run under NVIDIA MPS (benchmarks/mps.py)"
    )
    args = parser.parse_args(argv)
    if args.copies < 1:
        parser.error(f"--copies must be at least 1, got {args.copies}")
    if min(args.decode_lookahead) < 0:
        parser.error(f"--decode-lookahead must be >= 0, got {min(args.decode_lookahead)}")
    if args.output_tokens_spread and args.engine == "tiny":
        parser.error("--output-tokens-spread needs --engine vllm or serve")

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="vidseek-ingest-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    with mps_daemon(work / "mps") if args.mps else contextlib.nullcontext():
        return run(args, work)  # every CUDA process starts inside: MPS clients


def run(args: argparse.Namespace, work: Path) -> int:
    """The benchmark's runs, one JSON line each."""
    header = {**versions(), **{k: str(v) for k, v in vars(args).items()}}

    def emit(result: dict[str, Any]) -> None:
        line = json.dumps({**result, "date": header["date"], "device": header.get("device")})
        print(line, flush=True)
        if args.json_out:
            with open(args.json_out, "a") as out:
                out.write(line + "\n")

    emit({"run": "setup", **header})  # versions, machine and arguments, with the results

    started = time.perf_counter()
    videos = with_copies(make_videos(args.video_dir, args.videos, args.make_processes), args.copies)
    print(f"videos ready in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    from vidseek.indexer.video import DecodeWorker, probe

    with DecodeWorker("pyav") as worker:
        for v in videos:
            _durations[str(v.resolve())] = probe(str(v), timeout=300, worker=worker).duration
    for result in decode_only(videos, args) if args.decode_sizes else []:
        emit(result)
    embedder = benchmark_embedder(args)
    for variant in args.variants:
        directory = model_dir(work, variant, args)
        if args.baseline_windows and args.engine != "tiny":
            clips: list[WindowClip] = []
            for video in videos[: len(videos) // args.copies]:  # distinct videos, no copies
                more = args.baseline_windows - len(clips)
                if more > 0:
                    clips += decode_windows(video, more, args.window_seconds[0], args)
            emit({"variant": variant, **run_baseline(directory, clips, args)})
            del clips
        build_started = time.perf_counter()
        engine = build_engine(directory, args)
        build_s = round(time.perf_counter() - build_started, 1)
        try:
            for window_seconds in args.window_seconds:
                for backend, ahead in itertools.product(args.decode_backend, args.decode_lookahead):
                    result = run_end_to_end(
                        engine, embedder, videos, window_seconds, backend, args, work, emit, ahead
                    )
                    emit({"variant": variant, "engine_build_s": build_s, **result})
        finally:
            engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
