"""Frozen-backbone linear probe: L2 logistic regression on the pretrained sequence representation.

The representation of a (subject, prediction time) is the pretrained backbone's hidden state at
the last history token (see :func:`ehrfm.finetune.scoring.embed_histories`), standardised with
train statistics. One logistic regression per task is fit on train rows; its inverse
regularisation ``C`` is chosen by tuning-split AUROC. held_out is never used for fitting.

>>> import numpy as np, polars as pl
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(300, 4)); y = (x[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(float)
>>> split = np.array(["train"] * 200 + ["tuning"] * 50 + ["held_out"] * 50)
>>> probs, chosen = fit_probe(x, y, split)
>>> probs.shape, sorted(chosen)
((300,), ['C', 'tuning_auroc'])
>>> chosen["tuning_auroc"] > 0.9
True
"""

from __future__ import annotations

import numpy as np

__all__ = ["PROBE_C_GRID", "fit_probe", "probe_predictions"]

PROBE_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


def fit_probe(features: np.ndarray, labels: np.ndarray, split: np.ndarray, *, c_grid: tuple[float, ...] = PROBE_C_GRID,
              seed: int = 0) -> tuple[np.ndarray, dict[str, float]]:
    """Fit on ``split == "train"`` (labelled rows), choose C on ``"tuning"``; probabilities for all rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    known = ~np.isnan(labels)
    train = known & (split == "train")
    tuning = known & (split == "tuning")
    if len(np.unique(labels[train])) < 2:
        raise ValueError("the linear probe needs both classes among train rows")
    scaler = StandardScaler().fit(features[train])
    x = scaler.transform(features)
    best: tuple[float, float, object] | None = None
    for c in c_grid:
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x[train], labels[train])
        score = roc_auc_score(labels[tuning], clf.predict_proba(x[tuning])[:, 1]) if len(np.unique(labels[tuning])) == 2 else 0.5
        if best is None or score > best[0]:
            best = (score, c, clf)
    assert best is not None
    score, c, clf = best
    return clf.predict_proba(x)[:, 1], {"C": float(c), "tuning_auroc": float(score)}  # type: ignore[attr-defined]


def probe_predictions(features: np.ndarray, labels: np.ndarray, split: np.ndarray, task_names: list[str],
                      *, seed: int = 0) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """One probe per task column of ``labels``; ``(rows, tasks)`` probabilities and the chosen C per task."""
    out = np.full(labels.shape, np.nan)
    chosen: dict[str, dict[str, float]] = {}
    for k, task in enumerate(task_names):
        out[:, k], chosen[task] = fit_probe(features, labels[:, k], split, seed=seed)
    return out, chosen
