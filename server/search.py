"""Search: a text query -> moments of videos, best first.

The pipeline, one step per method of :class:`SearchService`::

    validate -> embed -> dense leg (vector index, cosine)  \\
                      -> keyword leg (FTS5 bm25 / tsvector) -> candidate videos
    -> every event of those videos gets its cosine -> video scores
    -> moments (merge each video's strong, adjacent events) -> flat or per video
    -> min_score -> page -> [refine the page's first moments: ``refine=True``]

Scores. Every score is in [-1, 1], higher is better, and results are sorted by
the score shown:

* an event's *relevance* is ``(cosine + kw * keyword) / (1 + kw)``, where
  ``cosine`` is the query-description cosine and ``keyword`` is the event's
  keyword-match score divided by the query's best keyword-match score (so in
  [0, 1]; 0 when the keyword leg did not return it);
* a *video's* score is ``(best relevance + mw * mean cosine) / (1 + mw)``, the mean
  over its best ``mean_of_best`` events;
* a *moment's* score is its video's score minus ``alt * (video's best relevance
  - moment's best relevance)``: a video's best moment carries the video's score,
  its other moments rank lower by how much weaker their events are.

The cosine parts are absolute, so scores are comparable across queries as
similarities (a ``min_score`` of, say, 0.4 keeps the same kind of match for any
query); the keyword part is relative to the query's best keyword match, so two
queries' scores differ by at most ``kw / (1 + kw)`` of keyword evidence. The
weights are :class:`RankingParams`, chosen on the tuning half of
``benchmarks/search_quality.py``.

Paging recomputes the ranking and slices it: a page token names an offset and
the request it belongs to. Pages are consistent while the index does not change.

Filters. ``video_ids`` names videos that must exist (an unknown id is
:class:`NotFound`: it is most likely a typo or a deleted video); ``collection``
names a group of videos that may be empty or unknown (it matches nothing, no
error). Given both, a video must satisfy both.

Refinement. With ``refine=True`` and a :class:`MomentRefiner`, the first
``max_refine`` moments of the page get a second, finer look within a time
budget. Only their spans change (the score stays that of the coarse moment), and
any trouble there leaves the coarse moments: refinement never fails a search.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from vidseek.indexer.embedder import Embedder
from vidseek.storage.errors import InvalidArgument, NotFound
from vidseek.storage.store import EventRecord, Store, collection_name
from vidseek.storage.vector_index import EventFilter, EventHits

__all__ = [
    "MomentRefiner",
    "MomentResult",
    "RankingParams",
    "ScoredEvent",
    "SearchPage",
    "SearchQuery",
    "SearchService",
    "VideoHits",
    "merge_moments",
    "rank_videos",
]

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class RankingParams:
    """The weights and bounds of the ranking (see the module docstring)."""

    keyword_weight: float = 0.1
    """``kw``: weight of the relative keyword score in an event's relevance."""
    mean_weight: float = 0.5
    """``mw``: weight of the mean cosine of a video's events in its score."""
    alt_penalty: float = 0.25
    """``alt``: how much a weaker moment of a video ranks below its best one."""
    merge_margin: float = 0.05
    """Events within this relevance of their video's best are merged into moments."""
    merge_gap_seconds: float = 1.0
    """Strong events closer than this (or overlapping) merge into one moment."""
    max_overlap: float = 0.6
    """A moment overlapping a better one of its video by more than this IoU is dropped."""
    dense_candidates: int = 200
    """Events the dense leg returns (at least; more for deep pages)."""
    keyword_candidates: int = 100
    """Events the keyword leg returns (at least; more for deep pages)."""
    candidate_videos: int = 50
    """Videos scored and merged (at least; more for deep pages)."""
    events_per_video: int = 20
    """Events fetched per candidate video (its best ones) to score and merge it."""
    mean_of_best: int = 5
    """The mean cosine of a video's score is over its best this many events."""


def _relevance(e: ScoredEvent, p: RankingParams) -> float:
    return (e.cosine + p.keyword_weight * e.keyword) / (1.0 + p.keyword_weight)


def merge_moments(
    events: Sequence[ScoredEvent], params: RankingParams = RankingParams()
) -> list[MomentResult]:
    """Moments of the events' videos, scored by their best event's relevance.

    Per video, the events whose relevance is within ``merge_margin`` of the
    video's best are *strong*: strong events that overlap or lie within
    ``merge_gap_seconds`` of each other merge into one moment (first start to
    last end; the description is the most relevant event's). Every other event
    is a moment of its own. Sorted best first (ties: video, then time).
    """
    by_video: dict[str, list[ScoredEvent]] = defaultdict(list)
    for e in events:
        by_video[e.event.video_id].append(e)
    out: list[MomentResult] = []
    for items in by_video.values():
        rel = {id(e): _relevance(e, params) for e in items}
        floor = max(rel.values()) - params.merge_margin
        strong = sorted(
            (e for e in items if rel[id(e)] >= floor),
            key=lambda e: (e.event.start_seconds, e.event.end_seconds, e.event.id),
        )
        out.extend(_moment([e], rel) for e in items if rel[id(e)] < floor)
        group: list[ScoredEvent] = []
        end = -math.inf
        for e in strong:
            if group and e.event.start_seconds > end + params.merge_gap_seconds:
                out.append(_moment(group, rel))
                group = []
            group.append(e)
            end = max(end, e.event.end_seconds)
        if group:
            out.append(_moment(group, rel))
    out.sort(key=lambda m: (-m.score, m.video_id, m.start_seconds, m.end_seconds))
    return out


def _moment(group: Sequence[ScoredEvent], rel: dict[int, float]) -> MomentResult:
    best = max(group, key=lambda e: (rel[id(e)], -e.event.id))
    return MomentResult(
        video_id=best.event.video_id,
        start_seconds=min(e.event.start_seconds for e in group),
        end_seconds=max(e.event.end_seconds for e in group),
        description=best.event.text,
        score=rel[id(best)],
        event_ids=tuple(e.event.id for e in group),
        best_event_id=best.event.id,
    )


def _iou(a: MomentResult, b: MomentResult) -> float:
    inter = min(a.end_seconds, b.end_seconds) - max(a.start_seconds, b.start_seconds)
    union = max(a.end_seconds, b.end_seconds) - min(a.start_seconds, b.start_seconds)
    return max(0.0, inter) / union if union > 0 else 1.0


def rank_videos(
    events: Iterable[ScoredEvent],
    params: RankingParams = RankingParams(),
    *,
    depth: int | None = None,
    grouped: bool = False,
) -> list[VideoHits]:
    """Score each video of ``events`` and its moments; videos best first.

    ``events`` should hold at least each video's best ``mean_of_best`` events (in
    the requested time range): a video's score averages their cosines. With ``depth``,
    only the videos that can place a moment among the best ``depth`` moments
    (``grouped``: the best ``depth`` videos) are returned, each with at most
    ``depth`` moments when not ``grouped``.
    """
    by_video: dict[str, list[ScoredEvent]] = defaultdict(list)
    for e in events:
        by_video[e.event.video_id].append(e)
    scored: list[tuple[float, str, float]] = []
    for video_id, items in by_video.items():
        best = max(_relevance(e, params) for e in items)
        cosines = heapq.nlargest(params.mean_of_best, (e.cosine for e in items))
        mean = sum(cosines) / len(cosines)
        score = _f32((best + params.mean_weight * mean) / (1.0 + params.mean_weight))
        scored.append((score, video_id, best))
    scored.sort(key=lambda t: (-t[0], t[1]))
    out: list[VideoHits] = []
    top: list[float] = []  # min-heap of the best `depth` moment scores so far
    for score, video_id, best in scored:
        if depth is not None:
            if grouped and len(out) >= depth:
                break
            # A moment never outscores its video, and videos come best first.
            if not grouped and len(top) >= depth and top[0] >= score:
                break
        kept: list[MomentResult] = []
        for m in merge_moments(by_video[video_id], params):
            if all(_iou(m, k) <= params.max_overlap for k in kept):
                kept.append(m)
                # Flat: a video's moments come best first, so past its first `depth`
                # none can reach the best `depth` of all.
                if depth is not None and not grouped and len(kept) >= depth:
                    break
        moments = tuple(
            replace(m, score=_f32(max(-1.0, score - params.alt_penalty * (best - m.score))))
            for m in kept
        )
        if depth is not None and not grouped:
            for m in moments:
                if len(top) < depth:
                    heapq.heappush(top, m.score)
                elif m.score > top[0]:
                    heapq.heapreplace(top, m.score)
        out.append(VideoHits(video_id=video_id, score=score, moments=moments))
    return out


def _f32(x: float) -> float:
    # The wire carries scores as float32: rounding here keeps a moment whose score
    # a client sends back as min_score (a float32 too) above that cut.
    return float(np.float32(x))


def flatten(videos: Sequence[VideoHits]) -> list[MomentResult]:
    """All moments of ``videos`` best first (ties keep the video order)."""
    keyed = (
        [((-m.score, vi, mi), m) for mi, m in enumerate(v.moments)] for vi, v in enumerate(videos)
    )
    return [m for _, m in heapq.merge(*keyed)]


@dataclass(frozen=True)
class _Plan:
    text: str
    top_k: int
    offset: int
    video_ids: tuple[str, ...] | None
    start: float | None
    end: float | None
    per_video: int
    fingerprint: str = field(repr=False)
    # `video_ids` is () when the filters admit no video (e.g. an unknown collection).

    def overlaps(self, start: float, end: float) -> bool:
        """Whether the span [start, end] meets the requested time range."""
        if self.start is not None and end < self.start:
            return False
        return self.end is None or start <= self.end


class SearchService:
    """Answers text queries with moments, validating the request first.

    ``keyword=False`` drops the keyword leg (dense retrieval only); otherwise it
    runs on up to ``keyword_threads`` threads beside the dense leg. ``refiner``
    serves ``refine=True`` requests: up to ``max_refine`` moments of a page, in
    at most ``refine_budget_s`` seconds; without one such requests get the
    coarse moments.
    """

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        *,
        default_top_k: int = 10,
        max_top_k: int = 1000,
        max_query_chars: int = 2000,
        default_moments_per_video: int = 3,
        max_depth: int = 10_000,
        max_filter_videos: int = 1000,
        keyword: bool = True,
        params: RankingParams | None = None,
        refiner: MomentRefiner | None = None,
        max_refine: int = 5,
        refine_budget_s: float = 20.0,
        keyword_threads: int = 8,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.default_top_k = default_top_k
        self.max_top_k = max_top_k
        self.max_query_chars = max_query_chars
        self.default_moments_per_video = default_moments_per_video
        self.max_depth = max_depth
        self.max_filter_videos = max_filter_videos
        self.keyword = keyword
        self._keyword_pool = ThreadPoolExecutor(keyword_threads, "vidseek-keyword")
        self.params = params or RankingParams()
        self.refiner = refiner
        self.max_refine = max_refine
        self.refine_budget_s = refine_budget_s

    # ---- validation and page tokens ---------------------------------------------

    def _plan(self, q: SearchQuery) -> _Plan:
        text = q.text.strip()
        if not text:
            raise InvalidArgument("query is empty", field="query")
        if len(q.text) > self.max_query_chars:
            raise InvalidArgument(
                f"query is {len(q.text)} characters; the limit is {self.max_query_chars}",
                field="query",
            )
        if not 0 <= q.top_k <= self.max_top_k:
            raise InvalidArgument(
                f"top_k must be between 1 and {self.max_top_k} (0 for the default "
                f"{self.default_top_k}), got {q.top_k}",
                field="top_k",
            )
        if not 0 <= q.moments_per_video <= self.max_top_k:
            raise InvalidArgument(
                f"moments_per_video must be between 1 and {self.max_top_k} (0 for the "
                f"default {self.default_moments_per_video}), got {q.moments_per_video}",
                field="moments_per_video",
            )
        if not math.isfinite(q.min_score):
            raise InvalidArgument(
                f"min_score must be a finite number, got {q.min_score}", field="min_score"
            )
        start, end = q.start_seconds, q.end_seconds
        for name, value in (("start_seconds", start), ("end_seconds", end)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise InvalidArgument(
                    f"{name} must be a finite number >= 0, got {value}", field=name
                )
        if start is not None and end is not None and end < start:
            raise InvalidArgument(
                f"inverted time range: end_seconds {end} is before start_seconds {start}",
                field="end_seconds",
            )
        collection = collection_name(q.collection)
        requested = self._video_filter(q.video_ids)
        fingerprint = hashlib.blake2b(
            json.dumps(
                [
                    text,
                    requested,
                    start,
                    end,
                    q.group_by_video,
                    q.moments_per_video,
                    q.min_score,
                    collection,
                ]
            ).encode(),
            digest_size=8,
        ).hexdigest()
        video_ids = requested
        if collection:
            members = self.store.video_ids_in_collection(collection)
            video_ids = (
                members if requested is None else tuple(sorted(set(requested) & set(members)))
            )
        top_k = q.top_k or self.default_top_k
        offset = self._parse_page_token(q.page_token, fingerprint)
        if offset + top_k > self.max_depth:
            raise InvalidArgument(
                f"page_token + top_k reach past result {self.max_depth}, the deepest served"
            )
        return _Plan(
            text=text,
            top_k=top_k,
            offset=offset,
            video_ids=video_ids,
            start=start,
            end=end,
            per_video=q.moments_per_video or self.default_moments_per_video,
            fingerprint=fingerprint,
        )

    def _video_filter(self, ids: Sequence[str]) -> tuple[str, ...] | None:
        if not ids:
            return None
        wanted = tuple(sorted({i.strip() for i in ids}))
        if "" in wanted:
            raise InvalidArgument("video_ids contains an empty id", field="video_ids")
        if len(wanted) > self.max_filter_videos:
            raise InvalidArgument(
                f"video_ids names {len(wanted)} videos; the limit is {self.max_filter_videos}",
                field="video_ids",
            )
        missing = set(wanted) - self.store.existing_video_ids(wanted)
        if missing:
            raise NotFound(f"unknown video id(s) in filter: {', '.join(sorted(missing))}")
        return wanted

    @staticmethod
    def _page_token(offset: int, fingerprint: str) -> str:
        raw = f"1:{offset}:{fingerprint}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _parse_page_token(token: str, fingerprint: str) -> int:
        if not token:
            return 0
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            version, offset, fp = raw.split(":")
            if version != "1" or not offset.isdigit():
                raise ValueError(raw)
        except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise InvalidArgument(f"invalid page_token {token[:40]!r}", field="page_token") from exc
        if fp != fingerprint:
            raise InvalidArgument(
                "page_token belongs to a different request (query, filters and grouping "
                "must stay the same across pages)"
            )
        return int(offset)

    # ---- retrieval ----------------------------------------------------------------

    def validate(self, q: SearchQuery) -> int:
        """Raise InvalidArgument/NotFound for a bad request; returns the effective top_k."""
        return self._plan(q).top_k

    def gather(self, q: SearchQuery) -> list[ScoredEvent]:
        """The best events of the candidate videos (in the time range), with their scores.

        The step before ranking: :func:`rank_videos` turns its result into
        videos and moments. Validates the request like :meth:`search_page`.
        The events' ``text`` is empty (search reads texts for its page only).
        """
        return self._gather(self._plan(q))

    def _gather(self, plan: _Plan) -> list[ScoredEvent]:
        """Candidate events with their scores, from a bounded number of neighbours.

        1. The dense leg asks the index for the ``dense_candidates`` nearest
           events admitted by the filters (videos and time range go into FAISS
           as a bitmap, so nothing is read and then thrown away); the keyword
           leg asks SQL for its ``keyword_candidates`` best matches.
        2. Candidate videos: the ``candidate_videos`` videos with the most
           relevant event in either leg, grouped from the index's event table.
        3. Evidence per candidate video: the best ``events_per_video`` events per
           candidate, pooled. When step 1 already returned that many events of
           the candidates, they are the best ones (anything it missed scores
           lower), so no second search is needed; otherwise one search restricted
           to the candidates.

        Every step is bounded by the page depth, never by the size of the
        library, and no event text is read: the page's texts are read at the end.
        Returned events carry an empty ``text``.
        """
        if plan.video_ids == ():
            return []
        p = self.params
        # Deep pages need more candidates: a page of n moments (or videos) needs n videos.
        scale = max(1, -(-(plan.offset + plan.top_k + 1) // p.candidate_videos))
        # The keyword leg (SQLite or PostgreSQL) runs while this thread embeds the
        # query and searches FAISS: all three release the GIL.
        pending = (
            self._keyword_pool.submit(
                self.store.keyword_search, plan.text, p.keyword_candidates * scale, plan.video_ids
            )
            if self.keyword
            else None
        )
        vec = self.embedder.embed([plan.text])[0]
        where = EventFilter(video_ids=plan.video_ids, start=plan.start, end=plan.end)
        k = p.dense_candidates * scale
        dense = self.store.search_events(vec, k, where)
        spans: dict[int, tuple[str, float, float]] = {}
        keyword: dict[int, float] = {}
        if pending is not None:
            hits = pending.result()
            top = hits[0][1] if hits else 0.0
            spans = self.store.describe_events([i for i, _ in hits])
            keyword = {
                i: (s / top if top > 0 else 0.0)
                for i, s in hits
                if i in spans and plan.overlaps(spans[i][1], spans[i][2])
            }
        cosines = _cosines(dense, spans)
        floor = dense.scores[-1] if len(dense) >= k else -1.0
        best: dict[str, float] = {}
        for i in cosines.keys() | keyword.keys():
            s = (cosines.get(i, floor) + p.keyword_weight * keyword.get(i, 0.0)) / (
                1.0 + p.keyword_weight
            )
            video = spans[i][0]
            if s > best.get(video, -math.inf):
                best[video] = s
        videos = sorted(best, key=lambda v: (-best[v], v))[: p.candidate_videos * scale]
        if not videos:
            return []
        chosen = set(videos)
        k = len(videos) * p.events_per_video
        ours = [i for i in cosines if spans[i][0] in chosen]
        if len(ours) >= k or len(dense) < p.dense_candidates * scale:
            cosines = {i: cosines[i] for i in ours[:k]}
        else:
            more = self.store.search_events(vec, k, replace(where, video_ids=videos))
            cosines = _cosines(more, spans)
        floor = min(cosines.values()) if len(cosines) >= k else -1.0
        out = []
        for i in cosines.keys() | keyword.keys():
            video, start, end = spans[i]
            if video in chosen:
                # A keyword hit outside the dense top-k scores at most the last cosine.
                event = EventRecord(i, video, start, end, text="")
                out.append(ScoredEvent(event, cosines.get(i, floor), keyword.get(i, 0.0)))
        return out

    # ---- search -------------------------------------------------------------------

    def search_page(self, q: SearchQuery, deadline: float | None = None) -> SearchPage:
        """One page of moments (flat) or of videos (``group_by_video``), best first.

        ``deadline`` (a :func:`time.monotonic` instant; ``None``: none) bounds
        refinement together with ``refine_budget_s``; retrieval ignores it.
        """
        plan = self._plan(q)
        depth = plan.offset + plan.top_k + 1
        videos = rank_videos(self._gather(plan), self.params, depth=depth, grouped=q.group_by_video)
        if q.group_by_video:
            groups: list[VideoHits] = []
            for v in videos:
                moments = tuple(m for m in v.moments if m.score >= q.min_score)
                if moments and v.score >= q.min_score:
                    groups.append(replace(v, moments=moments[: plan.per_video]))
            page = groups[plan.offset : plan.offset + plan.top_k]
            more = len(groups) > plan.offset + plan.top_k
            described = iter(self._describe([m for v in page for m in v.moments]))
            kept = [(v, [m for _ in v.moments if (m := next(described))]) for v in page]
            page = [
                replace(v, video_uri=ms[0].video_uri, moments=tuple(ms)) for v, ms in kept if ms
            ]
            if q.refine:
                refined = iter(
                    self._refine(plan.text, [m for v in page for m in v.moments], deadline)
                )
                page = [replace(v, moments=tuple(next(refined) for _ in v.moments)) for v in page]
            flat = tuple(m for v in page for m in v.moments)
            return SearchPage(
                moments=flat, videos=tuple(page), next_page_token=self._next(plan, more)
            )
        ranked = [m for m in flatten(videos) if m.score >= q.min_score]
        chunk = ranked[plan.offset : plan.offset + plan.top_k]
        more = len(ranked) > plan.offset + plan.top_k
        chunk = [m for m in self._describe(chunk) if m is not None]
        if q.refine:
            chunk = self._refine(plan.text, chunk, deadline)
        return SearchPage(moments=tuple(chunk), next_page_token=self._next(plan, more))

    def _describe(self, moments: Sequence[MomentResult]) -> list[MomentResult | None]:
        """``moments`` with their descriptions and video URIs read from SQL (for a page
        only); None for a moment whose event was deleted since the index answered."""
        texts = self.store.event_texts({m.best_event_id for m in moments})
        uris = self.store.video_uris({m.video_id for m in moments})
        return [
            replace(m, description=texts[m.best_event_id], video_uri=uris.get(m.video_id, ""))
            if m.best_event_id in texts
            else None
            for m in moments
        ]

    def _refine(
        self, text: str, moments: list[MomentResult], deadline: float | None
    ) -> list[MomentResult]:
        """``moments`` with the first ``max_refine`` refined where the refiner could."""
        n = min(self.max_refine, len(moments))
        if self.refiner is None or n <= 0:
            return moments
        now = time.monotonic()
        until = now + self.refine_budget_s
        if deadline is not None:
            until = min(until, deadline)
        if until <= now:
            log.info("no time left to refine %d moments; returning them coarse", n)
            return moments
        head = moments[:n]
        try:
            answers = self.refiner.refine(text, head, until)
        except Exception:
            log.exception("refiner failed; returning %d coarse moments", n)
            return moments
        if len(answers) != n:
            log.error("refiner returned %d results for %d moments; ignored", len(answers), n)
            return moments
        return [*map(_refined, head, answers), *moments[n:]]

    def _next(self, plan: _Plan, more: bool) -> str:
        offset = plan.offset + plan.top_k
        if not more or offset >= self.max_depth:
            return ""
        return self._page_token(offset, plan.fingerprint)

    def search(self, q: SearchQuery) -> list[MomentResult]:
        """The moments of the first page (see :meth:`search_page`), best first."""
        return list(self.search_page(q).moments)


def _cosines(hits: EventHits, spans: dict[int, tuple[str, float, float]]) -> dict[int, float]:
    """Event id -> cosine of ``hits`` (best first); their (video, start, end) go into ``spans``."""
    ids = hits.ids.tolist()
    where = zip(hits.videos, hits.start.tolist(), hits.end.tolist(), strict=True)
    spans.update(zip(ids, where, strict=True))
    return dict(zip(ids, hits.scores.tolist(), strict=True))


def _refined(coarse: MomentResult, answer: MomentResult) -> MomentResult:
    """``coarse`` with the refined span of ``answer`` (only the span is taken)."""
    start, end = answer.start_seconds, answer.end_seconds
    if not answer.refined or answer.video_id != coarse.video_id:
        return coarse
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start <= end):
        log.warning("refiner returned an invalid span [%s, %s]; kept the coarse one", start, end)
        return coarse
    return replace(
        coarse,
        start_seconds=start,
        end_seconds=end,
        coarse_start_seconds=coarse.start_seconds,
        coarse_end_seconds=coarse.end_seconds,
        refined=True,
    )
