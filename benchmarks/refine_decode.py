"""Refinement's own share of its latency: decoding the moments' clips, one process or one each.

A search with ``refine=true`` decodes a padded clip around each of its top moments
(``VIDSEEK_REFINE_MAX_MOMENTS``, 3) before the model sees them. This times
:meth:`Refiner.refine` end to end with an engine that answers at once (a span inside
each clip, so every moment must come back refined), so what is left is decoding and
hand-over: with a decode
pool of one process (the clips decode one after another, as before the pool) and
with one process per moment (the default), interleaved in ``--rounds`` rounds.

With ``--load-processes N``, refinement (one process per moment) is timed again
while N ingest decoders decode 60 s windows at 1 fps (448x256) of the same video
without pause, as a saturating ingest keeps its decode pool busy, once for each
niceness of ``--load-nice`` (``VIDSEEK_DECODE_NICE``; 0 is the same priority as
refinement's decoders). The load's windows per second are reported with each row.

    python benchmarks/refine_decode.py [--seconds 1200] [--height 360] [--rounds 2]
    python benchmarks/refine_decode.py --load-processes 2 --load-nice 0 10

The test video is made once by ``make_videos.py`` (H.264 with B-frames, 30 fps).
Prints one JSON line per pool size and load: median seconds per ``refine`` of 3
moments at different places of the video.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.make_videos import make_videos  # noqa: E402


class SpanCaptioner:
    """Answers every grounding clip at once with the second second of the clip."""

    model_id = "benchmark/span"

    def describe(self, clips: Any) -> list[Any]:
        from vidseek.indexer.types import CaptionOutput

        return [
            CaptionOutput(
                text=json.dumps(
                    {"start": c.window.start_seconds + 1, "end": c.window.start_seconds + 2}
                ),
                prompt_tokens=0,
                output_tokens=0,
            )
            for c in clips
        ]

    def close(self) -> None:
        pass


class IngestLoad:
    """``processes`` ingest decoders at niceness ``nice`` decoding random 60 s windows
    (1 fps, 448x256) of ``path`` back to back until :meth:`stop`."""

    def __init__(self, path: str, fps: float, duration: float, processes: int, nice: int):
        from vidseek.indexer.decode_pool import DecodePool

        self.pool = DecodePool("pyav", processes, nice=nice)
        self.windows = 0
        self._path, self._fps, self._duration = path, fps, duration
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,)) for k in range(processes)]
        for thread in self._threads:
            thread.start()

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            start = rng.uniform(0, self._duration - 61)
            indices = [round((start + t) * self._fps) for t in range(60)]
            self.pool.submit(partial(self._read, indices)).result()
            self.windows += 1

    def _read(self, indices: list[int], worker: Any) -> Any:
        return worker.read(self._path, indices, 256, 448, timeout=300)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=1200)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--searches", type=int, default=6, help="refine calls per round")
    parser.add_argument("--video-dir", type=Path, default=Path("/tmp/vidseek-bench-videos"))
    parser.add_argument("--load-processes", type=int, default=0, help="ingest decoders meanwhile")
    parser.add_argument("--load-nice", type=int, nargs="+", default=[0, 10])
    args = parser.parse_args(argv)

    from vidseek.indexer.decode_pool import DecodePool
    from vidseek.indexer.engine import BatchingEngine
    from vidseek.indexer.pipeline import content_hash, register_video
    from vidseek.indexer.video import DecodeWorker, probe
    from vidseek.server.refine import RefineConfig, Refiner
    from vidseek.server.search import MomentResult
    from vidseek.storage.store import Store

    (path,) = make_videos(args.video_dir, [f"{args.height}p:{args.seconds}"], os.cpu_count() or 2)
    work = Path(tempfile.mkdtemp(prefix="refine-decode-"))
    store = Store(f"sqlite:///{work / 'db.sqlite'}", work / "faiss.index", 384)
    with DecodeWorker("pyav") as worker:
        info = probe(str(path), timeout=300, worker=worker)
    video_id = register_video(store, path.resolve(), content_hash(path), info, "")
    engine = BatchingEngine(SpanCaptioner())
    config = RefineConfig()
    spacing = (info.duration - 60) / ((args.searches + 1) * config.max_moments)
    # (decoder processes, the load's niceness or None without load)
    runs: list[tuple[int, int | None]] = [(1, None), (config.max_moments, None)]
    if args.load_processes:
        runs += [(config.max_moments, nice) for nice in args.load_nice]
    timings: dict[tuple[int, int | None], list[float]] = {}
    load_rates: dict[tuple[int, int | None], list[float]] = {}
    for _ in range(args.rounds):
        for processes, nice in runs:
            pool = DecodePool("pyav", processes)
            refiner = Refiner(store, lambda: engine, config, decode_pool=pool)
            load = None
            if nice is not None:
                load = IngestLoad(str(path), info.fps, info.duration, args.load_processes, nice)
                while load.windows < args.load_processes:  # its decoders have started
                    time.sleep(0.1)
            load_started, load_windows = time.perf_counter(), load.windows if load else 0
            try:
                for k in range(args.searches + 1):  # the first call warms the pool up
                    moments = [
                        MomentResult(
                            video_id=video_id,
                            start_seconds=30 + spacing * (k * config.max_moments + j),
                            end_seconds=35 + spacing * (k * config.max_moments + j),
                            description="a box moves",
                            score=0.5,
                            event_ids=(1,),
                        )
                        for j in range(config.max_moments)
                    ]
                    started = time.perf_counter()
                    refined = refiner.refine("a box moves", moments, time.monotonic() + 60)
                    if not all(m.refined for m in refined):  # a failure would look fast
                        raise SystemExit(f"a moment was not refined: {refined}")
                    if k:
                        elapsed = time.perf_counter() - started
                        timings.setdefault((processes, nice), []).append(elapsed)
            finally:
                if load is not None:
                    rate = (load.windows - load_windows) / (time.perf_counter() - load_started)
                    load_rates.setdefault((processes, nice), []).append(rate)
                    load.stop()
                refiner.close()
                pool.close()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for (processes, nice), values in timings.items():
        row: dict[str, Any] = {
            "run": "refine decode",
            "video": path.name,
            "moments": config.max_moments,
            "decoder_processes": processes,
            "median_s": round(statistics.median(values), 3),
            "calls": len(values),
            "cpus": len(os.sched_getaffinity(0)),
            "date": date,
        }
        if nice is not None:
            row["load_processes"] = args.load_processes
            row["load_nice"] = nice
            row["load_windows_per_s"] = round(statistics.fmean(load_rates[(processes, nice)]), 2)
        print(json.dumps(row), flush=True)
    engine.close()
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
