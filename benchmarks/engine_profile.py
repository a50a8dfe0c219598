"""Where the captioning engine's GPU time goes: a summary of vLLM's torch profile.

``caption_throughput.py --engine async --profile-steps N`` profiles N engine steps in
the steady part of a pass (vLLM's ``profiler_config``). vLLM marks each step on the
GPU's timeline (``execute_context_P(T)_generation_D(G)``: P requests prefilling T
prompt tokens, D decoding). This reads the trace vLLM's engine core wrote and gives:

- each step as (requests prefilling, their prompt tokens, requests decoding, its GPU
  milliseconds);
- the GPU's time in prefill steps (some prompt tokens; the vision encoder runs in
  them) and in decode-only steps, by kind of kernel: attention, matrix
  multiplication (GEMM), the rest;
- the GPU's idle time between kernels over the profiled span;
- the kernels that took the most time.

    python benchmarks/engine_profile.py PROFILE_DIR_OR_TRACE [--json-out FILE]
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

STEP = re.compile(r"^execute_context_(\d+)\((\d+)\)_generation_(\d+)\((\d+)\)")
KINDS = (
    ("attention", re.compile(r"flash|fmha|attn|attention", re.I)),
    ("gemm", re.compile(r"gemm|cutlass|nvjet|matmul|scaled_mm|w8a8|xmma|cublas|gemv", re.I)),
)
GPU_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}


def kernel_kind(name: str) -> str:
    """``attention``, ``gemm`` or ``other``, from a kernel's name (attention first:
    FlashAttention's kernels are CUTLASS kernels too)."""
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
    steps = sorted(
        (e["ts"], e["ts"] + e["dur"], tuple(int(x) for x in m.groups()))
        for e in events
        if e.get("cat") == "gpu_user_annotation" and (m := STEP.match(e["name"]))
    )
    gpu = [e for e in events if e.get("cat") in GPU_CATEGORIES]
    if not steps or not gpu:
        raise SystemExit("the trace has no vLLM step (execute_context_*) or no GPU work")
    starts = [start for start, _, _ in steps]
    by_kind: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_name: dict[tuple[str, str], float] = defaultdict(float)
    for event in gpu:
        at = bisect.bisect_right(starts, event["ts"]) - 1
        inside = at >= 0 and event["ts"] < steps[at][1]
        phase = ("prefill" if steps[at][2][0] else "decode") if inside else "between"
        kind = kernel_kind(event["name"]) if event["cat"] == "kernel" else "memory"
        by_kind[phase][kind] += event["dur"] / 1000
        by_name[phase, event["name"]] += event["dur"] / 1000
    count = {
        "prefill": sum(1 for *_, c in steps if c[0]),
        "decode": sum(1 for *_, c in steps if not c[0]),
    }
    span = (max(e["ts"] + e["dur"] for e in gpu) - min(e["ts"] for e in gpu)) / 1000
    busy = busy_time((e["ts"], e["ts"] + e["dur"]) for e in gpu) / 1000
    return {
        "steps": len(steps),
        "prefill_steps": count["prefill"],
        "span_ms": round(span, 2),
        "gpu_busy_ms": round(busy, 2),
        "gpu_idle_share": round(1 - busy / span, 3) if span else None,
        "prompt_tokens_per_prefill_step_p50": _median(c[1] for *_, c in steps if c[0]),
        "decoding_requests_per_step_p50": _median(c[2] for *_, c in steps),
        "gpu_ms": {
            phase: round(sum(kinds.values()), 2) for phase, kinds in sorted(by_kind.items())
        },
        # Per step of the kind: what the GPU spent its time on (``gpu_ms`` also has the
        # kernels that ran between two steps' annotations, as ``between``).
        "kind_ms_per_step": {
            phase: {k: round(v / count[phase], 2) for k, v in sorted(by_kind[phase].items())}
            for phase in ("prefill", "decode")
            if count[phase]
        },
        # Each step: requests prefilling, their prompt tokens, requests decoding, GPU ms.
        "step_timeline": [
            [c[0], c[1], c[2], round((end - start) / 1000, 2)] for start, end, c in steps
        ],
        "top_kernels": [
            {"phase": phase, "kernel": name[:160], "ms": round(ms, 2)}
            for (phase, name), ms in sorted(by_name.items(), key=lambda item: -item[1])[:15]
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
