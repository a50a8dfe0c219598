"""The engine profile's summary (``benchmarks/engine_profile.py``) on a small trace in
the torch profiler's format: vLLM's step annotations on the GPU's timeline and the
kernels that ran in them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.engine_profile import busy_time, kernel_kind, main, summarize

GPU = {"pid": 0, "tid": 7}


def _step(name: str, ts: float, dur: float) -> dict[str, Any]:
    return {"ph": "X", "cat": "gpu_user_annotation", "name": name, "ts": ts, "dur": dur, **GPU}


def _kernel(name: str, ts: float, dur: float, category: str = "kernel") -> dict[str, Any]:
    return {"ph": "X", "cat": category, "name": name, "ts": ts, "dur": dur, **GPU}


def _prefill(t0: float) -> list[dict[str, Any]]:
    """A 1000 us prefill step: GEMMs 600, attention 200, a norm 100, a copy 50."""
    return [
        _step("execute_context_2(4000)_generation_150(150)", t0, 1000),
        _kernel("cutlass::device_kernel<vllm::cutlass_3x_gemm_fp8_blockwise<128, 1>>", t0, 600),
        _kernel("cutlass::device_kernel<flash::FlashAttnFwdSm90>", t0 + 600, 200),
        _kernel("triton_red_fused_rms_norm_0", t0 + 800, 100),
        _kernel("Memcpy HtoD", t0 + 900, 50, "gpu_memcpy"),
    ]


def _decode(t0: float) -> list[dict[str, Any]]:
    """A 20 us decode-only step of 160 sequences: attention 15, GEMM 4."""
    return [
        _step("execute_context_0(0)_generation_160(160)", t0, 20),
        _kernel("cutlass::device_kernel<flash::FlashAttnFwdSm90>", t0, 15),
        _kernel("cutlass_3x_gemm_fp8_blockwise<1, 128>", t0 + 15, 4),
    ]


def test_gpu_time_splits_into_prefill_and_decode_steps_by_kind_of_kernel():
    events = _prefill(0.0) + _decode(1000.0) + _decode(1100.0) + _decode(1200.0)
    events.append(_kernel("orphan", 5000.0, 10))  # outside every step
    summary = summarize(events)
    assert summary["steps"] == 4 and summary["prefill_steps"] == 1
    assert summary["span_ms"] == pytest.approx(5.01)
    assert summary["gpu_busy_ms"] == pytest.approx(0.95 + 3 * 0.019 + 0.01, abs=0.005)
    assert summary["gpu_ms"] == {"between": 0.01, "decode": 0.06, "prefill": 0.95}
    assert summary["kind_ms_per_step"]["prefill"] == {
        "attention": 0.2,
        "gemm": 0.6,
        "memory": 0.05,
        "other": 0.1,
    }
    assert summary["kind_ms_per_step"]["decode"] == {"attention": 0.01, "gemm": 0.0}
    assert summary["step_timeline"][:2] == [[2, 4000, 150, 1.0], [0, 0, 160, 0.02]]
    assert summary["prompt_tokens_per_prefill_step_p50"] == 4000
    assert summary["decoding_requests_per_step_p50"] == 160
    assert summary["top_kernels"][0]["kernel"].startswith("cutlass::device_kernel<vllm")


def test_busy_time_counts_overlaps_once():
    assert busy_time([(0, 10), (5, 15), (20, 25), (21, 22)]) == 20
    assert busy_time([]) == 0


def test_kernel_kinds():
    assert kernel_kind("void flash::flash_fwd_kernel<...>") == "attention"
    assert kernel_kind("_w8a8_block_fp8_matmul") == "gemm"
    assert kernel_kind("nvjet_tst_128x256") == "gemm"
    assert kernel_kind("triton_poi_fused_silu_mul_0") == "other"


def test_the_command_reads_a_folder_of_gzipped_traces(tmp_path: Path, capsys):
    trace = tmp_path / "prof" / "worker_rank0.123.pt.trace.json.gz"
    trace.parent.mkdir()
    with gzip.open(trace, "wt", encoding="utf-8") as handle:
        json.dump({"traceEvents": _prefill(0.0), "deviceProperties": []}, handle)
    out = tmp_path / "summary.jsonl"
    assert main([str(trace.parent), "--json-out", str(out)]) == 0
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["trace"] == trace.name and json.loads(line)["steps"] == 1


def test_a_folder_without_traces_or_a_trace_without_steps_is_refused(tmp_path: Path):
    with pytest.raises(SystemExit, match="no torch profiler trace"):
        main([str(tmp_path)])
    with pytest.raises(SystemExit, match="no vLLM step"):
        summarize([_kernel("k", 0, 1)])
