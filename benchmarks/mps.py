"""NVIDIA's Multi-Process Service (MPS) for a benchmark run (``--mps``).

Without MPS the GPU serves the CUDA contexts of different processes by turns: the
NVDEC decoder process's small kernels (colour conversion, resizing) wait for the
engine process's time slices, and a decoder sharing the GPU with vLLM falls far
behind the same decoder alone. Under MPS the processes' work shares the GPU at once.

:func:`mps_daemon` starts the control daemon with its own pipe and log directories
and sets ``CUDA_MPS_PIPE_DIRECTORY`` / ``CUDA_MPS_LOG_DIRECTORY`` in this process's
environment, so every CUDA process started afterwards (this one included, if it has
not touched CUDA yet) is an MPS client; on exit it tells the daemon to quit. The
daemon serves the run's GPUs (``CUDA_VISIBLE_DEVICES``), and a client counts GPUs
within the daemon's: inside the block the run's GPUs are ``0..n-1`` (with the run's
own setting, a run on GPU 1 found no GPU at all).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

CONTROL = "nvidia-cuda-mps-control"
# The daemon's CUDA_VISIBLE_DEVICES, for code that needs the GPUs' own (NVML) indices.
DAEMON_GPUS = "VIDSEEK_MPS_DAEMON_GPUS"


@contextlib.contextmanager
def mps_daemon(directory: Path) -> Iterator[dict[str, str]]:
    """An MPS control daemon for the duration of the block; yields its client env."""
    control = shutil.which(CONTROL)
    if control is None:
        raise SystemExit(f"--mps: {CONTROL} is not on PATH (it comes with the NVIDIA driver)")
    env = {
        "CUDA_MPS_PIPE_DIRECTORY": str(directory / "pipe"),
        "CUDA_MPS_LOG_DIRECTORY": str(directory / "log"),
    }
    for path in env.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    started = subprocess.run(
        [control, "-d"], env={**os.environ, **env}, capture_output=True, timeout=60
    )
    if started.returncode != 0:
        output = (started.stdout + started.stderr).decode(errors="replace").strip()
        raise SystemExit(f"--mps: {CONTROL} -d failed ({started.returncode}): {output}")
    # The daemon serves the GPUs of its CUDA_VISIBLE_DEVICES, and a client's
    # CUDA_VISIBLE_DEVICES counts within those: the run's GPUs are 0..n-1 to it.
    # NVML does not: DAEMON_GPUS keeps them.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = len([d for d in visible.split(",") if d.strip()])
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(k) for k in range(count))
        env[DAEMON_GPUS] = visible
    before = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        try:
            # The daemon quits once its clients have exited; one left behind (an engine
            # process after a crash) keeps it up: warn, and let the run's own error show.
            stopped = subprocess.run(
                [control],
                input=b"quit\n",
                env={**os.environ, **env},
                capture_output=True,
                timeout=60,
            )
            if stopped.returncode != 0:
                print(f"--mps: {CONTROL} quit failed ({stopped.returncode})", file=sys.stderr)
        except subprocess.TimeoutExpired:
            print("--mps: the MPS daemon did not quit within 60 s", file=sys.stderr)
        finally:
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
