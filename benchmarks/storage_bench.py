"""Storage benchmark: commit throughput, search latency and recall, catch-up, rebuild, memory.

    python benchmarks/storage_bench.py --sizes 100000 1000000 [--database-url URL]
        [--kinds flat hnsw ivf] [--ivf-nlist 1024] [--nprobe 8 16 32 64 128]

For each size N it commits N events through ``Store.commit_window`` (windows of
``--events-per-window`` events: SQL rows, full-text index, change log, FAISS),
then measures, in-process and single-threaded:

* events/s committed (durable in SQL and searchable);
* flat search latency p50/p99 at k=10, and keyword (full-text) search latency;
* catch-up: a snapshot taken at 90% loaded and the last 10% replayed from the
  change log, as a restarting server does;
* rebuild: the flat index from SQL (``Store.rebuild_index``: read, build, snapshot),
  the HNSW index from SQL (``build_index_from_sql``) and the IVF index per nlist
  (``rebuild_snapshot``, as ``vidseek index rebuild`` does: read, train, add,
  snapshot);
* HNSW latency p50/p99 and recall@10 against the exact flat result, per efSearch;
  IVF the same per nprobe;
* resident memory after each phase, and the load average (the machine is shared).

``--kinds`` picks the approximate kinds to measure (flat, the baseline, always
runs); ``--kinds flat ivf`` skips the HNSW build, which takes ~17 min at 1M.

Vectors are 384-d unit vectors drawn around N/1000 random centres (noise of
the same norm as the centre), so that neighbours are not trivially separated
and recall means something. Queries come from the same distribution.
The default database is a fresh SQLite file per size in a temporary directory;
``--database-url`` (PostgreSQL) gets a fresh schema per size.
Prints a markdown table with the machine and date, and writes JSON next to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import psutil
import sqlalchemy
from sqlalchemy import create_engine, text

from vidseek.storage.db import make_sessionmaker
from vidseek.storage.store import (
    NewEvent,
    NewWindow,
    Store,
    build_index_from_sql,
    catch_up_index,
    rebuild_snapshot,
    window_id_for,
)
from vidseek.storage.vector_index import HnswParams, IvfParams, VectorIndex

WORDS = [f"w{i}" for i in range(5000)]


def rss_mb() -> float:
    """Resident memory of this process in MiB."""
    return psutil.Process().memory_info().rss / 2**20


class Data:
    """Clustered unit vectors and synthetic captions, generated window by window.

    ``clusters``: N/1000 random centres, each point a centre plus noise of the
    same norm. Points of one cluster are all about equally far apart (cosine
    0.5 +- 0.05), so the true top 10 of a query are decided by tiny margins among
    ~1000 candidates: a worst case for graph indexes.
    ``topics``: two scales, like captions that paraphrase one another: N/1000
    topics, each point in a subtopic of ~20 points (cosine ~0.87 within a
    subtopic, ~0.5 within a topic, ~0 across topics).
    """

    def __init__(self, n: int, dim: int, seed: int, distribution: str = "clusters") -> None:
        self.rng = np.random.default_rng(seed)
        self.dim = dim
        self.distribution = distribution
        k = max(100, n // 1000)
        self.centres = self._unit(self.rng.standard_normal((k, dim)).astype(np.float32))
        if distribution == "topics":
            subs = max(k, n // 20)
            topic = self.rng.integers(0, k, subs)
            offset = self.rng.standard_normal((subs, dim)).astype(np.float32) / np.sqrt(dim)
            self.centres = self.centres[topic] + 0.8 * offset
        elif distribution != "clusters":
            raise SystemExit(f"unknown distribution {distribution!r}")
        zipf = 1.0 / np.arange(1, len(WORDS) + 1)
        self.word_p = zipf / zipf.sum()

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def vectors(self, m: int) -> np.ndarray:
        """``m`` unit vectors drawn around random centres (see the class doc)."""
        c = self.centres[self.rng.integers(0, len(self.centres), m)]
        noise = self.rng.standard_normal((m, self.dim)).astype(np.float32) / np.sqrt(self.dim)
        return self._unit(c + (0.5 if self.distribution == "topics" else 1.0) * noise)

    def captions(self, m: int) -> list[str]:
        """``m`` eight-word captions over a Zipf vocabulary."""
        idx = self.rng.choice(len(WORDS), size=(m, 8), p=self.word_p)
        return [" ".join(WORDS[j] for j in row) for row in idx]


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    a = np.asarray(samples) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def timed_searches(fn: Any, queries: Any) -> tuple[list[float], list[float], list[Any]]:
    """Wall and CPU latency of ``fn(q)`` for each query (after 10 warm-up calls), and
    its results. On a shared machine the CPU time of this (single-threaded) call is
    what the wall time would be without the neighbours' load."""
    for q in queries[:10]:
        fn(q)
    wall, cpu, out = [], [], []
    for q in queries:
        t, c = time.perf_counter(), time.thread_time()
        res = fn(q)
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
        out.append(res)
    return wall, cpu, out


def database_for(size: int, workdir: Path, base_url: str | None) -> Iterator[str]:
    """A fresh database for one size: SQLite file, or a new PostgreSQL schema."""
    if not base_url:
        yield f"sqlite:///{workdir / 'vidseek.db'}"
        return
    schema = f"bench_{size}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def run_size(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """All measurements for one corpus size."""
    out: dict[str, Any] = {"events": n, "load_avg": {"start": os.getloadavg()[0]}}
    data = Data(n, args.dim, seed=n, distribution=args.distribution)
    queries = data.vectors(args.queries)
    gen = database_for(n, workdir, args.database_url)
    url = next(gen)
    index_path = workdir / "faiss.index"
    out["rss_start_mb"] = rss_mb()
    store = Store(url, index_path, args.dim)
    try:
        per = args.events_per_window
        windows = (n + per - 1) // per
        chash = f"{n:064x}"
        vid = store.upsert_video(
            uri="/bench.mp4",
            content_hash=chash,
            duration=60.0 * windows,
            fps=30.0,
            width=640,
            height=360,
            frame_count=1800 * windows,
        )
        commit_s, done, snap90 = 0.0, 0, workdir / "faiss.index.90"
        for w in range(windows):
            m = min(per, n - done)
            vecs, caps = data.vectors(m), data.captions(m)
            start = 60.0 * w
            events = [
                NewEvent(start + i * 0.5, start + i * 0.5 + 2.0, caps[i], vecs[i]) for i in range(m)
            ]
            window = NewWindow(
                id=window_id_for(chash, start, start + 60.0, "bench", "p1"),
                video_id=vid,
                window_index=w,
                start_seconds=start,
                end_seconds=start + 60.0,
                frame_count=60,
                status="parsed",
                raw_output="",
                parse_error="",
                dropped=[],
                model="bench",
                prompt_version="p1",
                prompt_tokens=0,
            )
            t = time.perf_counter()
            store.commit_window(window, events)
            commit_s += time.perf_counter() - t
            done += m
            if not snap90.exists() and done >= 0.9 * n:
                store.snapshot(force=True)
                shutil.copy(index_path, snap90)
            if w % max(1, windows // 20) == 0:
                print(f"  [{n}] committed {done}/{n} ({done / commit_s:.0f} events/s)", flush=True)
        out["commit_events_per_s"] = n / commit_s
        out["commit_total_s"] = commit_s
        out["rss_after_insert_mb"] = rss_mb()
        if url.startswith("sqlite:///"):
            db_file = Path(url.removeprefix("sqlite:///"))
            out["db_mb"] = sum(
                p.stat().st_size / 2**20
                for p in db_file.parent.iterdir()
                if p.name.startswith(db_file.name)
            )

        t = time.perf_counter()
        store.snapshot(force=True)
        out["snapshot_write_s"] = time.perf_counter() - t
        out["snapshot_mb"] = index_path.stat().st_size / 2**20
        t = time.perf_counter()
        VectorIndex.load(index_path, args.dim)
        out["snapshot_load_s"] = time.perf_counter() - t

        out["load_avg"]["after_insert"] = os.getloadavg()[0]
        flat = store.index
        lat, cpu, exact = timed_searches(lambda q: flat.search(q, 10)[1], queries)
        out["flat_p50_ms"], out["flat_p99_ms"] = percentiles(lat)
        out["flat_cpu_p50_ms"], out["flat_cpu_p99_ms"] = percentiles(cpu)
        kw = [" ".join(c.split()[:3]) for c in data.captions(args.queries)]
        lat, cpu, _ = timed_searches(lambda q: store.keyword_search(q, 10), kw)
        out["keyword_p50_ms"], out["keyword_p99_ms"] = percentiles(lat)
        out["keyword_cpu_p50_ms"], out["keyword_cpu_p99_ms"] = percentiles(cpu)
        lat, cpu, _ = timed_searches(lambda q: store.keyword_search(q, 10, match="all"), kw)
        out["keyword_all_p50_ms"], out["keyword_all_p99_ms"] = percentiles(lat)
        out["keyword_all_cpu_p50_ms"], _ = percentiles(cpu)

        # Catch-up: the snapshot at 90% plus the change log after it.
        stale = VectorIndex.load(snap90, args.dim)
        t = time.perf_counter()
        applied = catch_up_index(make_sessionmaker(store.engine), stale)
        out["catch_up_s"] = time.perf_counter() - t
        out["catch_up_entries"] = applied
        if set(stale.ids().tolist()) != set(flat.ids().tolist()):
            raise RuntimeError("catch-up did not reproduce the live index")
        del stale

        t = time.perf_counter()
        store.rebuild_index()
        out["flat_rebuild_s"] = time.perf_counter() - t
        out["rss_after_flat_rebuild_mb"] = rss_mb()

        for nlist in args.ivf_nlist if "ivf" in args.kinds else []:
            path = workdir / f"ivf{nlist}.index"
            out["load_avg"][f"ivf{nlist}_rebuild"] = os.getloadavg()[0]
            t = time.perf_counter()
            rebuild_snapshot(url, path, index_kind="ivf", ivf=IvfParams(nlist=nlist))
            rebuild_s = time.perf_counter() - t
            ivf = VectorIndex.load(path, args.dim, "ivf")
            if not ivf.trained or ivf.ntotal != n:
                raise RuntimeError(f"IVF rebuild left {ivf.ntotal} vectors, trained={ivf.trained}")
            measured = _measure_ivf(out, nlist, ivf, queries, exact, args)
            measured.update(rebuild_s=rebuild_s, snapshot_mb=path.stat().st_size / 2**20)
            del ivf
            path.unlink()
        if "hnsw" in args.kinds:
            params = HnswParams(m=args.hnsw_m, ef_construction=args.ef_construction)
            before = rss_mb()
            t = time.perf_counter()
            hnsw = build_index_from_sql(store.engine, VectorIndex(args.dim, "hnsw", params))
            out["hnsw_build_s"] = time.perf_counter() - t
            out["hnsw_rss_delta_mb"] = rss_mb() - before
            _measure_hnsw(out, hnsw, params, queries, exact, args)
        out["rss_end_mb"] = rss_mb()
        out["load_avg"]["end"] = os.getloadavg()[0]
    finally:
        store.close(snapshot=False)
        for _ in gen:
            pass
    return out


def run_vectors_only(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The index-only part (no SQL): build flat and HNSW from memory, search, recall."""
    out: dict[str, Any] = {"events": n}
    data = Data(n, args.dim, seed=n, distribution=args.distribution)
    queries = data.vectors(args.queries)
    ids = np.arange(n, dtype=np.int64)
    before = rss_mb()
    flat = VectorIndex(args.dim)
    for i in range(0, n, 100_000):
        flat.add(ids[i : i + 100_000], data.vectors(min(100_000, n - i)))
    out["rss_after_insert_mb"] = rss_mb()
    out["flat_rss_delta_mb"] = rss_mb() - before
    lat, cpu, exact = timed_searches(lambda q: flat.search(q, 10)[1], queries)
    out["flat_p50_ms"], out["flat_p99_ms"] = percentiles(lat)
    out["flat_cpu_p50_ms"], out["flat_cpu_p99_ms"] = percentiles(cpu)
    vectors = np.concatenate(
        [flat._index.index.reconstruct_n(i, min(100_000, n - i)) for i in range(0, n, 100_000)]
    )
    for nlist in args.ivf_nlist if "ivf" in args.kinds else []:
        ivf = VectorIndex(args.dim, "ivf", ivf=IvfParams(nlist=nlist))
        t = time.perf_counter()
        with ivf.bulk_load():
            for i in range(0, n, 20_000):
                ivf.add(ids[i : i + 20_000], vectors[i : i + 20_000])
        build_s = time.perf_counter() - t
        _measure_ivf(out, nlist, ivf, queries, exact, args)["build_s"] = build_s
        del ivf
    if "hnsw" in args.kinds:
        params = HnswParams(m=args.hnsw_m, ef_construction=args.ef_construction)
        before = rss_mb()
        hnsw = VectorIndex(args.dim, "hnsw", params)
        t = time.perf_counter()
        for i in range(0, n, 20_000):
            hnsw.add(ids[i : i + 20_000], vectors[i : i + 20_000])
        out["hnsw_build_s"] = time.perf_counter() - t
        del vectors
        out["hnsw_rss_delta_mb"] = rss_mb() - before
        _measure_hnsw(out, hnsw, params, queries, exact, args)
    out["rss_end_mb"] = rss_mb()
    return out


def _latency_and_recall(
    index: VectorIndex, queries: np.ndarray, exact: list[Any]
) -> dict[str, float]:
    """p50/p99 (wall), CPU-time p50 and recall@10 against ``exact`` of ``index``."""
    lat, cpu, approx = timed_searches(lambda q: index.search(q, 10)[1], queries)
    recall = np.mean(
        [len(set(a.tolist()) & set(e.tolist())) / 10 for a, e in zip(approx, exact, strict=True)]
    )
    p50, p99 = percentiles(lat)
    cpu50, _ = percentiles(cpu)
    return {"p50_ms": p50, "p99_ms": p99, "cpu_p50_ms": cpu50, "recall_at_10": float(recall)}


def _measure_hnsw(
    out: dict[str, Any],
    hnsw: VectorIndex,
    params: HnswParams,
    queries: np.ndarray,
    exact: list[Any],
    args: argparse.Namespace,
) -> None:
    out["hnsw"] = {}
    for ef in args.ef_search:
        hnsw.hnsw = dataclasses.replace(params, ef_search=ef)
        r = out["hnsw"][ef] = _latency_and_recall(hnsw, queries, exact)
        print(
            f"  [{out['events']}] hnsw ef={ef}: p50 {r['p50_ms']:.2f} ms "
            f"recall {r['recall_at_10']:.3f}",
            flush=True,
        )


def _measure_ivf(
    out: dict[str, Any],
    nlist: int,
    ivf: VectorIndex,
    queries: np.ndarray,
    exact: list[Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Latency and recall of a trained IVF index per nprobe; returns its entry in ``out``."""
    entry: dict[str, Any] = {"nprobe": {}}
    out.setdefault("ivf", {})[nlist] = entry
    for nprobe in args.nprobe:
        ivf.ivf = dataclasses.replace(ivf.ivf, nprobe=nprobe)
        r = entry["nprobe"][nprobe] = _latency_and_recall(ivf, queries, exact)
        print(
            f"  [{out['events']}] ivf nlist={nlist} nprobe={nprobe}: p50 {r['p50_ms']:.2f} ms "
            f"(CPU {r['cpu_p50_ms']:.2f}) recall {r['recall_at_10']:.3f}",
            flush=True,
        )
    return entry


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_start": os.getloadavg(),
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "numpy": np.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
    }


def markdown(info: dict[str, Any], results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The report: machine, then one row per measurement and one column per size."""
    mib = "{:,.0f} MiB".format
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        (
            f"events/s committed (windows of {args.events_per_window})",
            lambda r: f"{r['commit_events_per_s']:,.0f}",
        ),
        ("commit of all events", lambda r: f"{r['commit_total_s']:,.0f} s"),
        (
            "flat search p50 / p99, k=10 (CPU-time p50)",
            lambda r: (
                f"{r['flat_p50_ms']:.1f} / {r['flat_p99_ms']:.1f} ms ({r['flat_cpu_p50_ms']:.1f})"
            ),
        ),
    ]
    for ef in args.ef_search:
        rows.append(
            (
                f"HNSW efSearch={ef}: p50 / p99 (CPU-time p50), recall@10",
                lambda r, ef=ef: (
                    f"{r['hnsw'][ef]['p50_ms']:.2f} / {r['hnsw'][ef]['p99_ms']:.2f}"
                    f" ms ({r['hnsw'][ef]['cpu_p50_ms']:.2f}), {r['hnsw'][ef]['recall_at_10']:.3f}"
                ),
            )
        )
    for nlist in args.ivf_nlist if "ivf" in args.kinds else []:
        rows.append(
            (
                f"IVF nlist={nlist} rebuild from SQL (read, train, add, snapshot)",
                lambda r, nl=nlist: f"{r['ivf'][nl]['rebuild_s']:.1f} s",
            )
        )
        rows.append(
            (
                f"IVF nlist={nlist} build in memory (vectors only: add, train)",
                lambda r, nl=nlist: f"{r['ivf'][nl]['build_s']:.1f} s",
            )
        )
        rows.append(
            (
                f"IVF nlist={nlist} snapshot size",
                lambda r, nl=nlist: mib(r["ivf"][nl]["snapshot_mb"]),
            )
        )
        for nprobe in args.nprobe:
            rows.append(
                (
                    f"IVF nlist={nlist} nprobe={nprobe}: p50 / p99 (CPU-time p50), recall@10",
                    lambda r, nl=nlist, p=nprobe: (
                        f"{r['ivf'][nl]['nprobe'][p]['p50_ms']:.2f} / "
                        f"{r['ivf'][nl]['nprobe'][p]['p99_ms']:.2f} ms "
                        f"({r['ivf'][nl]['nprobe'][p]['cpu_p50_ms']:.2f}), "
                        f"{r['ivf'][nl]['nprobe'][p]['recall_at_10']:.3f}"
                    ),
                )
            )
    rows += [
        (
            "keyword search, any of 3 words: p50 / p99, k=10 (CPU-time p50)",
            lambda r: (
                f"{r['keyword_p50_ms']:.1f} / {r['keyword_p99_ms']:.1f} ms "
                f"({r['keyword_cpu_p50_ms']:.1f})"
            ),
        ),
        (
            "keyword search, all of 3 words: p50 / p99, k=10 (CPU-time p50)",
            lambda r: (
                f"{r['keyword_all_p50_ms']:.1f} / {r['keyword_all_p99_ms']:.1f} ms "
                f"({r['keyword_all_cpu_p50_ms']:.1f})"
            ),
        ),
        (
            "catch-up of last 10% from change log",
            lambda r: (
                f"{r['catch_up_s']:.1f} s "
                f"({r['catch_up_entries'] / r['catch_up_s']:,.0f} entries/s)"
            ),
        ),
        ("flat rebuild from SQL (read, build, snapshot)", lambda r: f"{r['flat_rebuild_s']:.1f} s"),
        (
            f"HNSW build (M={args.hnsw_m}, efConstruction={args.ef_construction})",
            lambda r: f"{r['hnsw_build_s']:.1f} s",
        ),
        (
            "snapshot write / load / size",
            lambda r: (
                f"{r['snapshot_write_s']:.1f} s / {r['snapshot_load_s']:.1f} s / "
                + mib(r["snapshot_mb"])
            ),
        ),
        ("SQLite database size", lambda r: mib(r["db_mb"])),
        (
            "load average at insert end / at end of size",
            lambda r: f"{r['load_avg']['after_insert']:.1f} / {r['load_avg']['end']:.1f}",
        ),
        ("resident memory after insert (flat index)", lambda r: mib(r["rss_after_insert_mb"])),
        ("HNSW index extra resident memory", lambda r: mib(r["hnsw_rss_delta_mb"])),
        ("resident memory at end", lambda r: mib(r["rss_end_mb"])),
    ]

    def cell(fn: Callable[[dict[str, Any]], str], r: dict[str, Any]) -> str:
        try:
            return fn(r)
        except KeyError:
            return "n/a"

    table = [(name, [cell(fn, r) for r in results]) for name, fn in rows]
    source = (
        "vectors only (no SQL)"
        if args.vectors_only
        else ("PostgreSQL" if args.database_url else "SQLite")
    )
    lines = [
        f"Storage benchmark, {info['date']}: {info['cpu']}, {info['cores']} cores, "
        f"{info['ram_gib']} GiB RAM; load average at start {info['load_avg_start'][0]:.1f}, "
        f"at end {info['load_avg_end'][0]:.1f}; Python {info['python']}, FAISS {info['faiss']} "
        f"({info['faiss_threads']} threads), SQLite {info['sqlite']}; {source}; dim {args.dim}, "
        f"{args.queries} queries, distribution {args.distribution!r}.",
        "",
        "| measurement | " + " | ".join(f"{r['events']:,} events" for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    lines += [
        f"| {name} | " + " | ".join(vals) + " |"
        for name, vals in table
        if any(v != "n/a" for v in vals)
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run the benchmark for each size and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--events-per-window", type=int, default=50)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--hnsw-m", type=int, default=HnswParams.m)
    p.add_argument("--ef-construction", type=int, default=HnswParams.ef_construction)
    p.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--distribution", choices=["clusters", "topics"], default="clusters")
    p.add_argument(
        "--kinds",
        nargs="+",
        choices=["flat", "hnsw", "ivf"],
        default=["flat", "hnsw", "ivf"],
        help="index kinds to measure (flat, the baseline for recall, always runs)",
    )
    p.add_argument("--ivf-nlist", type=int, nargs="+", default=[IvfParams.nlist])
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument(
        "--vectors-only",
        action="store_true",
        help="measure the vector indexes alone (no SQL): flat and HNSW built in memory",
    )
    p.add_argument("--database-url", default="", help="PostgreSQL base URL (default: SQLite)")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("storage_bench.json"),
        help="results file; a .jsonl name gets one line per size",
    )
    args = p.parse_args(argv)
    info = machine()
    print(json.dumps(info), flush=True)
    results = []
    for n in args.sizes:
        base = args.workdir or Path(tempfile.mkdtemp(prefix="vidseek-bench-"))
        workdir = base / str(n)
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            results.append(
                run_vectors_only(n, args) if args.vectors_only else run_size(n, args, workdir)
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps(results[-1]), flush=True)
    info["load_avg_end"] = os.getloadavg()
    if args.out.suffix == ".jsonl":  # one line per size, each with the machine
        args.out.write_text("".join(json.dumps({**info, **r}) + "\n" for r in results))
    else:
        args.out.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    print(markdown(info, results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
