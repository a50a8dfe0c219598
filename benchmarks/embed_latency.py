"""Query-embedding latency: the MiniLM embedder on torch and on ONNX Runtime.

One query at a time, one thread, on held-out ActivityNet val_1 sentences, after
a warm-up; also the smallest cosine between the two backends' vectors.

    python benchmarks/embed_latency.py [--queries 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    from vidseek.indexer.embedder import SentenceTransformerEmbedder

    data = json.loads((DATA_DIR / "activitynet_val1.json").read_text())
    pool = sorted({s.strip() for v in data.values() for s in v["sentences"]})
    texts = random.Random(args.seed).sample(pool, args.queries + 20)
    vectors = {}
    for backend in ("torch", "onnx"):
        model = SentenceTransformerEmbedder(threads=args.threads, backend=backend)
        for t in texts[:20]:
            model.embed([t])
        times, out = [], []
        for t in texts[20:]:
            start = time.perf_counter()
            out.append(model.embed([t])[0])
            times.append((time.perf_counter() - start) * 1e3)
        vectors[backend] = np.array(out)
        p50, p90 = np.percentile(times, [50, 90])
        print(f"{backend}: p50 {p50:.2f} ms, p90 {p90:.2f} ms ({args.threads} thread(s))")
    cos = (vectors["torch"] * vectors["onnx"]).sum(axis=1).min()
    print(f"smallest cosine between the backends: {cos:.7f}; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
