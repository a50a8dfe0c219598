"""Probing video files and decoding frames at absolute indices, in a child process.

Isolation. decord is unmaintained and can segfault, or hang while holding the
GIL, on damaged files. So every probe and decode runs in a worker process
started with the ``spawn`` context; each request has a deadline. A worker that
misses its deadline is killed (:class:`DecodeTimeout`), one that dies is reported
with its signal (:class:`VideoError`), and the next request starts a fresh
worker. Decoded frames come back through an anonymous shared-memory file
(``memfd``) handed to the worker once, not through the pipe: a 60-frame 352x640
window is ~40 MB, which takes ~20 ms this way and ~100 ms through the pipe.

Backends (:class:`FrameBackend`): ``"pyav"``, ``"torchcodec"`` (CPU),
``"torchcodec-cuda"`` (NVDEC, where CUDA is available), ``"nvdec"`` (NVDEC through
NVIDIA's PyNvVideoCodec, needing no FFmpeg libraries) and ``"decord"``. All
return frames RGB, upright (the display rotation applied), at the display
aspect ratio (the sample aspect ratio applied: probed ``width`` is the display
width), resized inside the worker so only small frames cross the process
boundary. torchcodec needs the system FFmpeg shared libraries and is imported
only by its backend.

Frame indices and time. Everything downstream (:func:`sample_indices`, the
window planner, the model prompt) treats frame ``i`` as shown at ``i / fps``
seconds from the first frame. A probe demuxes the whole stream (no decoding)
to learn every frame's presentation timestamp, so that this holds for real:

* constant frame rate (every frame interval within 25% of the median): index
  ``i`` is the ``i``-th frame in presentation order, as in decord;
* variable frame rate (``VideoInfo.vfr``): ``fps`` is the typical rate (one over
  the median frame interval) and index ``i`` is a slot on that regular grid,
  meaning *the frame on screen at* ``i / fps`` (the last frame whose timestamp
  is at or before it). ``frame_count`` is the number of slots up to the last
  frame. A slot time is never before its frame's real timestamp and is within
  the frame's display time, so the timestamp the model is told (``i / fps``) is
  when the frame it sees was really on screen; a still stretch repeats a frame
  rather than skipping time, and bursts of frames are sampled at the grid rate.
  Picking the nearest frame instead could show a frame before its time.

Damaged streams. ``read(..., on_error="skip")`` returns :class:`DecodedFrames`:
the frames that decoded, their indices, and the indices that did not (with a
message naming the path), so a caller can index what decodes and report the
gap. The default ``on_error="raise"`` raises :class:`VideoError` if any
requested frame is missing. PyAV and torchcodec keep decoding past a bad
packet; a worker that crashes in ``"skip"`` mode is retried on halves of the
request (a bounded number of times) so one bad frame does not lose a window.
"""

from vidseek.indexer.video.backend_decord import DecordBackend
from vidseek.indexer.video.backend_nvdec import NvdecBackend
from vidseek.indexer.video.backend_pyav import PyAVBackend
from vidseek.indexer.video.backend_torchcodec import TorchCodecBackend, TorchCodecCudaBackend
from vidseek.indexer.video.backends import BACKENDS, pool_backends, side_backend
from vidseek.indexer.video.frames import FrameBackend
from vidseek.indexer.video.frames import Frames as Frames
from vidseek.indexer.video.frames import _StreamFacts as _StreamFacts
from vidseek.indexer.video.reader import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from vidseek.indexer.video.reader import FrameReader, probe
from vidseek.indexer.video.sampling import _frame_timeline as _frame_timeline
from vidseek.indexer.video.sampling import resized_shape, sample_indices
from vidseek.indexer.video.worker import DEFAULT_START_TIMEOUT as DEFAULT_START_TIMEOUT
from vidseek.indexer.video.worker import DecodedFrames, DecodeWorker
from vidseek.indexer.video.worker import OnError as OnError

__all__ = [
    "BACKENDS",
    "DecodeWorker",
    "DecodedFrames",
    "DecordBackend",
    "FrameBackend",
    "FrameReader",
    "NvdecBackend",
    "PyAVBackend",
    "TorchCodecBackend",
    "TorchCodecCudaBackend",
    "pool_backends",
    "probe",
    "resized_shape",
    "sample_indices",
    "side_backend",
]
