"""``ehrfm tokenize``: the Hydra stage around :func:`ehrfm.tokenize.tokenize_meds.run_tokenize`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ehrfm.typed_config import from_mapping, stage_mapping, to_mapping

from .config import TokenizeConfig
from .tokenize_meds import print_summary, run_tokenize


def run_tokenize_stage(cfg: Any) -> dict[str, Any]:
    """The whole ``ehrfm tokenize`` stage from the composed ``conf/tokenize.yaml``."""
    config = from_mapping(TokenizeConfig, stage_mapping(cfg, where="tokenize"), where="tokenize")
    summary = run_tokenize(config)
    (Path(config.output) / "tokenize_config.yaml").write_text(
        yaml.safe_dump(to_mapping(config), sort_keys=False)
    )
    print_summary(summary)
    return summary
