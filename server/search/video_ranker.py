"""A learned video ranking: which candidate video is the one the query describes.

Search scores each candidate video from its best events (see
:mod:`~vidseek.server.search.ranking`). This stage replaces that hand-set score by
a small model learned from data: a linear score over the features below,
standardised, trained *listwise* (softmax cross-entropy over one query's
candidate videos, the right video as the label), then calibrated (Platt scaling)
so that a video's score is the model's probability that it is the right one, in
[0, 1] and comparable across queries.

Features of a candidate video, all from what search already holds for it (its
best ``events_per_video`` events with their cosines and keyword scores, the
index's per-video totals, and its words in SQL), so the stage adds no search and
its cost does not grow with the library (the shipped model uses :data:`EVIDENCE`,
all but ``mean_cosine`` and ``log_events``, with non-negative weights):

``best_relevance``, ``best_cosine``, ``second_cosine``
    the hand-set ranking's evidence: the best event, and the second best (a video
    with two matching events is likelier than one with a single lucky match);
``mean_best_cosine``, ``mean_cosine``
    mean cosine of its best ``mean_of_best`` events, and of all its fetched events;
``context_cosine``
    cosine of the query with the mean vector of all the video's events (the video
    as a whole: what it is about, beyond any one event);
``log_events``
    log of the video's event count (long videos match more queries by chance);
``best_keyword``, ``keyword_events``
    its best relative keyword score, and log(1 + its events returned by the
    keyword leg);
``term_share``
    the idf-weighted share of the query's content words found anywhere in the
    video's events (:func:`~vidseek.storage.terms.term_share`);
``relevance_gap``, ``context_gap``, ``term_share_gap``
    its best relevance, context cosine and word share minus the best of the
    candidates (the margin to the query's best candidate).

The trained weights live in ``video_ranker.json`` beside this module (about
1 KB), rebuilt by ``python benchmarks/train_video_ranker.py`` from the
ActivityNet Captions *training* annotations, disjoint from the benchmark's videos.
Training is deterministic: full-batch gradient descent on a convex loss from zero
weights, in numpy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vidseek.server.search.ranking import RankingParams, relevance
from vidseek.server.search.types import ScoredEvent
from vidseek.storage.errors import ConfigError

__all__ = [
    "EVIDENCE",
    "FEATURES",
    "VideoFacts",
    "VideoRanker",
    "default_ranker",
    "features",
    "fit",
]

FEATURES = (
    "best_relevance",
    "best_cosine",
    "second_cosine",
    "mean_best_cosine",
    "mean_cosine",
    "context_cosine",
    "log_events",
    "best_keyword",
    "keyword_events",
    "relevance_gap",
    "context_gap",
    "term_share",
    "term_share_gap",
)
"""Every feature :func:`features` computes, in column order."""

EVIDENCE = tuple(f for f in FEATURES if f not in ("mean_cosine", "log_events"))
"""The features the shipped model uses: each one can only rise with better evidence
for the video (its events, its mean vector or its words matching the query better).
Trained with non-negative weights on them, a video whose evidence all improves
never scores lower. ``mean_cosine`` and ``log_events`` are left out: they depend on
how long a video is and how densely it is captioned, which differ between the
training data (ActivityNet: a few events per video) and hours of video."""

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class VideoFacts:
    """What the store knows of a whole video, for one query."""

    event_count: int
    context_cosine: float
    """Cosine of the query with the (normalised) sum of the video's event vectors."""
    term_share: float = 0.0
    """Idf-weighted share of the query's content words found in the video's events."""


def features(
    by_video: Mapping[str, Sequence[ScoredEvent]],
    facts: Mapping[str, VideoFacts],
    params: RankingParams,
) -> tuple[list[str], Matrix]:
    """The candidate videos (sorted) and their :data:`FEATURES`, one row each.

    ``by_video`` holds each candidate's scored events (at least its best
    ``params.mean_of_best``); ``facts`` its whole-video facts (a video missing there, as
    one deleted meanwhile, counts its fetched events and their mean cosine).
    """
    videos = sorted(by_video)
    rows = np.zeros((len(videos), len(FEATURES)))
    for row, video in zip(rows, videos, strict=True):
        items = by_video[video]
        cosines = sorted((e.cosine for e in items), reverse=True)
        keywords = [e.keyword for e in items]
        best_relevance = max(relevance(e, params) for e in items)
        fact = facts.get(video) or VideoFacts(len(items), sum(cosines) / len(cosines))
        row[:9] = (
            best_relevance,
            cosines[0],
            cosines[1] if len(cosines) > 1 else cosines[0],
            sum(cosines[: params.mean_of_best]) / len(cosines[: params.mean_of_best]),
            sum(cosines) / len(cosines),
            fact.context_cosine,
            math.log(max(fact.event_count, len(items))),
            max(keywords),
            math.log1p(sum(k > 0 for k in keywords)),
        )
        row[11] = fact.term_share
    if len(videos):
        rows[:, 9] = rows[:, 0] - rows[:, 0].max()
        rows[:, 10] = rows[:, 5] - rows[:, 5].max()
        rows[:, 12] = rows[:, 11] - rows[:, 11].max()
    return videos, rows


@dataclass(frozen=True)
class VideoRanker:
    """A calibrated linear score over named features (see the module doc)."""

    feature_names: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    slope: float = 1.0
    intercept: float = 0.0
    trained_on: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.feature_names) - set(FEATURES)
        if unknown:
            raise ConfigError(f"video ranker uses unknown features: {', '.join(sorted(unknown))}")
        n = len(self.feature_names)
        if not n or not (len(self.mean) == len(self.scale) == len(self.weights) == n):
            raise ConfigError(
                f"video ranker has {n} features but {len(self.mean)} means, "
                f"{len(self.scale)} scales and {len(self.weights)} weights"
            )
        if min(self.scale) <= 0 or not all(map(math.isfinite, self._numbers())):
            raise ConfigError("video ranker holds a non-finite number or a scale <= 0")

    def _numbers(self) -> list[float]:
        return [*self.mean, *self.scale, *self.weights, self.slope, self.intercept]

    @property
    def columns(self) -> list[int]:
        """Columns of :func:`features`' matrix this model reads."""
        return [FEATURES.index(f) for f in self.feature_names]

    def logits(self, matrix: Matrix) -> Matrix:
        """The uncalibrated scores of the rows of a :func:`features` matrix."""
        x = (matrix[:, self.columns] - np.array(self.mean)) / np.array(self.scale)
        out: Matrix = x @ np.array(self.weights)
        return out

    def scores(self, matrix: Matrix) -> Matrix:
        """Calibrated scores in [0, 1] (same order as :meth:`logits`)."""
        return _sigmoid(self.slope * self.logits(matrix) + self.intercept)

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.feature_names),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "weights": list(self.weights),
            "slope": self.slope,
            "intercept": self.intercept,
            "trained_on": self.trained_on,
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> VideoRanker:
        """Read a ranker written by :meth:`save`; ConfigError naming the file if unusable."""
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read the video ranker {path}: {exc}") from exc

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VideoRanker:
        return cls(
            feature_names=tuple(str(f) for f in data["features"]),
            mean=tuple(float(v) for v in data["mean"]),
            scale=tuple(float(v) for v in data["scale"]),
            weights=tuple(float(v) for v in data["weights"]),
            slope=float(data.get("slope", 1.0)),
            intercept=float(data.get("intercept", 0.0)),
            trained_on=str(data.get("trained_on", "")),
        )


def default_ranker() -> VideoRanker:
    """The ranker shipped with vidseek (``video_ranker.json``)."""
    text = resources.files("vidseek.server.search").joinpath("video_ranker.json").read_text()
    return VideoRanker.from_json(json.loads(text))


def fit(
    lists: Sequence[tuple[Matrix, int]],
    feature_names: Sequence[str] = EVIDENCE,
    *,
    nonnegative: bool = True,
    l2: float = 1e-3,
    steps: int = 3000,
    trained_on: str = "",
) -> VideoRanker:
    """Train a ranker on queries' candidate lists: (features matrix, row of the right video).

    Lists whose right video is not among the candidates (label < 0) teach nothing
    and are skipped. ``nonnegative`` keeps every weight >= 0 (see :data:`EVIDENCE`).
    Deterministic: the loss is convex and (projected) descent starts at zero.
    """
    columns = [FEATURES.index(f) for f in feature_names]
    kept = [(m[:, columns], label) for m, label in lists if 0 <= label < len(m)]
    if not kept:
        raise ValueError("no candidate list holds its right video: nothing to learn from")
    pooled = np.concatenate([m for m, _ in kept])
    mean = pooled.mean(0)
    scale = pooled.std(0)
    scale[scale < 1e-9] = 1.0
    width = max(len(m) for m, _ in kept)
    x = np.zeros((len(kept), width, len(columns)))
    mask = np.full((len(kept), width), -np.inf)
    for i, (m, _) in enumerate(kept):
        x[i, : len(m)] = (m - mean) / scale
        mask[i, : len(m)] = 0.0
    labels = np.array([label for _, label in kept])
    rows = np.arange(len(kept))

    def softmax(w: Matrix) -> Matrix:
        z = x @ w + mask
        z -= z.max(1, keepdims=True)
        p: Matrix = np.exp(z)
        out: Matrix = p / p.sum(1, keepdims=True)
        return out

    w = np.zeros(len(columns))
    velocity = np.zeros_like(w)
    rate, momentum = 0.1, 0.9
    for _ in range(steps):  # Nesterov momentum on the mean listwise cross-entropy
        ahead = w + momentum * velocity
        p = softmax(ahead)
        p[rows, labels] -= 1.0
        grad = np.einsum("qc,qcf->f", p, x) / len(kept) + 2 * l2 * ahead
        velocity = momentum * velocity - rate * grad
        w = w + velocity
        if nonnegative:
            velocity = np.where(w < 0, 0.0, velocity)
            w = np.maximum(w, 0.0)
    slope, intercept = _calibrate(x, mask, labels, w)
    return VideoRanker(
        feature_names=tuple(feature_names),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        weights=tuple(float(v) for v in w),
        slope=slope,
        intercept=intercept,
        trained_on=trained_on,
    )


def _calibrate(x: Matrix, mask: Matrix, labels: Any, w: Matrix) -> tuple[float, float]:
    """Platt scaling: a, b with sigmoid(a * logit + b) ~ P(right video), over all candidates."""
    valid = np.isfinite(mask)
    logits = (x @ w)[valid]
    target = np.zeros_like(mask)
    target[np.arange(len(labels)), labels] = 1.0
    y = target[valid]

    def loss(a: float, b: float) -> float:
        z = a * logits + b
        return float((np.logaddexp(0.0, z) - y * z).sum())

    a, b = 1.0, 0.0
    for _ in range(100):  # Newton steps with backtracking on the 2-parameter logistic loss
        p = _sigmoid(a * logits + b)
        r = p * (1 - p) + 1e-12
        grad = np.array([((p - y) * logits).sum(), (p - y).sum()])
        hess = np.array(
            [[(r * logits * logits).sum(), (r * logits).sum()], [(r * logits).sum(), r.sum()]]
        )
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        t, before = 1.0, loss(a, b)
        while t > 1e-6 and loss(a - t * step[0], b - t * step[1]) > before:
            t /= 2
        a, b = a - t * step[0], b - t * step[1]
        if abs(t * step).max() < 1e-9:
            break
    return float(a), float(b)


def _sigmoid(z: Matrix) -> Matrix:
    out: Matrix = np.exp(-np.logaddexp(0.0, -z))
    return out
