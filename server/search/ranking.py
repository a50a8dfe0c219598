"""Ranking: scored events -> videos and their moments, best first.

Scores. Every score is in [-1, 1], higher is better, and results are sorted by
the score shown:

* an event's *relevance* is ``(cosine + kw * keyword) / (1 + kw)``, where
  ``cosine`` is the query-description cosine and ``keyword`` is the event's
  keyword-match score divided by the query's best keyword-match score (so in
  [0, 1]; 0 when the keyword leg did not return it);
* a *video's* score is ``(best relevance + mw * mean cosine) / (1 + mw)``, the mean
  over its best ``mean_of_best`` events; with the learned video ranking (the
  server's default, :mod:`~vidseek.server.search.video_ranker`), it is instead
  that model's probability that the video is the one the query describes, in
  [0, 1];
* a *moment's* score is its video's score minus ``alt * (video's best relevance
  - moment's best relevance)``: a video's best moment carries the video's score,
  its other moments rank lower by how much weaker their events are. With the
  learned ranking, it is the video's score times ``exp(-lalt * (video's best
  relevance - moment's best relevance))``, so it stays in [0, 1].

With the hand-set score, the cosine parts are absolute, so scores are comparable
across queries as similarities (a ``min_score`` of, say, 0.4 keeps the same kind of match for any
query); the keyword part is relative to the query's best keyword match, so two
queries' scores differ by at most ``kw / (1 + kw)`` of keyword evidence. The
weights are :class:`RankingParams`, chosen on the tuning half of
``benchmarks/search_quality.py``.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from vidseek.server.search.types import MomentResult, ScoredEvent, VideoHits

__all__ = ["RankingParams", "flatten", "merge_moments", "rank_videos", "relevance"]


@dataclass(frozen=True)
class RankingParams:
    """The weights and bounds of the ranking (see the module docstring)."""

    keyword_weight: float = 0.1
    """``kw``: weight of the relative keyword score in an event's relevance."""
    mean_weight: float = 0.5
    """``mw``: weight of the mean cosine of a video's events in its score."""
    alt_penalty: float = 0.25
    """``alt``: how much a weaker moment of a video ranks below its best one."""
    learned_alt_penalty: float = 5.0
    """``lalt``: the same for the learned video ranking (a factor per unit of relevance)."""
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


def relevance(e: ScoredEvent, p: RankingParams) -> float:
    """An event's relevance (see the module docstring)."""
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
        rel = {id(e): relevance(e, params) for e in items}
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
    video_scores: Mapping[str, float] | None = None,
) -> list[VideoHits]:
    """Score each video of ``events`` and its moments; videos best first.

    ``video_scores`` (e.g. from the learned video ranking) replaces the hand-set
    video score for the videos it names.

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
        best = max(relevance(e, params) for e in items)
        cosines = heapq.nlargest(params.mean_of_best, (e.cosine for e in items))
        mean = sum(cosines) / len(cosines)
        score = _f32((best + params.mean_weight * mean) / (1.0 + params.mean_weight))
        if video_scores is not None and video_id in video_scores:
            score = _f32(video_scores[video_id])
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
        learned = video_scores is not None and video_id in video_scores
        moments = tuple(
            replace(m, score=_moment_score(score, best - m.score, learned, params)) for m in kept
        )
        if depth is not None and not grouped:
            for m in moments:
                if len(top) < depth:
                    heapq.heappush(top, m.score)
                elif m.score > top[0]:
                    heapq.heapreplace(top, m.score)
        out.append(VideoHits(video_id=video_id, score=score, moments=moments))
    return out


def _moment_score(video: float, weaker: float, learned: bool, params: RankingParams) -> float:
    """A moment's score from its video's and how much weaker its best event is."""
    if learned:
        return _f32(video * math.exp(-params.learned_alt_penalty * weaker))
    return _f32(max(-1.0, video - params.alt_penalty * weaker))


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
