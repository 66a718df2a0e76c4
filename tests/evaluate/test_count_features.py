"""Count features: strictly before the prediction time, train-only vocabulary, fast enough."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ehrfm.evaluate.count_features import AGE_FEATURE, build_vocabulary, count_features, read_events
from ehrfm.meds_dataset import mark_complete
from ehrfm.predict.tables import FrameFormatError

T0 = dt.datetime(2020, 1, 1)


def _labels(rows: list[tuple[int, dt.datetime]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"subject_id": [r[0] for r in rows], "prediction_time": [r[1] for r in rows],
         "boolean_value": [False] * len(rows)},
        schema={"subject_id": pl.Int64, "prediction_time": pl.Datetime("us"), "boolean_value": pl.Boolean},
    )


def _events(rows: list[tuple[int, dt.datetime | None, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"subject_id": [r[0] for r in rows], "time": [r[1] for r in rows], "code": [r[2] for r in rows]},
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String},
    )


def _dense(features, name: str) -> np.ndarray:
    return features.matrix[:, features.feature_names.index(name)].toarray().ravel()


def test_an_event_at_the_prediction_time_is_not_counted() -> None:
    us = dt.timedelta(microseconds=1)
    events = _events([
        (1, dt.datetime(1970, 1, 1), "MEDS_BIRTH"),
        (1, T0 - us, "A"),  # just before: counted
        (1, T0, "A"),  # exactly at: not counted
        (1, T0, "B"),  # exactly at: not counted
        (1, T0 + us, "A"),  # after: not counted
        (1, None, "GENDER/F"),  # static: counted at any time
    ])
    features = count_features(events, _labels([(1, T0)]), ["A", "B", "GENDER/F"])
    assert features.feature_names == [AGE_FEATURE, "A", "B", "GENDER/F"]
    assert features.matrix.toarray().tolist() == [[pytest.approx(50.0, abs=0.01), 1.0, 0.0, 1.0]]
    later = count_features(events, _labels([(1, T0 + 2 * us)]), ["A", "B"])
    assert later.matrix.toarray()[0, 1:].tolist() == [3.0, 1.0]


def test_counts_match_a_brute_force_count() -> None:
    rng = np.random.default_rng(0)
    codes = [f"C{i}" for i in range(8)]
    rows: list[tuple[int, dt.datetime | None, str]] = []
    for s in range(12):
        rows.append((s, dt.datetime(1950 + s, 3, 1), "MEDS_BIRTH"))
        rows.append((s, None, "SEX/" + "MF"[s % 2]))
        for _ in range(40):
            day = int(rng.integers(0, 60))
            rows.append((s, T0 + dt.timedelta(days=day), codes[int(rng.integers(0, 8))]))
    events = _events(rows)
    label_rows = [(int(rng.integers(0, 12)), T0 + dt.timedelta(days=int(rng.integers(0, 60))))
                  for _ in range(60)]
    labels = _labels(label_rows).unique(subset=["subject_id", "prediction_time"], maintain_order=True)
    vocabulary = codes[:6] + ["SEX/F", "SEX/M", "MEDS_BIRTH"]
    features = count_features(events, labels, vocabulary)
    dense = features.matrix.toarray()
    for i, (s, t) in enumerate(labels.select("subject_id", "prediction_time").iter_rows()):
        mine = events.filter(pl.col("subject_id") == s)
        for j, code in enumerate(vocabulary, start=1):
            of_code = mine.filter(pl.col("code") == code)
            expected = of_code.filter(pl.col("time").is_null() | (pl.col("time") < t)).height
            assert dense[i, j] == expected, (s, t, code)
        birth = dt.datetime(1950 + s, 3, 1)
        assert dense[i, 0] == pytest.approx((t - birth).total_seconds() / (365.25 * 86400))


def test_rows_follow_label_order_and_unknown_subjects_are_empty() -> None:
    events = _events([(1, T0 - dt.timedelta(days=1), "A"), (2, T0 - dt.timedelta(days=1), "A"),
                      (2, T0 - dt.timedelta(days=2), "A")])
    labels = _labels([(2, T0), (99, T0), (1, T0)])
    features = count_features(events, labels, ["A"])
    assert _dense(features, "A").tolist() == [2.0, 0.0, 1.0]
    assert np.isnan(_dense(features, AGE_FEATURE)).all()  # no MEDS_BIRTH: age unknown


def test_vocabulary_comes_from_train_subjects_only() -> None:
    events = _events([
        (1, T0, "SHARED"), (2, T0, "SHARED"), (3, T0, "SHARED"),
        (1, T0, "TRAIN_ONLY"), (2, T0, "TRAIN_ONLY"),
        (1, T0, "RARE"), (1, T0 + dt.timedelta(days=1), "RARE"),  # one subject, twice
        (3, T0, "HELD_OUT_ONLY"), (3, None, "STATIC/X"), (1, None, "STATIC/X"), (2, None, "STATIC/X"),
    ])
    assert build_vocabulary(events, [1, 2], min_subjects=2) == ["SHARED", "STATIC/X", "TRAIN_ONLY"]
    assert build_vocabulary(events, [1, 2], min_subjects=1) == ["RARE", "SHARED", "STATIC/X", "TRAIN_ONLY"]
    assert "HELD_OUT_ONLY" not in build_vocabulary(events.lazy(), pl.Series([1, 2]), min_subjects=1)
    with pytest.raises(ValueError, match="min_subjects"):
        build_vocabulary(events, [1], min_subjects=0)
    with pytest.raises(ValueError, match="train subject"):
        build_vocabulary(events, [], min_subjects=1)


def test_bad_labels_are_refused() -> None:
    events = _events([(1, T0, "A")])
    with pytest.raises(FrameFormatError, match="prediction_time"):
        count_features(events, _labels([(1, T0)]).drop("prediction_time"), ["A"])
    with pytest.raises(FrameFormatError, match="sharing"):
        count_features(events, _labels([(1, T0), (1, T0)]), ["A"])
    with pytest.raises(ValueError, match="twice"):
        count_features(events, _labels([(1, T0)]), ["A", "A"])


def test_read_events(tmp_path: Path) -> None:
    (tmp_path / "data" / "train").mkdir(parents=True)
    _events([(1, T0, "A")]).with_columns(numeric_value=pl.lit(1.0)).write_parquet(
        tmp_path / "data" / "train" / "0.parquet")
    mark_complete(tmp_path, {"dataset_name": "toy"})  # shards alone are an interrupted ingest
    assert read_events(tmp_path).collect().columns == ["subject_id", "time", "code"]
    with pytest.raises(FileNotFoundError, match="MEDS"):
        read_events(tmp_path / "nowhere")


def test_twenty_thousand_label_rows_of_three_hundred_events_each_are_fast() -> None:
    rng = np.random.default_rng(0)
    n_subjects, per_subject = 600, 300
    subjects = np.repeat(np.arange(n_subjects), per_subject)
    offsets = rng.integers(0, 20 * 365 * 86400, subjects.size) * 1_000_000
    events = pl.DataFrame({
        "subject_id": subjects,
        "time": pl.Series(offsets + int(dt.datetime(2000, 1, 1).timestamp() * 1e6)).cast(pl.Datetime("us")),
        "code": pl.Series([f"C{i}" for i in rng.integers(0, 400, subjects.size)]),
    })
    labels = (
        events.sample(22_000, seed=0).select("subject_id", pl.col("time").alias("prediction_time"))
        .unique().with_columns(boolean_value=pl.lit(False))
    )
    started = time.perf_counter()
    features = count_features(events, labels, build_vocabulary(events, range(400), min_subjects=5))
    elapsed = time.perf_counter() - started
    assert features.shape[0] == labels.height > 19_000
    assert elapsed < 30, f"count features took {elapsed:.1f} s"
