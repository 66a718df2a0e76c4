"""The multitask cohort: label merging, splits, histories strictly before the prediction time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from meds import subject_splits_filepath

from ehrfm.meds_dataset import mark_complete
from ehrfm.predict.cohort import build_cohort, merge_task_labels
from ehrfm.predict.cohort_dataset import CohortDataset, collate_cohort
from ehrfm.schema import POLARS_EVENT_SCHEMA
from ehrfm.tokenize import EventTokenizer
from ehrfm.tokenize.sequence_schema import days_since_epoch

T0 = dt.datetime(2020, 1, 1, 8, 0)


def _event(subject: int, when: dt.datetime | None, code: str, value: float | None = None) -> dict:
    row = dict.fromkeys(POLARS_EVENT_SCHEMA)
    row.update(subject_id=subject, time=when, code=code, numeric_value=value)
    return row


def _meds(root: Path) -> Path:
    rows = []
    for subject in (1, 2, 3):
        rows += [_event(subject, None, "GENDER/female"),
                 _event(subject, dt.datetime(1970, 6, 1), "MEDS_BIRTH")]
        for day in range(6):
            when = T0 + dt.timedelta(days=10 * day)
            rows += [_event(subject, when, "VISIT_START/AMB"), _event(subject, when, f"SNOMED/{100 + day}"),
                     _event(subject, when + dt.timedelta(hours=1), "LOINC/8480-6", 120.0 + day),
                     _event(subject, when + dt.timedelta(hours=2), "VISIT_END/AMB")]
    (root / "data").mkdir(parents=True)
    (root / "metadata").mkdir()
    pl.DataFrame(rows, schema=POLARS_EVENT_SCHEMA).sort("subject_id", "time", nulls_last=False).write_parquet(
        root / "data" / "0.parquet")
    pl.DataFrame({"subject_id": [1, 2, 3], "split": ["train", "tuning", "held_out"]}).write_parquet(
        root / subject_splits_filepath)
    mark_complete(root, {"dataset_name": "test_cohort"})
    return root


def _labels(rows: list[tuple[str, int, dt.datetime, bool]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"task": pl.String, "subject_id": pl.Int64,
                                      "prediction_time": pl.Datetime("us"),
                                      "boolean_value": pl.Boolean}, orient="row")


def test_merge_puts_tasks_sharing_a_prediction_time_on_one_row() -> None:
    when = T0 + dt.timedelta(days=15)
    merged = merge_task_labels(_labels([("a", 1, when, True), ("b", 1, when, False), ("b", 2, when, True)]),
                               ["a", "b", "c"])
    rows = {r["subject_id"]: r["labels"] for r in merged.iter_rows(named=True)}
    assert rows[1][:2] == [1.0, 0.0] and np.isnan(rows[1][2])
    assert np.isnan(rows[2][0]) and rows[2][1] == 1.0
    with pytest.raises(ValueError, match="one label per prediction time"):
        merge_task_labels(_labels([("a", 1, when, True), ("a", 1, when, False)]), ["a"])


def test_histories_hold_only_events_strictly_before_the_prediction_time(tmp_path: Path) -> None:
    meds = _meds(tmp_path / "meds")
    events = pl.read_parquet(meds / "data" / "0.parquet")
    tokenizer = EventTokenizer(min_count=1).fit(events)
    at_visit = T0 + dt.timedelta(days=20)  # exactly the start of subject 1's third visit
    labels = _labels([("a", 1, at_visit, True), ("b", 1, at_visit, False),
                      ("a", 2, T0 + dt.timedelta(days=35), False),
                      ("a", 3, T0 - dt.timedelta(days=1), True)])
    cohort = build_cohort(meds, tokenizer, labels, ["a", "b"], context_length=512)
    assert len(cohort) == 3 and cohort.frame["split"].to_list() == ["train", "tuning", "held_out"]
    prediction_days = days_since_epoch(cohort.frame["prediction_time"])
    for times, limit in zip(cohort.frame["time_days"].to_list(), prediction_days):
        assert not np.isnan(times).any()  # a cut history's times are always known (prefix included)
        assert max(times) < limit
    first = cohort.frame.row(0, named=True)
    decoded = tokenizer.convert_ids_to_tokens(first["input_ids"])
    # the visit at the prediction time is not in
    assert "SNOMED/101" in decoded and "SNOMED/102" not in decoded
    assert first["prompt_time_days"] == pytest.approx(prediction_days[0])
    assert first["prompt_age_years"] == pytest.approx(
        (at_visit - dt.datetime(1970, 6, 1)).total_seconds() / 86400 / 365.25, abs=1e-9)
    assert first["prompt_visit_index"] == max(first["visit_index"])
    # A prediction time before any event: the prefix only, and collation gives finite times.
    third = cohort.frame.row(2, named=True)
    assert third["length"] < first["length"]
    dataset = CohortDataset(cohort)
    batch = collate_cohort([dataset[i] for i in range(3)], tokenizer.pad_token_id)
    assert not batch["time_days"].isnan().any() and not batch["age_years"].isnan().any()
    assert batch["labels"].shape == (3, 2) and batch["labels"][1, 1].isnan()


def test_labels_of_a_subject_without_a_split_are_an_error(tmp_path: Path) -> None:
    meds = _meds(tmp_path / "meds")
    tokenizer = EventTokenizer(min_count=1).fit(pl.read_parquet(meds / "data" / "0.parquet"))
    with pytest.raises(ValueError, match="subject_id=9 has labels but no split"):
        build_cohort(meds, tokenizer, _labels([("a", 9, T0, True)]), ["a"], context_length=64)
