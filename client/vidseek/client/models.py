"""Typed results of the SDK (plain dataclasses; never protobuf messages)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypedDict

__all__ = [
    "Event",
    "IngestJob",
    "JobState",
    "Moment",
    "SearchOptions",
    "SearchPage",
    "Video",
    "VideoHits",
]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        """True once the job will not change any more."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Moment:
    """A span of one video that matches a query.

    ``score`` is in [-1, 1], higher is better: mostly the cosine similarity of
    the query to the matched event descriptions, comparable across queries (see
    ``Moment.score`` in the proto). ``description`` is the text of the moment's
    most relevant event. With ``refine=True`` the server may narrow the span:
    then ``refined`` is true, ``start_seconds``/``end_seconds`` are the refined
    span and ``coarse_start_seconds``/``coarse_end_seconds`` the span before.
    """

    video_id: str
    start_seconds: float
    end_seconds: float
    description: str
    score: float
    event_ids: tuple[int, ...]
    video_uri: str
    coarse_start_seconds: float | None = None
    coarse_end_seconds: float | None = None
    refined: bool = False


@dataclass(frozen=True)
class VideoHits:
    """One video's best moments (a search with ``group_by_video=True``).

    ``score`` is the video's score, which its first (best) moment carries too.
    """

    video_id: str
    score: float
    video_uri: str
    moments: tuple[Moment, ...]


class SearchPage(list[Moment]):
    """One page of search results: a ``list`` of the page's moments, best first.

    Being a plain list, it iterates, indexes and compares like one (equality
    looks only at the moments). Two attributes more:

    * ``videos``: with ``group_by_video=True``, the page's videos best first,
      each with its moments (the list then holds the same moments, in group
      order); otherwise empty.
    * ``next_page_token``: pass it as ``page_token`` to the same search for the
      next page; empty on the last page.
    """

    def __init__(
        self,
        moments: Iterable[Moment] = (),
        *,
        videos: Sequence[VideoHits] = (),
        next_page_token: str = "",
    ) -> None:
        super().__init__(moments)
        self.videos: tuple[VideoHits, ...] = tuple(videos)
        self.next_page_token = next_page_token

    def __repr__(self) -> str:
        return (
            f"SearchPage({list.__repr__(self)}, videos={self.videos!r}, "
            f"next_page_token={self.next_page_token!r})"
        )


class SearchOptions(TypedDict, total=False):
    """Keyword options of ``Client.search`` and ``Client.search_pages``.

    Every key is optional; the server validates them (a bad value raises
    :class:`~vidseek.client.InvalidArgumentError` with the reason).
    """

    video_ids: Sequence[str]
    """Only these videos (an unknown id raises NotFoundError). Default: all."""
    collection: str
    """Only videos ingested into this collection (with ``video_ids``: those in
    both). An unknown collection matches nothing."""
    start_seconds: float | None
    """Keep events ending at or after this second of their video (None: unbounded)."""
    end_seconds: float | None
    """Keep events starting at or before this second of their video (None: unbounded)."""
    min_score: float
    """Drop moments (and, grouped, videos) scoring below this. Default 0.0; -1.0 keeps all."""
    group_by_video: bool
    """Group moments by video: ``SearchPage.videos``; ``top_k`` then counts videos."""
    moments_per_video: int
    """With ``group_by_video``: most moments per video (0: the server default, 3)."""
    refine: bool
    """Ask the server to refine the spans of the page's best moments (best effort)."""
    page_token: str
    """``next_page_token`` of the previous page of the same search."""


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
    windows_skipped: int = 0
    """Windows left out because none of their frames decoded."""
    collection: str = ""
    """The collection the job's video goes into ("" for none)."""
    windows_reused: int = 0
    """Windows an earlier run had already committed (same content), not captioned again;
    equal to ``windows_total`` when the video was already indexed."""


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
    collection: str = ""
    """The collection the video was ingested into ("" for none)."""


@dataclass(frozen=True)
class Event:
    event_id: int
    start_seconds: float
    end_seconds: float
    description: str
