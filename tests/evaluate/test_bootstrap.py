"""The bootstrap resamples patients, not rows: all rows of a subject move together."""

from __future__ import annotations

import numpy as np
import pytest

from ehrfm.evaluate.bootstrap import bootstrap_weights, cluster_bootstrap, subject_index
from ehrfm.predict.metrics import binary_metrics


def _clustered(n_subjects: int = 40, rows_per_subject: int = 25, seed: int = 0):
    """Subjects whose rows are near-copies: the label and score are mostly a subject trait."""
    rng = np.random.default_rng(seed)
    risk = rng.random(n_subjects)
    subjects = np.repeat(np.arange(n_subjects) * 7 + 3, rows_per_subject)
    y = np.repeat(rng.random(n_subjects) < risk, rows_per_subject)
    p = np.clip(np.repeat(risk, rows_per_subject) + rng.normal(0, 0.05, subjects.size), 0, 1)
    return y, p, subjects


def test_interval_contains_estimate_and_counts_add_up() -> None:
    y, p, subjects = _clustered()
    result = cluster_bootstrap(y, p, subjects, n_bootstrap=500, seed=1)
    assert result.n_replicates + result.n_skipped == 500
    assert result.n_subjects == 40
    for name, ci in result.intervals.items():
        assert ci.estimate == pytest.approx(binary_metrics(y, p)[name])
        assert ci.lower <= ci.estimate <= ci.upper, name
        assert ci.lower < ci.upper, name
        assert result.replicates[name].size == result.n_replicates


def test_seeded_and_reproducible() -> None:
    y, p, subjects = _clustered()
    a = cluster_bootstrap(y, p, subjects, n_bootstrap=200, seed=5)
    b = cluster_bootstrap(y, p, subjects, n_bootstrap=200, seed=5)
    c = cluster_bootstrap(y, p, subjects, n_bootstrap=200, seed=6)
    assert a.intervals == b.intervals
    assert a.intervals != c.intervals


def test_rows_of_a_subject_share_their_weight_and_row_level_would_not() -> None:
    _, _, subjects = _clustered(n_subjects=10, rows_per_subject=5)
    weights = np.vstack(list(bootstrap_weights(subjects, n_bootstrap=300, seed=0)))
    assert weights.shape == (300, 50)
    assert (weights.sum(axis=1) == 50).all()  # each replicate draws 10 subjects of 5 rows
    _, row_subject = subject_index(subjects)
    for s in range(10):
        block = weights[:, row_subject == s]
        assert (block == block[:, :1]).all()
    # the same check fails for a row-level bootstrap (every row its own cluster)
    rows = np.vstack(list(bootstrap_weights(np.arange(50), n_bootstrap=300, seed=0)))
    first = rows[:, row_subject == 0]
    assert not (first == first[:, :1]).all()


def test_duplicating_a_subjects_rows_does_not_change_which_subjects_are_drawn() -> None:
    _, _, subjects = _clustered(n_subjects=12, rows_per_subject=3)
    duplicated = np.concatenate([subjects, subjects[subjects == subjects[0]]])
    w1 = np.vstack(list(bootstrap_weights(subjects, n_bootstrap=200, seed=3)))
    w2 = np.vstack(list(bootstrap_weights(duplicated, n_bootstrap=200, seed=3)))
    firsts1 = np.unique(subjects, return_index=True)[1]
    firsts2 = np.unique(duplicated, return_index=True)[1]
    assert np.array_equal(w1[:, firsts1], w2[:, firsts2])


def test_weights_score_like_an_explicit_resample() -> None:
    y, p, subjects = _clustered(n_subjects=15, rows_per_subject=4)
    w = next(bootstrap_weights(subjects, n_bootstrap=1, seed=9))[0]
    _, row_subject = subject_index(subjects)
    drawn_counts = w[np.unique(row_subject, return_index=True)[1]].astype(int)
    resample = np.concatenate([np.tile(np.flatnonzero(row_subject == s), c)
                               for s, c in enumerate(drawn_counts)])
    assert resample.size == y.size
    expected = binary_metrics(y[resample], p[resample])
    for name, value in binary_metrics(y, p, w).items():
        assert value == pytest.approx(expected[name], nan_ok=True)


def test_patient_level_interval_is_wider_than_row_level_on_clustered_rows() -> None:
    y, p, subjects = _clustered(n_subjects=40, rows_per_subject=25)
    patient = cluster_bootstrap(y, p, subjects, n_bootstrap=400, seed=0).intervals["auroc"]
    row = cluster_bootstrap(y, p, np.arange(y.size), n_bootstrap=400, seed=0).intervals["auroc"]
    assert (patient.upper - patient.lower) > 2.5 * (row.upper - row.lower)


def test_single_class_replicates_are_skipped_and_counted() -> None:
    # one positive subject among six: about (5/6)^6 = 33% of replicates draw no positive
    subjects = np.repeat(np.arange(6), 2)
    y = np.r_[1, 1, np.zeros(10)]
    p = np.linspace(0.9, 0.1, 12)
    result = cluster_bootstrap(y, p, subjects, n_bootstrap=1000, seed=0)
    weights = np.vstack(list(bootstrap_weights(subjects, n_bootstrap=1000, seed=0)))
    expected_skips = int(((weights @ y) == 0).sum())
    assert result.n_skipped == expected_skips
    assert 250 < result.n_skipped < 420
    assert result.n_replicates == 1000 - expected_skips
    assert result.to_dict()["n_skipped"] == expected_skips


def test_one_subject_with_both_classes_is_never_skipped_and_one_class_always_is() -> None:
    both = cluster_bootstrap([1, 0], [0.8, 0.2], [1, 1], n_bootstrap=20, seed=0)
    assert both.n_skipped == 0 and both.n_replicates == 20
    none = cluster_bootstrap([1, 1, 1], [0.8, 0.2, 0.5], [1, 2, 3], n_bootstrap=20, seed=0)
    assert none.n_skipped == 20 and none.n_replicates == 0
    assert np.isnan(none.intervals["auroc"].lower) and none.to_dict()["intervals"]["auroc"]["lower"] is None
    with pytest.raises(ValueError):
        cluster_bootstrap([1, 0], [0.8, 0.2], [1, 2], n_bootstrap=0)
