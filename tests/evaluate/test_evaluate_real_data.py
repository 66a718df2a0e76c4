"""Count features, both baselines and the report on the real 615-patient Synthea set.

Label: MEDS_DEATH within 365 days after the prediction time, at up to five pseudo-randomly
chosen visit starts per patient (a simple label built here, not one of the task definitions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ehrfm.evaluate.count_baselines import MODELS, run_count_baselines
from ehrfm.evaluate.count_features import build_vocabulary, count_features, read_events
from ehrfm.evaluate.report import evaluate_predictions
from ehrfm.predict.metrics import auroc
from ehrfm.predict.tables import attach_splits, read_splits

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def events(synthea_meds: Path) -> pl.DataFrame:
    return read_events(synthea_meds).collect()


@pytest.fixture(scope="module")
def labels(events: pl.DataFrame, synthea_meds: Path) -> pl.DataFrame:
    visits = (
        events.filter(pl.col("code").str.starts_with("VISIT_START/"))
        .select("subject_id", pl.col("time").alias("prediction_time"))
        .unique()
        .with_columns(rank=pl.col("prediction_time").hash(0).rank("ordinal").over("subject_id"))
        .filter(pl.col("rank") <= 5)
    )
    death = (events.filter(pl.col("code") == "MEDS_DEATH").group_by("subject_id")
             .agg(pl.col("time").min().alias("death")))
    labelled = visits.join(death, on="subject_id", how="left").with_columns(
        boolean_value=pl.col("death").is_not_null()
        & (pl.col("death") > pl.col("prediction_time"))
        & (pl.col("death") <= pl.col("prediction_time") + pl.duration(days=365))
    )
    return attach_splits(labelled.select("subject_id", "prediction_time", "boolean_value"), synthea_meds)


def test_labels_have_both_classes_in_every_split(labels: pl.DataFrame) -> None:
    counts = labels.group_by("split").agg(pl.len().alias("rows"),
                                          pl.col("boolean_value").sum().alias("positives"))
    assert counts.height == 3
    assert (counts["positives"] >= 3).all() and (counts["positives"] < counts["rows"]).all(), counts


def test_features_count_only_events_before_the_prediction_time(events: pl.DataFrame, labels: pl.DataFrame,
                                                               synthea_meds: Path) -> None:
    splits = read_splits(synthea_meds)
    train = splits.filter(pl.col("split") == "train")["subject_id"]
    vocabulary = build_vocabulary(events, train, min_subjects=5)
    not_train = events.join(splits.filter(pl.col("split") != "train"), on="subject_id", how="semi")
    train_codes = set(events.join(splits.filter(pl.col("split") == "train"), on="subject_id",
                                  how="semi")["code"])
    assert set(vocabulary) <= train_codes
    assert set(not_train["code"]) - train_codes, "expected some codes that only non-train subjects have"
    features = count_features(events, labels, vocabulary)
    assert features.shape == (labels.height, len(vocabulary) + 1)
    dense_rows = np.random.default_rng(0).choice(labels.height, 25, replace=False)
    for i in dense_rows:
        row_label = labels.row(int(i), named=True)
        subject, at = row_label["subject_id"], row_label["prediction_time"]
        known = events.filter(
            pl.col("subject_id") == subject, pl.col("time").is_null() | (pl.col("time") < at),
            pl.col("code").is_in(vocabulary)
        )
        expected = dict(known.group_by("code").len().iter_rows())
        row = features.matrix[int(i)]
        got = {features.feature_names[j]: v for j, v in zip(row.indices, row.data) if j > 0}
        assert got == expected, (subject, at)  # includes the visit start at the prediction time: not counted
        assert features.matrix[int(i), 0] > 0  # age


def test_baselines_beat_chance_and_the_report_is_written(events: pl.DataFrame, labels: pl.DataFrame,
                                                         tmp_path: Path) -> None:
    run = run_count_baselines(events, labels, "death_365d", seed=0)
    predictions = run.predictions
    assert predictions.height == len(MODELS) * labels.height
    held = predictions.filter(pl.col("split") == "held_out")
    for model in MODELS:
        rows = held.filter(pl.col("model") == model)
        assert auroc(rows["boolean_value"].to_numpy(),
                     rows["predicted_boolean_probability"].to_numpy()) > 0.7, model
    assert set(run.selected) == set(MODELS)
    report = evaluate_predictions(predictions, tmp_path, n_bootstrap=200, seed=0)
    data = json.loads((tmp_path / "results.json").read_text())
    assert {r["model"] for r in data["results"]} == set(MODELS)
    assert (tmp_path / "death_365d_roc.png").is_file() and (tmp_path / "death_365d_calibration.png").is_file()
    assert report.summary()[0]["mean_auroc"] > 0.7
