"""``score(...)``: a model bundle applied to a whole population, shard by shard.

The input is a MEDS dataset, or FHIR files and folders (ingested into ``<output>/meds`` first;
codes the tokenizer never saw map to its unknown tokens, nothing is added to its vocabulary).
Each MEDS shard is scored on its own, so memory follows the largest shard, not the population,
and every task comes from one history pass per patient and prediction time. Outputs under
``output``, each written to a temporary sibling and renamed, so an interrupted run never leaves
a file that looks complete::

    parts/<shard>.parquet, parts/<shard>.skipped.parquet   per-shard results (resume units; <shard>
                             is the MEDS shard's ``shard_id``: ``train-0``, or ``0`` when flat)
    states/<shard>.states.safetensors   with save_states: each patient's recurrent state
    predictions/<task>/0.parquet   the MEDS prediction schema exactly (subject_id, prediction_time,
                             boolean_value, predicted_boolean_value, predicted_boolean_probability),
                             which meds-evaluation reads unchanged (:mod:`ehrfm.predict.meds_predictions`);
                             with ``labels_dir``, the rows that task labelled, boolean_value its label;
                             without, every row, boolean_value null (no outcome known yet)
    prediction_details.parquet   ehrfm's table of the same predictions: subject_id, prediction_time,
                             task, predicted_boolean_probability, calibrated, model, model_version,
                             fhir_patient_id, boolean_value
    risk_assessments.ndjson  FHIR R4 RiskAssessment, one per patient, prediction time and task
    skipped.parquet          rows not scored, with the reason
    summary.json             scored and skipped counts, by reason; shards resumed; patients/s

A rerun with the same settings skips the shards already done and writes identical files;
different settings refuse to mix with earlier results unless ``overwrite``.

Scale-out: shards are independent, so ``workers=N worker=k`` scores only shards ``k, k+N, ...``
and writes their parts, nothing else; several such jobs (processes, Slurm tasks) can share one
``output``. A final run with the same settings and no ``worker`` finds every shard done and
merges the parts into the outputs above, identical to a single run's. Through Hydra::

    ehrfm score -m hydra/launcher=joblib workers=2 worker=0,1 bundle=... input=meds output=scores
    ehrfm score bundle=... input=meds output=scores          # merge

Incremental rescoring: ``save_states=true`` keeps each patient's backbone state after their
history; a later run with ``states_from=<that output>/states`` on data with new events reads only
the tokens after what each state has read, for every history that starts with exactly those
tokens and fits ``context_length`` (so the result equals a full rescore); all others are read
whole (:mod:`ehrfm.predict.states`).

``ehrfm score`` (:mod:`ehrfm.score.stage`) is this function behind Hydra.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import torch

from ehrfm.meds_dataset import (
    FHIR_PATIENT_ID,
    MissingMedsFileError,
    data_shards,
    has_event_shards,
    read_subjects,
    shard_id,
)
from ehrfm.meds_labels import read_task_label_rows
from ehrfm.outputs import (
    ensure_output_dir,
    meds_protected,
    record_written,
    refuse_overlap,
    remove_written,
    write_parquet_atomic,
    write_text_atomic,
)
from ehrfm.predict.bundle import CALIBRATION_FILE, file_digest
from ehrfm.predict.meds_predictions import write_meds_predictions
from ehrfm.predict.states import STATE_SUFFIX, HistoryStates
from ehrfm.progress import progress_bar
from ehrfm.schema import BOOLEAN_VALUE, PREDICTED_BOOLEAN_PROBABILITY, PREDICTION_TIME, SUBJECT_ID, TASK
from ehrfm.typed_config import resolve_config, to_mapping

from .config import ScoreConfig, parse_aware_timestamp
from .risk_assessment import risk_assessment
from .risk_model import SKIP_REASON, RiskModel, prediction_rows, prediction_times_frame

log = logging.getLogger("ehrfm.score")

__all__ = ["score"]

PARTS_DIR = "parts"
STATES_DIR = "states"
KEY_FILE = "score_key.json"
PREDICTIONS_DIR = "predictions"  # <task>/0.parquet in the MEDS prediction schema
DETAILS_FILE = "prediction_details.parquet"
FINAL_FILES = (PREDICTIONS_DIR, DETAILS_FILE, "risk_assessments.ndjson", "skipped.parquet", "summary.json")
NO_DATA = "no events for this subject in the input"


def _times(config: ScoreConfig) -> Any:
    if config.as_of is not None:
        return parse_aware_timestamp(config.as_of, key="as_of")
    if config.prediction_times == "last_event":
        return None
    path = Path(config.prediction_times)
    if not path.is_file():
        raise FileNotFoundError(f"prediction_times={config.prediction_times}: neither 'last_event' nor a parquet "
                                "file of (subject_id, prediction_time)")
    return prediction_times_frame(pl.read_parquet(path))


def _claim(output: Path, key: dict[str, Any], overwrite: bool, *, worker: bool) -> None:
    """Resume results of the same settings; refuse to mix with others; ``overwrite`` starts afresh.

    A worker (one of several jobs sharing ``output``) never removes anything: another job may
    be writing there.
    """
    ensure_output_dir(output)
    key_path = output / KEY_FILE
    previous = json.loads(key_path.read_text()) if key_path.is_file() else None
    ours = [output / PARTS_DIR, output / STATES_DIR, *(output / name for name in FINAL_FILES)]
    if not overwrite:
        if previous is not None and previous != key:
            raise FileExistsError(f"{key_path}: {output} holds scores made with other settings or another "
                                  "model; pass overwrite=true to replace them, or choose another output")
        if previous is None and any(p.exists() for p in ours):
            raise FileExistsError(f"{output} holds score outputs without {KEY_FILE}; pass overwrite=true to "
                                  "replace them, or choose another output")
    if (overwrite or previous != key) and not worker:
        remove_written(output, ours)
    record_written(output, [path.relative_to(output) for path in ours] + [KEY_FILE])
    if previous != key:
        write_text_atomic(key_path, json.dumps(key, indent=2, sort_keys=True) + "\n")


class _SavedStates:
    """Saved states under ``states_from``, found by subject: only the files a shard needs are read."""

    def __init__(self, folder: Path, risk: RiskModel) -> None:
        from safetensors import safe_open

        self.risk = risk
        files = sorted(folder.glob(f"*{STATE_SUFFIX}"))
        if not files:
            raise FileNotFoundError(f"states_from={folder}: no *{STATE_SUFFIX} files (a score run with "
                                    "save_states=true writes them under <output>/states)")
        self.subjects = {}
        for path in files:
            with safe_open(str(path), framework="pt") as handle:
                self.subjects[path] = set(handle.get_tensor("subject_id").tolist())

    def for_subjects(self, subjects: pl.Series) -> HistoryStates | None:
        wanted = set(subjects.to_list())
        parts = []
        for path, held in self.subjects.items():
            if held & wanted:
                states = HistoryStates.load(path, self.risk.model.backbone, model_digest=self.risk.weights_digest)
                rows = np.flatnonzero(np.isin(states.subject_id, list(wanted)))
                parts.append(states if len(rows) == len(states) else states.take(rows))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else HistoryStates.concat(parts)


def _risk_assessments(predictions: pl.DataFrame, risk: RiskModel) -> str:
    lines = []
    for row in predictions.iter_rows(named=True):
        task = risk.task_definitions[row[TASK]]
        resource = risk_assessment(
            patient_id=row[FHIR_PATIENT_ID], subject_id=row[SUBJECT_ID], prediction_time=row[PREDICTION_TIME],
            task=row[TASK], description=task.description, probability=row[PREDICTED_BOOLEAN_PROBABILITY],
            window=(task.window.start, task.window.end), model_name=risk.name, model_version=risk.version)
        lines.append(orjson.dumps(resource).decode())
    return "\n".join(lines) + ("\n" if lines else "")


def _observed_labels(labels_dir: str | None, tasks: list[str]) -> pl.DataFrame:
    """``task, subject_id, prediction_time, boolean_value`` of each task found in ``labels_dir``
    (none given: no rows, so every ``boolean_value`` is null)."""
    frames = [read_task_label_rows(labels_dir, task).select(pl.lit(task).alias(TASK), pl.all())
              for task in (tasks if labels_dir else [])]
    empty = pl.DataFrame(schema={TASK: pl.String, SUBJECT_ID: pl.Int64, PREDICTION_TIME: pl.Datetime("us"),
                                 BOOLEAN_VALUE: pl.Boolean})
    labels = pl.concat([empty, *frames])
    twice = labels.select(TASK, SUBJECT_ID, PREDICTION_TIME).is_duplicated()
    if twice.any():
        row = labels.filter(twice).row(0, named=True)
        raise ValueError(f"labels_dir={labels_dir}: task {row[TASK]!r} has several labels for subject_id="
                         f"{row[SUBJECT_ID]} at {row[PREDICTION_TIME]}; a prediction can have one observed label")
    return labels


def _check_workers(config: ScoreConfig, inputs: list[str], meds_input: bool) -> None:
    if config.worker is None:
        return
    if not 0 <= config.worker < config.workers:
        raise ValueError(f"worker={config.worker} must be in 0..{config.workers - 1} (workers={config.workers})")
    if config.overwrite:
        raise ValueError("overwrite=true cannot be combined with worker=...: jobs that share an output must not "
                         "delete each other's parts; clear the output first (or run once without worker)")
    if not meds_input:
        raise ValueError(f"input={inputs}: workers score a MEDS dataset; ingest the FHIR once first "
                         "(`ehrfm ingest input=... output=meds`) so that the jobs do not each ingest it")


def score(config: ScoreConfig | Mapping[str, Any] | None = None, /, **settings: Any) -> dict[str, Any]:
    """Score a population with a model bundle; returns the summary (also ``summary.json``).

    Takes a :class:`ScoreConfig`, a mapping of its settings, or its settings as keywords
    (``score(bundle="runs/mtf/task_per_task/model", input="meds/", output="scores/")``).
    A worker run (``worker`` set) scores its share of the shards and returns their counts only.
    """
    config = resolve_config(ScoreConfig, config, settings, where="score")
    started = time.perf_counter()
    output = Path(config.output)
    inputs = [config.input] if isinstance(config.input, str) else list(config.input)
    meds_input = len(inputs) == 1 and has_event_shards(inputs[0])
    _check_workers(config, inputs, meds_input)
    refuse_overlap(output, meds_protected(inputs[0]) if meds_input else inputs)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    risk = RiskModel.from_pretrained(config.bundle, map_location=device)
    tasks = risk._task_names(config.tasks)
    from ehrfm.ingest import ensure_meds

    meds_dir = ensure_meds(inputs, output / "meds")
    shards = data_shards(meds_dir)
    times = _times(config)
    model_dir = Path(config.bundle)
    context_length = config.context_length or risk.context_length
    states_from = Path(config.states_from) if config.states_from else None
    key = {"model": str(model_dir.resolve()), "weights": risk.weights_digest,
           "calibration": file_digest(model_dir / CALIBRATION_FILE), "meds_dir": str(meds_dir.resolve()),
           "shards": [[shard_id(meds_dir, s), s.stat().st_size] for s in shards], "tasks": tasks,
           "prediction_times": config.prediction_times, "as_of": config.as_of, "calibrated": config.calibrated,
           "context_length": context_length, "save_states": config.save_states,
           "states_from": str(states_from.resolve()) if states_from else None,
           "labels_dir": str(Path(config.labels_dir).resolve()) if config.labels_dir else None}
    _claim(output, key, config.overwrite, worker=config.worker is not None)
    saved = _SavedStates(states_from, risk) if states_from else None
    parts, states_dir = output / PARTS_DIR, output / STATES_DIR
    mine = [s for i, s in enumerate(shards) if config.worker is None or i % config.workers == config.worker]
    # Subjects of every shard first (one column each): the progress bar's total, the summary's count.
    shard_subjects = {s: pl.read_parquet(s, columns=[SUBJECT_ID])[SUBJECT_ID].cast(pl.Int64).unique() for s in mine}
    patients = sum(subjects.len() for subjects in shard_subjects.values())
    resumed = scored_here = continued = 0
    progress = progress_bar(total=patients, unit="patient", desc="score")
    for shard in mine:
        name = shard_id(meds_dir, shard)  # stems repeat across split folders (train/0, tuning/0)
        done, skipped_part = parts / f"{name}.parquet", parts / f"{name}.skipped.parquet"
        subjects = shard_subjects[shard]
        if done.is_file() and skipped_part.is_file():
            resumed += 1
            progress.update(subjects.len())
            continue
        events = pl.read_parquet(shard)
        if isinstance(times, pl.DataFrame):
            rows = times.filter(pl.col(SUBJECT_ID).is_in(subjects.implode()))
        else:
            rows = prediction_rows(events, times)
        batch = risk.score_events(events, rows, tasks=tasks, calibrated=config.calibrated,
                                  tokens_per_batch=config.tokens_per_batch, context_length=context_length,
                                  saved_states=saved.for_subjects(subjects) if saved else None,
                                  keep_states=config.save_states)
        write_parquet_atomic(batch.skipped, skipped_part)
        if batch.states is not None:
            batch.states.save(states_dir / f"{name}{STATE_SUFFIX}", model_digest=risk.weights_digest)
        write_parquet_atomic(batch.predictions, done)  # written last: its presence marks the shard done
        scored_here += 1
        continued += batch.continued
        progress.update(subjects.len())
    progress.close()
    if config.worker is not None:
        seconds = time.perf_counter() - started
        return {"worker": config.worker, "workers": config.workers, "output": str(output),
                "shards": [shard_id(meds_dir, s) for s in mine], "shards_scored": scored_here, "shards_resumed": resumed,
                "patients_in_shards": patients, "continued_rows": continued, "seconds": round(seconds, 3)}

    names = [shard_id(meds_dir, s) for s in shards]
    predictions = pl.concat([pl.read_parquet(parts / f"{n}.parquet") for n in names], how="vertical_relaxed")
    skipped = pl.concat([pl.read_parquet(parts / f"{n}.skipped.parquet") for n in names], how="diagonal_relaxed")
    if isinstance(times, pl.DataFrame):  # asked-for subjects that the input does not hold
        present = pl.concat(list(shard_subjects.values())).unique()
        absent = times.filter(~pl.col(SUBJECT_ID).is_in(present.implode())).with_columns(
            pl.lit(NO_DATA).alias(SKIP_REASON))
        skipped = pl.concat([skipped, absent], how="diagonal_relaxed")
    try:
        subjects_map = read_subjects(meds_dir).select(pl.col(SUBJECT_ID).cast(pl.Int64), FHIR_PATIENT_ID)
    except MissingMedsFileError:
        subjects_map = pl.DataFrame(schema={SUBJECT_ID: pl.Int64, FHIR_PATIENT_ID: pl.String})
    predictions = (predictions.with_columns(pl.lit(risk.name).alias("model"), pl.lit(risk.version).alias("model_version"))
                   .join(subjects_map, on=SUBJECT_ID, how="left")
                   .join(_observed_labels(config.labels_dir, tasks), on=[TASK, SUBJECT_ID, PREDICTION_TIME],
                         how="left")
                   .sort(SUBJECT_ID, PREDICTION_TIME, TASK))
    skipped = skipped.sort(SUBJECT_ID, PREDICTION_TIME, nulls_last=True) if skipped.height else skipped
    remove_written(output, [output / PREDICTIONS_DIR])  # a task no longer scored leaves no stale file
    # With labels, the MEDS files are for evaluation: rows without an observed label (a prediction
    # time another task labelled) would be refused by meds-evaluation, so they stay in the details only.
    meds_rows = predictions.drop_nulls(BOOLEAN_VALUE) if config.labels_dir else predictions
    write_meds_predictions(meds_rows, output / PREDICTIONS_DIR, [TASK])
    write_parquet_atomic(predictions, output / DETAILS_FILE)
    write_parquet_atomic(skipped, output / "skipped.parquet")
    if config.risk_assessments:
        write_text_atomic(output / "risk_assessments.ndjson", _risk_assessments(predictions, risk))
    seconds = time.perf_counter() - started
    reasons = dict(skipped.group_by(SKIP_REASON).len().iter_rows()) if skipped.height else {}
    summary = {
        "bundle": str(model_dir), "input": str(meds_dir), "output": str(output), "tasks": tasks,
        "settings": to_mapping(config),
        "patients_in_input": patients,
        "scored_rows": predictions.select(SUBJECT_ID, PREDICTION_TIME).unique().height,
        "scored_patients": predictions[SUBJECT_ID].n_unique(),
        "predictions": predictions.height,
        "skipped_rows": skipped.height, "skipped_by_reason": reasons,
        "shards": len(shards), "shards_resumed": resumed,
        "continued_rows": continued,  # histories continued from saved states (this run's shards)
        "state_bytes_per_history": (HistoryStates.empty(risk.model.backbone, 1).bytes_per_history()
                                    if config.save_states else None),
        "seconds": round(seconds, 3), "patients_per_s": round(patients / seconds, 1) if seconds else None,
    }
    write_text_atomic(output / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary
