"""``ehrfm evaluate``: honest evaluation of binary clinical predictions, and the baselines.

- :mod:`.run`: ``evaluate(...)``, the whole stage as a Python call (:mod:`.stage` is its CLI).
- :mod:`.bootstrap`: patient-level (cluster) bootstrap percentile CIs.
- :mod:`.plots`: ROC and reliability PNGs.
- :mod:`.report`: ``evaluate_predictions`` writes ``results.json``, ``results.md`` and the PNGs.
- :mod:`.count_features`: age + per-code counts strictly before the prediction time (sparse).
- :mod:`.count_baselines`: LightGBM (EHRSHOT grid) and L2 logistic regression on those counts.
- :mod:`.linear_probe`: L2 logistic regression on a frozen pretrained backbone's states.

Metrics, calibrators and the predictions table are shared with finetuning and scoring, so they
live in :mod:`ehrfm.predict` (re-exported here). Names load lazily, so importing the package
does not import LightGBM or matplotlib.

>>> from ehrfm.evaluate import auroc
>>> auroc([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8])
1.0
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "auroc": "ehrfm.predict.metrics",
    "auprc": "ehrfm.predict.metrics",
    "brier_score": "ehrfm.predict.metrics",
    "expected_calibration_error": "ehrfm.predict.metrics",
    "binary_metrics": "ehrfm.predict.metrics",
    "batch_metrics": "ehrfm.predict.metrics",
    "ScoredRows": "ehrfm.predict.metrics",
    "METRIC_NAMES": "ehrfm.predict.metrics",
    "cluster_bootstrap": "bootstrap",
    "BootstrapResult": "bootstrap",
    "MetricInterval": "bootstrap",
    "CALIBRATORS": "ehrfm.predict.calibration",
    "make_calibrator": "ehrfm.predict.calibration",
    "TemperatureScaling": "ehrfm.predict.calibration",
    "IsotonicCalibration": "ehrfm.predict.calibration",
    "plot_roc": "plots",
    "plot_calibration": "plots",
    "evaluate_predictions": "report",
    "EvaluationReport": "report",
    "TaskModelResult": "report",
    "read_events": "count_features",
    "build_vocabulary": "count_features",
    "count_features": "count_features",
    "CountFeatures": "count_features",
    "fit_l2_logistic": "count_baselines",
    "run_count_baselines": "count_baselines",
    "LIGHTGBM_GRID": "count_baselines",
    "LOGISTIC_C_GRID": "count_baselines",
    "BaselineRun": "count_baselines",
    "fit_probe": "linear_probe",
    "probe_predictions": "linear_probe",
    "EvaluateConfig": "config",
    "evaluate": "run",
    "attach_splits": "ehrfm.predict.tables",
    "check_labels": "ehrfm.predict.tables",
    "check_predictions": "ehrfm.predict.tables",
    "FrameFormatError": "ehrfm.predict.tables",
    "PREDICTION_SCHEMA": "ehrfm.predict.tables",
    "LABEL_SCHEMA": "ehrfm.predict.tables",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = _EXPORTS[name]
        return getattr(importlib.import_module(module if "." in module else f"ehrfm.evaluate.{module}"), name)
    raise AttributeError(f"module 'ehrfm.evaluate' has no attribute {name!r}")
