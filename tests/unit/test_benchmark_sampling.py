"""The ingest benchmark's host CPU accounting (``benchmarks/sampling.py``), on real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from benchmarks.sampling import HostCpu
from tests.support.videos import write_video
from vidseek.indexer.video import DecodeWorker
from vidseek.indexer.video.worker import PROCESS_NAME


def test_decoder_processes_are_named_for_ps_and_top(tmp_path: Path):
    with DecodeWorker("pyav") as worker:
        worker.probe(write_video(tmp_path / "v.mp4", seconds=1), timeout=60)
        assert worker.pid is not None
        assert psutil.Process(worker.pid).name() == PROCESS_NAME


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


@pytest.mark.slow
def test_cpu_seconds_are_split_between_decoders_this_process_and_the_rest(tmp_path: Path):
    video = write_video(tmp_path / "v.mp4", seconds=8)
    busy = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass"
    with DecodeWorker("pyav") as worker:
        worker.probe(video, timeout=60)  # started before the block: only its work inside counts
        assert worker.pid is not None
        before = _cpu(worker.pid)
        with HostCpu(period=0.1) as cpu:
            for _ in range(5):
                worker.read(video, list(range(0, 240, 2)), 96, 160, timeout=60)
            subprocess.run([sys.executable, "-c", busy], check=True, timeout=60)
            _spin(0.5)
        decoded = _cpu(worker.pid) - before
    report = cpu.report()
    seconds = report["cpu_seconds"]
    assert decoded > 0 and seconds["decoders"] == pytest.approx(decoded, abs=0.11)
    assert seconds["this_process"] >= 0.5
    # A child that ends between samples loses its last interval: it used about 1 s.
    assert 0.5 <= seconds["other"] <= 1.3
    assert "engine_core" not in seconds
    assert set(report["cpu_cores_busy"]) == set(seconds)
