"""ROC and reliability (calibration) plots as PNG files.

Figures are drawn on matplotlib's Agg canvas directly (``matplotlib.figure.Figure``), so no GUI
backend is needed and pyplot's global state is never touched.

- ``plot_roc``: one ROC curve per model, AUROC in the legend, the chance diagonal dashed.
- ``plot_calibration``: two panels, before and after post-hoc calibration; per model the mean
  predicted probability vs the observed positive fraction in the 10 equal-width bins used by
  the ECE (:func:`ehrfm.predict.metrics.reliability_curve`), ECE in the legend.

>>> import tempfile, pathlib
>>> curves = {"toy": ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])}
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = plot_roc(curves, pathlib.Path(tmp) / "roc.png", title="toy task")
...     path.read_bytes()[:4]
b'\\x89PNG'
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from ehrfm.predict.metrics import auroc, expected_calibration_error, reliability_curve

Curves = Mapping[str, tuple[Any, Any]]  # model -> (labels, probabilities)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def plot_roc(curves: Curves, path: str | Path, *, title: str = "") -> Path:
    """ROC curves of several models on one task (``{model: (labels, probabilities)}``) as a PNG."""
    figure = Figure(figsize=(5.5, 5))
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for model, (y, p) in curves.items():
        y = np.asarray(y).astype(int)
        if np.unique(y).size < 2:
            continue  # ROC undefined with one class
        fpr, tpr, _ = roc_curve(y, np.asarray(p, dtype=float))
        ax.plot(fpr, tpr, linewidth=1.5, label=f"{model} (AUROC {auroc(y, p):.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate")
    ax.set_title(title or "ROC")
    ax.legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def plot_calibration(
    before: Curves, after: Curves, path: str | Path, *, title: str = "", after_label: str = ""
) -> Path:
    """Reliability diagrams before and after calibration, one line per model, as a PNG."""
    figure = Figure(figsize=(10, 5))
    axes = figure.subplots(1, 2, sharey=True)
    after_title = f"after calibration ({after_label})" if after_label else "after calibration"
    panels = (("before calibration", before), (after_title, after))
    for ax, (name, curves) in zip(axes, panels):
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
        for model, (y, p) in curves.items():
            mean_p, observed, _ = reliability_curve(y, p)
            ece = expected_calibration_error(y, p)
            ax.plot(mean_p, observed, marker="o", markersize=4, linewidth=1.2,
                    label=f"{model} (ECE {ece:.3f})")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="Mean predicted probability (10 equal-width bins)")
        ax.set_title(name)
        ax.legend(loc="upper left", fontsize="small")
    axes[0].set_ylabel("Observed positive fraction")
    if title:
        figure.suptitle(title)
    return _save(figure, path)
