"""Binary-prediction metrics: AUROC, AUPRC (average precision), Brier score, calibration error.

Every metric takes labels ``y_true`` (0/1 or bool), predicted probabilities ``y_prob`` and
optional non-negative ``sample_weight``. A weight of ``k`` counts a row ``k`` times, which is
how the patient-level bootstrap (:mod:`ehrfm.evaluate.bootstrap`) represents a resample without
copying rows. ``ScoredRows`` sorts and summarises the rows once (per cluster, e.g. per patient)
and then scores a whole ``(replicates, clusters)`` weight matrix at once; ``batch_metrics`` and
the scalar functions are thin wrappers around it. Values agree with
scikit-learn's ``roc_auc_score``, ``average_precision_score`` and ``brier_score_loss``
(ties included); the tests check it.

Expected calibration error (ECE) uses 10 equal-width bins over [0, 1]: bin ``b`` holds the
probabilities in ``[b/10, (b+1)/10)`` (the last bin also holds 1.0), and
``ECE = sum_b (n_b / n) * |mean label in b - mean probability in b|``. Empty bins add nothing.

>>> y = [0, 0, 1, 1]
>>> p = [0.1, 0.4, 0.35, 0.8]
>>> auroc(y, p)
0.75
>>> round(auprc(y, p), 4)
0.8333
>>> round(brier_score(y, p), 4)
0.1581
>>> round(expected_calibration_error(y, p), 4)  # (0.1 + 0.4 + 0.65 + 0.2) / 4, one row per bin
0.3375
>>> {k: round(v, 3) for k, v in binary_metrics(y, p).items()}
{'auroc': 0.75, 'auprc': 0.833, 'brier': 0.158, 'ece': 0.337}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

ECE_BINS = 10
METRIC_NAMES: tuple[str, ...] = ("auroc", "auprc", "brier", "ece")


def _as_arrays(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"y_true and y_prob must be 1-D and of equal length, got {y.shape} and {p.shape}")
    if y.dtype != bool and not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must be 0/1 or boolean, got values {np.unique(y)[:5].tolist()}")
    if not np.isfinite(p).all():
        raise ValueError("y_prob holds NaN or infinite values")
    return y.astype(np.float64), p


def calibration_bins(y_prob: Any, n_bins: int = ECE_BINS) -> np.ndarray:
    """Equal-width bin index of each probability: ``[b/n, (b+1)/n)``, with 1.0 in the last bin.

    >>> calibration_bins([0.0, 0.05, 0.1, 0.99, 1.0]).tolist()
    [0, 0, 1, 9, 9]
    """
    p = np.asarray(y_prob, dtype=np.float64)
    return np.clip(np.floor(p * n_bins).astype(np.int64), 0, n_bins - 1)


class ScoredRows:
    """Labels and probabilities summarised per cluster, ready to be scored under many weightings.

    ``groups`` assigns each row to a cluster (default: each row its own). ``metrics(weights)``
    takes one weight per cluster and replicate, shape ``(replicates, n_clusters)``, and gives
    every metric per replicate, as if each row of cluster ``c`` appeared ``weights[r, c]`` times.
    All rows are sorted once; a weighting costs sparse products over the rows, which is what
    makes a 1000-replicate bootstrap cheap.

    >>> rows = ScoredRows([0, 1, 1, 0], [0.2, 0.9, 0.3, 0.4], groups=["a", "a", "b", "b"])
    >>> rows.n_clusters
    2
    >>> rows.metrics(np.array([[1.0, 1.0], [2.0, 0.0]]))["auroc"].tolist()
    [0.75, 1.0]
    """

    def __init__(self, y_true: Any, y_prob: Any, groups: Any = None, n_bins: int = ECE_BINS) -> None:
        y, p = _as_arrays(y_true, y_prob)
        n = y.size
        if groups is None:
            cluster = np.arange(n)
            self.n_clusters = n
        else:
            groups = np.asarray(groups)
            if groups.shape != (n,):
                raise ValueError(f"groups must have one entry per row ({n}), got shape {groups.shape}")
            _, cluster = np.unique(groups, return_inverse=True)
            self.n_clusters = int(cluster.max()) + 1 if n else 0
        # tie groups of equal probability, in descending order
        order = np.argsort(-p, kind="mergesort")
        sorted_p = p[order]
        tie = np.empty(n, dtype=np.int64)
        tie[order] = np.cumsum(np.r_[True, sorted_p[1:] != sorted_p[:-1]]) - 1 if n else []
        n_ties = int(tie.max()) + 1 if n else 0
        shape = (self.n_clusters, n_ties)
        # per cluster x tie group: positive and negative rows (sparse; at most one cell per row)
        self._pos = sp.csr_matrix((y, (cluster, tie)), shape=shape)
        self._neg = sp.csr_matrix((1.0 - y, (cluster, tie)), shape=shape)
        self._rows = np.bincount(cluster, minlength=self.n_clusters).astype(np.float64)
        self._positives = np.bincount(cluster, weights=y, minlength=self.n_clusters)
        self._squared_error = np.bincount(cluster, weights=(p - y) ** 2, minlength=self.n_clusters)
        gap = np.zeros((self.n_clusters, n_bins))
        np.add.at(gap, (cluster, calibration_bins(p, n_bins)), y - p)
        self._bin_gap = gap

    def _weights(self, weights: Any) -> np.ndarray:
        w = np.ones((1, self.n_clusters)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.ndim == 1:
            w = w[None, :]
        if w.ndim != 2 or w.shape[1] != self.n_clusters:
            raise ValueError(f"weights must have shape (n,) or (replicates, n) with n={self.n_clusters}, "
                             f"got {w.shape}")
        if (w < 0).any():
            raise ValueError("weights must be non-negative")
        return w

    def positives(self, weights: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Weighted positive count and weighted row count per replicate."""
        w = self._weights(weights)
        return w @ self._positives, w @ self._rows

    def metrics(self, weights: Any = None, names: tuple[str, ...] = METRIC_NAMES) -> dict[str, np.ndarray]:
        """``{name: values per replicate}``; NaN where a metric is undefined for a replicate."""
        w = self._weights(weights)
        total_pos, total = self.positives(w)
        total_neg = total - total_pos
        out: dict[str, np.ndarray] = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            if "auroc" in names or "auprc" in names:
                # (tie groups x clusters) @ (clusters x replicates), transposed: replicates x tie groups
                pos = np.asarray((self._pos.T @ w.T).T)
                neg = np.asarray((self._neg.T @ w.T).T)
                if "auroc" in names:
                    # descending order: the negatives strictly below a group come after it
                    neg_below = total_neg[:, None] - np.cumsum(neg, axis=1)
                    concordant = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
                    both = (total_pos > 0) & (total_neg > 0)
                    out["auroc"] = np.where(both, concordant / (total_pos * total_neg), np.nan)
                if "auprc" in names:
                    tp = np.cumsum(pos, axis=1)
                    predicted = tp + np.cumsum(neg, axis=1)
                    precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1.0), 0.0)
                    out["auprc"] = np.where(total_pos > 0, (pos * precision).sum(axis=1) / total_pos, np.nan)
            if "brier" in names:
                out["brier"] = np.where(total > 0, (w @ self._squared_error) / total, np.nan)
            if "ece" in names:
                out["ece"] = np.where(total > 0, np.abs(w @ self._bin_gap).sum(axis=1) / total, np.nan)
        return {name: out[name] for name in names}


def batch_metrics(y_true: Any, y_prob: Any, weights: Any = None, *,
                  groups: Any = None) -> dict[str, np.ndarray]:
    """Every metric in ``METRIC_NAMES`` per weight row, as ``{name: array of shape (replicates,)}``.

    ``weights`` has one column per row, or per cluster when ``groups`` is given.
    """
    return ScoredRows(y_true, y_prob, groups).metrics(weights)


def _one(name: str, y_true: Any, y_prob: Any, sample_weight: Any) -> float:
    return float(ScoredRows(y_true, y_prob).metrics(sample_weight, names=(name,))[name][0])


def auroc(y_true: Any, y_prob: Any, sample_weight: Any = None) -> float:
    """Area under the ROC curve (NaN with a single class). Equals sklearn's ``roc_auc_score``."""
    return _one("auroc", y_true, y_prob, sample_weight)


def auprc(y_true: Any, y_prob: Any, sample_weight: Any = None) -> float:
    """Average precision (NaN without positives). Equals sklearn's ``average_precision_score``."""
    return _one("auprc", y_true, y_prob, sample_weight)


def brier_score(y_true: Any, y_prob: Any, sample_weight: Any = None) -> float:
    """Mean squared difference between probability and label. Equals sklearn's ``brier_score_loss``."""
    return _one("brier", y_true, y_prob, sample_weight)


def expected_calibration_error(
    y_true: Any, y_prob: Any, sample_weight: Any = None, n_bins: int = ECE_BINS
) -> float:
    """ECE over ``n_bins`` equal-width probability bins (10 by default; see the module docstring)."""
    return float(ScoredRows(y_true, y_prob, n_bins=n_bins).metrics(sample_weight, names=("ece",))["ece"][0])


def binary_metrics(y_true: Any, y_prob: Any, sample_weight: Any = None) -> dict[str, float]:
    """AUROC, AUPRC, Brier score and ECE of one set of predictions, as ``{name: value}``."""
    return {name: float(v[0]) for name, v in ScoredRows(y_true, y_prob).metrics(sample_weight).items()}


def reliability_curve(
    y_true: Any, y_prob: Any, n_bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per non-empty equal-width bin: mean probability, observed positive fraction, row count.

    >>> mean_p, observed, counts = reliability_curve([0, 1, 1, 1], [0.1, 0.2, 0.9, 0.95])
    >>> mean_p.round(3).tolist(), observed.tolist(), counts.tolist()
    ([0.1, 0.2, 0.925], [0.0, 1.0, 1.0], [1, 1, 2])
    """
    y, p = _as_arrays(y_true, y_prob)
    bins = calibration_bins(p, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    keep = counts > 0
    mean_p = np.bincount(bins, weights=p, minlength=n_bins)[keep] / counts[keep]
    observed = np.bincount(bins, weights=y, minlength=n_bins)[keep] / counts[keep]
    return mean_p, observed, counts[keep]
