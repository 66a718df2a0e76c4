"""Reading a MEDS dataset directory: its event shards, subject splits and subject table.

Every stage that reads a MEDS dataset (tokenize, label, pretrain, finetune, evaluate) reads it
through these functions, so a missing or malformed file fails the same way everywhere: with a
:class:`MedsDatasetError` naming the file and what is wrong (:class:`MissingMedsFileError`, also
a ``FileNotFoundError``, when the file or folder is absent).

Layout (MEDS v0.4)::

    <meds_dir>/data/<split>/<n>.parquet           events: subject_id, time, code, ... (split-sharded,
                                                  as ehrfm ingest and MEDS-Transforms write them)
    <meds_dir>/data/<n>.parquet                   the same, flat (older ehrfm, other ETLs)
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
>>> sorted({shard_split(meds, p) for p in data_shards(meds)})
['held_out', 'train', 'tuning']
>>> [shard_id(meds, p) for p in data_shards(meds, splits=["train"])]
['train-0']
>>> read_splits(tempfile.mkdtemp())
Traceback (most recent call last):
...
ehrfm.meds_dataset.MissingMedsFileError: .../metadata/subject_splits.parquet: missing; is ... a MEDS dataset?
(its metadata lists each subject's split)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl
from meds import DatasetMetadataSchema, data_subdirectory, dataset_metadata_filepath, subject_splits_filepath

from ehrfm.schema import SPLIT, SPLITS, SUBJECT_ID, TRAIN

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
    "shard_id",
    "shard_split",
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


def data_shards(meds_dir: str | Path, *, splits: Iterable[str] | None = None) -> list[Path]:
    """The dataset's event shards, sorted: ``data/<split>/**/*.parquet`` and flat ``data/*.parquet``.

    An error names the folder if there are none, or if the dataset is incomplete (no
    ``metadata/dataset.json``, see :func:`mark_complete`). With ``splits``, a split-sharded
    dataset gives only those splits' folders; a shard whose folder names no split (a flat
    shard, or ``data/part-0/``) may hold anyone, so it is always kept: callers that need
    exactly those subjects filter by ``metadata/subject_splits.parquet`` (as :func:`scan_events`
    does).
    """
    root = Path(meds_dir) / data_subdirectory
    shards = sorted(root.rglob("*.parquet"))
    if not shards:
        raise MissingMedsFileError(f"{root}: no *.parquet shards; is {meds_dir} a MEDS dataset directory?")
    if not (Path(meds_dir) / dataset_metadata_filepath).is_file():
        raise IncompleteMedsDatasetError(
            f"{Path(meds_dir) / dataset_metadata_filepath}: missing, so {meds_dir} is not a complete MEDS "
            "dataset (an interrupted `ehrfm ingest` leaves its event shards without it): run the ingest "
            "again; a dataset from another ETL needs its MEDS dataset.json")
    if splits is None:
        return shards
    wanted = set(splits)
    return [p for p in shards if shard_split(meds_dir, p) in wanted or shard_split(meds_dir, p) is None]


def shard_split(meds_dir: str | Path, shard: str | Path) -> str | None:
    """The split a shard's folder names (``data/train/0.parquet`` -> ``'train'``), or None for a flat
    shard or a folder that is not one of the MEDS split names (train, tuning, held_out)."""
    parts = Path(shard).relative_to(Path(meds_dir) / data_subdirectory).parts
    return parts[0] if len(parts) > 1 and parts[0] in SPLITS else None


def shard_id(meds_dir: str | Path, shard: str | Path) -> str:
    """A name for a shard that is unique in its dataset and safe as a file stem: its path under
    ``data/`` without ``.parquet``, folders joined by ``-`` (``train/0.parquet`` -> ``'train-0'``;
    the flat ``0.parquet`` -> ``'0'``). Outputs kept per shard (score parts) are named by it,
    because stems repeat across split folders."""
    relative = Path(shard).relative_to(Path(meds_dir) / data_subdirectory)
    return "-".join(relative.with_suffix("").parts)


def has_event_shards(path: str | Path) -> bool:
    """Whether ``path`` holds MEDS event shards (``data/**/*.parquet``): a MEDS dataset, not FHIR."""
    return any((Path(path) / data_subdirectory).rglob("*.parquet"))


def is_meds_dataset(path: str | Path) -> bool:
    """Whether ``path`` holds a complete MEDS dataset: event shards, the subject splits and the
    ``dataset.json`` that ingest writes last (a folder an interrupted ingest left is not one)."""
    path = Path(path)
    return (has_event_shards(path) and (path / subject_splits_filepath).is_file()
            and (path / dataset_metadata_filepath).is_file())


def scan_events(meds_dir: str | Path, *, splits: Iterable[str] | None = None) -> pl.LazyFrame:
    """Every event of every shard, lazily; with ``splits``, only those splits' subjects.

    A split-sharded dataset is read only in those splits' folders (and flat shards, which may
    hold anyone); the subjects are still checked against ``metadata/subject_splits.parquet``,
    so a subject filed in the wrong folder never leaks into another split.
    """
    if splits is None:
        return pl.scan_parquet([str(p) for p in data_shards(meds_dir)])
    wanted = list(splits)
    ids = read_splits(meds_dir).filter(pl.col(SPLIT).is_in(wanted)).select(SUBJECT_ID)
    shards = data_shards(meds_dir, splits=wanted)
    return pl.scan_parquet([str(p) for p in shards]).join(ids.lazy(), on=SUBJECT_ID, how="semi")


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
    """All events of train subjects, lazily (a split-sharded dataset is read in ``data/train/`` only)."""
    splits = read_splits(meds_dir)
    if splits.filter(pl.col(SPLIT) == TRAIN).height == 0:
        raise MedsDatasetError(f"{Path(meds_dir) / subject_splits_filepath}: no subject has split {TRAIN!r}")
    return scan_events(meds_dir, splits=[TRAIN])
