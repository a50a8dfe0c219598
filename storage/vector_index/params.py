"""Index kinds and their parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from vidseek.storage.errors import ConfigError

__all__ = ["INDEX_KINDS", "IVF_ENCODINGS", "AutoParams", "HnswParams", "IvfParams"]

INDEX_KINDS = ("auto", "flat", "hnsw", "ivf")
IVF_ENCODINGS = ("flat", "sq8")
MIN_POINTS_PER_LIST = 39  # below this FAISS k-means warns and cells come out poor


@dataclass(frozen=True)
class HnswParams:
    """Build and search parameters of the ``hnsw`` index kind.

    ``m``: graph degree (memory ~ 8*m bytes per vector on top of the vector);
    ``ef_construction``: build beam width (build time vs graph quality);
    ``ef_search``: search beam width (latency vs recall; raised to ``k`` if lower);
    ``max_dead_fraction``: share of tombstoned nodes that triggers a rebuild.
    """

    m: int = 32
    ef_construction: int = 40
    ef_search: int = 256
    max_dead_fraction: float = 0.2

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values FAISS would reject or misuse."""
        if self.m < 4 or self.ef_construction < 1 or self.ef_search < 1:
            raise ConfigError(f"HNSW parameters out of range: {self}")
        if not 0.0 < self.max_dead_fraction <= 1.0:
            raise ConfigError(f"max_dead_fraction must be in (0, 1], got {self.max_dead_fraction}")


@dataclass(frozen=True)
class IvfParams:
    """Training and search parameters of the ``ivf`` index kind.

    ``nlist``: number of k-means cells (fixed at training; search cost grows with
    N/nlist); ``nprobe``: cells scanned per search (latency vs recall; capped at
    ``nlist``); ``train_per_list``: training sample size per cell (FAISS wants at
    least 39; the index answers exactly until it holds ``39 * nlist`` vectors);
    ``niter``: k-means iterations; ``seed``: seeds the sample and k-means, so the
    same vectors always give the same cells; ``encoding``: how the cells store
    vectors, ``"flat"`` (float32, exact scores) or ``"sq8"`` (8-bit scalar
    quantisation per dimension: a quarter of the memory, scores within ~1e-3).
    """

    nlist: int = 1024
    nprobe: int = 32
    train_per_list: int = 64
    niter: int = 10
    seed: int = 1234
    encoding: str = "flat"

    @property
    def train_threshold(self) -> int:
        """Vectors needed before the index trains (FAISS's minimum per cell, 39)."""
        return MIN_POINTS_PER_LIST * self.nlist

    @property
    def factory(self) -> str:
        """The FAISS ``index_factory`` string of the trained index."""
        return f"IVF{self.nlist},{'SQ8' if self.encoding == 'sq8' else 'Flat'}"

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values FAISS would reject or misuse."""
        if self.nlist < 1 or self.nprobe < 1 or self.niter < 1:
            raise ConfigError(f"IVF parameters out of range: {self}")
        if self.train_per_list < MIN_POINTS_PER_LIST:
            raise ConfigError(
                f"train_per_list must be >= {MIN_POINTS_PER_LIST}, got {self.train_per_list}"
            )
        if self.encoding not in IVF_ENCODINGS:
            raise ConfigError(
                f"IVF encoding must be one of {', '.join(IVF_ENCODINGS)}, got {self.encoding!r}"
            )


@dataclass(frozen=True)
class AutoParams:
    """The ``auto`` index kind: exact while small, IVF with 8-bit codes once large.

    Below ``threshold`` live vectors the index is flat (exact). The index trains
    once it holds ``threshold``, with ``nlist`` about ``4 * sqrt(N)`` cells (a
    power of two, at least ``min_nlist``) and ``nprobe`` a ``probe_fraction`` of
    them, on 8-bit scalar-quantised vectors; it trains again (more cells) when
    the corpus has grown ``regrow`` times since. The defaults come from
    ``benchmarks/index_recall.py`` (recall@10 against flat on MiniLM caption
    embeddings; see the README).
    """

    threshold: int = 50_000
    probe_fraction: float = 1 / 16
    min_nlist: int = 256
    max_nlist: int = 16_384
    regrow: float = 4.0

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values out of range."""
        if self.threshold < MIN_POINTS_PER_LIST * self.min_nlist:
            raise ConfigError(
                f"auto index threshold {self.threshold} is below the {MIN_POINTS_PER_LIST} "
                f"vectors per cell that {self.min_nlist} cells need"
            )
        if not 0 < self.probe_fraction <= 1 or self.regrow <= 1:
            raise ConfigError(f"auto index parameters out of range: {self}")
        if not 1 <= self.min_nlist <= self.max_nlist:
            raise ConfigError(f"auto index parameters out of range: {self}")

    def ivf_for(self, n: int, base: IvfParams) -> IvfParams:
        """The IVF parameters for a corpus of ``n`` vectors (``base`` gives the rest)."""
        want = 4 * math.sqrt(max(n, 1))
        nlist = 1 << max(0, round(math.log2(want)))
        nlist = max(self.min_nlist, min(self.max_nlist, nlist))
        while nlist > self.min_nlist and n < MIN_POINTS_PER_LIST * nlist:
            nlist //= 2
        nprobe = max(1, math.ceil(nlist * self.probe_fraction))
        return replace(base, nlist=nlist, nprobe=nprobe, encoding="sq8")
