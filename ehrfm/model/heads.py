"""Head registry: heads are looked up by name (``HEADS``), never chosen by an if/elif chain.

A head maps backbone hidden states ``(..., d)`` to its outputs. Register new ones with
``@register_head("name")``; build them with :func:`build_head`. Task heads (classes with
``answers_tasks = True``) live in :mod:`ehrfm.model.task_heads`; the next-token LM head (tied to
the token embedding) is here.

>>> import torch
>>> from ehrfm.model.config import BackboneConfig
>>> cfg = BackboneConfig.preset("tiny", vocab_size=30)
>>> emb = torch.nn.Embedding(30, 64)
>>> head = build_head("next_token", cfg, token_embedding=emb)
>>> head(torch.randn(2, 5, 64)).shape, head.weight is emb.weight
(torch.Size([2, 5, 30]), True)
>>> 'next_token' in HEADS, 'next_token' in task_head_names()
(True, False)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch.nn.functional as F
from torch import Tensor, nn

from .config import BackboneConfig

__all__ = ["HEADS", "NextTokenHead", "build_head", "register_head", "task_head_names"]

HEADS: dict[str, type[nn.Module]] = {}

H = TypeVar("H", bound=type[nn.Module])


def register_head(name: str) -> Callable[[H], H]:
    """Class decorator adding a head to ``HEADS`` under ``name`` (names are unique)."""

    def decorate(cls: H) -> H:
        if name in HEADS and HEADS[name] is not cls:
            raise ValueError(f"head {name!r} is already registered to {HEADS[name].__qualname__}")
        HEADS[name] = cls
        return cls

    return decorate


def task_head_names() -> list[str]:
    """Registered heads that answer binary task prompts (their class sets ``answers_tasks``)."""
    return sorted(name for name, cls in HEADS.items() if getattr(cls, "answers_tasks", False))


def build_head(name: str, config: BackboneConfig, **kwargs: Any) -> nn.Module:
    """Instantiate the head registered as ``name`` with ``(config, **kwargs)``."""
    if name not in HEADS:
        raise KeyError(f"unknown head {name!r}; registered heads: {sorted(HEADS)}")
    return HEADS[name](config, **kwargs)


@register_head("next_token")
class NextTokenHead(nn.Module):
    """Next-token logits ``hidden @ E^T`` with ``E`` the token embedding (weights tied).

    The head's ``weight`` *is* the embedding's Parameter (not a copy), so optimisers, DDP and
    FSDP see one parameter; ``save_pretrained`` stores it once and ``from_pretrained`` re-ties.
    """

    def __init__(self, config: BackboneConfig, token_embedding: nn.Embedding) -> None:
        super().__init__()
        if token_embedding.weight.shape != (config.vocab_size, config.d_model):
            raise ValueError(
                f"token_embedding must be ({config.vocab_size}, {config.d_model}), "
                f"got {tuple(token_embedding.weight.shape)}"
            )
        self.weight = token_embedding.weight

    def forward(self, hidden: Tensor) -> Tensor:
        """``(..., d)`` -> logits ``(..., vocab_size)``."""
        return F.linear(hidden, self.weight)
