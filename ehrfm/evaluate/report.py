"""``evaluate_predictions``: held-out metrics with patient-level CIs, before and after calibration.

For every (task, model) in a predictions frame (:mod:`ehrfm.predict.tables`):

1. a post-hoc calibrator (``temperature``, ``isotonic`` or ``none``) is fit on the **tuning**
   rows only; held-out rows are never used to fit anything;
2. on the **held_out** rows, AUROC, AUPRC, Brier score and ECE are computed before and after
   calibration, each with a patient-level bootstrap percentile 95% CI
   (:mod:`ehrfm.evaluate.bootstrap`). Every (task, model) uses the same seed, so models scored on
   the same held-out patients are resampled with identical draws.

Written to ``output_dir``: ``results.json`` (everything, machine-readable), ``results.md`` (one
table per task plus the mean AUROC per model across tasks), and per task ``<task>_roc.png`` and
``<task>_calibration.png``. If a task's tuning rows are missing or hold a single class, that
model's calibrator falls back to ``none`` and the reason is recorded.

>>> import datetime as dt, tempfile
>>> import numpy as np
>>> import polars as pl
>>> rng = np.random.default_rng(0)
>>> n = 400
>>> y = rng.random(n) < 0.3
>>> frame = pl.DataFrame({
...     "task": "toy", "model": "m", "split": np.where(np.arange(n) < 200, "tuning", "held_out"),
...     "subject_id": np.arange(n) // 2,
...     "prediction_time": [dt.datetime(2020, 1, 1 + i % 2) for i in range(n)],
...     "boolean_value": y,
...     "predicted_boolean_probability": np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.15, n), 0, 1),
... })
>>> with tempfile.TemporaryDirectory() as tmp:
...     report = evaluate_predictions(frame, tmp, n_bootstrap=100)
...     sorted(p.name for p in report.files)
['results.json', 'results.md', 'toy_calibration.png', 'toy_roc.png']
>>> result = report.results[0]
>>> result.n, result.n_subjects, result.calibrator
(200, 100, 'temperature')
>>> 0.5 < result.before.intervals["auroc"].estimate < 1
True
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ehrfm.evaluate.bootstrap import DEFAULT_REPLICATES, BootstrapResult, cluster_bootstrap
from ehrfm.evaluate.plots import plot_calibration, plot_roc
from ehrfm.predict.calibration import Calibrator, IdentityCalibration, make_calibrator
from ehrfm.predict.metrics import ECE_BINS
from ehrfm.predict.tables import FrameFormatError, check_predictions
from ehrfm.progress import progress_bar
from ehrfm.schema import (
    BOOLEAN_VALUE,
    HELD_OUT,
    MODEL,
    PREDICTED_BOOLEAN_PROBABILITY,
    PREDICTION_TIME,
    SPLIT,
    SUBJECT_ID,
    TASK,
    TUNING,
)

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
_DIGITS = {"auroc": 3, "auprc": 3, "brier": 4, "ece": 4}


@dataclass
class TaskModelResult:
    """Held-out metrics of one model on one task, before and after post-hoc calibration."""

    task: str
    model: str
    n: int
    n_subjects: int
    positives: int
    tuning_rows: int
    calibrator: str
    calibrator_params: dict[str, Any]
    before: BootstrapResult
    after: BootstrapResult
    note: str = ""
    fitted_calibrator: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: counts, calibrator, and the two bootstrap results."""
        return {
            "task": self.task,
            "model": self.model,
            "held_out_rows": self.n,
            "held_out_subjects": self.n_subjects,
            "held_out_positives": self.positives,
            "tuning_rows": self.tuning_rows,
            "calibrator": {"name": self.calibrator, "params": self.calibrator_params},
            "before_calibration": self.before.to_dict(),
            "after_calibration": self.after.to_dict(),
            "note": self.note,
        }


@dataclass
class EvaluationReport:
    """All (task, model) results plus the files written for them."""

    results: list[TaskModelResult]
    output_dir: Path
    calibration: str
    n_bootstrap: int
    seed: int
    files: list[Path] = field(default_factory=list)

    def tasks(self) -> list[str]:
        return sorted({r.task for r in self.results})

    def summary(self) -> list[dict[str, Any]]:
        """Per model: tasks scored and mean held-out AUROC (before calibration) across them."""
        rows = []
        for model in sorted({r.model for r in self.results}):
            values = [r.before.intervals["auroc"].estimate for r in self.results if r.model == model]
            defined = [v for v in values if not math.isnan(v)]
            rows.append({
                "model": model,
                "tasks": len(values),
                "tasks_with_auroc": len(defined),
                "mean_auroc": float(np.mean(defined)) if defined else None,
            })
        return sorted(rows, key=lambda r: -(r["mean_auroc"] or -1.0))

    def table(self) -> pl.DataFrame:
        """One row per (task, model): estimates and CI bounds of every metric before and after."""
        rows = []
        for r in self.results:
            row: dict[str, Any] = {"task": r.task, "model": r.model, "n": r.n, "positives": r.positives}
            for stage, boot in (("before", r.before), ("after", r.after)):
                for name, ci in boot.intervals.items():
                    row[f"{name}_{stage}"] = ci.estimate
                    row[f"{name}_{stage}_lower"] = ci.lower
                    row[f"{name}_{stage}_upper"] = ci.upper
            rows.append(row)
        return pl.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """Everything in ``results.json``."""
        return {
            SPLIT: HELD_OUT,
            "calibration": {"method": self.calibration, "fit_on": TUNING},
            "bootstrap": {"unit": "subject", "n_bootstrap": self.n_bootstrap, "seed": self.seed,
                          "interval": "percentile", "confidence": 0.95},
            "ece_bins": {"n": ECE_BINS, "kind": "equal-width over [0, 1]"},
            "summary": self.summary(),
            "results": [r.to_dict() for r in self.results],
        }

    def to_markdown(self) -> str:
        """The contents of ``results.md``."""
        return _markdown(self)


def _slug(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", task).strip("_") or "task"


def format_interval(boot: BootstrapResult, name: str) -> str:
    """``"0.812 [0.774, 0.851]"`` (``n/a`` where undefined)."""
    ci = boot.intervals[name]
    digits = _DIGITS[name]
    if math.isnan(ci.estimate):
        return "n/a"
    if math.isnan(ci.lower):
        return f"{ci.estimate:.{digits}f} [n/a]"
    return f"{ci.estimate:.{digits}f} [{ci.lower:.{digits}f}, {ci.upper:.{digits}f}]"


def _markdown(report: EvaluationReport) -> str:
    lines = [
        "# Held-out evaluation",
        "",
        f"Split `{HELD_OUT}`. Intervals: patient-level bootstrap, percentile 95% CI, "
        f"{report.n_bootstrap} replicates, seed {report.seed}. Post-hoc calibration: `{report.calibration}`, "
        f"fit on the `{TUNING}` split only. ECE: {ECE_BINS} equal-width bins. AUROC, AUPRC and Brier are "
        "before calibration; `results.json` holds every metric before and after.",
        "",
        "## Summary: mean held-out AUROC per model across tasks",
        "",
        "| model | tasks | mean AUROC |",
        "|---|---|---|",
    ]
    for row in report.summary():
        mean = "n/a" if row["mean_auroc"] is None else f"{row['mean_auroc']:.3f}"
        tasks = str(row["tasks"])
        if row["tasks_with_auroc"] != row["tasks"]:
            tasks += f" ({row['tasks_with_auroc']} with AUROC)"
        lines.append(f"| {row['model']} | {tasks} | {mean} |")
    for task in report.tasks():
        lines += [
            "",
            f"## {task}",
            "",
            "| model | n (patients) | positives | AUROC [95% CI] | AUPRC [95% CI] | Brier [95% CI] "
            "| Brier after calibration | ECE before → after |",
            "|---|---|---|---|---|---|---|---|",
        ]
        notes = []
        for r in (r for r in report.results if r.task == task):
            ece = f"{format_interval(r.before, 'ece')} → {format_interval(r.after, 'ece')}"
            lines.append(
                f"| {r.model} | {r.n} ({r.n_subjects}) | {r.positives} | "
                f"{format_interval(r.before, 'auroc')} | "
                f"{format_interval(r.before, 'auprc')} | {format_interval(r.before, 'brier')} | "
                f"{format_interval(r.after, 'brier')} | {ece} |"
            )
            if r.before.n_skipped:
                notes.append(
                    f"- {r.model}: {r.before.n_skipped} of {report.n_bootstrap} replicates skipped "
                    "(one class)."
                )
            if r.note:
                notes.append(f"- {r.model}: {r.note}")
        slug = _slug(task)
        images = f"![ROC]({slug}_roc.png) ![calibration]({slug}_calibration.png)"
        lines += ["", *([*notes, ""] if notes else []), images]
    return "\n".join(lines) + "\n"


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def evaluate_predictions(
    predictions: pl.DataFrame,
    output_dir: str | Path,
    *,
    calibration: str = "temperature",
    n_bootstrap: int = DEFAULT_REPLICATES,
    seed: int = 0,
    calibrators: Mapping[tuple[str, str], Calibrator] | None = None,
) -> EvaluationReport:
    """Calibrate on tuning, score held_out with patient-level bootstrap CIs, write JSON/markdown/PNGs.

    ``predictions`` follows ``PREDICTION_SCHEMA``; every (task, model) needs held_out rows.
    ``calibrators`` holds already fitted calibrators by ``(task, model)`` (a model bundle's,
    fit on the same tuning rows by ``ehrfm finetune``); those are applied, not refit.
    """
    make_calibrator(calibration)  # unknown names fail before any work
    predictions = check_predictions(predictions)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    results: list[TaskModelResult] = []
    files: list[Path] = []
    pairs = predictions.select(TASK, MODEL).unique().height
    bar = progress_bar(total=pairs, desc=f"evaluate: bootstrap ({n_bootstrap} resamples)", unit="task x model")
    for task in sorted(predictions[TASK].unique().to_list()):
        of_task = predictions.filter(pl.col(TASK) == task)
        before_curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        after_curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for model in sorted(of_task[MODEL].unique().to_list()):
            rows = of_task.filter(pl.col(MODEL) == model)
            tuning = rows.filter(pl.col(SPLIT) == TUNING)
            held = rows.filter(pl.col(SPLIT) == HELD_OUT).sort(SUBJECT_ID, PREDICTION_TIME)
            if held.height == 0:
                raise FrameFormatError(f"task {task!r}, model {model!r}: no {HELD_OUT} rows to evaluate")
            calibrator: Any = make_calibrator(calibration)
            note = ""
            saved = (calibrators or {}).get((task, model))
            if saved is not None:
                calibrator = saved
                note = "calibrator saved in the model bundle (fit on tuning by ehrfm finetune)"
            elif tuning[BOOLEAN_VALUE].n_unique() < 2 and calibration != "none":
                note = (f"calibration `{calibration}` not fit: the {TUNING} split has "
                        f"{'no rows' if tuning.height == 0 else 'one class'}; probabilities left as they are")
                calibrator = IdentityCalibration()
            if saved is None:
                calibrator.fit(tuning[PREDICTED_BOOLEAN_PROBABILITY].to_numpy(),
                               tuning[BOOLEAN_VALUE].to_numpy())
            y = held[BOOLEAN_VALUE].to_numpy()
            p = held[PREDICTED_BOOLEAN_PROBABILITY].to_numpy()
            p_after = calibrator.transform(p)
            groups = held[SUBJECT_ID].to_numpy()
            before = cluster_bootstrap(y, p, groups, n_bootstrap=n_bootstrap, seed=seed)
            after = cluster_bootstrap(y, p_after, groups, n_bootstrap=n_bootstrap, seed=seed)
            results.append(TaskModelResult(
                task=task, model=model, n=held.height, n_subjects=int(np.unique(groups).size),
                positives=int(y.sum()), tuning_rows=tuning.height, calibrator=calibrator.name,
                calibrator_params=calibrator.params(), before=before, after=after, note=note,
                fitted_calibrator=calibrator,
            ))
            before_curves[model] = (y, p)
            after_curves[model] = (y, p_after)
            bar.update(1)
        slug = _slug(task)
        files.append(plot_roc(before_curves, output / f"{slug}_roc.png", title=f"{task}: held-out ROC"))
        files.append(plot_calibration(before_curves, after_curves, output / f"{slug}_calibration.png",
                                      title=f"{task}: held-out reliability", after_label=calibration))
    bar.close()
    report = EvaluationReport(results, output, calibration, n_bootstrap, seed)
    json_path = output / RESULTS_JSON
    json_path.write_text(json.dumps(_json_ready(report.to_dict()), indent=2, allow_nan=False) + "\n")
    md_path = output / RESULTS_MD
    md_path.write_text(report.to_markdown())
    report.files = sorted([json_path, md_path, *files])
    return report

