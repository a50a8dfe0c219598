"""The backends by name (:data:`BACKENDS`), as :class:`DecodeWorker` and settings take them."""

from __future__ import annotations

from typing import Final

from vidseek.indexer.video.backend_decord import DecordBackend
from vidseek.indexer.video.backend_nvdec import NvdecBackend
from vidseek.indexer.video.backend_pyav import PyAVBackend
from vidseek.indexer.video.backend_torchcodec import TorchCodecBackend, TorchCodecCudaBackend
from vidseek.indexer.video.frames import FrameBackend
from vidseek.storage.errors import ConfigError

__all__ = [
    "BACKENDS",
    "DecordBackend",
    "FrameBackend",
    "NvdecBackend",
    "PyAVBackend",
    "TorchCodecBackend",
    "TorchCodecCudaBackend",
    "pool_backends",
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


def pool_backends(spec: str) -> list[str]:
    """The backends of a decode pool setting: one name, or several joined by ``+``.

    ``"nvdec+pyav"`` is NVDEC's decoder process and PyAV processes, all taking
    windows from the pool's one queue (:class:`~vidseek.indexer.decode_pool.DecodePool`),
    so the GPU's decoders and the CPU's decode at once. Raises
    :class:`~vidseek.storage.errors.ConfigError` naming an unknown or repeated backend.
    """
    names = [part.strip() for part in spec.split("+")]
    for name in names:
        if name not in BACKENDS:
            known = ", ".join(sorted(BACKENDS))
            raise ConfigError(f"unknown video backend {name!r} in {spec!r} (known: {known})")
    if len(set(names)) < len(names):
        raise ConfigError(f"video backend {spec!r} names a backend twice")
    return names


def side_backend(backend: str) -> str:
    """The backend for decoder processes beside the shared pool: probing and refinement.

    NVDEC runs one process for the machine (GPU contexts in several processes slow
    each other down), so processes beside its pool decode with PyAV on the CPU. For
    a pool of several backends (``"nvdec+pyav"``) it is the last one's.
    """
    name = backend.split("+")[-1].strip()
    cls = BACKENDS.get(name)
    return (cls.side_backend or name) if cls is not None else name
