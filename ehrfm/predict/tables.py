"""The labels and predictions tables: their schemas, checks, and joining subject splits.

- *labels* (MEDS label schema): ``subject_id`` Int64, ``prediction_time`` Datetime(us),
  ``boolean_value`` Boolean; other columns are carried along and ignored.
- *predictions* (the MEDS prediction schema's names, plus which task, model and split):
  ``task``, ``model``, ``split`` (``train``/``tuning``/``held_out``), ``subject_id``,
  ``prediction_time``, ``boolean_value`` (the observed label), ``predicted_boolean_probability``;
  one row per (task, model, subject_id, prediction_time). This is ehrfm's working table (and
  ``prediction_details.parquet``); the MEDS prediction files are :mod:`ehrfm.predict.meds_predictions`.

``attach_splits`` adds each subject's split from a MEDS dataset's
``metadata/subject_splits.parquet``.

>>> import datetime as dt
>>> import polars as pl
>>> labels = pl.DataFrame({"subject_id": [1, 2], "prediction_time": [dt.datetime(2020, 1, 1)] * 2,
...                        "boolean_value": [True, False]})
>>> splits = pl.DataFrame({"subject_id": [1, 2], "split": ["train", "held_out"]})
>>> attach_splits(labels, splits)["split"].to_list()
['train', 'held_out']
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ehrfm.meds_dataset import read_splits
from ehrfm.schema import (
    BOOLEAN_VALUE,
    MODEL,
    PREDICTED_BOOLEAN_PROBABILITY,
    PREDICTION_TIME,
    SPLIT,
    SPLITS,
    SUBJECT_ID,
    TASK,
)

__all__ = ["LABEL_SCHEMA", "PREDICTION_KEY", "PREDICTION_SCHEMA", "FrameFormatError", "attach_splits",
           "check_labels", "check_predictions"]

LABEL_SCHEMA: dict[str, pl.DataType] = {
    SUBJECT_ID: pl.Int64(),
    PREDICTION_TIME: pl.Datetime("us"),
    BOOLEAN_VALUE: pl.Boolean(),
}
PREDICTION_SCHEMA: dict[str, pl.DataType] = {
    TASK: pl.String(),
    MODEL: pl.String(),
    SPLIT: pl.String(),
    SUBJECT_ID: pl.Int64(),
    PREDICTION_TIME: pl.Datetime("us"),
    BOOLEAN_VALUE: pl.Boolean(),
    PREDICTED_BOOLEAN_PROBABILITY: pl.Float64(),
}
PREDICTION_KEY: tuple[str, ...] = (TASK, MODEL, SUBJECT_ID, PREDICTION_TIME)


class FrameFormatError(ValueError):
    """A labels or predictions frame lacks a column, has the wrong dtype or bad values."""


def _check_columns(frame: pl.DataFrame, schema: dict[str, pl.DataType], what: str) -> pl.DataFrame:
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise FrameFormatError(f"{what} frame lacks column(s) {missing}; it has {frame.columns}")
    try:
        frame = frame.with_columns(pl.col(c).cast(t, strict=True) for c, t in schema.items())
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as err:
        raise FrameFormatError(f"{what} frame: a column cannot be read as {schema}: {err}") from None
    nulls = [c for c in schema if frame[c].null_count()]
    if nulls:
        raise FrameFormatError(f"{what} frame has nulls in {nulls}")
    return frame


def check_labels(labels: pl.DataFrame, *, with_split: bool = False) -> pl.DataFrame:
    """The labels with the schema's dtypes (cast), after checking columns, nulls and duplicates."""
    schema = dict(LABEL_SCHEMA)
    if with_split:
        schema[SPLIT] = pl.String()
    labels = _check_columns(labels, schema, "labels")
    duplicated = labels.select(SUBJECT_ID, PREDICTION_TIME).is_duplicated()
    if duplicated.any():
        example = labels.filter(duplicated).row(0, named=True)
        raise FrameFormatError(
            f"labels hold {int(duplicated.sum())} rows sharing (subject_id, prediction_time) with "
            f"another, e.g. subject_id={example[SUBJECT_ID]} at {example[PREDICTION_TIME]}"
        )
    if with_split:
        bad = sorted(set(labels[SPLIT].unique().to_list()) - set(SPLITS))
        if bad:
            raise FrameFormatError(f"unknown split value(s) {bad}; expected {list(SPLITS)}")
    return labels


def check_predictions(predictions: pl.DataFrame) -> pl.DataFrame:
    """The predictions with the schema's dtypes, after checking splits, probabilities and the key."""
    predictions = _check_columns(predictions, PREDICTION_SCHEMA, "predictions")
    bad = sorted(set(predictions[SPLIT].unique().to_list()) - set(SPLITS))
    if bad:
        raise FrameFormatError(f"unknown split value(s) {bad}; expected {list(SPLITS)}")
    p = predictions[PREDICTED_BOOLEAN_PROBABILITY]
    if not p.is_finite().all() or p.min() < 0 or p.max() > 1:  # type: ignore[operator]
        raise FrameFormatError(f"{PREDICTED_BOOLEAN_PROBABILITY} must be finite and in [0, 1]")
    duplicated = predictions.select(PREDICTION_KEY).is_duplicated()
    if duplicated.any():
        example = predictions.filter(duplicated).row(0, named=True)
        raise FrameFormatError(
            f"{int(duplicated.sum())} prediction rows share (task, model, subject_id, prediction_time), "
            f"e.g. {({k: example[k] for k in PREDICTION_KEY})}"
        )
    return predictions


def attach_splits(labels: pl.DataFrame, meds_dir: str | Path | pl.DataFrame) -> pl.DataFrame:
    """``labels`` plus each subject's ``split`` (from ``meds_dir`` or a ``subject_id, split`` frame).

    Raises ``FrameFormatError`` naming the subjects that have no split. An existing ``split``
    column in ``labels`` is replaced.
    """
    splits = meds_dir if isinstance(meds_dir, pl.DataFrame) else read_splits(meds_dir)
    splits = splits.select(pl.col(SUBJECT_ID).cast(pl.Int64), pl.col(SPLIT).cast(pl.String))
    if splits[SUBJECT_ID].is_duplicated().any():
        raise FrameFormatError("subject splits list a subject more than once")
    labels = check_labels(labels.drop(SPLIT, strict=False))
    joined = labels.join(splits, on=SUBJECT_ID, how="left", maintain_order="left")
    orphans = joined.filter(pl.col(SPLIT).is_null())[SUBJECT_ID].unique().sort()
    if orphans.len():
        raise FrameFormatError(
            f"{orphans.len()} labelled subject(s) have no split, e.g. {orphans.head(5).to_list()}: "
            "labels and splits must come from the same MEDS dataset"
        )
    return check_labels(joined, with_split=True)
