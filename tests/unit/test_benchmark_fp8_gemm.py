"""The FP8 GEMM benchmark's parts that run without a GPU."""

from __future__ import annotations

import pytest


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
