"""A stand-in ``PyNvVideoCodec`` for the NVDEC backend's tests on the CPU.

``SimpleDecoder`` decodes with PyAV instead of the GPU: full-size frames in
presentation order (NV12 planes for ``OutputColorType.NATIVE``, RGB for ``RGB``,
PyAV's conversion), handed out as host arrays (which support DLPack, as the real
decoder's device frames do). It refuses files whose name contains ``"nonvdec"``,
as the real one refuses a codec the GPU does not decode, and records every file
it opens or refuses and every batch it is asked for, with the thread that asked, in
:data:`CALLS`. A batch that holds a frame of :data:`FAIL_AT` fails (an error that
loses only that batch); the next opens raise the errors of :data:`OPEN_FAULTS`, and
the next batches those of :data:`BATCH_FAULTS` (:data:`NO_DECODER_MEMORY` is how the
real decoder words a GPU without memory for it, at its first batch).

A decode worker runs the fake in a spawned process, where :data:`FAIL_AT` is not
seen: :func:`fail_once` leaves a fault in the directory named by the environment
variable :data:`FAULTS_ENV`, which the first batch holding its frame, in any process,
takes and raises. A ``"sticky"`` fault is a CUDA error that breaks the process's CUDA
context: every later batch and open in that process fails with it too, as on a GPU;
an ``"oom"`` fault is CUDA running out of memory, once.
"""

from __future__ import annotations

import enum
import os
import threading
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np

CALLS: list[tuple[str, Any, str]] = []
OPENED_ON: list[tuple[str, int]] = []  # (thread, gpu_id) of every decoder opened
OUTPUTS: list[Any] = []  # the output_color_type of every decoder opened
FAIL_AT: set[int] = set()  # frame numbers whose batch fails, as a GPU error would
OPEN_FAULTS: list[str] = []  # errors the next opens raise, one each, in this process
BATCH_FAULTS: list[str] = []  # errors the next batches raise, one each, in this process
NO_DECODER_MEMORY = (
    "HandleVideoSequence : Error code : 2 Error Type : m_api.cuvidCreateDecoder(&m_hDecoder, "
    "&videoDecodeCreateInfo) returned error 2 at /project/src/VideoCodecSDKUtils/helper_classes/"
    "Utils/NvDecoder.cpp:713"
)
FAULTS_ENV = "VIDSEEK_FAKE_NVC_FAULTS"
FAULTS = {
    "sticky": "CUDA error: an illegal memory access was encountered",
    "oom": "CUDA out of memory. Tried to allocate 2.00 GiB",
}
_broken = ""  # the sticky error this process has had


def fail_once(
    directory: str | os.PathLike[str], frame: int, kind: Literal["sticky", "oom"]
) -> None:
    """Make the next batch holding ``frame`` fail with ``kind`` (see the module docstring)."""
    Path(directory, f"{kind}-{frame}").touch()


def _take_fault(indices: list[int]) -> None:
    """Raise this process's sticky error, or the error of a fault for one of ``indices``."""
    global _broken
    if _broken:
        raise RuntimeError(_broken)
    directory = os.environ.get(FAULTS_ENV)
    if not directory:
        return
    for kind, message in FAULTS.items():
        for frame in indices:
            try:
                os.unlink(Path(directory, f"{kind}-{frame}"))  # one taker, whichever process
            except FileNotFoundError:
                continue
            if kind == "sticky":
                _broken = message
            raise RuntimeError(message)


class OutputColorType(enum.Enum):
    NATIVE = 0
    RGB = 1


class SimpleDecoder:
    def __init__(
        self,
        enc_file_path: str,
        gpu_id: int = 0,
        use_device_memory: bool = True,
        output_color_type: OutputColorType = OutputColorType.NATIVE,
    ) -> None:
        if _broken:
            raise RuntimeError(_broken)
        if OPEN_FAULTS:
            CALLS.append(("fault", enc_file_path, threading.current_thread().name))
            raise RuntimeError(OPEN_FAULTS.pop(0))
        if "nonvdec" in enc_file_path:
            CALLS.append(("refuse", enc_file_path, threading.current_thread().name))
            raise RuntimeError("CUVID: codec not supported on this GPU")
        assert use_device_memory
        CALLS.append(("open", enc_file_path, threading.current_thread().name))
        OPENED_ON.append((threading.current_thread().name, gpu_id))
        OUTPUTS.append(output_color_type)
        # NATIVE: NV12, one (3H/2, W) plane as NVDEC gives 8-bit 4:2:0 video; RGB: H x W x 3.
        layout = "nv12" if output_color_type is OutputColorType.NATIVE else "rgb24"
        with av.open(enc_file_path) as container:
            frames = [(f.pts, f.to_ndarray(format=layout)) for f in container.decode(video=0)]
        self._frames = [image for _, image in sorted(frames, key=lambda f: f[0])]

    def __len__(self) -> int:
        return len(self._frames)

    def get_batch_frames_by_index(self, indices: list[int]) -> list[np.ndarray]:
        CALLS.append(("batch", list(indices), threading.current_thread().name))
        if FAIL_AT.intersection(indices):
            raise RuntimeError(f"NVDEC: failed to decode frame {min(FAIL_AT)}")
        if BATCH_FAULTS:
            raise RuntimeError(BATCH_FAULTS.pop(0))
        _take_fault(indices)
        return [self._frames[i] for i in indices]
