"""Check and normalize a MEDS events frame before tokenizing it.

Any MEDS ETL's output is accepted, not only ``ehrfm ingest``'s: the ehrfm extension columns
(``resource_type``, ``encounter_id``, ``unit``, ...) are optional and read as null when absent,
times may carry a time zone (converted to UTC, as ehrfm stores them) or be dates, and codes may
be categorical. What cannot be repaired raises :class:`EventsFormatError` naming the source,
the column and the offending dtype or subject, instead of failing deep inside Polars.

>>> import datetime as dt, polars as pl
>>> raw = pl.DataFrame({"subject_id": [1], "time": [dt.date(2020, 1, 2)], "code": ["LOINC/1-8"]})
>>> prepare_events(raw).collect().schema["time"], prepare_events(raw).collect()["unit"].to_list()
(Datetime(time_unit='us', time_zone=None), [None])
>>> prepare_events(raw.drop("code"), source="shard 0.parquet")
Traceback (most recent call last):
...
ehrfm.tokenize.errors.EventsFormatError: shard 0.parquet: MEDS events need column 'code';
found ['subject_id', 'time']
"""

from __future__ import annotations

import polars as pl

from ehrfm.schema import (
    CODE,
    EXTRA_COLUMNS,
    NUMERIC_VALUE,
    POLARS_EVENT_SCHEMA,
    SUBJECT_ID,
    TEXT_VALUE,
    TIME,
)

from .errors import EventsFormatError

ROW = "_row"  # input order, the tie-breaker among events at one timestamp

EventsLike = pl.DataFrame | pl.LazyFrame


def prepare_events(events: EventsLike, *, source: str = "events", row_index: bool = True) -> pl.LazyFrame:
    """Return a lazy frame with ehrfm's event columns and dtypes, plus the input row order.

    Columns: ``subject_id`` Int64, ``time`` Datetime(us) naive UTC, ``code`` String,
    ``numeric_value`` Float64 (widened so quantiles are computed in double precision),
    ``text_value`` and every extension column as String, and ``_row`` (unless ``row_index``
    is false: fitting needs no order, and a row index would stop Polars from streaming).
    """
    if not isinstance(events, (pl.DataFrame, pl.LazyFrame)):
        raise TypeError(f"{source}: expected a polars DataFrame or LazyFrame, got {type(events).__name__}")
    lazy = events.lazy()
    schema = lazy.collect_schema()
    for required in (SUBJECT_ID, TIME, CODE):
        if required not in schema:
            raise EventsFormatError(f"{source}: MEDS events need column {required!r}; found {list(schema)}")
    exprs = [
        _cast_subject(schema[SUBJECT_ID], source),
        _cast_time(schema[TIME], source),
        _cast_string(CODE, schema[CODE], source),
        _cast_numeric(schema.get(NUMERIC_VALUE), source),
    ]
    for name in (TEXT_VALUE, *EXTRA_COLUMNS):
        exprs.append(_cast_string(name, schema[name], source) if name in schema
                     else pl.lit(None, pl.String).alias(name))
    selected = lazy.select(exprs)
    return selected.with_row_index(ROW) if row_index else selected


def check_no_null_keys(events: pl.DataFrame, *, source: str = "events") -> None:
    """Raise if any event lacks a subject or a code (MEDS requires both)."""
    for column in (SUBJECT_ID, CODE):
        if not events[column].null_count():
            continue
        nulls = events.filter(pl.col(column).is_null())
        if nulls.height:
            example = nulls.row(0, named=True)
            raise EventsFormatError(
                f"{source}: {nulls.height} event(s) have a null {column!r} (MEDS requires it); "
                f"first: subject_id={example[SUBJECT_ID]!r}, time={example[TIME]!r}, code={example[CODE]!r}"
            )


def _cast_subject(dtype: pl.DataType, source: str) -> pl.Expr:
    if not dtype.is_integer():
        raise EventsFormatError(f"{source}: column {SUBJECT_ID!r} must be an integer type, got {dtype}")
    return pl.col(SUBJECT_ID).cast(pl.Int64)


def _cast_time(dtype: pl.DataType, source: str) -> pl.Expr:
    col = pl.col(TIME)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return col.cast(POLARS_EVENT_SCHEMA[TIME])
    if dtype == pl.Date:
        return col.cast(POLARS_EVENT_SCHEMA[TIME])
    if dtype == pl.Null:
        return pl.lit(None, POLARS_EVENT_SCHEMA[TIME]).alias(TIME)
    raise EventsFormatError(f"{source}: column {TIME!r} must be a datetime or date, got {dtype}")


def _cast_string(name: str, dtype: pl.DataType, source: str) -> pl.Expr:
    if dtype in (pl.String, pl.Categorical, pl.Null) or isinstance(dtype, (pl.Categorical, pl.Enum)):
        return pl.col(name).cast(pl.String)
    # Another ETL may store e.g. encounter ids as integers; their text form is the id.
    if dtype.is_integer() and name not in (CODE, TEXT_VALUE):
        return pl.col(name).cast(pl.String)
    raise EventsFormatError(f"{source}: column {name!r} must be a string, got {dtype}")


def _cast_numeric(dtype: pl.DataType | None, source: str) -> pl.Expr:
    if dtype is None or dtype == pl.Null:
        return pl.lit(None, pl.Float64).alias(NUMERIC_VALUE)
    if not dtype.is_numeric():
        raise EventsFormatError(f"{source}: column {NUMERIC_VALUE!r} must be numeric, got {dtype}")
    return pl.col(NUMERIC_VALUE).cast(pl.Float64)
