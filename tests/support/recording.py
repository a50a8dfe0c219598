"""The real transformers captioner, remembering what it was shown."""

from __future__ import annotations

from collections.abc import Sequence

from vidseek.indexer.captioner_transformers import TransformersCaptioner
from vidseek.indexer.types import CaptionOutput, WindowClip


class RecordingCaptioner(TransformersCaptioner):
    """The real transformers captioner, remembering the clips it was given."""

    clips: list[WindowClip]

    def describe(self, clips: Sequence[WindowClip]) -> list[CaptionOutput]:
        self.clips = [*getattr(self, "clips", []), *clips]
        return super().describe(clips)
