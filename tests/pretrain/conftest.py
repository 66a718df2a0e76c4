"""A small tokenized dataset (ehrfm's synthetic patients) shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import ehrfm
from ehrfm.synthetic.fhir_generator import write_synthetic_fhir
from ehrfm.tokenize import EventTokenizer, tokenize_dataset


@pytest.fixture(scope="session")
def tokens_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train_data")
    write_synthetic_fhir(root / "fhir", n_patients=24, seed=11)
    ehrfm.ingest_fhir(root / "fhir", root / "meds", workers=1)
    tokenize_dataset(root / "meds", EventTokenizer(min_count=2), root / "tokens")
    return root / "tokens"
