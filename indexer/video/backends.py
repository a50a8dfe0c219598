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


def pool_backends(spec: str) -> list[tuple[str, int]]:
    """The backends of a decode pool setting, each with its processes (0: the pool's
    sizing): one name, or several joined by ``+``, each with ``:N`` processes or not.

    ``"nvdec+pyav"`` is NVDEC's decoder process and PyAV processes, all taking
    windows from the pool's one queue (:class:`~vidseek.indexer.decode_pool.DecodePool`),
    so the GPU's decoders and the CPU's decode at once; ``"nvdec:2+pyav"`` runs two
    NVDEC processes (past its cap of one: for GPUs shared through NVIDIA MPS, where
    processes' GPU work runs at once). Raises
    :class:`~vidseek.storage.errors.ConfigError` naming an unknown or repeated backend
    or a bad count.
    """
    parts: list[tuple[str, int]] = []
    for part in spec.split("+"):
        name, _, count = (p.strip() for p in part.partition(":"))
        if name not in BACKENDS:
            known = ", ".join(sorted(BACKENDS))
            raise ConfigError(f"unknown video backend {name!r} in {spec!r} (known: {known})")
        if count and not (count.isascii() and count.isdecimal() and int(count) >= 1):
            raise ConfigError(f"video backend {spec!r}: processes of {name!r} must be >= 1")
        parts.append((name, int(count or 0)))
    if len({name for name, _ in parts}) < len(parts):
        raise ConfigError(f"video backend {spec!r} names a backend twice")
    return parts


def side_backend(backend: str) -> str:
    """The backend for decoder processes beside the shared pool: probing and refinement.

    NVDEC runs one process for the machine (GPU contexts in several processes slow
    each other down), so processes beside its pool decode with PyAV on the CPU. For
    a pool of several backends (``"nvdec+pyav"``) it is the last one's.
    """
    name = backend.split("+")[-1].partition(":")[0].strip()
    cls = BACKENDS.get(name)
    return (cls.side_backend or name) if cls is not None else name
