"""A MEDS dataset is complete only with the dataset.json that ingest writes last."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

import ehrfm
from ehrfm.meds_dataset import (
    IncompleteMedsDatasetError,
    data_shards,
    is_meds_dataset,
    scan_events,
    shard_split,
    train_events,
)
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


def _flattened(split_sharded: Path, target: Path) -> Path:
    """The same dataset in the flat layout other ETLs (and older ehrfm) write: data/0.parquet."""
    shutil.copytree(split_sharded / "metadata", target / "metadata")
    (target / "data").mkdir(parents=True)
    events = pl.concat([pl.read_parquet(p) for p in data_shards(split_sharded)])
    events.sort("subject_id", maintain_order=True).write_parquet(target / "data" / "0.parquet")
    return target


def test_both_layouts_read_the_same(tmp_path: Path) -> None:
    from ehrfm.tasks import label_meds_dataset
    from ehrfm.tokenize import EventTokenizer, tokenize_dataset

    split = tmp_path / "split"
    ehrfm.ingest_fhir(example_fhir_dir(), split, workers=1, num_shards=2)
    flat = _flattened(split, tmp_path / "flat")
    assert [shard_split(split, p) for p in data_shards(split, splits=["train"])] == ["train", "train"]
    assert data_shards(flat, splits=["train"]) == [flat / "data" / "0.parquet"]  # a flat shard holds anyone
    key = ["subject_id", "time", "code"]
    for splits in (None, ["train"], ["tuning", "held_out"]):
        a = scan_events(split, splits=splits).collect().sort(key, maintain_order=True)
        b = scan_events(flat, splits=splits).collect().sort(key, maintain_order=True)
        assert a.equals(b), splits
    assert train_events(split).collect().sort(key, maintain_order=True).equals(
        train_events(flat).collect().sort(key, maintain_order=True))
    summaries = {name: tokenize_dataset(root, EventTokenizer(min_count=2), tmp_path / f"tokens_{name}")
                 for name, root in (("split", split), ("flat", flat))}
    assert summaries["split"]["splits"] == summaries["flat"]["splits"]
    assert summaries["split"]["tokenizer"]["vocab_size"] == summaries["flat"]["tokenizer"]["vocab_size"]
    for name, root in (("split", split), ("flat", flat)):
        label_meds_dataset(root, ["mortality_1y"], tmp_path / f"labels_{name}")
    assert pl.read_parquet(tmp_path / "labels_split" / "mortality_1y" / "0.parquet").equals(
        pl.read_parquet(tmp_path / "labels_flat" / "mortality_1y" / "0.parquet"))
