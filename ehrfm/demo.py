"""``ehrfm demo``: every stage that exists so far, on ehrfm's built-in synthetic patients.

Later stages join the demo as they land; today it ingests the example FHIR into MEDS and, when
the tokenizer stage is installed, tokenizes it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ehrfm.ingest import IngestConfig, run_ingest
from ehrfm.resources import example_fhir_dir

log = logging.getLogger("ehrfm.demo")


def run_demo_stage(cfg: DictConfig) -> dict[str, Any]:
    output = Path(cfg.output)
    fhir = example_fhir_dir(n_patients=int(cfg.n_patients), seed=int(cfg.seed))
    log.info("example FHIR (%d synthetic patients): %s", cfg.n_patients, fhir)
    summary = run_ingest(IngestConfig(inputs=[str(fhir)], output=str(output / "meds"), workers=int(cfg.workers),
                                      overwrite=True))
    print(summary.table())
    results: dict[str, Any] = {"ingest": summary.to_dict(), "meds": str(output / "meds")}
    print(f"demo outputs in {output}/: meds/ (MEDS dataset)")
    return results
