"""Probing video files and decoding frames at absolute indices, in a child process.

decord (the default decoder) is unmaintained and can segfault, or hang while
holding the GIL, on damaged files. So every probe and decode runs in a worker
process started with the ``spawn`` context; each request has a deadline. A worker
that misses its deadline is killed (:class:`DecodeTimeout`), one that dies is
reported with its signal (:class:`VideoError`), and the next request starts a
fresh worker. Decoded frames come back through an anonymous shared-memory file
(``memfd``) handed to the worker once, not through the pipe: a 60-frame 352x640
window is ~40 MB, which takes ~20 ms this way and ~100 ms through the pipe.

Decoders are pluggable (:class:`FrameBackend`): ``"decord"`` and ``"pyav"``.
Both return frames upright (the container's display rotation applied) and
resized inside the worker, so only the small frames cross the process boundary.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import math
import mmap
import multiprocessing
import os
import re
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from fractions import Fraction
from multiprocessing import reduction
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from vidseek.indexer.types import VideoInfo
from vidseek.storage.errors import (
    ConfigError,
    DecodeTimeout,
    NotFound,
    ResourceExhausted,
    VideoError,
    VidseekError,
)

__all__ = [
    "BACKENDS",
    "DecodeWorker",
    "DecordBackend",
    "FrameBackend",
    "FrameReader",
    "PyAVBackend",
    "probe",
    "resized_shape",
    "sample_indices",
]

Frames = npt.NDArray[np.uint8]

DEFAULT_TIMEOUT: Final = 120.0
DEFAULT_START_TIMEOUT: Final = 60.0
_LOG_TAIL_BYTES: Final = 4096
_MESSAGE_LIMIT: Final = 400


# --------------------------------------------------------------------------- planning helpers


def resized_shape(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The ``(h, w)`` to decode a ``width`` x ``height`` video at.

    Keeps the aspect ratio, scales down (never up, but for rounding) so that
    ``h * w <= max_pixels``, and rounds each side to a multiple of 32 (at least
    32). Only when ``max_pixels < 32 * 32`` does the result exceed ``max_pixels``.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    h = max(32, round(height * scale / 32) * 32)
    w = max(32, round(width * scale / 32) * 32)
    if h * w > max_pixels:
        h = max(32, math.floor(height * scale / 32) * 32)
        w = max(32, math.floor(width * scale / 32) * 32)
    # Extreme aspect ratios: the 32-pixel minimum of one side pushes the other over.
    if h * w > max_pixels and h == 32:
        w = max(32, max_pixels // (32 * 32) * 32)
    elif h * w > max_pixels and w == 32:
        h = max(32, max_pixels // (32 * 32) * 32)
    return h, w


def sample_indices(info: VideoInfo, start_s: float, end_s: float, fps: float) -> list[int]:
    """Absolute frame indices sampled at ``fps`` within ``[start_s, end_s)``.

    Sample times are ``start_s + k / fps``; each becomes the first source frame
    at or after it (so its timestamp ``index / info.fps`` lies in the window).
    Indices are clamped to ``[0, frame_count - 1]``, sorted and unique; an odd
    count is padded by repeating the last index, because Qwen3-VL merges frames
    in temporal pairs. An empty window gives ``[]``.
    """
    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"sampling fps must be positive, got {fps}")
    if info.fps <= 0 or info.frame_count <= 0:
        raise ValueError(f"{info.path}: video has no frames or no frame rate")
    start_s = max(0.0, start_s)
    if not end_s > start_s:
        return []
    count = math.ceil((end_s - start_s) * fps - 1e-9)
    last = info.frame_count - 1
    picked: list[int] = []
    for k in range(count):
        t = start_s + k / fps
        # Float error can put t * fps a hair above a whole frame (10.0000001):
        # the tolerance keeps that frame 10, not 11.
        index = math.ceil(t * info.fps - 1e-6)
        if index / info.fps >= end_s:
            break
        index = min(max(index, 0), last)
        if not picked or index > picked[-1]:
            picked.append(index)
    if len(picked) % 2:
        picked.append(picked[-1])
    return picked


# --------------------------------------------------------------------------- backends


class FrameBackend(abc.ABC):
    """One way of decoding video files. Instances live inside the worker process.

    A backend may keep the last file open between calls (a reader decodes one
    video window after window). It raises :class:`VideoError` (with a message
    that need not name the path) for problems it recognises; the worker turns
    any other exception into a :class:`VideoError` too.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def probe(self, path: str) -> VideoInfo:
        """Facts about the video; width and height are the upright (displayed) size."""

    @abc.abstractmethod
    def read(self, path: str, indices: Sequence[int], size: tuple[int, int], out: Frames) -> None:
        """Decode frames at sorted, unique absolute ``indices`` into ``out``.

        ``out`` has shape ``(len(indices), h, w, 3)`` for ``size == (h, w)``;
        frames are RGB, upright, resized to ``size``.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release open files."""


def _clean_message(text: str) -> str:
    """One line of a decoder message: no source paths, timestamps or pointers."""
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text)
    text = re.sub(r" @ 0x[0-9a-f]+", "", text)
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _normalize_rotation(degrees: float) -> int:
    return round(degrees / 90.0) % 4 * 90


def _upright(frame: Frames, rotation: int) -> Frames:
    """Apply a counter-clockwise display rotation (0, 90, 180 or 270 degrees)."""
    return np.rot90(frame, rotation // 90) if rotation else frame


def _resize(frames: Frames, h: int, w: int) -> Frames:
    """Resize ``(T, H, W, 3)`` frames: box filter by the integer factor, then bilinear."""
    t, src_h, src_w, c = frames.shape
    if (src_h, src_w) == (h, w):
        return frames
    fy, fx = max(1, src_h // h), max(1, src_w // w)
    data = frames.astype(np.float32)
    if fy > 1 or fx > 1:
        hh, ww = src_h // fy, src_w // fx
        data = data[:, : hh * fy, : ww * fx].reshape(t, hh, fy, ww, fx, c).mean(axis=(2, 4))
    in_h, in_w = data.shape[1:3]
    ys = np.clip((np.arange(h) + 0.5) * in_h / h - 0.5, 0, in_h - 1)
    xs = np.clip((np.arange(w) + 0.5) * in_w / w - 0.5, 0, in_w - 1)
    y0 = np.floor(ys).astype(np.intp)
    x0 = np.floor(xs).astype(np.intp)
    y1 = np.minimum(y0 + 1, in_h - 1)
    x1 = np.minimum(x0 + 1, in_w - 1)
    wy = (ys - y0).astype(np.float32)[None, :, None, None]
    wx = (xs - x0).astype(np.float32)[None, None, :, None]
    top = data[:, y0][:, :, x0] * (1 - wx) + data[:, y0][:, :, x1] * wx
    bottom = data[:, y1][:, :, x0] * (1 - wx) + data[:, y1][:, :, x1] * wx
    result = top * (1 - wy) + bottom * wy
    resized: Frames = np.clip(np.rint(result), 0, 255).astype(np.uint8)
    return resized


def _pyav_stream_facts(path: str) -> tuple[str, int] | None:
    """(codec name, rotation) read with PyAV, or None when PyAV is missing or fails."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            codec = str(stream.codec_context.name)
            rotation = 0
            for frame in container.decode(stream):
                rotation = _normalize_rotation(frame.rotation)
                break
            return codec, rotation
    except Exception:
        return None


class DecordBackend(FrameBackend):
    """decord 0.6: ``VideoReader.get_batch`` of sorted unique indices, resized by decord.

    decord applies the display rotation itself, but with ``width``/``height`` set
    it mangles rotated videos (a 90-degree video came back with 4 channels), so
    rotated videos are decoded at full size and resized here.
    """

    name = "decord"

    def __init__(self) -> None:
        import decord

        decord.bridge.set_bridge("native")
        self._decord: Any = decord
        self._path: str | None = None
        self._readers: dict[tuple[int, int] | None, Any] = {}
        self._rotation: int | None = None  # None: unknown (PyAV missing)
        self._codec = ""
        self._decord_resizes = True

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (RuntimeError, self._decord.DECORDError)

    def _stream_facts(self, path: str) -> tuple[str, int] | None:
        """(codec, rotation), which decord does not report; None when unknown."""
        return _pyav_stream_facts(path)

    def _select(self, path: str) -> None:
        if path != self._path:
            self.close()
            self._path = path
            facts = self._stream_facts(path)
            self._codec, self._rotation = facts if facts else ("", None)
            self._decord_resizes = not self._rotation

    def _open(self, path: str, size: tuple[int, int] | None) -> Any:
        self._select(path)
        reader = self._readers.get(size)
        if reader is None:
            kwargs = {} if size is None else {"height": size[0], "width": size[1]}
            try:
                reader = self._decord.VideoReader(path, ctx=self._decord.cpu(0), **kwargs)
            except self._errors() as exc:
                raise VideoError(f"cannot open video: {_clean_message(str(exc))}") from None
            self._readers[size] = reader
        return reader

    def probe(self, path: str) -> VideoInfo:
        """See :meth:`FrameBackend.probe`."""
        reader = self._open(path, None)
        try:
            frame_count = len(reader)
            fps = float(reader.get_avg_fps())
            if frame_count <= 0:
                raise VideoError("video stream has no frames")
            height, width = reader[0].shape[:2]
            reader.seek(0)
        except self._errors() as exc:
            raise VideoError(f"cannot decode first frame: {_clean_message(str(exc))}") from None
        return VideoInfo(
            path=path,
            fps=fps,
            frame_count=frame_count,
            duration=frame_count / fps if fps > 0 else 0.0,
            width=int(width),
            height=int(height),
            codec=self._codec,
            rotation=self._rotation or 0,
        )

    def read(self, path: str, indices: Sequence[int], size: tuple[int, int], out: Frames) -> None:
        """See :meth:`FrameBackend.read`."""
        h, w = size
        self._select(path)
        try:
            frame_count = len(self._open(path, None))
            if indices[-1] >= frame_count:
                raise VideoError(f"frame {indices[-1]} is past the end ({frame_count} frames)")
            batch = None
            if self._decord_resizes:
                try:
                    batch = self._open(path, size).get_batch(list(indices)).asnumpy()
                except self._errors():
                    if self._rotation is not None:
                        raise
                if self._rotation is None and (batch is None or batch.shape[1:] != (h, w, 3)):
                    # Rotation unknown (no PyAV) and decord's resize failed on it:
                    # a rotated video, most likely. Retry at full size.
                    self._decord_resizes = False
            if not self._decord_resizes:
                batch = _resize(self._open(path, None).get_batch(list(indices)).asnumpy(), h, w)
        except self._errors() as exc:
            raise VideoError(f"cannot decode frames: {_clean_message(str(exc))}") from None
        assert batch is not None
        if batch.shape != out.shape:
            raise VideoError(f"decoder returned frames of shape {batch.shape}, not {out.shape}")
        out[...] = batch

    def close(self) -> None:
        """See :meth:`FrameBackend.close`."""
        self._readers.clear()
        self._path = None


class _PyAVFile:
    """An open container and where its decoder stands."""

    def __init__(self, av: Any, path: str) -> None:
        self.container = av.open(path)
        if not self.container.streams.video:
            self.container.close()
            raise VideoError("no video stream (audio-only or not a video)")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        self.fps = Fraction(rate) if rate else Fraction(0)
        self.time_base = Fraction(self.stream.time_base or Fraction(1, 1_000_000))
        self.first_pts: int | None = None
        self.rotation = 0
        self.frames: Iterator[Any] | None = None
        # Index of the frame the iterator yielded last; None when unknown.
        self.last_index: int | None = None

    def index_of(self, frame: Any) -> int:
        if frame.pts is None or self.first_pts is None or not self.fps:
            return (self.last_index if self.last_index is not None else -1) + 1
        return round(Fraction(frame.pts - self.first_pts) * self.time_base * self.fps)

    def seek(self, index: int) -> None:
        assert self.first_pts is not None
        offset = Fraction(index) / self.fps / self.time_base if self.fps else 0
        self.container.seek(
            self.first_pts + int(offset), stream=self.stream, backward=True, any_frame=False
        )
        self.frames = self.container.decode(self.stream)
        self.last_index = None

    def close(self) -> None:
        self.frames = None
        self.container.close()


class PyAVBackend(FrameBackend):
    """PyAV (FFmpeg): seek to the keyframe before a frame, decode forward, convert wanted frames.

    Frame indices come from presentation timestamps, ``(pts - first pts) * fps``,
    matching decord on constant-frame-rate video. A target the stream skips (a
    timestamp gap) gets the next frame shown.
    """

    name = "pyav"
    # Decoding forward beats seeking for gaps shorter than a typical keyframe interval.
    SEEK_GAP: ClassVar[int] = 250

    def __init__(self) -> None:
        import av

        self._av: Any = av
        self._file: _PyAVFile | None = None
        self._path: str | None = None
        self._frame_count = 0
        self._first_size = (0, 0)

    def _open(self, path: str) -> _PyAVFile:
        if self._file is not None and path == self._path:
            return self._file
        self.close()
        file: _PyAVFile | None = None
        try:
            file = _PyAVFile(self._av, path)
            if not file.fps:
                raise VideoError("video stream has no frame rate")
            frames = file.container.decode(file.stream)
            first = next(frames, None)
            if first is None:
                raise VideoError("no frames could be decoded (empty or damaged video stream)")
            frame_count = int(file.stream.frames) or self._count_packets(path)
        except self._av.FFmpegError as exc:
            if file is not None:
                file.close()
            raise VideoError(f"cannot open video: {_clean_message(str(exc))}") from None
        except BaseException:
            if file is not None:
                file.close()
            raise
        file.first_pts = first.pts if first.pts is not None else 0
        file.rotation = _normalize_rotation(first.rotation)
        file.frames = itertools.chain([first], frames)
        file.last_index = -1
        self._first_size = (int(first.height), int(first.width))
        self._frame_count = frame_count
        self._file, self._path = file, path
        return file

    def _count_packets(self, path: str) -> int:
        # Containers without a frame count in their header (Matroska, WebM):
        # count packets, as decord does when it opens a file.
        with self._av.open(path) as container:
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)

    def probe(self, path: str) -> VideoInfo:
        """See :meth:`FrameBackend.probe`."""
        file = self._open(path)
        height, width = self._first_size
        if file.rotation in (90, 270):
            height, width = width, height
        return VideoInfo(
            path=path,
            fps=float(file.fps),
            frame_count=self._frame_count,
            duration=float(self._frame_count / file.fps),
            width=width,
            height=height,
            codec=str(file.stream.codec_context.name),
            rotation=file.rotation,
        )

    def read(self, path: str, indices: Sequence[int], size: tuple[int, int], out: Frames) -> None:
        """See :meth:`FrameBackend.read`."""
        file = self._open(path)
        if indices[-1] >= self._frame_count:
            raise VideoError(f"frame {indices[-1]} is past the end ({self._frame_count} frames)")
        h, w = size
        dec_h, dec_w = (w, h) if file.rotation in (90, 270) else (h, w)
        pos = 0
        try:
            while pos < len(indices):
                target = indices[pos]
                if (
                    file.frames is None
                    or file.last_index is None
                    or target <= file.last_index
                    or target - file.last_index > self.SEEK_GAP
                ):
                    self._seek_before(file, target)
                assert file.frames is not None
                for frame in file.frames:
                    index = file.index_of(frame)
                    file.last_index = index
                    if index >= target:
                        break
                else:
                    last = file.last_index
                    file.frames = None
                    raise VideoError(
                        f"video ends at frame {last}, before frame {target} "
                        "(truncated file or wrong frame count)"
                    )
                image = frame.to_ndarray(
                    format="rgb24", width=dec_w, height=dec_h, interpolation="AREA"
                )
                image = _upright(image, file.rotation)
                while pos < len(indices) and indices[pos] <= index:
                    out[pos] = image
                    pos += 1
        except self._av.FFmpegError as exc:
            file.frames = None
            near = indices[min(pos, len(indices) - 1)]
            raise VideoError(
                f"decoding failed near frame {near}: {_clean_message(str(exc))}"
            ) from None

    def _seek_before(self, file: _PyAVFile, target: int) -> None:
        """Seek so that the next decoded frame is at or before ``target``."""
        back = 0
        while True:
            start = max(0, target - back)
            file.seek(start)
            assert file.frames is not None
            first = next(file.frames, None)
            if first is None:
                if start == 0:
                    raise VideoError("no frame could be decoded after seeking to the start")
            elif start == 0 or file.index_of(first) <= target:
                file.frames = itertools.chain([first], file.frames)
                return
            # The seek landed after the target (sparse index): start further back.
            back = max(2 * back, int(file.fps) or 30)

    def close(self) -> None:
        """See :meth:`FrameBackend.close`."""
        if self._file is not None:
            self._file.close()
        self._file = None
        self._path = None


BACKENDS: Final[dict[str, type[FrameBackend]]] = {
    DecordBackend.name: DecordBackend,
    PyAVBackend.name: PyAVBackend,
}


# --------------------------------------------------------------------------- the worker process


def _anonymous_file(name: str) -> int:
    """A file descriptor of a nameless file that lives in memory where possible."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create(name, os.MFD_CLOEXEC)
    fd, path = tempfile.mkstemp(prefix=f"{name}-")
    os.unlink(path)
    return fd


def _worker_main(conn: Connection, backend_cls: type[FrameBackend]) -> None:
    """Serve probe and read requests until told to stop or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        backend = backend_cls()
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
                _, path, indices, (h, w), nbytes = message
                if buffer is None or len(buffer) < nbytes:
                    if buffer is not None:
                        buffer.close()
                    buffer = mmap.mmap(buffer_fd, nbytes)
                out = np.ndarray((len(indices), h, w, 3), dtype=np.uint8, buffer=buffer)
                try:
                    backend.read(path, indices, (h, w), out)
                finally:
                    del out
                reply = len(indices)
            else:
                raise ValueError(f"unknown request {op!r}")
            conn.send(("ok", reply))
        except VideoError as exc:
            conn.send(("error", str(exc)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {_clean_message(str(exc))}"))
        finally:
            sys.stderr.flush()
    with contextlib.suppress(Exception):
        backend.close()


def _resolve_backend(backend: str | type[FrameBackend]) -> type[FrameBackend]:
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


class DecodeWorker:
    """A decode worker process with its frame buffer and log; restarts itself after failures.

    One worker serves any number of files, one request at a time (calls from
    several threads are serialised). Each request has a deadline: a worker that
    misses it is killed and :class:`DecodeTimeout` raised; one that dies gives
    :class:`VideoError` naming the signal. Either way the next request starts a
    fresh process. Share one worker between :class:`FrameReader` objects to pay
    the process start (~0.5-1 s: Python, NumPy, the decoder library) once.
    """

    def __init__(
        self,
        backend: str | type[FrameBackend] = "decord",
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        """Prepare a worker; the process starts on the first request.

        ``backend`` is a name in :data:`BACKENDS` or a :class:`FrameBackend`
        subclass importable by the worker; ``start_timeout`` bounds starting it.
        """
        self.backend = _resolve_backend(backend)
        self.start_timeout = start_timeout
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

    def read(
        self,
        path: str | os.PathLike[str],
        indices: Sequence[int] | npt.NDArray[np.integer[Any]],
        height: int,
        width: int,
        *,
        timeout: float,
    ) -> Frames:
        """Frames of ``path`` at absolute ``indices`` (see :meth:`FrameReader.read`)."""
        path = os.fspath(path)
        wanted = np.asarray(indices, dtype=np.int64)
        if wanted.ndim != 1:
            raise ValueError("indices must be one-dimensional")
        if wanted.size and int(wanted.min()) < 0:
            raise ValueError(f"frame indices must be non-negative, got {int(wanted.min())}")
        h, w = int(height), int(width)
        if h <= 0 or w <= 0:
            raise ValueError(f"frame size must be positive, got {h}x{w}")
        if not wanted.size:
            return np.empty((0, h, w, 3), dtype=np.uint8)
        unique, inverse = np.unique(wanted, return_inverse=True)
        shape = (len(unique), h, w, 3)
        nbytes = len(unique) * h * w * 3
        span = f"{len(unique)} frames ({int(unique[0])}..{int(unique[-1])}) at {w}x{h}"
        with self._lock:
            self._check_open()
            _check_file(path)
            self._reserve(nbytes)
            self._call(
                ("read", path, unique.tolist(), (h, w), nbytes),
                path=path,
                timeout=timeout,
                action=f"decoding {span}",
            )
            assert self._buffer is not None
            view: Frames = np.ndarray(shape, dtype=np.uint8, buffer=self._buffer)
            frames = view.copy() if np.array_equal(unique, wanted) else view[inverse.ravel()]
            del view  # a live view would keep the buffer from being resized or closed
        return frames

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
            target=_worker_main, args=(child_conn, self.backend), name=f"vidseek-decode-{name}"
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
            reply: tuple[str, Any] = conn.recv() if answered else ("", None)
        except (EOFError, OSError):
            proc.join(5)
            reason = _describe_exit(proc.exitcode)
            self._kill()
            raise VideoError(self._message(path, f"{reason} while {action}")) from None
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
        kind, detail = reply
        if kind == "ok":
            return detail
        raise VideoError(self._message(path, str(detail)))


# --------------------------------------------------------------------------- public API


class FrameReader:
    """Decodes frames of one video at absolute indices, in a worker process.

    Use as a context manager (or call :meth:`close`). Failures follow
    :class:`DecodeWorker`: a hang gives :class:`DecodeTimeout`, a crash
    :class:`VideoError`, and the next request starts a fresh worker.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        backend: str | type[FrameBackend] = "decord",
        timeout: float = DEFAULT_TIMEOUT,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        worker: DecodeWorker | None = None,
    ) -> None:
        """Prepare a reader; no process starts before the first request.

        ``backend`` is a name in :data:`BACKENDS` or a :class:`FrameBackend`
        subclass importable by the worker. ``timeout`` is the default deadline of
        each request, in seconds; ``start_timeout`` bounds starting the worker.
        With ``worker``, that shared worker (and its backend) is used and left
        running on :meth:`close`.
        """
        self.path = os.fspath(path)
        self.timeout = timeout
        self._owns_worker = worker is None
        self._worker: DecodeWorker | None = (
            DecodeWorker(backend, start_timeout=start_timeout) if worker is None else worker
        )
        self._info: VideoInfo | None = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def worker(self) -> DecodeWorker:
        """The worker this reader decodes with."""
        if self._worker is None:
            raise ValueError(f"FrameReader for {self.path} is closed")
        return self._worker

    def close(self) -> None:
        """Stop the worker unless it is shared. Idempotent."""
        worker, self._worker = self._worker, None
        if worker is not None and self._owns_worker:
            worker.close()

    def probe(self, *, timeout: float | None = None) -> VideoInfo:
        """Probe the video in the worker; the first success is cached."""
        if self._info is None:
            self._info = self.worker.probe(
                self.path, timeout=self.timeout if timeout is None else timeout
            )
        return self._info

    def read(
        self,
        indices: Sequence[int] | npt.NDArray[np.integer[Any]],
        height: int | None = None,
        width: int | None = None,
        *,
        timeout: float | None = None,
    ) -> Frames:
        """Frames at absolute ``indices`` (any order, repeats allowed) as ``(T, H, W, 3)`` RGB.

        Frames are upright and resized to ``height`` x ``width`` in the worker;
        give both or neither (neither: the probed size). Each distinct index is
        decoded once. An index past the end raises :class:`VideoError`.
        """
        if (height is None) != (width is None):
            raise ValueError("give both height and width, or neither")
        if height is None or width is None:
            info = self.probe(timeout=timeout)
            height, width = info.height, info.width
        return self.worker.read(
            self.path,
            indices,
            height,
            width,
            timeout=self.timeout if timeout is None else timeout,
        )


def _validate_info(path: str, info: VideoInfo) -> None:
    if not (info.fps > 0 and math.isfinite(info.fps)):
        raise VideoError(f"{path}: video has no usable frame rate ({info.fps})")
    if info.frame_count <= 0:
        raise VideoError(f"{path}: video stream has no frames")
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"{path}: video has no frame size ({info.width}x{info.height})")


def probe(
    path: str | os.PathLike[str],
    *,
    timeout: float,
    backend: str | type[FrameBackend] = "decord",
    start_timeout: float = DEFAULT_START_TIMEOUT,
    worker: DecodeWorker | None = None,
) -> VideoInfo:
    """Probe a video in a worker process: fps, frame count, duration, size, codec, rotation.

    ``width`` and ``height`` are the upright size (display rotation applied), the
    size :class:`FrameReader` returns frames at; ``frame_count`` is what the
    backend can index. ``timeout`` bounds the probe itself, ``start_timeout``
    starting the worker; ``worker`` reuses a running :class:`DecodeWorker`
    (``backend`` is then ignored). Raises :class:`NotFound` for a missing file and
    :class:`VideoError` (naming the path) for anything that is not a usable video.
    """
    if worker is not None:
        return worker.probe(path, timeout=timeout)
    path = os.fspath(path)
    _check_file(path)  # before paying for a process start
    with DecodeWorker(backend, start_timeout=start_timeout) as own:
        return own.probe(path, timeout=timeout)
