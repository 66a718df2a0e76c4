"""``ehrfm pretrain``: the Hydra stage around :func:`ehrfm.pretrain.run.pretrain`."""

from __future__ import annotations

from typing import Any

from ehrfm.typed_config import from_mapping, stage_mapping

from .config import PretrainConfig
from .run import pretrain


def run_pretrain_stage(cfg: Any) -> dict[str, Any]:
    """The whole ``ehrfm pretrain`` stage from the composed ``conf/pretrain.yaml``."""
    return pretrain(from_mapping(PretrainConfig, stage_mapping(cfg, where="pretrain"), where="pretrain"))
