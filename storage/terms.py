"""Video-level words: which content words each video's events use, for search ranking.

``video_terms`` holds, per video and content word (the keyword search's tokens
without stop words, :func:`~vidseek.storage.fulltext.query_tokens`), how many of
the video's events use it. A window commit adds its events' words in the same
transaction as the events, a video delete removes them, and migration ``0004``
fills the table for events committed before it existed.

:func:`term_share` answers, for a query and a few candidate videos, the
idf-weighted share of the query's content words found anywhere in each video:
the idf is over videos (``ln(V / (1 + df))``, ``V`` the videos, ``df`` those using
the word, floored at 0; a word no video uses weighs 0), so rare words count more.
Which candidates use which words is one read by primary key, bounded by the
candidates and the query's words. Counting ``df`` and ``V`` grows with the library
(a common word is in most videos), so :class:`TermStats` caches them per word for
``ttl`` seconds: idf weights may lag the library by that long.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite

from vidseek.storage.fulltext import STOP_WORDS, query_tokens, word_tokens
from vidseek.storage.models import VideoRow, VideoTermRow

__all__ = ["MAX_TERM_CHARS", "TermStats", "add_terms", "document_terms", "term_share"]

MAX_TERM_CHARS = 64
"""Longer words are left out (the width of the ``term`` column)."""


def _content(words: Iterable[str]) -> list[str]:
    return [w for w in words if w not in STOP_WORDS and len(w) <= MAX_TERM_CHARS]


def document_terms(text: str) -> set[str]:
    """The content words of one event's text (tokenised as keyword queries are)."""
    return set(_content(word_tokens(text)))


def add_terms(conn: Connection, video_id: str, texts: Iterable[str]) -> None:
    """Count the content words of events ``texts`` into ``video_id``'s row (an upsert)."""
    counts = Counter(t for text in texts for t in document_terms(text))
    if not counts:
        return
    rows = [{"video_id": video_id, "term": t, "events": n} for t, n in sorted(counts.items())]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(VideoTermRow)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[VideoTermRow.video_id, VideoTermRow.term],
            set_={"events": VideoTermRow.events + stmt.excluded.events},
        ),
        rows,
    )


class TermStats:
    """Videos per word (``df``) and the number of videos, each cached for ``ttl`` s."""

    def __init__(self, ttl: float = 60.0, max_words: int = 100_000) -> None:
        self.ttl = ttl
        self.max_words = max_words
        self._lock = threading.Lock()
        self._df: dict[str, tuple[int, float]] = {}
        self._videos: tuple[int, float] = (0, -math.inf)

    def get(self, conn: Connection, words: Sequence[str]) -> tuple[int, dict[str, int]]:
        """The number of videos, and ``df`` of each of ``words``."""
        now = time.monotonic()
        with self._lock:
            videos, at = self._videos
            cached = {w: self._df.get(w) for w in words}
        fresh = {w: hit[0] for w, hit in cached.items() if hit and now - hit[1] < self.ttl}
        if now - at >= self.ttl:
            videos = conn.execute(select(func.count()).select_from(VideoRow)).scalar_one()
        counted = dict.fromkeys([w for w in words if w not in fresh], 0)
        if counted:
            counted.update(
                conn.execute(
                    select(VideoTermRow.term, func.count())
                    .where(VideoTermRow.term.in_(list(counted)))
                    .group_by(VideoTermRow.term)
                ).all()
            )
        with self._lock:
            if now - at >= self.ttl:
                self._videos = (videos, now)
            if len(self._df) + len(counted) > self.max_words:
                self._df.clear()
            self._df.update((w, (n, now)) for w, n in counted.items())
        return videos, {**fresh, **counted}


def term_share(
    conn: Connection, query: str, video_ids: Sequence[str], stats: TermStats | None = None
) -> dict[str, float]:
    """Each video's idf-weighted share of the query's content words (see the module doc).

    Videos without any of the words get 0; a query without content words gives {}.
    ``stats`` caches the word and video counts (none: counted now).
    """
    words = _content(query_tokens(query))
    if not words or not video_ids:
        return {}
    videos, df = (stats or TermStats(ttl=0.0)).get(conn, words)
    idf = {w: max(0.0, math.log(videos / (1 + df[w]))) if df[w] else 0.0 for w in words}
    total = sum(idf.values())
    if total <= 0:
        return dict.fromkeys(video_ids, 0.0)
    found = conn.execute(
        select(VideoTermRow.video_id, VideoTermRow.term).where(
            VideoTermRow.video_id.in_(list(video_ids)), VideoTermRow.term.in_(words)
        )
    ).all()
    share = dict.fromkeys(video_ids, 0.0)
    for video, term in found:
        share[video] += idf[term] / total
    return share
