"""A corpus of few, long videos for search-at-scale tests, with a word-hashing embedder.

Real MiniLM would take minutes to embed 50K events on CI; this embedder gives each
word a fixed random direction and a text the normalised sum of its words, so
texts sharing words are near each other and every result is reproducible.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tests.support.storage import span_window
from vidseek.storage.store import NewEvent, Store

__all__ = ["WORDS", "WordHashEmbedder", "commit_long_videos"]

WORDS = [
    "man",
    "woman",
    "child",
    "dog",
    "horse",
    "ball",
    "guitar",
    "piano",
    "bike",
    "car",
    "boat",
    "kitchen",
    "field",
    "stage",
    "river",
    "runs",
    "jumps",
    "plays",
    "cooks",
    "throws",
    "catches",
    "rides",
    "swims",
    "sings",
    "dances",
    "talks",
    "climbs",
    "paints",
    "red",
    "blue",
    "green",
    "slowly",
    "quickly",
    "together",
    "alone",
    "outside",
    "inside",
]


class WordHashEmbedder:
    """Texts -> normalised sums of per-word random unit vectors (seeded by the word)."""

    def __init__(self, dim: int = 48) -> None:
        self._dim = dim
        self._words: dict[str, npt.NDArray[np.float32]] = {}

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return f"word-hash-{self._dim}"

    def _word(self, w: str) -> npt.NDArray[np.float32]:
        if w not in self._words:
            seed = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "big")
            self._words[w] = np.random.default_rng(seed).normal(size=self._dim).astype(np.float32)
        return self._words[w]

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self._dim), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i] += self._word(w)
            out[i] /= max(float(np.linalg.norm(out[i])), 1e-6)
        return out


def commit_long_videos(
    store: Store,
    embedder: WordHashEmbedder,
    *,
    videos: int = 5,
    events_per_video: int = 10_000,
    window_events: int = 1_000,
    seed: int = 0,
    collections: Sequence[str] = ("a", "a", "b", "", "b"),
) -> dict[str, list[tuple[float, float, str]]]:
    """Commit ``videos`` videos of consecutive 3-second events with random five-word
    texts; returns each video id's events (start, end, text) in time order."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[float, float, str]]] = {}
    for v in range(videos):
        content = hashlib.sha256(f"long-{seed}-{v}".encode()).hexdigest()
        duration = 3.0 * events_per_video
        vid = store.upsert_video(
            uri=f"/videos/long{v}.mp4",
            content_hash=content,
            duration=duration,
            fps=30.0,
            width=640,
            height=360,
            frame_count=int(duration * 30),
            collection=collections[v % len(collections)],
        )
        texts = [" ".join(rng.choice(WORDS, 5)) for _ in range(events_per_video)]
        vecs = embedder.embed(texts)
        events = [(3.0 * i, 3.0 * i + 3.0, t) for i, t in enumerate(texts)]
        for w, at in enumerate(range(0, events_per_video, window_events)):
            part = range(at, min(at + window_events, events_per_video))
            start, end = events[part[0]][0], events[part[-1]][1]
            window = span_window(vid, content, w, start, end)
            store.commit_window(window, [NewEvent(*events[i], vecs[i]) for i in part])
        out[vid] = events
    return out
