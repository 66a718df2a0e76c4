"""The multitask cohort: one row per (subject, prediction time) with its history and task labels.

Labels of all tasks are merged on ``(subject_id, prediction_time)``, so a prediction time shared
by several tasks is tokenized and run through the backbone once (its ``labels`` vector has one
entry per task, NaN where that task has no label there). Histories come from
``EventTokenizer.transform(events, cutoff=...)``: only events strictly before the prediction
time, cropped to ``context_length`` tokens keeping the patient prefix and the newest whole events.

Columns of ``Cohort.frame``: ``subject_id``, ``prediction_time``, ``split``, the five token
streams and ``length`` (``SEQUENCE_SCHEMA``), the prompt's ``prompt_time_days`` (float64 days
since 1970), ``prompt_age_years`` (NaN without a birth date), ``prompt_visit_index``, and
``labels`` (``List[Float32]``, one per task in ``task_names`` order).

>>> import datetime as dt, polars as pl
>>> long = pl.DataFrame({"task": ["a", "b", "a"], "subject_id": [1, 1, 2],
...     "prediction_time": [dt.datetime(2020, 1, 1)] * 3, "boolean_value": [True, False, False]})
>>> merge_task_labels(long, ["a", "b"]).sort("subject_id")["labels"].to_list()
[[1.0, 0.0], [0.0, nan]]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ehrfm.meds_dataset import read_splits, scan_events
from ehrfm.meds_labels import read_task_label_rows
from ehrfm.schema import BOOLEAN_VALUE, PREDICTION_TIME, SPLIT, SUBJECT_ID, TASK
from ehrfm.tokenize import EventTokenizer

from .histories import tokenize_histories

__all__ = ["LABELS", "Cohort", "build_cohort", "load_or_build_cohort", "merge_task_labels",
           "read_task_labels"]

LABELS = "labels"


def read_task_labels(labels_dir: str | Path, task_names: Sequence[str]) -> pl.DataFrame:
    """Long frame ``task, subject_id, prediction_time, boolean_value`` from each task's label files
    (``<labels_dir>/<task>/*.parquet``, or the older ``<labels_dir>/<task>.parquet``; see
    :mod:`ehrfm.meds_labels`)."""
    frames = [read_task_label_rows(labels_dir, name).select(pl.lit(name).alias(TASK), pl.all())
              for name in task_names]
    return pl.concat(frames)


def merge_task_labels(long: pl.DataFrame, task_names: Sequence[str]) -> pl.DataFrame:
    """One row per ``(subject_id, prediction_time)``; ``labels`` = per-task 1.0/0.0/NaN list."""
    duplicated = long.group_by(TASK, SUBJECT_ID, PREDICTION_TIME).len().filter(pl.col("len") > 1)
    if duplicated.height:
        row = duplicated.row(0, named=True)
        raise ValueError(f"task {row[TASK]!r} has {row['len']} labels for subject_id={row[SUBJECT_ID]} "
                         f"at {row[PREDICTION_TIME]}; a task gives one label per prediction time")
    wide = long.with_columns(pl.col(BOOLEAN_VALUE).cast(pl.Float32)).pivot(
        on=TASK, index=[SUBJECT_ID, PREDICTION_TIME], values=BOOLEAN_VALUE)
    for name in task_names:
        if name not in wide.columns:
            wide = wide.with_columns(pl.lit(None, pl.Float32).alias(name))
    return wide.select(
        SUBJECT_ID, PREDICTION_TIME,
        pl.concat_list([pl.col(name).fill_null(float("nan")) for name in task_names]).alias(LABELS),
    )


@dataclass
class Cohort:
    """Tokenized histories + per-task labels; see the module docstring for the columns."""

    frame: pl.DataFrame
    task_names: list[str]

    def __len__(self) -> int:
        return self.frame.height

    def split(self, name: str) -> Cohort:
        return self.where_split([name])

    def where_split(self, names: Sequence[str]) -> Cohort:
        """The rows whose split is one of ``names``."""
        return Cohort(self.frame.filter(pl.col(SPLIT).is_in(list(names))), self.task_names)

    def label_matrix(self) -> np.ndarray:
        """``(rows, tasks)`` float32, NaN where a task has no label for the row."""
        if not self.frame.height:
            return np.zeros((0, len(self.task_names)), dtype=np.float32)
        return np.asarray(self.frame[LABELS].to_list(), dtype=np.float32).reshape(-1, len(self.task_names))

    def counts(self) -> dict[str, dict[str, int]]:
        """Per task: labelled rows and positives in each split."""
        out: dict[str, dict[str, int]] = {}
        for split in sorted(set(self.frame[SPLIT].to_list())):
            matrix = self.split(split).label_matrix()
            for k, task in enumerate(self.task_names):
                column = matrix[:, k]
                out.setdefault(task, {})[f"{split}_rows"] = int((~np.isnan(column)).sum())
                out[task][f"{split}_positives"] = int(np.nansum(column))
        return out


def build_cohort(meds_dir: str | Path, tokenizer: EventTokenizer, long_labels: pl.DataFrame,
                 task_names: Sequence[str], *, context_length: int) -> Cohort:
    """Merge labels, attach splits, tokenize each history (strictly before its prediction time)."""
    rows = merge_task_labels(long_labels, task_names)
    splits = read_splits(meds_dir)
    rows = rows.join(splits, on=SUBJECT_ID, how="left")
    if rows[SPLIT].null_count():
        missing = rows.filter(pl.col(SPLIT).is_null())[SUBJECT_ID][0]
        raise ValueError(f"subject_id={missing} has labels but no split in {Path(meds_dir) / 'metadata'}")
    subjects = rows.select(SUBJECT_ID).unique()
    # a split-sharded dataset is read only in the folders of the labelled subjects' splits
    wanted = rows[SPLIT].unique().to_list()
    events = scan_events(meds_dir, splits=wanted).join(subjects.lazy(), on=SUBJECT_ID, how="semi").collect()
    frame = tokenize_histories(events, tokenizer, rows, context_length=context_length)
    return Cohort(frame, list(task_names))


def load_or_build_cohort(cache_dir: Path, meds_dir: Path, tokenizer: EventTokenizer, labels_dir: Path,
                         task_names: list[str], context_length: int) -> Cohort:
    """The cohort cached in ``cache_dir`` when it matches tasks, labels and context; else built and cached."""
    long = read_task_labels(labels_dir, task_names)
    key = {"tasks": task_names, "context_length": context_length, "meds_dir": str(Path(meds_dir).resolve()),
           "labels_rows": long.height, "labels_hash": int(long.hash_rows().sum()) if long.height else 0,
           "vocab_size": tokenizer.vocab_size}
    frame_path, key_path = cache_dir / "cohort.parquet", cache_dir / "cohort.json"
    if frame_path.is_file() and key_path.is_file() and json.loads(key_path.read_text()) == key:
        return Cohort(pl.read_parquet(frame_path), task_names)
    cohort = build_cohort(meds_dir, tokenizer, long, task_names, context_length=context_length)
    cohort.frame.write_parquet(frame_path)
    key_path.write_text(json.dumps(key, indent=2) + "\n")
    return cohort
