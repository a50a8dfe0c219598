"""A stand-in ``vllm`` module: SamplingParams and StructuredOutputsParams that record kwargs."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest


class RecordedParams:
    """Keeps the keyword arguments it was built with (``.kwargs``)."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


def install_fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Put a ``vllm`` with recording params classes in ``sys.modules`` (undone after the test).

    Tests add the engine class they need (``module.LLM = ...``).
    """
    module = types.ModuleType("vllm")
    sampling = types.ModuleType("vllm.sampling_params")

    class SamplingParams(RecordedParams):
        pass

    class StructuredOutputsParams(RecordedParams):
        pass

    class ProfilerConfig(RecordedParams):
        pass

    config = types.ModuleType("vllm.config")
    config.ProfilerConfig = ProfilerConfig  # type: ignore[attr-defined]
    module.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    sampling.StructuredOutputsParams = StructuredOutputsParams  # type: ignore[attr-defined]
    module.sampling_params = sampling  # type: ignore[attr-defined]
    module.config = config  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    monkeypatch.setitem(sys.modules, "vllm.config", config)
    return module
