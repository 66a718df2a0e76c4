"""LightningModule for multitask prompted finetuning of a :class:`MultitaskModel`."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from ehrfm.model import MultitaskModel, param_groups
from ehrfm.predict.metrics import auroc
from ehrfm.training import adamw_with_warmup

from .config import POS_WEIGHTS

__all__ = ["FinetuneModule", "masked_task_loss", "positive_weights", "task_aurocs"]



def positive_weights(labels: np.ndarray, scheme: str, max_weight: float = 50.0) -> list[float]:
    """Per-task BCE ``pos_weight`` from train labels ``(rows, tasks)`` (NaN = unlabelled).

    ``balanced``: negatives/positives (each class weighs the same in the loss); ``sqrt``: its
    square root (a milder push that keeps rare-outcome tasks from dominating the gradient);
    ``none``: 1. Capped at ``max_weight``.

    >>> positive_weights(np.array([[1.0], [0.0], [0.0], [0.0], [0.0]]), "balanced")
    [4.0]
    >>> positive_weights(np.array([[1.0], [0.0], [0.0], [0.0], [0.0]]), "sqrt")
    [2.0]
    """
    if scheme not in POS_WEIGHTS:
        raise ValueError(f"pos_weight must be one of {POS_WEIGHTS}, got {scheme!r}")
    weights = []
    for column in labels.T:
        positives, negatives = float(np.nansum(column == 1)), float(np.nansum(column == 0))
        ratio = negatives / positives if positives else 1.0
        weight = {"none": 1.0, "sqrt": math.sqrt(ratio), "balanced": ratio}[scheme]
        weights.append(float(min(max(weight, 1e-3), max_weight)))
    return weights


def masked_task_loss(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """Mean over tasks (that have labels in the batch) of each task's weighted BCE over its rows."""
    known = ~torch.isnan(labels)
    target = torch.nan_to_num(labels, nan=0.0)
    per_entry = F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=pos_weight,
                                                   reduction="none")
    per_entry = per_entry * known
    rows_per_task = known.sum(dim=0)
    present = rows_per_task > 0
    if not present.any():
        return logits.sum() * 0.0
    return (per_entry.sum(dim=0)[present] / rows_per_task[present]).mean()


def task_aurocs(probabilities: np.ndarray, labels: np.ndarray, task_names: list[str]) -> dict[str, float]:
    """AUROC per task over labelled rows (NaN when a task lacks one of the classes)."""
    known = ~np.isnan(labels)
    return {name: auroc(labels[known[:, k], k], probabilities[known[:, k], k])
            for k, name in enumerate(task_names)}


class FinetuneModule(L.LightningModule):
    """All tasks in every batch; tuning-split AUROC per task (and their mean) each epoch."""

    def __init__(self, model: MultitaskModel, pos_weight: list[float], *, lr_backbone: float = 3e-4,
                 lr_head: float = 1e-3, weight_decay: float = 0.01, warmup_steps: int = 20,
                 total_steps: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.register_buffer("pos_weight", torch.tensor(pos_weight, dtype=torch.float32))
        self._val_probs: list[np.ndarray] = []
        self._val_labels: list[np.ndarray] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = masked_task_loss(self.model(batch), batch["labels"], self.pos_weight)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["labels"].shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_probs, self._val_labels = [], []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self.model(batch)
        self.log("tuning/loss", masked_task_loss(logits, batch["labels"], self.pos_weight),
                 batch_size=batch["labels"].shape[0])
        self._val_probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        self._val_labels.append(batch["labels"].cpu().numpy())

    def on_validation_epoch_end(self) -> None:
        if not self._val_probs:
            return
        aurocs = task_aurocs(np.concatenate(self._val_probs), np.concatenate(self._val_labels),
                             self.model.task_names)
        for name, value in aurocs.items():
            self.log(f"tuning/auroc/{name}", value)
        finite = [v for v in aurocs.values() if not math.isnan(v)]
        self.log("tuning/mean_auroc", float(np.mean(finite)) if finite else 0.5, prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        head = [p for p in self.model.head.parameters() if p.requires_grad]
        groups = [*param_groups(self.model.backbone, hp.weight_decay, lr=hp.lr_backbone),
                  {"params": head, "lr": hp.lr_head, "weight_decay": hp.weight_decay}]
        return adamw_with_warmup(groups, lr=hp.lr_backbone, betas=(0.9, 0.98), warmup_steps=hp.warmup_steps,
                                 total_steps=hp.total_steps, decay="linear")
