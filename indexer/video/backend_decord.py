"""The decord backend (:class:`DecordBackend`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vidseek.indexer.types import VideoInfo
from vidseek.indexer.video.frames import (
    FrameBackend,
    Frames,
    _clean_message,
    _diagnose,
    _display_size,
    _groups,
    _pyav_stream_facts,
    _read_runs,
    _resize,
    _StreamFacts,
)
from vidseek.indexer.video.sampling import _frame_timeline, _Timeline
from vidseek.storage.errors import VideoError


class DecordBackend(FrameBackend):
    """decord 0.6: ``VideoReader.get_batch`` of sorted unique frames, resized by decord.

    decord applies the display rotation itself, but with ``width``/``height`` set
    it mangles rotated videos (a 90-degree video came back with 4 channels), so
    rotated videos are decoded at full size and resized here. decord does not
    report codec, rotation or sample aspect ratio; PyAV reads them when present.
    """

    name = "decord"

    def __init__(self) -> None:
        import decord

        decord.bridge.set_bridge("native")
        self._decord: Any = decord
        self._path: str | None = None
        self._readers: dict[tuple[int, int] | None, Any] = {}
        self._facts: _StreamFacts | None = None  # None: unknown (PyAV missing)
        self._timeline: _Timeline | None = None
        self._decord_resizes = True

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (RuntimeError, self._decord.DECORDError)

    def _stream_facts(self, path: str) -> _StreamFacts | None:
        """Codec, rotation and aspect, which decord does not report; None when unknown."""
        return _pyav_stream_facts(path)

    def _select(self, path: str) -> None:
        if path != self._path:
            self.close()
            self._path = path
            self._facts = self._stream_facts(path)
            self._decord_resizes = not (self._facts and self._facts.rotation)

    def _open(self, path: str, size: tuple[int, int] | None) -> Any:
        self._select(path)
        reader = self._readers.get(size)
        if reader is None:
            kwargs = {} if size is None else {"height": size[0], "width": size[1]}
            try:
                reader = self._decord.VideoReader(path, ctx=self._decord.cpu(0), **kwargs)
            except self._errors() as exc:
                reason = _diagnose(path) or _clean_message(str(exc))
                raise VideoError(f"cannot open video: {reason}") from None
            self._readers[size] = reader
        return reader

    def _load_timeline(self, path: str) -> _Timeline:
        self._select(path)
        if self._timeline is None:
            reader = self._open(path, None)
            try:
                count = len(reader)
                if count <= 0:
                    raise VideoError("video stream has no frames")
                starts = reader.get_frame_timestamp(np.arange(count))[:, 0]
                fps = float(reader.get_avg_fps())
            except self._errors() as exc:
                raise VideoError(f"cannot index video: {_clean_message(str(exc))}") from None
            self._timeline = _frame_timeline(starts, fps)
        return self._timeline

    def probe(self, path: str) -> VideoInfo:
        """See :meth:`FrameBackend.probe`."""
        timeline = self._load_timeline(path)
        reader = self._open(path, None)
        try:
            height, width = reader[0].shape[:2]
            reader.seek(0)
        except self._errors() as exc:
            raise VideoError(f"cannot decode first frame: {_clean_message(str(exc))}") from None
        facts = self._facts
        rotation = facts.rotation if facts else 0
        # decord's frames are already upright: undo the swap to get the coded size.
        coded = (height, width) if rotation in (90, 270) else (width, height)
        width, height = _display_size(*coded, facts.sar if facts else None, rotation)
        return VideoInfo(
            path=path,
            fps=timeline.fps,
            frame_count=timeline.frame_count,
            duration=timeline.duration,
            width=int(width),
            height=int(height),
            codec=facts.codec if facts else "",
            rotation=rotation,
            vfr=timeline.vfr,
        )

    def read(
        self,
        path: str,
        indices: Sequence[int],
        size: tuple[int, int],
        out: Frames,
        *,
        skip_errors: bool = False,
    ) -> dict[int, str]:
        """See :meth:`FrameBackend.read`."""
        timeline = self._load_timeline(path)
        if indices[-1] >= timeline.frame_count:
            raise VideoError(f"frame {indices[-1]} is past the end ({timeline.frame_count} frames)")
        # decord fails a whole batch on one bad frame.
        return _read_runs(
            indices,
            _groups(timeline.frames(indices)),
            out,
            skip_errors,
            lambda frames: self._batch(path, frames, size),
            lambda frame: self._batch(path, [frame], size)[0],
        )

    def _batch(self, path: str, frames: list[int], size: tuple[int, int]) -> Frames:
        h, w = size
        known = self._facts is not None
        try:
            batch = None
            if self._decord_resizes:
                try:
                    batch = self._open(path, size).get_batch(frames).asnumpy()
                except self._errors():
                    if known:
                        raise
                if not known and (batch is None or batch.shape[1:] != (h, w, 3)):
                    # Rotation unknown (no PyAV) and decord's resize failed on it:
                    # a rotated video, most likely. Retry at full size.
                    self._decord_resizes = False
            if not self._decord_resizes:
                batch = _resize(self._open(path, None).get_batch(frames).asnumpy(), h, w)
        except self._errors() as exc:
            self._readers.clear()  # a reader that failed may be stuck in a bad state
            raise VideoError(
                f"cannot decode frames {frames[0]}..{frames[-1]}: {_clean_message(str(exc))}"
            ) from None
        assert batch is not None
        frames_out: Frames = batch
        return frames_out

    def close(self) -> None:
        """See :meth:`FrameBackend.close`."""
        self._readers.clear()
        self._path = None
        self._timeline = None
