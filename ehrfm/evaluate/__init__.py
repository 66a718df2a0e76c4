"""Honest evaluation of binary clinical predictions, and the count-feature baselines.

- :mod:`.metrics`: AUROC, AUPRC (average precision), Brier score, ECE (10 equal-width bins).
- :mod:`.bootstrap`: patient-level (cluster) bootstrap percentile CIs.
- :mod:`.calibration`: post-hoc calibrators fit on tuning (temperature, isotonic), by name.
- :mod:`.plots`: ROC and reliability PNGs.
- :mod:`.report`: ``evaluate_predictions`` writes ``results.json``, ``results.md`` and the PNGs.
- :mod:`.features`: age + per-code counts strictly before the prediction time (sparse).
- :mod:`.baselines`: LightGBM (EHRSHOT grid) and L2 logistic regression on those counts.
- :mod:`.frames`: the labels and predictions frames, and ``attach_splits``.

Names load lazily, so importing the package does not import LightGBM or matplotlib.

>>> from ehrfm.evaluate import auroc
>>> auroc([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8])
1.0
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "auroc": "metrics",
    "auprc": "metrics",
    "brier_score": "metrics",
    "expected_calibration_error": "metrics",
    "binary_metrics": "metrics",
    "batch_metrics": "metrics",
    "ScoredRows": "metrics",
    "METRIC_NAMES": "metrics",
    "cluster_bootstrap": "bootstrap",
    "BootstrapResult": "bootstrap",
    "MetricInterval": "bootstrap",
    "CALIBRATORS": "calibration",
    "make_calibrator": "calibration",
    "TemperatureScaling": "calibration",
    "IsotonicCalibration": "calibration",
    "plot_roc": "plots",
    "plot_calibration": "plots",
    "evaluate_predictions": "report",
    "EvaluationReport": "report",
    "TaskModelResult": "report",
    "read_events": "features",
    "build_vocabulary": "features",
    "count_features": "features",
    "CountFeatures": "features",
    "fit_l2_logistic": "baselines",
    "run_count_baselines": "baselines",
    "LIGHTGBM_GRID": "baselines",
    "LOGISTIC_C_GRID": "baselines",
    "BaselineRun": "baselines",
    "attach_splits": "frames",
    "read_splits": "frames",
    "check_labels": "frames",
    "check_predictions": "frames",
    "FrameFormatError": "frames",
    "PREDICTION_SCHEMA": "frames",
    "LABEL_SCHEMA": "frames",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"ehrfm.evaluate.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ehrfm.evaluate' has no attribute {name!r}")
