"""Ingest of the real public FHIR data in ../shared/data, read in place."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import meds
import polars as pl
import pyarrow.parquet as pq
import pytest

import ehrfm
from ehrfm.ingest.summary import IngestSummary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synthea(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IngestSummary]:
    out = tmp_path_factory.mktemp("synthea_meds")
    summary = ehrfm.ingest_fhir(shared_data / "synthea-r4", out, num_shards=3, workers=2)
    return out, summary


@pytest.fixture(scope="module")
def bulk_notes(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IngestSummary]:
    out = tmp_path_factory.mktemp("bulk_meds")
    summary = ehrfm.ingest_fhir(shared_data / "synthea-bulk-notes", out, workers=1)
    return out, summary


def _validate_meds(out: Path) -> pl.DataFrame:
    shards = sorted((out / "data").rglob("*.parquet"))
    assert shards, "no data shards written"
    for shard in shards:
        meds.DataSchema.validate(pq.read_table(shard))
    meds.CodeMetadataSchema.validate(pq.read_table(out / "metadata" / "codes.parquet"))
    meds.SubjectSplitSchema.validate(pq.read_table(out / "metadata" / "subject_splits.parquet"))
    meds.DatasetMetadataSchema.validate(json.loads((out / "metadata" / "dataset.json").read_text()))
    return pl.concat([pl.read_parquet(s).with_columns(pl.lit(str(s.relative_to(out))).alias("_shard")) for s in shards])


def test_synthea_counts_match_the_source_and_add_up(synthea: tuple[Path, IngestSummary]) -> None:
    out, summary = synthea
    # SOURCE.txt of the data set: 615 patients, 191,093 resources with these per-type counts.
    assert summary.resources_read == 191_093
    assert summary.read["Observation"] == 88_674 and summary.read["Encounter"] == 18_098
    assert summary.subjects == 615 and summary.written["Patient"] == 615
    assert summary.balanced
    assert summary.skipped["Claim"] == {"skipped type": 22_810}
    assert summary.skipped["ExplanationOfBenefit"] == {"skipped type": 18_098}
    on_disk = json.loads((out / "metadata" / "ingest_summary.json").read_text())
    assert on_disk["totals"] == summary.totals() and on_disk["balanced"] is True
    rejects = pl.read_parquet(out / "rejects" / "rejects.parquet")
    assert rejects.height == summary.resources_rejected


def test_synthea_is_valid_meds_sorted_and_sharded_by_subject(synthea: tuple[Path, IngestSummary]) -> None:
    out, summary = synthea
    events = _validate_meds(out)
    assert events.height == summary.events
    assert events.group_by("subject_id").agg(pl.col("_shard").n_unique())["_shard"].max() == 1
    for _, shard in events.group_by("_shard"):
        keys = shard.select("subject_id", pl.col("time").fill_null(pl.datetime(1, 1, 1)))
        assert keys.equals(keys.sort("subject_id", "time")), "shard not sorted by subject, time"
    codes = pl.read_parquet(out / "metadata" / "codes.parquet")
    assert set(events["code"].unique()) <= set(codes["code"])
    assert codes.filter(pl.col("code") == "LOINC/8302-2")["description"].item() == "Body Height"
    splits = pl.read_parquet(out / "metadata" / "subject_splits.parquet")
    assert set(splits["subject_id"]) == set(events["subject_id"].unique())
    shares = splits["split"].value_counts(normalize=True).sort("split")
    assert 0.7 < shares.filter(pl.col("split") == "train")["proportion"].item() < 0.9


def test_synthea_patient_matches_its_bundle(shared_data: Path, synthea: tuple[Path, IngestSummary]) -> None:
    out, _ = synthea
    path = shared_data / "synthea-r4" / "Abdul_Koepp_e925b0f3-8006-43f6-aa31-94bd215e55e7.json.gz"
    bundle = json.loads(gzip.decompress(path.read_bytes()))
    resources = [e["resource"] for e in bundle["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    subjects = pl.read_parquet(out / "metadata" / "subjects.parquet")
    subject_id = subjects.filter(pl.col("fhir_patient_id") == patient["id"])["subject_id"].item()
    events = pl.concat([pl.read_parquet(p) for p in (out / "data").rglob("*.parquet")]).filter(
        pl.col("subject_id") == subject_id
    )
    birth = events.filter(pl.col("code") == "MEDS_BIRTH")["time"].item()
    assert birth.date().isoformat() == patient["birthDate"]
    assert events.filter(pl.col("code") == f"GENDER/{patient['gender']}").height == 1
    encounters = [r for r in resources if r["resourceType"] == "Encounter"]
    assert events.filter(pl.col("code").str.starts_with("VISIT_START/")).height == len(encounters)
    # Every blood-pressure panel gives both components, at the panel's time, in mm[Hg].
    panels = [r for r in resources if r["resourceType"] == "Observation" and r.get("component")]
    systolic = events.filter(pl.col("code") == "LOINC/8480-6")
    assert systolic.height == sum(
        1 for r in panels for c in r["component"] if c["code"]["coding"][0]["code"] == "8480-6"
    )
    assert set(systolic["unit"]) == {"mm[Hg]"}
    # An observation's value survives exactly (float32).
    height = next(r for r in resources if r["resourceType"] == "Observation"
                  and r["code"]["coding"][0]["code"] == "8302-2")
    row = events.filter(pl.col("resource_id") == height["id"])
    assert row["numeric_value"].item() == pytest.approx(height["valueQuantity"]["value"], rel=1e-6)
    assert row["time"].item().isoformat() == height["effectiveDateTime"].replace("+00:00", "")


def test_bulk_notes_are_decoded_and_the_log_file_is_accounted_for(
    shared_data: Path, bulk_notes: tuple[Path, IngestSummary]
) -> None:
    out, summary = bulk_notes
    events = _validate_meds(out)
    assert summary.balanced and summary.subjects == 13
    assert summary.written["DocumentReference"] == 1215
    notes = events.filter(pl.col("resource_type") == "DocumentReference")
    assert notes.height == 1215 and notes["text_value"].null_count() == 0
    assert notes["text_value"].str.contains("# Chief Complaint").all()
    # log.ndjson (the Bulk export's own log, not FHIR) is rejected line by line, not lost.
    rejects = pl.read_parquet(out / "rejects" / "rejects.parquet")
    log_rows = rejects.filter(pl.col("source_file").str.ends_with("log.ndjson"))
    assert log_rows.height == 4 and set(log_rows["reason"]) == {"missing resourceType"}
    assert log_rows["location"].to_list() == ["line 1", "line 2", "line 3", "line 4"]
    # Times with -04:00/-05:00 offsets are stored in UTC.
    first = json.loads(
        (shared_data / "synthea-bulk-notes" / "DocumentReference.000.ndjson").open().readline())
    row = notes.filter(pl.col("resource_id") == first["id"])
    assert row["time"].item().isoformat(timespec="milliseconds") == "1987-11-19T05:22:16.824"


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


@pytest.mark.slow
def test_sigkill_of_the_driver_takes_its_workers_and_a_rerun_is_clean(
        synthea: tuple[Path, IngestSummary], shared_data: Path, tmp_path: Path) -> None:
    """An operator's kill -9 mid-ingest: no worker survives it, and a rerun writes no event twice."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "meds"
    script = (f"import ehrfm; ehrfm.ingest_fhir([{str(shared_data / 'synthea-r4')!r}], {str(out)!r}, "
              "workers=2, overwrite=True)")
    driver = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while len(workers) < 2:  # the resource tracker is a child too; wait for two more
        assert driver.poll() is None and time.monotonic() < deadline, "the ingest ended before it was killed"
        workers = _children(driver.pid)
        time.sleep(0.2)
        workers = workers if len(workers) >= 3 else set()
    time.sleep(1.0)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)], "a worker outlived the killed driver"
    again = ehrfm.ingest_fhir([str(shared_data / "synthea-r4")], out, workers=2, overwrite=True)
    reference = synthea[1]
    assert again.totals() == reference.totals() and again.events == reference.events
    events = pl.read_parquet(sorted((out / "data").rglob("*.parquet")))
    assert events.height == reference.events
    assert not list(out.glob(".ehrfm_tmp*"))


@pytest.mark.slow
def test_a_worker_killed_mid_ingest_is_reported_with_its_files(shared_data: Path, tmp_path: Path) -> None:
    """As the out-of-memory killer would: one worker gets SIGKILL; the run names it, no raw traceback."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "meds"
    script = f"import ehrfm; ehrfm.ingest_fhir([{str(shared_data / 'synthea-r4')!r}], {str(out)!r}, workers=2)"
    driver = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    victim = None
    while victim is None:
        assert driver.poll() is None and time.monotonic() < deadline, "the ingest ended before a worker was killed"
        for pid in _children(driver.pid):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                victim = pid
        time.sleep(0.2)
    time.sleep(1.0)
    import os

    os.kill(victim, signal.SIGKILL)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode != 0
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("ehrfm.ingest.pipeline.IngestWorkerDied: an ingest worker process died while"), last
    assert "out-of-memory killer" in last and ".json" in last and "Rerun with fewer workers (workers=2 now" in last
    assert not (out / "metadata" / "dataset.json").exists()
