"""Train the learned video ranking (``vidseek/server/search/video_ranker.json``).

Data: the ActivityNet Captions *training* annotations
(``../shared/data/activitynet_train.json``: 10,009 videos, none of them in val_1 or
val_2, which ``search_quality.py`` evaluates on). Each video's sentences are split
as the benchmark splits annotators: the even ones are indexed as events, the odd
ones are queries. 1,500 videos (seeded) are held out for validation; up to 8,000
queries of the other videos (seeded) are the training lists.

Each query runs through a real :class:`SearchService` over a real Store of the
indexed half, and :meth:`SearchService.video_features` gives its candidate videos
and their features: the ranker learns from exactly what it will see when serving.
Then it is fitted (:func:`~vidseek.server.search.video_ranker.fit`: deterministic),
written, and checked on the validation videos: video R@1 and the benchmark's full
table, with and without it, beside the dense-only and BM25-only baselines.

    python benchmarks/train_video_ranker.py [--out PATH] [--fit-queries 8000]
        [--candidate-videos 50 --dense-candidates 200]

``--candidate-videos``/``--dense-candidates`` widen the candidate set the ranker
chooses from (``RankingParams``; the shipped model uses the defaults), to measure
what breadth buys; write such a model elsewhere with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.search_quality import (  # noqa: E402
    CACHE_DIR,
    DATA_DIR,
    Corpus,
    PrecomputedEmbedder,
    Segment,
    bm25_only,
    build_store,
    dense_only,
    embed_cached,
    evaluate,
    machine,
    table,
    vidseek_search,
)
from vidseek.indexer.embedder import DEFAULT_EMBEDDER, load_embedder  # noqa: E402
from vidseek.server.search import RankingParams, SearchQuery, SearchService  # noqa: E402
from vidseek.server.search.video_ranker import FEATURES, VideoRanker, fit  # noqa: E402

OUT = REPO / "server" / "search" / "video_ranker.json"
HELD_OUT_VIDEOS = 1500


def training_corpus(data_dir: Path = DATA_DIR) -> tuple[Corpus, set[str]]:
    """Indexed (even) and query (odd) sentences of the training file; held-out videos."""
    data = json.loads((data_dir / "activitynet_train.json").read_text())
    events: list[Segment] = []
    queries: list[Segment] = []
    for video in sorted(data):
        item = data[video]
        segs = [
            Segment(video, float(a), float(b), text.strip())
            for (a, b), text in zip(item["timestamps"], item["sentences"], strict=True)
            if text.strip()
        ]
        events += segs[0::2]
        queries += segs[1::2]
    indexed = {s.video for s in events}
    names = sorted(data)
    random.Random(1).shuffle(names)
    held_out = set(names[:HELD_OUT_VIDEOS])
    corpus = Corpus(
        events=events,
        queries=[q for q in queries if q.video in indexed],
        durations={v: float(data[v]["duration"]) for v in sorted(indexed)},
    )
    return corpus, held_out


def candidate_lists(
    service: SearchService, queries: Sequence[Segment], ids: dict[str, str]
) -> list[tuple[np.ndarray, int]]:
    """Each query's candidate features and the row of its right video (-1: not a candidate)."""
    out = []
    for n, q in enumerate(queries, start=1):
        videos, matrix = service.video_features(SearchQuery(text=q.text, min_score=-1.0))
        right = ids[q.video]
        out.append((matrix, videos.index(right) if right in videos else -1))
        if n % 2000 == 0:
            print(f"  {n}/{len(queries)} queries", file=sys.stderr, flush=True)
    return out


def video_r1(lists: Sequence[tuple[np.ndarray, int]], ranker: VideoRanker | None) -> float:
    """Share of lists whose right video scores first (hand-set video score without a ranker)."""
    hits = 0
    for matrix, label in lists:
        if label < 0 or not len(matrix):
            continue
        if ranker is None:  # the hand-set score: (best relevance + 0.5 * mean of best) / 1.5
            score = (
                matrix[:, FEATURES.index("best_relevance")]
                + 0.5 * matrix[:, FEATURES.index("mean_best_cosine")]
            )
        else:
            score = ranker.logits(matrix)
        hits += int(np.argmax(score) == label)
    return hits / max(1, len(lists))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--fit-queries", type=int, default=8000)
    parser.add_argument("--candidate-videos", type=int, default=RankingParams.candidate_videos)
    parser.add_argument("--dense-candidates", type=int, default=RankingParams.dense_candidates)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    embedder = load_embedder(DEFAULT_EMBEDDER)
    corpus, held_out = training_corpus()
    vecs = embed_cached(embedder, [e.text for e in corpus.events], CACHE_DIR)
    texts = [q.text for q in corpus.queries]
    cached = PrecomputedEmbedder(embedder, texts, embed_cached(embedder, texts, CACHE_DIR))
    fit_queries = [q for q in corpus.queries if q.video not in held_out]
    random.Random(2).shuffle(fit_queries)
    fit_queries = fit_queries[: args.fit_queries]
    val_queries = [q for q in corpus.queries if q.video in held_out]
    with tempfile.TemporaryDirectory(prefix="vidseek-train-ranker-") as tmp:
        store, ids = build_store(Path(tmp), corpus, vecs)
        try:
            params = RankingParams(
                candidate_videos=args.candidate_videos, dense_candidates=args.dense_candidates
            )
            plain = SearchService(store, cached, params=params)
            print(f"index: {len(corpus.events)} events of {len(ids)} videos", flush=True)
            lists = candidate_lists(plain, fit_queries, ids)
            ranker = fit(
                lists,
                trained_on=(
                    f"activitynet_train.json: {len(lists)} queries of "
                    f"{len(ids) - HELD_OUT_VIDEOS} videos (odd sentences against the even "
                    "ones); seeds 1 (held-out videos) and 2 (queries)"
                ),
            )
            ranker.save(args.out)
            val_lists = candidate_lists(plain, val_queries, ids)
            print(f"\nwrote {args.out}")
            weights = np.round(ranker.weights, 3).tolist()
            print(f"weights: {dict(zip(ranker.feature_names, weights, strict=True))}")
            print(
                f"video R@1 on {len(val_queries)} validation queries: hand-set "
                f"{100 * video_r1(val_lists, None):.1f}, learned "
                f"{100 * video_r1(val_lists, ranker):.1f}; right video among the "
                f"candidates: {100 * np.mean([label >= 0 for _, label in val_lists]):.1f}%"
            )
            learned = SearchService(store, cached, params=params, video_ranker=ranker)
            rows = {
                "vidseek with learned video ranking": evaluate(
                    "learned", vidseek_search(learned), val_queries, ids
                ),
                "vidseek (hand-set video score)": evaluate(
                    "hand-set", vidseek_search(plain), val_queries, ids
                ),
                "baseline: BM25 only": evaluate("bm25", bm25_only(store), val_queries, ids),
                "baseline: dense only": evaluate(
                    "dense", dense_only(store, cached), val_queries, ids
                ),
            }
        finally:
            store.close()
    print(
        f"\n## Validation split of the training data ({time.strftime('%Y-%m-%d')})\n\n"
        f"Machine: {machine()}. Index: the even sentences of the {len(ids)} training "
        f"videos; queries: the odd sentences of the {HELD_OUT_VIDEOS} held-out videos "
        f"({len(val_queries)}).\n"
    )
    print(table(rows))
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
