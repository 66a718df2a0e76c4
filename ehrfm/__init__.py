"""ehrfm: foundation models on electronic health records.

FHIR R4 in, MEDS events, timed token sequences, Mamba backbones, calibrated risk out. Heavy
dependencies (torch, lightning) load only with the stages that need them, so
``import ehrfm`` stays cheap for analytics code and for ingest worker processes.

One sub-package per stage, each a Python call and an ``ehrfm <stage>`` command:
:mod:`ehrfm.ingest` (FHIR -> MEDS), :mod:`ehrfm.tokenize`, :mod:`ehrfm.tasks` (``ehrfm label``),
:mod:`ehrfm.pretrain`, :mod:`ehrfm.finetune`, :mod:`ehrfm.evaluate`, :mod:`ehrfm.demo`. Shared
by them: :mod:`ehrfm.model` (every ``nn.Module``), :mod:`ehrfm.predict` (cohorts at prediction
times, inference, calibration, metrics), :mod:`ehrfm.ops` (kernels), :mod:`ehrfm.schema` and
:mod:`ehrfm.meds_dataset` (columns and the MEDS-directory reader), :mod:`ehrfm.synthetic`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "ingest_fhir", "IngestConfig"]


def __getattr__(name: str) -> Any:
    if name in ("ingest_fhir", "IngestConfig"):
        from ehrfm import ingest

        return getattr(ingest, name)
    raise AttributeError(f"module 'ehrfm' has no attribute {name!r}")
