"""``ehrfm label``: the Hydra stage around :func:`ehrfm.tasks.label_meds.run_label`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from ehrfm.typed_config import from_mapping, stage_mapping, to_mapping

from .config import LabelConfig
from .label_meds import run_label, summary_table

log = logging.getLogger("ehrfm.tasks")


def run_label_stage(cfg: Any) -> dict[str, Any]:
    """The whole ``ehrfm label`` stage from the composed ``conf/label.yaml``."""
    values = stage_mapping(cfg, where="label")
    if isinstance(values.get("tasks"), str):  # tasks=mortality_1y on the command line
        values["tasks"] = [values["tasks"]]
    config = from_mapping(LabelConfig, values, where="label")
    log.info("labelling %s -> %s: %s", config.input, config.output, ", ".join(config.tasks))
    summary = run_label(config)
    (Path(config.output) / "label_config.yaml").write_text(
        yaml.safe_dump(to_mapping(config), sort_keys=False))
    print(summary_table(summary))
    print(f"labels: {config.output}/<task>/0.parquet   summary: {Path(config.output) / 'summary.json'}")
    return summary
