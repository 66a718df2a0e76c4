"""``ehrfm ingest``: the Hydra stage around :func:`ehrfm.ingest.run_ingest`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ehrfm.ingest.config import IngestConfig
from ehrfm.ingest.pipeline import IngestJobResult, run_ingest
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


def run_ingest_stage(cfg: DictConfig) -> IngestSummary | IngestJobResult:
    """The whole ``ehrfm ingest`` stage: an ordinary run, one job (``job.index``) or the merge."""
    config = ingest_config_from(cfg)
    doing = {"single": "ingesting", "job": f"ingest job {config.job.index} of {config.job.count}:",
             "merge": f"merging {config.job.count} ingest jobs:"}[config.job.mode]
    log.info("%s %s -> %s", doing, ", ".join(config.inputs), config.output)
    result = run_ingest(config)
    resolved = OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True))
    if isinstance(result, IngestJobResult):  # a job writes only inside its partial folder
        (Path(result.folder) / "ingest_config.yaml").write_text(resolved)
        print(result.table())
        return result
    (Path(config.output) / "metadata" / "ingest_config.yaml").write_text(resolved)
    print(result.table())
    print(f"MEDS dataset: {config.output}   rejects: {Path(config.output) / 'rejects' / 'rejects.parquet'}")
    return result
