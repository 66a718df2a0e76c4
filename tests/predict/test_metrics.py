"""Metrics agree with scikit-learn and with hand-computed values; ECE separates good from bad calibration."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from ehrfm.predict.metrics import (
    ScoredRows,
    auprc,
    auroc,
    batch_metrics,
    binary_metrics,
    brier_score,
    calibration_bins,
    expected_calibration_error,
    reliability_curve,
)


def _data(seed: int, n: int = 300, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    p = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, n), 0, 1)
    if ties:
        p = np.round(p, 1)  # many ties, and exact 0 and 1
    return y, p


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [True, False])
def test_metrics_equal_sklearn(seed: int, ties: bool) -> None:
    y, p = _data(seed, ties=ties)
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert auprc(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_weighted_metrics_equal_sklearn_and_row_duplication(seed: int) -> None:
    y, p = _data(seed)
    w = np.random.default_rng(100 + seed).integers(0, 4, y.size).astype(float)  # zeros included
    assert auroc(y, p, w) == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)
    assert auprc(y, p, w) == pytest.approx(average_precision_score(y, p, sample_weight=w), abs=1e-12)
    assert brier_score(y, p, w) == pytest.approx(brier_score_loss(y, p, sample_weight=w), abs=1e-12)
    repeated = np.repeat(np.arange(y.size), w.astype(int))
    for name, value in binary_metrics(y, p, w).items():
        assert value == pytest.approx(binary_metrics(y[repeated], p[repeated])[name], abs=1e-12), name


def test_batch_rows_equal_scalar_calls() -> None:
    y, p = _data(7)
    w = np.random.default_rng(0).integers(0, 3, (4, y.size)).astype(float)
    batch = batch_metrics(y, p, w)
    for i in range(4):
        for name, value in binary_metrics(y, p, w[i]).items():
            assert batch[name][i] == pytest.approx(value, abs=1e-12)


def test_hand_computed_values() -> None:
    y = [0, 0, 1, 1]
    p = [0.1, 0.4, 0.35, 0.8]
    assert auroc(y, p) == 0.75  # 3 of 4 positive-negative pairs ordered right
    assert auprc(y, p) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert brier_score(y, p) == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert expected_calibration_error(y, p) == pytest.approx((0.1 + 0.4 + 0.65 + 0.2) / 4)
    # two rows in one bin: |mean label - mean p| weighted by the bin's share
    assert expected_calibration_error([0, 1], [0.52, 0.58]) == pytest.approx(abs(0.5 - 0.55))
    assert auroc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_ece_bins_are_equal_width_and_close_at_one() -> None:
    assert calibration_bins([0.0, 0.0999, 0.1, 0.5, 0.95, 1.0]).tolist() == [0, 0, 1, 5, 9, 9]
    mean_p, observed, counts = reliability_curve([0, 1, 1], [0.05, 0.95, 1.0])
    assert counts.tolist() == [1, 2] and observed.tolist() == [0.0, 1.0]
    assert mean_p == pytest.approx([0.05, 0.975])


def test_ece_near_zero_when_calibrated_and_large_when_not() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = rng.random(p.size) < p
    assert expected_calibration_error(y, p) < 0.01
    overconfident = np.clip(p + 0.3, 0, 1)
    assert expected_calibration_error(y, overconfident) > 0.2
    squashed = p**3  # same ranking, far too low
    assert auroc(y, squashed) == pytest.approx(auroc(y, p))
    assert expected_calibration_error(y, squashed) > 0.2


def test_undefined_metrics_are_nan_and_bad_inputs_raise() -> None:
    assert np.isnan(auroc([1, 1], [0.2, 0.3]))
    assert np.isnan(auprc([0, 0], [0.2, 0.3]))
    assert brier_score([1, 1], [1.0, 0.0]) == 0.5
    with pytest.raises(ValueError, match="equal length"):
        auroc([0, 1], [0.5])
    with pytest.raises(ValueError, match="0/1"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        brier_score([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="non-negative"):
        auroc([0, 1], [0.1, 0.2], [1.0, -1.0])


def test_cluster_weights_score_like_the_same_weights_on_every_row_of_the_cluster() -> None:
    y, p = _data(3, n=200)
    groups = np.random.default_rng(1).integers(0, 30, y.size) * 11  # arbitrary subject ids
    _, cluster = np.unique(groups, return_inverse=True)
    per_cluster = np.random.default_rng(2).integers(0, 3, (5, 30)).astype(float)
    by_cluster = batch_metrics(y, p, per_cluster, groups=groups)
    by_row = batch_metrics(y, p, per_cluster[:, cluster])
    for name in by_row:
        np.testing.assert_allclose(by_cluster[name], by_row[name], rtol=1e-12, equal_nan=True)
    rows = ScoredRows(y, p, groups)
    assert rows.n_clusters == 30
    with pytest.raises(ValueError, match="n=30"):
        rows.metrics(np.ones(31))


def test_ece_with_another_bin_count() -> None:
    y = np.array([0, 1, 1, 0])
    p = np.array([0.1, 0.3, 0.7, 0.9])
    # 2 bins: [0, 0.5) holds rows 0, 1 (mean label 0.5, mean p 0.2); [0.5, 1] rows 2, 3 (0.5 vs 0.8)
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.5 * 0.3 + 0.5 * 0.3)
