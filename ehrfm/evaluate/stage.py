"""``ehrfm evaluate``: every model of a finetune run, the linear probe and the count baselines,
scored on exactly the same labels and splits, then compared with patient-level bootstrap CIs.

Reads ``finetune_output`` (written by ``ehrfm finetune``: its config, labels, cohort and
``<head>/model`` directories). Models compared, per task:

* ``mamba_mtf_<head>``: the finetuned multitask models (one history pass per prediction time
  serves every task);
* ``linear_probe``: L2 logistic regression on the frozen pretrained backbone's representation;
* ``lightgbm`` and ``logistic_regression``: age + per-code counts before the prediction time.

Calibrators and every hyperparameter are fit on train/tuning only; metrics are reported on
held_out. Outputs under ``output`` (default ``<finetune_output>/evaluation``):
``predictions.parquet``, ``results.json``, ``results.md``, ROC and calibration PNGs,
``models.json`` (which hyperparameters each model chose).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import polars as pl
import torch
from omegaconf import DictConfig, OmegaConf

from ehrfm.finetune.cohort import SPLIT, TASK, read_task_labels
from ehrfm.finetune.model import MultitaskModel
from ehrfm.finetune.probe import probe_predictions
from ehrfm.finetune.scoring import embed_histories, predict_tasks, predictions_frame
from ehrfm.finetune.stage import load_or_build_cohort
from ehrfm.model import MambaBackbone
from ehrfm.tokenize import EventTokenizer

log = logging.getLogger("ehrfm.evaluate")

__all__ = ["finetuned_models", "run_evaluate_stage"]


def finetuned_models(finetune_output: Path) -> dict[str, Path]:
    """``{"mamba_mtf_<head>": <head>/model}`` for every finished head of a finetune run."""
    return {f"mamba_mtf_{path.parent.name}": path for path in sorted(finetune_output.glob("*/model"))
            if (path / "config.json").is_file()}


def run_evaluate_stage(cfg: DictConfig) -> dict[str, Any]:
    from ehrfm.evaluate.baselines import run_count_baselines
    from ehrfm.evaluate.features import read_events
    from ehrfm.evaluate.frames import attach_splits, read_splits
    from ehrfm.evaluate.report import evaluate_predictions

    finetune_output = Path(cfg.finetune_output)
    config_path = finetune_output / "finetune_config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing; run `ehrfm finetune` first (finetune_output={finetune_output})")
    finetuned = OmegaConf.load(config_path)
    output = Path(cfg.output) if cfg.get("output") else finetune_output / "evaluation"
    output.mkdir(parents=True, exist_ok=True)
    meds_dir, labels_dir = Path(finetuned.meds_dir), Path(finetuned.labels_dir)
    tokenizer = EventTokenizer.from_pretrained(finetuned.tokenizer)
    models = finetuned_models(finetune_output)
    if not models:
        raise FileNotFoundError(f"{finetune_output}: no <head>/model directory; did `ehrfm finetune` finish?")
    _, _, extra = MultitaskModel.read_meta(next(iter(models.values())))
    task_names = list(extra["task_names"])
    cohort = load_or_build_cohort(finetune_output, meds_dir, tokenizer, labels_dir, task_names, int(finetuned.data.max_length))
    device = torch.device(cfg.device if cfg.get("device") else ("cuda" if torch.cuda.is_available() else "cpu"))
    predictions: list[pl.DataFrame] = []
    chosen: dict[str, Any] = {}
    # The finetuned models are scored where they are evaluated or calibrated.
    scored = cohort.where_split(["tuning", "held_out"])

    for name, directory in models.items():
        model = MultitaskModel.from_pretrained(directory, map_location=device)
        log.info("scoring %s on %d prediction times (%d tasks, one history pass each)", name, len(scored), len(task_names))
        probabilities = predict_tasks(model, scored, tokens_per_batch=int(cfg.tokens_per_batch))
        predictions.append(predictions_frame(scored, probabilities, name))

    if cfg.linear_probe:
        backbone = MambaBackbone.from_pretrained(finetuned.pretrained_model, map_location=device)
        log.info("linear probe: embedding %d histories with the frozen pretrained backbone", len(cohort))
        features = embed_histories(backbone, cohort, tokens_per_batch=int(cfg.tokens_per_batch))
        split = cohort.frame[SPLIT].to_numpy()
        probabilities, chosen["linear_probe"] = probe_predictions(features, cohort.label_matrix(), split, task_names,
                                                                  seed=int(cfg.seed))
        predictions.append(predictions_frame(cohort, probabilities, "linear_probe"))

    if cfg.baselines:
        events = read_events(meds_dir)
        long = read_task_labels(labels_dir, task_names)
        splits = read_splits(meds_dir)
        for task in task_names:
            labels = attach_splits(long.filter(pl.col(TASK) == task).drop(TASK), splits)
            log.info("count-feature baselines for %s (%d labels)", task, labels.height)
            run = run_count_baselines(events, labels, task, seed=int(cfg.seed))
            predictions.append(run.predictions)
            chosen.setdefault("count_baselines", {})[task] = run.to_dict()

    all_predictions = pl.concat([p.select(predictions[0].columns) for p in predictions])
    all_predictions = all_predictions.filter(pl.col(SPLIT).is_in(["tuning", "held_out"]))
    all_predictions.write_parquet(output / "predictions.parquet")
    (output / "models.json").write_text(json.dumps({"finetuned": {k: str(v) for k, v in models.items()},
                                                    "selected": chosen}, indent=2, default=str) + "\n")
    report = evaluate_predictions(all_predictions, output, calibration=str(cfg.calibration),
                                  n_bootstrap=int(cfg.n_bootstrap), seed=int(cfg.seed))
    print((output / "results.md").read_text())
    print(f"evaluation written to {output}")
    return {"output": str(output), "report": report}
