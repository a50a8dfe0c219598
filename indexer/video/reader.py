"""The public API: :class:`FrameReader` for one video, and :func:`probe`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, Literal, overload

import numpy as np
import numpy.typing as npt

from vidseek.indexer.types import VideoInfo
from vidseek.indexer.video.frames import FrameBackend, Frames
from vidseek.indexer.video.worker import (
    DEFAULT_START_TIMEOUT,
    DecodedFrames,
    DecodeWorker,
    OnError,
    _check_file,
)

DEFAULT_TIMEOUT: Final = 120.0


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

    @overload
    def read(
        self,
        indices: Sequence[int] | npt.NDArray[np.integer[Any]],
        height: int | None = None,
        width: int | None = None,
        *,
        timeout: float | None = None,
        on_error: Literal["raise"] = "raise",
    ) -> Frames: ...

    @overload
    def read(
        self,
        indices: Sequence[int] | npt.NDArray[np.integer[Any]],
        height: int | None = None,
        width: int | None = None,
        *,
        timeout: float | None = None,
        on_error: Literal["skip"],
    ) -> DecodedFrames: ...

    def read(
        self,
        indices: Sequence[int] | npt.NDArray[np.integer[Any]],
        height: int | None = None,
        width: int | None = None,
        *,
        timeout: float | None = None,
        on_error: OnError = "raise",
    ) -> Frames | DecodedFrames:
        """Frames at absolute ``indices`` (any order, repeats allowed) as ``(T, H, W, 3)`` RGB.

        Frames are upright and resized to ``height`` x ``width`` in the worker;
        give both or neither (neither: the probed size). Each distinct index is
        decoded once. An index past the end raises :class:`VideoError`.

        ``on_error="raise"`` (default) returns the array and raises
        :class:`VideoError` if any frame cannot be decoded. ``on_error="skip"``
        returns :class:`DecodedFrames`: the frames that decoded, their indices,
        and the missing indices with a message; it still raises for problems of
        the whole file (not a video, cannot be opened) and for a hang
        (:class:`DecodeTimeout`).
        """
        if (height is None) != (width is None):
            raise ValueError("give both height and width, or neither")
        if height is None or width is None:
            info = self.probe(timeout=timeout)
            height, width = info.height, info.width
        deadline = self.timeout if timeout is None else timeout
        if on_error == "skip":
            return self.worker.read(
                self.path, indices, height, width, timeout=deadline, on_error="skip"
            )
        if on_error != "raise":
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        return self.worker.read(self.path, indices, height, width, timeout=deadline)


def probe(
    path: str | os.PathLike[str],
    *,
    timeout: float,
    backend: str | type[FrameBackend] = "decord",
    start_timeout: float = DEFAULT_START_TIMEOUT,
    worker: DecodeWorker | None = None,
) -> VideoInfo:
    """Probe a video in a worker process: fps, frame count, duration, size, codec, rotation, VFR.

    ``width`` and ``height`` are the displayed size (sample aspect ratio and
    display rotation applied), the size :class:`FrameReader` returns frames at;
    ``frame_count`` is what the backend can index: frames for constant frame
    rate, slots of ``1 / fps`` for variable frame rate (``vfr``; see the package
    docstring). The whole stream is demuxed (not decoded) to find every frame's
    timestamp, so a truncated file reports the frames it has. ``timeout``
    bounds the probe itself, ``start_timeout`` starting the worker; ``worker``
    reuses a running :class:`DecodeWorker` (``backend`` is then ignored). Raises
    :class:`NotFound` for a missing file and :class:`VideoError` (naming the
    path) for anything that is not a usable video.
    """
    if worker is not None:
        return worker.probe(path, timeout=timeout)
    path = os.fspath(path)
    _check_file(path)  # before paying for a process start
    with DecodeWorker(backend, start_timeout=start_timeout) as own:
        return own.probe(path, timeout=timeout)
