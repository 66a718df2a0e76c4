"""Fixtures of the task tests: the MIMIC-IV-on-FHIR-shaped population, ingested once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from mimic_population import PATIENT_ID_SYSTEM, Population, write_mimic_population

from ehrfm.ingest import ingest_fhir


@pytest.fixture(scope="session")
def mimic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Population, Path]:
    """The 80-patient population and the MEDS dataset ingested from it (subject ids from MIMIC's)."""
    root = tmp_path_factory.mktemp("mimic")
    population = write_mimic_population(root / "fhir", n_patients=80)
    summary = ingest_fhir(str(population.folder), root / "meds", workers=1, subject_id_system=PATIENT_ID_SYSTEM)
    assert summary.resources_rejected == 0 and summary.balanced
    return population, root / "meds"
