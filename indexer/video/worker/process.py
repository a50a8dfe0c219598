"""The child side of the decode worker: what runs in the decoder process.

:class:`~vidseek.indexer.video.worker.client.DecodeWorker` runs :func:`_worker_main`
in a ``spawn`` child process, which serves its requests (one thread per request
channel) and writes the frames into the shared-memory buffers it was handed.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import signal
import sys
import threading
from collections.abc import Sequence
from multiprocessing import reduction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import numpy as np

from vidseek.indexer.video.frames import FrameBackend, _clean_message
from vidseek.storage.errors import VideoError

# A decoder process's name (Linux's 15-character process name), for ps, top and the
# benchmarks' CPU accounting.
PROCESS_NAME: Final = "vidseek-decode"
_LOG_MAX_BYTES: Final = 2**20
# Log records a worker process keeps for its next reply (the latest, when more come).
_RECORDS_KEPT: Final = 100


def _worker_main(
    conns: Sequence[Connection],
    backend_cls: type[FrameBackend],
    nice: int = 0,
    codec_threads: int = 0,
) -> None:
    """Serve probe and read requests until told to stop, the parent goes away or the backend breaks.

    ``conns`` are the request channels, one per request the process decodes at once
    (:attr:`~FrameBackend.concurrent_requests`), each served by its own thread with its
    own frame buffer; the first also carries the start-up handshake and ``stop``. Each
    reply is ``(kind, detail, broken, records)``: ``broken`` is the backend's
    :attr:`~FrameBackend.broken`, after which this process exits, and ``records`` the
    warnings logged in the process since the last reply. ``nice`` is added to
    this process's niceness first; ``codec_threads`` (when not 0) is the backend's
    :attr:`~FrameBackend.codec_threads`.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # Linux: how ps, top and psutil name the process
        Path("/proc/self/comm").write_text(PROCESS_NAME)
    if nice:
        os.nice(nice)
    first = conns[0]
    try:
        backend = backend_cls()
        if codec_threads:
            backend.codec_threads = codec_threads
    except Exception as exc:
        first.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    first.send(("ready", None))
    try:
        first.recv()  # ("fds",): one frame buffer per channel, then the log
        buffer_fds = [reduction.recv_handle(first) for _ in conns]
        log_fd = reduction.recv_handle(first)
    except (EOFError, OSError):
        return
    # Our stderr (FFmpeg's log) goes into log_fd.
    sys.stderr.flush()
    os.dup2(log_fd, 2)
    os.close(log_fd)
    server = _Server(backend)
    logging.getLogger().addHandler(server.records)
    threads = [
        threading.Thread(target=server.serve, args=(conn, fd), daemon=True, name=f"request-{k}")
        for k, (conn, fd) in enumerate(zip(conns, buffer_fds, strict=True))
    ]
    for thread in threads:
        thread.start()
    server.done.wait()
    if not backend.broken:  # broken: other requests may still be running; just exit
        with contextlib.suppress(Exception):
            backend.close()


class _Records(logging.Handler):
    """The worker process's log records (warnings and worse), kept until a reply takes
    them to the parent, which logs them where the service logs (the process's own
    stderr is the decoder log of :class:`DecodeWorker`)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._records: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            entry = (record.levelno, record.name, record.getMessage())
            with self.lock or contextlib.nullcontext():
                self._records.append(entry)
                del self._records[:-_RECORDS_KEPT]

    def drain(self) -> list[tuple[int, str, str]]:
        """The records since the last call (level, logger name, message)."""
        with self.lock or contextlib.nullcontext():
            records, self._records = self._records, []
        return records


class _Server:
    """The worker process's request loop, run on one thread per request channel."""

    def __init__(self, backend: FrameBackend) -> None:
        self.backend = backend
        self.records = _Records()
        self.done = threading.Event()  # stop, the parent gone, or the backend broken
        self._lock = threading.Lock()
        self._active = 0  # requests being served

    def serve(self, conn: Connection, buffer_fd: int) -> None:
        """Answer ``conn``'s requests, frames into ``buffer_fd``, until the process is done."""
        try:
            self._serve(conn, buffer_fd)
        finally:
            self.done.set()

    def _serve(self, conn: Connection, buffer_fd: int) -> None:
        backend = self.backend
        buffer: mmap.mmap | None = None
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            op = message[0]
            if op == "stop":
                return
            with self._lock:
                # The log shows this request's lines (and any beside it); under steady
                # load it is also cut once long (only its tail is read).
                with contextlib.suppress(OSError):
                    if not self._active or os.fstat(2).st_size > _LOG_MAX_BYTES:
                        os.ftruncate(2, 0)
                        os.lseek(2, 0, os.SEEK_SET)
                self._active += 1
            try:
                if op == "probe":
                    reply: Any = backend.probe(message[1])
                elif op == "read":
                    _, path, indices, (h, w), nbytes, skip = message
                    if buffer is None or len(buffer) < nbytes:
                        if buffer is not None:
                            buffer.close()
                        buffer = mmap.mmap(buffer_fd, nbytes)
                    out = np.ndarray((len(indices), h, w, 3), dtype=np.uint8, buffer=buffer)
                    try:
                        missing = backend.read(path, indices, (h, w), out, skip_errors=skip)
                    finally:
                        del out
                    reply = (missing, backend.decoded_by or backend.name)
                else:
                    raise ValueError(f"unknown request {op!r}")
                answer: tuple[str, Any] = ("ok", reply)
            except VideoError as exc:
                answer = ("error", str(exc))
            except Exception as exc:
                answer = ("error", f"{type(exc).__name__}: {_clean_message(str(exc))}")
            finally:
                with self._lock:
                    self._active -= 1
            # Read once: a decoder thread still running may set it after this.
            broken = backend.broken
            try:
                conn.send((*answer, broken, self.records.drain()))
            finally:
                sys.stderr.flush()
            if broken:
                return  # answered: the parent starts a fresh process for the next request
