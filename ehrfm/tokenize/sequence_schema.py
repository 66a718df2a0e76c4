"""Columns of a tokenized sequence shard and the token-type codes of the ``token_type`` stream.

One row is one sequence (one subject, or one subject at one prediction time). The five list
columns are aligned element by element: ``time_days[i]`` is the time of ``input_ids[i]``.

>>> int(TokenType.VALUE), TokenType(5).name
(8, 'VISIT_START')
>>> sorted(SEQUENCE_SCHEMA)[:3]
['age_years', 'input_ids', 'length']
"""

from __future__ import annotations

import datetime as dt
from enum import IntEnum

import numpy as np
import polars as pl

from ehrfm.schema import PREDICTION_TIME, SUBJECT_ID

INPUT_IDS = "input_ids"
TIME_DAYS = "time_days"  # float64 days since TIME_EPOCH (UTC); float32 would lose minutes
AGE_YEARS = "age_years"  # float64 years since MEDS_BIRTH (365.25-day years); NaN if unknown
VISIT_INDEX = "visit_index"  # 0 before the first visit, else the ordinal of the visit
TOKEN_TYPE = "token_type"  # TokenType codes
LENGTH = "length"
TRUNCATED_TOKENS = "truncated_tokens"  # event tokens dropped by max_length truncation

# Fixed once: every stored time_days value is relative to this instant.
TIME_EPOCH = dt.datetime(1970, 1, 1)
MICROSECONDS_PER_DAY = 86_400_000_000
DAYS_PER_YEAR = 365.25


def days_since_epoch(times: pl.Series) -> np.ndarray:
    """float64 days since ``TIME_EPOCH`` of naive UTC datetimes, as stored in ``time_days``.

    numpy divides with IEEE rounding; Polars multiplies by the reciprocal, one ulp off for about
    a quarter of values, so the division happens here.
    """
    return times.cast(pl.Datetime("us")).dt.epoch("us").to_numpy().astype(np.float64) / MICROSECONDS_PER_DAY


class TokenType(IntEnum):
    """Role of each token; stored in the ``token_type`` stream as int8."""

    PAD = 0
    SPECIAL = 1  # [CLS] and other control tokens
    TASK = 2  # reserved multitask prompt tokens
    DEMOGRAPHIC = 3  # sex, birth-year bucket, other static facts
    INTERVAL = 4  # CEHR-style gap between visits
    VISIT_START = 5
    VISIT_END = 6
    EVENT = 7  # a clinical code (or fused code+value bin)
    VALUE = 8  # numeric value bin of the preceding event
    TEXT = 9  # categorical text value of the preceding event


SEQUENCE_SCHEMA: dict[str, pl.DataType] = {
    SUBJECT_ID: pl.Int64(),
    PREDICTION_TIME: pl.Datetime("us"),
    INPUT_IDS: pl.List(pl.Int32()),
    TIME_DAYS: pl.List(pl.Float64()),
    AGE_YEARS: pl.List(pl.Float64()),
    VISIT_INDEX: pl.List(pl.Int32()),
    TOKEN_TYPE: pl.List(pl.Int8()),
    LENGTH: pl.Int32(),
    TRUNCATED_TOKENS: pl.Int32(),
}

STREAM_COLUMNS: tuple[str, ...] = (INPUT_IDS, TIME_DAYS, AGE_YEARS, VISIT_INDEX, TOKEN_TYPE)
