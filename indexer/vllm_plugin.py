"""vidseek's vLLM plugin: whole-tile FP8 matrix multiplications for any step size.

vLLM loads every ``vllm.general_plugins`` entry point in each of its processes (the
engine core and its workers included); vidseek's is :func:`register`. It is on unless
``VIDSEEK_FP8_ALIGN_ROWS=0``.

Why: with block-FP8 weights (the Qwen3-VL-4B-Instruct-FP8 checkpoint) on Hopper
without DeepGEMM, vLLM 0.26 multiplies with its CUTLASS blockwise kernel, which takes
a slow variant (A and B swapped, a 128x16 tile, meant for a few tokens) whenever the
step's token count is not a multiple of 4 (seen in the engine's profile and in the
benchmark below; vLLM's SM100 dispatch states the same rule in its source).
Measured on an H200 (``benchmarks/fp8_gemm.py``): one decoder layer's four GEMMs
take 2.56 ms at 15,416 tokens and 11.86 ms at 15,419. Three of every four token
counts are not multiples of 4, and in the engine's profile the prefill steps' GEMMs
were the largest part of the GPU's time.

The plugin wraps that kernel's ``apply_block_scaled_mm``: the
quantized activations get zero rows (scale 1) up to the next multiple of 4, the
product is computed on the padded matrix and its extra rows are dropped. The product
is the same up to rounding; the cost is a copy of the step's quantized activations
(where the rows were a multiple of 4 already, the padded GEMMs took 3-7% longer in
the benchmark). In the engine (an H200, runs AI/AJ in the README) it cut the prefill
steps' GEMMs from 24.7 to 7.4 ms per 1,000 prompt tokens and raised the steady rate
1.69x; a decode-only step of 160 sequences went from 21.6 to 21.9 ms. Measured with
vLLM 0.26; vLLM 0.33 has the same kernel class and method. Where vLLM multiplies with
DeepGEMM instead (``VLLM_USE_DEEP_GEMM=1`` on Hopper, when it is installed) the
wrapped kernel is not called, but the compile cache is still off (:func:`register`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

# Under vLLM's logger, so that vLLM's own log configuration shows its messages.
log = logging.getLogger("vllm.plugins.vidseek")

ALIGN_ENV = "VIDSEEK_FP8_ALIGN_ROWS"
ROW_ALIGNMENT = 4
_PADDED = "_vidseek_padded_rows"  # marks a wrapped method (and holds the original)


def with_padded_rows(apply: Callable[..., Any]) -> Callable[..., Any]:
    """``apply(self, A, B, As, Bs)`` (a block-scaled GEMM: ``A`` quantized activations,
    one row per token, ``As`` their per-group scales, ``[rows, groups]`` column-major)
    called with ``A`` and ``As`` padded to a multiple of :data:`ROW_ALIGNMENT` rows;
    returns its first ``len(A)`` rows. Other scale shapes go to ``apply`` unchanged."""

    def padded(self: Any, A: Any, B: Any, As: Any, Bs: Any) -> Any:
        import torch
        import torch.nn.functional as F

        if As.dim() != 2:  # not per-group scales (static under torch.compile)
            return apply(self, A, B, As, Bs)
        rows = A.shape[0]
        # No branch on the row count: under torch.compile vLLM keeps one graph for all
        # step sizes, so the padding (of 0 rows, too) is always there: a copy of the
        # activations in every step, decode steps included.
        pad = -rows % ROW_ALIGNMENT
        # FP8 is padded as bytes (zero bytes are FP8 zeros).
        A = F.pad(A.view(torch.uint8), (0, 0, 0, pad)).view(A.dtype)
        # Column-major scales: pad the rows of the transposed (row-major) view.
        As = F.pad(As.t(), (0, pad), value=1.0).t()
        return apply(self, A, B, As, Bs)[:rows]

    setattr(padded, _PADDED, apply)
    return padded


def align_rows() -> bool:
    """Whether the padding is on: ``VIDSEEK_FP8_ALIGN_ROWS`` unset or ``1`` (the
    default), off with ``0``; any other value is an error naming the variable."""
    value = os.environ.get(ALIGN_ENV, "1").strip()
    if value not in ("0", "1"):
        raise ValueError(f"{ALIGN_ENV} must be 0 or 1, got {value!r}")
    return value == "1"


def gemm_settings() -> dict[str, str]:
    """The settings that decide which block-FP8 GEMM vLLM's processes run, as a
    benchmark's results record them: this plugin's padding (``fp8_align_rows``) and
    vLLM's ``VLLM_USE_DEEP_GEMM`` (vLLM's default 1; with DeepGEMM the padded kernel is
    not called)."""
    return {
        "fp8_align_rows": "1" if align_rows() else "0",
        "vllm_use_deep_gemm": os.environ.get("VLLM_USE_DEEP_GEMM", "1"),
    }


def register() -> None:
    """vLLM's entry point (``vllm.general_plugins``): wrap the CUTLASS block-FP8 kernel
    unless ``VIDSEEK_FP8_ALIGN_ROWS=0`` (module doc).

    vLLM's saved torch.compile graphs are keyed by its own settings and the traced
    source, not by this one: a graph saved without the padding would be loaded with it,
    and the reverse. So with the padding on, vLLM's compile cache is turned off
    (``VLLM_DISABLE_COMPILE_CACHE=1``, set here in the process that builds the engine,
    before it starts its engine core, which inherits it); a build then compiles again.
    That holds for every vLLM process in this Python environment, whatever model it
    serves, until ``VIDSEEK_FP8_ALIGN_ROWS=0``.
    """
    if not align_rows():
        return
    try:
        from vllm.model_executor.kernels.linear.scaled_mm.cutlass import (
            CutlassFp8BlockScaledMMKernel,
        )
    except ImportError:
        log.warning("%s: this vLLM has no CutlassFp8BlockScaledMMKernel; unchanged", ALIGN_ENV)
        return
    if os.environ.setdefault("VLLM_DISABLE_COMPILE_CACHE", "1") != "1":
        log.warning(
            "%s on with VLLM_DISABLE_COMPILE_CACHE=%s: a compiled graph saved without "
            "the padding may be loaded",
            ALIGN_ENV,
            os.environ["VLLM_DISABLE_COMPILE_CACHE"],
        )
    current = CutlassFp8BlockScaledMMKernel.apply_block_scaled_mm
    if hasattr(current, _PADDED):
        return  # registered already in this process
    CutlassFp8BlockScaledMMKernel.apply_block_scaled_mm = with_padded_rows(current)  # type: ignore[method-assign]
    log.info(
        "vLLM's CUTLASS block-FP8 GEMMs get their rows padded to a multiple of %d "
        "(%s=0 turns this off)",
        ROW_ALIGNMENT,
        ALIGN_ENV,
    )
