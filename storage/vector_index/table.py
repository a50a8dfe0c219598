"""The event table: what ranking needs of each indexed event, as arrays beside FAISS.

FAISS stores *slots* (0, 1, 2, ... in order of arrival), not event ids: a slot
is a row of this table, which holds the event's id, its video (as a small
integer code) and its span. A search result is then described by array lookups,
without SQL, and a filter on videos or time becomes a bitmap over slots that
FAISS checks in O(1) per candidate (``IDSelectorBitmap``).

Slots are never reused: a removed event's row is cleared and stays a hole until
the index is rebuilt (a rebuild numbers the slots afresh). Event id -> slot goes
through a sorted copy of the live ids (``searchsorted``): 12 bytes per event,
no Python objects.

Memory: 28 bytes per slot plus 12 per live event (40 MB at 1M events).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["EventFilter", "EventTable"]

IdArray = npt.NDArray[np.int64]
_NO_VIDEO = -1


@dataclass(frozen=True)
class EventFilter:
    """Which events a search may return.

    ``video_ids``: only events of these videos (``None``: any video);
    ``start``/``end``: only events overlapping ``[start, end]`` seconds of their
    video (``None``: unbounded on that side).
    """

    video_ids: Collection[str] | None = None
    start: float | None = None
    end: float | None = None

    @property
    def unbounded(self) -> bool:
        """True when the filter admits every event."""
        return self.video_ids is None and self.start is None and self.end is None


class EventTable:
    """Slot-indexed columns (event id, video, start, end) and the id -> slot map.

    Not thread-safe: the owning index guards it with its readers-writer lock.
    """

    def __init__(self) -> None:
        self.size = 0
        """Slots handed out so far (live ones and holes)."""
        self.event_id = np.empty(0, np.int64)
        self.video = np.empty(0, np.int32)
        self.start = np.empty(0, np.float64)
        self.end = np.empty(0, np.float64)
        self.names: list[str] = []
        """Video id of each video code."""
        self._codes: dict[str, int] = {}
        self._sorted_ids = np.empty(0, np.int64)
        self._sorted_slots = np.empty(0, np.int64)

    @property
    def live(self) -> int:
        """Number of live events."""
        return len(self._sorted_ids)

    @property
    def holes(self) -> int:
        """Slots of removed events."""
        return self.size - self.live

    def ids(self) -> IdArray:
        """The live event ids, sorted."""
        return self._sorted_ids.copy()

    # ---- lookups -----------------------------------------------------------------

    def lookup(self, ids: IdArray) -> IdArray:
        """The slot of each event id, -1 where it is not live."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not len(self._sorted_ids) or not len(ids):
            return np.full(len(ids), -1, np.int64)
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
        found = self._sorted_ids[pos] == ids
        return np.where(found, self._sorted_slots[pos], -1)

    def video_ids(self, slots: IdArray) -> list[str]:
        """The video id of each (live) slot."""
        names = self.names
        return [names[c] for c in self.video[slots].tolist()]

    def codes(self, video_ids: Collection[str]) -> npt.NDArray[np.int32]:
        """Codes of the known ``video_ids`` (unknown ones have no events here)."""
        codes = self._codes
        return np.fromiter(
            (c for v in video_ids if (c := codes.get(v)) is not None), dtype=np.int32
        )

    def known(self, video_ids: Collection[str]) -> tuple[list[str], npt.NDArray[np.int32]]:
        """The ``video_ids`` this table has seen, and their codes."""
        pairs = [(v, c) for v in video_ids if (c := self._codes.get(v)) is not None]
        return [v for v, _ in pairs], np.array([c for _, c in pairs], dtype=np.int32)

    def mask(self, where: EventFilter) -> npt.NDArray[np.bool_]:
        """Boolean per slot: live and admitted by ``where``."""
        n = self.size
        keep: npt.NDArray[np.bool_]
        if where.video_ids is None:
            keep = self.video[:n] != _NO_VIDEO
        else:
            lut = np.zeros(len(self.names) + 1, np.bool_)  # the extra entry serves code -1
            lut[self.codes(where.video_ids)] = True
            keep = lut[self.video[:n]]
        if where.start is not None:
            keep &= self.end[:n] >= where.start
        if where.end is not None:
            keep &= self.start[:n] <= where.end
        return keep

    # ---- changes -----------------------------------------------------------------

    def append(
        self,
        ids: IdArray,
        video_ids: Sequence[str],
        start: npt.ArrayLike,
        end: npt.ArrayLike,
    ) -> IdArray:
        """New slots for events not yet live (the caller removes old ones first)."""
        m = len(ids)
        if not (len(video_ids) == m == np.size(start) == np.size(end)):
            raise ValueError(
                f"{m} ids but {len(video_ids)} videos, {np.size(start)} starts and "
                f"{np.size(end)} ends"
            )
        slots = np.arange(self.size, self.size + m, dtype=np.int64)
        if not m:
            return slots
        self._reserve(self.size + m)
        codes = self._codes
        for v in video_ids:
            if v not in codes:
                codes[v] = len(self.names)
                self.names.append(v)
        self.event_id[slots] = ids
        self.video[slots] = [codes[v] for v in video_ids]
        self.start[slots] = start
        self.end[slots] = end
        self.size += m
        order = np.argsort(ids, kind="stable")
        at = np.searchsorted(self._sorted_ids, ids[order])
        self._sorted_ids = np.insert(self._sorted_ids, at, ids[order])
        self._sorted_slots = np.insert(self._sorted_slots, at, slots[order])
        return slots

    def release(self, slots: IdArray) -> None:
        """Clear the rows of ``slots`` (live slots of removed events)."""
        if not len(slots):
            return
        at = np.searchsorted(self._sorted_ids, self.event_id[slots])
        self._sorted_ids = np.delete(self._sorted_ids, at)
        self._sorted_slots = np.delete(self._sorted_slots, at)
        self.event_id[slots] = -1
        self.video[slots] = _NO_VIDEO

    def _reserve(self, n: int) -> None:
        if n <= len(self.event_id):
            return
        cap = max(n, 2 * len(self.event_id), 1024)
        for name, fill in (("event_id", -1), ("video", _NO_VIDEO), ("start", 0.0), ("end", 0.0)):
            old = getattr(self, name)
            new = np.full(cap, fill, dtype=old.dtype)
            new[: self.size] = old[: self.size]
            setattr(self, name, new)

    # ---- serialisation -----------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The columns of the used slots, for a snapshot (names go in its header)."""
        n = self.size
        return b"".join(a[:n].tobytes() for a in (self.event_id, self.video, self.start, self.end))

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, size: int, names: list[str]) -> EventTable:
        """Inverse of :meth:`to_bytes`; ValueError if the sizes disagree."""
        if len(data) != size * 28:
            raise ValueError(f"{size} table slots need {size * 28} bytes, got {len(data)}")
        out = cls()
        out.event_id = np.frombuffer(data, np.int64, size, 0).copy()
        out.video = np.frombuffer(data, np.int32, size, 8 * size).copy()
        out.start = np.frombuffer(data, np.float64, size, 12 * size).copy()
        out.end = np.frombuffer(data, np.float64, size, 20 * size).copy()
        out.size = size
        out.names = list(names)
        out._codes = {v: i for i, v in enumerate(out.names)}
        if len(out._codes) != len(out.names):
            raise ValueError("duplicate video ids in the event table")
        if len(out.video) and (out.video.max(initial=-1) >= len(out.names) or out.video.min() < -1):
            raise ValueError("event table holds an unknown video code")
        live = np.flatnonzero(out.video != _NO_VIDEO)
        order = np.argsort(out.event_id[live], kind="stable")
        out._sorted_slots = live[order].astype(np.int64)
        out._sorted_ids = out.event_id[out._sorted_slots]
        if len(out._sorted_ids) > 1 and not (np.diff(out._sorted_ids) > 0).all():
            raise ValueError("event table holds an event id twice")
        return out
