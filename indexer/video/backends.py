"""The backends by name (:data:`BACKENDS`), as :class:`DecodeWorker` and settings take them."""

from __future__ import annotations

from typing import Final

from vidseek.indexer.video.backend_decord import DecordBackend
from vidseek.indexer.video.backend_nvdec import NvdecBackend
from vidseek.indexer.video.backend_pyav import PyAVBackend
from vidseek.indexer.video.backend_torchcodec import TorchCodecBackend, TorchCodecCudaBackend
from vidseek.indexer.video.frames import FrameBackend

__all__ = [
    "BACKENDS",
    "DecordBackend",
    "FrameBackend",
    "NvdecBackend",
    "PyAVBackend",
    "TorchCodecBackend",
    "TorchCodecCudaBackend",
    "side_backend",
]

BACKENDS: Final[dict[str, type[FrameBackend]]] = {
    backend.name: backend
    for backend in (
        DecordBackend,
        PyAVBackend,
        TorchCodecBackend,
        TorchCodecCudaBackend,
        NvdecBackend,
    )
}


def side_backend(backend: str) -> str:
    """The backend for decoder processes beside the shared pool: probing and refinement.

    NVDEC runs one process for the machine (GPU contexts in several processes slow
    each other down), so processes beside its pool decode with PyAV on the CPU.
    """
    cls = BACKENDS.get(backend)
    return (cls.side_backend or backend) if cls is not None else backend
