"""Small MEDS frames and dataset directories written in code, for the tokenizer tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
from meds import code_metadata_filepath, subject_splits_filepath

from ehrfm.meds_dataset import mark_complete
from ehrfm.schema import (
    CODE,
    ENCOUNTER_ID,
    NUMERIC_VALUE,
    POLARS_EVENT_SCHEMA,
    RESOURCE_TYPE,
    SUBJECT_ID,
    TEXT_VALUE,
    TIME,
    UNIT,
)


def ts(text: str) -> dt.datetime:
    """``"2020-01-02 03:04"`` -> datetime (tests read better with literal times)."""
    return dt.datetime.fromisoformat(text)


def event(
    subject: int,
    time: str | None,
    code: str,
    value: float | None = None,
    *,
    text: str | None = None,
    unit: str | None = None,
    encounter: str | None = None,
    resource_type: str | None = None,
) -> dict[str, Any]:
    return {
        SUBJECT_ID: subject,
        TIME: ts(time) if time else None,
        CODE: code,
        NUMERIC_VALUE: value,
        TEXT_VALUE: text,
        RESOURCE_TYPE: resource_type,
        "resource_id": None,
        ENCOUNTER_ID: encounter,
        UNIT: unit,
    }


def events_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """MEDS events with ehrfm's exact dtypes (numeric_value float32, as ingest writes it)."""
    return pl.DataFrame(rows, schema=POLARS_EVENT_SCHEMA)


def patient(subject: int, sex: str = "female", birth: str = "1980-05-01") -> list[dict[str, Any]]:
    return [event(subject, None, f"GENDER/{sex}"), event(subject, None, "RACE/2106-3"),
            event(subject, birth, "MEDS_BIRTH")]


def visit(subject: int, enc: str, start: str, end: str, cls: str = "AMB",
          *inner: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        event(subject, start, f"VISIT_START/{cls}", encounter=enc, resource_type="Encounter"),
        event(subject, start, "SNOMED/185349003", encounter=enc, resource_type="Encounter"),
        *inner,
        event(subject, end, f"VISIT_END/{cls}", encounter=enc, resource_type="Encounter"),
    ]


def write_meds(root: Path, events: pl.DataFrame, splits: dict[int, str], *, shards: int = 1,
               descriptions: dict[str, str] | None = None) -> Path:
    """Write a minimal MEDS dataset directory (data shards, splits, codes)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    subjects = sorted(events[SUBJECT_ID].unique().to_list())
    for i in range(shards):
        mine = subjects[i::shards]
        events.filter(pl.col(SUBJECT_ID).is_in(mine)).sort(SUBJECT_ID, TIME, nulls_last=False).write_parquet(
            root / "data" / f"{i}.parquet"
        )
    pl.DataFrame({SUBJECT_ID: list(splits), "split": list(splits.values())},
                 schema={SUBJECT_ID: pl.Int64, "split": pl.String}).write_parquet(
        root / subject_splits_filepath
    )
    descriptions = descriptions or {}
    pl.DataFrame({CODE: list(descriptions), "description": list(descriptions.values())},
                 schema={CODE: pl.String, "description": pl.String}).write_parquet(
        root / code_metadata_filepath
    )
    mark_complete(root, {"dataset_name": "meds_builders"})
    return root
