"""``score(...)``: a model bundle applied to a whole population, shard by shard.

The input is a MEDS dataset, or FHIR files and folders (ingested into ``<output>/meds`` first;
codes the tokenizer never saw map to its unknown tokens, nothing is added to its vocabulary).
Each MEDS shard is scored on its own, so memory follows the largest shard, not the population,
and every task comes from one history pass per patient and prediction time. Outputs under
``output``, each written to a temporary sibling and renamed, so an interrupted run never leaves
a file that looks complete::

    parts/<shard>.parquet, parts/<shard>.skipped.parquet   per-shard results (resume units)
    predictions.parquet      subject_id, prediction_time, predicted_boolean_probability, task,
                             calibrated, model, model_version, fhir_patient_id
    risk_assessments.ndjson  FHIR R4 RiskAssessment, one per patient, prediction time and task
    skipped.parquet          rows not scored, with the reason
    summary.json             scored and skipped counts, by reason; shards resumed; patients/s

A rerun with the same settings skips the shards already done and writes identical files;
different settings refuse to mix with earlier results unless ``overwrite``.
``ehrfm score`` (:mod:`ehrfm.score.stage`) is this function behind Hydra.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import torch

from ehrfm.meds_dataset import FHIR_PATIENT_ID, MissingMedsFileError, data_shards, read_subjects
from ehrfm.model.pretrained import WEIGHTS_NAME
from ehrfm.outputs import write_parquet_atomic, write_text_atomic
from ehrfm.predict.bundle import CALIBRATION_FILE
from ehrfm.schema import PREDICTED_BOOLEAN_PROBABILITY, PREDICTION_TIME, SUBJECT_ID, TASK
from ehrfm.typed_config import resolve_config, to_mapping

from .config import ScoreConfig, parse_aware_timestamp
from .risk_assessment import risk_assessment
from .risk_model import SKIP_REASON, RiskModel, prediction_rows, prediction_times_frame

log = logging.getLogger("ehrfm.score")

__all__ = ["score"]

PARTS_DIR = "parts"
KEY_FILE = "score_key.json"
FINAL_FILES = ("predictions.parquet", "risk_assessments.ndjson", "skipped.parquet", "summary.json")
NO_DATA = "no events for this subject in the input"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def _claim(output: Path, key: dict[str, Any], overwrite: bool) -> None:
    """Resume results of the same settings; refuse to mix with others; ``overwrite`` starts afresh."""
    key_path = output / KEY_FILE
    previous = json.loads(key_path.read_text()) if key_path.is_file() else None
    ours = [output / PARTS_DIR, *(output / name for name in FINAL_FILES)]
    if not overwrite:
        if previous is not None and previous != key:
            raise FileExistsError(f"{key_path}: {output} holds scores made with other settings or another "
                                  "model; pass overwrite=true to replace them, or choose another output")
        if previous is None and any(p.exists() for p in ours):
            raise FileExistsError(f"{output} holds score outputs without {KEY_FILE}; pass overwrite=true to "
                                  "replace them, or choose another output")
    if overwrite or previous != key:
        shutil.rmtree(output / PARTS_DIR, ignore_errors=True)
        for name in FINAL_FILES:
            (output / name).unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    write_text_atomic(key_path, json.dumps(key, indent=2, sort_keys=True) + "\n")


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


def score(config: ScoreConfig | Mapping[str, Any] | None = None, /, **settings: Any) -> dict[str, Any]:
    """Score a population with a model bundle; returns the summary (also ``summary.json``).

    Takes a :class:`ScoreConfig`, a mapping of its settings, or its settings as keywords
    (``score(bundle="runs/mtf/task_per_task/model", input="meds/", output="scores/")``).
    """
    from tqdm.auto import tqdm

    config = resolve_config(ScoreConfig, config, settings, where="score")
    started = time.perf_counter()
    output = Path(config.output)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    risk = RiskModel.from_pretrained(config.bundle, map_location=device)
    tasks = risk._task_names(config.tasks)
    from ehrfm.ingest import ensure_meds

    meds_dir = ensure_meds([config.input] if isinstance(config.input, str) else list(config.input),
                           output / "meds")
    shards = data_shards(meds_dir)
    times = _times(config)
    model_dir = Path(config.bundle)
    key = {"model": str(model_dir.resolve()), "weights": _file_digest(model_dir / WEIGHTS_NAME),
           "calibration": _file_digest(model_dir / CALIBRATION_FILE), "meds_dir": str(meds_dir.resolve()),
           "shards": [[s.name, s.stat().st_size] for s in shards], "tasks": tasks,
           "prediction_times": config.prediction_times, "as_of": config.as_of, "calibrated": config.calibrated}
    _claim(output, key, config.overwrite)
    parts = output / PARTS_DIR
    resumed = 0
    seen_subjects: list[pl.Series] = []
    progress = tqdm(total=len(shards), unit="shard", desc="scoring", disable=None)
    patients = 0
    for shard in shards:
        done, skipped_part = parts / f"{shard.stem}.parquet", parts / f"{shard.stem}.skipped.parquet"
        resuming = done.is_file() and skipped_part.is_file()
        # a finished shard is read only for its subjects (the summary counts every patient)
        events = pl.read_parquet(shard, columns=[SUBJECT_ID] if resuming else None)
        subjects = events[SUBJECT_ID].cast(pl.Int64).unique()
        seen_subjects.append(subjects)
        patients += subjects.len()
        if resuming:
            resumed += 1
            progress.update(1)
            continue
        if isinstance(times, pl.DataFrame):
            rows = times.filter(pl.col(SUBJECT_ID).is_in(subjects.implode()))
        else:
            rows = prediction_rows(events, times)
        batch = risk.score_events(events, rows, tasks=tasks, calibrated=config.calibrated,
                                  tokens_per_batch=config.tokens_per_batch)
        write_parquet_atomic(batch.skipped, skipped_part)
        write_parquet_atomic(batch.predictions, done)  # written last: its presence marks the shard done
        progress.update(1)
        progress.set_postfix(patients_per_s=f"{patients / max(time.perf_counter() - started, 1e-9):.0f}")
    progress.close()

    predictions = pl.concat([pl.read_parquet(parts / f"{s.stem}.parquet") for s in shards], how="vertical_relaxed")
    skipped = pl.concat([pl.read_parquet(parts / f"{s.stem}.skipped.parquet") for s in shards],
                        how="diagonal_relaxed")
    if isinstance(times, pl.DataFrame):  # asked-for subjects that the input does not hold
        present = pl.concat(seen_subjects).unique()
        absent = times.filter(~pl.col(SUBJECT_ID).is_in(present.implode())).with_columns(
            pl.lit(NO_DATA).alias(SKIP_REASON))
        skipped = pl.concat([skipped, absent], how="diagonal_relaxed")
    try:
        subjects_map = read_subjects(meds_dir).select(pl.col(SUBJECT_ID).cast(pl.Int64), FHIR_PATIENT_ID)
    except MissingMedsFileError:
        subjects_map = pl.DataFrame(schema={SUBJECT_ID: pl.Int64, FHIR_PATIENT_ID: pl.String})
    predictions = (predictions.with_columns(pl.lit(risk.name).alias("model"), pl.lit(risk.version).alias("model_version"))
                   .join(subjects_map, on=SUBJECT_ID, how="left")
                   .sort(SUBJECT_ID, PREDICTION_TIME, TASK))
    skipped = skipped.sort(SUBJECT_ID, PREDICTION_TIME, nulls_last=True) if skipped.height else skipped
    write_parquet_atomic(predictions, output / "predictions.parquet")
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
        "seconds": round(seconds, 3), "patients_per_s": round(patients / seconds, 1) if seconds else None,
    }
    write_text_atomic(output / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary
