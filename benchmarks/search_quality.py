"""Corpus-level moment retrieval on ActivityNet Captions, through vidseek's search.

Index: the sentences of ``activitynet_val2.json`` as events (one vidseek video per
ActivityNet video, one committed window per video, real MiniLM embeddings) in a
real Store (SQLite + FAISS in a temporary directory). Queries: the sentences of
``activitynet_val1.json`` for videos present in both files.

The videos are split in two halves with a fixed seed: the ranking weights of
``vidseek.server.search.RankingParams`` were chosen on the *tune* half
(``--tune`` reruns that search); the figures are reported on the *test* half
(the default) unless ``--split`` says otherwise.

Rows: vidseek's search (SearchService: hybrid retrieval, video scores, moments)
with the learned video ranking (``video_ranker.py``, the server's default, trained
on ActivityNet's *training* videos by ``train_video_ranker.py``) and with the
hand-set video score, the latter without the keyword leg, and two baselines on the
same store: BM25 only (the store's keyword search, single events) and dense only (flat cosine over
single events, no merging). A query is a hit at (k, m) when one of its top-k
moments is in the query's video with temporal IoU >= m against its segment.

    python benchmarks/search_quality.py [--sample N --seed S] [--split test|tune|all]

``--tune`` reruns the search for the hand-set weights; ``--tune-learned`` measures
the learned ranking's moment penalty (``RankingParams.learned_alt_penalty``), both
on the tune half only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from vidseek.indexer.embedder import DEFAULT_EMBEDDER, Embedder, load_embedder
from vidseek.server.search import (
    RankingParams,
    SearchQuery,
    SearchService,
    flatten,
    rank_videos,
)
from vidseek.server.search.video_ranker import default_ranker
from vidseek.storage.store import NewEvent, NewWindow, Store, window_id_for

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CACHE_DIR = Path.home() / ".cache" / "vidseek-bench"
SPLIT_SEED = 0  # the tune/test split of the videos; fixed, so tuning never sees test videos
KS = (1, 5, 10)
LEARNED = "vidseek (hybrid, learned video ranking)"
HAND_SET = "vidseek (hybrid, hand-set video score)"
IOUS = (0.3, 0.5, 0.7)


@dataclass(frozen=True)
class Segment:
    """One annotated sentence of an ActivityNet video."""

    video: str
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Corpus:
    """Index events (val2), queries (val1, videos in both) and video durations."""

    events: list[Segment]
    queries: list[Segment]
    durations: dict[str, float]


def _segments(data: dict[str, dict[str, object]], videos: Sequence[str]) -> list[Segment]:
    out: list[Segment] = []
    for vid in videos:
        ann = data[vid]
        duration = float(ann["duration"])  # type: ignore[arg-type]
        stamps: list[list[float]] = ann["timestamps"]  # type: ignore[assignment]
        sentences: list[str] = ann["sentences"]  # type: ignore[assignment]
        for (start, end), text in zip(stamps, sentences, strict=True):
            s, e = max(0.0, float(start)), min(duration, float(end))
            if e > s and text.strip():
                out.append(Segment(vid, s, e, text.strip()))
    return out


def load_corpus(data_dir: Path = DATA_DIR) -> Corpus:
    """Read both annotation files; queries only for videos that are indexed."""
    index = json.loads((data_dir / "activitynet_val2.json").read_text())
    queries = json.loads((data_dir / "activitynet_val1.json").read_text())
    indexed = sorted(index)
    both = sorted(set(index) & set(queries))
    return Corpus(
        events=_segments(index, indexed),
        queries=_segments(queries, both),
        durations={v: float(index[v]["duration"]) for v in indexed},
    )


def embed_cached(
    embedder: Embedder, texts: Sequence[str], cache_dir: Path
) -> npt.NDArray[np.float32]:
    """Embeddings of ``texts``, read from (or written to) a cache keyed by model and texts."""
    key = hashlib.sha256("\x1e".join([embedder.name, *texts]).encode()).hexdigest()[:24]
    path = cache_dir / f"{embedder.name}-{key}.npy"
    if path.exists():
        vecs = np.load(path)
        if vecs.shape == (len(texts), embedder.dim):
            return np.ascontiguousarray(vecs, dtype=np.float32)
    print(f"embedding {len(texts)} texts (cached afterwards in {cache_dir}) ...", flush=True)
    vecs = embedder.embed(list(texts))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vecs)
    tmp.replace(path)
    return vecs


class PrecomputedEmbedder:
    """Serves cached query vectors; texts it does not know go to the real model."""

    def __init__(self, model: Embedder, texts: Sequence[str], vecs: npt.NDArray[np.float32]):
        self._model = model
        self._vecs = dict(zip(texts, vecs, strict=True))

    @property
    def dim(self) -> int:
        return self._model.dim

    @property
    def name(self) -> str:
        return self._model.name

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if all(t in self._vecs for t in texts):
            return np.stack([self._vecs[t] for t in texts]).astype(np.float32)
        return self._model.embed(texts)


def build_store(
    root: Path, corpus: Corpus, vecs: npt.NDArray[np.float32]
) -> tuple[Store, dict[str, str]]:
    """A real Store holding the corpus; returns it and ActivityNet id -> vidseek video id."""
    store = Store(f"sqlite:///{root / 'bench.db'}", root / "faiss.index", vecs.shape[1])
    by_video: dict[str, list[int]] = {}
    for i, seg in enumerate(corpus.events):
        by_video.setdefault(seg.video, []).append(i)
    ids: dict[str, str] = {}
    for vid, rows in by_video.items():
        duration = corpus.durations[vid]
        content_hash = hashlib.sha256(f"activitynet:{vid}".encode()).hexdigest()
        video_id = store.upsert_video(
            uri=f"activitynet://{vid}",
            content_hash=content_hash,
            duration=duration,
            fps=30.0,
            width=640,
            height=360,
            frame_count=round(duration * 30),
        )
        ids[vid] = video_id
        window = NewWindow(
            id=window_id_for(content_hash, 0.0, duration, "activitynet-val2", "captions"),
            video_id=video_id,
            window_index=0,
            start_seconds=0.0,
            end_seconds=duration,
            frame_count=round(duration * 30),
            status="parsed",
            raw_output="",
            parse_error="",
            dropped=(),
            model="activitynet-val2",
            prompt_version="captions",
            prompt_tokens=0,
        )
        events = [
            NewEvent(corpus.events[i].start, corpus.events[i].end, corpus.events[i].text, vecs[i])
            for i in rows
        ]
        store.commit_window(window, events)
    return store, ids


def split_queries(corpus: Corpus, split: str) -> list[int]:
    """Indices of the queries of one half of the videos ('tune', 'test') or of all."""
    videos = sorted(corpus.durations)
    random.Random(SPLIT_SEED).shuffle(videos)
    tune = set(videos[: len(videos) // 2])
    return [
        i
        for i, q in enumerate(corpus.queries)
        if split == "all" or (q.video in tune) == (split == "tune")
    ]


# ---- metrics ------------------------------------------------------------------------

Span = tuple[str, float, float]  # (video id, start, end)


def iou(a0: float, a1: float, b0: float, b1: float) -> float:
    """Temporal intersection over union of two spans."""
    inter = min(a1, b1) - max(a0, b0)
    union = max(a1, b1) - min(a0, b0)
    return max(0.0, inter) / union if union > 0 else 0.0


class Recall:
    """Accumulates R@k at IoU m and the right-video rate R@k."""

    def __init__(self) -> None:
        self.n = 0
        self.hits = {(k, m): 0 for k in KS for m in IOUS}
        self.video = dict.fromkeys(KS, 0)

    def add(self, truth: Span, results: Sequence[Span]) -> None:
        """Score one query's ranked results against its own segment."""
        self.n += 1
        best, right = -1.0, False
        for rank, (video, start, end) in enumerate(results[: max(KS)], start=1):
            if video == truth[0]:
                right = True
                best = max(best, iou(truth[1], truth[2], start, end))
            if rank in KS:
                self._count(rank, best, right)
        for k in KS:  # fewer results than k: the last ones count for the rest
            if len(results) < k:
                self._count(k, best, right)

    def _count(self, k: int, best: float, right: bool) -> None:
        self.video[k] += right
        for m in IOUS:
            self.hits[(k, m)] += best >= m

    def row(self) -> dict[str, float]:
        """Percentages, keyed like 'R@1 IoU.5' and 'video R@1'."""
        n = max(1, self.n)
        out = {f"R@{k} IoU{m:.1f}": 100.0 * self.hits[(k, m)] / n for k in KS for m in IOUS}
        out.update({f"video R@{k}": 100.0 * self.video[k] / n for k in KS})
        return out


# ---- the systems compared -------------------------------------------------------------


def vidseek_search(service: SearchService) -> Callable[[Segment], list[Span]]:
    """vidseek's search: top 10 moments."""

    def run(q: Segment) -> list[Span]:
        moments = service.search(SearchQuery(text=q.text, top_k=10, min_score=-1.0))
        return [(m.video_id, m.start_seconds, m.end_seconds) for m in moments]

    return run


def dense_only(store: Store, embedder: Embedder) -> Callable[[Segment], list[Span]]:
    """Baseline: flat cosine over single events, no merging."""

    def run(q: Segment) -> list[Span]:
        hits = store.vector_search(embedder.embed([q.text])[0], 10)
        events = store.hydrate([i for i, _ in hits])
        return [
            (events[i].video_id, events[i].start_seconds, events[i].end_seconds)
            for i, _ in hits
            if i in events
        ]

    return run


def bm25_only(store: Store) -> Callable[[Segment], list[Span]]:
    """Baseline: the store's keyword search over single events, no merging."""

    def run(q: Segment) -> list[Span]:
        hits = store.keyword_search(q.text, 10)
        events = store.hydrate([i for i, _ in hits])
        return [
            (events[i].video_id, events[i].start_seconds, events[i].end_seconds)
            for i, _ in hits
            if i in events
        ]

    return run


def evaluate(
    name: str,
    system: Callable[[Segment], list[Span]],
    queries: Sequence[Segment],
    ids: dict[str, str],
) -> dict[str, float]:
    """Run ``system`` on every query; recall figures plus seconds per query."""
    recall = Recall()
    t0 = time.perf_counter()
    for n, q in enumerate(queries, start=1):
        recall.add((ids[q.video], q.start, q.end), system(q))
        if n % 1000 == 0:
            print(f"  {name}: {n}/{len(queries)} queries", file=sys.stderr, flush=True)
    row = recall.row()
    row["s/query"] = (time.perf_counter() - t0) / max(1, len(queries))
    return row


def latency(service: SearchService, queries: Sequence[Segment]) -> tuple[float, float]:
    """p50 and p99 milliseconds of ``service.search`` (query embedding included)."""
    times = []
    for q in queries:
        t0 = time.perf_counter()
        service.search(SearchQuery(text=q.text, top_k=10))
        times.append(1000.0 * (time.perf_counter() - t0))
    p50, p99 = np.percentile(times, [50, 99])
    return float(p50), float(p99)


# ---- tuning -------------------------------------------------------------------------

GRID = {
    "keyword_weight": [0.0, 0.05, 0.1, 0.15, 0.25],
    "mean_weight": [0.0, 0.25, 0.5, 0.75, 1.0, 1.5],
    "alt_penalty": [0.25, 0.5, 0.75, 1.0, 2.0],
    "merge_margin": [0.0, 0.05, 0.1, 0.2, 0.3],
    "max_overlap": [0.3, 0.6, 1.0],
    "merge_gap_seconds": [0.0, 1.0, 5.0],
}


def tune(
    service: SearchService, queries: Sequence[Segment], ids: dict[str, str], rounds: int = 2
) -> list[tuple[float, RankingParams, dict[str, float]]]:
    """Coordinate descent over GRID on ``queries``, maximising R@1 + R@10 at IoU 0.5.

    The candidate events of each query are gathered once (with the service's
    own params) and re-ranked for every setting tried. Returns every setting
    tried, best first.
    """
    gathered = [
        ((ids[q.video], q.start, q.end), service.gather(SearchQuery(q.text, 10))) for q in queries
    ]

    def measure(params: RankingParams) -> tuple[float, RankingParams, dict[str, float]]:
        recall = Recall()
        for truth, events in gathered:
            moments = flatten(rank_videos(events, params, depth=10))[:10]
            recall.add(truth, [(m.video_id, m.start_seconds, m.end_seconds) for m in moments])
        row = recall.row()
        return row["R@1 IoU0.5"] + row["R@10 IoU0.5"], params, row

    tried = {service.params: measure(service.params)}
    best = tried[service.params]
    for _ in range(rounds):
        for name, values in GRID.items():
            for value in values:
                params = replace(best[1], **{name: value})  # type: ignore[arg-type]
                if params not in tried:
                    tried[params] = measure(params)
                    print(f"  {name}={value}: {tried[params][0]:.2f}", file=sys.stderr, flush=True)
            best = max(tried.values(), key=lambda r: r[0])
    return sorted(tried.values(), key=lambda r: -r[0])


LEARNED_ALT_GRID = [2.5, 5.0, 10.0, 20.0, 40.0]


def tune_learned(
    store: Store, embedder: Embedder, queries: Sequence[Segment], ids: dict[str, str]
) -> list[tuple[float, dict[str, float]]]:
    """R@k of the learned video ranking for each ``learned_alt_penalty`` of the grid
    (R@1 does not depend on it: a video's best moment carries the video's score)."""
    out = []
    for value in LEARNED_ALT_GRID:
        service = SearchService(
            store,
            embedder,
            params=RankingParams(learned_alt_penalty=value),
            video_ranker=default_ranker(),
        )
        out.append((value, evaluate(f"lalt={value}", vidseek_search(service), queries, ids)))
    return out


# ---- report -------------------------------------------------------------------------

COLUMNS = [f"R@{k} IoU{m:.1f}" for k in KS for m in IOUS] + [f"video R@{k}" for k in KS]


def table(rows: dict[str, dict[str, float]]) -> str:
    """A markdown table of the rows."""
    head = "| system | " + " | ".join(COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    lines = [head, rule]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.1f}" for c in COLUMNS) + " |")
    return "\n".join(lines)


def machine() -> str:
    """CPU model and count, OS and Python."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Build the index, run the queries, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--split",
        choices=["test", "tune", "all"],
        default="test",
        help="which queries: the held-out half of the videos (default), the "
        "half the weights were tuned on, or all",
    )
    ap.add_argument(
        "--sample",
        type=int,
        default=0,
        help="a seeded sample of this many queries of the split (0: all)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of --sample")
    ap.add_argument(
        "--latency-queries",
        type=int,
        default=300,
        help="queries timed end to end (real query embedding)",
    )
    ap.add_argument(
        "--tune",
        action="store_true",
        help="grid-search the ranking weights on the tune half instead",
    )
    ap.add_argument(
        "--tune-learned",
        action="store_true",
        help="measure the learned ranking's moment penalty on the tune half instead",
    )
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR)
    ap.add_argument(
        "--cache-dir", type=Path, default=CACHE_DIR, help="where embeddings are cached between runs"
    )
    args = ap.parse_args(argv)
    started = time.perf_counter()

    corpus = load_corpus(args.data_dir)
    model = load_embedder(DEFAULT_EMBEDDER, device="cpu")
    event_vecs = embed_cached(model, [s.text for s in corpus.events], args.cache_dir)
    query_vecs = embed_cached(model, [s.text for s in corpus.queries], args.cache_dir)
    split = "tune" if args.tune or args.tune_learned else args.split
    chosen = split_queries(corpus, split)
    if args.sample and args.sample < len(chosen):
        chosen = sorted(random.Random(args.seed).sample(chosen, args.sample))
    queries = [corpus.queries[i] for i in chosen]
    cached = PrecomputedEmbedder(model, [q.text for q in corpus.queries], query_vecs)

    with tempfile.TemporaryDirectory(prefix="vidseek-bench-") as tmp:
        t0 = time.perf_counter()
        store, ids = build_store(Path(tmp), corpus, event_vecs)
        build_s = time.perf_counter() - t0
        print(
            f"indexed {len(corpus.events)} events of {len(ids)} videos in {build_s:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        try:
            if args.tune:
                _report_tuning(tune(SearchService(store, cached), queries, ids), len(queries))
                return 0
            if args.tune_learned:
                print(f"## learned_alt_penalty on the tune half ({len(queries)} queries)\n")
                for value, row in tune_learned(store, cached, queries, ids):
                    cells = ", ".join(f"{c} {row[c]:.1f}" for c in COLUMNS if "IoU0.5" in c)
                    print(f"- {value}: {cells}")
                return 0
            ranker = default_ranker()
            rows = {
                LEARNED: evaluate(
                    "learned",
                    vidseek_search(SearchService(store, cached, video_ranker=ranker)),
                    queries,
                    ids,
                ),
                HAND_SET: evaluate(
                    "vidseek", vidseek_search(SearchService(store, cached)), queries, ids
                ),
                "vidseek without keyword leg": evaluate(
                    "dense+moments",
                    vidseek_search(SearchService(store, cached, keyword=False)),
                    queries,
                    ids,
                ),
                "baseline: BM25 only": evaluate("bm25", bm25_only(store), queries, ids),
                "baseline: dense only": evaluate("dense", dense_only(store, cached), queries, ids),
            }
            timed = random.Random(1).sample(queries, min(args.latency_queries, len(queries)))
            lat = {
                "with keyword leg and learned video ranking": latency(
                    SearchService(store, model, video_ranker=ranker), timed
                ),
                "with keyword leg (hand-set video score)": latency(
                    SearchService(store, model), timed
                ),
                "without keyword leg": latency(SearchService(store, model, keyword=False), timed),
            }
        finally:
            store.close()
    _report(
        args,
        rows,
        lat,
        len(queries),
        split,
        len(corpus.events),
        len(ids),
        time.perf_counter() - started,
        len(timed),
    )
    return 0


def _report_tuning(results: list[tuple[float, RankingParams, dict[str, float]]], n: int) -> None:
    print(f"## Tuning on the tune half ({n} queries), best 10 by R@1 + R@10 at IoU 0.5\n")
    for _, params, row in results[:10]:
        knobs = ", ".join(f"{k}={getattr(params, k)}" for k in GRID)
        print(
            f"- {knobs}: R@1 IoU0.5 {row['R@1 IoU0.5']:.1f}, "
            f"R@10 IoU0.5 {row['R@10 IoU0.5']:.1f}, video R@1 {row['video R@1']:.1f}"
        )


def _report(
    args: argparse.Namespace,
    rows: dict[str, dict[str, float]],
    lat: dict[str, tuple[float, float]],
    n: int,
    split: str,
    n_events: int,
    n_videos: int,
    elapsed: float,
    n_timed: int,
) -> None:
    which = {
        "test": "the held-out (test) half of the videos",
        "tune": "the tuning half of the videos",
        "all": "all videos",
    }[split]
    sample = (
        f"a seeded sample (seed {args.seed}) of {n} queries" if args.sample else f"all {n} queries"
    )
    dense = rows["baseline: dense only"]
    print(f"## Search quality: ActivityNet Captions ({dt.date.today().isoformat()})\n")
    print(
        f"Machine: {machine()}. Index: {n_events} events of {n_videos} videos "
        f"(val2). Queries: {sample} of {which} (val1). Embedder: {DEFAULT_EMBEDDER}. "
        f"Run took {elapsed / 60:.1f} min.\n"
    )
    print(table(rows))
    print()
    for name in (LEARNED, HAND_SET):
        ours = rows[name]
        print(
            f"{name} vs dense only: R@1 IoU0.5 x{ours['R@1 IoU0.5'] / dense['R@1 IoU0.5']:.2f}, "
            f"R@10 IoU0.5 x{ours['R@10 IoU0.5'] / dense['R@10 IoU0.5']:.2f}."
        )
    print()
    print(f"Search latency ({n_timed} queries, one at a time, query embedding included):\n")
    print("| search | p50 ms | p99 ms |\n|---|---:|---:|")
    for name, (p50, p99) in lat.items():
        print(f"| {name} | {p50:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    raise SystemExit(main())
