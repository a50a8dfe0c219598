"""Typed results of the SDK (plain dataclasses; never protobuf messages)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Event", "IngestJob", "JobState", "Moment", "Video"]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        """True once the job will not change any more."""
        return self in (JobState.SUCCEEDED, JobState.FAILED)


@dataclass(frozen=True)
class Moment:
    """A span of one video that matches a query."""

    video_id: str
    start_seconds: float
    end_seconds: float
    description: str
    score: float
    event_ids: tuple[int, ...]
    video_uri: str


@dataclass(frozen=True)
class IngestJob:
    job_id: str
    uri: str
    state: JobState
    video_id: str
    windows_total: int
    windows_done: int
    windows_unparsed: int
    events_indexed: int
    error: str
    plan: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Video:
    video_id: str
    uri: str
    content_hash: str
    duration_seconds: float
    fps: float
    width: int
    height: int
    frame_count: int
    event_count: int
    created_at: float


@dataclass(frozen=True)
class Event:
    event_id: int
    start_seconds: float
    end_seconds: float
    description: str
