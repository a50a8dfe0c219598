"""The PyAV backend (:class:`PyAVBackend`) and its open file (:class:`_PyAVFile`)."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar, NamedTuple

import numpy as np

from vidseek.indexer.types import VideoInfo
from vidseek.indexer.video.frames import (
    FrameBackend,
    Frames,
    _clean_message,
    _diagnose,
    _display_size,
    _groups,
    _normalize_rotation,
    _unsupported_codec,
    _upright,
)
from vidseek.indexer.video.sampling import _frame_timeline, _Timeline
from vidseek.storage.errors import VideoError


@dataclass(frozen=True)
class _StreamIndex:
    """What demuxing a whole video stream tells (:meth:`_PyAVFile._scan`), kept per file."""

    pts: np.ndarray  # every frame's timestamp, presentation order
    keyframes: np.ndarray  # frame numbers of the keyframes, 0 first
    has_pts: bool
    timeline: _Timeline
    errors: tuple[str, ...]  # why demuxing stopped early, if it did


def file_identity(path: str) -> tuple[object, ...] | None:
    """What a file's cached index or decoder is valid for: its path, device, inode, size
    and times (None if it cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class PictureFormat(NamedTuple):
    """A video's decoded pictures as FFmpeg describes them: pixel format (``"yuv420p"``),
    colour matrix (AVColorSpace: 1 is BT.709, 2 unspecified) and range (AVColorRange:
    1 limited, 2 full), and the coded size before rotation."""

    pixel_format: str
    matrix: int
    colour_range: int
    width: int
    height: int


class _PyAVFile:
    """An open container, its frame index (from demuxing, no decoding) and decoder state.

    ``index`` is this file's :class:`_StreamIndex` from an earlier opening; without
    one the whole stream is demuxed to build it.
    """

    def __init__(
        self, av: Any, path: str, index: _StreamIndex | None = None, threads: int = 0
    ) -> None:
        self.av = av
        self.container = av.open(path)
        try:
            if not self.container.streams.video:
                kinds = sorted({s.type for s in self.container.streams})
                found = f" (streams: {', '.join(kinds)})" if kinds else ""
                raise VideoError(f"no video stream{found}: audio-only or not a video")
            self.stream = self.container.streams.video[0]
            if self.stream.codec_context is None:
                raise VideoError(_unsupported_codec(self.stream))
            # ``threads`` (the backend's codec_threads): 0 lets FFmpeg thread each decode
            # over the cores (frames and slices), which finishes one window sooner but
            # costs more CPU a window; 1 costs least, for a pool that keeps the cores busy.
            if threads:
                self.stream.codec_context.thread_count = threads
            else:
                self.stream.thread_type = "AUTO"
            self.time_base = Fraction(self.stream.time_base or Fraction(1, 1_000_000))
            rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
            self.header_fps = float(rate) if rate else 0.0
            sar = self.stream.sample_aspect_ratio
            self.sar = Fraction(sar) if sar else None
            self.errors: list[str] = []
            self.index = index or self._scan()
            self.errors.extend(self.index.errors)
            self.pts = self.index.pts
            self.keyframes = self.index.keyframes
            self.has_pts = self.index.has_pts
            self.timeline = self.index.timeline
        except BaseException:
            self.container.close()
            raise
        self.rotation = 0
        self.picture = PictureFormat("", 2, 0, 0, 0)  # the first frame's
        self.wanted: set[int] | None = None
        self.decoder: Iterator[Any] | None = None
        # Frame number the decoder yielded last; None when unknown (just sought).
        self.last: int | None = None

    def _scan(self) -> _StreamIndex:
        """Timestamps and keyframes of every packet, in presentation order."""
        stamps: list[int] = []
        keys: list[int] = []
        errors: list[str] = []
        has_pts = True
        try:
            for packet in self.container.demux(self.stream):
                if not packet.size:
                    continue
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:
                    has_pts = False
                    stamp = len(stamps)
                if packet.is_keyframe:
                    keys.append(stamp)
                stamps.append(stamp)
        except self.av.FFmpegError as exc:
            # A truncated or damaged container: index what demuxes.
            errors.append(f"demuxing stopped: {_clean_message(str(exc))}")
        if not stamps:
            raise VideoError("video stream has no frames")
        if not has_pts:
            # No timestamps (rare raw streams): frames are counted from the start.
            stamps = list(range(len(stamps)))
        order = np.sort(np.asarray(stamps, dtype=np.int64))
        keyframes = np.searchsorted(order, np.asarray(sorted(keys), dtype=np.int64))
        if not len(keyframes) or keyframes[0] != 0:
            keyframes = np.concatenate([[0], keyframes]).astype(np.int64)
        if has_pts:
            seconds = (order - order[0]).astype(np.float64) * float(self.time_base)
            timeline = _frame_timeline(seconds, self.header_fps)
        else:
            if not self.header_fps:
                raise VideoError("video has no timestamps and no frame rate")
            timeline = _Timeline(self.header_fps, len(order), vfr=False)
        self.container.seek(0)
        return _StreamIndex(order, keyframes, has_pts, timeline, tuple(errors))

    def index_of(self, frame: Any) -> int:
        """The frame number (presentation order) of a decoded frame."""
        if frame.pts is None or not self.has_pts:
            return (self.last if self.last is not None else -1) + 1
        return int(np.searchsorted(self.pts, frame.pts))

    def frames(self) -> Iterator[Any]:
        """Decoded frames from the demuxer's position on; decode errors are noted, not raised.

        While ``wanted`` (a set of pts) is set, packets of other frames are sent
        with ``skip_frame=NONREF``: the decoder drops them if no frame refers to
        them (B-frames, mostly), which halves the work on x264's defaults.
        """
        ctx = self.stream.codec_context
        ctx.skip_frame = "DEFAULT"  # a generator before this one may have left NONREF
        skipping = False
        try:
            for packet in self.container.demux(self.stream):
                skip = self.wanted is not None and packet.pts not in self.wanted
                if skip != skipping:
                    ctx.skip_frame = "NONREF" if skip else "DEFAULT"
                    skipping = skip
                try:
                    decoded = ctx.decode(packet)
                except self.av.FFmpegError as exc:
                    self.errors.append(_clean_message(str(exc)))
                    continue
                yield from decoded
        except self.av.FFmpegError as exc:
            self.errors.append(f"demuxing failed: {_clean_message(str(exc))}")
            with contextlib.suppress(self.av.FFmpegError):
                yield from ctx.decode(None)

    def seek(self, frame: int) -> None:
        """Position the demuxer at the keyframe ``frame`` (a frame number)."""
        if frame == 0 or not self.has_pts:
            self.container.seek(0)  # also flushes the decoder
        else:
            self.container.seek(
                int(self.pts[frame]), stream=self.stream, backward=True, any_frame=False
            )
        self.decoder = self.frames()
        self.last = None

    def keyframe_before(self, frame: int) -> int:
        """The last keyframe at or before ``frame`` (0 if none)."""
        if not self.has_pts:
            return 0
        pos = int(np.searchsorted(self.keyframes, frame, side="right")) - 1
        return int(self.keyframes[max(pos, 0)])

    def close(self) -> None:
        self.decoder = None
        self.container.close()


class PyAVBackend(FrameBackend):
    """PyAV (FFmpeg): seek to the keyframe before a frame, decode forward, convert wanted frames.

    Frames are identified by presentation timestamp against the index built
    from demuxing, so decord's frame numbering holds for constant frame rate
    (B-frames included) and gaps are detected, not guessed. A packet that fails
    to decode is noted and decoding goes on: only frames that never come out
    are missing. It seeks only when a keyframe lies between the last decoded
    frame and the next wanted one.
    """

    name = "pyav"
    # Let the decoder drop unwanted non-reference frames (see _PyAVFile.frames).
    skip_nonref: ClassVar[bool] = True
    # Stream indexes kept for the files opened last. A decode pool hands any window
    # of any running job to any worker, so a worker switches files often; without
    # them every switch demuxed the whole file again (an hour of the benchmark's 360p:
    # 320 MB read). An index is 8 bytes per frame (under 1 MB for an hour at 30 fps);
    # 32 covers the 24 videos ingested at once in the largest benchmark run.
    index_cache_size: ClassVar[int] = 32

    def __init__(self) -> None:
        import av

        self._av: Any = av
        self._file: _PyAVFile | None = None
        self._path: str | None = None
        self._identity: tuple[object, ...] | None = None  # the open file's, when opened
        self._indexes: OrderedDict[tuple[object, ...], _StreamIndex] = OrderedDict()

    def _open(self, path: str, *, cached: bool = True) -> _PyAVFile:
        """``path`` opened, with its stream index from the cache where ``cached`` allows."""
        identity = file_identity(path) if cached else None
        unchanged = identity is None or identity == self._identity
        if self._file is not None and path == self._path and unchanged:
            return self._file
        self.close()
        index = self._indexes.get(identity) if identity is not None else None
        try:
            file = _PyAVFile(self._av, path, index, self.codec_threads)
        except self._av.FFmpegError as exc:
            reason = _diagnose(path) or _clean_message(str(exc))
            raise VideoError(f"cannot open video: {reason}") from None
        try:
            file.decoder = file.frames()
            first = next(file.decoder, None)
            if first is None:
                detail = f": {file.errors[-1]}" if file.errors else ""
                raise VideoError(f"no frame could be decoded (damaged video stream){detail}")
        except BaseException:
            file.close()
            raise
        file.rotation = _normalize_rotation(first.rotation)
        file.picture = PictureFormat(
            str(first.format.name),
            int(first.colorspace),
            int(first.color_range),
            int(first.width),
            int(first.height),
        )
        file.decoder = itertools.chain([first], file.decoder)
        file.last = file.index_of(first) - 1
        self._file, self._path, self._identity = file, path, identity
        if identity is not None and file_identity(path) != identity:
            # Changed while it was opened: a cached index may not be this file's.
            if index is not None:
                self.close()
                return self._open(path, cached=False)
            return file
        if identity is not None and not file.index.errors:  # a damaged scan is not kept
            self._indexes[identity] = file.index
            self._indexes.move_to_end(identity)
            while len(self._indexes) > self.index_cache_size:
                self._indexes.popitem(last=False)
        return file

    def probe(self, path: str) -> VideoInfo:
        """See :meth:`FrameBackend.probe`."""
        file = self._open(path)
        coded = file.picture
        width, height = _display_size(coded.width, coded.height, file.sar, file.rotation)
        timeline = file.timeline
        return VideoInfo(
            path=path,
            fps=timeline.fps,
            frame_count=timeline.frame_count,
            duration=timeline.duration,
            width=width,
            height=height,
            codec=str(file.stream.codec_context.name),
            rotation=file.rotation,
            vfr=timeline.vfr,
        )

    def picture_format(self, path: str) -> PictureFormat:
        """``path``'s first frame's pixel format, colour matrix and range, and coded size:
        what PyAV converts to RGB with."""
        return self._open(path).picture

    def timeline(self, path: str) -> _Timeline:
        """How frame indices map onto ``path``'s frames (from its stream index)."""
        return self._open(path).timeline

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
        file = self._open(path)
        count = file.timeline.frame_count
        if indices[-1] >= count:
            raise VideoError(f"frame {indices[-1]} is past the end ({count} frames)")
        runs = _groups(file.timeline.frames(indices))
        file.errors.clear()
        if self.skip_nonref and file.has_pts:
            file.wanted = {int(file.pts[frame]) for frame, _, _ in runs}
        try:
            missing = self._decode_runs(file, indices, runs, size, out)
            if missing and file.wanted is not None:
                # Frames dropped as non-reference can't be wanted ones, unless
                # packets were queued before this request: decode those again, fully.
                file.wanted = None
                file.decoder = None
                again = [run for run in runs if indices[run[1]] in missing]
                missing = self._decode_runs(file, indices, again, size, out)
        finally:
            file.wanted = None
        if missing and not skip_errors:
            first = min(missing)
            raise VideoError(missing[first])
        return missing

    def _decode_runs(
        self,
        file: _PyAVFile,
        indices: Sequence[int],
        runs: list[tuple[int, int, int]],
        size: tuple[int, int],
        out: Frames,
    ) -> dict[int, str]:
        """Decode the frames of ``runs`` into ``out``; the missing indices, with reasons."""
        h, w = size
        dec_h, dec_w = (w, h) if file.rotation in (90, 270) else (h, w)
        missing: dict[int, str] = {}
        pos = 0
        while pos < len(runs):
            target = runs[pos][0]
            if self._should_seek(file, target):
                self._seek_before(file, target)
            assert file.decoder is not None
            for frame in file.decoder:
                index = file.index_of(frame)
                file.last = index
                while pos < len(runs) and runs[pos][0] < index:
                    # The decoder went past a wanted frame without producing it.
                    self._miss(file, indices, runs[pos], missing, "was not decoded")
                    pos += 1
                if pos == len(runs):
                    break
                if index == runs[pos][0]:
                    image = frame.to_ndarray(
                        format="rgb24", width=dec_w, height=dec_h, interpolation="AREA"
                    )
                    _, lo, hi = runs[pos]
                    out[lo:hi] = _upright(image, file.rotation)
                    pos += 1
                    if pos == len(runs) or self._should_seek(file, runs[pos][0]):
                        break
            else:
                last = file.last
                file.decoder = None
                reason = f"is past the last decodable frame ({last})"
                for run in runs[pos:]:
                    self._miss(file, indices, run, missing, reason)
                pos = len(runs)
        return missing

    @staticmethod
    def _miss(
        file: _PyAVFile,
        indices: Sequence[int],
        run: tuple[int, int, int],
        missing: dict[int, str],
        what: str,
    ) -> None:
        _, lo, hi = run
        cause = f": {file.errors[-1]}" if file.errors else ""
        for pos in range(lo, hi):
            missing[indices[pos]] = f"frame {indices[pos]} {what}{cause}"

    @staticmethod
    def _should_seek(file: _PyAVFile, target: int) -> bool:
        if file.decoder is None or file.last is None or target <= file.last:
            return True
        # Seek only when it skips decoding: a keyframe lies past what we decoded.
        return file.keyframe_before(target) > file.last + 1

    def _seek_before(self, file: _PyAVFile, target: int) -> None:
        """Seek so that the next decoded frame is at or before ``target``."""
        key = file.keyframe_before(target)
        while True:
            file.seek(key)
            assert file.decoder is not None
            first = next(file.decoder, None)
            if first is not None and (key == 0 or file.index_of(first) <= target):
                file.decoder = itertools.chain([first], file.decoder)
                return
            if first is None and key == 0:
                file.decoder = iter(())
                return
            # The seek landed after the target (sparse or odd index): go further back.
            key = file.keyframe_before(key - 1)

    def close(self) -> None:
        """See :meth:`FrameBackend.close`."""
        if self._file is not None:
            self._file.close()
        self._file = None
        self._path = None
