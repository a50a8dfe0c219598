"""Shared fixtures: settings in a temp dir, the offline embedder, generated videos."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.support.videos import write_video
from vidseek.indexer.embedder import SentenceTransformerEmbedder

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real offline MiniLM embedder (loaded once per session)."""
    return SentenceTransformerEmbedder(device="cpu")


@pytest.fixture(scope="session")
def colour_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s at 30 fps, 160x96: red, green, blue, yellow, magenta, cyan, 2 s each."""
    from tests.support.videos import BLUE, GREEN, RED

    path = tmp_path_factory.mktemp("videos") / "colours.mp4"
    colours = [
        RED,
        RED,
        GREEN,
        GREEN,
        BLUE,
        BLUE,
        (255, 255, 0),
        (255, 255, 0),
        (255, 0, 255),
        (255, 0, 255),
        (0, 255, 255),
        (0, 255, 255),
    ]
    write_video(path, seconds=12, fps=30, width=160, height=96, colors=colours)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "data"
    d.mkdir()
    yield d


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip GPU tests without CUDA (they run on the GPU machine)."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run tests/gpu on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
