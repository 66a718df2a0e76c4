"""Lightning pieces that pretraining and finetuning share, written once.

- :func:`build_trainer`: a ``lightning.Trainer`` with CSV (and, with the ``tensorboard`` extra,
  TensorBoard) logs under
  ``<output>/logs`` and a checkpoint of the best epoch by ``monitor`` under
  ``<output>/checkpoints`` (``.ckpt`` files are for resuming only).
- :func:`restore_best`: load the best epoch's weights back into the module before it is saved
  with ``save_pretrained``.
- :func:`logged_epochs`: the per-epoch validation metrics that the CSV logger wrote.
- :func:`bucketed_loader`: a ``DataLoader`` over length-bucketed batches.
- :func:`adamw_with_warmup`: AdamW with linear warmup, then cosine or linear decay to 10%.

>>> schedule = warmup_schedule(warmup_steps=2, total_steps=12, decay="linear")
>>> [round(schedule(step), 2) for step in (0, 1, 2, 7, 12, 50)]
[0.5, 1.0, 1.0, 0.55, 0.1, 0.1]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from torch.utils.data import DataLoader, Dataset

from ehrfm.batching import LengthBucketBatchSampler
from ehrfm.extras import has_module
from ehrfm.typed_config import check_call_keys

__all__ = ["adamw_with_warmup", "bucketed_loader", "build_trainer", "check_trainer_settings", "logged_epochs",
           "restore_best", "warmup_schedule"]

DECAYS = ("cosine", "linear")
_FLOOR = 0.1  # the learning rate never decays below this share of its peak


def warmup_schedule(warmup_steps: int, total_steps: int | None, *, decay: str) -> Callable[[int], float]:
    """Learning-rate multiplier per step: linear warmup, then ``decay`` down to 10% at ``total_steps``."""
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    warmup = max(1, int(warmup_steps))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not total_steps or total_steps <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / (total_steps - warmup))
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if decay == "cosine" else 1.0 - progress
        return _FLOOR + (1.0 - _FLOOR) * shape

    return schedule


def adamw_with_warmup(groups: Sequence[dict[str, Any]], *, lr: float, betas: tuple[float, float],
                      warmup_steps: int, total_steps: int | None, decay: str) -> dict[str, Any]:
    """What ``configure_optimizers`` returns: AdamW over ``groups``, stepped every batch."""
    optimizer = torch.optim.AdamW(list(groups), lr=lr, betas=betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  warmup_schedule(warmup_steps, total_steps, decay=decay))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def check_trainer_settings(values: dict[str, Any], *, where: str) -> dict[str, Any]:
    """``lightning.Trainer`` arguments, by name; the ones a stage sets itself are not settings."""
    check_call_keys(values, L.Trainer.__init__, where=where, prefix="trainer.",
                    exclude=("callbacks", "logger", "default_root_dir", "use_distributed_sampler"))
    return values


def build_trainer(output: Path, trainer_args: Mapping[str, Any], *, monitor: str, mode: str,
                  save_last: bool = False,
                  callbacks: Sequence[Callback] = ()) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Trainer logging under ``output/logs`` and keeping the best epoch by ``monitor``."""
    checkpoint = ModelCheckpoint(dirpath=output / "checkpoints", filename="best", monitor=monitor, mode=mode,
                                 save_last=save_last)
    loggers: list[Logger] = [CSVLogger(output / "logs", name="csv")]
    if has_module("tensorboard"):  # the `tensorboard` extra; the CSV log always holds the same metrics
        loggers.append(TensorBoardLogger(output / "logs", name="tensorboard"))
    trainer = L.Trainer(default_root_dir=str(output), callbacks=[checkpoint, *callbacks], logger=loggers,
                        use_distributed_sampler=False, **dict(trainer_args))
    return trainer, checkpoint


def restore_best(module: L.LightningModule, checkpoint: ModelCheckpoint, *, fast_dev_run: bool) -> None:
    """Load the best checkpoint's weights into ``module`` (a fast dev run saves none)."""
    best = checkpoint.best_model_path
    if best and not fast_dev_run:
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])


def logged_epochs(trainer: L.Trainer, monitor: str, columns: Sequence[str]) -> list[dict[str, float | None]]:
    """``epoch`` and ``columns`` of every logged row where ``monitor`` is set, from the CSV log."""
    import polars as pl

    csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    path = Path(csv_logger.log_dir, "metrics.csv") if csv_logger is not None else None
    if path is None or not path.is_file():
        return []
    frame = pl.read_csv(path)
    if monitor not in frame.columns:
        return []
    present = [c for c in columns if c in frame.columns]
    rows = frame.filter(pl.col(monitor).is_not_null()).select("epoch", *present)
    return [{k: (None if v is None else float(v)) for k, v in row.items()}
            for row in rows.iter_rows(named=True)]


def bucketed_loader(dataset: Dataset, lengths: np.ndarray, tokens_per_batch: int,
                    collate: Callable[..., dict[str, torch.Tensor]], *, pad_token_id: int, seed: int,
                    shuffle: bool, num_workers: int = 0) -> DataLoader:
    """Batches of similar-length items under a padded-token budget (see :mod:`ehrfm.batching`)."""
    sampler = LengthBucketBatchSampler(lengths, tokens_per_batch, seed=seed, shuffle=shuffle)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                      collate_fn=partial(collate, pad_token_id=pad_token_id),
                      persistent_workers=num_workers > 0)
