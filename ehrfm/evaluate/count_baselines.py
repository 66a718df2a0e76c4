"""Count-feature baselines: LightGBM (EHRSHOT grid) and L2 logistic regression, tuned on tuning.

Both models read the same features (:mod:`ehrfm.evaluate.count_features`: age + per-code counts
strictly before the prediction time, vocabulary from train subjects only), are fit on the train
rows only, and pick their hyperparameters by AUROC on the tuning rows. Held-out labels are never
read while fitting or choosing: they are only copied into the returned predictions.

- ``lightgbm``: every combination of ``max_depth`` {3, 6, -1} x ``learning_rate`` {0.02, 0.1, 0.5}
  x ``num_leaves`` {10, 25, 100} (the EHRSHOT recipe), up to ``max_rounds`` boosting rounds with
  early stopping on tuning log-loss (AUROC saturates and jitters on small tuning sets); the
  combination with the best tuning AUROC at its stopping round wins. Deterministic
  (``deterministic``, column-wise histograms, fixed seed and thread count; one thread by default,
  which is also the fastest on a loaded machine). Unweighted classes, so probabilities stay on
  the label scale.
- ``logistic_regression``: counts become ``log1p(count)``, missing ages the train median, then
  every column is divided by its train max-abs (``MaxAbsScaler``, sparse-safe); scikit-learn's
  L2-penalised ``LogisticRegression`` (lbfgs) with ``C`` chosen from ``LOGISTIC_C_GRID``.
  ``class_weight=None``: re-weighting would only distort the probabilities, and AUROC is
  insensitive to it.

Ties in tuning AUROC go to the first candidate in grid order (for logistic regression the
smallest ``C``, i.e. the strongest penalty). The chosen models are not refit on train + tuning:
the tuning rows must stay out-of-sample for the post-hoc calibrators fit on them.

``run_count_baselines`` returns a ``BaselineRun``: the predictions frame (train, tuning and
held_out rows), the selected hyperparameters and the whole search.

>>> import datetime as dt
>>> import numpy as np
>>> import polars as pl
>>> rng = np.random.default_rng(0)
>>> n = 150
>>> sick = rng.random(n) < 0.4
>>> events = pl.DataFrame({
...     "subject_id": np.r_[np.arange(n), np.arange(n)[sick]],
...     "time": [dt.datetime(1980, 1, 1)] * n + [dt.datetime(2019, 6, 1)] * int(sick.sum()),
...     "code": ["MEDS_BIRTH"] * n + ["SNOMED/1"] * int(sick.sum()),
... })
>>> labels = pl.DataFrame({
...     "subject_id": np.arange(n), "prediction_time": [dt.datetime(2020, 1, 1)] * n,
...     "boolean_value": sick ^ (rng.random(n) < 0.1),
...     "split": np.where(np.arange(n) % 3 == 0, "held_out",
...                       np.where(np.arange(n) % 3 == 1, "tuning", "train")),
... })
>>> run = run_count_baselines(events, labels, "toy", min_subjects=1, models=("logistic_regression",))
>>> run.predictions.columns
['task', 'model', 'split', 'subject_id', 'prediction_time', 'boolean_value', 'predicted_boolean_probability']
>>> sorted(run.selected["logistic_regression"]["params"])
['C']
>>> run.selected["logistic_regression"]["tuning_auroc"] > 0.8
True
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from ehrfm.evaluate.count_features import DEFAULT_MIN_SUBJECTS, Events, build_vocabulary, count_features
from ehrfm.predict.metrics import auroc
from ehrfm.predict.tables import PREDICTION_SCHEMA, check_labels
from ehrfm.schema import (
    BOOLEAN_VALUE,
    HELD_OUT,
    MODEL,
    PREDICTED_BOOLEAN_PROBABILITY,
    PREDICTION_TIME,
    SPLIT,
    SUBJECT_ID,
    TASK,
    TRAIN,
    TUNING,
)

MODELS: tuple[str, ...] = ("lightgbm", "logistic_regression")
LIGHTGBM_GRID: dict[str, tuple[Any, ...]] = {
    "max_depth": (3, 6, -1),
    "learning_rate": (0.02, 0.1, 0.5),
    "num_leaves": (10, 25, 100),
}
LOGISTIC_C_GRID: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)


@dataclass
class BaselineRun:
    """The baselines' predictions for one task, with what was chosen and how."""

    task: str
    predictions: pl.DataFrame
    selected: dict[str, dict[str, Any]]
    search: list[dict[str, Any]] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: selected hyperparameters, the full search, feature and row counts."""
        return {
            "task": self.task,
            "selected": self.selected,
            "search": self.search,
            "n_features": len(self.feature_names),
            "rows": self.rows,
        }


def _lightgbm(
    x: dict[str, sp.csr_matrix],
    y: dict[str, np.ndarray],
    *,
    seed: int,
    n_jobs: int,
    max_rounds: int,
    patience: int,
) -> tuple[dict[str, np.ndarray], dict[str, Any], list[dict[str, Any]]]:
    import lightgbm as lgb

    common = {
        "objective": "binary",
        "metric": "binary_logloss",  # early stopping: smoother than AUC, which saturates on small sets
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": n_jobs,
        "verbosity": -1,
    }
    train_set = lgb.Dataset(x[TRAIN], label=y[TRAIN], params=common, free_raw_data=False)
    tuning_set = lgb.Dataset(x[TUNING], label=y[TUNING], reference=train_set, free_raw_data=False)
    search: list[dict[str, Any]] = []
    best: tuple[float, Any, dict[str, Any]] | None = None
    for values in itertools.product(*LIGHTGBM_GRID.values()):
        params = dict(zip(LIGHTGBM_GRID, values))
        started = time.perf_counter()
        booster = lgb.train(
            {**common, **params},
            train_set,
            num_boost_round=max_rounds,
            valid_sets=[tuning_set],
            valid_names=[TUNING],
            callbacks=[lgb.early_stopping(patience, first_metric_only=True, verbose=False)],
        )
        iteration = booster.best_iteration or booster.current_iteration()
        score = auroc(y[TUNING], booster.predict(x[TUNING], num_iteration=iteration))
        search.append(
            {"model": "lightgbm", "params": {**params, "n_estimators": iteration}, "tuning_auroc": score,
             "seconds": round(time.perf_counter() - started, 3)}
        )
        if best is None or score > best[0]:
            best = (score, booster, {**params, "n_estimators": iteration})
    assert best is not None
    score, booster, chosen = best
    probabilities = {s: booster.predict(m, num_iteration=chosen["n_estimators"]) for s, m in x.items()}
    return probabilities, {"params": chosen, "tuning_auroc": score}, search


def _logistic_inputs(x: dict[str, sp.csr_matrix]) -> dict[str, sp.csr_matrix]:
    from sklearn.preprocessing import MaxAbsScaler

    train_age = x[TRAIN][:, 0].toarray().ravel()
    fill = float(np.nanmedian(train_age)) if np.isfinite(train_age).any() else 0.0
    prepared = {}
    for split, m in x.items():
        age = m[:, 0].toarray()
        age[np.isnan(age)] = fill
        prepared[split] = sp.hstack([sp.csr_matrix(age), m[:, 1:].log1p()], format="csr")
    scaler = MaxAbsScaler().fit(prepared[TRAIN])
    return {split: scaler.transform(m).tocsr() for split, m in prepared.items()}


def fit_l2_logistic(
    inputs: dict[str, Any], y: dict[str, np.ndarray], *, seed: int, c_grid: Sequence[float] = LOGISTIC_C_GRID,
    max_iter: int = 5000,
) -> tuple[dict[str, np.ndarray], dict[str, Any], list[dict[str, Any]]]:
    """L2 logistic regression fit on ``inputs["train"]``, ``C`` chosen by AUROC on ``inputs["tuning"]``.

    ``inputs`` maps names to prepared feature matrices (dense or sparse); ``y`` holds only the
    train and tuning labels, so nothing can be fit on any other rows. Returns probabilities for
    every entry of ``inputs``, the choice and the search. Shared by the count baseline and the
    linear probe on a pretrained representation.
    """
    from sklearn.linear_model import LogisticRegression

    search: list[dict[str, Any]] = []
    best: tuple[float, Any, dict[str, Any]] | None = None
    for c in c_grid:
        started = time.perf_counter()
        model = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter, random_state=seed)
        model.fit(inputs[TRAIN], y[TRAIN])
        score = auroc(y[TUNING], model.predict_proba(inputs[TUNING])[:, 1])
        search.append({"model": "logistic_regression", "params": {"C": c}, "tuning_auroc": score,
                       "seconds": round(time.perf_counter() - started, 3)})
        if best is None or score > best[0]:
            best = (score, model, {"C": c})
    assert best is not None
    score, model, chosen = best
    probabilities = {s: model.predict_proba(m)[:, 1] for s, m in inputs.items()}
    return probabilities, {"params": chosen, "tuning_auroc": score}, search


def run_count_baselines(
    events: Events,
    labels_with_split: pl.DataFrame,
    task: str,
    *,
    seed: int = 0,
    min_subjects: int = DEFAULT_MIN_SUBJECTS,
    models: Sequence[str] = MODELS,
    n_jobs: int = 1,
    max_rounds: int = 1000,
    early_stopping_rounds: int = 50,
) -> BaselineRun:
    """Fit the count baselines for one task; predictions plus selected hyperparameters and search.

    ``labels_with_split`` is a labels frame with a ``split`` column (see ``attach_splits``). Train
    and tuning rows must each hold both classes. The vocabulary comes from train subjects with a
    code in at least ``min_subjects`` of them.
    """
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown baseline model(s) {unknown}; choose from {list(MODELS)}")
    labels = check_labels(labels_with_split, with_split=True)
    masks = {s: (labels[SPLIT] == s).to_numpy() for s in (TRAIN, TUNING, HELD_OUT)}
    for split in (TRAIN, TUNING):
        classes = labels.filter(pl.col(SPLIT) == split)[BOOLEAN_VALUE].n_unique()
        if classes < 2:
            raise ValueError(f"task {task!r}: the {split} rows hold "
                             f"{'no rows' if classes == 0 else 'one class'}; "
                             "the baselines need both classes to fit and to choose hyperparameters")
    train_subjects = labels.filter(pl.col(SPLIT) == TRAIN)[SUBJECT_ID].unique()
    vocabulary = build_vocabulary(events, train_subjects, min_subjects=min_subjects)
    features = count_features(events, labels, vocabulary)
    present = [s for s in (TRAIN, TUNING, HELD_OUT) if masks[s].any()]
    x = {s: features.matrix[masks[s]] for s in present}
    # held-out labels are deliberately not put into y: nothing below can fit on them
    y = {s: labels.filter(pl.col(SPLIT) == s)[BOOLEAN_VALUE].to_numpy().astype(np.float64)
         for s in (TRAIN, TUNING)}

    frames, selected, search = [], {}, []
    for model in models:
        if model == "lightgbm":
            probabilities, chosen, tried = _lightgbm(
                x, y, seed=seed, n_jobs=n_jobs, max_rounds=max_rounds, patience=early_stopping_rounds
            )
        else:
            probabilities, chosen, tried = fit_l2_logistic(_logistic_inputs(x), y, seed=seed)
        selected[model] = chosen
        search.extend(tried)
        for split in present:
            frames.append(
                labels.filter(pl.col(SPLIT) == split).select(
                    pl.lit(task).alias(TASK),
                    pl.lit(model).alias(MODEL),
                    SPLIT,
                    SUBJECT_ID,
                    PREDICTION_TIME,
                    BOOLEAN_VALUE,
                    pl.Series(PREDICTED_BOOLEAN_PROBABILITY,
                              np.asarray(probabilities[split], dtype=np.float64)),
                )
            )
    predictions = pl.concat(frames).cast(PREDICTION_SCHEMA)  # type: ignore[arg-type]
    rows = {
        s: {"rows": int(masks[s].sum()), "subjects": labels.filter(pl.col(SPLIT) == s)[SUBJECT_ID].n_unique()}
        for s in (TRAIN, TUNING, HELD_OUT)
    }
    return BaselineRun(task, predictions, selected, search, features.feature_names, rows)
