"""The learned video ranking: features, deterministic training, files, and search with it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.support.storage import add_video, new_window
from vidseek.server.search import RankingParams, ScoredEvent, SearchQuery, SearchService
from vidseek.server.search.video_ranker import (
    EVIDENCE,
    FEATURES,
    VideoFacts,
    VideoRanker,
    default_ranker,
    features,
    fit,
)
from vidseek.storage.errors import ConfigError
from vidseek.storage.store import EventRecord, NewEvent, Store

PARAMS = RankingParams(keyword_weight=0.1, mean_of_best=5)


def ev(i: int, video: str, cosine: float, keyword: float = 0.0) -> ScoredEvent:
    return ScoredEvent(EventRecord(i, video, float(i), float(i) + 1, ""), cosine, keyword)


def column(matrix: np.ndarray, name: str) -> list[float]:
    return [round(float(x), 6) for x in matrix[:, FEATURES.index(name)]]


def test_features_of_hand_made_candidates():
    by_video = {
        "b": [ev(3, "b", 0.5, keyword=1.0), ev(4, "b", 0.3), ev(5, "b", 0.1, keyword=0.5)],
        "a": [ev(1, "a", 0.9)],
    }
    facts = {"a": VideoFacts(event_count=10, context_cosine=0.2, term_share=0.5)}  # "b": none
    videos, m = features(by_video, facts, RankingParams(keyword_weight=0.1, mean_of_best=2))
    assert videos == ["a", "b"]
    assert column(m, "best_cosine") == [0.9, 0.5]
    assert column(m, "second_cosine") == [0.9, 0.3]  # a single event is its own second
    assert column(m, "mean_best_cosine") == [0.9, 0.4]
    assert column(m, "mean_cosine") == [0.9, 0.3]
    assert column(m, "best_relevance") == [round(0.9 / 1.1, 6), round(0.6 / 1.1, 6)]
    # Without facts, a video counts its fetched events and their mean cosine.
    assert column(m, "context_cosine") == [0.2, 0.3]
    assert column(m, "log_events") == [round(np.log(10), 6), round(np.log(3), 6)]
    assert column(m, "best_keyword") == [0.0, 1.0]
    assert column(m, "keyword_events") == [0.0, round(np.log(3), 6)]
    assert column(m, "relevance_gap") == [0.0, round((0.6 - 0.9) / 1.1, 6)]
    assert column(m, "context_gap") == [-0.1, 0.0]
    assert column(m, "term_share") == [0.5, 0.0]
    assert column(m, "term_share_gap") == [0.0, -0.5]


def synthetic_lists(n: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """Queries whose right video has the best context, while its best event is noise."""
    rng = np.random.default_rng(seed)
    lists = []
    for _ in range(n):
        m = rng.normal(size=(8, len(FEATURES)))
        right = int(rng.integers(8))
        m[right, FEATURES.index("context_cosine")] += 2.5
        lists.append((m, right))
    return lists


def test_training_is_deterministic_and_learns_what_identifies_the_right_video():
    train, held = synthetic_lists(400, seed=1), synthetic_lists(200, seed=2)
    names = ("best_cosine", "context_cosine", "log_events")
    first, again = fit(train, names), fit(train, names)
    assert first == again
    assert max(first.weights, key=abs) == first.weights[1] > 0
    hits = sum(int(np.argmax(first.scores(m)) == label) for m, label in held)
    by_best = sum(int(np.argmax(m[:, FEATURES.index("best_cosine")]) == y) for m, y in held)
    assert hits / len(held) > 0.8 > 0.3 > by_best / len(held)
    # Calibrated: over all candidates, the mean score is the share of right videos.
    scores = np.concatenate([first.scores(m) for m, _ in held])
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    assert scores.mean() == pytest.approx(1 / 8, abs=0.03)


def test_training_needs_a_list_that_holds_its_right_video():
    with pytest.raises(ValueError, match="nothing to learn"):
        fit([(np.zeros((3, len(FEATURES))), -1)])


def test_a_ranker_round_trips_through_its_file_and_bad_files_are_named(tmp_path: Path):
    ranker = fit(synthetic_lists(100, seed=3), ("context_cosine", "best_cosine"), trained_on="x")
    ranker.save(tmp_path / "r.json")
    assert VideoRanker.load(tmp_path / "r.json") == ranker
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json"):
        VideoRanker.load(tmp_path / "bad.json")
    data = json.loads((tmp_path / "r.json").read_text())
    data["features"] = ["context_cosine", "colour"]
    (tmp_path / "unknown.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="unknown features: colour"):
        VideoRanker.load(tmp_path / "unknown.json")
    data["features"] = ["context_cosine"]
    with pytest.raises(ConfigError, match="1 features but 2 means, 2 scales and 2 weights"):
        VideoRanker.from_json(data)


def test_the_shipped_ranker_loads_offline_and_scores_in_the_unit_interval():
    ranker = default_ranker()
    assert ranker.feature_names == EVIDENCE
    assert "activitynet_train" in ranker.trained_on
    videos, m = features(
        {"b": [ev(2, "b", 0.3), ev(3, "b", 0.2)], "a": [ev(1, "a", 0.8)]},
        {},
        RankingParams(keyword_weight=0.1, mean_of_best=5),
    )
    scores = ranker.scores(m)
    assert videos == ["a", "b"]
    assert ((scores > 0) & (scores < 1)).all()
    assert scores[0] > scores[1]  # a far better best event still wins


def test_the_shipped_ranker_never_scores_a_video_lower_for_better_evidence():
    ranker = default_ranker()
    assert all(w >= 0 for w in ranker.weights)
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 30))
        cosines = rng.uniform(0.0, 0.6, n)
        keywords = rng.uniform(0.0, 1.0, n) * (rng.uniform(size=n) < 0.3)
        pairs = list(zip(cosines, keywords, strict=True))
        plain = [ev(i, "a", c, k) for i, (c, k) in enumerate(pairs)]
        better = [ev(i, "a", c + 0.15, k) for i, (c, k) in enumerate(pairs)]
        rival = {"b": [ev(100, "b", 0.5)]}
        facts = {"a": VideoFacts(n * 20, 0.3, 0.2), "b": VideoFacts(3, 0.4, 0.5)}
        base = features({"a": plain, **rival}, facts, PARAMS)
        better_facts = {**facts, "a": VideoFacts(n * 20, 0.35, 0.3)}
        lifted = features({"a": better, **rival}, better_facts, PARAMS)
        assert ranker.scores(lifted[1])[0] >= ranker.scores(base[1])[0]


class FixedEmbedder:
    """Every text embeds to the same query direction."""

    name = "fixed"
    dim = 8

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.tile(np.eye(1, self.dim, 0, np.float32), (len(texts), 1))


def _unit(*pairs: tuple[int, float]) -> np.ndarray:
    v = np.zeros(FixedEmbedder.dim, np.float32)
    for axis, value in pairs:
        v[axis] = value
    return v / np.linalg.norm(v)


def test_search_with_a_ranker_orders_videos_by_its_model(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'v.db'}", tmp_path / "faiss.index", FixedEmbedder.dim)
    # "lucky": one event very close to the query, two unrelated ones.
    # "steady": three events all fairly close: a video about the query as a whole.
    videos = {
        "lucky": [_unit((0, 0.95), (1, 0.31)), _unit((2, 1.0)), _unit((3, 1.0))],
        "steady": [_unit((0, 0.7), (4 + k, 0.71)) for k in range(3)],
    }
    ids = {}
    for n, (name, vectors) in enumerate(videos.items()):
        content = f"{n:02x}" * 32
        ids[add_video(store, content)] = name
        video_id = next(v for v, nm in ids.items() if nm == name)
        events = [NewEvent(10.0 * i, 10.0 * i + 5, f"{name} {i}", v) for i, v in enumerate(vectors)]
        store.commit_window(new_window(video_id, content, 0), events)
    try:
        hand_set = SearchService(store, FixedEmbedder(), keyword=False)  # type: ignore[arg-type]
        context_only = VideoRanker(
            feature_names=("context_cosine",), mean=(0.0,), scale=(1.0,), weights=(10.0,)
        )
        learned = SearchService(
            store,
            FixedEmbedder(),  # type: ignore[arg-type]
            keyword=False,
            video_ranker=context_only,
        )
        q = SearchQuery(text="the query", group_by_video=True, min_score=-1.0)
        assert [ids[v.video_id] for v in hand_set.search_page(q).videos] == ["lucky", "steady"]
        page = learned.search_page(q).videos
        assert [ids[v.video_id] for v in page] == ["steady", "lucky"]
        assert all(0.0 < v.score < 1.0 for v in page)
        # Moments of a learned video score stay in [0, 1]: the default min_score (0)
        # keeps every one, however much weaker than its video's best.
        flat = learned.search_page(SearchQuery(text="the query", top_k=10)).moments
        assert len(flat) == 6 and all(0.0 <= m.score <= 1.0 for m in flat)
        weakest = min(flat, key=lambda m: m.score)
        assert ids[weakest.video_id] == "lucky" and weakest.score < flat[0].score
        # The features it ranked by are those video_features reports.
        names, m = learned.video_features(q)
        context = dict(zip(names, column(m, "context_cosine"), strict=True))
        steady, lucky = (next(v for v in ids if ids[v] == n) for n in ("steady", "lucky"))
        assert context[steady] > context[lucky]
    finally:
        store.close()


def test_the_setting_picks_the_ranker(tmp_path: Path):
    from vidseek.server.app import load_video_ranker
    from vidseek.server.settings import load_settings

    assert load_video_ranker("off") is None
    assert load_video_ranker("learned") == default_ranker()
    default_ranker().save(tmp_path / "mine.json")
    assert load_video_ranker(str(tmp_path / "mine.json")) == default_ranker()
    assert load_settings(environ={"VIDSEEK_VIDEO_RANKER": str(tmp_path / "mine.json")})
    with pytest.raises(ConfigError, match=r"'video_ranker' = .*missing\.json.*existing ranker"):
        load_settings(environ={"VIDSEEK_VIDEO_RANKER": str(tmp_path / "missing.json")})
