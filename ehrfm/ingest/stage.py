"""``ehrfm ingest``: the Hydra stage around :func:`ehrfm.ingest.run_ingest`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ehrfm.ingest.config import IngestConfig
from ehrfm.ingest.pipeline import run_ingest
from ehrfm.ingest.summary import IngestSummary

log = logging.getLogger("ehrfm.ingest")


def ingest_config_from(cfg: DictConfig) -> IngestConfig:
    """The composed ``conf/ingest.yaml`` as an :class:`IngestConfig` (``input: null`` = examples)."""
    values: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    values.pop("hydra", None)
    inputs = values.pop("input")
    if inputs is None:
        from ehrfm.resources import example_fhir_dir

        inputs = [str(example_fhir_dir())]
        log.info("no input= given: using ehrfm's synthetic example patients in %s", inputs[0])
    return IngestConfig.from_mapping({"inputs": inputs, **values})


def run_ingest_stage(cfg: DictConfig) -> IngestSummary:
    config = ingest_config_from(cfg)
    log.info("ingesting %s -> %s", ", ".join(config.inputs), config.output)
    summary = run_ingest(config)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (Path(config.output) / "metadata" / "ingest_config.yaml").write_text(OmegaConf.to_yaml(resolved))
    print(summary.table())
    print(f"MEDS dataset: {config.output}   rejects: {Path(config.output) / 'rejects' / 'rejects.parquet'}")
    return summary
