"""Recall and latency of the ``auto`` index against exact search, on caption embeddings.

Vectors: ActivityNet Captions sentences (training set and val_2) embedded with
the default MiniLM embedder, replicated with seeded Gaussian noise (``--sigma``
per dimension, then renormalised) up to each ``--sizes`` N. Queries: ``--queries``
sentences of val_1 (not in the index), embedded the same way. Ground truth: the
exact top 10 by inner product (numpy). For each N the script builds the index
the way the store does at that size (``VectorIndex(kind="auto")``: flat, then
trained on leaving ``bulk_load``) and reports, for several shares of the cells
probed, recall@10 against the exact top 10 and the search latency (one thread,
one query at a time, the index's own search), beside flat search at the same N.

    python benchmarks/index_recall.py --sizes 100000 1000000 --fractions 0.03 0.06 0.12

``AutoParams`` defaults (switch-over size, share of cells probed) are chosen on
these figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from vidseek.storage.vector_index import AutoParams, VectorIndex

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CACHE_DIR = Path.home() / ".cache" / "vidseek-bench"
K = 10


def sentences(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    return list(dict.fromkeys(s.strip() for v in data.values() for s in v["sentences"]))


def embed(texts: Sequence[str], name: str) -> npt.NDArray[np.float32]:
    """MiniLM embeddings of ``texts``, cached under ~/.cache/vidseek-bench."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"minilm-{name}-{len(texts)}.npy"
    if path.exists():
        return np.load(path)
    from vidseek.indexer.embedder import DEFAULT_EMBEDDER, SentenceTransformerEmbedder

    model = SentenceTransformerEmbedder(DEFAULT_EMBEDDER, threads=0, batch_size=256)
    t0 = time.time()
    out = np.concatenate([model.embed(texts[i : i + 4096]) for i in range(0, len(texts), 4096)])
    print(f"embedded {len(texts)} {name} sentences in {time.time() - t0:.0f} s", file=sys.stderr)
    np.save(path, out)
    return out


def replicate(base: npt.NDArray[np.float32], n: int, sigma: float, seed: int) -> np.ndarray:
    """``n`` unit vectors: ``base`` cycled, each copy after the first with noise."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), np.float32)
    for at in range(0, n, len(base)):
        m = min(len(base), n - at)
        x = base[:m].copy()
        if at:
            x += rng.normal(0, sigma, x.shape).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[at : at + m] = x
    return out


def exact_top(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Exact top-K ids per query (ids are row numbers)."""
    scores = np.full((len(q), K), -np.inf, np.float32)
    ids = np.zeros((len(q), K), np.int64)
    for at in range(0, len(x), 200_000):
        s = q @ x[at : at + 200_000].T
        s_ids = np.argpartition(-s, K, axis=1)[:, :K] + at
        both_s = np.concatenate([scores, np.take_along_axis(s, s_ids - at, 1)], axis=1)
        both_i = np.concatenate([ids, s_ids], axis=1)
        best = np.argsort(-both_s, axis=1)[:, :K]
        scores = np.take_along_axis(both_s, best, 1)
        ids = np.take_along_axis(both_i, best, 1)
    return ids


def timed_search(index: VectorIndex, q: np.ndarray) -> tuple[list[np.ndarray], float, float]:
    got, times = [], []
    for v in q:
        t = time.perf_counter()
        got.append(index.search(v, K)[1])
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return got, float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--fractions", type=float, nargs="+", default=[1 / 32, 1 / 16, 1 / 8])
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--sigma", type=float, default=0.02, help="noise per dimension of copies")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR)
    ap.add_argument("--jsonl", type=Path, default=None, help="append one JSON line per row")
    args = ap.parse_args(argv)

    base_texts = sentences(args.data_dir / "activitynet_train.json")
    base_texts += sentences(args.data_dir / "activitynet_val2.json")
    base = embed(list(dict.fromkeys(base_texts)), "train+val2")
    queries = sentences(args.data_dir / "activitynet_val1.json")
    rng = np.random.default_rng(args.seed)
    picked = sorted(rng.choice(len(queries), min(args.queries, len(queries)), replace=False))
    q = embed([queries[i] for i in picked], f"val1-sample{args.seed}")
    print(
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"base {len(base)} sentences, {len(q)} queries, "
        f"sigma {args.sigma}"
    )
    print("| N | index | nlist | nprobe (share) | recall@10 | p50 ms | p99 ms | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        x = replicate(base, n, args.sigma, args.seed)
        truth = exact_top(x, q)
        flat = VectorIndex(x.shape[1], "flat")
        flat.add(np.arange(n), x)
        _, p50, p99 = timed_search(flat, q)
        rows = [{"n": n, "index": "flat", "recall": 1.0, "p50_ms": p50, "p99_ms": p99}]
        del flat
        auto = AutoParams(threshold=n)
        index = VectorIndex(x.shape[1], "auto", auto=auto)
        t = time.time()
        with index.bulk_load():
            for at in range(0, n, 50_000):
                index.add(np.arange(at, min(n, at + 50_000)), x[at : at + 50_000])
        build_s = time.time() - t
        trained = index.ivf
        for frac in args.fractions:
            nprobe = max(1, round(trained.nlist * frac))
            index.ivf = replace(trained, nprobe=nprobe)
            got, p50, p99 = timed_search(index, q)
            recall = np.mean(
                [
                    len(set(g.tolist()) & set(t.tolist())) / K
                    for g, t in zip(got, truth, strict=True)
                ]
            )
            rows.append(
                {
                    "n": n,
                    "index": f"auto ({trained.factory})",
                    "nlist": trained.nlist,
                    "nprobe": nprobe,
                    "fraction": frac,
                    "recall": float(recall),
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "build_s": build_s,
                }
            )
        del index
        load = f"{os.getloadavg()[0]:.1f}"
        for r in rows:
            share = f"{r['nprobe']} ({r['fraction']:.3f})" if "nprobe" in r else "-"
            print(
                f"| {n:,} | {r['index']} | {r.get('nlist', '-')} | {share} | {r['recall']:.3f} "
                f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {load} |"
            )
            if args.jsonl:
                with args.jsonl.open("a") as f:
                    f.write(json.dumps({**r, "load_avg": os.getloadavg()[0], "sigma": args.sigma}))
                    f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
