"""Predictions in the MEDS prediction schema, one file per task (and model, split), as
meds-evaluation reads them.

meds-evaluation's ``PredictionSchema`` is the MEDS label schema plus ``predicted_boolean_value``
and ``predicted_boolean_probability`` (float32), and it refuses every other column; it also
reads one file and scores every row in it. So each file holds exactly those five columns for
one (task[, model, split]); which task, model and split it answers is its path, and ehrfm's own
columns (``calibrated``, ``model_version``, ``fhir_patient_id``, ...) stay in the ehrfm table
written beside it (``prediction_details.parquet``), joined on ``task, subject_id, prediction_time``.

``predicted_boolean_value`` is ``predicted_boolean_probability >= 0.5`` (the probabilities are
calibrated); ``boolean_value`` is the observed label, null where none is known (a population
scored before its outcomes: meds-evaluation needs it filled, see ``ehrfm score labels_dir=``).

>>> import datetime as dt, tempfile, polars as pl
>>> frame = pl.DataFrame({"task": ["a", "a", "b"], "subject_id": [2, 1, 1],
...     "prediction_time": [dt.datetime(2020, 1, 1)] * 3, "boolean_value": [True, False, None],
...     "predicted_boolean_probability": [0.75, 0.25, 0.5], "calibrated": [True] * 3})
>>> out = tempfile.mkdtemp()
>>> [p.relative_to(out).as_posix() for p in write_meds_predictions(frame, out, ["task"])]
['a/0.parquet', 'b/0.parquet']
>>> pl.read_parquet(f"{out}/a/0.parquet").rows()
[(1, datetime.datetime(2020, 1, 1, 0, 0), False, False, 0.25), (2, datetime.datetime(2020, 1, 1, 0, 0), True, True, 0.75)]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ehrfm.outputs import write_atomic
from ehrfm.schema import (
    BOOLEAN_VALUE,
    PREDICTED_BOOLEAN_PROBABILITY,
    PREDICTED_BOOLEAN_VALUE,
    PREDICTION_TIME,
    SUBJECT_ID,
    prediction_schema,
)

__all__ = ["DECISION_THRESHOLD", "MEDS_PREDICTION_SHARD", "meds_prediction_path", "to_meds_predictions",
           "write_meds_predictions"]

DECISION_THRESHOLD = 0.5
MEDS_PREDICTION_SHARD = "0.parquet"


def to_meds_predictions(frame: pl.DataFrame, *, threshold: float = DECISION_THRESHOLD) -> pa.Table:
    """The five MEDS prediction columns of ``frame`` (sorted by subject and time), exact dtypes.

    ``frame`` needs ``subject_id``, ``prediction_time``, ``predicted_boolean_probability`` and may
    carry ``boolean_value`` (absent: null); every other column is left out.
    """
    missing = [c for c in (SUBJECT_ID, PREDICTION_TIME, PREDICTED_BOOLEAN_PROBABILITY) if c not in frame.columns]
    if missing:
        raise ValueError(f"predictions lack column(s) {missing}; they have {frame.columns}")
    observed = pl.col(BOOLEAN_VALUE) if BOOLEAN_VALUE in frame.columns else pl.lit(None, pl.Boolean)
    table = (frame.select(pl.col(SUBJECT_ID).cast(pl.Int64), pl.col(PREDICTION_TIME).cast(pl.Datetime("us")),
                          observed.cast(pl.Boolean).alias(BOOLEAN_VALUE),
                          (pl.col(PREDICTED_BOOLEAN_PROBABILITY) >= threshold).alias(PREDICTED_BOOLEAN_VALUE),
                          pl.col(PREDICTED_BOOLEAN_PROBABILITY).cast(pl.Float32))
             .sort(SUBJECT_ID, PREDICTION_TIME).to_arrow())
    return table.cast(prediction_schema())


def meds_prediction_path(folder: str | Path, *keys: str) -> Path:
    """``<folder>/<key>/.../0.parquet``: where one (task[, model, split]) file goes."""
    return Path(folder).joinpath(*keys) / MEDS_PREDICTION_SHARD


def write_meds_predictions(frame: pl.DataFrame, folder: str | Path, keys: Sequence[str], *,
                           threshold: float = DECISION_THRESHOLD) -> list[Path]:
    """One MEDS prediction file per distinct value of the ``keys`` columns (e.g. ``task``), under
    ``folder`` in key order; each written atomically. Returns the paths, sorted."""
    paths = []
    for values, part in frame.group_by(list(keys)):
        path = meds_prediction_path(folder, *(str(v) for v in values))
        path.parent.mkdir(parents=True, exist_ok=True)
        table = to_meds_predictions(part, threshold=threshold)
        write_atomic(path, lambda target, table=table: pq.write_table(table, target))
        paths.append(path)
    return sorted(paths)
