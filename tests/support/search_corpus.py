"""A small captioned corpus committed straight into a store, for search tests.

Each video is one window of events with real MiniLM embeddings, so the search
tests (unit, on a Store; integration, through a gRPC server) rank real text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from tests.support.storage import span_window
from vidseek.indexer.embedder import Embedder
from vidseek.storage.store import NewEvent, Store

__all__ = ["COLLECTIONS", "CORPUS", "index_videos", "name_of"]

CORPUS: dict[str, list[tuple[float, float, str]]] = {
    "kitchen": [
        (0, 10, "A chef chops onions on a wooden board."),
        (10, 20, "The chef fries the chopped onions in a pan."),
        (20, 30, "The chef plates the dish and serves it."),
        (30, 40, "A dog sleeps on the kitchen floor."),
    ],
    "soccer": [
        (0, 15, "Players warm up on a soccer field."),
        (15, 30, "A player kicks the ball into the goal."),
        (30, 45, "The team celebrates the goal together."),
    ],
    "guitar": [
        (0, 20, "A woman tunes an acoustic guitar."),
        (20, 60, "She plays a song on the guitar and sings."),
    ],
    "concert": [
        (0, 5, "Zorblax appears on a banner above the stage."),
        (5, 30, "A crowd cheers at a rock concert."),
    ],
    "cooking2": [
        (0, 30, "A man cooks onions in a frying pan."),
        (30, 50, "He washes the pan in the sink."),
    ],
}

# The collection of each video of CORPUS; a video not named here has none.
COLLECTIONS: dict[str, str] = {
    "kitchen": "food",
    "cooking2": "food",
    "guitar": "music",
    "concert": "music",
}


def index_videos(
    store: Store,
    embedder: Embedder,
    corpus: Mapping[str, Sequence[tuple[float, float, str]]] = CORPUS,
    collections: Mapping[str, str] = COLLECTIONS,
) -> dict[str, str]:
    """Commit each video's events as one window; returns name -> video id."""
    ids = {}
    for name, events in corpus.items():
        h = hashlib.sha256(name.encode()).hexdigest()
        end = max(e for _, e, _ in events)
        vid = store.upsert_video(
            uri=f"/videos/{name}.mp4",
            content_hash=h,
            duration=end,
            fps=30.0,
            width=320,
            height=180,
            frame_count=int(end * 30),
            collection=collections.get(name, ""),
        )
        vecs = embedder.embed([t for _, _, t in events])
        window = span_window(vid, h, 0, 0.0, end)
        store.commit_window(
            window, [NewEvent(s, e, t, v) for (s, e, t), v in zip(events, vecs, strict=True)]
        )
        ids[name] = vid
    return ids


def name_of(ids: Mapping[str, str], video_id: str) -> str:
    """The corpus name of ``video_id`` (``ids`` as returned by :func:`index_videos`)."""
    return {v: k for k, v in ids.items()}[video_id]
