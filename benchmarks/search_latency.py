"""In-process search latency over an existing data directory, one query at a time.

Opens the data directory the way ``vidseek serve`` does (``build_app``: the
store, its index snapshot or a rebuild from SQL, the query embedder) and times
``SearchService.search`` on held-out ActivityNet val_1 sentences, query
embedding included, after a short warm-up. Any checkout of vidseek can run it,
which makes it the before/after baseline of a change to search, e.g. on a
corpus that ``benchmarks/search_load.py`` built::

    python benchmarks/search_latency.py ~/.cache/vidseek-bench/load/e50000-v5-...
    git worktree add /tmp/before HEAD~5 && (cd /tmp/before && pip install -e . ...)

Prints p50/p90/p99 and the number of searches per second.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", type=Path, help="a vidseek data directory")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--index-kind", default=None, help="VIDSEEK_INDEX_KIND to open it with")
    ap.add_argument("--shared-data", type=Path, default=DATA_DIR)
    args = ap.parse_args(argv)

    from vidseek.server.app import build_app
    from vidseek.server.search import SearchQuery
    from vidseek.server.settings import load_settings

    overrides: dict[str, object] = {"data_dir": str(args.data_dir)}
    if args.index_kind:
        overrides["index_kind"] = args.index_kind
    t = time.perf_counter()
    app = build_app(load_settings(overrides=overrides))
    print(f"opened {args.data_dir} in {time.perf_counter() - t:.1f} s")
    data = json.loads((args.shared_data / "activitynet_val1.json").read_text())
    pool = sorted({s.strip() for v in data.values() for s in v["sentences"]})
    texts = random.Random(args.seed).sample(pool, args.warmup + args.queries)
    try:
        for q in texts[: args.warmup]:
            app.search.search(SearchQuery(q, top_k=10))
        times = []
        for q in texts[args.warmup :]:
            t = time.perf_counter()
            app.search.search(SearchQuery(q, top_k=10))
            times.append((time.perf_counter() - t) * 1e3)
    finally:
        app.shutdown()
    times.sort()
    pick = lambda p: times[min(len(times) - 1, int(p * len(times)))]  # noqa: E731
    print(
        f"{len(times)} searches: p50 {pick(0.5):.1f} ms, p90 {pick(0.9):.1f} ms, "
        f"p99 {pick(0.99):.1f} ms, {len(times) / (sum(times) / 1e3):.1f}/s; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
