"""Keyword search over event text: SQLite FTS5 and PostgreSQL tsvector, one interface.

The index itself is kept by the database (migration ``0002``): SQLite triggers
on ``events`` maintain the FTS5 table and PostgreSQL computes a stored
``tsvector`` column, so it commits in the same transaction as the events.

User text never reaches a query parser as syntax: it is cut into word tokens
(unicode ``\\w+``) and each token is passed as data (an FTS5 string literal,
or a bound parameter of ``plainto_tsquery``). ``match="any"`` (default) ORs the
tokens: an event with any of the words is a candidate, ranked by how well it
matches. ``match="all"`` ANDs them. Higher scores are better: ``-bm25()`` on
SQLite, ``ts_rank_cd()`` on PostgreSQL (the two scales differ; fuse by rank,
not by value).

Stop words. PostgreSQL's ``english`` configuration drops stop words ("a",
"the", "is", ...) from queries and documents. On SQLite the query drops the same
kind of words (:data:`STOP_WORDS`, the Snowball English list that PostgreSQL
uses) unless the query has nothing else, so both engines match on content words
and a query's "a" or "the" does not make it touch most of the corpus.

Cost: both engines score every matching event before taking the top ``k``. A
word that occurs in a large share of the corpus makes an ``any`` query touch
that share (hundreds of milliseconds at 100K events on a 2-core machine);
``all`` queries touch only the intersection and answer in about a millisecond.
So an ``any`` query leaves out *common* words (:class:`TokenFrequencies`): in a
corpus of at least :data:`PRUNE_MIN_DOCS` events, a word found in more than
:data:`COMMON_FRACTION` of them, or in more than :data:`MAX_WORD_DOCS` events,
is dropped from the OR (BM25 gives such a word little weight anyway), so a
query scores a bounded number of events whatever the size of the corpus; if
every word is common, the words are ANDed instead.
Document frequencies are counted once per word and cached until the corpus
has grown or shrunk by a tenth.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Collection, Sequence
from typing import Protocol

from sqlalchemy import Connection, bindparam, text

from vidseek.storage.errors import InvalidArgument

__all__ = [
    "COMMON_FRACTION",
    "MATCH_MODES",
    "MAX_QUERY_TOKENS",
    "MAX_WORD_DOCS",
    "PRUNE_MIN_DOCS",
    "STOP_WORDS",
    "KeywordSearch",
    "TokenFrequencies",
    "content_tokens",
    "for_dialect",
    "query_tokens",
    "word_tokens",
]

MAX_QUERY_TOKENS = 64
COMMON_FRACTION = 0.05
MAX_WORD_DOCS = 1_000
PRUNE_MIN_DOCS = 10_000
_WORD = re.compile(r"\w+")


def word_tokens(text: str) -> list[str]:
    """Every word token of ``text`` (unicode ``\\w+``, NFKC, case-folded), in order."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def query_tokens(query: str) -> list[str]:
    """The first :data:`MAX_QUERY_TOKENS` distinct word tokens of ``query`` (NFKC, case-folded)."""
    return list(dict.fromkeys(word_tokens(query)))[:MAX_QUERY_TOKENS]


# Snowball's English stop words (PostgreSQL's english.stop), case-folded.
_SNOWBALL_ENGLISH = """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves what
    which who whom this that these those am is are was were be been being have has had
    having do does did doing a an the and but if or because as until while of at by for
    with about against between into through during before after above below to from up
    down in out on off over under again further then once here there when where why how
    all any both each few more most other some such no nor not only own same so than too
    very s t can will just don should now
"""
STOP_WORDS = frozenset(_SNOWBALL_ENGLISH.split())


def content_tokens(query: str) -> list[str]:
    """:func:`query_tokens` without stop words, or all of them if nothing else is left."""
    tokens = query_tokens(query)
    return [t for t in tokens if t not in STOP_WORDS] or tokens


MATCH_MODES = ("any", "all")


class KeywordSearch(Protocol):
    """One dialect's keyword search."""

    def search(
        self,
        conn: Connection,
        query: str,
        k: int,
        video_ids: Sequence[str] | None,
        match: str = "any",
        drop: Collection[str] = (),
    ) -> list[tuple[int, float]]:
        """(event id, score) of the best ``k`` matches, best first; tokens in ``drop``
        are left out (all of them ANDed if nothing else is left)."""
        ...

    def doc_count(self, conn: Connection, token: str) -> int:
        """How many events contain ``token`` (after stemming)."""
        ...


def _kept(tokens: list[str], drop: Collection[str], match: str) -> tuple[list[str], str]:
    """The tokens to search for and the mode, after leaving out ``drop``."""
    kept = [t for t in tokens if t not in drop]
    if drop and all(t in STOP_WORDS for t in kept):
        return tokens, "all"
    return kept, match


class TokenFrequencies:
    """Cached document frequencies of query words, to leave common words out of ``any``."""

    def __init__(self, keywords: KeywordSearch, max_entries: int = 50_000) -> None:
        self._keywords = keywords
        self._max = max_entries
        self._counts: dict[str, tuple[int, int]] = {}  # token -> (df, corpus size then)
        self._lock = threading.Lock()

    def common(self, conn: Connection, tokens: Sequence[str], n_docs: int) -> set[str]:
        """The ``tokens`` found in more than :data:`COMMON_FRACTION` of ``n_docs`` events
        or in more than :data:`MAX_WORD_DOCS` events."""
        if n_docs < PRUNE_MIN_DOCS:
            return set()
        out = set()
        for t in tokens:
            with self._lock:
                cached = self._counts.get(t)
            if cached is None or abs(cached[1] - n_docs) > 0.1 * cached[1]:
                cached = (self._keywords.doc_count(conn, t), n_docs)
                with self._lock:
                    if len(self._counts) >= self._max:
                        self._counts.clear()
                    self._counts[t] = cached
            if cached[0] > min(COMMON_FRACTION * n_docs, MAX_WORD_DOCS):
                out.add(t)
        return out


def _check_mode(match: str) -> None:
    if match not in MATCH_MODES:
        raise InvalidArgument(f"match must be one of {', '.join(MATCH_MODES)}, got {match!r}")


class SqliteFts5:
    """FTS5 ``MATCH`` with every token a quoted string, ranked by ``-bm25``."""

    @staticmethod
    def match_expression(query: str, match: str = "any") -> str:
        """An FTS5 query OR-ing (or AND-ing) the content tokens of ``query``, each a literal."""
        # \w+ tokens contain no double quote, so "tok" is always a plain literal;
        # FTS5 keywords (AND, NOT, NEAR) and column filters inside quotes are just text.
        return SqliteFts5._expression(content_tokens(query), match)

    @staticmethod
    def _expression(tokens: Sequence[str], match: str) -> str:
        op = " OR " if match == "any" else " AND "
        return op.join(f'"{t}"' for t in tokens)

    def doc_count(self, conn: Connection, token: str) -> int:
        """Events whose text contains ``token``."""
        stmt = text("SELECT count(*) FROM events_fts WHERE events_fts MATCH :q")
        return int(conn.execute(stmt, {"q": self._expression([token], "all")}).scalar_one())

    def search(
        self,
        conn: Connection,
        query: str,
        k: int,
        video_ids: Sequence[str] | None,
        match: str = "any",
        drop: Collection[str] = (),
    ) -> list[tuple[int, float]]:
        """(event id, -bm25) of the best ``k`` matches."""
        _check_mode(match)
        tokens, match = _kept(content_tokens(query), drop, match)
        expr = self._expression(tokens, match)
        if not expr or k <= 0 or (video_ids is not None and not video_ids):
            return []
        if video_ids is None:
            stmt = text(
                "SELECT rowid, -bm25(events_fts) AS score FROM events_fts "
                "WHERE events_fts MATCH :q ORDER BY score DESC, rowid LIMIT :k"
            )
            params: dict[str, object] = {"q": expr, "k": k}
        else:
            stmt = text(
                "SELECT events_fts.rowid, -bm25(events_fts) AS score FROM events_fts "
                "JOIN events ON events.id = events_fts.rowid "
                "WHERE events_fts MATCH :q AND events.video_id IN :vids "
                "ORDER BY score DESC, events_fts.rowid LIMIT :k"
            ).bindparams(bindparam("vids", expanding=True))
            params = {"q": expr, "k": k, "vids": list(video_ids)}
        return [(int(r[0]), float(r[1])) for r in conn.execute(stmt, params)]


class PostgresTsvector:
    """``text_tsv @@ query`` over the GIN index, ranked by ``ts_rank_cd``."""

    def search(
        self,
        conn: Connection,
        query: str,
        k: int,
        video_ids: Sequence[str] | None,
        match: str = "any",
        drop: Collection[str] = (),
    ) -> list[tuple[int, float]]:
        """(event id, ts_rank_cd) of the best ``k`` matches."""
        _check_mode(match)
        tokens, match = _kept(query_tokens(query), drop, match)
        if not tokens or k <= 0 or (video_ids is not None and not video_ids):
            return []
        # plainto_tsquery treats its argument as plain text: no operator syntax.
        # Stop words give an empty tsquery, which `||` and `&&` ignore.
        op = " || " if match == "any" else " && "
        tsquery = op.join(f"plainto_tsquery('english', :t{i})" for i in range(len(tokens)))
        params: dict[str, object] = {f"t{i}": t for i, t in enumerate(tokens)}
        params["k"] = k
        where = ""
        if video_ids is not None:
            where = " AND e.video_id IN :vids"
            params["vids"] = list(video_ids)
        stmt = text(
            f"SELECT e.id, ts_rank_cd(e.text_tsv, q.query) AS score "
            f"FROM events e, (SELECT {tsquery} AS query) q "
            f"WHERE e.text_tsv @@ q.query{where} ORDER BY score DESC, e.id LIMIT :k"
        )
        if video_ids is not None:
            stmt = stmt.bindparams(bindparam("vids", expanding=True))
        return [(int(r[0]), float(r[1])) for r in conn.execute(stmt, params)]

    def doc_count(self, conn: Connection, token: str) -> int:
        """Events whose text contains ``token`` (0 for a stop word)."""
        stmt = text("SELECT count(*) FROM events WHERE text_tsv @@ plainto_tsquery('english', :t)")
        return int(conn.execute(stmt, {"t": token}).scalar_one())


def for_dialect(dialect: str) -> KeywordSearch:
    """The keyword search of a SQLAlchemy dialect name."""
    if dialect == "sqlite":
        return SqliteFts5()
    if dialect == "postgresql":
        return PostgresTsvector()
    raise NotImplementedError(f"keyword search is not implemented for {dialect}")
