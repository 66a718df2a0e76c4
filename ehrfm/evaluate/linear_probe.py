"""Frozen-backbone linear probe: L2 logistic regression on the pretrained sequence representation.

The representation of a (subject, prediction time) is the pretrained backbone's hidden state at
the last history token (see :func:`ehrfm.predict.inference.embed_histories`), standardised with
train statistics. One logistic regression per task is fit on train rows; its inverse
regularisation ``C`` is chosen by tuning-split AUROC with the same search as the count
baseline (:func:`ehrfm.evaluate.count_baselines.fit_l2_logistic`). held_out is never used for fitting.

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

__all__ = ["fit_probe", "probe_predictions"]


def fit_probe(features: np.ndarray, labels: np.ndarray, split: np.ndarray, *,
              seed: int = 0) -> tuple[np.ndarray, dict[str, float]]:
    """Fit on ``split == "train"`` (labelled rows), choose C on ``"tuning"``; probabilities for all rows."""
    from sklearn.preprocessing import StandardScaler

    from ehrfm.evaluate.count_baselines import fit_l2_logistic

    known = ~np.isnan(labels)
    train, tuning = known & (split == "train"), known & (split == "tuning")
    if len(np.unique(labels[train])) < 2:
        raise ValueError("the linear probe needs both classes among train rows")
    x = StandardScaler().fit(features[train]).transform(features)
    inputs = {"train": x[train], "tuning": x[tuning], "all": x}
    probabilities, chosen, _ = fit_l2_logistic(inputs, {"train": labels[train], "tuning": labels[tuning]},
                                               seed=seed, max_iter=2000)
    return probabilities["all"], {"C": float(chosen["params"]["C"]),
                                  "tuning_auroc": float(chosen["tuning_auroc"])}


def probe_predictions(features: np.ndarray, labels: np.ndarray, split: np.ndarray, task_names: list[str],
                      *, seed: int = 0) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """One probe per task column of ``labels``; ``(rows, tasks)`` probabilities and the chosen C per task."""
    out = np.full(labels.shape, np.nan)
    chosen: dict[str, dict[str, float]] = {}
    for k, task in enumerate(task_names):
        out[:, k], chosen[task] = fit_probe(features, labels[:, k], split, seed=seed)
    return out, chosen
