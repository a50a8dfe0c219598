"""``--mps``: the MPS control daemon around a benchmark run, with a stand-in control
program that records how it was called."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from benchmarks.mps import CONTROL, DAEMON_GPUS, mps_daemon
from benchmarks.sampling import visible_gpus

FAKE_CONTROL = """#!/bin/sh
{ echo "args:$*"; echo "pipe:$CUDA_MPS_PIPE_DIRECTORY"; echo "log:$CUDA_MPS_LOG_DIRECTORY";
  echo "gpus:$CUDA_VISIBLE_DEVICES";
  if [ "$1" != "-d" ]; then echo "stdin:$(cat)"; fi; } >> "$RECORD"
exit ${FAIL:-0}
"""


@pytest.fixture
def control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / CONTROL
    program.write_text(FAKE_CONTROL)
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "record.txt"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RECORD", str(record))
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    monkeypatch.delenv("CUDA_MPS_LOG_DIRECTORY", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return record


def test_the_daemon_runs_for_the_block_and_processes_started_in_it_are_clients(
    control: Path, tmp_path: Path
):
    with mps_daemon(tmp_path / "mps") as env:
        assert os.environ["CUDA_MPS_PIPE_DIRECTORY"] == str(tmp_path / "mps" / "pipe")
        assert Path(env["CUDA_MPS_LOG_DIRECTORY"]).is_dir()
        started = control.read_text().splitlines()
    assert started == [
        "args:-d",
        f"pipe:{tmp_path / 'mps' / 'pipe'}",
        f"log:{tmp_path / 'mps' / 'log'}",
        "gpus:",
    ]
    stopped = control.read_text().splitlines()[4:]
    assert stopped[0] == "args:" and stopped[-1] == "stdin:quit"
    assert stopped[1] == f"pipe:{tmp_path / 'mps' / 'pipe'}"  # the same daemon
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ  # restored


def test_clients_count_gpus_within_the_daemons_so_the_runs_gpus_are_numbered_from_0(
    control: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus(8) == [2, 3]
    with mps_daemon(tmp_path / "mps") as env:
        assert env["CUDA_VISIBLE_DEVICES"] == os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
        assert visible_gpus(8) == [2, 3]  # GPU figures are still sampled on GPUs 2 and 3
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # a child process's share
        assert visible_gpus(8) == [3]
    assert "gpus:2,3" in control.read_text().splitlines()[:4]  # the daemon serves GPUs 2 and 3
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"  # restored
    assert DAEMON_GPUS not in os.environ


def test_a_daemon_that_does_not_start_is_a_clear_error(
    control: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("FAIL", "3")
    with pytest.raises(SystemExit, match=r"-d failed \(3\)"), mps_daemon(tmp_path / "mps"):
        pytest.fail("the block ran without a daemon")
    assert control.read_text().splitlines()[0] == "args:-d"
    assert "args:" not in control.read_text().splitlines()  # no quit for a daemon never up


def test_variables_set_before_are_put_back_even_when_the_run_fails(
    control: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", "/elsewhere/pipe")
    with pytest.raises(RuntimeError, match="engine died"), mps_daemon(tmp_path / "mps"):
        assert os.environ["CUDA_MPS_LOG_DIRECTORY"] == str(tmp_path / "mps" / "log")
        raise RuntimeError("engine died")
    assert control.read_text().splitlines()[-1] == "stdin:quit"
    assert os.environ["CUDA_MPS_PIPE_DIRECTORY"] == "/elsewhere/pipe"
    assert "CUDA_MPS_LOG_DIRECTORY" not in os.environ


def test_no_control_program_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="not on PATH"), mps_daemon(tmp_path / "mps"):
        pass
