"""Patient-level (cluster) bootstrap confidence intervals for the metrics in :mod:`.metrics`.

Rows of one patient are correlated (many prediction times per patient), so the resampling unit
is the patient, not the row: each replicate draws as many subjects as there are, with
replacement, and every row of a drawn subject comes along as often as the subject was drawn.
A replicate is represented as row weights (the draw count of the row's subject), which scores
exactly like the concatenated resample without copying rows; all replicates of a chunk are
scored at once.

Replicates where the resample holds a single class (AUROC undefined) are skipped for every
metric, and counted in ``n_skipped``. The interval is the percentile interval of the remaining
replicates (95% by default); the estimate is the metric on the original rows. A percentile
interval need not contain the estimate: ECE in particular is biased upward under resampling
(binning noise only adds), so its interval often sits a little above the estimate. Draws are seeded,
and they depend only on the set of subjects: the same subjects and seed give the same draws
whatever the rows, so two models scored on the same patients are resampled identically.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> subjects = np.repeat(np.arange(60), 3)
>>> y = rng.random(180) < 0.3
>>> p = np.clip(0.3 + 0.4 * (y - 0.3) + rng.normal(0, 0.2, 180), 0, 1)
>>> result = cluster_bootstrap(y, p, subjects, n_bootstrap=200, seed=0)
>>> ci = result.intervals["auroc"]
>>> ci.lower <= ci.estimate <= ci.upper
True
>>> result.n_replicates + result.n_skipped
200
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ehrfm.predict.metrics import ScoredRows

DEFAULT_REPLICATES = 1000
_CHUNK_CELLS = 4_000_000  # weights per chunk: replicates x rows (32 MB of float64)


@dataclass(frozen=True)
class MetricInterval:
    """A point estimate with its bootstrap percentile interval."""

    estimate: float
    lower: float
    upper: float

    def to_dict(self) -> dict[str, float | None]:
        """``{"estimate", "lower", "upper"}``, with ``None`` for an undefined (NaN) value."""
        return {k: (None if np.isnan(v) else float(v)) for k, v in vars(self).items()}


@dataclass(frozen=True)
class BootstrapResult:
    """Per-metric intervals plus how many replicates were used and skipped."""

    intervals: dict[str, MetricInterval]
    n_replicates: int
    n_skipped: int
    confidence: float = 0.95
    n_subjects: int = 0
    replicates: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: intervals by metric and the replicate counts."""
        return {
            "intervals": {name: ci.to_dict() for name, ci in self.intervals.items()},
            "n_replicates": self.n_replicates,
            "n_skipped": self.n_skipped,
            "confidence": self.confidence,
            "n_subjects": self.n_subjects,
        }


def subject_index(groups: Any) -> tuple[np.ndarray, np.ndarray]:
    """The distinct subjects (sorted) and, per row, the position of its subject among them.

    >>> subjects, row_subject = subject_index([7, 3, 7, 9])
    >>> subjects.tolist(), row_subject.tolist()
    ([3, 7, 9], [1, 0, 1, 2])
    """
    return np.unique(np.asarray(groups), return_inverse=True)


def subject_draws(
    n_subjects: int, n_bootstrap: int = DEFAULT_REPLICATES, seed: int = 0, *, n_rows: int = 0
) -> Iterator[np.ndarray]:
    """Per replicate, how often each subject was drawn: ``(replicates, n_subjects)`` count chunks.

    Chunks hold about ``4e6 / max(n_rows, n_subjects)`` replicates, which bounds the memory of
    scoring them (``n_rows``: the rows behind the subjects). The draws do not depend on it.

    >>> counts = np.vstack(list(subject_draws(5, n_bootstrap=3, seed=0)))
    >>> counts.shape, counts.sum(axis=1).tolist()
    ((3, 5), [5.0, 5.0, 5.0])
    """
    if n_subjects < 1:
        raise ValueError("cannot bootstrap zero subjects")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_bootstrap, _CHUNK_CELLS // max(n_subjects, n_rows)))
    done = 0
    while done < n_bootstrap:
        size = min(chunk, n_bootstrap - done)
        draws = rng.integers(0, n_subjects, size=(size, n_subjects))
        offsets = (np.arange(size) * n_subjects)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=size * n_subjects)
        yield counts.reshape(size, n_subjects).astype(np.float64)
        done += size


def bootstrap_weights(groups: Any, n_bootstrap: int = DEFAULT_REPLICATES,
                      seed: int = 0) -> Iterator[np.ndarray]:
    """Row-weight matrices ``(replicates, rows)`` of a seeded patient-level bootstrap, in chunks.

    Each replicate draws ``n_subjects`` subjects with replacement; a row's weight is the number of
    times its subject was drawn, so all rows of a subject share one weight. (``cluster_bootstrap``
    scores the subject counts directly; this row view is for inspection and tests.)

    >>> w = np.vstack(list(bootstrap_weights(["a", "a", "b", "c"], n_bootstrap=4, seed=1)))
    >>> w.shape, bool((w[:, 0] == w[:, 1]).all())
    ((4, 4), True)
    """
    subjects, row_subject = subject_index(groups)
    for counts in subject_draws(subjects.size, n_bootstrap, seed, n_rows=row_subject.size):
        yield counts[:, row_subject]


def cluster_bootstrap(
    y_true: Any,
    y_prob: Any,
    groups: Any,
    *,
    n_bootstrap: int = DEFAULT_REPLICATES,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Point estimates and patient-level bootstrap percentile intervals of every metric.

    ``groups`` holds the subject of each row (pass ``np.arange(n)`` for a row-level bootstrap).
    Replicates with a single class are skipped for all metrics; ``n_skipped`` counts them.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    scored = ScoredRows(y_true, y_prob, groups)
    if scored.n_clusters == 0:
        raise ValueError("cannot bootstrap zero rows")
    estimates = {name: float(v[0]) for name, v in scored.metrics(np.ones(scored.n_clusters)).items()}
    kept: dict[str, list[np.ndarray]] = {name: [] for name in estimates}
    n_skipped = 0
    n_rows = int(np.asarray(y_prob).size)
    for counts in subject_draws(scored.n_clusters, n_bootstrap, seed, n_rows=n_rows):
        positives, rows = scored.positives(counts)
        both = (positives > 0) & (positives < rows)
        n_skipped += int((~both).sum())
        if both.any():
            for name, values in scored.metrics(counts[both]).items():
                kept[name].append(values)
    replicates = {name: np.concatenate(v) if v else np.empty(0) for name, v in kept.items()}
    tail = 100 * (1 - confidence) / 2
    intervals = {}
    for name, estimate in estimates.items():
        values = replicates[name]
        values = values[~np.isnan(values)]
        lower, upper = np.percentile(values, [tail, 100 - tail]) if values.size else (np.nan, np.nan)
        intervals[name] = MetricInterval(estimate, float(lower), float(upper))
    return BootstrapResult(
        intervals=intervals,
        n_replicates=n_bootstrap - n_skipped,
        n_skipped=n_skipped,
        confidence=confidence,
        n_subjects=scored.n_clusters,
        replicates=replicates,
    )
