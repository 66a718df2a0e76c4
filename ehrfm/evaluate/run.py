"""``evaluate(...)``: every model of a finetune run, the linear probe and the count baselines,
scored on exactly the same labels and splits, then compared with patient-level bootstrap CIs.

Reads ``input`` (written by ``ehrfm finetune``: its ``finetune_inputs.json``, labels, cohort and
``<head>/model`` directories). Models compared, per task:

* ``mamba_mtf_<head>``: the finetuned multitask models (one history pass per prediction time
  serves every task);
* ``linear_probe``: L2 logistic regression on the frozen pretrained backbone's representation;
* ``lightgbm`` and ``logistic_regression``: age + per-code counts before the prediction time.

Calibrators and every hyperparameter are fit on train/tuning only; metrics are reported on
held_out. Outputs under ``output`` (default ``<input>/evaluation``):
``predictions/<task>/<model>/<split>/0.parquet`` (tuning and held_out, each in the MEDS prediction
schema exactly, so ``meds-evaluation-cli predictions_path=.../held_out/0.parquet`` reads it
unchanged; see :mod:`ehrfm.predict.meds_predictions`), ``prediction_details.parquet`` (the same rows
as one ehrfm table with ``task``, ``model``, ``split``, which the report reads), ``results.json``, ``results.md``, ROC and calibration PNGs, ``models.json`` (which
hyperparameters each model chose). ``ehrfm evaluate`` (:mod:`ehrfm.evaluate.stage`) is this
function behind Hydra.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
import torch

from ehrfm.meds_dataset import read_splits
from ehrfm.model import MambaBackbone, MultitaskModel
from ehrfm.predict.bundle import CALIBRATION_FILE, CARD_JSON, read_calibrators, read_card, write_card
from ehrfm.predict.cohort import load_or_build_cohort, read_task_labels
from ehrfm.predict.inference import embed_histories, predict_tasks, predictions_frame
from ehrfm.predict.meds_predictions import write_meds_predictions
from ehrfm.predict.tables import attach_splits
from ehrfm.progress import track
from ehrfm.schema import HELD_OUT, MODEL, SPLIT, TASK, TUNING
from ehrfm.tokenize import EventTokenizer
from ehrfm.typed_config import resolve_config

from .config import EvaluateConfig
from .linear_probe import probe_predictions

log = logging.getLogger("ehrfm.evaluate")

__all__ = ["FINETUNE_INPUTS", "evaluate", "finetuned_models"]

FINETUNE_INPUTS = "finetune_inputs.json"  # written by `ehrfm finetune`: the paths it resolved
PREDICTIONS_DIR = "predictions"  # <task>/<model>/<split>/0.parquet, MEDS prediction schema
DETAILS_FILE = "prediction_details.parquet"  # ehrfm's long table of the same rows


def finetuned_models(finetune_output: Path) -> dict[str, Path]:
    """``{"mamba_mtf_<head>": <head>/model}`` for every finished head of a finetune run."""
    return {f"mamba_mtf_{path.parent.name}": path for path in sorted(finetune_output.glob("*/model"))
            if (path / "config.json").is_file()}


def _finetune_inputs(finetune_output: Path) -> dict[str, Any]:
    path = finetune_output / FINETUNE_INPUTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run `ehrfm finetune` first (input={finetune_output})")
    inputs = json.loads(path.read_text())
    missing = [k for k in ("meds_dir", "labels_dir", "tokenizer_dir", "pretrained_model", "context_length")
               if k not in inputs]
    if missing:
        raise ValueError(f"{path}: lacks {missing}; was it written by this version of `ehrfm finetune`?")
    return inputs


def _record_held_out(model_dir: Path, model_name: str, report: Any) -> None:
    """Add this model's held-out results (with CIs, before/after calibration) to its bundle's card."""
    if not (model_dir / CARD_JSON).is_file():
        return
    card = read_card(model_dir)
    mine = [r for r in report.results if r.model == model_name]
    rows = ["| task | n (positives) | AUROC before [95% CI] | ECE before | ECE after |",
            "|---|---|---|---|---|"]
    for r in mine:
        auc, before, after = r.before.intervals["auroc"], r.before.intervals["ece"], r.after.intervals["ece"]
        rows.append(f"| {r.task} | {r.n} ({r.positives}) | "
                    f"{auc.estimate:.3f} [{auc.lower:.3f}, {auc.upper:.3f}] | "
                    f"{before.estimate:.4f} | {after.estimate:.4f} |")
    card["held_out"] = {"evaluation": str(report.output_dir), "results": [r.to_dict() for r in mine],
                        "table": "\n".join(rows)}
    write_card(model_dir, card)


def evaluate(config: EvaluateConfig | Mapping[str, Any] | None = None, /, **settings: Any) -> dict[str, Any]:
    """Evaluate a finetune run; returns ``{"output": ..., "report": ...}``.

    Takes an :class:`EvaluateConfig`, a mapping of its settings, or its settings as keywords
    (``evaluate(input="runs/mtf", n_bootstrap=200)``).
    """
    from .count_baselines import run_count_baselines
    from .count_features import read_events
    from .report import evaluate_predictions

    config = resolve_config(EvaluateConfig, config, settings, where="evaluate")
    finetune_output = Path(config.input)
    inputs = _finetune_inputs(finetune_output)
    output = Path(config.output) if config.output else finetune_output / "evaluation"
    output.mkdir(parents=True, exist_ok=True)
    meds_dir, labels_dir = Path(inputs["meds_dir"]), Path(inputs["labels_dir"])
    context_length = int(inputs["context_length"])
    tokenizer = EventTokenizer.from_pretrained(inputs["tokenizer_dir"])
    models = finetuned_models(finetune_output)
    if not models:
        raise FileNotFoundError(f"{finetune_output}: no <head>/model directory; did `ehrfm finetune` finish?")
    _, _, extra = MultitaskModel.read_meta(next(iter(models.values())))
    task_names = list(extra["task_names"])
    cohort = load_or_build_cohort(finetune_output, meds_dir, tokenizer, labels_dir, task_names,
                                  context_length)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    predictions: list[pl.DataFrame] = []
    chosen: dict[str, Any] = {}
    # The finetuned models are scored where they are evaluated or calibrated.
    scored = cohort.where_split([TUNING, HELD_OUT])

    saved_calibrators: dict[tuple[str, str], Any] = {}
    for name, directory in track(list(models.items()), desc="evaluate: scoring finetuned models", unit="model"):
        model = MultitaskModel.from_pretrained(directory, map_location=device)
        if (directory / CALIBRATION_FILE).is_file():  # bundles of earlier ehrfm versions lack it
            for task, calibrator in read_calibrators(directory, model.task_names).items():
                saved_calibrators[(task, name)] = calibrator
        log.info("scoring %s on %d prediction times (%d tasks, one history pass each)", name, len(scored),
                 len(task_names))
        probabilities = predict_tasks(model, scored, tokens_per_batch=config.tokens_per_batch,
                                      context_length=context_length)
        predictions.append(predictions_frame(scored, probabilities, name))

    if config.linear_probe:
        backbone = MambaBackbone.from_pretrained(inputs["pretrained_model"], map_location=device)
        log.info("linear probe: embedding %d histories with the frozen pretrained backbone", len(cohort))
        features = embed_histories(backbone, cohort, tokens_per_batch=config.tokens_per_batch,
                                   context_length=context_length)
        split = cohort.frame[SPLIT].to_numpy()
        probabilities, chosen["linear_probe"] = probe_predictions(features, cohort.label_matrix(), split,
                                                                  task_names, seed=config.seed)
        predictions.append(predictions_frame(cohort, probabilities, "linear_probe"))

    if config.baselines:
        events = read_events(meds_dir)
        long = read_task_labels(labels_dir, task_names)
        splits = read_splits(meds_dir)
        for task in track(task_names, desc="evaluate: count baselines", unit="task"):
            labels = attach_splits(long.filter(pl.col(TASK) == task).drop(TASK), splits)
            log.info("count-feature baselines for %s (%d labels)", task, labels.height)
            run = run_count_baselines(events, labels, task, seed=config.seed)
            predictions.append(run.predictions)
            chosen.setdefault("count_baselines", {})[task] = run.to_dict()

    all_predictions = pl.concat([p.select(predictions[0].columns) for p in predictions])
    all_predictions = all_predictions.filter(pl.col(SPLIT).is_in([TUNING, HELD_OUT]))
    write_meds_predictions(all_predictions, output / PREDICTIONS_DIR, [TASK, MODEL, SPLIT])
    all_predictions.write_parquet(output / DETAILS_FILE)
    (output / "models.json").write_text(json.dumps({"finetuned": {k: str(v) for k, v in models.items()},
                                                    "selected": chosen}, indent=2, default=str) + "\n")
    report = evaluate_predictions(all_predictions, output, calibration=config.calibration,
                                  n_bootstrap=config.n_bootstrap, seed=config.seed,
                                  calibrators=saved_calibrators)
    for name, directory in models.items():
        _record_held_out(directory, name, report)
    print((output / "results.md").read_text())
    print(f"evaluation written to {output}")
    return {"output": str(output), "report": report}
