"""The decode worker process (:class:`DecodeWorker`) and what a request returns.

A worker runs :func:`_worker_main` in a ``spawn`` child process; requests have
deadlines, frames come back through shared memory (see the package docstring).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import multiprocessing
import os
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import reduction
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, overload

import numpy as np
import numpy.typing as npt

from vidseek.indexer.types import VideoInfo
from vidseek.indexer.video.backends import BACKENDS
from vidseek.indexer.video.frames import FrameBackend, Frames, _clean_message
from vidseek.storage.errors import (
    ConfigError,
    DecodeTimeout,
    NotFound,
    ResourceExhausted,
    VideoError,
    VidseekError,
)

OnError = Literal["raise", "skip"]

# torchcodec's worker imports torch: ~5 s idle, over 60 s seen on a loaded 2-core machine.
DEFAULT_START_TIMEOUT: Final = 180.0
# A decoder process's name (Linux's 15-character process name), for ps, top and the
# benchmarks' CPU accounting.
PROCESS_NAME: Final = "vidseek-decode"
_LOG_TAIL_BYTES: Final = 4096
# Worker restarts one "skip" request may cost while it isolates crashing frames.
_SKIP_CRASH_BUDGET: Final = 8


def _anonymous_file(name: str) -> int:
    """A file descriptor of a nameless file that lives in memory where possible."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create(name, os.MFD_CLOEXEC)
    fd, path = tempfile.mkstemp(prefix=f"{name}-")
    os.unlink(path)
    return fd


def _worker_main(
    conn: Connection, backend_cls: type[FrameBackend], nice: int = 0, codec_threads: int = 0
) -> None:
    """Serve probe and read requests until told to stop, the parent goes away or the backend breaks.

    Each reply is ``(kind, detail, broken)``: ``broken`` is the backend's
    :attr:`~FrameBackend.broken`, after which this process exits. ``nice`` is added to
    this process's niceness first; ``codec_threads`` (when not 0) is the backend's
    :attr:`~FrameBackend.codec_threads`.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # Linux: how ps, top and psutil name the process
        Path("/proc/self/comm").write_text(PROCESS_NAME)
    if nice:
        os.nice(nice)
    try:
        backend = backend_cls()
        if codec_threads:
            backend.codec_threads = codec_threads
    except Exception as exc:
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    buffer_fd = -1
    buffer: mmap.mmap | None = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        op = message[0]
        if op == "stop":
            break
        if op == "fds":
            # Frames go into buffer_fd; our stderr (FFmpeg's log) into log_fd.
            buffer_fd = reduction.recv_handle(conn)
            log_fd = reduction.recv_handle(conn)
            sys.stderr.flush()
            os.dup2(log_fd, 2)
            os.close(log_fd)
            continue
        with contextlib.suppress(OSError):
            os.ftruncate(2, 0)
            os.lseek(2, 0, os.SEEK_SET)
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
        # Read once: a decoder thread still running may set it after this.
        broken = backend.broken
        try:
            conn.send((*answer, broken))
        finally:
            sys.stderr.flush()
        if broken:
            break  # answered: the parent starts a fresh process for the next request
    with contextlib.suppress(Exception):
        backend.close()


def resolve_backend(backend: str | type[FrameBackend]) -> type[FrameBackend]:
    """The backend class named by ``backend`` (a class is returned as it is)."""
    if isinstance(backend, str):
        try:
            return BACKENDS[backend]
        except KeyError:
            names = ", ".join(sorted(BACKENDS))
            raise ConfigError(f"unknown video backend {backend!r} (known: {names})") from None
    if isinstance(backend, type) and issubclass(backend, FrameBackend):
        return backend
    raise ConfigError(f"not a video backend: {backend!r}")


def _check_file(path: str) -> None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"video file not found: {path}") from None
    except OSError as exc:
        raise VideoError(f"{path}: cannot access file: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise VideoError(f"{path}: not a regular file")
    if info.st_size == 0:
        raise VideoError(f"{path}: file is empty")


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "the decoder process died"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the decoder process was killed by {name}"
    return f"the decoder process exited with code {exitcode}"


@dataclass(frozen=True)
class DecodedFrames:
    """What a ``read(..., on_error="skip")`` got: the frames that decoded, and the gap.

    ``frames[k]`` is the frame at absolute index ``indices[k]``, in the order
    (and with the repeats) of the request, minus the indices in ``missing``
    (sorted, unique). ``error`` is empty when nothing is missing; otherwise one
    line naming the path, how many frames are missing, where, and the first
    reason.
    """

    frames: Frames
    indices: tuple[int, ...]
    missing: tuple[int, ...]
    error: str = ""

    @property
    def complete(self) -> bool:
        """Whether every requested frame decoded."""
        return not self.missing

    def paired(self) -> DecodedFrames:
        """The same frames, with the last one repeated if needed for an even count.

        Qwen3-VL merges frames in temporal pairs (compare :func:`sample_indices`).
        """
        if len(self.indices) % 2 == 0:
            return self
        return DecodedFrames(
            frames=np.concatenate([self.frames, self.frames[-1:]]),
            indices=(*self.indices, self.indices[-1]),
            missing=self.missing,
            error=self.error,
        )


class _WorkerDied(VideoError):
    """The worker process died during a request (crash, kill, broken pipe), or its
    backend broke (:attr:`FrameBackend.broken`) and the process was replaced."""


def _spans(indices: Sequence[int]) -> str:
    """``"3, 7..9"`` for ``[3, 7, 8, 9]``: runs of consecutive indices, the first few."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    text = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in runs[:5])
    return text + (", ..." if len(runs) > 5 else "")


class DecodeWorker:
    """A decode worker process with its frame buffer and log; restarts itself after failures.

    One worker serves any number of files, one request at a time (calls from
    several threads are serialised). Each request has a deadline: a worker that
    misses it is killed and :class:`DecodeTimeout` raised; one that dies gives
    :class:`VideoError` naming the signal. A backend that can decode no more in
    its process (:attr:`FrameBackend.broken`: a CUDA error that broke the CUDA
    context) answers its request, then its process exits, and the request fails
    as a crash does (in skip mode it is retried on a fresh process, in halves,
    within the same bound). Either way the next request starts a fresh process.
    Share one worker between :class:`FrameReader` objects to pay the process start
    once (~1 s for PyAV or decord; 5-20 s for torchcodec, which imports torch).
    """

    def __init__(
        self,
        backend: str | type[FrameBackend] = "decord",
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        nice: int = 0,
        codec_threads: int = 0,
    ) -> None:
        """Prepare a worker; the process starts on the first request.

        ``backend`` is a name in :data:`BACKENDS` or a :class:`FrameBackend`
        subclass importable by the worker; ``start_timeout`` bounds starting it;
        ``nice`` (0-19) is added to the process's niceness, so that it yields the
        cores to processes that want them more (e.g. ingestion's decoders to
        search refinement's); ``codec_threads`` (0: the backend's own) is how many
        threads each decode uses where the backend takes a number (PyAV).
        """
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be 0-19, got {nice}")
        if codec_threads < 0:
            raise ValueError(f"codec_threads must be >= 0, got {codec_threads}")
        self.backend = resolve_backend(backend)
        self.start_timeout = start_timeout
        self.nice = nice
        self.codec_threads = codec_threads
        # The backend that decoded the last read's frames: this one, or the one it
        # handed the file to (NVDEC's process decodes with PyAV when it must).
        self.decoded_by = self.backend.name
        self._lock = threading.Lock()
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._buffer_fd = _anonymous_file("vidseek-frames")
        self._log_fd = _anonymous_file("vidseek-decode-log")
        self._buffer: mmap.mmap | None = None
        self._capacity = 0
        self._closed = False

    def __enter__(self) -> DecodeWorker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A worker dropped without close() must not leave a process behind.
        with contextlib.suppress(Exception):
            self.close()

    @property
    def pid(self) -> int | None:
        """The process id of the running worker process, if one runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    def probe(self, path: str | os.PathLike[str], *, timeout: float) -> VideoInfo:
        """Probe a video (see :func:`probe`)."""
        path = os.fspath(path)
        with self._lock:
            self._check_open()
            _check_file(path)
            info = self._call(("probe", path), path=path, timeout=timeout, action="probing")
        assert isinstance(info, VideoInfo)
        _validate_info(path, info)
        return info

    @overload
    def read(
        self,
        path: str | os.PathLike[str],
        indices: Sequence[int] | npt.NDArray[np.integer[Any]],
        height: int,
        width: int,
        *,
        timeout: float,
        on_error: Literal["raise"] = "raise",
    ) -> Frames: ...

    @overload
    def read(
        self,
        path: str | os.PathLike[str],
        indices: Sequence[int] | npt.NDArray[np.integer[Any]],
        height: int,
        width: int,
        *,
        timeout: float,
        on_error: Literal["skip"],
    ) -> DecodedFrames: ...

    def read(
        self,
        path: str | os.PathLike[str],
        indices: Sequence[int] | npt.NDArray[np.integer[Any]],
        height: int,
        width: int,
        *,
        timeout: float,
        on_error: OnError = "raise",
    ) -> Frames | DecodedFrames:
        """Frames of ``path`` at absolute ``indices`` (see :meth:`FrameReader.read`)."""
        path = os.fspath(path)
        wanted = np.asarray(indices, dtype=np.int64)
        if wanted.ndim != 1:
            raise ValueError("indices must be one-dimensional")
        if wanted.size and int(wanted.min()) < 0:
            raise ValueError(f"frame indices must be non-negative, got {int(wanted.min())}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        h, w = int(height), int(width)
        if h <= 0 or w <= 0:
            raise ValueError(f"frame size must be positive, got {h}x{w}")
        if not wanted.size:
            empty = np.empty((0, h, w, 3), dtype=np.uint8)
            return empty if on_error == "raise" else DecodedFrames(empty, (), ())
        unique, inverse = np.unique(wanted, return_inverse=True)
        inverse = inverse.ravel()
        with self._lock:
            self.decoded_by = self.backend.name  # a request that fails is this backend's
            self._check_open()
            _check_file(path)
            if on_error == "raise":
                frames, _ = self._read_unique(path, unique.tolist(), h, w, timeout, skip=False)
                return frames if np.array_equal(unique, wanted) else frames[inverse]
            frames, missing = self._read_skipping(
                path, unique.tolist(), h, w, timeout, [_SKIP_CRASH_BUDGET]
            )
        decoded = np.isin(wanted, list(missing), invert=True)
        keep = inverse[decoded]
        error = ""
        if missing:
            gone = sorted(missing)
            error = (
                f"{path}: {len(gone)} of {len(unique)} frames could not be decoded "
                f"({_spans(gone)}): {missing[gone[0]]}"
            )
        return DecodedFrames(
            frames=frames[keep],
            indices=tuple(int(i) for i in wanted[decoded]),
            missing=tuple(sorted(missing)),
            error=error,
        )

    def _read_unique(
        self, path: str, unique: list[int], h: int, w: int, timeout: float, *, skip: bool
    ) -> tuple[Frames, dict[int, str]]:
        """One request for sorted unique indices: a copy of the frames, and what is missing."""
        nbytes = len(unique) * h * w * 3
        span = f"{len(unique)} frames ({unique[0]}..{unique[-1]}) at {w}x{h}"
        self._reserve(nbytes)
        missing, self.decoded_by = self._call(
            ("read", path, unique, (h, w), nbytes, skip),
            path=path,
            timeout=timeout,
            action=f"decoding {span}",
        )
        assert isinstance(missing, dict) and self._buffer is not None
        view: Frames = np.ndarray((len(unique), h, w, 3), dtype=np.uint8, buffer=self._buffer)
        frames = view.copy()
        del view  # a live view would keep the buffer from being resized or closed
        return frames, missing

    def _read_skipping(
        self, path: str, unique: list[int], h: int, w: int, timeout: float, budget: list[int]
    ) -> tuple[Frames, dict[int, str]]:
        """``_read_unique`` in skip mode; a crashed worker is retried on halves of the request.

        ``budget`` (one shared counter) bounds the retries; past it, the indices
        of a crashing request are reported missing. A hang is not retried: it
        costs a whole deadline each time, so :class:`DecodeTimeout` propagates.
        """
        try:
            return self._read_unique(path, unique, h, w, timeout, skip=True)
        except _WorkerDied as exc:
            if len(unique) == 1 or budget[0] <= 0:
                frames = np.zeros((len(unique), h, w, 3), dtype=np.uint8)
                reason = str(exc).removeprefix(f"{path}: ")
                return frames, {index: reason for index in unique}
            budget[0] -= 1
        half = len(unique) // 2
        first, lost_first = self._read_skipping(path, unique[:half], h, w, timeout, budget)
        second, lost_second = self._read_skipping(path, unique[half:], h, w, timeout, budget)
        return np.concatenate([first, second]), {**lost_first, **lost_second}

    def close(self) -> None:
        """Stop the process and free the buffers. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._conn is not None and self._proc is not None:
                with contextlib.suppress(OSError):
                    self._conn.send(("stop",))
                self._proc.join(2)
            self._kill()
            if self._buffer is not None:
                with contextlib.suppress(BufferError):
                    self._buffer.close()
                self._buffer = None
            for fd in (self._buffer_fd, self._log_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -- internals; callers hold self._lock

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("DecodeWorker is closed")

    def _reserve(self, nbytes: int) -> None:
        """Make the shared frame buffer at least ``nbytes`` long."""
        if nbytes <= self._capacity:
            return
        try:
            os.ftruncate(self._buffer_fd, nbytes)
            if hasattr(os, "posix_fallocate"):
                # Fail here, not with SIGBUS in the worker, when memory is short.
                os.posix_fallocate(self._buffer_fd, 0, nbytes)
        except OSError as exc:
            raise ResourceExhausted(
                f"cannot reserve {nbytes / 2**20:.0f} MiB of shared memory for frames: "
                f"{exc.strerror}"
            ) from None
        if self._buffer is not None:
            self._buffer.close()
        self._buffer = mmap.mmap(self._buffer_fd, nbytes)
        self._capacity = nbytes

    def _start(self) -> None:
        name = self.backend.name
        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=_worker_main,
            args=(child_conn, self.backend, self.nice, self.codec_threads),
            name=f"vidseek-decode-{name}",
        )
        proc.daemon = True
        proc.start()
        child_conn.close()
        self._proc, self._conn = proc, parent_conn
        try:
            if not parent_conn.poll(self.start_timeout):
                raise VidseekError(
                    f"the {name} decoder process did not start within {self.start_timeout:g} s"
                )
            kind, detail = parent_conn.recv()
            if kind == "fatal":
                raise ConfigError(f"video backend {name!r} is unavailable: {detail}")
            parent_conn.send(("fds",))
            reduction.send_handle(parent_conn, self._buffer_fd, proc.pid)
            reduction.send_handle(parent_conn, self._log_fd, proc.pid)
        except (EOFError, OSError):
            proc.join(5)
            reason = _describe_exit(proc.exitcode)
            self._kill()
            raise VidseekError(f"the {name} decoder process failed to start: {reason}") from None
        except BaseException:
            self._kill()
            raise

    def _kill(self) -> None:
        """Kill the process (if any) and forget it."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
        if conn is not None:
            conn.close()

    def _log_tail(self) -> str:
        """The last lines the worker (FFmpeg, decord) wrote to stderr during this request."""
        try:
            size = os.fstat(self._log_fd).st_size
            data = os.pread(self._log_fd, _LOG_TAIL_BYTES, max(0, size - _LOG_TAIL_BYTES))
        except OSError:
            return ""
        lines = [_clean_message(line) for line in data.decode("utf-8", "replace").splitlines()]
        return " | ".join([line for line in lines if line][-3:])

    def _message(self, path: str, problem: str) -> str:
        log = self._log_tail()
        return f"{path}: {problem}" + (f" (decoder log: {log})" if log else "")

    def _call(self, request: tuple[Any, ...], *, path: str, timeout: float, action: str) -> Any:
        """Send one request and wait for its reply, turning every failure into an error."""
        if self._proc is not None and not self._proc.is_alive():
            self._kill()
        if self._proc is None:
            self._start()
        proc, conn = self._proc, self._conn
        assert proc is not None and conn is not None
        try:
            conn.send(request)
            answered = conn.poll(timeout)
            reply: tuple[str, Any, str] = conn.recv() if answered else ("", None, "")
        except (EOFError, OSError):
            proc.join(5)
            reason = _describe_exit(proc.exitcode)
            self._kill()
            raise _WorkerDied(self._message(path, f"{reason} while {action}")) from None
        except BaseException:
            # Interrupted mid-request (KeyboardInterrupt...): a late reply would
            # answer the next request, so this worker cannot be reused.
            self._kill()
            raise
        if not answered:
            self._kill()
            raise DecodeTimeout(
                self._message(
                    path, f"the decoder did not answer within {timeout:g} s while {action}; killed"
                )
            )
        kind, detail, broken = reply
        if broken:
            # The process exits after this answer: let it, forget it, and fail the
            # request as if it had crashed, so that it is retried on a fresh one.
            proc.join(2)
            self._kill()
            raise _WorkerDied(self._message(path, f"{broken} while {action}"))
        if kind == "ok":
            return detail
        raise VideoError(self._message(path, str(detail)))


def _validate_info(path: str, info: VideoInfo) -> None:
    if not (info.fps > 0 and math.isfinite(info.fps)):
        raise VideoError(f"{path}: video has no usable frame rate ({info.fps})")
    if info.frame_count <= 0:
        raise VideoError(f"{path}: video stream has no frames")
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"{path}: video has no frame size ({info.width}x{info.height})")
