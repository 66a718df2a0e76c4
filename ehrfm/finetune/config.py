"""Settings of one ``ehrfm finetune`` run; ``conf/finetune.yaml`` composes the same keys for the CLI.

>>> config = FinetuneConfig(input="runs/pt", output="runs/mtf", heads=["task_shared"])
>>> config.data.context_length, config.trainer["max_epochs"]
(1024, 10)
>>> FinetuneConfig(heads=["task_sharred"])
Traceback (most recent call last):
...
ValueError: unknown task head 'task_sharred'; registered task heads: ['task_per_task', 'task_shared']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ehrfm.tasks.config import DEFAULT_TASKS
from ehrfm.typed_config import conf_group

__all__ = ["EarlyStoppingSettings", "FinetuneConfig", "FinetuneData", "FinetuneOptim"]

POS_WEIGHTS = ("none", "sqrt", "balanced")


@dataclass
class FinetuneData:
    """``context_length``: history tokens the model sees per prediction time (prefix + newest whole
    events)."""

    context_length: int = 1024
    tokens_per_batch: int = 16384


@dataclass
class FinetuneOptim:
    lr_backbone: float = 3e-4
    lr_head: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20


@dataclass
class EarlyStoppingSettings:
    patience: int = 3  # epochs without a better tuning mean AUROC


@dataclass
class FinetuneConfig:
    """``input`` (an ``ehrfm pretrain`` output) -> ``output`` (labels/, cohort, <head>/model, summary).

    ``meds_dir``, ``pretrained_model``, ``tokenizer_dir`` and ``labels_dir`` default to
    ``<input>/meds``, ``<input>/model``, ``<pretrained_model>/tokenizer`` and ``<output>/labels``
    (labelled here when missing).
    """

    input: str | None = "ehrfm_out/pretrain"
    output: str = "ehrfm_out/finetune"
    meds_dir: str | None = None
    pretrained_model: str | None = None
    tokenizer_dir: str | None = None
    labels_dir: str | None = None
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    concept_sets: list[str] = field(default_factory=list)  # site concept files (see ehrfm.tasks.concepts)
    heads: list[str] = field(default_factory=lambda: ["task_shared", "task_per_task"])
    pos_weight: str = "sqrt"
    calibration: str = "temperature"  # fit on tuning, saved in each bundle: temperature | isotonic | none
    seed: int = 0
    data: FinetuneData = field(default_factory=FinetuneData)
    optim: FinetuneOptim = field(default_factory=FinetuneOptim)
    early_stopping: EarlyStoppingSettings = field(default_factory=EarlyStoppingSettings)
    trainer: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ehrfm.model import task_head_names
        from ehrfm.training import check_trainer_settings

        self.trainer = check_trainer_settings({**conf_group("trainer", "cpu", max_epochs=10), **self.trainer},
                                              where="finetune")
        if isinstance(self.tasks, str):
            self.tasks = [self.tasks]
        if isinstance(self.concept_sets, str):
            self.concept_sets = [self.concept_sets]
        if not self.tasks or not self.heads:
            raise ValueError("finetune needs at least one task (tasks=[...]) and one head (heads=[...])")
        for head in self.heads:
            if head not in task_head_names():
                raise ValueError(f"unknown task head {head!r}; registered task heads: {task_head_names()}")
        from ehrfm.predict.calibration import CALIBRATORS

        if self.calibration not in CALIBRATORS:
            raise ValueError(f"calibration must be one of {sorted(CALIBRATORS)}, got {self.calibration!r}")
        if self.pos_weight not in POS_WEIGHTS:
            raise ValueError(f"pos_weight must be one of {POS_WEIGHTS}, got {self.pos_weight!r}")
