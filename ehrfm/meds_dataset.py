"""Reading a MEDS dataset directory: its event shards, subject splits and subject table.

Every stage that reads a MEDS dataset (tokenize, label, pretrain, finetune, evaluate) reads it
through these functions, so a missing or malformed file fails the same way everywhere: with a
:class:`MedsDatasetError` naming the file and what is wrong (:class:`MissingMedsFileError`, also
a ``FileNotFoundError``, when the file or folder is absent).

Layout (MEDS v0.4)::

    <meds_dir>/data/**/*.parquet                  events: subject_id, time, code, ...
    <meds_dir>/metadata/subject_splits.parquet    subject_id, split (train / tuning / held_out)
    <meds_dir>/metadata/subjects.parquet          subject_id <-> FHIR Patient id (ehrfm ingest)
    <meds_dir>/metadata/dataset.json              MEDS dataset metadata: written last, it marks the
                                                  dataset complete (no stage reads one without it)

>>> import tempfile, ehrfm
>>> from ehrfm.resources import example_fhir_dir
>>> meds = tempfile.mkdtemp()
>>> _ = ehrfm.ingest_fhir(example_fhir_dir(), meds, workers=1, overwrite=True)
>>> sorted(set(read_splits(meds)["split"]))
['held_out', 'train', 'tuning']
>>> read_subjects(meds).columns[:2]
['subject_id', 'fhir_patient_id']
>>> read_splits(tempfile.mkdtemp())
Traceback (most recent call last):
...
ehrfm.meds_dataset.MissingMedsFileError: .../metadata/subject_splits.parquet: missing; is ... a MEDS dataset?
(its metadata lists each subject's split)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
from meds import DatasetMetadataSchema, data_subdirectory, dataset_metadata_filepath, subject_splits_filepath

from ehrfm.schema import SPLIT, SUBJECT_ID, TRAIN

__all__ = [
    "FHIR_PATIENT_ID",
    "SUBJECTS_FILE",
    "IncompleteMedsDatasetError",
    "MedsDatasetError",
    "MissingMedsFileError",
    "data_shards",
    "mark_complete",
    "has_event_shards",
    "is_meds_dataset",
    "read_splits",
    "read_subjects",
    "scan_events",
    "train_events",
]

FHIR_PATIENT_ID = "fhir_patient_id"  # the Patient.id a subject_id was made from
SUBJECTS_FILE = "metadata/subjects.parquet"  # written by ehrfm ingest; other ETLs may lack it


class MedsDatasetError(ValueError):
    """A MEDS dataset directory lacks a file, or a file in it lacks a column."""


class MissingMedsFileError(MedsDatasetError, FileNotFoundError):
    """A file or folder that a MEDS dataset must hold does not exist."""


class IncompleteMedsDatasetError(MissingMedsFileError):
    """Event shards without ``metadata/dataset.json``: what an interrupted ingest leaves behind."""


def mark_complete(meds_dir: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``metadata/dataset.json`` (validated against the MEDS schema) as the last file.

    Written atomically (a temporary sibling, then a rename): its presence means every other
    file of the dataset was written. Every reader here refuses a dataset without it.
    """
    from ehrfm.outputs import write_text_atomic

    DatasetMetadataSchema.validate(metadata)
    return write_text_atomic(Path(meds_dir) / dataset_metadata_filepath, json.dumps(metadata, indent=2) + "\n")


def data_shards(meds_dir: str | Path) -> list[Path]:
    """The dataset's ``data/**/*.parquet`` files, sorted; an error names the folder if none, or if
    the dataset is incomplete (no ``metadata/dataset.json``, see :func:`mark_complete`)."""
    root = Path(meds_dir) / data_subdirectory
    shards = sorted(root.rglob("*.parquet"))
    if not shards:
        raise MissingMedsFileError(f"{root}: no *.parquet shards; is {meds_dir} a MEDS dataset directory?")
    if not (Path(meds_dir) / dataset_metadata_filepath).is_file():
        raise IncompleteMedsDatasetError(
            f"{Path(meds_dir) / dataset_metadata_filepath}: missing, so {meds_dir} is not a complete MEDS "
            "dataset (an interrupted `ehrfm ingest` leaves its event shards without it): run the ingest "
            "again; a dataset from another ETL needs its MEDS dataset.json")
    return shards


def has_event_shards(path: str | Path) -> bool:
    """Whether ``path`` holds MEDS event shards (``data/**/*.parquet``): a MEDS dataset, not FHIR."""
    return any((Path(path) / data_subdirectory).rglob("*.parquet"))


def is_meds_dataset(path: str | Path) -> bool:
    """Whether ``path`` holds a complete MEDS dataset: event shards, the subject splits and the
    ``dataset.json`` that ingest writes last (a folder an interrupted ingest left is not one)."""
    path = Path(path)
    return (has_event_shards(path) and (path / subject_splits_filepath).is_file()
            and (path / dataset_metadata_filepath).is_file())


def scan_events(meds_dir: str | Path) -> pl.LazyFrame:
    """Every event of every shard, lazily."""
    return pl.scan_parquet([str(p) for p in data_shards(meds_dir)])


def _read_columns(path: Path, columns: tuple[str, ...], what: str) -> pl.DataFrame:
    frame = pl.read_parquet(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MedsDatasetError(f"{path}: needs column(s) {missing} ({what}); found {frame.columns}")
    return frame


def read_splits(meds_dir: str | Path, *, required: bool = True) -> pl.DataFrame:
    """``subject_id`` (Int64), ``split`` from ``metadata/subject_splits.parquet``, one row per subject.

    With ``required=False`` a missing file gives an empty frame (the caller decides what a
    subject without a split means); a malformed file is an error either way.
    """
    path = Path(meds_dir) / subject_splits_filepath
    if not path.is_file():
        if not required:
            return pl.DataFrame(schema={SUBJECT_ID: pl.Int64, SPLIT: pl.String})
        raise MissingMedsFileError(
            f"{path}: missing; is {meds_dir} a MEDS dataset? (its metadata lists each subject's split)")
    splits = _read_columns(path, (SUBJECT_ID, SPLIT), "the subject splits")
    return (splits.select(pl.col(SUBJECT_ID).cast(pl.Int64), pl.col(SPLIT).cast(pl.String))
            .unique(SUBJECT_ID, keep="first", maintain_order=True))


def read_subjects(meds_dir: str | Path) -> pl.DataFrame:
    """``metadata/subjects.parquet``: ``subject_id`` and the FHIR ``fhir_patient_id`` it came from."""
    path = Path(meds_dir) / SUBJECTS_FILE
    if not path.is_file():
        raise MissingMedsFileError(f"{path}: missing; datasets written by `ehrfm ingest` map subject_id "
                                   "to the FHIR Patient id there")
    return _read_columns(path, (SUBJECT_ID, FHIR_PATIENT_ID), "subject_id <-> FHIR Patient id")


def train_events(meds_dir: str | Path) -> pl.LazyFrame:
    """All events of train subjects, lazily, across every shard."""
    splits = read_splits(meds_dir)
    train_ids = splits.filter(pl.col(SPLIT) == TRAIN).select(SUBJECT_ID)
    if train_ids.height == 0:
        raise MedsDatasetError(f"{Path(meds_dir) / subject_splits_filepath}: no subject has split {TRAIN!r}")
    return scan_events(meds_dir).join(train_ids.lazy(), on=SUBJECT_ID, how="semi")
