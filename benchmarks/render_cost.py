"""What rendering a window costs the engine's front end, and whether threads share it.

Before a window reaches the GPU, the engine's front end turns its frames into vision
patches and its chat text into token ids: Qwen3-VL's Hugging Face processor, which
vLLM's renderer calls (``AsyncVllmEngine`` runs it on ``renderer_workers`` threads of
the server's process; ``vllm serve --api-server-count N`` on N processes). This
times that call on the CPU, on synthetic 60 s windows at 1 fps (``--frames`` frames of
``--frame-size``, absolute frame indices of a 30 fps source), with the project's
prompt and processor arguments, and the real processor code and configuration of
the tiny test model (``tests/support/tiny_qwen.py``; the processor does not depend on
the weights):

- ``serial``: one window after another, in one thread: CPU seconds per window;
- ``threads``: ``N`` threads of one process, as vLLM's renderer threads;
- ``processes``: ``N`` processes, as several front-end processes.

Each line also gives the size of the video's patches the processor makes for one
window (``patches_mb``), which the front end hands to the engine.

    python benchmarks/render_cost.py [--windows 24] [--workers 1 2 4]

Prints one JSON line per mode and worker count: windows rendered per second.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.caption_throughput import _size  # noqa: E402

_processor: Any = None  # each process's processor (loaded once)


def load(directory: str) -> None:
    """Load the processor of ``directory`` into this process."""
    global _processor
    from transformers import AutoProcessor

    _processor = AutoProcessor.from_pretrained(directory)


def window(seed: int, frames: int, size: tuple[int, int]) -> Any:
    """A 60 s window of ``frames`` random frames at 1 fps from second ``60 * seed``."""
    import numpy as np

    from vidseek.indexer.types import Window, WindowClip

    step = 30  # a 30 fps source sampled at 1 fps
    start = 60 * seed
    indices = [(start + k) * step for k in range(frames)]
    pixels = np.random.default_rng(seed).integers(0, 256, (frames, *size, 3), dtype=np.uint8)
    w = Window(seed, float(start), float(start + frames), indices)
    return WindowClip(w, pixels, fps=30.0, total_frames=(start + frames + 60) * step)


def render(seed: int, frames: int, size: tuple[int, int]) -> int:
    """Render one window as the engine does; its prompt length in tokens."""
    return int(rendered(seed, frames, size)["input_ids"].shape[1])


def rendered(seed: int, frames: int, size: tuple[int, int]) -> Any:
    """The processor's output for one window (token ids, the video's patches)."""
    import torch

    from vidseek.indexer import model_inputs

    clip = window(seed, frames, size)
    inputs = _processor(
        text=[model_inputs.processor_prompt_text(_processor.tokenizer, clip.window)],
        videos=[torch.from_numpy(clip.frames).permute(0, 3, 1, 2)],
        video_metadata=[model_inputs.video_metadata(clip)],
        return_tensors="pt",
        **model_inputs.processor_kwargs(),
    )
    return inputs


def timed(pool: Executor, windows: int, frames: int, size: tuple[int, int]) -> float:
    """Seconds for ``pool`` to render ``windows`` windows (after one warm-up each)."""
    started = time.perf_counter()
    tokens = list(pool.map(render, range(windows), [frames] * windows, [size] * windows))
    elapsed = time.perf_counter() - started
    assert min(tokens) > frames, tokens  # every window rendered with its video
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--frame-size", type=_size, default=(256, 448), help="HxW")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args(argv)
    from tests.support.tiny_qwen import build_tiny_qwen3_vl

    directory = str(build_tiny_qwen3_vl(Path(tempfile.mkdtemp(prefix="render-cost-"))))
    load(directory)
    first = rendered(0, args.frames, args.frame_size)  # warm-up; what a window becomes
    patches = first["pixel_values_videos"]
    base = {
        "frames": args.frames,
        "frame_size": list(args.frame_size),
        "prompt_tokens": int(first["input_ids"].shape[1]),
        # What the front end hands to the engine for each window, as the processor makes it.
        "patches_shape": list(patches.shape),
        "patches_mb": round(patches.element_size() * patches.numel() / 1e6, 1),
        "cpus": len(os.sched_getaffinity(0)),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }

    def emit(mode: str, workers: int, seconds: float, **extra: Any) -> None:
        rate = round(args.windows / seconds, 2)
        row = {**base, "mode": mode, "workers": workers, "windows_per_s": rate, **extra}
        print(json.dumps(row), flush=True)

    started, cpu = time.perf_counter(), time.process_time()
    for seed in range(args.windows):
        render(seed, args.frames, args.frame_size)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    emit("serial", 1, wall, cpu_s_per_window=round(cpu / args.windows, 3))
    spawn = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    for n in args.workers:
        with ThreadPoolExecutor(n) as threads:
            emit("threads", n, timed(threads, *_a(args)))
        with ProcessPoolExecutor(
            n, mp_context=spawn, initializer=load, initargs=(directory,)
        ) as processes:
            list(processes.map(render, range(n), [args.frames] * n, [args.frame_size] * n))
            emit("processes", n, timed(processes, *_a(args)))
    return 0


def _a(args: argparse.Namespace) -> tuple[int, int, tuple[int, int]]:
    return args.windows, args.frames, args.frame_size


if __name__ == "__main__":
    raise SystemExit(main())
