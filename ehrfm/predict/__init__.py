"""The prediction layer that finetune, evaluate and scoring share.

- :mod:`.cohort`: the cohort of prediction times (one tokenized history per subject and
  prediction time, every task's label on it), built from labels and a MEDS dataset, cached.
- :mod:`.cohort_dataset`: the cohort as a torch dataset, and its collation.
- :mod:`.inference`: probabilities for every task in length-sorted batches (one history pass
  per prediction time), last-token embeddings, the predictions table.
- :mod:`.states`: saved recurrent states after each history, for incremental rescoring.
- :mod:`.tables`: the labels and predictions tables (schemas, checks, subject splits).
- :mod:`.meds_predictions`: predictions written in the MEDS prediction schema, one file per task
  (and model, split), as meds-evaluation reads them.
- :mod:`.calibration`: post-hoc calibrators fit on tuning (temperature, isotonic).
- :mod:`.metrics`: AUROC, AUPRC, Brier, ECE, weighted for the bootstrap.

Names load lazily, so the tables and metrics can be used without importing torch.

>>> from ehrfm.predict import PREDICTION_SCHEMA
>>> list(PREDICTION_SCHEMA)[-2:]
['boolean_value', 'predicted_boolean_probability']
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Cohort": "cohort",
    "build_cohort": "cohort",
    "load_or_build_cohort": "cohort",
    "merge_task_labels": "cohort",
    "read_task_labels": "cohort",
    "CohortDataset": "cohort_dataset",
    "collate_cohort": "cohort_dataset",
    "embed_histories": "inference",
    "predict_tasks": "inference",
    "predict_tasks_continuing": "inference",
    "HistoryStates": "states",
    "predictions_frame": "inference",
    "sorted_batches": "inference",
    "FrameFormatError": "tables",
    "LABEL_SCHEMA": "tables",
    "PREDICTION_SCHEMA": "tables",
    "attach_splits": "tables",
    "check_labels": "tables",
    "check_predictions": "tables",
    "to_meds_predictions": "meds_predictions",
    "write_meds_predictions": "meds_predictions",
    "CALIBRATORS": "calibration",
    "IsotonicCalibration": "calibration",
    "TemperatureScaling": "calibration",
    "make_calibrator": "calibration",
    "auroc": "metrics",
    "auprc": "metrics",
    "binary_metrics": "metrics",
    "brier_score": "metrics",
    "expected_calibration_error": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"ehrfm.predict.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ehrfm.predict' has no attribute {name!r}")
