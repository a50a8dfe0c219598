"""The FAISS vector index and the event table beside it (see :mod:`.index`).

``index``: :class:`VectorIndex`, its kinds and its searches; ``table``: the
per-event columns FAISS results are described with; ``params``: the kinds'
parameters; ``snapshot``: the on-disk format.
"""

from vidseek.storage.vector_index.index import EXACT_FILTER_LIMIT, EventHits, VectorIndex
from vidseek.storage.vector_index.params import INDEX_KINDS, AutoParams, HnswParams, IvfParams
from vidseek.storage.vector_index.snapshot import SnapshotError
from vidseek.storage.vector_index.table import EventFilter, EventTable

__all__ = [
    "EXACT_FILTER_LIMIT",
    "INDEX_KINDS",
    "AutoParams",
    "EventFilter",
    "EventHits",
    "EventTable",
    "HnswParams",
    "IvfParams",
    "SnapshotError",
    "VectorIndex",
]
