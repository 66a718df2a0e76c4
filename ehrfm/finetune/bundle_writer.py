"""What ``ehrfm finetune`` adds to a saved model to make it a self-contained bundle.

Beside the weights and tokenizer: the task definitions, the calibrators fit on the tuning
split's predictions of the saved (best) epoch, and the model card (see
:mod:`ehrfm.predict.bundle` for the layout). Scoring and evaluation read these files, so the
probabilities evaluation reports after calibration are those scoring returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import ehrfm
from ehrfm.meds_dataset import read_splits, scan_events
from ehrfm.model import MultitaskModel
from ehrfm.predict.bundle import write_calibrators, write_card, write_task_files
from ehrfm.predict.calibration import Calibrator, make_calibrator
from ehrfm.predict.cohort import Cohort
from ehrfm.predict.inference import predict_tasks
from ehrfm.predict.metrics import auroc
from ehrfm.schema import SPLIT, SUBJECT_ID, TIME, TUNING
from ehrfm.tasks import TaskDefinition
from ehrfm.tasks.durations import format_duration
from ehrfm.tokenize import EventTokenizer

__all__ = ["INTENDED_USE", "LIMITS", "fit_calibrators", "write_bundle"]

INTENDED_USE = (
    "Research and decision support for the population it was trained on: ranking patients by risk of "
    "each task's outcome within its window, from their coded history before the prediction time. Not "
    "a diagnosis; a clinician reviews every use."
)
LIMITS = [
    "Valid only for data coded like the training data (same source systems and vocabularies); codes the "
    "tokenizer never saw are read as unknown.",
    "Calibration was fit on the tuning split of the training population; recalibrate before using the "
    "probabilities elsewhere.",
    "Held-out results are in the card only after `ehrfm evaluate` has run on this bundle's finetune output.",
    "Metrics come from a finite sample: read the confidence intervals, not only the estimates.",
]


def fit_calibrators(model: MultitaskModel, tuning: Cohort, method: str, *, context_length: int,
                    tokens_per_batch: int) -> tuple[dict[str, Calibrator], dict[str, Any]]:
    """Per task, a calibrator fit on the tuning rows' predictions; also per-task tuning AUROC and rows."""
    probabilities = predict_tasks(model, tuning, tokens_per_batch=tokens_per_batch, context_length=context_length)
    labels = tuning.label_matrix()
    calibrators, stats = {}, {}
    for k, task in enumerate(tuning.task_names):
        known = ~np.isnan(labels[:, k])
        p, y = probabilities[known, k], labels[known, k]
        calibrators[task] = make_calibrator(method).fit(p, y)
        stats[task] = {"tuning_rows": int(known.sum()), "tuning_auroc": auroc(y, p)}
    return calibrators, stats


def _training_data(meds_dir: Path, cohort: Cohort, vocab_size: int) -> dict[str, Any]:
    splits = read_splits(meds_dir)
    timed = (scan_events(meds_dir).select(pl.len().alias("events"), pl.col(TIME).min().alias("first"),
                                          pl.col(TIME).max().alias("last")).collect().row(0, named=True))
    return {
        "meds_dir": str(meds_dir),
        "subjects": dict(splits.group_by(SPLIT).len().sort(SPLIT).iter_rows()),
        "events": int(timed["events"]),
        "date_range": [str(timed["first"]), str(timed["last"])],
        "code_vocabulary_size": vocab_size,
        "prediction_times": dict(cohort.frame.group_by(SPLIT).len().sort(SPLIT).iter_rows()),
        "patients_with_labels": int(cohort.frame[SUBJECT_ID].n_unique()),
    }


def write_bundle(model_dir: Path, *, model: MultitaskModel, tasks: list[TaskDefinition], cohort: Cohort,
                 meds_dir: Path, tokenizer: EventTokenizer, head: str, name: str, calibration: str,
                 context_length: int,
                 tokens_per_batch: int, head_metrics: dict[str, Any]) -> dict[str, Any]:
    """Write tasks, calibrators and card into ``model_dir`` (weights and tokenizer already there)."""
    write_task_files(model_dir, tasks)
    calibrators, stats = fit_calibrators(model, cohort.split(TUNING), calibration, context_length=context_length,
                                         tokens_per_batch=tokens_per_batch)
    write_calibrators(model_dir, calibrators, {"split": TUNING, "method": calibration,
                                               "rows": {t: s["tuning_rows"] for t, s in stats.items()}})
    counts = cohort.counts()
    card = {
        "name": name,
        "ehrfm_version": ehrfm.__version__,
        "head": head,
        "parameters": sum(p.numel() for p in model.parameters()),
        "backbone": {k: getattr(model.config, k) for k in ("mixer", "d_model", "n_layers", "vocab_size")},
        "context_length": context_length,
        "intended_use": INTENDED_USE,
        "limits": LIMITS,
        "training_data": _training_data(meds_dir, cohort, tokenizer.vocab_size),
        # the tokenizer this model reads: loading refuses a tokenizer with other tokens or ids
        "tokenizer_vocabulary_sha256": tokenizer.vocabulary_.content_hash(),
        "tasks": {
            task.name: {
                "description": task.description,
                "prompt_token": task.prompt_token,
                "window_end": None if task.window.end is None else format_duration(task.window.end),
                **{key: counts.get(task.name, {}).get(key) for key in
                   ("train_rows", "train_positives", "tuning_rows", "tuning_positives")},
                "tuning_auroc": stats[task.name]["tuning_auroc"],
                "calibrator": calibrators[task.name].to_dict(),
            }
            for task in tasks
        },
        "finetuning": {k: head_metrics.get(k) for k in ("best_tuning_mean_auroc", "global_step", "stopped_epoch")},
        "held_out": None,
    }
    write_card(model_dir, card)
    return card
