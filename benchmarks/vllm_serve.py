"""The ingest benchmark's served engine: ``vllm serve`` processes and the project's
OpenAI captioner in front of them (``ingest_throughput.py --engine serve``).

The in-process engine (``AsyncVllmEngine``) renders every window in the server's own
process, one ``AsyncLLM`` front end for all GPUs. vLLM's answer to a front end that
cannot keep up is more front-end processes, and this runs its two shapes:

- one server over several GPUs: ``--data-parallel-size D --api-server-count A``
  (vLLM's data parallelism with A API processes sharing the D engines);
- R servers, one per GPU slice (``CUDA_VISIBLE_DEVICES``), with the captioner
  spreading requests over them as production does (``VIDSEEK_OPENAI_BASE_URL``
  with several URLs).

Each server gets the in-process engine's arguments
(:func:`~vidseek.indexer.engine_vllm.async_engine_kwargs`, priority scheduling
included) as command-line flags, and the captioner sends each window's priority.
Caption answers are forced to ``output_tokens`` tokens with no grammar (random
weights never end one); grounding windows (refinement) decode as in production.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from vidseek.indexer.captioner_openai import OpenAICaptioner
from vidseek.indexer.engine import INGEST_PRIORITY, EngineStats
from vidseek.indexer.engine_vllm import spread_tokens
from vidseek.indexer.types import CaptionOutput, WindowClip

SERVED_NAME = "bench"


def cli_flags(kwargs: Mapping[str, Any]) -> list[str]:
    """Engine keyword arguments as ``vllm serve`` flags: ``max_model_len=8`` becomes
    ``--max-model-len 8``, a dict JSON, True ``--x`` and False ``--no-x`` (vLLM gives
    every boolean engine argument both forms)."""
    flags: list[str] = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, (dict, list)):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


def serve_command(engine_kwargs: Mapping[str, Any], port: int, api_servers: int) -> list[str]:
    """``vllm serve`` of ``engine_kwargs["model"]`` on ``127.0.0.1:port`` with
    ``api_servers`` front-end processes (the ``vllm serve`` command starts them)."""
    # Stats logging stays on: the server's log then shows its queue and token rates
    # every 10 s, which tell a front end that cannot keep up from a full engine.
    options = {k: v for k, v in engine_kwargs.items() if k not in ("model", "disable_log_stats")}
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.cli.main",
        "serve",
        str(engine_kwargs["model"]),
        *cli_flags(options),
        "--served-model-name",
        SERVED_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-server-count",
        str(api_servers),
        "--trust-request-chat-template",
    ]


class ForcedCaptions(OpenAICaptioner):
    """The OpenAI captioner with caption answers of exactly ``caption_tokens`` tokens, or
    with ``caption_tokens_spread`` F of a length drawn per window from
    ``caption_tokens`` x [1 - F, 1 + F] (as the in-process engine draws it)."""

    def __init__(
        self, *args: Any, caption_tokens: int, caption_tokens_spread: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.caption_tokens = caption_tokens
        self.caption_tokens_spread = caption_tokens_spread

    def request_body(self, clip: WindowClip, priority: int = INGEST_PRIORITY) -> dict[str, Any]:
        body = super().request_body(clip, priority)
        if clip.window.query is None:  # a captioning window, not a refinement's grounding
            body.pop("structured_outputs", None)
            body.pop("response_format", None)
            # A spread of 0 leaves every answer at caption_tokens.
            body["max_tokens"] = spread_tokens(
                self.caption_tokens, self.caption_tokens_spread, clip.window
            )
            body["ignore_eos"] = True
        return body


class ServedEngine:
    """``replicas`` servers of ``engine_kwargs`` (each on ``gpus_each`` GPUs) and the
    captioner in front of them; implements the benchmark's engine interface."""

    def __init__(
        self,
        engine_kwargs: Mapping[str, Any],
        *,
        replicas: int,
        gpus_each: int,
        api_servers: int,
        caption_tokens: int,
        max_new_tokens: int,
        max_concurrency: int,
        log_dir: Path,
        caption_tokens_spread: float = 0.0,
        first_port: int = 8100,
        ready_timeout: float = 900.0,
    ) -> None:
        self._processes: list[tuple[subprocess.Popen[bytes], Path]] = []
        urls = []
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        devices = [d for d in visible.split(",") if d] or [str(g) for g in range(64)]
        try:
            for k in range(replicas):
                port = first_port + k
                env = dict(os.environ)
                if replicas > 1:  # its own slice of the GPUs this process may use
                    mine = devices[k * gpus_each : (k + 1) * gpus_each]
                    if len(mine) < gpus_each:
                        raise ValueError(f"{replicas} servers of {gpus_each} GPUs: too few GPUs")
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
                log = log_dir / f"vllm-serve-{k}.log"
                with open(log, "wb") as out:
                    process = subprocess.Popen(  # its own group: close() ends its children too
                        serve_command(engine_kwargs, port, api_servers),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                    )
                self._processes.append((process, log))
                urls.append(f"http://127.0.0.1:{port}/v1")
            for (process, log), url in zip(self._processes, urls, strict=True):
                wait_ready(url, process, log, ready_timeout)
        except BaseException:
            self.close()
            raise
        self.captioner = ForcedCaptions(
            urls,
            SERVED_NAME,
            caption_tokens=caption_tokens,
            caption_tokens_spread=caption_tokens_spread,
            max_new_tokens=max_new_tokens,
            max_concurrency=max_concurrency,
            send_priority=True,
        )

    @property
    def model_id(self) -> str:
        return SERVED_NAME

    @property
    def stats(self) -> EngineStats:
        return self.captioner.stats

    def submit(self, clip: WindowClip, *, priority: int = INGEST_PRIORITY) -> Future[CaptionOutput]:
        return self.captioner.submit(clip, priority=priority)

    def close(self) -> None:
        if hasattr(self, "captioner"):
            self.captioner.close()
        for process, _ in self._processes:  # the server, its API servers and engines
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(60)  # the group's leader; SIGKILL then ends what is left
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self._processes = []


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Wait until the server at ``url`` answers ``/health``; its log's end if it dies."""
    health = url.removesuffix("/v1") + "/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {process.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(health, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(2)
    raise RuntimeError(f"vllm serve at {url} not ready within {timeout:g} s:\n{_tail(log)}")


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:]
