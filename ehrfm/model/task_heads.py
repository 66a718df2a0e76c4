"""Binary task heads for multitask prompted finetuning, registered in ``HEADS``.

Both map the hidden state read at each task's prompt token, ``(b, k, d)``, to one logit per
(row, task), ``(b, k)``; ``task_index`` (``(k,)`` int64) says which tasks the ``k`` columns are.

* ``task_shared``: one linear map for every task. The prompt token alone tells the model which
  question it answers, so a new task needs no new weights beyond its prompt embedding.
* ``task_per_task``: one weight vector and bias per task (a linear probe per task on top of the
  prompted state).

>>> import torch
>>> from ehrfm.model.config import BackboneConfig
>>> cfg = BackboneConfig.preset("tiny", vocab_size=30)
>>> hidden = torch.randn(4, 2, cfg.d_model)
>>> for name in ("task_shared", "task_per_task"):
...     head = build_head(name, cfg, n_tasks=3)
...     print(name, tuple(head(hidden, torch.tensor([0, 2])).shape))
task_shared (4, 2)
task_per_task (4, 2)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import BackboneConfig
from .heads import build_head, register_head

__all__ = ["PerTaskHead", "SharedTaskHead", "build_head"]


def _check(hidden: Tensor, task_index: Tensor, n_tasks: int) -> None:
    if hidden.dim() != 3 or task_index.dim() != 1 or hidden.shape[1] != task_index.shape[0]:
        raise ValueError(
            f"hidden must be (b, k, d) and task_index (k,); "
            f"got {tuple(hidden.shape)} and {tuple(task_index.shape)}"
        )
    if task_index.numel() and (int(task_index.min()) < 0 or int(task_index.max()) >= n_tasks):
        raise IndexError(f"task_index {task_index.tolist()} out of range for {n_tasks} tasks")


@register_head("task_shared")
class SharedTaskHead(nn.Module):
    """One ``Linear(d, 1)`` for all tasks; the task prompt carries the task's identity."""

    answers_tasks = True

    def __init__(self, config: BackboneConfig, n_tasks: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.n_tasks = int(n_tasks)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(config.d_model, 1)

    def forward(self, hidden: Tensor, task_index: Tensor) -> Tensor:
        _check(hidden, task_index, self.n_tasks)
        return self.proj(self.dropout(hidden)).squeeze(-1)


@register_head("task_per_task")
class PerTaskHead(nn.Module):
    """A separate ``Linear(d, 1)`` per task, stored as one ``(n_tasks, d)`` weight."""

    answers_tasks = True

    def __init__(self, config: BackboneConfig, n_tasks: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.n_tasks = int(n_tasks)
        self.dropout = nn.Dropout(dropout)
        self.weight = nn.Parameter(torch.empty(self.n_tasks, config.d_model))
        self.bias = nn.Parameter(torch.zeros(self.n_tasks))
        nn.init.normal_(self.weight, std=config.d_model**-0.5)

    def forward(self, hidden: Tensor, task_index: Tensor) -> Tensor:
        _check(hidden, task_index, self.n_tasks)
        weight = self.weight[task_index].to(hidden.dtype)  # (k, d)
        return (self.dropout(hidden) * weight).sum(-1) + self.bias[task_index].to(hidden.dtype)
