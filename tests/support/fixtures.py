"""Pytest fixtures for tests that need a Qwen3-VL checkpoint (imported by tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiny_qwen import build_tiny_qwen3_vl

__all__ = ["tiny_qwen_dir"]


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3-VL with the real tokenizer and processor, built once per session."""
    return build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl"))
