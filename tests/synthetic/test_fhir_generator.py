"""The built-in synthetic FHIR generator: deterministic, readable by ingest, clinically shaped."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

import ehrfm
from ehrfm.synthetic.fhir_generator import write_synthetic_fhir


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    write_synthetic_fhir(tmp_path / "a", n_patients=6, seed=3)
    write_synthetic_fhir(tmp_path / "b", n_patients=6, seed=3)
    write_synthetic_fhir(tmp_path / "c", n_patients=6, seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_examples_ingest_without_loss_through_both_readers(tmp_path: Path) -> None:
    files = write_synthetic_fhir(tmp_path / "fhir", n_patients=10, seed=5)
    assert {p.parent.name for p in files} == {"bundles", "bulk"}
    summary = ehrfm.ingest_fhir(tmp_path / "fhir", tmp_path / "meds", workers=1)
    assert summary.balanced and summary.resources_rejected == 0 and summary.subjects == 10
    events = pl.read_parquet(tmp_path / "meds" / "data")
    # Both blood-pressure components, coded answers, notes and imaging are present.
    assert {"LOINC/8480-6", "LOINC/8462-4", "LOINC/72166-2", "LOINC/34117-2", "DCM/CR"} <= set(events["code"])
    assert (events.filter(pl.col("code").str.starts_with("VISIT_START/")).height
            == summary.written["Encounter"])
