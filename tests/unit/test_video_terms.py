"""Video-level words in the store: kept with commits and deletes, and the query share."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from tests.support.storage import BACKENDS, add_video, database, new_window, unit_vector
from vidseek.storage.store import NewEvent, Store
from vidseek.storage.terms import document_terms

DIM = 8


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with database(request.param, tmp_path) as url:
        s = Store(url, tmp_path / "faiss.index", DIM)
        try:
            yield s
        finally:
            s.close()


def commit(store: Store, content: str, window: int, texts: list[str]) -> str:
    video = add_video(store, content)
    events = [
        NewEvent(float(i), float(i) + 1, t, unit_vector(window * 10 + i, DIM))
        for i, t in enumerate(texts)
    ]
    assert store.commit_window(new_window(video, content, window), events)
    return video


def terms(store: Store, video: str) -> dict[str, int]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT term, events FROM video_terms WHERE video_id = :v"), {"v": video}
        )
        return dict(rows.all())


def test_document_terms_are_content_words_casefolded():
    assert document_terms("The Dog chases THE dog's ball!") == {"dog", "chases", "ball"}
    assert document_terms("a " + "x" * 65) == set()


def test_commits_count_words_per_video_and_a_delete_removes_them(store: Store):
    a = commit(store, "aa" * 32, 0, ["A dog runs", "the dog sleeps"])
    # A second window of the same video adds to its counts.
    assert store.commit_window(
        new_window(a, "aa" * 32, 1), [NewEvent(70.0, 71.0, "A cat runs", unit_vector(99, DIM))]
    )
    b = commit(store, "bb" * 32, 0, ["a cat on a sofa"])
    assert terms(store, a) == {"dog": 2, "runs": 2, "sleeps": 1, "cat": 1}
    assert terms(store, b) == {"cat": 1, "sofa": 1}
    # A window committed twice counts once.
    assert not store.commit_window(new_window(b, "bb" * 32, 0), [])
    assert terms(store, b) == {"cat": 1, "sofa": 1}
    store.delete_video(a)
    assert terms(store, a) == {}
    assert terms(store, b) == {"cat": 1, "sofa": 1}


def test_term_share_weighs_rare_words_by_their_idf(store: Store):
    dog = commit(store, "aa" * 32, 0, ["a dog on a beach"])
    cat = commit(store, "bb" * 32, 0, ["a cat on a beach"])
    other = [commit(store, f"{k:02x}" * 32, 0, ["a beach at noon"]) for k in range(3, 6)]
    share = store.video_term_share("The dog at the beach, with a frisbee", [dog, cat, *other])
    idf_dog = math.log(5 / (1 + 1))
    idf_beach = max(0.0, math.log(5 / (1 + 5)))  # in every video: weighs nothing
    # "frisbee" is in no video and "the", "at", "a", "with" are stop words: no weight.
    assert idf_beach == 0.0
    assert share[dog] == pytest.approx(1.0)
    assert share[cat] == share[other[0]] == 0.0
    assert idf_dog > 0
    assert store.video_term_share("the and of", [dog]) == {}
    assert store.video_term_share("zebra", [dog]) == {dog: 0.0}
    assert store.video_term_share("dog", []) == {}
    assert np.isfinite(list(share.values())).all()


def test_word_counts_are_cached_for_their_ttl(store: Store):
    from vidseek.storage.terms import TermStats

    commit(store, "aa" * 32, 0, ["a dog"])
    cached, live = TermStats(ttl=3600.0), TermStats(ttl=0.0)
    with store.engine.connect() as conn:
        assert cached.get(conn, ["dog", "cat"]) == (1, {"dog": 1, "cat": 0})
    commit(store, "bb" * 32, 0, ["a dog and a cat"])
    with store.engine.connect() as conn:
        assert cached.get(conn, ["dog", "cat"]) == (1, {"dog": 1, "cat": 0})
        assert live.get(conn, ["dog", "cat"]) == (2, {"dog": 2, "cat": 1})
