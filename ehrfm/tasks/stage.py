"""``ehrfm label``: the Hydra stage around :func:`ehrfm.tasks.label_meds_dataset`.

>>> from omegaconf import OmegaConf
>>> from ehrfm.resources import conf_dir
>>> OmegaConf.load(conf_dir() / "label.yaml").tasks[0]
'mortality_1y'
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from .dataset import label_meds_dataset, summary_table

log = logging.getLogger("ehrfm.tasks")


def run_label_stage(cfg: DictConfig) -> dict[str, Any]:
    """The whole ``ehrfm label`` stage from the composed ``conf/label.yaml``."""
    for key, what in (("meds_dir", "the MEDS dataset directory"), ("output", "the labels directory")):
        if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
            raise ValueError(f"ehrfm label: set {key}=<path> ({what})")
    tasks = cfg.get("tasks")
    if isinstance(tasks, str):  # tasks=mortality_1y on the command line
        tasks = [tasks]
    if not isinstance(tasks, (list, ListConfig)) or not tasks:
        raise ValueError(f"ehrfm label: tasks must be a non-empty list of built-in names or YAML paths; got {tasks!r}")
    log.info("labelling %s -> %s: %s", cfg.meds_dir, cfg.output, ", ".join(map(str, tasks)))
    summary = label_meds_dataset(cfg.meds_dir, [str(t) for t in tasks], cfg.output,
                                 overwrite=bool(cfg.get("overwrite", False)))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (Path(cfg.output) / "label_config.yaml").write_text(OmegaConf.to_yaml(resolved))
    print(summary_table(summary))
    print(f"labels: {cfg.output}/<task>.parquet   summary: {Path(cfg.output) / 'summary.json'}")
    return summary
