"""Labels get their subject's split; frames with missing columns, duplicates or bad values are refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from ehrfm.predict.tables import FrameFormatError, attach_splits, check_labels, check_predictions

T0 = dt.datetime(2020, 1, 1)


def _labels() -> pl.DataFrame:
    return pl.DataFrame({
        "subject_id": [3, 1, 3], "prediction_time": [T0, T0, T0 + dt.timedelta(days=1)],
        "boolean_value": [True, False, False], "extra": ["a", "b", "c"],
    })


def _write_splits(root: Path, rows: dict[int, str]) -> Path:
    (root / "metadata").mkdir(parents=True)
    pl.DataFrame({"subject_id": list(rows), "split": list(rows.values())}).write_parquet(
        root / "metadata" / "subject_splits.parquet"
    )
    return root


def test_attach_splits_from_a_meds_directory_keeps_order_and_extra_columns(tmp_path: Path) -> None:
    meds = _write_splits(tmp_path, {1: "train", 3: "held_out", 4: "tuning"})
    out = attach_splits(_labels(), meds)
    assert out["split"].to_list() == ["held_out", "train", "held_out"]
    assert out["extra"].to_list() == ["a", "b", "c"]
    assert out.schema["prediction_time"] == pl.Datetime("us")


def test_attach_splits_names_subjects_without_a_split(tmp_path: Path) -> None:
    meds = _write_splits(tmp_path, {1: "train"})
    with pytest.raises(FrameFormatError, match=r"1 labelled subject\(s\) have no split, e.g. \[3\]"):
        attach_splits(_labels(), meds)
    with pytest.raises(FileNotFoundError, match="subject_splits.parquet: missing; is .* a MEDS dataset"):
        attach_splits(_labels(), tmp_path / "elsewhere")


def test_check_labels_refuses_nulls_duplicates_and_bad_splits() -> None:
    with pytest.raises(FrameFormatError, match="nulls"):
        check_labels(_labels().with_columns(boolean_value=pl.lit(None, pl.Boolean)))
    with pytest.raises(FrameFormatError, match="sharing"):
        check_labels(pl.concat([_labels(), _labels()]))
    with pytest.raises(FrameFormatError, match="unknown split"):
        check_labels(_labels().with_columns(split=pl.lit("test")), with_split=True)


def test_check_predictions() -> None:
    good = pl.DataFrame({
        "task": ["t", "t"], "model": ["m", "m"], "split": ["tuning", "held_out"], "subject_id": [1, 2],
        "prediction_time": [T0, T0], "boolean_value": [True, False],
        "predicted_boolean_probability": [0.2, 0.9],
    })
    assert check_predictions(good).schema["predicted_boolean_probability"] == pl.Float64
    with pytest.raises(FrameFormatError, match=r"\[0, 1\]"):
        check_predictions(good.with_columns(predicted_boolean_probability=pl.lit(1.2)))
    with pytest.raises(FrameFormatError, match="share"):
        check_predictions(good.with_columns(subject_id=pl.lit(1)))
    with pytest.raises(FrameFormatError, match="lacks"):
        check_predictions(good.drop("boolean_value"))
