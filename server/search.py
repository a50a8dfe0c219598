"""Search: query -> embed -> FAISS top-k' -> hydrate from SQL -> merge into moments."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from vidseek.indexer.embedder import Embedder
from vidseek.storage.errors import InvalidArgument, NotFound
from vidseek.storage.store import EventRecord, Store

__all__ = ["MomentResult", "SearchQuery", "SearchService", "merge_moments"]


@dataclass(frozen=True)
class SearchQuery:
    text: str
    top_k: int = 0
    video_ids: tuple[str, ...] = ()
    min_score: float = 0.0


@dataclass(frozen=True)
class MomentResult:
    """A span of one video: its events merged; score is the best event's cosine."""

    video_id: str
    start_seconds: float
    end_seconds: float
    description: str
    score: float
    event_ids: tuple[int, ...]
    video_uri: str = ""


def merge_moments(
    hits: Sequence[tuple[EventRecord, float]], gap_seconds: float, margin: float = 0.05
) -> list[MomentResult]:
    """Merge strong hits of one video that overlap or lie within ``gap_seconds``.

    Only hits scoring within ``margin`` of their video's best hit are merged
    (weaker neighbours would drag the span away from what was asked); the rest
    stay single-event moments. A moment spans from its first event's start to
    its last event's end; its description and score are its best event's.
    Sorted by score, best first.
    """
    by_video: dict[str, list[tuple[EventRecord, float]]] = defaultdict(list)
    for ev, score in hits:
        by_video[ev.video_id].append((ev, score))
    moments: list[MomentResult] = []
    for video_id, all_items in by_video.items():
        floor = max(s for _, s in all_items) - margin
        items = [it for it in all_items if it[1] >= floor]
        moments.extend(_moment(video_id, [it]) for it in all_items if it[1] < floor)
        items.sort(key=lambda it: (it[0].start_seconds, it[0].end_seconds))
        group: list[tuple[EventRecord, float]] = []
        end = float("-inf")
        for ev, score in items:
            if group and ev.start_seconds > end + gap_seconds:
                moments.append(_moment(video_id, group))
                group = []
            if not group:
                end = ev.end_seconds
            group.append((ev, score))
            end = max(end, ev.end_seconds)
        if group:
            moments.append(_moment(video_id, group))
    moments.sort(key=lambda m: (-m.score, m.video_id, m.start_seconds))
    return moments


def _moment(video_id: str, group: list[tuple[EventRecord, float]]) -> MomentResult:
    best_ev, best = max(group, key=lambda it: it[1])
    return MomentResult(
        video_id=video_id,
        start_seconds=min(e.start_seconds for e, _ in group),
        end_seconds=max(e.end_seconds for e, _ in group),
        description=best_ev.text,
        score=best,
        event_ids=tuple(e.id for e, _ in group),
    )


class SearchService:
    """Answers text queries with moments, validating the request first."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        *,
        default_top_k: int = 10,
        max_top_k: int = 1000,
        max_query_chars: int = 2000,
        merge_gap_seconds: float = 1.0,
        candidates_per_result: int = 5,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.default_top_k = default_top_k
        self.max_top_k = max_top_k
        self.max_query_chars = max_query_chars
        self.merge_gap_seconds = merge_gap_seconds
        self.candidates_per_result = candidates_per_result

    def validate(self, q: SearchQuery) -> int:
        """Raise InvalidArgument/NotFound for a bad request; returns the effective top_k."""
        text = q.text.strip()
        if not text:
            raise InvalidArgument("query is empty")
        if len(q.text) > self.max_query_chars:
            raise InvalidArgument(
                f"query is {len(q.text)} characters; the limit is {self.max_query_chars}"
            )
        if q.top_k < 0 or q.top_k > self.max_top_k:
            raise InvalidArgument(f"top_k must be between 1 and {self.max_top_k}, got {q.top_k}")
        if q.video_ids:
            missing = set(q.video_ids) - self.store.existing_video_ids(q.video_ids)
            if missing:
                raise NotFound(f"unknown video id(s) in filter: {', '.join(sorted(missing))}")
        return q.top_k or self.default_top_k

    def search(self, q: SearchQuery) -> list[MomentResult]:
        """Moments for the query, best first, at most ``top_k``."""
        top_k = self.validate(q)
        vec = self.embedder.embed([q.text.strip()])[0]
        allowed = self.store.event_ids_of_videos(q.video_ids) if q.video_ids else None
        scores, ids = self.store.index.search(vec, top_k * self.candidates_per_result, allowed)
        events = self.store.hydrate([int(i) for i in ids])
        hits = [
            (events[int(i)], float(s))
            for s, i in zip(scores, ids, strict=True)
            if int(i) in events and float(s) >= q.min_score
        ]
        moments = merge_moments(hits, self.merge_gap_seconds)[:top_k]
        uris = self.store.video_uris({m.video_id for m in moments})
        return [
            MomentResult(**{**m.__dict__, "video_uri": uris.get(m.video_id, "")}) for m in moments
        ]
