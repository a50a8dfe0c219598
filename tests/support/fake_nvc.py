"""A stand-in ``PyNvVideoCodec`` for the NVDEC backend's tests on the CPU.

``SimpleDecoder`` decodes with PyAV instead of the GPU: full-size RGB frames in
presentation order, handed out as host arrays (which support DLPack, as the real
decoder's device frames do). It refuses files whose name contains ``"nonvdec"``,
as the real one refuses a codec the GPU does not decode, and records every file
it opens or refuses and every batch it is asked for, with the thread that asked, in
:data:`CALLS`. A batch that holds a frame of :data:`FAIL_AT` fails.
"""

from __future__ import annotations

import enum
import threading
from typing import Any

import av
import numpy as np

CALLS: list[tuple[str, Any, str]] = []
FAIL_AT: set[int] = set()  # frame numbers whose batch fails, as a GPU error would


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
        if "nonvdec" in enc_file_path:
            CALLS.append(("refuse", enc_file_path, threading.current_thread().name))
            raise RuntimeError("CUVID: codec not supported on this GPU")
        assert output_color_type is OutputColorType.RGB and use_device_memory
        CALLS.append(("open", enc_file_path, threading.current_thread().name))
        with av.open(enc_file_path) as container:
            frames = [(f.pts, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
        self._frames = [image for _, image in sorted(frames, key=lambda f: f[0])]

    def __len__(self) -> int:
        return len(self._frames)

    def get_batch_frames_by_index(self, indices: list[int]) -> list[np.ndarray]:
        CALLS.append(("batch", list(indices), threading.current_thread().name))
        if FAIL_AT.intersection(indices):
            raise RuntimeError(f"CUDA error: an illegal memory access (frame {min(FAIL_AT)})")
        return [self._frames[i] for i in indices]
