"""vidseek's vLLM plugin (``indexer/vllm_plugin.py``): block-FP8 GEMMs on whole row
tiles. The GEMM here is a reference on CPU with the CUTLASS kernel's layouts (scales
column-major), standing in for vLLM's; the plugin's wrapping of vLLM's class is tested
on a stand-in class of the same name and place."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import types
from typing import Any

import pytest
import torch

from vidseek.indexer import vllm_plugin

GROUP = 128


def _block_scaled_gemm(self: Any, A, B, As, Bs) -> torch.Tensor:
    """A block-scaled GEMM as the CUTLASS kernel computes it."""
    a = A.float() * As.repeat_interleave(GROUP, dim=1)
    b = B.float() * Bs.repeat_interleave(GROUP, 0).repeat_interleave(GROUP, 1)
    return (a @ b.T).to(torch.bfloat16)


def _reference_gemm(calls: list[tuple[int, bool]]):
    """:func:`_block_scaled_gemm`, recording (rows, whether the scales were
    column-major) of each call."""

    def apply(self: Any, A: torch.Tensor, B: torch.Tensor, As: torch.Tensor, Bs: torch.Tensor):
        calls.append((A.shape[0], As.stride(0) == 1 and As.shape[0] > 1))
        return _block_scaled_gemm(self, A, B, As, Bs)

    return apply


def _operands(rows: int, n: int = 256, k: int = 256):
    torch.manual_seed(rows)
    A = (torch.randn(rows, k) * 4).to(torch.float8_e4m3fn)
    As = torch.rand(k // GROUP, rows).t() + 0.5  # column-major, as vLLM's quantizer makes it
    B = torch.randn(n, k).to(torch.float8_e4m3fn)
    Bs = torch.rand(n // GROUP, k // GROUP) + 0.5
    return A, B, As, Bs


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 13])
def test_the_gemm_runs_on_a_multiple_of_4_rows_and_gives_the_same_product(rows):
    calls: list[tuple[int, bool]] = []
    apply = _reference_gemm(calls)
    A, B, As, Bs = _operands(rows)
    expected = apply(None, A, B, As, Bs)
    out = vllm_plugin.with_padded_rows(apply)(None, A, B, As, Bs)
    padded_rows, column_major = calls[-1]
    assert padded_rows % 4 == 0 and padded_rows - rows < 4
    assert column_major  # the padded scales keep the kernel's layout
    # The same product; bfloat16 rounding may differ where the matmul blocks rows differently.
    torch.testing.assert_close(out, expected, rtol=1e-2, atol=1e-2)


def test_under_torch_compile_one_graph_serves_every_row_count():
    # vLLM compiles the model once for all step sizes and drops dynamo's guards, so the
    # padding must stay symbolic in the row count: one graph, right for every count.
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    apply = _block_scaled_gemm
    _, B, _, Bs = _operands(4)
    padded = vllm_plugin.with_padded_rows(apply)
    compiled = torch.compile(
        lambda A, As: padded(None, A, B, As, Bs), backend="aot_eager", dynamic=True
    )
    for rows in (8, 5, 6, 7, 9, 13):  # traced first at a multiple of 4, as vLLM does
        A, _, As, _ = _operands(rows)
        torch.testing.assert_close(compiled(A, As), apply(None, A, B, As, Bs), rtol=1e-2, atol=1e-2)
    assert counters["stats"]["unique_graphs"] == 1


def _stand_in_vllm(monkeypatch) -> type:
    class CutlassFp8BlockScaledMMKernel:
        seen: list[int] = []

        def apply_block_scaled_mm(self, A, B, As, Bs):
            self.seen.append(A.shape[0])
            return torch.zeros(A.shape[0], B.shape[0])

    names = ["vllm", "model_executor", "kernels", "linear", "scaled_mm", "cutlass"]
    for depth in range(1, len(names) + 1):
        module = types.ModuleType(".".join(names[:depth]))
        monkeypatch.setitem(sys.modules, module.__name__, module)
    sys.modules[".".join(names)].CutlassFp8BlockScaledMMKernel = CutlassFp8BlockScaledMMKernel
    return CutlassFp8BlockScaledMMKernel


def _unset_compile_cache_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset for the test, and unset again after it (whatever register() sets)."""
    monkeypatch.setenv("VLLM_DISABLE_COMPILE_CACHE", "")
    monkeypatch.delenv("VLLM_DISABLE_COMPILE_CACHE")


def test_register_changes_nothing_when_turned_off(monkeypatch):
    kernel = _stand_in_vllm(monkeypatch)
    original = kernel.apply_block_scaled_mm
    monkeypatch.setenv(vllm_plugin.ALIGN_ENV, "0")
    _unset_compile_cache_setting(monkeypatch)
    vllm_plugin.register()
    assert kernel.apply_block_scaled_mm is original
    assert "VLLM_DISABLE_COMPILE_CACHE" not in os.environ


def test_a_bad_setting_is_an_error_naming_it(monkeypatch):
    kernel = _stand_in_vllm(monkeypatch)
    original = kernel.apply_block_scaled_mm
    monkeypatch.setenv(vllm_plugin.ALIGN_ENV, "yes")
    with pytest.raises(ValueError, match="VIDSEEK_FP8_ALIGN_ROWS must be 0 or 1, got 'yes'"):
        vllm_plugin.register()
    assert kernel.apply_block_scaled_mm is original


@pytest.mark.parametrize("setting", [None, "1"])
def test_register_wraps_the_cutlass_kernel_once(monkeypatch, setting):
    kernel = _stand_in_vllm(monkeypatch)
    original = kernel.apply_block_scaled_mm
    if setting is None:  # on by default
        monkeypatch.delenv(vllm_plugin.ALIGN_ENV, raising=False)
    else:
        monkeypatch.setenv(vllm_plugin.ALIGN_ENV, setting)
    _unset_compile_cache_setting(monkeypatch)
    vllm_plugin.register()
    vllm_plugin.register()  # vLLM loads plugins more than once in a process
    wrapped = kernel.apply_block_scaled_mm
    assert wrapped._vidseek_padded_rows is original
    A, B, As, Bs = _operands(5)
    assert kernel().apply_block_scaled_mm(A, B, As, Bs).shape == (5, 256)
    # vLLM calls it with keywords
    assert kernel().apply_block_scaled_mm(A=A, B=B, As=As, Bs=Bs).shape == (5, 256)
    assert kernel.seen == [8, 8]  # the kernel multiplied 8 rows each time
    # vLLM's compile cache does not key on the setting: off, for the engine core too.
    assert os.environ["VLLM_DISABLE_COMPILE_CACHE"] == "1"


def test_scales_that_are_not_per_group_go_through_unpadded():
    seen: list[int] = []

    def apply(self: Any, A: torch.Tensor, B: Any, As: Any, Bs: Any) -> torch.Tensor:
        seen.append(A.shape[0])
        return A

    A, B, _, Bs = _operands(5)
    out = vllm_plugin.with_padded_rows(apply)(None, A, B, torch.ones(1), Bs)  # per tensor
    assert seen == [5] and out.shape[0] == 5


def test_register_warns_when_vllm_has_no_such_kernel(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.delenv(vllm_plugin.ALIGN_ENV, raising=False)  # on by default
    vllm_plugin.register()
    assert "no CutlassFp8BlockScaledMMKernel" in caplog.text


def test_the_package_declares_the_plugin_to_vllm():
    (plugin,) = [
        e
        for e in importlib.metadata.entry_points(group="vllm.general_plugins")
        if e.name == "vidseek"
    ]
    assert plugin.value == "vidseek.indexer.vllm_plugin:register"
    assert plugin.load() is vllm_plugin.register


def test_gemm_settings_record_the_padding_and_deep_gemm(monkeypatch):
    monkeypatch.delenv(vllm_plugin.ALIGN_ENV, raising=False)
    monkeypatch.delenv("VLLM_USE_DEEP_GEMM", raising=False)
    assert vllm_plugin.gemm_settings() == {"fp8_align_rows": "1", "vllm_use_deep_gemm": "1"}
    monkeypatch.setenv(vllm_plugin.ALIGN_ENV, "0")
    monkeypatch.setenv("VLLM_USE_DEEP_GEMM", "0")
    assert vllm_plugin.gemm_settings() == {"fp8_align_rows": "0", "vllm_use_deep_gemm": "0"}
