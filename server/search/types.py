"""The search API's values: the request, its results and the refiner it may call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from vidseek.storage.store import EventRecord

__all__ = [
    "MomentRefiner",
    "MomentResult",
    "ScoredEvent",
    "SearchPage",
    "SearchQuery",
    "VideoHits",
]


@dataclass(frozen=True)
class SearchQuery:
    """One search request.

    ``top_k`` counts moments (flat) or videos (``group_by_video``); 0 means the
    default. ``start_seconds``/``end_seconds`` keep events overlapping that
    range of each video (``None``: unbounded). ``moments_per_video`` bounds each
    group (0: the default). ``page_token`` comes from a previous page of the
    same request. ``collection`` keeps the videos of that collection (with
    ``video_ids``: those in both). ``refine`` asks for refined spans of the
    page's first moments (see :class:`MomentRefiner`).
    """

    text: str
    top_k: int = 0
    video_ids: tuple[str, ...] = ()
    min_score: float = 0.0
    start_seconds: float | None = None
    end_seconds: float | None = None
    group_by_video: bool = False
    moments_per_video: int = 0
    page_token: str = ""
    collection: str = ""
    refine: bool = False


@dataclass(frozen=True)
class MomentResult:
    """A span of one video: the merged events, from the first start to the last end.

    ``description`` is the text of the moment's most relevant event
    (``best_event_id``); ``score`` is documented in this module's docstring.
    """

    video_id: str
    start_seconds: float
    end_seconds: float
    description: str
    score: float
    event_ids: tuple[int, ...]
    video_uri: str = ""
    # Set by refinement (``refine=true``): the span before it was refined.
    coarse_start_seconds: float | None = None
    coarse_end_seconds: float | None = None
    refined: bool = False
    best_event_id: int = 0


@dataclass(frozen=True)
class VideoHits:
    """One video's moments, best first, and the video's score."""

    video_id: str
    score: float
    moments: tuple[MomentResult, ...]
    video_uri: str = ""


class MomentRefiner(Protocol):
    """Finds tighter spans for moments by looking at the video again (a VLM, say)."""

    def refine(
        self, query: str, moments: Sequence[MomentResult], deadline: float
    ) -> list[MomentResult]:
        """One result per moment of ``moments``, in order, by ``deadline``.

        ``deadline`` is a :func:`time.monotonic` instant. A refined result has
        ``refined=True`` and its new span in ``start_seconds``/``end_seconds``
        (``coarse_*`` set to the input span); a moment it could not refine (no
        time left, model trouble) comes back unchanged. It should not raise for
        model trouble; :class:`SearchService` survives it if it does.
        """
        ...


@dataclass(frozen=True)
class SearchPage:
    """One page of results.

    ``moments`` is the flat list (with ``group_by_video``, the groups' moments in
    group order); ``videos`` holds the groups (empty unless ``group_by_video``).
    ``next_page_token`` is empty on the last page.
    """

    moments: tuple[MomentResult, ...]
    videos: tuple[VideoHits, ...] = ()
    next_page_token: str = ""


@dataclass(frozen=True)
class ScoredEvent:
    """An event with its query cosine and relative keyword score (in [0, 1])."""

    event: EventRecord
    cosine: float
    keyword: float = 0.0
