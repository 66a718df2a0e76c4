"""Where a labels directory keeps each task's labels: the one place that knows the layout.

``ehrfm label`` writes, and every reader in ehrfm (finetune, evaluate, the cohort) reads::

    <labels>/<task>/0.parquet          MEDS label schema only: subject_id, prediction_time,
                                       boolean_value (the folder MEDS-Tab and meds-torch-data take
                                       as one task's labels; other tools' labels may hold several
                                       shards, <task>/*.parquet, all read)
    <labels>/_details/<task>.parquet   ehrfm's audit columns for the same rows (outcome_time, ...);
                                       ``_details`` cannot be a task name, so no <task>/ glob sees it
    <labels>/summary.json              counts per task and split

Labels written by older ehrfm, ``<labels>/<task>.parquet``, are still read; a folder holding both
layouts for one task is refused, since nothing says which is current.

>>> import tempfile, datetime as dt, polars as pl
>>> labels = tempfile.mkdtemp()
>>> rows = pl.DataFrame({"subject_id": [1], "prediction_time": [dt.datetime(2020, 1, 1)],
...                      "boolean_value": [True]})
>>> label_shard_path(labels, "mortality_1y").relative_to(labels).as_posix()
'mortality_1y/0.parquet'
>>> path = label_shard_path(labels, "mortality_1y"); path.parent.mkdir()
>>> rows.write_parquet(path)
>>> read_task_label_rows(labels, "mortality_1y")["boolean_value"].to_list()
[True]
>>> has_task_labels(labels, "readmission_30d")
False
>>> read_task_label_rows(labels, "readmission_30d")
Traceback (most recent call last):
...
ehrfm.meds_labels.MissingLabelsError: .../readmission_30d/*.parquet: no labels for task 'readmission_30d' (nor the older .../readmission_30d.parquet); run `ehrfm label` (or let finetune build them)
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from ehrfm.schema import BOOLEAN_VALUE, PREDICTION_TIME, SUBJECT_ID

__all__ = ["DETAILS_DIR", "LABEL_SHARD", "LabelsLayoutError", "MissingLabelsError", "details_path",
           "has_task_labels", "label_shard_path", "legacy_label_path", "read_task_label_rows",
           "task_label_files"]

log = logging.getLogger("ehrfm.labels")

LABEL_SHARD = "0.parquet"
DETAILS_DIR = "_details"  # a leading "_" is never a task name (tasks start with a letter)


class LabelsLayoutError(ValueError):
    """A labels directory is ambiguous or a label file is malformed; the message names the file."""


class MissingLabelsError(LabelsLayoutError, FileNotFoundError):
    """No label file for a task in either layout."""


def label_shard_path(labels_dir: str | Path, task: str) -> Path:
    """``<labels>/<task>/0.parquet``: where ``ehrfm label`` writes a task's MEDS labels."""
    return Path(labels_dir) / task / LABEL_SHARD


def legacy_label_path(labels_dir: str | Path, task: str) -> Path:
    """``<labels>/<task>.parquet``: where ehrfm before the split-sharded layout wrote them."""
    return Path(labels_dir) / f"{task}.parquet"


def details_path(labels_dir: str | Path, task: str) -> Path:
    """``<labels>/_details/<task>.parquet``: the audit columns, outside every label glob."""
    return Path(labels_dir) / DETAILS_DIR / f"{task}.parquet"


def task_label_files(labels_dir: str | Path, task: str) -> list[Path]:
    """The label files of ``task``: ``<task>/*.parquet`` (sorted), else the older ``<task>.parquet``.

    Raises :class:`MissingLabelsError` when neither exists, :class:`LabelsLayoutError` when both do.
    """
    folder = Path(labels_dir) / task
    shards = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    legacy = legacy_label_path(labels_dir, task)
    if shards and legacy.is_file():
        raise LabelsLayoutError(f"{legacy}: task {task!r} has labels in both {folder}/ and this older file; "
                                "remove the one that is not current (or label again with overwrite=true)")
    if shards:
        return shards
    if legacy.is_file():
        log.info("reading %s (the older one-file label layout; `ehrfm label` now writes %s)", legacy,
                 label_shard_path(labels_dir, task))
        return [legacy]
    raise MissingLabelsError(f"{folder}/*.parquet: no labels for task {task!r} (nor the older {legacy}); "
                             "run `ehrfm label` (or let finetune build them)")


def has_task_labels(labels_dir: str | Path, task: str) -> bool:
    """Whether ``task`` has label files in ``labels_dir`` (either layout)."""
    try:
        task_label_files(labels_dir, task)
    except MissingLabelsError:
        return False
    return True


def read_task_label_rows(labels_dir: str | Path, task: str) -> pl.DataFrame:
    """``subject_id`` (Int64), ``prediction_time`` (Datetime us), ``boolean_value`` of one task.

    Errors name the file: a missing column, or a null label.
    """
    frames = []
    for path in task_label_files(labels_dir, task):
        columns = pl.read_parquet_schema(path)
        missing = [c for c in (SUBJECT_ID, PREDICTION_TIME, BOOLEAN_VALUE) if c not in columns]
        if missing:
            raise LabelsLayoutError(f"{path}: MEDS labels need column(s) {missing}; found {list(columns)}")
        frame = pl.read_parquet(path, columns=[SUBJECT_ID, PREDICTION_TIME, BOOLEAN_VALUE])
        if frame[BOOLEAN_VALUE].null_count():
            raise LabelsLayoutError(f"{path}: {frame[BOOLEAN_VALUE].null_count()} rows have a null {BOOLEAN_VALUE}")
        frames.append(frame.select(pl.col(SUBJECT_ID).cast(pl.Int64), pl.col(PREDICTION_TIME).cast(pl.Datetime("us")),
                                   pl.col(BOOLEAN_VALUE).cast(pl.Boolean)))
    return pl.concat(frames)
