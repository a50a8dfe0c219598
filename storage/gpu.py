"""An optional GPU copy of a CPU FAISS index, used for unfiltered searches.

Install ``vidseek[gpu]`` (``faiss-gpu``) instead of ``vidseek[cpu]``
(``faiss-cpu``) for this; both provide the same ``faiss`` module, and with
``faiss-cpu`` :func:`gpu_count` is 0 and no mirror is made.

Two facts of FAISS GPU indexes shape this class:

* They cannot remove ids. The CPU index stays the authority; the GPU copy is
  only ever *added to* incrementally, and any removal marks it stale. A stale
  copy is rebuilt from the CPU index (one bulk upload) by the next search that
  wants it, so it is never consulted while it could return a removed id.
* They are not thread-safe. Every GPU call (upload, add, search) runs under one
  mutex. Lock order: the owning :class:`~vidseek.storage.vector_index.VectorIndex`
  lock first, then this mirror's lock.

Searches with an id filter stay on the CPU (GPU indexes take no ``IDSelector``),
and only flat indexes are mirrored (FAISS has no GPU HNSW).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from vidseek.storage.errors import ConfigError

__all__ = ["GpuConverter", "GpuMirror", "gpu_count", "make_gpu_converter"]

GpuConverter = Callable[[Any], Any]
"""Copies a CPU FAISS index to a device and returns the device index."""


def gpu_count() -> int:
    """How many GPUs FAISS can use (0 with ``faiss-cpu``)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def make_gpu_converter(device: int = 0) -> GpuConverter:
    """A converter that uploads CPU indexes to GPU ``device`` (one resource pool).

    Raises :class:`ConfigError` when this FAISS build has no GPU support or no
    GPU is visible.
    """
    if not hasattr(faiss, "StandardGpuResources") or gpu_count() == 0:
        raise ConfigError(
            "GPU search asked for, but FAISS sees no GPU (install vidseek[gpu], i.e. "
            "faiss-gpu, on a machine with CUDA)"
        )
    if device >= gpu_count():
        raise ConfigError(f"GPU {device} asked for, but FAISS sees {gpu_count()} GPU(s)")
    resources = faiss.StandardGpuResources()

    def to_gpu(index: Any) -> Any:
        return faiss.index_cpu_to_gpu(resources, device, index)

    return to_gpu


class GpuMirror:
    """A device copy of one CPU index: added to incrementally, re-uploaded after removals."""

    def __init__(self, to_gpu: GpuConverter) -> None:
        self._to_gpu = to_gpu
        self._lock = threading.Lock()
        self._device_index: Any = None
        self.uploads = 0
        self.searches = 0

    @property
    def current(self) -> bool:
        """Whether the device copy reflects the CPU index (no upload needed)."""
        return self._device_index is not None

    def invalidate(self) -> None:
        """Mark the copy stale (after a removal); the next search re-uploads."""
        with self._lock:
            self._device_index = None

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        """Mirror an add that the CPU index just applied (no-op while stale)."""
        with self._lock:
            if self._device_index is not None and len(ids):
                self._device_index.add_with_ids(vectors, ids)

    def search(
        self, cpu_index: Any, query: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Search the device copy, uploading ``cpu_index`` first if the copy is stale.

        The caller must hold the CPU index's read lock, so it cannot change
        during an upload.
        """
        with self._lock:
            if self._device_index is None:
                self._device_index = self._to_gpu(cpu_index)
                self.uploads += 1
            self.searches += 1
            scores, ids = self._device_index.search(query, k)
        return scores, ids
