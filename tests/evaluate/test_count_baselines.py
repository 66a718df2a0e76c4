"""Count baselines: beat chance where a code predicts the label, and never choose with held-out labels."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from ehrfm.evaluate.count_baselines import LIGHTGBM_GRID, LOGISTIC_C_GRID, MODELS, run_count_baselines
from ehrfm.predict.metrics import auroc
from ehrfm.predict.tables import PREDICTION_SCHEMA

T0 = dt.datetime(2020, 1, 1)


def _synthetic(n_subjects: int = 300, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Label = RISK code seen before the prediction time (10% flipped); NOISE codes carry nothing."""
    rng = np.random.default_rng(seed)
    events, labels = [], []
    for s in range(n_subjects):
        split = ("train", "train", "train", "tuning", "held_out")[s % 5]
        events.append((s, dt.datetime(1940 + s % 60, 1, 1), "MEDS_BIRTH"))
        events.append((s, None, "GENDER/" + "FM"[s % 2]))
        risk_day = int(rng.integers(0, 400)) if rng.random() < 0.4 else None
        if risk_day is not None:
            events.append((s, T0 + dt.timedelta(days=risk_day), "SNOMED/RISK"))
        for _ in range(int(rng.integers(5, 15))):
            events.append((s, T0 + dt.timedelta(days=int(rng.integers(0, 400))),
                           f"NOISE/{int(rng.integers(0, 20))}"))
        if split == "held_out":
            events.append((s, T0, "HELD_OUT/ONLY"))
        for day in sorted(set(rng.integers(1, 400, 3).tolist())):
            seen = risk_day is not None and risk_day < day
            labels.append((s, T0 + dt.timedelta(days=day), bool(seen ^ (rng.random() < 0.1)), split))
    events_frame = pl.DataFrame(events, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"),
                                                "code": pl.String}, orient="row")
    labels_frame = pl.DataFrame(
        labels,
        schema={"subject_id": pl.Int64, "prediction_time": pl.Datetime("us"), "boolean_value": pl.Boolean,
                "split": pl.String},
        orient="row",
    )
    return events_frame, labels_frame


@pytest.fixture(scope="module")
def data() -> tuple[pl.DataFrame, pl.DataFrame]:
    return _synthetic()


@pytest.fixture(scope="module")
def run(data):
    events, labels = data
    return run_count_baselines(events, labels, "risk", min_subjects=2, seed=0)


def test_predictions_frame_shape_and_schema(run, data) -> None:
    _, labels = data
    predictions = run.predictions
    assert dict(predictions.schema) == PREDICTION_SCHEMA
    assert predictions.height == len(MODELS) * labels.height
    assert predictions.select("task", "model", "subject_id", "prediction_time").is_duplicated().sum() == 0
    assert set(predictions["split"].unique()) == {"train", "tuning", "held_out"}
    assert set(predictions["task"].unique()) == {"risk"}
    joined = predictions.join(labels, on=["subject_id", "prediction_time"])
    assert ((joined["boolean_value"] == joined["boolean_value"]).all()
            and (joined["split"] == joined["split_right"]).all())
    assert predictions["predicted_boolean_probability"].is_between(0, 1).all()


def test_both_models_beat_chance_on_held_out(run) -> None:
    held = run.predictions.filter(pl.col("split") == "held_out")
    for model in MODELS:
        rows = held.filter(pl.col("model") == model)
        assert auroc(rows["boolean_value"].to_numpy(),
                     rows["predicted_boolean_probability"].to_numpy()) > 0.8, model


def test_selection_is_recorded_and_searches_the_whole_grid(run) -> None:
    assert set(run.selected) == set(MODELS)
    chosen = run.selected["lightgbm"]["params"]
    assert chosen["max_depth"] in LIGHTGBM_GRID["max_depth"] and chosen["n_estimators"] >= 1
    assert run.selected["logistic_regression"]["params"]["C"] in LOGISTIC_C_GRID
    tried = [s for s in run.search if s["model"] == "lightgbm"]
    assert len(tried) == 27
    assert run.selected["lightgbm"]["tuning_auroc"] == max(s["tuning_auroc"] for s in tried)
    assert len([s for s in run.search if s["model"] == "logistic_regression"]) == len(LOGISTIC_C_GRID)
    assert run.to_dict()["rows"]["held_out"]["subjects"] == 60


def test_vocabulary_holds_no_code_seen_only_in_held_out(run) -> None:
    assert "HELD_OUT/ONLY" not in run.feature_names
    assert "SNOMED/RISK" in run.feature_names and run.feature_names[0] == "AGE_YEARS"


def test_corrupting_held_out_labels_changes_no_choice_and_no_probability(run, data) -> None:
    events, labels = data
    corrupted = labels.with_columns(
        boolean_value=pl.when(pl.col("split") == "held_out").then(~pl.col("boolean_value"))
                        .otherwise(pl.col("boolean_value"))
    )
    again = run_count_baselines(events, corrupted, "risk", min_subjects=2, seed=0)
    assert again.selected == run.selected
    untimed = [[{k: v for k, v in s.items() if k != "seconds"} for s in r.search] for r in (run, again)]
    assert untimed[0] == untimed[1]
    assert np.array_equal(again.predictions["predicted_boolean_probability"].to_numpy(),
                          run.predictions["predicted_boolean_probability"].to_numpy())
    # and the check can fail: corrupting tuning labels does change what is chosen or predicted
    tuning_flipped = labels.with_columns(
        boolean_value=pl.when(pl.col("split") == "tuning").then(~pl.col("boolean_value"))
                        .otherwise(pl.col("boolean_value"))
    )
    moved = run_count_baselines(events, tuning_flipped, "risk", min_subjects=2, seed=0,
                                models=("logistic_regression",))
    assert moved.selected["logistic_regression"] != run.selected["logistic_regression"]


def test_refuses_one_class_and_unknown_models(data) -> None:
    events, labels = data
    one_class = labels.with_columns(
        boolean_value=pl.when(pl.col("split") == "tuning").then(False).otherwise(pl.col("boolean_value")))
    with pytest.raises(ValueError, match="tuning rows hold one class"):
        run_count_baselines(events, one_class, "risk", min_subjects=2)
    with pytest.raises(ValueError, match="unknown baseline"):
        run_count_baselines(events, labels, "risk", models=("xgboost",))
    with pytest.raises(ValueError, match="split"):
        run_count_baselines(events, labels.drop("split"), "risk")
