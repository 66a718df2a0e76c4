"""Count features for the baselines: age plus per-code event counts before the prediction time.

For each label row (``subject_id``, ``prediction_time``) the feature vector is

- column 0, ``AGE_YEARS``: ``(prediction_time - MEDS_BIRTH time)`` in years of 365.25 days (NaN
  when the subject has no birth event);
- one column per vocabulary code: how many events of that code the subject has with
  ``time < prediction_time`` (strictly: an event exactly at the prediction time is not known
  yet). Static rows (null ``time``: GENDER/..., RACE/...) count at every prediction time.

The vocabulary holds the codes seen in at least ``min_subjects`` distinct *train* subjects, so
nothing about tuning or held-out patients shapes the features. Counting is vectorised in Polars:
per (subject, code, time) event counts are accumulated over time, and each (label row, code of the
subject) pair takes the running count of the last time strictly before the prediction time (an
as-of join), so the work grows with the output's non-zeros, not with rows x events.

>>> import datetime as dt
>>> import polars as pl
>>> t = lambda d: dt.datetime(2020, 1, d)
>>> events = pl.DataFrame({
...     "subject_id": [1, 1, 1, 1, 1],
...     "time": [dt.datetime(1990, 1, 1), t(1), t(2), t(3), None],
...     "code": ["MEDS_BIRTH", "LOINC/1", "LOINC/1", "LOINC/1", "GENDER/F"],
... })
>>> labels = pl.DataFrame({"subject_id": [1], "prediction_time": [t(3)], "boolean_value": [True]})
>>> vocabulary = build_vocabulary(events, train_subjects=[1], min_subjects=1)
>>> vocabulary
['GENDER/F', 'LOINC/1', 'MEDS_BIRTH']
>>> features = count_features(events, labels, vocabulary)
>>> features.feature_names
['AGE_YEARS', 'GENDER/F', 'LOINC/1', 'MEDS_BIRTH']
>>> features.matrix.toarray().round(2).tolist()  # the LOINC/1 event at t(3) is not counted
[[30.0, 1.0, 2.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from ehrfm.meds_dataset import scan_events
from ehrfm.predict.tables import check_labels
from ehrfm.schema import BIRTH_CODE, CODE, PREDICTION_TIME, SUBJECT_ID, TIME

AGE_FEATURE = "AGE_YEARS"
DEFAULT_MIN_SUBJECTS = 5
_MICROSECONDS_PER_YEAR = 365.25 * 24 * 3600 * 1e6

Events = pl.DataFrame | pl.LazyFrame


def read_events(meds_dir: str | Path) -> pl.LazyFrame:
    """The ``subject_id``, ``time``, ``code`` columns of every event shard of a MEDS dataset (either
    layout, see :func:`ehrfm.meds_dataset.scan_events`)."""
    return scan_events(meds_dir).select(SUBJECT_ID, TIME, CODE)


def _events(events: Events) -> pl.LazyFrame:
    return events.lazy().select(
        pl.col(SUBJECT_ID).cast(pl.Int64), pl.col(TIME).cast(pl.Datetime("us")), pl.col(CODE).cast(pl.String)
    )


def build_vocabulary(
    events: Events, train_subjects: Iterable[int], *, min_subjects: int = DEFAULT_MIN_SUBJECTS
) -> list[str]:
    """Sorted codes that occur (at any time) for at least ``min_subjects`` of ``train_subjects``."""
    if min_subjects < 1:
        raise ValueError(f"min_subjects must be at least 1, got {min_subjects}")
    train = pl.DataFrame({SUBJECT_ID: list(train_subjects)}, schema={SUBJECT_ID: pl.Int64})
    if train.height == 0:
        raise ValueError("the vocabulary needs at least one train subject")
    counts = (
        _events(events)
        .join(train.lazy().unique(), on=SUBJECT_ID, how="semi")
        .group_by(CODE)
        .agg(pl.col(SUBJECT_ID).n_unique().alias("n_subjects"))
        .filter(pl.col("n_subjects") >= min_subjects, pl.col(CODE).is_not_null())
        .collect()
    )
    return sorted(counts[CODE].to_list())


@dataclass(frozen=True)
class CountFeatures:
    """A CSR matrix (one row per label row, in label order) and its column names."""

    matrix: sp.csr_matrix
    feature_names: list[str]

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape  # type: ignore[return-value]


def count_features(events: Events, labels: pl.DataFrame, vocabulary: Sequence[str]) -> CountFeatures:
    """Age and per-code counts strictly before each label row's ``prediction_time`` (see module doc).

    Row ``i`` of the matrix belongs to row ``i`` of ``labels``; codes outside ``vocabulary`` are
    ignored. Columns: ``AGE_YEARS`` then ``vocabulary`` in the given order.
    """
    labels = check_labels(labels)
    if len(set(vocabulary)) != len(vocabulary):
        raise ValueError("vocabulary holds a code twice")
    vocab = pl.DataFrame(
        {CODE: list(vocabulary), "column": np.arange(1, len(vocabulary) + 1, dtype=np.uint32)},
        schema={CODE: pl.String, "column": pl.UInt32},
    ).lazy()
    rows = labels.select(SUBJECT_ID, PREDICTION_TIME).with_row_index("row").lazy()
    events_lf = _events(events).join(rows.select(SUBJECT_ID).unique(), on=SUBJECT_ID, how="semi")
    coded = events_lf.join(vocab, on=CODE, how="inner")

    # timed events: running count per (subject, code) over distinct times
    timed = (
        coded.filter(pl.col(TIME).is_not_null())
        .group_by(SUBJECT_ID, "column", TIME)
        .agg(pl.len().alias("n"))
        .sort(SUBJECT_ID, "column", TIME)
        .with_columns(pl.col("n").cum_sum().over(SUBJECT_ID, "column").alias("count"))
        .select(SUBJECT_ID, "column", TIME, "count")
        .sort(TIME)
    )
    pairs = (
        rows.join(timed.select(SUBJECT_ID, "column").unique(), on=SUBJECT_ID, how="inner")
        .sort(PREDICTION_TIME)
        .join_asof(
            timed,
            left_on=PREDICTION_TIME,
            right_on=TIME,
            by=[SUBJECT_ID, "column"],
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,  # both sides are sorted by time, hence within every group
        )
        .filter(pl.col("count").is_not_null())
        .select("row", "column", pl.col("count").cast(pl.Float64))
    )
    static = (
        coded.filter(pl.col(TIME).is_null())
        .group_by(SUBJECT_ID, "column")
        .agg(pl.len().cast(pl.Float64).alias("count"))
    )
    static_pairs = rows.join(static, on=SUBJECT_ID, how="inner").select("row", "column", "count")
    birth = (
        events_lf.filter(pl.col(CODE) == BIRTH_CODE, pl.col(TIME).is_not_null())
        .group_by(SUBJECT_ID)
        .agg(pl.col(TIME).min().alias("birth"))
    )
    age = (
        rows.join(birth, on=SUBJECT_ID, how="left")
        .select(
            "row",
            pl.lit(0, dtype=pl.UInt32).alias("column"),
            ((pl.col(PREDICTION_TIME) - pl.col("birth")).dt.total_microseconds() / _MICROSECONDS_PER_YEAR)
            .fill_null(float("nan"))
            .alias("count"),
        )
    )
    cells = (
        pl.concat([age, static_pairs, pairs])
        .group_by("row", "column")  # a code can be both static and timed for odd data
        .agg(pl.col("count").sum())
        .collect()
    )
    matrix = sp.csr_matrix(
        (
            cells["count"].to_numpy(),
            (cells["row"].to_numpy().astype(np.int64), cells["column"].to_numpy().astype(np.int64)),
        ),
        shape=(labels.height, len(vocabulary) + 1),
    )
    matrix.sort_indices()
    return CountFeatures(matrix=matrix, feature_names=[AGE_FEATURE, *vocabulary])
