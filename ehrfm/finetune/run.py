"""``finetune(...)``: one model learns every task at once from task prompts.

Inputs come from an ``ehrfm pretrain`` output (``input``: ``meds/``, ``model/`` with its
tokenizer) unless given one by one. Steps: task labels (built into ``<output>/labels`` with
:func:`ehrfm.tasks.label_meds_dataset` when missing) -> the multitask cohort (one tokenized
history per subject and prediction time, cached in ``<output>/cohort.parquet``) -> for each
head in ``heads`` (``task_shared`` and/or ``task_per_task``) a Lightning run with mixed-task
batches, class weighting, early stopping on the tuning split's mean AUROC, and the best epoch
saved with ``save_pretrained``. Outputs under ``output``::

    labels/<task>/0.parquet, labels/_details/, labels/summary.json (see ehrfm.meds_labels)
    cohort.parquet, cohort.json
    <head>/model/            the bundle of the best epoch: config.json + model.safetensors, tokenizer/,
                             tasks/, calibration.json, model_card.json/.md
    <head>/checkpoints/, <head>/logs/
    finetune_summary.json    tuning AUROC per task and head, and which head won
    finetune_config.yaml     the settings of the run
    finetune_inputs.json     the resolved inputs (read by ``ehrfm evaluate``)

``ehrfm finetune`` (:mod:`ehrfm.finetune.stage`) is this function behind Hydra.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import yaml
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import DataLoader

from ehrfm.meds_labels import has_task_labels
from ehrfm.model import MultitaskModel
from ehrfm.predict.cohort import Cohort, load_or_build_cohort
from ehrfm.predict.cohort_dataset import CohortDataset, collate_cohort
from ehrfm.schema import TRAIN, TUNING
from ehrfm.tasks import ConceptSets, TaskDefinition, label_meds_dataset, load_tasks
from ehrfm.tokenize import EventTokenizer
from ehrfm.training import bucketed_loader, build_trainer, logged_epochs, restore_best
from ehrfm.typed_config import resolve_config, to_mapping

from .bundle_writer import write_bundle
from .config import FinetuneConfig
from .module import FinetuneModule, positive_weights

log = logging.getLogger("ehrfm.finetune")

__all__ = ["INPUTS_FILE", "MONITOR", "finetune", "resolve_inputs"]

MONITOR = "tuning/mean_auroc"
INPUTS_FILE = "finetune_inputs.json"


def resolve_inputs(config: FinetuneConfig) -> dict[str, Path]:
    """``meds_dir``, ``pretrained_model`` and ``tokenizer_dir`` paths, defaulting into ``input``."""
    base = Path(config.input) if config.input else None

    def pick(key: str, default: str) -> Path:
        value = getattr(config, key)
        if value:
            return Path(value)
        if base is None:
            raise ValueError(f"set {key}= or input= (the output folder of `ehrfm pretrain`)")
        return base / default

    paths = {"meds_dir": pick("meds_dir", "meds"), "pretrained_model": pick("pretrained_model", "model")}
    paths["tokenizer_dir"] = (Path(config.tokenizer_dir) if config.tokenizer_dir
                              else paths["pretrained_model"] / "tokenizer")
    for key, path in paths.items():
        if not path.exists():
            raise FileNotFoundError(f"{key}: {path} does not exist; run `ehrfm pretrain` first or set {key}=")
    return paths


def ensure_labels(tasks: list[TaskDefinition], meds_dir: Path, labels_dir: Path) -> Path:
    """Label files for every task in ``labels_dir``, labelling the MEDS dataset when any is missing."""
    if all(has_task_labels(labels_dir, task.name) for task in tasks):
        return labels_dir
    log.info("labelling %d tasks on %s -> %s", len(tasks), meds_dir, labels_dir)
    label_meds_dataset(meds_dir, tasks, labels_dir)
    return labels_dir


def _loader(cohort: Cohort, config: FinetuneConfig, pad_token_id: int, shuffle: bool) -> DataLoader:
    dataset = CohortDataset(cohort, config.data.context_length)
    return bucketed_loader(dataset, dataset.lengths, config.data.tokens_per_batch, collate_cohort,
                           pad_token_id=pad_token_id, seed=config.seed, shuffle=shuffle)


def train_head(config: FinetuneConfig, head: str, cohort: Cohort, paths: dict[str, Path],
               prompt_ids: list[int], tokenizer: EventTokenizer, output: Path,
               tasks: list[TaskDefinition]) -> dict[str, Any]:
    """Finetune one head; returns its tuning metrics. The best epoch is saved to ``output/model``
    as a self-contained bundle (weights, tokenizer, tasks, calibrators, model card)."""
    L.seed_everything(config.seed, workers=True)
    train, tuning = cohort.split(TRAIN), cohort.split(TUNING)
    model = MultitaskModel.from_backbone(paths["pretrained_model"], cohort.task_names, prompt_ids, head=head)
    train_loader = _loader(train, config, tokenizer.pad_token_id, True)
    tuning_loader = _loader(tuning, config, tokenizer.pad_token_id, False)
    max_epochs = int(config.trainer.get("max_epochs") or 1)
    optim = config.optim
    module = FinetuneModule(
        model, positive_weights(train.label_matrix(), config.pos_weight),
        lr_backbone=optim.lr_backbone, lr_head=optim.lr_head, weight_decay=optim.weight_decay,
        warmup_steps=optim.warmup_steps, total_steps=len(train_loader) * max_epochs,
    )
    stopper = EarlyStopping(monitor=MONITOR, mode="max", patience=config.early_stopping.patience)
    trainer, checkpoint = build_trainer(output, config.trainer, monitor=MONITOR, mode="max",
                                        callbacks=[stopper])
    trainer.fit(module, train_loader, tuning_loader)
    restore_best(module, checkpoint, fast_dev_run=bool(config.trainer.get("fast_dev_run")))
    model.save_pretrained(output / "model")
    tokenizer.save_pretrained(output / "model" / "tokenizer")
    columns = [MONITOR, "tuning/loss", *(f"tuning/auroc/{t}" for t in cohort.task_names)]
    epochs = [{k.removeprefix("tuning/"): v for k, v in row.items()}
              for row in logged_epochs(trainer, MONITOR, columns)]
    best = checkpoint.best_model_score
    metrics = {"head": head, "best_tuning_mean_auroc": None if best is None else float(best),
               "epochs": epochs, "global_step": trainer.global_step,
               "pos_weight": module.pos_weight.tolist(), "stopped_epoch": stopper.stopped_epoch,
               "parameters": sum(p.numel() for p in model.parameters())}
    write_bundle(output / "model", model=model.eval(), tasks=tasks, cohort=cohort, meds_dir=paths["meds_dir"],
                 tokenizer=tokenizer, head=head, name=f"{Path(config.output).name}-{head}",
                 calibration=config.calibration, context_length=config.data.context_length,
                 tokens_per_batch=config.data.tokens_per_batch, head_metrics=metrics)
    return metrics


def finetune(config: FinetuneConfig | Mapping[str, Any] | None = None, /, **settings: Any) -> dict[str, Any]:
    """Finetune every head in ``heads``; returns the summary (also written to ``finetune_summary.json``).

    Takes a :class:`FinetuneConfig`, a mapping of its settings, or its settings as keywords
    (``finetune(input="runs/pt", output="runs/mtf", heads=["task_shared"])``).
    """
    config = resolve_config(FinetuneConfig, config, settings, where="finetune")
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    paths = resolve_inputs(config)
    tasks = load_tasks(config.tasks, concepts=ConceptSets.load(config.concept_sets))
    task_names = [task.name for task in tasks]
    tokenizer = EventTokenizer.from_pretrained(paths["tokenizer_dir"])
    prompt_ids = tokenizer.convert_tokens_to_ids([task.prompt_token for task in tasks])
    labels_dir = ensure_labels(tasks, paths["meds_dir"], Path(config.labels_dir) if config.labels_dir
                               else output / "labels")
    (output / "finetune_config.yaml").write_text(yaml.safe_dump(to_mapping(config), sort_keys=False))
    inputs = {**{key: str(path) for key, path in paths.items()}, "labels_dir": str(labels_dir),
              "tasks": task_names, "context_length": config.data.context_length}
    (output / INPUTS_FILE).write_text(json.dumps(inputs, indent=2) + "\n")
    cohort = load_or_build_cohort(output, paths["meds_dir"], tokenizer, labels_dir, task_names,
                                  config.data.context_length)
    counts = cohort.counts()
    log.info("cohort: %d prediction times, %s", len(cohort), counts)
    for task, per_split in counts.items():
        for split in (TRAIN, TUNING):
            positives, rows = per_split.get(f"{split}_positives", 0), per_split.get(f"{split}_rows", 0)
            if positives == 0 or positives == rows:
                raise ValueError(f"task {task!r} has a single class in the {split} split ({per_split}); "
                                 "it cannot be finetuned")
    heads = {head: train_head(config, head, cohort, paths, prompt_ids, tokenizer, output / head, tasks)
             for head in config.heads}
    scored = {h: m["best_tuning_mean_auroc"] for h, m in heads.items()
              if m["best_tuning_mean_auroc"] is not None}
    lengths = CohortDataset(cohort, config.data.context_length).lengths
    summary = {"tasks": task_names, "cohort_rows": len(cohort), "label_counts": counts, "heads": heads,
               "best_head": max(scored, key=scored.get) if scored else None,  # type: ignore[arg-type]
               "history_lengths": {"mean": float(np.mean(lengths)), "max": int(lengths.max(initial=0))}}
    (output / "finetune_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for head, metrics in heads.items():
        print(f"{head}: best tuning mean AUROC {metrics['best_tuning_mean_auroc']}, "
              f"{metrics['global_step']} steps")
    print(f"best head on tuning: {summary['best_head']}; models in {output}/<head>/model")
    return summary
