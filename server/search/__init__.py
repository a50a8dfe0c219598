"""Search: a text query -> moments of videos, best first.

* :mod:`~vidseek.server.search.types`: the request and result values;
* :mod:`~vidseek.server.search.ranking`: scored events -> videos and moments;
* :mod:`~vidseek.server.search.service`: the service (validation, hybrid
  retrieval, paging, refinement).
"""

from vidseek.server.search.ranking import RankingParams, flatten, merge_moments, rank_videos
from vidseek.server.search.service import SearchService
from vidseek.server.search.types import (
    MomentRefiner,
    MomentResult,
    ScoredEvent,
    SearchPage,
    SearchQuery,
    VideoHits,
)

__all__ = [
    "MomentRefiner",
    "MomentResult",
    "RankingParams",
    "ScoredEvent",
    "SearchPage",
    "SearchQuery",
    "SearchService",
    "VideoHits",
    "flatten",
    "merge_moments",
    "rank_videos",
]
