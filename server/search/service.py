"""The search service: a text query -> a page of moments of videos, best first.

The pipeline, one step per method of :class:`SearchService`::

    validate -> embed -> dense leg (vector index, cosine)  \\
                      -> keyword leg (FTS5 bm25 / tsvector) -> candidate videos
    -> every event of those videos gets its cosine -> video scores
    -> moments (merge each video's strong, adjacent events) -> flat or per video
    -> min_score -> page -> [refine the page's first moments: ``refine=True``]

Scores are documented in :mod:`vidseek.server.search.ranking`.

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
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from vidseek.indexer.embedder import Embedder
from vidseek.server.search.ranking import RankingParams, flatten, rank_videos
from vidseek.server.search.types import (
    MomentRefiner,
    MomentResult,
    ScoredEvent,
    SearchPage,
    SearchQuery,
    VideoHits,
)
from vidseek.server.search.video_ranker import VideoFacts, VideoRanker, features
from vidseek.storage.errors import InvalidArgument, NotFound
from vidseek.storage.store import EventRecord, Store, collection_name
from vidseek.storage.vector_index import EventFilter, EventHits

__all__ = ["SearchService"]

log = logging.getLogger(__name__)


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
    coarse moments. ``video_ranker`` scores the candidate videos with a learned
    model (:mod:`~vidseek.server.search.video_ranker`) instead of the hand-set
    video score.
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
        video_ranker: VideoRanker | None = None,
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
        self.video_ranker = video_ranker

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
        return self._gather(self._plan(q))[0]

    def video_features(self, q: SearchQuery) -> tuple[list[str], npt.NDArray[np.float64]]:
        """The candidate videos of ``q`` and the learned ranking's features of each
        (:func:`~vidseek.server.search.video_ranker.features`): what the ranker sees,
        for training it."""
        plan = self._plan(q)
        events, vec = self._gather(plan)
        return self._features(plan.text, events, vec)

    def _features(
        self, text: str, events: list[ScoredEvent], vec: npt.NDArray[np.float32]
    ) -> tuple[list[str], npt.NDArray[np.float64]]:
        by_video: dict[str, list[ScoredEvent]] = defaultdict(list)
        for e in events:
            by_video[e.event.video_id].append(e)
        context = self.store.video_context(vec, list(by_video))
        shares = self.store.video_term_share(text, list(by_video))
        facts = {
            v: VideoFacts(count, cosine, shares.get(v, 0.0))
            for v, (count, cosine) in context.items()
        }
        return features(by_video, facts, self.params)

    def _video_scores(
        self, text: str, events: list[ScoredEvent], vec: npt.NDArray[np.float32]
    ) -> dict[str, float] | None:
        if self.video_ranker is None or not events:
            return None
        videos, matrix = self._features(text, events, vec)
        return dict(zip(videos, self.video_ranker.scores(matrix).tolist(), strict=True))

    def _gather(self, plan: _Plan) -> tuple[list[ScoredEvent], npt.NDArray[np.float32]]:
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
        Returned events carry an empty ``text``; the query's vector comes with them.
        """
        if plan.video_ids == ():
            return [], np.zeros(self.embedder.dim, np.float32)
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
            return [], vec
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
        return out, vec

    # ---- search -------------------------------------------------------------------

    def search_page(self, q: SearchQuery, deadline: float | None = None) -> SearchPage:
        """One page of moments (flat) or of videos (``group_by_video``), best first.

        ``deadline`` (a :func:`time.monotonic` instant; ``None``: none) bounds
        refinement together with ``refine_budget_s``; retrieval ignores it.
        """
        plan = self._plan(q)
        depth = plan.offset + plan.top_k + 1
        events, vec = self._gather(plan)
        videos = rank_videos(
            events,
            self.params,
            depth=depth,
            grouped=q.group_by_video,
            video_scores=self._video_scores(plan.text, events, vec),
        )
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
