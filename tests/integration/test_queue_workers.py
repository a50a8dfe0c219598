"""Ingest workers on the PostgreSQL task queue: separate ``vidseek worker`` processes.

A server with ``job_queue=procrastinate`` records and queues the jobs; three worker
processes run them with the tiny Qwen3-VL on the CPU. A job is cancelled through the
server while a worker runs it. Then 30 videos go in; one worker is SIGKILLed while it
holds a job, later a second one, and a fresh worker joins. Every job must end, every
window must be committed exactly once, and the server's FAISS must hold exactly the
events in SQL (random weights often answer with no events: the windows are the
measure here; tests/integration/test_search_replicas.py checks replicas' events).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.support.fakes import ColourCaptioner
from tests.support.storage import postgres_schema
from tests.support.videos import write_video
from tests.support.waiting import eventually
from vidseek.client import Client, JobState
from vidseek.indexer import model_inputs
from vidseek.server.app import create_server
from vidseek.server.settings import load_settings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

N_VIDEOS = 30
HEARTBEAT_S = 1.0
STALLED_S = 8.0


def _wait(check: Callable[[], object], timeout: float, what: str) -> None:
    eventually(check, timeout, what, poll=0.2)  # each check reads logs and jobs


class Workers:
    """``vidseek worker`` processes sharing one database."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        with (self.tmp_path / f"{name}.log").open("wb") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "vidseek.server.cli", "worker", "--name", name],
                env={**self.env, "VIDSEEK_DATA_DIR": str(self.tmp_path / name)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGSTOP)

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(30)

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> dict[str, int]:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = {}
        for name, p in self.procs.items():
            try:
                codes[name] = p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = p.wait()
        return codes


def test_workers_survive_kills_and_commit_every_window_once(
    tmp_path: Path, tiny_qwen_dir: Path, embedder: Any
):
    videos = []
    for i in range(N_VIDEOS):
        path = tmp_path / f"v{i:02d}.mp4"
        write_video(path, seconds=24.0, fps=5, colors=[(8 * i, 255 - 8 * i, 40)])
        videos.append(path)
    long_video = tmp_path / "long.mp4"
    write_video(long_video, seconds=80.0, fps=10)

    with postgres_schema() as url:
        common = {
            "database_url": url,
            "window_seconds": 2.0,
            "sample_fps": 1.0,
            "model": str(tiny_qwen_dir),
            "device": "cpu",
            "max_new_tokens": model_inputs.max_constrained_output_tokens(),
        }
        settings = load_settings(
            overrides={
                **common,
                "port": 0,
                "data_dir": str(tmp_path / "server"),
                "job_queue": "procrastinate",
                "catch_up_seconds": 0.2,
            },
            environ={},
        )
        server, port, app = create_server(
            settings, embedder=embedder, captioner_factory=ColourCaptioner
        )
        env = {
            **os.environ,
            **{f"VIDSEEK_{k.upper()}": str(v) for k, v in common.items()},
            "VIDSEEK_WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT_S),
            "VIDSEEK_WORKER_STALLED_SECONDS": str(STALLED_S),
            "VIDSEEK_DECODE_PROCESSES": "1",
            # One window in the engine at a time, so a cancel lands mid-job.
            "VIDSEEK_MAX_IN_FLIGHT": "1",
            "VIDSEEK_INGEST_WORKERS": "1",
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        workers = Workers(tmp_path, env)
        pg = create_engine(url)

        def jobs_of(worker: str) -> list[str]:
            """The jobs ``worker`` has started (by its log) that are running now."""
            started = re.findall(
                r"Starting job vidseek\.ingest_job\[\d+\]\(job_id='(\w+)'\)", workers.log(worker)
            )
            return [j for j in started if client.get_job(j).state is JobState.RUNNING]

        def windows_committed() -> int:
            with pg.connect() as c:
                return int(c.scalar(text("SELECT count(*) FROM windows")))

        client = Client(f"127.0.0.1:{port}", retries=0)
        try:
            for name in ("w0", "w1", "w2"):
                workers.start(name)

            # Cancelling reaches the worker that runs the job.
            long_id = client.ingest(str(long_video)).job_id
            _wait(lambda: client.get_job(long_id).windows_done >= 1, 180, "the long job")
            client.cancel_job(long_id)
            long_job = client.wait_for_job(long_id, timeout=60)
            assert long_job.state is JobState.CANCELLED
            assert 1 <= long_job.windows_done < long_job.windows_total == 40

            ids = [client.ingest(str(v)).job_id for v in videos]
            held = []
            for name, committed in (("w0", 60), ("w1", 150)):
                # Frozen while it holds a job (its heartbeat stops), then killed.
                _wait(
                    lambda c=committed, n=name: windows_committed() >= c and jobs_of(n),
                    180,
                    f"{name} to hold a job",
                )
                workers.stop(name)
                frozen = jobs_of(name)
                workers.kill(name)
                held += frozen
            assert held, "a killed worker held a running job"
            workers.start("w3")

            jobs = [client.wait_for_job(i, timeout=300) for i in ids]
            _wait(lambda: "Starting worker" in workers.log("w3"), 120, "w3 to start")
            codes = workers.stop_all()

            for job in jobs:
                assert job.state is JobState.SUCCEEDED, (job.uri, job.error)
                assert job.windows_done == job.windows_total == 12
            # The jobs the killed workers held were sent back to the queue once their
            # heartbeats stopped, and finished by others.
            assert set(held) <= set(ids)
            survivors = "".join(workers.log(w) for w in ("w1", "w2", "w3"))
            for job_id in held:
                assert f"{job_id}'}} lost its worker; queued again" in survivors
            assert codes["w2"] == 0 and codes["w3"] == 0, workers.log("w2")[-3000:]

            with pg.connect() as c:
                per_video = {
                    v: n
                    for v, n in c.execute(
                        text("SELECT video_id, count(*) FROM windows GROUP BY video_id")
                    )
                }
                events = set(c.scalars(text("SELECT id FROM events")))
                adds = list(c.scalars(text("SELECT event_id FROM change_log WHERE op = 'add'")))
            for job in jobs:
                assert per_video[job.video_id] == 12  # each window once
            assert sorted(adds) == sorted(events)  # each event added once

            # The server's index caught up with exactly what the workers committed.
            _wait(lambda: app.store.change_log_lag() == 0, 30, "the index to catch up")
            assert set(app.store.index.ids().tolist()) == events
        finally:
            client.close()
            workers.stop_all()
            server.stop(0)
            app.shutdown()
            pg.dispose()
