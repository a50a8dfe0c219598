"""vLLM's block-FP8 matrix multiplications at Qwen3-VL-4B's language-model shapes.

The engine's profile (``engine_profile.py``) showed the language model's FP8 GEMMs of a
prefill step taking several times longer in some steps than in others of as many
tokens, with a different CUTLASS kernel (a 128x16 tile with A and B swapped, meant for
few tokens). This times, for a step of M tokens, the four GEMMs of one decoder layer
(QKV, output, gate+up, down projections; 128x128 weight blocks, activations quantized
per 1x128 group, as the FP8 checkpoint runs) with the kernels vLLM can pick:

- ``cutlass``: ``ops.cutlass_scaled_mm`` (vLLM's default on Hopper without DeepGEMM);
- ``triton``: ``w8a8_triton_block_scaled_mm`` (what vLLM uses when the CUTLASS kernel
  is disabled, ``VLLM_DISABLED_KERNELS``);
- ``deepgemm``: DeepGEMM (``vllm.utils.deep_gemm.fp8_gemm_nt``, vLLM's first choice on
  Hopper), when ``VLLM_USE_DEEP_GEMM=1`` and it runs there (it compiles its kernels
  at first use); otherwise the row says why not (``deepgemm_error``);
- ``aligned``: the CUTLASS kernel through vidseek's vLLM plugin's padding
  (``indexer/vllm_plugin.py``; timed whatever ``VIDSEEK_FP8_ALIGN_ROWS`` says), rows
  padded to a multiple of 4, the padding's copies included.

Each M is timed with CUDA events after a warm-up; Triton's and the padded GEMM's
outputs are compared with CUTLASS's (largest difference relative to the largest
value), and the run stops if the padded one is more than 1% off. Token counts that are
and are not multiples of 4 are interleaved.

    VLLM_USE_DEEP_GEMM=1 python benchmarks/fp8_gemm.py [--tokens 4096 4097 ...] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.caption_throughput import TEXT_CONFIG  # noqa: E402
from vidseek.indexer.vllm_plugin import with_padded_rows  # noqa: E402

BLOCK = 128
PADDED_TOLERANCE = 0.01
"""The largest relative difference allowed between the padded GEMM and CUTLASS's own."""
DEFAULT_TOKENS = (2048, 2049, 3988, 3989, 8192, 8195, 15416, 15419, 19356, 19358, 30800, 30802)


def layer_shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """``{name: (N, K)}`` of one decoder layer's linear layers (output x input features)."""
    hidden = config["hidden_size"]
    head = config["head_dim"]
    qkv = (config["num_attention_heads"] + 2 * config["num_key_value_heads"]) * head
    mlp = config["intermediate_size"]
    return {
        "qkv": (qkv, hidden),
        "o": (hidden, config["num_attention_heads"] * head),
        "gate_up": (2 * mlp, hidden),
        "down": (hidden, mlp),
    }


def _time_ms(fn: Any, repeats: int) -> float:
    import torch

    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return float(start.elapsed_time(end)) / repeats


def run(tokens: Sequence[int], repeats: int) -> Iterator[dict[str, Any]]:
    """One row per token count, as each is timed."""
    import torch
    import vllm
    from vllm import _custom_ops as ops
    from vllm.model_executor.layers.quantization.utils.fp8_utils import (
        per_token_group_quant_fp8,
        w8a8_triton_block_scaled_mm,
    )

    torch.manual_seed(0)
    weights = {}
    for name, (n, k) in layer_shapes(TEXT_CONFIG).items():
        w = (torch.randn(n, k, device="cuda") / k**0.5).to(torch.float8_e4m3fn)
        scales = torch.rand(n // BLOCK, k // BLOCK, device="cuda") * 0.01 + 0.001
        weights[name] = (w, scales, k)
    deep_gemm, deep_error = _deep_gemm()
    aligned_mm = with_padded_rows(
        lambda _, a, b, a_s, b_s: ops.cutlass_scaled_mm(
            a, b.T, out_dtype=torch.bfloat16, scale_a=a_s, scale_b=b_s.T
        )
    )
    for m in tokens:
        per_kernel = {"cutlass": 0.0, "triton": 0.0, "aligned": 0.0, "deepgemm": 0.0}
        worst = padded_off = deep_off = 0.0
        for w, ws, k in weights.values():
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            # Scales as vLLM's CUTLASS and Triton paths quantize (not the power-of-two
            # scales that vLLM defaults to when DeepGEMM is on).
            xq, xs_col = per_token_group_quant_fp8(
                x, BLOCK, column_major_scales=True, use_ue8m0=False
            )
            _, xs_row = per_token_group_quant_fp8(x, BLOCK, use_ue8m0=False)

            def cutlass(xq=xq, xs_col=xs_col, w=w, ws=ws) -> Any:
                return ops.cutlass_scaled_mm(
                    xq, w.T, out_dtype=torch.bfloat16, scale_a=xs_col, scale_b=ws.T
                )

            def triton(xq=xq, xs_row=xs_row, w=w, ws=ws) -> Any:
                return w8a8_triton_block_scaled_mm(
                    xq, w, xs_row, ws, [BLOCK, BLOCK], output_dtype=torch.bfloat16
                )

            def aligned(xq=xq, xs_col=xs_col, w=w, ws=ws, mm=aligned_mm) -> Any:
                return mm(None, xq, w, xs_col, ws)

            reference, padded = cutlass().float(), aligned().float()
            padded_off = max(padded_off, _relative_difference(padded, reference))
            worst = max(worst, _relative_difference(triton().float(), reference))
            per_kernel["cutlass"] += _time_ms(cutlass, repeats)
            per_kernel["triton"] += _time_ms(triton, repeats)
            per_kernel["aligned"] += _time_ms(aligned, repeats)
            if deep_gemm is not None:  # its scales as vLLM quantizes for DeepGEMM
                xq_tma, xs_tma = per_token_group_quant_fp8(
                    x, BLOCK, column_major_scales=True, tma_aligned_scales=True
                )
                out = torch.empty(m, w.shape[0], device="cuda", dtype=torch.bfloat16)

                def deep(xq=xq_tma, xs=xs_tma, w=w, ws=ws, out=out, mm=deep_gemm) -> Any:
                    mm((xq, xs), (w, ws), out)
                    return out

                try:
                    deep_off = max(deep_off, _relative_difference(deep().float(), reference))
                    per_kernel["deepgemm"] += _time_ms(deep, repeats)
                except Exception as exc:  # its JIT or a shape it refuses: say so, go on
                    deep_gemm, deep_error = None, f"{type(exc).__name__}: {exc}"[:300]
        layers = TEXT_CONFIG["num_hidden_layers"]
        yield (
            {
                "tokens": m,
                "tokens_mod_4": m % 4,
                "device": torch.cuda.get_device_name(0),
                "vllm": vllm.__version__,
                "cutlass_layer_ms": round(per_kernel["cutlass"], 3),
                "triton_layer_ms": round(per_kernel["triton"], 3),
                "aligned_layer_ms": round(per_kernel["aligned"], 3),
                # The 36 decoder layers' GEMMs of one engine step of m tokens.
                "cutlass_step_ms": round(per_kernel["cutlass"] * layers, 1),
                "triton_step_ms": round(per_kernel["triton"] * layers, 1),
                "aligned_step_ms": round(per_kernel["aligned"] * layers, 1),
                # Against CUTLASS's product: Triton's, and the padded GEMM's (0 when
                # nothing is padded: the same kernel on the same rows).
                "triton_relative_difference": round(worst, 4),
                "aligned_relative_difference": round(padded_off, 4),
                **(
                    {
                        "deepgemm_layer_ms": round(per_kernel["deepgemm"], 3),
                        "deepgemm_step_ms": round(per_kernel["deepgemm"] * layers, 1),
                        "deepgemm_relative_difference": round(deep_off, 4),
                    }
                    if deep_gemm is not None
                    else {"deepgemm_error": deep_error}
                ),
            }
        )
        if padded_off > PADDED_TOLERANCE:
            raise SystemExit(f"{m} tokens: the padded GEMM is {padded_off:.3f} off CUTLASS's")


def _deep_gemm() -> tuple[Any, str]:
    """vLLM's DeepGEMM entry point, or ``None`` and why it cannot run here."""
    from vllm.utils.deep_gemm import fp8_gemm_nt, is_deep_gemm_supported

    if not is_deep_gemm_supported():
        return None, "not supported here (VLLM_USE_DEEP_GEMM=0, no deep_gemm, or not Hopper)"
    return fp8_gemm_nt, ""


def _relative_difference(a: Any, b: Any) -> float:
    """The largest absolute difference, relative to ``b``'s largest magnitude."""
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-6))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=list(DEFAULT_TOKENS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json-out", default="")
    args = parser.parse_args(argv)
    if any(m < 1 for m in args.tokens) or args.repeats < 1:
        parser.error("--tokens and --repeats must be >= 1")
    for row in run(args.tokens, args.repeats):
        print(json.dumps(row), flush=True)
        if args.json_out:
            with open(args.json_out, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
