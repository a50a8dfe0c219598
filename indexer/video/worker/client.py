"""The parent side of the decode worker: :class:`DecodeWorker` and what a request returns.

A worker runs :func:`~vidseek.indexer.video.worker.process._worker_main` in a
``spawn`` child process; requests have deadlines, frames come back through shared
memory (see the :mod:`vidseek.indexer.video` package docstring).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import mmap
import multiprocessing
import os
import queue
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import reduction
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, Final, Literal, overload

import numpy as np
import numpy.typing as npt

from vidseek.indexer.types import VideoInfo
from vidseek.indexer.video.backends import BACKENDS
from vidseek.indexer.video.frames import FrameBackend, Frames, _clean_message
from vidseek.indexer.video.worker.channels import _Channel, _Gate
from vidseek.indexer.video.worker.process import _worker_main
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


class _DiedBeside(_WorkerDied):
    """The worker process died while other requests were in flight in it: any of them
    (or another channel's deadline) may have been the cause."""


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
    """A decode worker process with its frame buffers and log; restarts itself after failures.

    One worker serves any number of files and decodes up to ``requests`` requests at
    once (the backend's :attr:`~FrameBackend.concurrent_requests`, 1 for the CPU
    backends; calls beyond that wait for a channel). Each request has a deadline: a
    worker that misses it is killed and :class:`DecodeTimeout` raised; one that dies
    gives :class:`VideoError` naming the signal (requests running beside it at the
    time fail the same way). A backend that can decode no more in
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
        requests: int = 0,
    ) -> None:
        """Prepare a worker; the process starts on the first request.

        ``backend`` is a name in :data:`BACKENDS` or a :class:`FrameBackend`
        subclass importable by the worker; ``start_timeout`` bounds starting it;
        ``nice`` (0-19) is added to the process's niceness, so that it yields the
        cores to processes that want them more (e.g. ingestion's decoders to
        search refinement's); ``codec_threads`` (0: the backend's own) is how many
        threads each decode uses where the backend takes a number (PyAV);
        ``requests`` (0: the backend's :attr:`~FrameBackend.concurrent_requests`) is
        how many requests the process decodes at once.
        """
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be 0-19, got {nice}")
        if codec_threads < 0:
            raise ValueError(f"codec_threads must be >= 0, got {codec_threads}")
        if requests < 0:
            raise ValueError(f"requests must be >= 0 (0: the backend's), got {requests}")
        self.backend = resolve_backend(backend)
        self.start_timeout = start_timeout
        self.nice = nice
        self.codec_threads = codec_threads
        self.requests = requests or max(1, self.backend.concurrent_requests)
        self._local = threading.local()  # each calling thread's last decoded_by
        self._lock = threading.Lock()  # the process: starting, replacing, closing it
        self._proc: BaseProcess | None = None
        self._generation = 0  # processes started so far
        self._conns: list[Connection] = []  # the running process's pipes, by channel
        self._channels = [
            _Channel(k, _anonymous_file("vidseek-frames")) for k in range(self.requests)
        ]
        self._free: queue.SimpleQueue[_Channel] = queue.SimpleQueue()
        for channel in self._channels:
            self._free.put(channel)
        self._log_fd = _anonymous_file("vidseek-decode-log")
        self._closed = False
        # Requests sent and not yet answered, by process (under _lock).
        self._in_flight: collections.Counter[int] = collections.Counter()
        self._gate = _Gate()  # requests at once, or one alone (see _call)
        # Requests in flight when each dead process's death was first seen.
        self._in_flight_at_death: dict[int, int] = {}

    @property
    def decoded_by(self) -> str:
        """The backend that decoded the calling thread's last read: this one, or the one
        it handed the file to (NVDEC's process decodes with PyAV when it must)."""
        return getattr(self._local, "decoded_by", self.backend.name)

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

    @contextlib.contextmanager
    def _channel(self) -> Iterator[_Channel]:
        """A free request channel, for the duration of one request."""
        self._check_open()
        channel = self._free.get()
        try:
            self._check_open()
            yield channel
        finally:
            self._free.put(channel)

    def probe(self, path: str | os.PathLike[str], *, timeout: float) -> VideoInfo:
        """Probe a video (see :func:`probe`)."""
        path = os.fspath(path)
        with self._channel() as channel:
            _check_file(path)
            info = self._call(
                channel, ("probe", path), path=path, timeout=timeout, action="probing"
            )
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
        self._local.decoded_by = self.backend.name  # a request that fails is this backend's
        with self._channel() as channel:
            _check_file(path)
            if on_error == "raise":
                frames, _ = self._read_unique(
                    channel, path, unique.tolist(), h, w, timeout, skip=False
                )
                return frames if np.array_equal(unique, wanted) else frames[inverse]
            frames, missing = self._read_skipping(
                channel, path, unique.tolist(), h, w, timeout, [_SKIP_CRASH_BUDGET]
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
        self,
        channel: _Channel,
        path: str,
        unique: list[int],
        h: int,
        w: int,
        timeout: float,
        *,
        skip: bool,
    ) -> tuple[Frames, dict[int, str]]:
        """One request for sorted unique indices: a copy of the frames, and what is missing."""
        nbytes = len(unique) * h * w * 3
        span = f"{len(unique)} frames ({unique[0]}..{unique[-1]}) at {w}x{h}"
        self._reserve(channel, nbytes)
        missing, self._local.decoded_by = self._call(
            channel,
            ("read", path, unique, (h, w), nbytes, skip),
            path=path,
            timeout=timeout,
            action=f"decoding {span}",
        )
        assert isinstance(missing, dict) and channel.buffer is not None
        view: Frames = np.ndarray((len(unique), h, w, 3), dtype=np.uint8, buffer=channel.buffer)
        frames = view.copy()
        del view  # a live view would keep the buffer from being resized or closed
        return frames, missing

    def _read_skipping(
        self,
        channel: _Channel,
        path: str,
        unique: list[int],
        h: int,
        w: int,
        timeout: float,
        budget: list[int],
    ) -> tuple[Frames, dict[int, str]]:
        """``_read_unique`` in skip mode; a crashed worker is retried on halves of the request.

        ``budget`` (one shared counter) bounds the retries; past it, the indices
        of a crashing request are reported missing. A hang is not retried: it
        costs a whole deadline each time, so :class:`DecodeTimeout` propagates.
        """
        try:
            return self._read_unique(channel, path, unique, h, w, timeout, skip=True)
        except _WorkerDied as exc:
            if len(unique) == 1 or budget[0] <= 0:
                frames = np.zeros((len(unique), h, w, 3), dtype=np.uint8)
                reason = str(exc).removeprefix(f"{path}: ")
                return frames, {index: reason for index in unique}
            budget[0] -= 1
        half = len(unique) // 2
        first, lost_first = self._read_skipping(channel, path, unique[:half], h, w, timeout, budget)
        second, lost_second = self._read_skipping(
            channel, path, unique[half:], h, w, timeout, budget
        )
        return np.concatenate([first, second]), {**lost_first, **lost_second}

    def close(self) -> None:
        """Stop the process and free the buffers, once the requests in flight have been
        answered (each within its deadline). Idempotent; requests not yet started fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in self._channels:  # each one free: no request is using it
            self._free.get()
        with self._lock:
            if self._conns and self._proc is not None:
                with contextlib.suppress(OSError):
                    self._conns[0].send(("stop",))
                self._proc.join(2)
            self._kill()
            for conn in {*self._conns, *(c.conn for c in self._channels if c.conn is not None)}:
                conn.close()
            self._conns = []
            for channel in self._channels:
                channel.conn = None
                if channel.buffer is not None:
                    with contextlib.suppress(BufferError):
                        channel.buffer.close()
                    channel.buffer = None
                with contextlib.suppress(OSError):
                    os.close(channel.buffer_fd)
            with contextlib.suppress(OSError):
                os.close(self._log_fd)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("DecodeWorker is closed")

    @staticmethod
    def _reserve(channel: _Channel, nbytes: int) -> None:
        """Make ``channel``'s shared frame buffer at least ``nbytes`` long."""
        if nbytes <= channel.capacity:
            return
        try:
            os.ftruncate(channel.buffer_fd, nbytes)
            if hasattr(os, "posix_fallocate"):
                # Fail here, not with SIGBUS in the worker, when memory is short.
                os.posix_fallocate(channel.buffer_fd, 0, nbytes)
        except OSError as exc:
            raise ResourceExhausted(
                f"cannot reserve {nbytes / 2**20:.0f} MiB of shared memory for frames: "
                f"{exc.strerror}"
            ) from None
        if channel.buffer is not None:
            channel.buffer.close()
        channel.buffer = mmap.mmap(channel.buffer_fd, nbytes)
        channel.capacity = nbytes

    # -- the process; callers hold self._lock

    def _start(self) -> None:
        name = self.backend.name
        ctx = multiprocessing.get_context("spawn")
        pipes = [ctx.Pipe(duplex=True) for _ in self._channels]
        proc = ctx.Process(
            target=_worker_main,
            args=([child for _, child in pipes], self.backend, self.nice, self.codec_threads),
            name=f"vidseek-decode-{name}",
        )
        proc.daemon = True
        proc.start()
        for _, child in pipes:
            child.close()
        for channel, conn in zip(self._channels, self._conns, strict=False):
            if channel.conn is not conn:  # a pipe its channel never took
                conn.close()
        self._generation += 1
        self._proc, self._conns = proc, [parent for parent, _ in pipes]
        first = self._conns[0]
        try:
            if not first.poll(self.start_timeout):
                raise VidseekError(
                    f"the {name} decoder process did not start within {self.start_timeout:g} s"
                )
            kind, detail = first.recv()
            if kind == "fatal":
                raise ConfigError(f"video backend {name!r} is unavailable: {detail}")
            first.send(("fds",))
            for channel in self._channels:
                reduction.send_handle(first, channel.buffer_fd, proc.pid)
            reduction.send_handle(first, self._log_fd, proc.pid)
        except (EOFError, OSError):
            proc.join(5)
            reason = _describe_exit(proc.exitcode)
            self._kill()
            raise VidseekError(f"the {name} decoder process failed to start: {reason}") from None
        except BaseException:
            self._kill()
            raise

    def _kill(self, generation: int | None = None) -> None:
        """Kill the process (if any, and if it is still ``generation`` when given) and
        forget it. The channels' pipes stay open (a request running on another thread
        sees the process end) until each channel takes the next process's."""
        if generation is not None and generation != self._generation:
            return  # already replaced
        proc = self._proc
        self._proc = None
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(5)

    def _connect(self, channel: _Channel) -> tuple[BaseProcess, Connection, int]:
        """The running process (started if none runs), ``channel``'s pipe to it and its
        generation."""
        with self._lock:
            self._check_open()
            if self._proc is not None and not self._proc.is_alive():
                self._kill()
            if self._proc is None:
                self._start()
            assert self._proc is not None
            if channel.generation != self._generation:
                if channel.conn is not None:
                    channel.conn.close()
                channel.conn = self._conns[channel.number]
                channel.generation = self._generation
            assert channel.conn is not None
            self._in_flight[self._generation] += 1  # until answered (see _call_once)
            return self._proc, channel.conn, self._generation

    def _log_tail(self) -> str:
        """The last lines the worker (FFmpeg, decord) wrote to stderr during this request
        (and during any beside it)."""
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

    def _call(
        self,
        channel: _Channel,
        request: tuple[Any, ...],
        *,
        path: str,
        timeout: float,
        action: str,
    ) -> Any:
        """Send one request on ``channel`` and wait for its reply, turning every failure
        into an error. A request whose process died while others were in flight in it
        (any of them may have caused it, or another's deadline) is sent once more, alone
        in the process, before its death counts as its own."""
        send = functools.partial(
            self._call_once, channel, request, path=path, timeout=timeout, action=action
        )
        try:
            with self._gate.shared():
                return send()
        except _DiedBeside:
            if self._closed:  # closing: no process to send it to
                raise
            with self._gate.alone():
                return send()

    def _call_once(
        self,
        channel: _Channel,
        request: tuple[Any, ...],
        *,
        path: str,
        timeout: float,
        action: str,
    ) -> Any:
        proc, conn, generation = self._connect(channel)
        try:
            try:
                conn.send(request)
                answered = conn.poll(timeout)
                reply: tuple[str, Any, str, list[tuple[int, str, str]]] = (
                    conn.recv() if answered else ("", None, "", [])
                )
            except (EOFError, OSError):
                proc.join(5)
                reason = _describe_exit(proc.exitcode)
                beside = self._died(generation)
                died = _DiedBeside if beside else _WorkerDied
                raise died(self._message(path, f"{reason} while {action}")) from None
            except BaseException:
                # Interrupted mid-request (KeyboardInterrupt...): a late reply would
                # answer the next request, so this process cannot be reused.
                self._died(generation)
                raise
            if not answered:
                self._died(generation)
                raise DecodeTimeout(
                    self._message(
                        path,
                        f"the decoder did not answer within {timeout:g} s while {action}; killed",
                    )
                )
            kind, detail, broken, records = reply
            for level, name, message in records:  # what the process logged, in our log
                logging.getLogger(name).log(level, "%s (decoder process %s)", message, proc.pid)
            if broken:
                # The process exits after this answer: let it, forget it, and fail the
                # request as if it had crashed, so that it is retried on a fresh one.
                proc.join(2)
                died = _DiedBeside if self._died(generation) else _WorkerDied
                raise died(self._message(path, f"{broken} while {action}"))
        finally:
            with self._lock:
                self._in_flight[generation] -= 1
        if kind == "ok":
            return detail
        raise VideoError(self._message(path, str(detail)))

    def _died(self, generation: int) -> bool:
        """Note that process ``generation`` died or is being killed, and kill it if it is
        still the running one: whether other requests were in flight in it then (the
        count is taken when its death is first seen, before any of them is answered)."""
        with self._lock:
            in_flight = self._in_flight_at_death.setdefault(generation, self._in_flight[generation])
            for old in [g for g in self._in_flight_at_death if g < generation - 8]:
                del self._in_flight_at_death[old]
            for old in [g for g, n in self._in_flight.items() if g < generation and not n]:
                del self._in_flight[old]
            self._kill(generation)
        return in_flight > 1


def _validate_info(path: str, info: VideoInfo) -> None:
    if not (info.fps > 0 and math.isfinite(info.fps)):
        raise VideoError(f"{path}: video has no usable frame rate ({info.fps})")
    if info.frame_count <= 0:
        raise VideoError(f"{path}: video stream has no frames")
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"{path}: video has no frame size ({info.width}x{info.height})")
