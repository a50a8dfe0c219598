"""The engine profile's summary (``benchmarks/engine_profile.py``) on a small trace in
the torch profiler's format: CPU annotations and launches, GPU kernels tied to them
by correlation id."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.engine_profile import busy_time, kernel_kind, main, summarize

CPU = {"pid": 100, "tid": 7}
GPU = {"pid": 0, "tid": 7}


def _range(name: str, ts: float, dur: float) -> dict[str, Any]:
    return {"ph": "X", "cat": "user_annotation", "name": name, "ts": ts, "dur": dur, **CPU}


def _launch(ts: float, correlation: int) -> dict[str, Any]:
    args = {"correlation": correlation}
    return {
        "ph": "X",
        "cat": "cuda_runtime",
        "name": "cudaLaunchKernel",
        "ts": ts,
        "dur": 2,
        "args": args,
        **CPU,
    }


def _kernel(name: str, ts: float, dur: float, correlation: int) -> dict[str, Any]:
    return {
        "ph": "X",
        "cat": "kernel",
        "name": name,
        "ts": ts,
        "dur": dur,
        "args": {"correlation": correlation},
        **GPU,
    }


def _step(n: int, t0: float) -> list[dict[str, Any]]:
    """One engine step of 1000 us on the GPU: a 300 us vision encoder GEMM (launched in
    preprocess), 400 us of language model (attention 100, GEMM 250, norm 50), a 50 us
    sampling kernel, then 200 us idle."""
    c = 10 * n
    return [
        _range(f"execute_context_2(4000)_generation_{150 + n}(150)", t0, 900),
        _range("gpu_model_runner: preprocess", t0 + 10, 300),
        _range("Torch-Compiled Region", t0 + 20, 100),  # an unknown range inside one
        _launch(t0 + 30, c + 1),
        _range("gpu_model_runner: forward", t0 + 400, 300),
        _range("Torch-Compiled Region", t0 + 410, 200),
        _launch(t0 + 420, c + 2),
        _launch(t0 + 430, c + 3),
        _launch(t0 + 440, c + 4),
        _range("gpu_model_runner: sample", t0 + 750, 100),
        _launch(t0 + 760, c + 5),
        _kernel("sm90_xmma_gemm_bf16bf16_vision", t0 + 100, 300, c + 1),
        _kernel("flash_fwd_splitkv_kernel", t0 + 400, 100, c + 2),
        _kernel("cutlass::device_kernel<w8a8_block>", t0 + 500, 250, c + 3),
        _kernel("triton_red_fused_rms_norm_0", t0 + 750, 50, c + 4),
        _kernel("topk_topp_sampler", t0 + 800, 50, c + 5),
    ]


def test_gpu_time_splits_by_the_vllm_scope_that_launched_it_and_by_kind():
    events = _step(0, 0.0) + _step(1, 1050.0) + _step(2, 2100.0)
    summary = summarize(events)
    assert summary["steps"] == 3
    assert summary["span_ms"] == pytest.approx(2.85)  # 100 us to 2950 us
    assert summary["gpu_busy_ms"] == pytest.approx(2.25)  # 750 us a step
    assert summary["gpu_idle_share"] == pytest.approx(1 - 2.25 / 2.85, abs=1e-3)
    assert summary["scope_ms_per_step"] == {"forward": 0.4, "preprocess": 0.3, "sample": 0.05}
    assert summary["kind_ms_per_step"]["forward"] == {"attention": 0.1, "gemm": 0.25, "other": 0.05}
    assert summary["kind_ms_per_step"]["preprocess"] == {"gemm": 0.3}
    assert summary["prompt_tokens_per_step_p50"] == 4000
    assert summary["decoding_requests_per_step_p50"] == 151
    assert summary["top_kernels"][0]["kernel"].startswith("sm90_xmma")
    assert summary["step_timeline"] == [[2, 4000, 150, 1.05], [2, 4000, 151, 1.05]]


def test_a_kernel_launched_outside_vllms_scopes_is_other_and_an_unmatched_one_unknown():
    events = [
        *_step(0, 0.0),
        _launch(950.0, 99),  # after the step's scopes closed
        _kernel("memcpy_like", 960.0, 20, 99),
        _kernel("orphan", 990.0, 10, 12345),  # its launch is not in the trace
    ]
    shares = summarize(events)["scope_ms_per_step"]
    assert shares["other"] == 0.02 and shares["unknown"] == 0.01


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
        json.dump({"traceEvents": _step(0, 0.0), "deviceProperties": []}, handle)
    out = tmp_path / "summary.jsonl"
    assert main([str(trace.parent), "--json-out", str(out)]) == 0
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["trace"] == trace.name and json.loads(line)["steps"] == 1


def test_a_folder_without_traces_or_a_trace_without_steps_is_refused(tmp_path: Path):
    with pytest.raises(SystemExit, match="no torch profiler trace"):
        main([str(tmp_path)])
    with pytest.raises(SystemExit, match="no vLLM step"):
        summarize([_kernel("k", 0, 1, 1)])


def test_the_gemm_benchmark_times_the_4b_models_four_layer_shapes():
    from benchmarks.fp8_gemm import layer_shapes
    from benchmarks.fp8_gemm import main as gemm_main

    assert layer_shapes(
        {
            "hidden_size": 2560,
            "head_dim": 128,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "intermediate_size": 9728,
        }
    ) == {"qkv": (6144, 2560), "o": (2560, 4096), "gate_up": (19456, 2560), "down": (2560, 9728)}
    with pytest.raises(SystemExit):
        gemm_main(["--tokens", "0"])
