"""``ehrfm demo``: the Hydra stage around :func:`ehrfm.demo.run.run_demo`."""

from __future__ import annotations

from typing import Any

from ehrfm.typed_config import from_mapping, stage_mapping

from .config import DemoConfig
from .run import run_demo


def run_demo_stage(cfg: Any) -> dict[str, Any]:
    """The whole ``ehrfm demo`` stage from the composed ``conf/demo.yaml``."""
    return run_demo(from_mapping(DemoConfig, stage_mapping(cfg, where="demo"), where="demo"))
