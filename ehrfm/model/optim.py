"""Optimizer parameter groups: which weights are decayed.

Weight decay pulls weights towards zero, which is wrong for gains, biases, embeddings and the
SSM's own dynamics: the mixers mark ``A_log``, ``D`` and the step-size bias with
``_no_weight_decay`` (as mamba-ssm does), and decaying ``A_log`` would slowly shorten every
state's memory. One function decides, for pretraining and finetuning alike.

>>> import torch
>>> from ehrfm.model import BackboneConfig, MambaBackbone
>>> backbone = MambaBackbone(BackboneConfig.preset("tiny", vocab_size=40, mixer="mamba1"))
>>> decay, no_decay = param_groups(backbone, weight_decay=0.1, lr=1e-3)
>>> decay["weight_decay"], no_decay["weight_decay"], decay["lr"]
(0.1, 0.0, 0.001)
>>> a_log = backbone.layers[0].mixer.A_log
>>> a_log.dim(), any(p is a_log for p in no_decay["params"])   # a matrix, yet never decayed
(2, True)
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["decays", "param_groups"]


def decays(name: str, parameter: nn.Parameter) -> bool:
    """Whether weight decay applies to this parameter (matrices of linear and conv layers only)."""
    if getattr(parameter, "_no_weight_decay", False):
        return False
    return parameter.dim() >= 2 and "norm" not in name and "embed" not in name


def param_groups(module: nn.Module, weight_decay: float, **options: Any) -> list[dict[str, Any]]:
    """``[decayed, not decayed]`` AdamW groups of ``module``'s trainable parameters.

    ``options`` (e.g. ``lr``) are set on both groups; parameters that share storage (tied
    weights) appear once.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, parameter in module.named_parameters():  # named_parameters yields a tied weight once
        if parameter.requires_grad:
            (decay if decays(name, parameter) else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": float(weight_decay), **options},
            {"params": no_decay, "weight_decay": 0.0, **options}]
