"""``ehrfm evaluate``: the Hydra stage around :func:`ehrfm.evaluate.run.evaluate`."""

from __future__ import annotations

from typing import Any

from ehrfm.typed_config import from_mapping, stage_mapping

from .config import EvaluateConfig
from .run import evaluate


def run_evaluate_stage(cfg: Any) -> dict[str, Any]:
    """The whole ``ehrfm evaluate`` stage from the composed ``conf/evaluate.yaml``."""
    return evaluate(from_mapping(EvaluateConfig, stage_mapping(cfg, where="evaluate"), where="evaluate"))
