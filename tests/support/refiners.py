"""Moment refiners with known answers (test doubles for ``MomentRefiner``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vidseek.server.search import MomentResult

__all__ = ["RaisingRefiner", "ShiftRefiner", "assert_shifted"]


@dataclass
class ShiftRefiner:
    """Refines every moment to the span [start + 1, start + 2] and records each call.

    ``calls`` holds (query, number of moments, seconds left until the deadline).
    """

    calls: list[tuple[str, int, float]] = field(default_factory=list)

    def refine(
        self, query: str, moments: Sequence[MomentResult], deadline: float
    ) -> list[MomentResult]:
        self.calls.append((query, len(moments), deadline - time.monotonic()))
        return [
            replace(
                m,
                start_seconds=m.start_seconds + 1,
                end_seconds=m.start_seconds + 2,
                coarse_start_seconds=m.start_seconds,
                coarse_end_seconds=m.end_seconds,
                refined=True,
            )
            for m in moments
        ]


class RaisingRefiner:
    """A refiner whose model always breaks."""

    def refine(
        self, query: str, moments: Sequence[MomentResult], deadline: float
    ) -> list[MomentResult]:
        raise RuntimeError("the refiner's model fell over")


def assert_shifted(coarse: Sequence[Any], refined: Sequence[Any]) -> None:
    """Each of ``refined`` is its ``coarse`` moment as :class:`ShiftRefiner` refines it.

    Works on server-side ``MomentResult`` and SDK ``Moment`` alike: the span
    moved, the coarse span kept, the rest (video, score, text, events) unchanged.
    """
    assert len(coarse) == len(refined)
    for before, after in zip(coarse, refined, strict=True):
        assert after.refined, after
        assert (after.start_seconds, after.end_seconds) == (
            before.start_seconds + 1,
            before.start_seconds + 2,
        )
        assert (after.coarse_start_seconds, after.coarse_end_seconds) == (
            before.start_seconds,
            before.end_seconds,
        )
        assert (after.video_id, after.score, after.description, after.event_ids) == (
            before.video_id,
            before.score,
            before.description,
            before.event_ids,
        )
