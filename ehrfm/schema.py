"""Every column ehrfm reads or writes, named once with its dtype.

MEDS v0.4 fixes the core columns (``subject_id``, ``time``, ``code``, ``numeric_value``,
``text_value``); ehrfm adds a few declared extension columns that keep each event traceable to
the FHIR resource it came from. Times are stored as MEDS requires, ``timestamp[us]`` without a
zone; ehrfm always normalizes them to UTC first, so every ``time`` is a UTC wall-clock instant.

>>> data_schema().field("time").type
TimestampType(timestamp[us])
>>> [c for c in EXTRA_COLUMNS]
['resource_type', 'resource_id', 'encounter_id', 'unit', 'security']
>>> PREDICTION_TIME, BOOLEAN_VALUE, PREDICTED_BOOLEAN_PROBABILITY, SPLITS
('prediction_time', 'boolean_value', 'predicted_boolean_probability', ('train', 'tuning', 'held_out'))
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from meds import DataSchema, LabelSchema, held_out_split, train_split, tuning_split

SUBJECT_ID = "subject_id"
TIME = "time"
CODE = "code"
NUMERIC_VALUE = "numeric_value"
TEXT_VALUE = "text_value"

# ehrfm extension columns, declared in metadata/dataset.json.
RESOURCE_TYPE = "resource_type"  # FHIR resourceType the event came from
RESOURCE_ID = "resource_id"  # FHIR logical id (ImagingStudy id, DocumentReference id, ...)
ENCOUNTER_ID = "encounter_id"  # FHIR Encounter id the event belongs to: defines visits
UNIT = "unit"  # UCUM unit (or unit text) of numeric_value
SECURITY = "security"  # the resource's meta.security label codes, comma-joined (null: none)

EXTRA_COLUMNS: tuple[str, ...] = (RESOURCE_TYPE, RESOURCE_ID, ENCOUNTER_ID, UNIT, SECURITY)

# Labels and predictions (MEDS label schema; predictions add the predicted probability, named as
# the MEDS prediction schema names it) and subject splits (MEDS subject_splits.parquet).
PREDICTION_TIME = LabelSchema.prediction_time_name  # "prediction_time"
BOOLEAN_VALUE = LabelSchema.boolean_value_name  # "boolean_value": the observed label
PREDICTED_BOOLEAN_VALUE = "predicted_boolean_value"  # the probability thresholded (meds-evaluation)
PREDICTED_BOOLEAN_PROBABILITY = "predicted_boolean_probability"
SPLIT = "split"  # meds.SubjectSplitSchema's split column
TRAIN, TUNING, HELD_OUT = train_split, tuning_split, held_out_split
SPLITS: tuple[str, ...] = (TRAIN, TUNING, HELD_OUT)
TASK = "task"  # which task a label or prediction row answers
MODEL = "model"  # which model produced a prediction row

# Codes ehrfm emits itself (MEDS names birth and death; the rest are ehrfm's).
BIRTH_CODE = "MEDS_BIRTH"
DEATH_CODE = "MEDS_DEATH"
VISIT_START_PREFIX = "VISIT_START"  # VISIT_START/<encounter class>, at Encounter.period.start
VISIT_END_PREFIX = "VISIT_END"  # VISIT_END/<encounter class>, at Encounter.period.end

POLARS_EVENT_SCHEMA: dict[str, pl.DataType] = {
    SUBJECT_ID: pl.Int64(),
    TIME: pl.Datetime("us"),
    CODE: pl.String(),
    NUMERIC_VALUE: pl.Float32(),
    TEXT_VALUE: pl.String(),
    RESOURCE_TYPE: pl.String(),
    RESOURCE_ID: pl.String(),
    ENCOUNTER_ID: pl.String(),
    UNIT: pl.String(),
    SECURITY: pl.String(),
}


def data_schema() -> pa.Schema:
    """The exact Arrow schema of ``data/*.parquet``: MEDS core columns, then ehrfm extras."""
    core = DataSchema.schema()
    extras = [pa.field(name, pa.string()) for name in EXTRA_COLUMNS]
    return pa.schema(list(core) + extras)


def prediction_schema() -> pa.Schema:
    """The Arrow schema of a MEDS prediction file, exactly as meds-evaluation (0.0.6) validates it.

    Its ``PredictionSchema`` is the MEDS label schema plus ``predicted_boolean_value`` (bool) and
    ``predicted_boolean_probability`` (float32), and refuses any other column.

    >>> prediction_schema().names
    ['subject_id', 'prediction_time', 'boolean_value', 'predicted_boolean_value', 'predicted_boolean_probability']
    >>> str(prediction_schema().field(PREDICTED_BOOLEAN_PROBABILITY).type)
    'float'
    """
    label = LabelSchema.schema()
    return pa.schema([label.field(SUBJECT_ID), label.field(PREDICTION_TIME), label.field(BOOLEAN_VALUE),
                      pa.field(PREDICTED_BOOLEAN_VALUE, pa.bool_()),
                      pa.field(PREDICTED_BOOLEAN_PROBABILITY, pa.float32())])


def to_meds_table(frame: pl.DataFrame) -> pa.Table:
    """Convert an events frame to an Arrow table with the exact MEDS dtypes (validated)."""
    table = frame.select(list(POLARS_EVENT_SCHEMA)).to_arrow()
    table = table.cast(data_schema())
    DataSchema.validate(table)
    return table
