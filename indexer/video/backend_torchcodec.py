"""The torchcodec backends: :class:`TorchCodecBackend` (CPU) and its NVDEC subclass."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from vidseek.indexer.types import VideoInfo
from vidseek.indexer.video.frames import (
    FrameBackend,
    Frames,
    _clean_message,
    _diagnose,
    _display_size,
    _groups,
    _normalize_rotation,
    _read_runs,
)
from vidseek.indexer.video.sampling import _frame_timeline, _Timeline
from vidseek.storage.errors import VideoError


class TorchCodecBackend(FrameBackend):
    """torchcodec (FFmpeg through the system libraries): exact-mode ``VideoDecoder``.

    Frames are resized by the decoder itself (``transforms=[Resize]``, applied
    with the colour conversion) and come out upright. The frame timestamps come
    from torchcodec's demuxer scan. One decoder is kept per output size.
    """

    name = "torchcodec"
    device: ClassVar[str] = "cpu"

    def __init__(self) -> None:
        try:
            import torch

            # Through importlib: torchcodec is optional, and typed only where installed.
            decoders = importlib.import_module("torchcodec.decoders")
            transforms = importlib.import_module("torchcodec.transforms")
        except Exception as exc:
            raise RuntimeError(
                f"cannot import torchcodec ({type(exc).__name__}: {_clean_message(str(exc))}); "
                "it needs the FFmpeg shared libraries (e.g. apt-get install ffmpeg)"
            ) from None
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available for NVDEC decoding")
        self._video_decoder: Any = decoders.VideoDecoder
        self._resize: Any = transforms.Resize
        self._demuxer: Any = getattr(decoders, "Demuxer", None)  # torchcodec >= 0.17
        self._path: str | None = None
        self._decoders: dict[tuple[int, int] | None, Any] = {}
        self._timeline: _Timeline | None = None
        self._info: VideoInfo | None = None

    def _select(self, path: str) -> None:
        if path != self._path:
            self.close()
            self._path = path

    def _decoder(self, path: str, size: tuple[int, int] | None) -> Any:
        """The decoder for frames of ``size``; ``None``: full size, for probing only.

        Exact mode (which scans the file) only where frames are read by index.
        """
        self._select(path)
        decoder = self._decoders.get(size)
        if decoder is None:
            try:
                decoder = self._video_decoder(
                    path,
                    dimension_order="NHWC",
                    seek_mode="approximate" if size is None else "exact",
                    num_ffmpeg_threads=0,
                    device=self.device,
                    transforms=None if size is None else [self._resize(size)],
                )
            except (RuntimeError, ValueError) as exc:
                reason = _diagnose(path) or _clean_message(str(exc))
                raise VideoError(f"cannot open video: {reason}") from None
            self._decoders[size] = decoder
        return decoder

    def _load(self, path: str) -> tuple[_Timeline, VideoInfo]:
        self._select(path)
        if self._timeline is None or self._info is None:
            # Scan first: it fails more clearly than the decoder on empty streams.
            starts = self._frame_starts(path)
            decoder = self._decoder(path, None)
            meta = decoder.metadata
            header_fps = float(meta.average_fps_from_header or meta.average_fps or 0.0)
            if starts is None:
                # Older torchcodec: trust the header, constant rate.
                count = int(meta.num_frames or 0)
                if count <= 0 or header_fps <= 0:
                    raise VideoError("video stream has no frames or no frame rate")
                starts = np.arange(count) / header_fps
            timeline = _frame_timeline(starts, header_fps)
            try:
                first = decoder.get_frame_at(0).data
            except (RuntimeError, IndexError) as exc:
                raise VideoError(f"cannot decode first frame: {_clean_message(str(exc))}") from None
            rotation = _normalize_rotation(float(meta.rotation or 0.0))
            par = meta.pixel_aspect_ratio
            height, width = int(first.shape[0]), int(first.shape[1])
            coded = (height, width) if rotation in (90, 270) else (width, height)
            width, height = _display_size(*coded, Fraction(par) if par else None, rotation)
            self._timeline = timeline
            self._info = VideoInfo(
                path=path,
                fps=timeline.fps,
                frame_count=timeline.frame_count,
                duration=timeline.duration,
                width=width,
                height=height,
                codec=str(meta.codec or ""),
                rotation=rotation,
                vfr=timeline.vfr,
            )
        return self._timeline, self._info

    def _frame_starts(self, path: str) -> npt.NDArray[np.float64] | None:
        """Every frame's timestamp from torchcodec's demuxer scan (no decoding); None: no scan."""
        if self._demuxer is None:
            return None
        try:
            pts = self._demuxer(path).streams[0].scan().pts_seconds.numpy()
        except (RuntimeError, ValueError) as exc:
            reason = _diagnose(path) or _clean_message(str(exc))
            raise VideoError(f"cannot open video: {reason}") from None
        if not len(pts):
            raise VideoError("video stream has no frames")
        return np.asarray(pts, dtype=np.float64)

    def probe(self, path: str) -> VideoInfo:
        """See :meth:`FrameBackend.probe`."""
        return self._load(path)[1]

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
        timeline, _ = self._load(path)
        if indices[-1] >= timeline.frame_count:
            raise VideoError(f"frame {indices[-1]} is past the end ({timeline.frame_count} frames)")
        return _read_runs(
            indices,
            _groups(timeline.frames(indices)),
            out,
            skip_errors,
            lambda frames: self._decode(path, size, lambda d: d.get_frames_at(frames)),
            lambda frame: self._decode(path, size, lambda d: d.get_frame_at(frame)),
        )

    def _decode(self, path: str, size: tuple[int, int], get: Callable[[Any], Any]) -> Frames:
        """The frames ``get`` takes from this file's decoder, as an array; VideoError if it fails.

        A decoder that failed may be stuck mid-GOP: it is dropped, so the next
        call starts afresh.
        """
        decoder = self._decoder(path, size)
        try:
            data = get(decoder).data
        except (RuntimeError, IndexError) as exc:
            self._decoders.pop(size, None)
            raise VideoError(_clean_message(str(exc))) from None
        out: Frames = data.cpu().numpy() if self.device != "cpu" else data.numpy()
        return out

    def close(self) -> None:
        """See :meth:`FrameBackend.close`."""
        self._decoders.clear()
        self._path = None
        self._timeline = None
        self._info = None


class TorchCodecCudaBackend(TorchCodecBackend):
    """torchcodec decoding on the GPU (NVDEC); frames are copied back to host memory.

    Unavailable (a :class:`ConfigError` when the worker starts) without CUDA.
    torchcodec falls back to CPU decoding for streams NVDEC cannot handle.
    """

    name = "torchcodec-cuda"
    device: ClassVar[str] = "cuda"
    prefers_large_windows = True  # NVDEC too: see FrameBackend
