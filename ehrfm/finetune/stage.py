"""``ehrfm finetune``: one model learns every task at once from task prompts.

Inputs come from a ``ehrfm pretrain`` output (``pretrain_output``: ``meds/``, ``model/`` with
its tokenizer) unless given one by one. Steps: task labels (``ehrfm label``, built into
``<output>/labels`` when missing) -> the multitask cohort (one tokenized history per subject and
prediction time, cached in ``<output>/cohort.parquet``) -> for each head in ``heads``
(``task_shared`` and/or ``task_per_task``) a Lightning run with mixed-task batches, class
weighting, early stopping on the tuning split's mean AUROC, and the best epoch saved with
``save_pretrained``. Outputs under ``output``::

    labels/<task>.parquet, labels/summary.json
    cohort.parquet, cohort.json
    <head>/model/            config.json + model.safetensors (+ tokenizer/) of the best epoch
    <head>/checkpoints/, <head>/logs/
    finetune_summary.json    tuning AUROC per task and head, and which head won
    finetune_config.yaml     the resolved config (read by ``ehrfm evaluate``)
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import polars as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from ehrfm.tasks import label_meds_dataset, load_tasks
from ehrfm.tokenize import EventTokenizer
from ehrfm.train.data import LengthBucketBatchSampler

from .cohort import Cohort, build_cohort, read_task_labels
from .data import CohortDataset, collate_cohort
from .model import MultitaskModel
from .module import FinetuneModule, positive_weights

log = logging.getLogger("ehrfm.finetune")

MONITOR = "tuning/mean_auroc"


def resolve_inputs(cfg: DictConfig) -> dict[str, Path]:
    """``meds_dir``, ``pretrained_model`` and ``tokenizer`` paths, defaulting into ``pretrain_output``."""
    base = Path(cfg.pretrain_output) if cfg.get("pretrain_output") else None

    def pick(key: str, default: str) -> Path:
        if cfg.get(key):
            return Path(cfg[key])
        if base is None:
            raise ValueError(f"set {key}= or pretrain_output= (the output folder of `ehrfm pretrain`)")
        return base / default

    paths = {"meds_dir": pick("meds_dir", "meds"), "pretrained_model": pick("pretrained_model", "model")}
    paths["tokenizer"] = Path(cfg.tokenizer) if cfg.get("tokenizer") else paths["pretrained_model"] / "tokenizer"
    for key, path in paths.items():
        if not path.exists():
            raise FileNotFoundError(f"{key}: {path} does not exist; run `ehrfm pretrain` first or set {key}=")
    return paths


def ensure_labels(tasks: list[Any], meds_dir: Path, labels_dir: Path) -> Path:
    """Label files for every task in ``labels_dir``, labelling the MEDS dataset when any is missing."""
    if all((labels_dir / f"{task.name}.parquet").is_file() for task in tasks):
        return labels_dir
    log.info("labelling %d tasks on %s -> %s", len(tasks), meds_dir, labels_dir)
    label_meds_dataset(meds_dir, tasks, labels_dir)
    return labels_dir


def load_or_build_cohort(output: Path, meds_dir: Path, tokenizer: EventTokenizer, labels_dir: Path,
                         task_names: list[str], max_length: int) -> Cohort:
    """The cohort cached in ``output`` when it matches tasks, labels and ``max_length``; else built."""
    long = read_task_labels(labels_dir, task_names)
    key = {"tasks": task_names, "max_length": max_length, "meds_dir": str(meds_dir.resolve()),
           "labels_rows": long.height, "labels_hash": int(long.hash_rows().sum()) if long.height else 0,
           "vocab_size": tokenizer.vocab_size}
    frame_path, key_path = output / "cohort.parquet", output / "cohort.json"
    if frame_path.is_file() and key_path.is_file() and json.loads(key_path.read_text()) == key:
        return Cohort(pl.read_parquet(frame_path), task_names)
    cohort = build_cohort(meds_dir, tokenizer, long, task_names, max_length=max_length)
    cohort.frame.write_parquet(frame_path)
    key_path.write_text(json.dumps(key, indent=2) + "\n")
    return cohort


def _loader(cohort: Cohort, pad_token_id: int, tokens_per_batch: int, seed: int, shuffle: bool) -> DataLoader:
    dataset = CohortDataset(cohort)
    sampler = LengthBucketBatchSampler(dataset.lengths, tokens_per_batch, seed=seed, shuffle=shuffle)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=partial(collate_cohort, pad_token_id=pad_token_id))


def train_head(cfg: DictConfig, head: str, cohort: Cohort, paths: dict[str, Path], prompt_ids: list[int],
               tokenizer: EventTokenizer, output: Path) -> dict[str, Any]:
    """Finetune one head; returns its tuning metrics. The best epoch is saved to ``output/model``."""
    L.seed_everything(int(cfg.seed), workers=True)
    train, tuning = cohort.split("train"), cohort.split("tuning")
    model = MultitaskModel.from_backbone(paths["pretrained_model"], cohort.task_names, prompt_ids, head=head)
    tokens_per_batch = int(cfg.data.tokens_per_batch)
    train_loader = _loader(train, tokenizer.pad_token_id, tokens_per_batch, int(cfg.seed), True)
    tuning_loader = _loader(tuning, tokenizer.pad_token_id, tokens_per_batch, int(cfg.seed), False)
    max_epochs = int(cfg.trainer.get("max_epochs") or 1)
    module = FinetuneModule(
        model, positive_weights(train.label_matrix(), str(cfg.pos_weight)),
        lr_backbone=float(cfg.optim.lr_backbone), lr_head=float(cfg.optim.lr_head),
        weight_decay=float(cfg.optim.weight_decay), warmup_steps=int(cfg.optim.warmup_steps),
        total_steps=len(train_loader) * max_epochs,
    )
    checkpoint = ModelCheckpoint(dirpath=output / "checkpoints", filename="best", monitor=MONITOR, mode="max", save_last=False)
    stopper = EarlyStopping(monitor=MONITOR, mode="max", patience=int(cfg.early_stopping.patience))
    trainer_args: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)  # type: ignore[assignment]
    trainer = L.Trainer(default_root_dir=str(output), callbacks=[checkpoint, stopper],
                        logger=[CSVLogger(output / "logs", name="csv"), TensorBoardLogger(output / "logs", name="tensorboard")],
                        use_distributed_sampler=False, **trainer_args)
    trainer.fit(module, train_loader, tuning_loader)
    best = checkpoint.best_model_path
    if best and not cfg.trainer.get("fast_dev_run"):
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    model.save_pretrained(output / "model")
    tokenizer.save_pretrained(output / "model" / "tokenizer")
    return {"head": head, "best_tuning_mean_auroc": _score(checkpoint.best_model_score),
            "epochs": _per_epoch(output), "global_step": trainer.global_step,
            "pos_weight": module.pos_weight.tolist(), "stopped_epoch": stopper.stopped_epoch,
            "parameters": sum(p.numel() for p in model.parameters())}


def _score(value: Any) -> float | None:
    return None if value is None else float(value)


def _per_epoch(output: Path) -> list[dict[str, float]]:
    files = sorted((output / "logs" / "csv").glob("version_*/metrics.csv"))
    if not files:
        return []
    frame = pl.read_csv(files[-1])
    columns = [c for c in frame.columns if c.startswith("tuning/")]
    if MONITOR not in columns:
        return []
    rows = frame.filter(pl.col(MONITOR).is_not_null()).select("epoch", *columns)
    return [{k.removeprefix("tuning/"): (None if v is None else float(v)) for k, v in row.items()} for row in rows.iter_rows(named=True)]


def run_finetune_stage(cfg: DictConfig) -> dict[str, Any]:
    output = Path(cfg.finetune_output)
    output.mkdir(parents=True, exist_ok=True)
    paths = resolve_inputs(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    resolved.update({key: str(path) for key, path in paths.items()})
    tasks = load_tasks(list(cfg.tasks))
    task_names = [task.name for task in tasks]
    tokenizer = EventTokenizer.from_pretrained(paths["tokenizer"])
    prompt_ids = tokenizer.convert_tokens_to_ids([task.prompt_token for task in tasks])
    labels_dir = ensure_labels(tasks, paths["meds_dir"], Path(cfg.labels_dir) if cfg.get("labels_dir") else output / "labels")
    resolved["labels_dir"] = str(labels_dir)
    (output / "finetune_config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    cohort = load_or_build_cohort(output, paths["meds_dir"], tokenizer, labels_dir, task_names, int(cfg.data.max_length))
    counts = cohort.counts()
    log.info("cohort: %d prediction times, %s", len(cohort), counts)
    for task, per_split in counts.items():
        for split in ("train", "tuning"):
            if per_split.get(f"{split}_positives", 0) == 0 or per_split.get(f"{split}_positives") == per_split.get(f"{split}_rows"):
                raise ValueError(f"task {task!r} has a single class in the {split} split ({per_split}); it cannot be finetuned")
    heads = {}
    for head in cfg.heads:
        heads[head] = train_head(cfg, str(head), cohort, paths, prompt_ids, tokenizer, output / str(head))
    scored = {h: m["best_tuning_mean_auroc"] for h, m in heads.items() if m["best_tuning_mean_auroc"] is not None}
    summary = {"tasks": task_names, "cohort_rows": len(cohort), "label_counts": counts, "heads": heads,
               "best_head": max(scored, key=scored.get) if scored else None,  # type: ignore[arg-type]
               "history_lengths": {"mean": float(np.mean(CohortDataset(cohort).lengths)), "max": int(cohort.frame["length"].max())}}
    (output / "finetune_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for head, metrics in heads.items():
        print(f"{head}: best tuning mean AUROC {metrics['best_tuning_mean_auroc']}, {metrics['global_step']} steps")
    print(f"best head on tuning: {summary['best_head']}; models in {output}/<head>/model")
    return summary
