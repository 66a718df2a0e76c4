"""ehrfm's outputs read by the MEDS tools themselves: the ``meds`` schemas, ``meds_reader`` and
``meds-evaluation`` (all in the ``dev`` extra; they install beside ehrfm)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from meds import CodeMetadataSchema, DataSchema, DatasetMetadataSchema, LabelSchema, SubjectSplitSchema

import ehrfm
from ehrfm.meds_dataset import data_shards, read_splits, scan_events
from ehrfm.predict.meds_predictions import write_meds_predictions
from ehrfm.resources import example_fhir_dir
from ehrfm.schema import prediction_schema
from ehrfm.tasks import builtin_task_names, label_meds_dataset


@pytest.fixture(scope="module")
def meds_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tools") / "meds"
    ehrfm.ingest_fhir(example_fhir_dir(), out, workers=1, num_shards=2)
    return out


def test_every_ingest_output_passes_the_meds_schemas(meds_dir: Path) -> None:
    shards = data_shards(meds_dir)
    assert {p.parent.name for p in shards} == {"train", "tuning", "held_out"}
    splits = read_splits(meds_dir)
    for shard in shards:
        DataSchema.validate(pq.read_table(shard))
        subjects = pl.read_parquet(shard, columns=["subject_id"]).unique()
        assert set(splits.join(subjects, on="subject_id")["split"]) == {shard.parent.name}
    CodeMetadataSchema.validate(pq.read_table(meds_dir / "metadata" / "codes.parquet"))
    SubjectSplitSchema.validate(pq.read_table(meds_dir / "metadata" / "subject_splits.parquet"))
    DatasetMetadataSchema.validate(json.loads((meds_dir / "metadata" / "dataset.json").read_text()))


def test_labels_pass_the_meds_label_schema(meds_dir: Path, tmp_path: Path) -> None:
    label_meds_dataset(meds_dir, builtin_task_names(), tmp_path)
    for task in builtin_task_names():
        for path in (tmp_path / task).rglob("*.parquet"):
            LabelSchema.validate(pq.read_table(path))


def test_predictions_are_what_meds_evaluation_reads_unchanged(tmp_path: Path) -> None:
    schema_module = pytest.importorskip("meds_evaluation.schema", reason="meds-evaluation is in the dev extra")
    from meds_evaluation.evaluate import evaluate_binary_classification

    frame = pl.DataFrame({
        "task": ["a"] * 6, "model": ["m"] * 6, "subject_id": [1, 1, 2, 3, 4, 5],
        "prediction_time": [dt.datetime(2020, 1, d) for d in (1, 2, 1, 1, 1, 1)],
        "boolean_value": [True, True, False, False, True, False],
        "predicted_boolean_probability": [0.9, 0.7, 0.2, 0.4, 0.6, 0.1], "calibrated": [True] * 6})
    (path,) = write_meds_predictions(frame, tmp_path, ["task", "model"])
    assert path == tmp_path / "a" / "m" / "0.parquet"
    table = pq.read_table(path)
    assert table.schema.equals(prediction_schema())
    schema_module.PredictionSchema.validate(table)  # refuses extra columns and other dtypes
    # exactly what meds-evaluation-cli does with predictions_path=<this file>
    results = evaluate_binary_classification(pl.read_parquet(path))
    assert results["samples_equally_weighted"]["roc_auc_score"] == 1.0


def test_meds_reader_converts_an_ingested_dataset(meds_dir: Path, tmp_path: Path) -> None:
    meds_reader = pytest.importorskip("meds_reader", reason="meds_reader is in the dev extra")
    convert = shutil.which("meds_reader_convert")
    assert convert, "meds_reader is installed but its meds_reader_convert program is not on PATH"
    database = tmp_path / "database"
    done = subprocess.run([convert, str(meds_dir), str(database), "--num_threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    subjects = meds_reader.SubjectDatabase(str(database))
    ours = scan_events(meds_dir).group_by("subject_id").len().collect()
    assert sorted(subjects) == sorted(ours["subject_id"].to_list())
    counts = {subject_id: sum(1 for _ in subjects[subject_id].events) for subject_id in subjects}
    assert counts == dict(ours.iter_rows())
    first = min(subjects)
    codes = [event.code for event in subjects[first].events]
    assert codes == scan_events(meds_dir).filter(pl.col("subject_id") == first).collect()["code"].to_list()
