"""What the store takes and gives: records of videos, windows and events, and their ids.

Window and event ids are deterministic (hashes of the content and the window), so
a window committed twice is recognised and skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vidseek.storage.errors import InvalidArgument
from vidseek.storage.models import MAX_COLLECTION_CHARS, EventRow, VideoRow

__all__ = [
    "EventRecord",
    "NewEvent",
    "NewWindow",
    "VideoRecord",
    "collection_name",
    "event_id_for",
    "event_record",
    "video_record",
    "window_id_for",
]

_INT63 = (1 << 63) - 1


def collection_name(name: str) -> str:
    """``name`` stripped; InvalidArgument if longer than :data:`MAX_COLLECTION_CHARS`."""
    name = name.strip()
    if len(name) > MAX_COLLECTION_CHARS:
        raise InvalidArgument(
            f"collection name is {len(name)} characters; the limit is {MAX_COLLECTION_CHARS}"
        )
    return name


def _id64(*parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _INT63


def window_id_for(
    content_hash: str, start_seconds: float, end_seconds: float, model: str, prompt_version: str
) -> int:
    """Deterministic window id: the same content and window always get the same id."""
    return _id64(
        "w", content_hash, f"{start_seconds:.3f}", f"{end_seconds:.3f}", model, prompt_version
    )


def event_id_for(window_id: int, ordinal: int) -> int:
    """Deterministic event id from its window and its position in the window's output."""
    return _id64("e", window_id, ordinal)


@dataclass(frozen=True)
class VideoRecord:
    """A registered video and how many events it has."""

    id: str
    uri: str
    content_hash: str
    duration: float
    fps: float
    width: int
    height: int
    frame_count: int
    event_count: int
    created_at: float
    collection: str = ""


@dataclass(frozen=True)
class EventRecord:
    """A committed event, as search hydrates it."""

    id: int
    video_id: str
    start_seconds: float
    end_seconds: float
    text: str


@dataclass(frozen=True)
class NewEvent:
    """An event to commit: its span, caption and L2-normalised embedding."""

    start_seconds: float
    end_seconds: float
    text: str
    embedding: npt.NDArray[np.float32]


@dataclass(frozen=True)
class NewWindow:
    """A captioned window to commit, with the model output it came from."""

    id: int
    video_id: str
    window_index: int
    start_seconds: float
    end_seconds: float
    frame_count: int
    status: str
    raw_output: str
    parse_error: str
    dropped: Sequence[str]
    model: str
    prompt_version: str
    prompt_tokens: int


def video_record(row: VideoRow, event_count: int) -> VideoRecord:
    return VideoRecord(
        id=row.id,
        uri=row.uri,
        content_hash=row.content_hash,
        duration=row.duration,
        fps=row.fps,
        width=row.width,
        height=row.height,
        frame_count=row.frame_count,
        event_count=event_count,
        created_at=row.created_at,
        collection=row.collection,
    )


def event_record(row: EventRow) -> EventRecord:
    return EventRecord(
        id=row.id,
        video_id=row.video_id,
        start_seconds=row.start_seconds,
        end_seconds=row.end_seconds,
        text=row.text,
    )
