"""The real Synthea set, ingested once per test session for the tokenizer's real-data tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthea_meds(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 615-patient Synthea FHIR set as a MEDS dataset in a temporary directory."""
    from ehrfm.ingest import ingest_fhir

    out = tmp_path_factory.mktemp("synthea") / "meds"
    ingest_fhir(inputs=[str(shared_data / "synthea-r4")], output=out, workers=2)
    return out
