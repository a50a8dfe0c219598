"""The NVDEC backend (:class:`NvdecBackend`): the GPU's hardware decoders through PyNvVideoCodec.

Frames are decoded by NVIDIA's ``PyNvVideoCodec`` (``SimpleDecoder``, in device
memory), resized on the GPU (``torch`` bilinear with antialiasing), converted to RGB,
turned upright, and copied to host memory at the requested size, so only model-sized
frames leave the GPU. 8-bit 4:2:0 video comes out of the decoder as NV12 and is
converted with the colour matrix and range FFmpeg would use for the file (BT.601
when it names none, as FFmpeg does; NVDEC's own RGB output picks BT.709 for HD), so
its frames match the CPU backends' colours and a pool mixing NVDEC and PyAV feeds
the model one colour rendering; other formats use NVDEC's RGB output.

Probing and the frame index (which frame is frame *n*, keyframes, variable
frame rate) are PyAV's: the container is demuxed on the CPU, nothing is decoded
there but the first frame. Frame numbers count frames in presentation order in both
libraries.

Parallelism is inside one process (:attr:`max_processes` is 1), which takes
:attr:`concurrent_requests` requests at once (a decode pool hands it that many
windows). A request's frames are split into runs of consecutive frames, one per
thread it may use (its share of the threads among the requests running), each decoded
by its own decoder on its own thread: a request alone spreads over every thread, and
with the process full each decodes its window whole on one thread (each run costs a
seek to the keyframe before it). The process has ``threads`` threads for each GPU it sees
(``CUDA_VISIBLE_DEVICES``), each thread decoding on one GPU, so on a host whose GPUs
all run the engine (vLLM data parallelism) every GPU's decoders are used.
On the H200 (``benchmarks/nvdec_decode.py``), 8 decoders
called directly on threads of one process, a whole window each, decoded 60 s windows
at 1 fps 1.6-1.9x (360p) and 1.4x (1080p) faster than eight PyAV processes, while 8
processes with one decoder each were 3-11x slower than those threads: the processes'
GPU contexts take turns on the GPU. Each thread keeps the decoders of the last
``open_files`` files it decoded, within its share of ``decoder_memory_gib`` (an
estimate from the frame size), so jobs taking turns do not reopen them.

A file NVDEC cannot open (a codec or profile the GPU does not decode) is decoded
with PyAV instead, with a warning.

A failed decode loses only its frames, except after a CUDA error that breaks the
process's CUDA context (an illegal memory access, a failed launch, a device-side
assert, an ECC error: NVIDIA's "sticky" errors), after which every CUDA call in the
process fails. The backend then fails the rest of the request's frames at once and
sets :attr:`~vidseek.indexer.video.FrameBackend.broken`: the worker answers the
request and its process is replaced, and the request is retried there as after a
crash, so it and later requests decode on a fresh context. Out of memory is not
such an error: the process stays, the thread frees its decoders, and requests are
decoded with PyAV for :attr:`memory_retry_seconds` (the engine beside it may hold
the memory for a while: on the H200, two NVDEC processes beside vLLM at 85% of the
memory ran out of it, and retrying on the GPU lost those windows' frames), then
NVDEC tries again. :attr:`decoded_by` names the backend that decoded the last
request, so a pool can count what NVDEC itself decoded.

``PyNvVideoCodec`` and CUDA are needed where the worker starts (the ``gpu`` extra);
without them the worker fails to start with a message naming what is missing.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar, NamedTuple

import numpy as np

from vidseek.indexer.types import VideoInfo
from vidseek.indexer.video.backend_pyav import PictureFormat, PyAVBackend, file_identity
from vidseek.indexer.video.frames import (
    FrameBackend,
    Frames,
    _clean_message,
    _groups,
    _read_runs,
)
from vidseek.indexer.video.sampling import _Timeline
from vidseek.storage.errors import VideoError

log = logging.getLogger(__name__)

# CUDA errors after which the process's CUDA context is unusable (CUDA's runtime
# documents these as needing a new process), as CUDA, torch and PyNvVideoCodec word
# them: the runtime's messages, and the runtime's and driver's error names.
_STICKY_CUDA_ERROR = re.compile(
    r"illegal memory access|unspecified launch failure|device-side assert|misaligned address"
    r"|illegal instruction|hardware stack error|hardware exception|invalid program counter"
    r"|global/shared address space|launch timed out|uncorrectable ECC|uncorrectable NVLink"
    r"|cudaError(IllegalAddress|LaunchFailure|Assert|HardwareStackError|IllegalInstruction"
    r"|MisalignedAddress|InvalidAddressSpace|InvalidPc|LaunchTimeout|ECCUncorrectable)"
    r"|CUDA_ERROR_(ILLEGAL_ADDRESS|LAUNCH_FAILED|ASSERT|HARDWARE_STACK_ERROR"
    r"|ILLEGAL_INSTRUCTION|MISALIGNED_ADDRESS|INVALID_ADDRESS_SPACE|INVALID_PC"
    r"|LAUNCH_TIMEOUT|ECC_UNCORRECTABLE)",
    re.IGNORECASE,
)

# PyNvVideoCodec creates the hardware decoder when the first packets arrive, so a
# GPU without memory for it fails the first batch with CUDA's error number 2
# (CUDA_ERROR_OUT_OF_MEMORY) and no words: "cuvidCreateDecoder(...) returned error 2".
_OUT_OF_MEMORY = re.compile(
    r"out of memory|CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation"
    r"|cuvidCreateDecoder\b.*\breturned error 2\b",
    re.I,
)


# Luma weights (Kr, Kb) of the colour matrices FFmpeg converts with, by AVColorSpace
# (BT.709, FCC, SMPTE 240M, BT.2020); any other, unspecified included, is BT.601.
_MATRICES: dict[int, tuple[float, float]] = {
    1: (0.2126, 0.0722),
    4: (0.30, 0.11),
    7: (0.212, 0.087),
    9: (0.2627, 0.0593),
    10: (0.2627, 0.0593),
}
_BT601 = (0.299, 0.114)
_NV12_FORMATS = frozenset({"yuv420p", "yuvj420p", "nv12"})  # 8-bit 4:2:0: NVDEC gives NV12


class _Picture(NamedTuple):
    """How a file's decoded frames become upright RGB: rotation, and for NV12 output
    (``native``) the colour matrix (AVColorSpace) and whether the range is full."""

    rotation: int
    native: bool
    matrix: int
    full_range: bool


class _CannotOpen(Exception):
    """NVDEC cannot open a file (not a :class:`VideoError`: the file may decode on the CPU)."""


class _NoGpuMemory(Exception):
    """No GPU memory for a decoder (opening it with the thread's others freed, or
    decoding with it): requests go to PyAV for a while (see :meth:`NvdecBackend.read`)."""


class NvdecBackend(FrameBackend):
    """NVDEC through PyNvVideoCodec; PyAV's index and probe (see the module docstring)."""

    name = "nvdec"
    max_processes = 1
    # Beside PyAV, the largest windows (with a decode pool's lookahead): a 1080p window
    # cost this process 1.1-1.5x the CPU-seconds of a 360p one on the H200, a PyAV
    # process 6.7x on a Xeon core (benchmarks/results/ingest_throughput_h200_2026-12-01.md).
    prefers_large_windows = True
    side_backend = "pyav"
    device: ClassVar[str] = "cuda"
    module: ClassVar[str] = "PyNvVideoCodec"
    threads: ClassVar[int] = 8  # a GPU's decoders decoding at once
    # Requests (windows) the process takes at once; alone, a request is split over
    # every thread. On the H200 (benchmarks/nvdec_decode.py, 4 files taking turns), 8
    # at once decoded 1.59x (360p) and 1.55x (1080p) as much as one at a time split
    # over the threads, and end to end beside 11 PyAV processes 2.38 windows a second
    # against about 0.55.
    concurrent_requests: ClassVar[int] = 8
    gpu_count: ClassVar[int | None] = None  # GPUs decoding; None: every visible GPU
    # Fewest frames a thread is given: each run decodes from the keyframe before it.
    min_run_frames: ClassVar[int] = 4
    # Files whose decoder each thread keeps open. Jobs take turns on the process and
    # every thread decodes a run of each window, so each thread needs a decoder for
    # every file being ingested: with 3, 24 jobs at once reopened decoders on nearly
    # every window (run E in the README). A decoder that cannot be opened for lack of
    # GPU memory first frees the thread's others; failing again, requests are
    # decoded with PyAV for memory_retry_seconds.
    open_files: ClassVar[int] = 32
    # GPU memory the open decoders may take in all, each thread keeping its share,
    # estimated from the files' frame size: about 64 bytes a pixel (192 decoders of
    # 640x360 took 2.7 GiB on the H200 beside the process's own 0.9 GiB). So a
    # thread keeps 32 decoders of 360p but about 12 of 1080p.
    decoder_memory_gib: ClassVar[float] = 12.0
    decoder_bytes_per_pixel: ClassVar[int] = 64
    # Seconds a file NVDEC could not open is left to PyAV before NVDEC tries again
    # (the failure may have been passing: GPU memory, decoder sessions).
    cpu_retry_seconds: ClassVar[float] = 300.0
    # Seconds every request is left to PyAV after one found no GPU memory for NVDEC:
    # the engine beside it may hold the memory a while, and each try costs the
    # threads' decoders an open that fails.
    memory_retry_seconds: ClassVar[float] = 10.0
    # Frames converted (resized, to RGB) at once. A window's float copies at full size
    # take about 20 MB a 1080p frame, and with the process full each of its 8 threads
    # converts a whole window (60 frames): about 9.6 GiB for the 8 threads at 1080p,
    # kept by torch's allocator. On the H200 beside vLLM at 80% of the memory, the GPU
    # filled up (26 GiB more than the engine's) and NVDEC ran out of memory. 16 at a
    # time bounds the copies at about 2.6 GiB.
    convert_frames: ClassVar[int] = 16
    # 8-bit 4:2:0 files decoded to NV12 and converted here with FFmpeg's matrix; off,
    # NVDEC converts to RGB itself (its matrix: BT.709 for HD when the file names none).
    native_output: ClassVar[bool] = True

    def __init__(self) -> None:
        try:
            import torch

            self._nvc: Any = importlib.import_module(self.module)
        except Exception as exc:
            raise RuntimeError(
                f"cannot import {self.module} ({type(exc).__name__}: "
                f"{_clean_message(str(exc))}); install the gpu extra"
            ) from None
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available for NVDEC decoding")
        self._torch: Any = torch
        # Guards what request threads share: the files' facts, the counts and deadlines.
        self._lock = threading.Lock()
        self._request = threading.local()  # each request thread's decoded_by and PyAV
        self._active = 0  # requests being decoded
        self._pyavs: list[PyAVBackend] = []  # the request threads' PyAV (see _pyav)
        # PyAV's probe, frame timeline and picture format of the files read last.
        self._file_facts: OrderedDict[object, tuple[VideoInfo, _Timeline, PictureFormat]] = (
            OrderedDict()
        )
        self._probing: dict[object, Future[tuple[VideoInfo, _Timeline, PictureFormat]]] = {}
        # Files NVDEC could not open, and when to try again: PyAV decodes them meanwhile.
        self._cpu_until: dict[str, float] = {}
        self._memory_until = 0.0  # till when requests go to PyAV for lack of GPU memory
        # Threads take GPUs in turn as they first decode: ``threads`` for each GPU.
        cuda = self.device.startswith("cuda")
        self.gpus = max(1, self.gpu_count or (torch.cuda.device_count() if cuda else 1))
        self.workers = self.threads * self.gpus
        self._next_gpu = itertools.count()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="nvdec")
        self._local = threading.local()  # each pool thread's GPU and decoders, by file

    @property  # type: ignore[override]
    def decoded_by(self) -> str:
        """The backend that decoded this thread's last request ("": NVDEC)."""
        return getattr(self._request, "decoded_by", "")

    @decoded_by.setter
    def decoded_by(self, name: str) -> None:
        self._request.decoded_by = name

    def probe(self, path: str) -> VideoInfo:
        """See :meth:`FrameBackend.probe` (PyAV's probe: demuxing and one frame on the CPU)."""
        return self._facts(path)[0]

    def _facts(self, path: str) -> tuple[VideoInfo, _Timeline, PictureFormat]:
        """``path``'s probe, frame timeline and picture format, kept for the files read
        last. A file not kept is probed by this thread's own PyAV, beside the requests
        for other files (demuxing a long file takes a while); requests for the same
        file wait for that probe rather than demux it again."""
        key = file_identity(path)
        if key is None:  # cannot be identified (gone?): PyAV names the problem
            return self._probe_facts(path)
        with self._lock:
            facts = self._file_facts.get(key)
            if facts is not None:
                self._file_facts.move_to_end(key)  # the most recent last
                return facts
            probing = self._probing.get(key)
            mine = probing is None
            if mine:
                probing = self._probing[key] = Future()
        assert probing is not None
        if not mine:
            return probing.result()  # the probe's facts, or its error
        try:
            facts = self._probe_facts(path)
        except BaseException as exc:
            with self._lock:
                del self._probing[key]
            probing.set_exception(exc)
            raise
        with self._lock:
            del self._probing[key]
            self._file_facts[key] = facts  # the most recent last
            while len(self._file_facts) > PyAVBackend.index_cache_size:
                self._file_facts.popitem(last=False)
        probing.set_result(facts)
        return facts

    def _probe_facts(self, path: str) -> tuple[VideoInfo, _Timeline, PictureFormat]:
        """``path``'s facts from this thread's PyAV (see :meth:`_facts`)."""
        pyav = self._pyav()
        return pyav.probe(path), pyav.timeline(path), pyav.picture_format(path)

    def _pyav(self) -> PyAVBackend:
        """This thread's PyAV (one PyAV keeps one file open: it is not shared)."""
        pyav: PyAVBackend | None = getattr(self._request, "pyav", None)
        if pyav is None:
            pyav = self._request.pyav = PyAVBackend()
            with self._lock:
                self._pyavs.append(pyav)
        pyav.codec_threads = self.codec_threads  # PyAV's decodes as a pool's would
        return pyav

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
        self.decoded_by = ""  # NVDEC's, unless the request goes to PyAV (_on_cpu)
        info, timeline, coded = self._facts(path)
        with self._lock:
            now = time.monotonic()
            on_cpu = self._cpu_until.get(path, 0.0) > now or self._memory_until > now
        if on_cpu:
            return self._on_cpu(path, indices, size, out, skip_errors)
        if indices[-1] >= timeline.frame_count:
            raise VideoError(f"frame {indices[-1]} is past the end ({timeline.frame_count} frames)")
        picture = _Picture(
            rotation=info.rotation,
            native=self.native_output
            and coded.pixel_format in _NV12_FORMATS
            and coded.width % 2 == 0
            and coded.height % 2 == 0,  # odd sizes: NVDEC's RGB output
            matrix=coded.matrix,
            full_range=coded.colour_range == 2 or coded.pixel_format == "yuvj420p",
        )
        cost = info.width * info.height * self.decoder_bytes_per_pixel  # a decoder's memory
        with self._lock:
            self._active += 1
        try:
            return _read_runs(
                indices,
                _groups(timeline.frames(indices)),
                out,
                skip_errors,
                lambda frames: self._decode_parallel(path, frames, size, picture, cost),
                lambda frame: self._pool.submit(
                    self._decode_run, path, [frame], size, picture, cost
                ).result(),
            )
        except _NoGpuMemory as exc:  # on the CPU for a while; then NVDEC again
            with self._lock:
                if self._memory_until <= time.monotonic():  # once, not by every request
                    log.warning(
                        "NVDEC has no GPU memory for %s (%s): decoding with PyAV for %g s",
                        path,
                        exc,
                        self.memory_retry_seconds,
                    )
                self._memory_until = time.monotonic() + self.memory_retry_seconds
        except _CannotOpen as exc:  # a codec or profile the GPU lacks: decode on the CPU
            with self._lock:
                if path not in self._cpu_until:
                    log.warning(
                        "NVDEC cannot decode %s (%s, %s): decoding it with PyAV",
                        path,
                        info.codec or "unknown codec",
                        exc,
                    )
                self._cpu_until.pop(path, None)  # re-inserted last: the trim drops the oldest
                self._cpu_until[path] = time.monotonic() + self.cpu_retry_seconds
                while len(self._cpu_until) > 1024:  # oldest first
                    del self._cpu_until[next(iter(self._cpu_until))]
        finally:
            with self._lock:
                self._active -= 1
        return self._on_cpu(path, indices, size, out, skip_errors)

    def _on_cpu(
        self, path: str, indices: Sequence[int], size: tuple[int, int], out: Frames, skip: bool
    ) -> dict[int, str]:
        """The request decoded with PyAV in this process (:attr:`decoded_by` says so), on
        this thread's own PyAV, so that requests beside it go on."""
        pyav = self._pyav()
        self.decoded_by = pyav.name
        return pyav.read(path, indices, size, out, skip_errors=skip)

    def _decode_parallel(
        self, path: str, frames: list[int], size: tuple[int, int], picture: _Picture, cost: int
    ) -> Any:
        """``frames`` in runs of consecutive frames, one run per pool thread of this
        request's share (the threads over the requests running), joined in order."""
        share = self.workers // max(1, self._active)
        count = max(1, min(share, len(frames) // self.min_run_frames))
        bounds = [len(frames) * k // count for k in range(count + 1)]
        runs = [frames[lo:hi] for lo, hi in itertools.pairwise(bounds)]
        futures = [
            self._pool.submit(self._decode_run, path, run, size, picture, cost) for run in runs
        ]
        return np.concatenate([f.result() for f in futures])

    def _decode_run(
        self, path: str, frames: list[int], size: tuple[int, int], picture: _Picture, cost: int
    ) -> Any:
        """Frames of ``path`` with this pool thread's decoder for it (opened on first use).

        ``cost`` is the decoder's estimated GPU memory: the thread keeps at most
        :attr:`open_files` decoders within its share of :attr:`decoder_memory_gib`,
        dropping the least recently used first. The memory is counted a GPU: each of a
        GPU's ``threads`` threads keeps its share.
        """
        if self.broken:  # every CUDA call would fail: no decoder is opened or used
            raise VideoError(self.broken)
        decoders: OrderedDict[object, tuple[Any, int]] | None = getattr(
            self._local, "decoders", None
        )
        if decoders is None:
            self._local.gpu = next(self._next_gpu) % self.gpus
            if self.device.startswith("cuda"):
                self._torch.cuda.set_device(self._local.gpu)  # this thread's resizing too
            decoders = self._local.decoders = OrderedDict()
        key = file_identity(path) or path  # a file replaced at the same path is another
        decoder, _ = decoders.pop(key, (None, 0))
        if decoder is None:
            decoder = self._open(path, decoders, picture.native)
            share = self.decoder_memory_gib * 2**30 / self.threads
            while decoders and (
                len(decoders) >= self.open_files
                or sum(c for _, c in decoders.values()) + cost > share
            ):
                decoders.popitem(last=False)  # the least recently used file's decoder
        try:
            frames_out = self._decode(decoder, frames, size, picture)  # a failed one is dropped
        except _NoGpuMemory:
            decoders.clear()  # this thread's GPU memory, for the next request
            raise
        decoders[key] = (decoder, cost)
        return frames_out

    def _open(self, path: str, decoders: OrderedDict[object, tuple[Any, int]], native: bool) -> Any:
        """A decoder of ``path`` for this thread. Out of GPU memory, it tries once more
        without the thread's other decoders (:class:`_NoGpuMemory` if still short); a
        file NVDEC cannot open raises :class:`_CannotOpen`."""
        nvc = self._nvc
        while True:
            try:
                return nvc.SimpleDecoder(
                    path,
                    gpu_id=self._local.gpu,
                    use_device_memory=True,
                    output_color_type=(
                        nvc.OutputColorType.NATIVE if native else nvc.OutputColorType.RGB
                    ),
                )
            except Exception as exc:
                if _OUT_OF_MEMORY.search(str(exc)):
                    if decoders:
                        decoders.clear()  # this thread's GPU memory, then once more
                        continue
                    raise _NoGpuMemory(_clean_message(str(exc))) from None
                if self._breaks_cuda(exc):
                    raise VideoError(self.broken) from None
                raise _CannotOpen(_clean_message(str(exc))) from None

    def _decode(
        self, decoder: Any, frames: list[int], size: tuple[int, int], picture: _Picture
    ) -> Any:
        """Frames ``frames`` as ``(N, h, w, 3)`` uint8 in host memory, upright, at ``size``,
        converted :attr:`convert_frames` at a time."""
        try:
            decoded = decoder.get_batch_frames_by_index(frames)
            if len(decoded) != len(frames):
                raise VideoError(f"NVDEC returned {len(decoded)} of {len(frames)} frames")
            step = max(1, self.convert_frames)
            return np.concatenate(
                [
                    self._convert(decoded[k : k + step], size, picture)
                    for k in range(0, len(decoded), step)
                ]
            )
        except (VideoError, _CannotOpen):
            raise
        except Exception as exc:  # CUDA errors: this request's frames only
            if _OUT_OF_MEMORY.search(str(exc)):  # this request on the CPU (see read())
                raise _NoGpuMemory(_clean_message(str(exc))) from None
            broken = self._breaks_cuda(exc)
            raise VideoError(self.broken if broken else _clean_message(str(exc))) from None

    def _convert(self, decoded: Sequence[Any], size: tuple[int, int], picture: _Picture) -> Any:
        """Decoded frames (DLPack, in device memory) as ``(N, h, w, 3)`` uint8 host frames."""
        torch = self._torch
        h, w = size
        rotation = picture.rotation
        coded = (w, h) if rotation in (90, 270) else (h, w)
        batch = torch.stack([torch.from_dlpack(f) for f in decoded])
        shape = tuple(batch.shape)
        if picture.native:
            if batch.ndim != 3 or shape[1] % 3 or shape[1] * 2 // 3 % 2 or shape[2] % 2:
                # Not the NV12 plane expected: the file goes to PyAV (see read()).
                raise _CannotOpen(f"NVDEC returned frames of shape {shape}, not NV12")
            x = self._nv12_to_rgb(batch, coded, picture)
        else:
            if batch.ndim != 4 or shape[-1] != 3:
                raise VideoError(f"NVDEC returned frames of shape {shape}, not N x H x W x 3")
            x = self._resize(batch.permute(0, 3, 1, 2).float(), coded)
        if rotation:
            x = torch.rot90(x, rotation // 90, dims=(2, 3))
        x = x.round_().clamp_(0, 255).to(torch.uint8)
        return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()

    def _resize(self, x: Any, size: tuple[int, int]) -> Any:
        """``(N, C, H, W)`` float frames at ``size`` (bilinear, antialiased)."""
        if tuple(x.shape[2:]) == size:
            return x
        return self._torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True)

    def _nv12_to_rgb(self, batch: Any, size: tuple[int, int], picture: _Picture) -> Any:
        """``(N, 3H/2, W)`` NV12 frames (luma rows, then interleaved chroma rows) as
        ``(N, 3, h, w)`` float RGB at ``size``: luma and chroma are resized apart, then
        converted with the file's matrix and range (a linear map, so resizing first
        gives the same picture for less work)."""
        torch = self._torch
        n, rows, width = batch.shape
        height = rows * 2 // 3
        y = self._resize(batch[:, :height].unsqueeze(1).float(), size)
        chroma = batch[:, height:].reshape(n, height // 2, width // 2, 2).permute(0, 3, 1, 2)
        uv = self._resize(chroma.float(), size) - 128.0
        kr, kb = _MATRICES.get(picture.matrix, _BT601)
        kg = 1.0 - kr - kb
        if not picture.full_range:  # limited range: luma 16-235, chroma 16-240
            y = (y - 16.0) * (255.0 / 219.0)
            uv = uv * (255.0 / 224.0)
        u, v = uv[:, :1], uv[:, 1:]
        r = y + 2.0 * (1.0 - kr) * v
        g = y - (2.0 * (1.0 - kb) * kb / kg) * u - (2.0 * (1.0 - kr) * kr / kg) * v
        b = y + 2.0 * (1.0 - kb) * u
        return torch.cat([r, g, b], dim=1)

    def _breaks_cuda(self, exc: Exception) -> bool:
        """Whether ``exc`` is a sticky CUDA error; the first one sets :attr:`broken`."""
        if not _STICKY_CUDA_ERROR.search(str(exc)):
            return False
        if not self.broken:  # later errors echo the first
            message = _clean_message(str(exc))
            self.broken = f"{message} (CUDA is unusable in this decoder process: it is restarted)"
        return True

    def close(self) -> None:
        """See :meth:`FrameBackend.close`."""
        with self._lock:
            self._file_facts.clear()
            pyavs, self._pyavs = self._pyavs, []
        for pyav in pyavs:
            pyav.close()
        self._request = threading.local()
        self._pool.shutdown(wait=True)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="nvdec")
        self._next_gpu = itertools.count()
        self._local = threading.local()
