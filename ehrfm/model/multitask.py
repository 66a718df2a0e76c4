"""``MultitaskModel``: a pretrained backbone that answers several task questions per history.

The prompt design makes one pass over a patient's history serve every task:

1. the history (all tokens strictly before the prediction time) runs through the backbone once,
   which leaves the recurrent state after its last token;
2. each task's prompt token (``[TASK_nnn]``, stamped with the prediction time) is the next
   token after that same state: the backbone's ``readout`` gives all ``k`` of them at once,
   reading each row's state once (the numbers of ``step`` from ``k`` copies of it);
3. the hidden state at each prompt token goes through a task head (``task_shared`` or
   ``task_per_task`` from the head registry) to one logit per task.

Because the prompt comes *after* the history, the history's computation does not depend on the
task, so adding a task costs one step, not another pass. ``forward`` gives exactly what a full
forward over ``history + [TASK]`` would give at the prompt position (tested).

Batch keys: the five history ``STREAMS`` + ``attention_mask`` (right padding), and per row the
prompt's ``prompt_time_days`` (float64 days since 1970), ``prompt_age_years``,
``prompt_visit_index``.

>>> import torch
>>> from ehrfm.model import BackboneConfig
>>> cfg = BackboneConfig.preset("tiny", vocab_size=40)
>>> model = MultitaskModel(cfg, task_names=["mortality", "readmission"], prompt_token_ids=[4, 5])
>>> ids = torch.tensor([[1, 9, 10, 11], [1, 12, 0, 0]])
>>> batch = {"input_ids": ids, "attention_mask": ids != 0,
...          "time_days": torch.full((2, 4), 19000.0, dtype=torch.float64),
...          "age_years": torch.full((2, 4), 60.0), "visit_index": torch.ones(2, 4, dtype=torch.long),
...          "token_type": torch.full((2, 4), 7),
...          "prompt_time_days": torch.full((2,), 19001.0, dtype=torch.float64),
...          "prompt_age_years": torch.full((2,), 60.0),
...          "prompt_visit_index": torch.ones(2, dtype=torch.long)}
>>> model.eval()(batch).shape  # (rows, tasks): one history pass, one prompt step per task
torch.Size([2, 2])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ehrfm.tokenize.sequence_schema import TokenType

from . import task_heads as _task_heads  # noqa: F401  (registers the task heads in HEADS)
from .backbone import BackboneState, MambaBackbone
from .config import BackboneConfig
from .heads import build_head, task_head_names
from .pretrained import PretrainedMixin

__all__ = ["PROMPT_KEYS", "MultitaskModel", "last_token_hidden"]

PROMPT_KEYS = ("prompt_time_days", "prompt_age_years", "prompt_visit_index")


def last_token_hidden(hidden: Tensor, mask: Tensor) -> Tensor:
    """``(b, l, d)`` hidden states -> ``(b, d)`` at each row's last real token (right padding)."""
    last = mask.long().sum(dim=1).clamp(min=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class MultitaskModel(PretrainedMixin, nn.Module):
    """Backbone + task prompts + a task head; ``forward`` -> logits ``(b, k)``."""

    def __init__(self, config: BackboneConfig, task_names: Sequence[str], prompt_token_ids: Sequence[int],
                 head: str = "task_shared") -> None:
        super().__init__()
        if len(task_names) != len(prompt_token_ids) or not task_names:
            raise ValueError(
                f"need one prompt token per task; got tasks {list(task_names)} "
                f"and prompt ids {list(prompt_token_ids)}"
            )
        if len(set(task_names)) != len(task_names) or len(set(prompt_token_ids)) != len(prompt_token_ids):
            raise ValueError(
                f"task names and prompt tokens must be unique: {list(task_names)}, {list(prompt_token_ids)}"
            )
        if head not in task_head_names():
            raise KeyError(f"unknown task head {head!r}; registered task heads: {task_head_names()}")
        for token_id in prompt_token_ids:
            if not 0 <= int(token_id) < config.vocab_size:
                raise ValueError(
                    f"prompt token id {token_id} is outside the vocabulary (size {config.vocab_size})"
                )
        self.config = config
        self.task_names = [str(t) for t in task_names]
        self.head_name = head
        self.backbone = MambaBackbone(config)
        self.head = build_head(head, config, n_tasks=len(self.task_names))
        self.register_buffer("prompt_token_ids",
                             torch.tensor([int(t) for t in prompt_token_ids], dtype=torch.long),
                             persistent=False)

    # -- save / load ------------------------------------------------------------------------
    def extra_config(self) -> dict[str, Any]:
        return {"task_names": self.task_names, "prompt_token_ids": self.prompt_token_ids.tolist(),
                "head": self.head_name}

    @classmethod
    def build_from_config(cls, config: BackboneConfig, extra: dict[str, Any]) -> MultitaskModel:
        return cls(config, extra["task_names"], extra["prompt_token_ids"],
                   head=extra.get("head", "task_shared"))

    @classmethod
    def from_backbone(cls, pretrained_dir: str | Path, task_names: Sequence[str],
                      prompt_token_ids: Sequence[int], head: str = "task_shared") -> MultitaskModel:
        """A new model whose backbone is loaded from a pretrained model directory."""
        backbone = MambaBackbone.from_pretrained(pretrained_dir)
        model = cls(backbone.config, task_names, prompt_token_ids, head=head)
        model.backbone.load_state_dict(backbone.state_dict())
        return model

    # -- forward -----------------------------------------------------------------------------
    def task_index(self, tasks: Sequence[str] | None = None) -> Tensor:
        """Column indices of ``tasks`` (default: all, in ``task_names`` order)."""
        if tasks is None:
            return torch.arange(len(self.task_names), device=self.prompt_token_ids.device)
        unknown = [t for t in tasks if t not in self.task_names]
        if unknown:
            raise KeyError(f"tasks {unknown} are not among this model's tasks {self.task_names}")
        return torch.tensor([self.task_names.index(t) for t in tasks], dtype=torch.long,
                            device=self.prompt_token_ids.device)

    def encode(self, batch: Mapping[str, Tensor],
               state: BackboneState | None = None) -> tuple[Tensor, BackboneState]:
        """One pass over the histories -> (hidden at each row's last token ``(b, d)``, state).

        With ``state``, the batch holds only the tokens that follow what ``state`` has read
        (a saved history continued); a row with no new token keeps its state.
        """
        history = {key: value for key, value in batch.items() if key not in PROMPT_KEYS}
        hidden, state = self.backbone(history, state=state, return_state=True)
        mask = history.get("attention_mask", history["input_ids"] != self.config.pad_token_id)
        return last_token_hidden(hidden, mask), state

    def prompt(self, state: BackboneState, batch: Mapping[str, Tensor], task_index: Tensor) -> Tensor:
        """Hidden state at each task's prompt token after ``state`` -> ``(b, k, d)``.

        Every prompt is the next token after the same history, so the backbone's ``readout``
        reads each row's state once for all ``k`` tasks (what ``step`` from ``k`` copies gives).
        """
        b, k = state.batch_size, int(task_index.numel())
        ids = self.prompt_token_ids[task_index].expand(b, k)

        def per_task(values: Tensor) -> Tensor:
            return values.unsqueeze(1).expand(b, k)

        tokens = {
            "input_ids": ids,
            "time_days": per_task(batch["prompt_time_days"].to(torch.float64)),
            "age_years": per_task(batch["prompt_age_years"]),
            "visit_index": per_task(batch["prompt_visit_index"]),
            "token_type": torch.full_like(ids, int(TokenType.TASK)),
        }
        return self.backbone.readout(tokens, state)

    def forward(self, batch: Mapping[str, Tensor], task_index: Tensor | None = None) -> Tensor:
        """Logits ``(b, k)`` for the tasks in ``task_index`` (default: every task)."""
        if task_index is None:
            task_index = self.task_index()
        _, state = self.encode(batch)
        return self.head(self.prompt(state, batch, task_index), task_index)
