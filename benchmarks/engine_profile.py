"""Where the captioning engine's GPU time goes: a summary of vLLM's torch profile.

``caption_throughput.py --engine async --profile-steps N`` profiles N engine steps in
the steady part of a pass (vLLM's ``profiler_config``, with its scopes marked:
``VLLM_CUSTOM_SCOPES_FOR_PROFILING=1``). This reads the trace vLLM's engine core
wrote and splits the GPU's time over those steps:

- by the vLLM scope whose CPU code launched each kernel: ``preprocess`` (the vision
  encoder, which vLLM runs while it prepares a step's inputs, and the input
  preparation), ``forward`` (the language model), ``sample``, and ``other``;
- by kind of kernel: attention, matrix multiplication (GEMM), the rest;
- and the GPU's idle time between kernels over the profiled span: what the engine's
  CPU side (scheduling, input preparation) costs a GPU that waits for it.

Kernels are tied to their launch through the trace's correlation ids (kernels of a CUDA
graph share their graph launch's). A step is one ``execute_context_*`` annotation
(vLLM's name for a step, with its prompt and decoding tokens).

    python benchmarks/engine_profile.py PROFILE_DIR_OR_TRACE [--json-out FILE]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SCOPES = {
    "gpu_model_runner: preprocess": "preprocess",
    "gpu_model_runner: forward": "forward",
    "gpu_model_runner: sample": "sample",
}
STEP = re.compile(r"^execute_context_(\d+)\((\d+)\)_generation_(\d+)\((\d+)\)")
KINDS = (
    ("attention", re.compile(r"flash|fmha|attn|attention", re.I)),
    ("gemm", re.compile(r"gemm|cutlass|nvjet|matmul|scaled_mm|w8a8|xmma|cublas|gemv", re.I)),
)
GPU_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}
LAUNCH_CATEGORIES = {"cuda_runtime", "cuda_driver"}


def kernel_kind(name: str) -> str:
    """``attention``, ``gemm`` or ``other``, from a kernel's name."""
    for kind, pattern in KINDS:
        if pattern.search(name):
            return kind
    return "other"


def trace_files(path: Path) -> list[Path]:
    """``path`` itself, or the traces in the folder (vLLM's ``*.pt.trace.json[.gz]``)."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.json*") if ".pt.trace.json" in p.name)
    if not files:
        raise SystemExit(f"{path}: no torch profiler trace (*.pt.trace.json[.gz]) in it")
    return files


def load_events(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        trace = json.load(handle)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def _scopes_of_launches(events: Sequence[dict[str, Any]]) -> dict[int, str]:
    """For each launch's correlation id, the innermost vLLM scope its CPU code ran in
    (``other`` outside them): annotations of a thread nest, as its calls do."""
    per_thread: dict[Any, list[tuple[float, int, dict[str, Any]]]] = defaultdict(list)
    for event in events:
        category = event.get("cat")
        if category == "user_annotation":
            per_thread[event.get("pid"), event.get("tid")].append((event["ts"], 0, event))
        elif category in LAUNCH_CATEGORIES and "correlation" in event.get("args", {}):
            per_thread[event.get("pid"), event.get("tid")].append((event["ts"], 1, event))
    scoped: dict[int, str] = {}
    for timeline in per_thread.values():
        # At one time, a range opens before a launch in it, and an outer range first.
        timeline.sort(key=lambda item: (item[0], item[1], -item[2]["dur"]))
        open_ranges: list[dict[str, Any]] = []
        for ts, kind, event in timeline:
            while open_ranges and open_ranges[-1]["ts"] + open_ranges[-1]["dur"] <= ts:
                open_ranges.pop()
            if kind == 0:
                open_ranges.append(event)
            else:
                scoped[event["args"]["correlation"]] = next(
                    (SCOPES[r["name"]] for r in reversed(open_ranges) if r["name"] in SCOPES),
                    "other",
                )
    return scoped


def busy_time(intervals: Iterable[tuple[float, float]]) -> float:
    """The length of the union of ``(start, end)`` intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def summarize(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The split of the GPU's time in one trace (module doc); times in milliseconds."""
    scoped = _scopes_of_launches(events)
    annotations = [e for e in events if e.get("cat") == "user_annotation"]
    marked = sorted(
        ((e["ts"], m) for e in annotations if (m := STEP.match(e["name"]))), key=lambda x: x[0]
    )
    counts = [tuple(int(x) for x in m.groups()) for _, m in marked]
    gpu = [e for e in events if e.get("cat") in GPU_CATEGORIES]
    if not counts or not gpu:
        raise SystemExit("the trace has no vLLM step (execute_context_*) or no GPU work")
    steps = len(counts)
    by_scope: dict[str, float] = defaultdict(float)
    by_kind: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_name: dict[tuple[str, str], float] = defaultdict(float)
    for event in gpu:
        scope = scoped.get(event.get("args", {}).get("correlation"), "unknown")
        ms = event["dur"] / 1000
        by_scope[scope] += ms
        kind = kernel_kind(event["name"]) if event["cat"] == "kernel" else "memory"
        by_kind[scope][kind] += ms
        by_name[scope, event["name"]] += ms
    start = min(e["ts"] for e in gpu)
    span = (max(e["ts"] + e["dur"] for e in gpu) - start) / 1000
    busy = busy_time((e["ts"], e["ts"] + e["dur"]) for e in gpu) / 1000
    kernel_ms = sum(by_scope.values())
    return {
        "steps": steps,
        "span_ms": round(span, 2),
        "gpu_busy_ms": round(busy, 2),
        "gpu_idle_share": round(1 - busy / span, 3) if span else None,
        "step_ms_mean": round(span / steps, 2),
        "prompt_tokens_per_step_p50": _median(c[1] for c in counts),
        "prefilling_requests_per_step_p50": _median(c[0] for c in counts),
        "decoding_requests_per_step_p50": _median(c[2] for c in counts),
        "kernel_ms": round(kernel_ms, 1),
        "scope_share": {k: round(v / kernel_ms, 3) for k, v in sorted(by_scope.items())},
        "scope_ms_per_step": {k: round(v / steps, 2) for k, v in sorted(by_scope.items())},
        "kind_ms_per_step": {
            scope: {k: round(v / steps, 2) for k, v in sorted(kinds.items())}
            for scope, kinds in sorted(by_kind.items())
        },
        # Each step: requests prefilling, their prompt tokens, requests decoding, and the
        # milliseconds from its start to the next step's (on the CPU: one step's period).
        "step_timeline": [
            [c[0], c[1], c[2], round((after - ts) / 1000, 2)]
            for c, (ts, _), (after, _) in zip(counts, marked, marked[1:], strict=False)
        ],
        "top_kernels": [
            {"scope": scope, "kernel": name[:120], "ms_per_step": round(ms / steps, 3)}
            for (scope, name), ms in sorted(by_name.items(), key=lambda item: -item[1])[:15]
        ],
    }


def _median(values: Iterable[int]) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="vLLM's torch_profiler_dir, or one trace file")
    parser.add_argument("--json-out", default="", help="append one JSON line per trace here")
    args = parser.parse_args(argv)
    if not args.path.exists():
        parser.error(f"{args.path}: no such file or folder")
    for path in trace_files(args.path):
        summary = {"trace": path.name, **summarize(load_events(path))}
        print(json.dumps(summary, indent=1), flush=True)
        if args.json_out:
            with open(args.json_out, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
