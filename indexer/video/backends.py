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
