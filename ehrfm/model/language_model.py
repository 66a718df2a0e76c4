"""``EHRLanguageModel``: backbone + next-token head tied to the token embedding.

>>> import torch
>>> from ehrfm.model import BackboneConfig, EHRLanguageModel
>>> model = EHRLanguageModel(BackboneConfig.preset("tiny", vocab_size=40))
>>> ids = torch.tensor([[1, 5, 6, 7, 0, 0]])
>>> batch = {
...     "input_ids": ids,
...     "attention_mask": ids != 0,
...     "time_days": torch.full((1, 6), 19000.0, dtype=torch.float64),
...     "age_years": torch.full((1, 6), 61.5),
...     "visit_index": torch.ones(1, 6, dtype=torch.long),
...     "token_type": torch.full((1, 6), 7),
... }
>>> out = model(batch)
>>> out["logits"].shape, out["hidden"].shape
(torch.Size([1, 6, 40]), torch.Size([1, 6, 64]))
>>> loss = model.loss(batch)  # 3 predicted tokens: 5->6, 6->7 and 1->5
>>> bool(loss > 0)
True
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import BackboneState, MambaBackbone, resolve_mask
from .config import BackboneConfig
from .heads import build_head
from .pretrained import PretrainedMixin

__all__ = ["EHRLanguageModel"]


class EHRLanguageModel(PretrainedMixin, nn.Module):
    """Next-event language model over EHR token sequences."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = MambaBackbone(config)
        self.lm_head = build_head("next_token", config, token_embedding=self.backbone.embedding.token)

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``batch`` as for :meth:`MambaBackbone.forward` -> ``{"logits": (b, l, V), "hidden": (b, l, d)}``.

        ``logits[:, t]`` predicts the token at ``t + 1``.
        """
        hidden = self.backbone(batch)
        return {"logits": self.lm_head(hidden), "hidden": hidden}

    def loss(self, batch: Mapping[str, Tensor], reduction: str = "mean") -> Tensor:
        """Next-token cross entropy over pairs of consecutive real tokens.

        Logits are formed only at positions whose next token is real, so padding costs neither
        loss nor the ``(b, l, V)`` logits memory. ``reduction`` is ``"mean"`` (per predicted
        token) or ``"sum"`` (for exact token-weighted gradient accumulation). A batch with no
        predictable token gives 0 (mean) with a gradient path, not NaN.
        """
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        hidden = self.backbone(batch)
        mask = resolve_mask(batch, self.config.pad_token_id)
        valid = mask[:, :-1] & mask[:, 1:]  # (b, l-1): position t predicts t+1
        targets = batch["input_ids"][:, 1:][valid].long()
        logits = self.lm_head(hidden[:, :-1][valid])  # (tokens, V)
        # Softmax in at least float32: bf16 logits over a large vocabulary lose the loss.
        total = F.cross_entropy(
            logits.to(torch.promote_types(logits.dtype, torch.float32)), targets, reduction="sum"
        )
        if reduction == "sum":
            return total
        return total / targets.numel() if targets.numel() else total * 0.0

    def step(self, tokens: Mapping[str, Tensor], state: BackboneState) -> tuple[Tensor, BackboneState]:
        """One token per row -> ``(logits for the next token: (b, V), new_state)``."""
        hidden, state = self.backbone.step(tokens, state)
        return self.lm_head(hidden), state

    def allocate_state(self, batch_size: int, device: torch.device | str | None = None) -> BackboneState:
        """Empty recurrent state; see :meth:`MambaBackbone.allocate_state`."""
        return self.backbone.allocate_state(batch_size, device)
