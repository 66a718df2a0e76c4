"""ehrfm: foundation models on electronic health records.

FHIR R4 in, MEDS events, timed token sequences, Mamba backbones, calibrated risk out. Heavy
dependencies (torch, lightning) load only with the stages that need them, so
``import ehrfm`` stays cheap for analytics code and for ingest worker processes.
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
