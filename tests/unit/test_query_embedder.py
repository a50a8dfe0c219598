"""QueryEmbedder: cached repeats, concurrent queries embedded in shared batches."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from tests.support.long_videos import WordHashEmbedder
from vidseek.indexer.embedder import QueryEmbedder


class SlowEmbedder(WordHashEmbedder):
    """Records each call's batch; takes ``delay`` seconds per call (one at a time)."""

    def __init__(self, delay: float = 0.05, fail_on: str = "") -> None:
        super().__init__()
        self.calls: list[list[str]] = []
        self.delay = delay
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            self.calls.append(list(texts))
            time.sleep(self.delay)
            if self.fail_on in texts:
                raise RuntimeError(f"cannot embed {self.fail_on!r}")
            return super().embed(texts)


def test_concurrent_queries_share_model_calls_and_get_their_own_vectors():
    inner = SlowEmbedder()
    q = QueryEmbedder(inner, cache_size=0)
    texts = [f"dog {w} runs" for w in ("red", "blue", "green", "river", "stage", "field")] * 3
    texts = [f"{t} {i}" for i, t in enumerate(texts)]
    out: dict[str, np.ndarray] = {}

    def one(t: str) -> None:
        out[t] = q.embed([t])

    threads = [threading.Thread(target=one, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q.close()
    assert len(inner.calls) < len(texts) and max(map(len, inner.calls)) > 1
    assert sorted(t for c in inner.calls for t in c) == sorted(texts)
    reference = WordHashEmbedder()
    for t, v in out.items():
        assert v.shape == (1, reference.dim)
        np.testing.assert_allclose(v[0], reference.embed([t])[0], rtol=1e-6)


def test_repeated_queries_come_from_the_cache_and_the_oldest_is_evicted():
    inner = SlowEmbedder(delay=0)
    q = QueryEmbedder(inner, cache_size=2)
    a = q.embed(["a dog"])
    a[0, 0] = 42.0  # callers get copies: the cache is not theirs to change
    assert q.embed(["a dog"])[0, 0] != 42.0 and len(inner.calls) == 1
    q.embed(["a cat"])
    q.embed(["a horse"])  # evicts "a dog"
    q.embed(["a dog"])
    assert [c[0] for c in inner.calls] == ["a dog", "a cat", "a horse", "a dog"]
    assert (q.hits, q.misses) == (1, 4)
    # A batch of texts (ingestion) bypasses both.
    assert q.embed(["x", "y"]).shape == (2, inner.dim) and inner.calls[-1] == ["x", "y"]
    q.close()


def test_a_failing_batch_fails_each_of_its_queries_and_the_worker_goes_on():
    q = QueryEmbedder(SlowEmbedder(delay=0, fail_on="poison"), cache_size=0)
    with pytest.raises(RuntimeError, match="poison"):
        q.embed(["poison"])
    assert q.embed(["a dog"]).shape == (1, 48)
    q.close()


def test_onnx_backend_gives_the_torch_vectors(embedder):
    from vidseek.indexer.embedder import SentenceTransformerEmbedder

    assert embedder.backend == "onnx"
    torch_embedder = SentenceTransformerEmbedder(device="cpu", backend="torch")
    assert torch_embedder.backend == "torch"
    texts = ["a man opens the front door", "x", "the chef fries onions " * 80, "日本語です"]
    a, b = embedder.embed(texts), torch_embedder.embed(texts)
    assert a.shape == b.shape == (4, embedder.dim)
    assert (np.sum(a * b, axis=1) > 0.9999).all()
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="backend"):
        SentenceTransformerEmbedder(device="cpu", backend="tensorrt")
