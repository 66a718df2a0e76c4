"""``ehrfm finetune``: the Hydra stage around :func:`ehrfm.finetune.run.finetune`."""

from __future__ import annotations

from typing import Any

from ehrfm.typed_config import from_mapping, stage_mapping

from .config import FinetuneConfig
from .run import finetune


def run_finetune_stage(cfg: Any) -> dict[str, Any]:
    """The whole ``ehrfm finetune`` stage from the composed ``conf/finetune.yaml``."""
    return finetune(from_mapping(FinetuneConfig, stage_mapping(cfg, where="finetune"), where="finetune"))
