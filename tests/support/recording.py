"""The real transformers captioner, remembering what it was shown, and a server using it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from vidseek.indexer.captioner_transformers import TransformersCaptioner
from vidseek.indexer.types import CaptionOutput, WindowClip
from vidseek.server.app import App, create_server
from vidseek.server.settings import load_settings


class RecordingCaptioner(TransformersCaptioner):
    """The real transformers captioner, remembering the clips it was given."""

    clips: list[WindowClip]

    def describe(self, clips: Sequence[WindowClip]) -> list[CaptionOutput]:
        self.clips = [*getattr(self, "clips", []), *clips]
        return super().describe(clips)


def tiny_model_server(
    model_dir: Path, data_dir: Path, embedder: Any, *, constrained_json: bool, **overrides: Any
) -> tuple[grpc.Server, int, App, dict[str, RecordingCaptioner]]:
    """A server on port 0 captioning with the tiny model on the CPU.

    Returns the server, its port, the app and a dict whose ``"c"`` is the
    captioner once the first job has loaded it.
    """
    settings = load_settings(
        overrides={
            "port": 0,
            "data_dir": str(data_dir),
            "model": str(model_dir),
            "device": "cpu",
            **overrides,
        },
        environ={},
    )
    holder: dict[str, RecordingCaptioner] = {}

    def factory() -> RecordingCaptioner:
        holder["c"] = RecordingCaptioner(
            settings.model,
            device="cpu",
            max_new_tokens=settings.max_new_tokens,
            constrained_json=constrained_json,
        )
        return holder["c"]

    server, port, app = create_server(settings, embedder=embedder, captioner_factory=factory)
    return server, port, app, holder
