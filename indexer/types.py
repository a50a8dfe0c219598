"""Plain data types shared by the indexer stages (probe -> plan -> decode -> caption)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["CaptionOutput", "ParsedEvent", "VideoInfo", "Window", "WindowClip"]


@dataclass(frozen=True)
class VideoInfo:
    """What probing a video file found out."""

    path: str
    fps: float
    frame_count: int
    duration: float
    width: int
    height: int
    codec: str = ""
    rotation: int = 0
    vfr: bool = False
    """Variable frame rate: frame ``i`` is then the frame on screen at ``i / fps``
    (see :mod:`vidseek.indexer.video`), not the ``i``-th frame of the stream."""


@dataclass(frozen=True)
class Window:
    """A span of the source video captioned in one model call.

    Frame indices are absolute indices into the source video; seconds are
    ``index / fps`` of the source, so the model reads absolute timestamps.

    ``query`` turns the call into a grounding request: instead of captioning every
    event, the model is asked for the one span that matches the query (search
    refinement). ``None`` (ingestion) asks for dense captions.
    """

    index: int
    start_seconds: float
    end_seconds: float
    frame_indices: tuple[int, ...]
    query: str | None = None


@dataclass
class WindowClip:
    """A decoded window, ready for a captioner.

    ``frames`` is ``(T, H, W, 3)`` uint8 RGB with H and W multiples of 32 and T
    even (Qwen3-VL merges frames in temporal pairs).
    """

    window: Window
    frames: npt.NDArray[np.uint8]
    fps: float
    total_frames: int


@dataclass(frozen=True)
class CaptionOutput:
    """The raw answer of a captioner for one window, kept verbatim for audit.

    ``engine_seconds``, when the engine reports it (vLLM with its stats on), splits the
    request's time in the engine: ``render`` (preparing its inputs), ``queued`` (waiting
    to be scheduled), ``prefill`` (scheduled to first token), ``decode`` (first to last
    token) and ``transit`` (the rest: the hand-over to the engine core and back).
    """

    text: str
    prompt_tokens: int = 0
    output_tokens: int = 0
    engine_seconds: dict[str, float] | None = None


@dataclass(frozen=True)
class ParsedEvent:
    """One event parsed from model output, clamped to its window."""

    start_seconds: float
    end_seconds: float
    description: str
    extra: dict[str, str] = field(default_factory=dict)
