"""Label every task on a MEDS dataset directory; write MEDS label files and a summary.

``label_meds_dataset`` is the work; ``run_label`` runs it from a :class:`LabelConfig` (the
``ehrfm label`` stage, see :mod:`ehrfm.tasks.stage`).

Output layout (:mod:`ehrfm.meds_labels` knows it; MEDS-Tab and meds-torch-data take ``<task>/``)::

    <output>/<task>/0.parquet         MEDS label schema only: subject_id, prediction_time, boolean_value
    <output>/_details/<task>.parquet  the same rows plus outcome_time, trigger_time, encounter_id
                                      and split (MEDS label files allow no extra columns)
    <output>/summary.json             per task and split: rows, positives, negatives, subjects,
                                      candidates and the count excluded by each rule

>>> import tempfile, ehrfm
>>> from ehrfm.resources import example_fhir_dir
>>> meds = tempfile.mkdtemp()
>>> _ = ehrfm.ingest_fhir(example_fhir_dir(), meds, workers=1, overwrite=True)
>>> labels = tempfile.mkdtemp()
>>> summary = label_meds_dataset(meds, ["mortality_1y"], labels)
>>> sorted(p.relative_to(labels).as_posix() for p in Path(labels).rglob("*.parquet"))
['_details/mortality_1y.parquet', 'mortality_1y/0.parquet']
>>> task = summary["tasks"]["mortality_1y"]
>>> list(task["splits"]), "censored" in task["all"]["excluded"]
(['train', 'tuning', 'held_out'], True)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from meds import LabelSchema

from ehrfm.meds_dataset import read_splits, scan_events
from ehrfm.meds_labels import DETAILS_DIR, details_path, label_shard_path, legacy_label_path
from ehrfm.outputs import meds_protected, prepare_output, refuse_overlap
from ehrfm.progress import track
from ehrfm.schema import BOOLEAN_VALUE, CODE, PREDICTION_TIME, SPLIT, SPLITS, SUBJECT_ID
from ehrfm.typed_config import resolve_config

from .catalog import load_tasks
from .concepts import ConceptSets
from .config import LabelConfig
from .definition import CodeMatch, TaskDefinition
from .durations import format_duration
from .labeler import EXCLUDED_BY, EXCLUSION_REASONS, LABEL_COLUMNS, candidate_table

log = logging.getLogger("ehrfm.tasks")

NO_SPLIT = "no_split"  # subjects absent from metadata/subject_splits.parquet
SPLIT_ORDER = SPLITS  # summary order; other names follow, sorted
SUMMARY_FILE = "summary.json"
MEDS_LABEL_COLUMNS = (SUBJECT_ID, PREDICTION_TIME, BOOLEAN_VALUE)


def to_meds_labels(labels: pl.DataFrame) -> pa.Table:
    """The MEDS label columns of ``labels`` as an Arrow table, validated by ``meds.LabelSchema``."""
    table = labels.select(MEDS_LABEL_COLUMNS).to_arrow()
    table = table.cast(pa.schema([LabelSchema.schema().field(c) for c in MEDS_LABEL_COLUMNS]))
    LabelSchema.validate(table)
    return table


def _counts(candidates: pl.DataFrame) -> dict[str, Any]:
    kept = candidates.filter(pl.col(EXCLUDED_BY).is_null())
    excluded = dict(
        candidates.filter(pl.col(EXCLUDED_BY).is_not_null()).group_by(EXCLUDED_BY).len().iter_rows()
    )
    positives = int(kept[BOOLEAN_VALUE].sum())
    return {
        "rows": kept.height,
        "positives": positives,
        "negatives": kept.height - positives,
        "subjects": kept[SUBJECT_ID].n_unique(),
        "candidates": candidates.height,
        "excluded": {reason: int(excluded.get(reason, 0)) for reason in EXCLUSION_REASONS},
    }


def task_summary(task: TaskDefinition, candidates: pl.DataFrame) -> dict[str, Any]:
    """Counts for one task: over all subjects and per split (``candidates`` carries ``split``)."""
    per_split = {str(name): _counts(part)
                 for (name,), part in candidates.group_by(SPLIT, maintain_order=True)}
    order = {name: i for i, name in enumerate(SPLIT_ORDER)}
    return {
        "prompt_token": task.prompt_token,
        "description": task.description,
        "source": task.source,
        "window": {"start": format_duration(task.window.start),
                   "end": None if task.window.end is None else format_duration(task.window.end)},
        "all": _counts(candidates),
        "splits": dict(sorted(per_split.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))),
    }


def label_meds_dataset(
    meds_dir: str | Path,
    tasks: Sequence[str | Path | TaskDefinition],
    output_dir: str | Path,
    *,
    overwrite: bool = False,
    concept_sets: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Label ``tasks`` (built-in names, YAML paths or definitions) on a MEDS dataset directory.

    Reads ``data/**/*.parquet`` lazily, writes the files described in the module docstring and
    returns the summary (also written to ``summary.json``). Existing outputs are refused unless
    ``overwrite``. ``concept_sets``: site concept files beside the shipped ones
    (:mod:`ehrfm.tasks.concepts`). A task whose trigger or label matches no code of the dataset
    is labelled (all negative, or no rows) but warned about and listed in the summary under
    ``unmatched``: on a new export that usually means a concept lacks the site's codes.
    """
    started = time.perf_counter()
    meds_dir, output = Path(meds_dir), Path(output_dir)
    definitions = load_tasks(tasks, concepts=ConceptSets.load(concept_sets))
    if not definitions:
        raise ValueError("no tasks given: name built-in tasks (see builtin_task_names()) or task YAML files")
    events = scan_events(meds_dir)
    splits = read_splits(meds_dir, required=False)
    if splits.height == 0:
        log.warning("%s has no subject splits: every subject is counted under %r in the summary",
                    meds_dir, NO_SPLIT)
    # The older one-file layout (<task>.parquet) is owned too: left beside the new folder, it
    # would make the task's labels ambiguous (readers refuse a task with both).
    owned = [part for t in definitions
             for part in (t.name, legacy_label_path("", t.name), details_path("", t.name))]
    refuse_overlap(output, meds_protected(meds_dir))
    prepare_output(output, [*owned, SUMMARY_FILE], overwrite=overwrite)
    (output / DETAILS_DIR).mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"meds_dir": str(meds_dir), "output_dir": str(output), "tasks": {}}
    dataset_codes = events.select(pl.col(CODE).unique()).collect()[CODE]  # one column, read once
    for task in track(definitions, desc="label", unit="task"):
        task_started = time.perf_counter()
        candidates = candidate_table(task, events).join(splits, on=SUBJECT_ID, how="left",
                                                        maintain_order="left")
        candidates = candidates.with_columns(pl.col(SPLIT).fill_null(NO_SPLIT))
        labels = candidates.filter(pl.col(EXCLUDED_BY).is_null())
        target = label_shard_path(output, task.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(to_meds_labels(labels), target)
        labels.select(*LABEL_COLUMNS, SPLIT).write_parquet(details_path(output, task.name))
        summary["tasks"][task.name] = task_summary(task, candidates)
        unmatched = unmatched_parts(task, dataset_codes)
        if unmatched:
            log.warning("%s: %s match no code in %s; add the dataset's codes to the task or to a concept "
                        "set (concept_sets=[...])", task.name, " and ".join(unmatched), meds_dir)
        summary["tasks"][task.name]["unmatched"] = unmatched
        summary["tasks"][task.name]["seconds"] = round(time.perf_counter() - task_started, 3)
        log.info("%s: %d rows (%d positive)", task.name, labels.height, int(labels[BOOLEAN_VALUE].sum()))
    summary["seconds"] = round(time.perf_counter() - started, 3)
    (output / SUMMARY_FILE).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    return summary


def unmatched_parts(task: TaskDefinition, codes: pl.Series) -> list[str]:
    """Which of the task's trigger and label match none of ``codes`` (names for a message)."""
    frame = codes.to_frame(CODE)
    parts = [("trigger", task.trigger.match), ("label", task.label.match)]
    return [f"its {part} ({_describe(match)})" for part, match in parts
            if frame.filter(match.expr()).height == 0]


def _describe(match: CodeMatch) -> str:
    shown = [*match.codes, *(f"{p}*" for p in match.prefixes)]
    return ", ".join(shown[:6]) + (f" and {len(shown) - 6} more" if len(shown) > 6 else "")


def run_label(config: LabelConfig | Mapping[str, Any] | None = None, /, **settings: Any) -> dict[str, Any]:
    """The ``ehrfm label`` stage as a Python call; returns the summary.

    Takes a :class:`LabelConfig`, a mapping of its settings, or its settings as keywords.
    """
    config = resolve_config(LabelConfig, config, settings, where="label")
    return label_meds_dataset(config.input, config.tasks, config.output, overwrite=config.overwrite,
                              concept_sets=config.concept_sets)


def summary_table(summary: dict[str, Any]) -> str:
    """A plain-text table of rows / positives / subjects per task and split, for the console."""
    lines = [f"{'task':<28} {'split':<10} {'rows':>7} {'pos':>6} {'neg':>7} {'subjects':>8} "
             f"{'censored':>8} {'sampled out':>11}"]
    for name, task in summary["tasks"].items():
        for split, c in [*task["splits"].items(), ("all", task["all"])]:
            lines.append(f"{name:<28} {split:<10} {c['rows']:>7} {c['positives']:>6} {c['negatives']:>7} "
                         f"{c['subjects']:>8} {c['excluded']['censored']:>8} {c['excluded']['sampling']:>11}")
    return "\n".join(lines)
