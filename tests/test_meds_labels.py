"""The labels layout: one folder per task holding only MEDS label rows; the older one-file layout read."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from meds import LabelSchema

import ehrfm
from ehrfm.meds_labels import LabelsLayoutError, MissingLabelsError, read_task_label_rows, task_label_files
from ehrfm.predict.cohort import read_task_labels
from ehrfm.resources import example_fhir_dir
from ehrfm.tasks import builtin_task_names, label_meds_dataset

ROWS = pl.DataFrame({"subject_id": [1, 2], "prediction_time": [dt.datetime(2020, 1, 1)] * 2,
                     "boolean_value": [True, False]})


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    meds = tmp_path_factory.mktemp("meds")
    ehrfm.ingest_fhir(example_fhir_dir(), meds, workers=1, overwrite=True)
    out = tmp_path_factory.mktemp("labels")
    label_meds_dataset(meds, builtin_task_names(), out)
    return out


def test_every_task_folder_holds_only_meds_label_rows(labelled: Path) -> None:
    # What MEDS-Tab / meds-torch-data read for one task: <labels>/<task>/*.parquet (and **/*.parquet)
    for task in builtin_task_names():
        files = sorted((labelled / task).rglob("*.parquet"))
        assert [p.name for p in files] == ["0.parquet"], files
        LabelSchema.validate(pq.read_table(files[0]))  # no extra column is allowed there
    # The details and the summary sit where no task glob reaches (a task name starts with a letter).
    assert {p.name for p in labelled.iterdir()} == {*builtin_task_names(), "_details", "summary.json",
                                                    ".ehrfm-output.json"}
    assert (labelled / "_details" / f"{builtin_task_names()[0]}.parquet").is_file()


def test_the_older_one_file_layout_is_still_read(tmp_path: Path) -> None:
    ROWS.write_parquet(tmp_path / "old_task.parquet")
    assert task_label_files(tmp_path, "old_task") == [tmp_path / "old_task.parquet"]
    assert read_task_labels(tmp_path, ["old_task"])["boolean_value"].to_list() == [True, False]
    # several shards in a task folder (another tool's labels) are all read
    (tmp_path / "new_task").mkdir()
    ROWS.head(1).write_parquet(tmp_path / "new_task" / "0.parquet")
    ROWS.tail(1).write_parquet(tmp_path / "new_task" / "1.parquet")
    assert read_task_label_rows(tmp_path, "new_task")["subject_id"].to_list() == [1, 2]


def test_ambiguous_or_missing_or_malformed_labels_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "both").mkdir()
    ROWS.write_parquet(tmp_path / "both" / "0.parquet")
    ROWS.write_parquet(tmp_path / "both.parquet")
    with pytest.raises(LabelsLayoutError, match=r"both.parquet: task 'both' has labels in both"):
        read_task_label_rows(tmp_path, "both")
    with pytest.raises(MissingLabelsError, match=r"nothing/\*.parquet: no labels for task 'nothing'"):
        read_task_label_rows(tmp_path, "nothing")
    ROWS.drop("boolean_value").write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(LabelsLayoutError, match=r"bad.parquet: MEDS labels need column\(s\) \['boolean_value'\]"):
        read_task_label_rows(tmp_path, "bad")


def test_labelling_again_replaces_an_older_layout_file(tmp_path: Path) -> None:
    from ehrfm.outputs import record_written

    meds = tmp_path / "meds"
    ehrfm.ingest_fhir(example_fhir_dir(), meds, workers=1)
    out = tmp_path / "labels"
    out.mkdir()
    ROWS.write_parquet(out / "mortality_1y.parquet")  # what an older ehrfm label run left
    record_written(out, ["mortality_1y.parquet"])
    with pytest.raises(FileExistsError, match="mortality_1y.parquet: already exists"):
        label_meds_dataset(meds, ["mortality_1y"], out)
    label_meds_dataset(meds, ["mortality_1y"], out, overwrite=True)
    assert not (out / "mortality_1y.parquet").exists()
    assert task_label_files(out, "mortality_1y") == [out / "mortality_1y" / "0.parquet"]
