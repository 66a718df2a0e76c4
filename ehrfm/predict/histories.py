"""Tokenized histories at prediction times, with the values each task prompt is stamped with.

For rows ``(subject_id, prediction_time)`` and the subjects' events, one tokenized history per
row: only events strictly before the prediction time, cut to ``context_length`` tokens by the
tokenizer's own rule (the patient prefix, then the newest whole events; see
:mod:`ehrfm.tokenize.crop`). Each row also carries what its task prompts are stamped with:
``prompt_time_days`` (float64 days since 1970), ``prompt_age_years`` (NaN without a birth date)
and ``prompt_visit_index``. The cohort (training and evaluation) and scoring both build their
histories here, so a model sees the same input in both.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ehrfm.schema import BIRTH_CODE, CODE, PREDICTION_TIME, SUBJECT_ID, TIME
from ehrfm.tokenize import EventTokenizer
from ehrfm.tokenize.sequence_schema import (
    DAYS_PER_YEAR,
    LENGTH,
    STREAM_COLUMNS,
    TIME_EPOCH,
    VISIT_INDEX,
    days_since_epoch,
)

__all__ = ["PROMPT_COLUMNS", "tokenize_histories"]

PROMPT_COLUMNS = ("prompt_time_days", "prompt_age_years", "prompt_visit_index")


def tokenize_histories(events: pl.DataFrame, tokenizer: EventTokenizer, rows: pl.DataFrame, *,
                       context_length: int) -> pl.DataFrame:
    """``rows`` (any columns, keyed by ``subject_id, prediction_time``) joined with their histories.

    The result keeps every column of ``rows`` and adds the five token streams, ``length`` and
    the prompt columns, sorted by ``subject_id, prediction_time``.
    """
    cutoff = rows.select(SUBJECT_ID, PREDICTION_TIME)
    sequences = tokenizer.transform(events, cutoff=cutoff, max_length=context_length)
    births = events.filter(pl.col(CODE) == BIRTH_CODE).group_by(SUBJECT_ID).agg(pl.col(TIME).min().alias("_birth"))
    frame = (rows.join(sequences.select(SUBJECT_ID, PREDICTION_TIME, *STREAM_COLUMNS, LENGTH),
                       on=[SUBJECT_ID, PREDICTION_TIME], how="inner")
             .join(births, on=SUBJECT_ID, how="left")
             .sort(SUBJECT_ID, PREDICTION_TIME))
    if frame.height != rows.height:
        raise RuntimeError(f"tokenizer returned {frame.height} histories for {rows.height} prediction times")
    prompt_days = days_since_epoch(frame[PREDICTION_TIME])
    birth_days = days_since_epoch(frame["_birth"].fill_null(TIME_EPOCH))
    age = np.where(frame["_birth"].is_null().to_numpy(), np.nan, (prompt_days - birth_days) / DAYS_PER_YEAR)
    return frame.drop("_birth").with_columns(
        pl.Series("prompt_time_days", prompt_days, pl.Float64),
        pl.Series("prompt_age_years", age, pl.Float64),
        pl.col(VISIT_INDEX).list.last().fill_null(0).cast(pl.Int64).alias("prompt_visit_index"),
    )
