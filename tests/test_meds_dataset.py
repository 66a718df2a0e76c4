"""A MEDS dataset is complete only with the dataset.json that ingest writes last."""

from __future__ import annotations

from pathlib import Path

import pytest

import ehrfm
from ehrfm.meds_dataset import IncompleteMedsDatasetError, data_shards, is_meds_dataset
from ehrfm.resources import example_fhir_dir


@pytest.fixture
def interrupted(tmp_path: Path) -> Path:
    """What an ingest killed while writing its metadata leaves: shards, but no dataset.json."""
    meds = tmp_path / "meds"
    ehrfm.ingest_fhir(example_fhir_dir(), meds, workers=1)
    assert is_meds_dataset(meds)
    (meds / "metadata" / "dataset.json").unlink()
    return meds


def test_every_stage_refuses_an_incomplete_dataset(interrupted: Path, tmp_path: Path) -> None:
    from ehrfm.tasks.label_meds import label_meds_dataset
    from ehrfm.tokenize import EventTokenizer, tokenize_dataset

    assert not is_meds_dataset(interrupted)
    expected = r"dataset.json: missing, so .* is not a complete MEDS dataset \(an interrupted `ehrfm ingest`"
    with pytest.raises(IncompleteMedsDatasetError, match=expected):
        data_shards(interrupted)
    with pytest.raises(IncompleteMedsDatasetError, match=expected):
        label_meds_dataset(interrupted, ["mortality_1y"], tmp_path / "labels")
    with pytest.raises(IncompleteMedsDatasetError, match=expected):
        tokenize_dataset(interrupted, EventTokenizer(min_count=1), tmp_path / "tokens")
    assert not (tmp_path / "labels" / "mortality_1y").exists()


def test_ingest_writes_the_marker_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ehrfm.ingest import pipeline

    seen: dict[str, list[str]] = {}
    original = pipeline.mark_complete

    def spy(meds_dir: Path, metadata: dict) -> Path:
        seen["before"] = sorted(str(p.relative_to(meds_dir)) for p in Path(meds_dir).rglob("*") if p.is_file())
        return original(meds_dir, metadata)

    monkeypatch.setattr(pipeline, "mark_complete", spy)
    meds = tmp_path / "meds"
    ehrfm.ingest_fhir(example_fhir_dir(), meds, workers=1)
    before = seen["before"]
    assert "metadata/dataset.json" not in before
    assert {"metadata/codes.parquet", "metadata/subject_splits.parquet", "metadata/subjects.parquet",
            "metadata/ingest_summary.json"} <= set(before) and any(p.startswith("data/") for p in before)
    assert is_meds_dataset(meds)
