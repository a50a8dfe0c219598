"""Which video-ranking levers find the right ActivityNet video: measured, not tuned on the test.

Video R@1 (the right video ranked first) of four ways to score a candidate video for
a query, each computed exactly over every indexed event (numpy, no index):

- ``base``: the best event's cosine plus half the mean of its five best (the shape of
  vidseek's video score, ``RankingParams.mean_weight``);
- ``context a``: the same over events that carry their video's context, each event
  vector replaced by ``normalise(e + a * mean of its video's events)``;
- ``query adapter``: ``base`` with the query mapped by a 384x384 linear adapter, trained
  contrastively (InfoNCE, temperature 0.05, identity start, seed 0) to bring a sentence
  near the mean of its video's other sentences;
- ``learned reranker``: a listwise linear model (softmax over the 50 best ``base``
  candidates) over eight features: best and second-best event cosine, mean cosine, the
  video-mean cosine, log event count, the idf-weighted share of query words in the
  video's text, and the gaps of the best cosine and the video-mean cosine to the
  candidates' best.

Training data is ``activitynet_train.json`` only (10,009 videos, none in val_1/val_2):
each video's sentences are split into an indexed half (even positions) and a query
half (odd); 1,500 videos are held out for validation. Results are reported on that
validation split and on the benchmark of ``search_quality.py`` (index val_2, the
seeded 3,000 queries of val_1's test half), which nothing here is fitted to.

    python benchmarks/ranking_levers.py
"""

from __future__ import annotations

import json
import math
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.search_quality import (  # noqa: E402
    CACHE_DIR,
    DATA_DIR,
    embed_cached,
    load_corpus,
    split_queries,
)
from vidseek.indexer.embedder import DEFAULT_EMBEDDER, load_embedder  # noqa: E402

Vecs = npt.NDArray[np.float32]
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "of",
        "to",
        "in",
        "on",
        "is",
        "are",
        "he",
        "she",
        "they",
        "it",
        "his",
        "her",
        "their",
        "with",
        "at",
        "as",
        "by",
        "for",
        "from",
        "then",
        "while",
        "into",
        "up",
        "down",
        "out",
        "off",
        "this",
        "that",
    ]
)


def _norm(x: Vecs) -> Vecs:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


class Library:
    """Indexed events grouped by video, with per-video means and word sets."""

    def __init__(self, videos: list[str], texts: list[str], vecs: Vecs) -> None:
        names = sorted(set(videos))
        self.index = {v: i for i, v in enumerate(names)}
        self.owner = np.array([self.index[v] for v in videos])
        self.vecs = _norm(vecs)
        self.size = len(names)
        means = np.zeros((self.size, vecs.shape[1]), np.float32)
        np.add.at(means, self.owner, self.vecs)
        self.means = _norm(means)
        self.counts = np.bincount(self.owner, minlength=self.size)
        self.words = [Counter[str]() for _ in names]
        for text, v in zip(texts, self.owner, strict=True):
            self.words[v].update(_words(text))
        df = Counter[str]()
        for words in self.words:
            df.update(words.keys())
        self.idf = {w: math.log(self.size / (1 + d)) for w, d in df.items()}

    def base_scores(self, sims: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Best cosine + 0.5 x mean of the best five, per video, for one query's sims."""
        order = np.lexsort((-sims, self.owner))
        owner, ranked = self.owner[order], sims[order].astype(np.float64)
        rank = np.arange(len(owner)) - np.searchsorted(owner, owner, side="left")
        best = np.full(self.size, -2.0)
        best[owner[rank == 0]] = ranked[rank == 0]
        top = rank < 5
        total = np.bincount(owner[top], weights=ranked[top], minlength=self.size)
        seen = np.bincount(owner[top], minlength=self.size)
        return best + 0.5 * total / np.maximum(1, seen)


def video_r1(lib: Library, queries: Vecs, truth: list[int], events: Vecs | None = None) -> float:
    vecs = lib.vecs if events is None else events
    sims = queries @ vecs.T
    hits = sum(int(np.argmax(lib.base_scores(s)) == t) for s, t in zip(sims, truth, strict=True))
    return hits / len(truth)


def features(lib: Library, qvec: Vecs, qtext: str, k: int = 50) -> tuple[Any, Vecs]:
    sims = lib.vecs @ qvec
    base = lib.base_scores(sims)
    cand = np.argsort(-base)[:k]
    best = np.full(lib.size, -2.0)
    np.maximum.at(best, lib.owner, sims)
    total = np.zeros(lib.size)
    np.add.at(total, lib.owner, sims)
    mean = total / np.maximum(1, lib.counts)
    ctx = lib.means @ qvec
    words = set(_words(qtext))
    weight = sum(lib.idf.get(w, 0.0) for w in words) or 1.0
    rows = []
    for c in cand:
        own = np.sort(sims[lib.owner == c])[::-1]
        share = sum(lib.idf.get(w, 0.0) for w in words if w in lib.words[c]) / weight
        rows.append(
            [
                best[c],
                own[1] if len(own) > 1 else own[0],
                mean[c],
                ctx[c],
                math.log(lib.counts[c]),
                share,
                best[c] - best[cand].max(),
                ctx[c] - ctx[cand].max(),
            ]
        )
    return cand, np.array(rows, np.float32)


def listwise(lib: Library, qvecs: Vecs, texts: list[str], truth: list[int]) -> tuple[Vecs, Any]:
    feats, labels = [], []
    for qv, text, t in zip(qvecs, texts, truth, strict=True):
        cand, f = features(lib, qv, text)
        where = np.flatnonzero(cand == t)
        feats.append(f)
        labels.append(int(where[0]) if len(where) else -1)
    return np.stack(feats), np.array(labels)


def train_reranker(feats: Vecs, labels: Any, seed: int = 0) -> tuple[Any, Any, Any]:
    import torch

    torch.manual_seed(seed)
    keep = labels >= 0
    x = torch.tensor(feats[keep])
    y = torch.tensor(labels[keep])
    mu, sd = x.reshape(-1, x.shape[-1]).mean(0), x.reshape(-1, x.shape[-1]).std(0) + 1e-6
    w = torch.zeros(x.shape[-1], requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200)

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(((x - mu) / sd) @ w, y) + 1e-3 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), mu.numpy(), sd.numpy()


def reranked_r1(feats: Vecs, labels: Any, model: tuple[Any, Any, Any]) -> float:
    w, mu, sd = model
    return float(((((feats - mu) / sd) @ w).argmax(1) == labels).mean())


def train_adapter(queries: Vecs, targets: Vecs, seed: int = 0) -> Vecs:
    import torch

    torch.manual_seed(seed)
    q, t = torch.tensor(queries), torch.tensor(targets)
    eye = torch.eye(q.shape[1])
    w = torch.nn.Parameter(eye.clone())
    opt = torch.optim.Adam([w], lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(10):
        perm = torch.randperm(len(q), generator=gen)
        for start in range(0, len(q), 512):
            idx = perm[start : start + 512]
            mapped = torch.nn.functional.normalize(q[idx] @ w.T, dim=-1)
            logits = mapped @ t[idx].T / 0.05
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(idx)))
            loss = loss + 1e-3 * ((w - eye) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return np.asarray(w.detach().numpy(), np.float32)


def main() -> int:
    started = time.perf_counter()
    embedder = load_embedder(DEFAULT_EMBEDDER)
    train = json.loads((DATA_DIR / "activitynet_train.json").read_text())
    rows = [
        (vid, text.strip())
        for vid in sorted(train)
        for text in train[vid]["sentences"]
        if text.strip()
    ]
    vecs = _norm(embed_cached(embedder, [t for _, t in rows], CACHE_DIR))
    by_video: dict[str, list[int]] = {}
    for i, (vid, _) in enumerate(rows):
        by_video.setdefault(vid, []).append(i)
    names = sorted(by_video)
    random.Random(1).shuffle(names)
    held_out = set(names[:1500])
    indexed = [i for v in names for i in by_video[v][0::2]]
    asked = [i for v in names for i in by_video[v][1::2]]
    lib = Library([rows[i][0] for i in indexed], [rows[i][1] for i in indexed], vecs[indexed])
    fit = [i for i in asked if rows[i][0] not in held_out]
    random.Random(2).shuffle(fit)
    fit = fit[:6000]
    val = [i for i in asked if rows[i][0] in held_out]

    corpus = load_corpus()
    bench = Library(
        [e.video for e in corpus.events],
        [e.text for e in corpus.events],
        embed_cached(embedder, [e.text for e in corpus.events], CACHE_DIR),
    )
    picked = sorted(random.Random(0).sample(split_queries(corpus, "test"), 3000))
    bq = [corpus.queries[i] for i in picked]
    bvecs = _norm(embed_cached(embedder, [q.text for q in bq], CACHE_DIR))
    btruth = [bench.index[q.video] for q in bq]
    vtruth = [lib.index[rows[i][0]] for i in val]

    table: dict[str, tuple[float, float]] = {}
    table["base"] = (video_r1(lib, vecs[val], vtruth), video_r1(bench, bvecs, btruth))
    for a in (0.5, 1.0):
        table[f"context a={a}"] = (
            video_r1(lib, vecs[val], vtruth, _norm(lib.vecs + a * lib.means[lib.owner])),
            video_r1(bench, bvecs, btruth, _norm(bench.vecs + a * bench.means[bench.owner])),
        )
    targets = np.stack([lib.means[lib.index[rows[i][0]]] for i in fit])
    adapter = train_adapter(vecs[fit], targets)
    table["query adapter"] = (
        video_r1(lib, _norm(vecs[val] @ adapter.T), vtruth),
        video_r1(bench, _norm(bvecs @ adapter.T), btruth),
    )
    model = train_reranker(
        *listwise(lib, vecs[fit], [rows[i][1] for i in fit], [lib.index[rows[i][0]] for i in fit])
    )
    table["learned reranker"] = (
        reranked_r1(*listwise(lib, vecs[val], [rows[i][1] for i in val], vtruth), model),
        reranked_r1(*listwise(bench, bvecs, [q.text for q in bq], btruth), model),
    )
    print(f"Video R@1 (%), {len(val)} validation queries and {len(bq)} benchmark queries")
    print("| scoring | train validation | benchmark (val_2 index, val_1 test half) |")
    print("|---|---:|---:|")
    for name, (v, b) in table.items():
        print(f"| {name} | {100 * v:.1f} | {100 * b:.1f} |")
    print(f"reranker weights: {np.round(model[0], 3).tolist()}")
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
