"""LightningModule for next-event pretraining around a plain :class:`EHRLanguageModel`."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from ehrfm.model import BackboneConfig, EHRLanguageModel, param_groups
from ehrfm.training import adamw_with_warmup


class PretrainModule(L.LightningModule):
    """Next-token loss over real tokens; validation perplexity per epoch (token-weighted)."""

    def __init__(self, model_config: dict[str, Any], *, learning_rate: float = 1e-3,
                 weight_decay: float = 0.01, warmup_steps: int = 100,
                 total_steps: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = EHRLanguageModel(BackboneConfig(**model_config))
        self._val_loss_sum = 0.0
        self._val_tokens = 0

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.model(batch)

    def _token_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        mask = batch["attention_mask"]
        targets = mask[:, 1:] & mask[:, :-1]
        return self.model.loss(batch), int(targets.sum())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, tokens = self._token_loss(batch)
        mask = batch["attention_mask"]
        self.log("train/loss", loss, prog_bar=True, batch_size=mask.shape[0])
        self.log("train/padding_fraction", 1.0 - mask.float().mean(), batch_size=mask.shape[0])
        self.log("train/tokens", float(tokens), reduce_fx="sum", batch_size=mask.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_loss_sum, self._val_tokens = 0.0, 0

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, tokens = self._token_loss(batch)
        self._val_loss_sum += float(loss) * tokens
        self._val_tokens += tokens

    def on_validation_epoch_end(self) -> None:
        totals = torch.tensor([self._val_loss_sum, float(self._val_tokens)], dtype=torch.float64,
                              device=self.device)
        totals = self.all_gather(totals)
        if totals.dim() > 1:
            totals = totals.sum(dim=0)
        mean = float(totals[0] / max(float(totals[1]), 1.0))
        self.log("val/loss", mean, prog_bar=True, sync_dist=False)
        self.log("val/perplexity", math.exp(min(mean, 50.0)), prog_bar=True, sync_dist=False)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        return adamw_with_warmup(param_groups(self.model, hp.weight_decay), lr=hp.learning_rate,
                                 betas=(0.9, 0.95), warmup_steps=hp.warmup_steps,
                                 total_steps=hp.total_steps, decay="cosine")
