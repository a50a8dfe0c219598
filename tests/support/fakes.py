"""Test doubles with known, checkable behaviour (not mocks)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

import numpy as np

from vidseek.indexer.types import CaptionOutput, WindowClip

COLOUR_NAMES = {
    (255, 0, 0): "red",
    (0, 255, 0): "green",
    (0, 0, 255): "blue",
    (255, 255, 0): "yellow",
    (255, 0, 255): "magenta",
    (0, 255, 255): "cyan",
}


def colour_name(frame: np.ndarray) -> str:
    """Name of the palette colour nearest to the frame's lower half (above the counter strip)."""
    mean = frame[frame.shape[0] // 2 :].reshape(-1, 3).mean(axis=0)
    best = min(COLOUR_NAMES, key=lambda c: float(np.sum((np.array(c) - mean) ** 2)))
    return COLOUR_NAMES[best]


class ColourCaptioner:
    """Describes each run of same-coloured frames as an event, from the decoded pixels.

    Timestamps are the absolute source times of the frames (index / fps), so
    searching "a red screen" must land on the seconds where the video is red.
    """

    model_id = "test/colour-captioner"

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, ...]]] = []

    def describe(self, clips: Sequence[WindowClip]) -> list[CaptionOutput]:
        self.calls.append([c.window.frame_indices for c in clips])
        outs = []
        for clip in clips:
            times = [i / clip.fps for i in clip.window.frame_indices]
            ends = [*times[1:], clip.window.end_seconds]
            names = [colour_name(f) for f in clip.frames]
            events: list[dict[str, object]] = []
            for t, end, name in zip(times, ends, names, strict=True):
                if events and events[-1]["description"] == f"a {name} screen":
                    events[-1]["end"] = end
                else:
                    events.append({"start": t, "end": end, "description": f"a {name} screen"})
            outs.append(CaptionOutput(text=json.dumps({"events": events})))
        return outs

    def close(self) -> None:
        pass


class GarbageCaptioner:
    """Answers like a model with random weights: text that is not JSON."""

    model_id = "test/garbage"

    def describe(self, clips: Sequence[WindowClip]) -> list[CaptionOutput]:
        return [CaptionOutput(text="the the <|im_start|> 12:xx {") for _ in clips]

    def close(self) -> None:
        pass


class GatedCaptioner(ColourCaptioner):
    """The colour captioner, holding each call until the test opens ``gate``.

    ``waiting`` is set once a call has arrived.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def describe(self, clips: Sequence[WindowClip]) -> list[CaptionOutput]:
        self.waiting.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return super().describe(clips)


class GroundingCaptioner:
    """Answers grounding windows from the pixels: the span of the frames of the queried colour.

    The span is in the clip's absolute source time (``index / fps``), from the first
    frame of the colour named in the window's query to the next sampled frame after
    the last one (or the window end). A clip without that colour gets a sentence,
    not a span. Records the clips of every call.
    """

    model_id = "test/grounding"

    def __init__(self) -> None:
        self.calls: list[list[WindowClip]] = []

    def describe(self, clips: Sequence[WindowClip]) -> list[CaptionOutput]:
        self.calls.append(list(clips))
        return [CaptionOutput(text=self._answer(clip)) for clip in clips]

    @staticmethod
    def _answer(clip: WindowClip) -> str:
        query = clip.window.query or ""
        times = [i / clip.fps for i in clip.window.frame_indices]
        hits = [k for k, frame in enumerate(clip.frames) if colour_name(frame) in query]
        if not hits:
            return "I cannot see that in the clip."
        last = hits[-1]
        end = times[last + 1] if last + 1 < len(times) else clip.window.end_seconds
        return json.dumps({"start": times[hits[0]], "end": end})

    def close(self) -> None:
        pass


class FixedAnswerCaptioner:
    """Answers every clip with the same text."""

    model_id = "test/fixed"

    def __init__(self, text: str) -> None:
        self.text = text
        self.calls = 0

    def describe(self, clips: Sequence[WindowClip]) -> list[CaptionOutput]:
        self.calls += 1
        return [CaptionOutput(text=self.text) for _ in clips]

    def close(self) -> None:
        pass
