"""FHIR R4 -> MEDS v0.4: ``ingest_fhir`` and its settings.

>>> from ehrfm.ingest import IngestConfig
>>> IngestConfig(inputs="fhir/", output="meds/").split_ratios
{'train': 0.8, 'tuning': 0.1, 'held_out': 0.1}
"""

from ehrfm.ingest.config import IngestConfig
from ehrfm.ingest.pipeline import IngestJobResult, ensure_meds, ingest_fhir, run_ingest
from ehrfm.ingest.summary import IngestSummary

__all__ = ["IngestConfig", "IngestJobResult", "IngestSummary", "ensure_meds", "ingest_fhir", "run_ingest"]
