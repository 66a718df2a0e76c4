"""Ingest as independent jobs: n jobs over disjoint shares of the files, then a merge, equal one run byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from fhir_builders import condition, encounter, observation, ref, write_ndjson
from mimic_builders import write_mimic_export

import ehrfm
from ehrfm.ingest import IngestJobResult, IngestSummary
from ehrfm.ingest.discovery import discover_files
from ehrfm.ingest.partitions import file_shares
from ehrfm.jobs import (
    IncompleteJobError,
    JobMismatchError,
    MissingJobError,
    OverlappingJobsError,
    job_dir,
)

# What differs between any two runs, one job or several: when it ran (dataset.json) and how long
# it took (ingest_summary.json); a merge's summary also says what each job read ("jobs").
RUN_FIELDS = {"metadata/dataset.json": {"created_at", "dataset_version"},
              "metadata/ingest_summary.json": {"seconds", "jobs"}}


def dataset_files(root: Path) -> dict[str, bytes]:
    """Every file ingest writes (data, metadata, rejects, quarantine, the marker), by relative path."""
    found = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
             if p.is_file() and not p.name.endswith(".lock")}
    assert not any(name.startswith(".ehrfm-jobs") for name in found), "the merge removes the partials"
    return found


def assert_same_dataset(one: Path, many: Path) -> int:
    """Byte-identical file by file, except the run-time fields named in RUN_FIELDS; returns the file count."""
    a, b = dataset_files(one), dataset_files(many)
    assert sorted(a) == sorted(b)
    assert any(name.startswith("data/") for name in a) and "metadata/codes.parquet" in a
    for name in a:
        if name in RUN_FIELDS:
            first, second = json.loads(a[name]), json.loads(b[name])
            assert {k: v for k, v in first.items() if k not in RUN_FIELDS[name]} == {
                k: v for k, v in second.items() if k not in RUN_FIELDS[name]}, name
        else:
            assert a[name] == b[name], f"{name} differs between 1 job and {many.name}"
    return len(a)


def run_jobs(inputs: Path, output: Path, count: int, **settings: object) -> tuple[list[IngestJobResult], IngestSummary]:
    jobs = []
    for index in range(count):
        result = ehrfm.ingest_fhir(inputs, output, job={"index": index, "count": count}, **settings)
        assert isinstance(result, IngestJobResult)
        jobs.append(result)
    merged = ehrfm.ingest_fhir(inputs, output, job={"count": count}, **settings)
    assert isinstance(merged, IngestSummary)
    return jobs, merged


@pytest.fixture(scope="module")
def synthea_slice(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 real Synthea bundles, linked (not copied) into a folder of their own."""
    folder = tmp_path_factory.mktemp("synthea20")
    for path in sorted((shared_data / "synthea-r4").glob("*.json.gz"))[:20]:
        (folder / path.name).symlink_to(path)
    return folder


@pytest.fixture(scope="module")
def cross_file_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MIMIC-shaped export plus what only the whole input resolves, each across files.

    A Medication and a medication mix in other files than their MedicationRequests (the MIMIC
    fixture), a Condition with no time of its own whose Encounter sits in another file, a Patient
    re-exported in another file with a later meta.lastUpdated (a conflicting duplicate), an exact
    copy of a Condition, a line that is not JSON, and an Observation before the patient's birth.
    """
    folder = write_mimic_export(tmp_path_factory.mktemp("cross") / "mimic-iv-demo-fhir")
    pid = "8a1b9c63-0e1f-5c5a-9b1a-000000000001"
    write_ndjson(folder / "MimicEncounter.ndjson", [
        encounter("enc-1", f"Patient/{pid}", start="2180-07-23T08:00:00-04:00", end="2180-07-25T08:00:00-04:00",
                  klass="IMP")])
    write_ndjson(folder / "ZLateCondition.ndjson", [
        condition("cond-timeless", f"Patient/{pid}", encounter=ref("Encounter/enc-1")),
        {"resourceType": "Condition", "id": "cond-e", "subject": ref("Patient/8a1b9c63-0e1f-5c5a-9b1a-000000000002"),
         "recordedDate": "2180-07-23T00:00:00-04:00",
         "code": {"coding": [{"system": "http://mimic.mit.edu/fhir/mimic/CodeSystem/mimic-diagnosis-icd9",
                              "code": "E8889", "display": "Fall NOS"}]}},
        observation("before-birth", f"Patient/{pid}", effective="2100-01-01T00:00:00Z"),
    ])
    reexport = {"resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "2110-01-01",
                "meta": {"lastUpdated": "2190-01-01T00:00:00Z"},
                "identifier": [{"system": "http://mimic.mit.edu/fhir/mimic/identifier/patient", "value": "10000032"}]}
    (folder / "ZPatientReexport.ndjson").write_text(json.dumps(reexport) + "\n{not json\n")
    return folder


@pytest.fixture(scope="module")
def cross_file_single(cross_file_export: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IngestSummary]:
    out = tmp_path_factory.mktemp("cross_one") / "meds"
    summary = ehrfm.ingest_fhir(cross_file_export, out, workers=1, before_birth="quarantine")
    assert isinstance(summary, IngestSummary)
    return out, summary


def test_the_cross_file_fixture_exercises_what_needs_the_whole_input(cross_file_single) -> None:
    """The fixture is worth comparing: each whole-input rule fires in the single run."""
    out, summary = cross_file_single
    reasons = summary.rejected_by_reason()
    assert reasons["conflicting duplicate"] == 1 and reasons["duplicate resource"] == 1
    assert reasons["unresolved medication"] == 1 and reasons["no code"] == 1 and reasons["before birth"] == 1
    assert reasons["malformed JSON"] == 1 and summary.balanced
    events = pl.read_parquet(sorted((out / "data").rglob("*.parquet")))
    timeless = events.filter(pl.col("resource_id") == "cond-timeless")
    visit = events.filter((pl.col("resource_id") == "enc-1") & pl.col("code").str.starts_with("VISIT_START"))
    assert timeless.height == 1 and timeless["time"].item() == visit["time"].item()
    assert events.filter(pl.col("resource_id") == "mr-mix")["code"].to_list() == ["NDC/00338004904", "NDC/00409672924"]
    assert list((out / "quarantine").glob("*.parquet"))


@pytest.mark.parametrize("count", [2, 3])
def test_jobs_then_merge_equal_one_run_across_file_references(cross_file_export: Path, cross_file_single,
                                                              tmp_path: Path, count: int) -> None:
    files = discover_files(cross_file_export)
    shares = dict(zip((p.name for p in files), file_shares(files, count)))
    # the references cross jobs, not only files: resolving them needs the merge
    for first, second in (("MimicMedication", "MimicMedicationRequest"), ("MimicEncounter", "ZLateCondition"),
                          ("MimicPatient", "ZPatientReexport")):
        assert shares[f"{first}.ndjson"] != shares[f"{second}.ndjson"], (first, second)
    jobs, merged = run_jobs(cross_file_export, tmp_path / f"jobs{count}", count, workers=1,
                            before_birth="quarantine")
    one, single = cross_file_single
    assert assert_same_dataset(one, tmp_path / f"jobs{count}") >= 9
    assert merged.totals() == single.totals() and merged.rejected == single.rejected
    # the accounting across jobs: every file and every resource read by exactly one job
    assert sum(job.files for job in jobs) == len(files) == merged.files
    assert [sum(job.batch.read.values()) for job in jobs] == [job["read"] for job in merged.jobs]
    assert sum(job["read"] for job in merged.jobs) == merged.resources_read
    on_disk = json.loads((tmp_path / f"jobs{count}" / "metadata" / "ingest_summary.json").read_text())
    assert [job["index"] for job in on_disk["jobs"]] == list(range(count)) and on_disk["balanced"] is True


@pytest.mark.slow
def test_two_jobs_equal_one_on_real_synthea_bundles(synthea_slice: Path, tmp_path: Path) -> None:
    # The single run spreads files over two worker processes, the jobs read theirs in one: neither matters.
    single = ehrfm.ingest_fhir(synthea_slice, tmp_path / "one", workers=2)
    jobs, merged = run_jobs(synthea_slice, tmp_path / "two", 2, workers=1)
    assert all(job.files == 10 for job in jobs) and single.subjects == merged.subjects == 20
    assert assert_same_dataset(tmp_path / "one", tmp_path / "two") >= 8
    assert merged.totals() == single.totals() and merged.events == single.events > 5000


def test_a_missing_or_incomplete_partial_is_refused_by_name(cross_file_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "meds"
    ehrfm.ingest_fhir(cross_file_export, out, workers=1, job={"index": 0, "count": 2})
    with pytest.raises(MissingJobError, match=r"job 1 of 2 \(job.index=1\) has not run: .*job-1-of-2 does not exist"):
        ehrfm.ingest_fhir(cross_file_export, out, workers=1, job={"count": 2})
    assert not (out / "data").exists() and not (out / "metadata").exists(), "a refused merge writes nothing"
    ehrfm.ingest_fhir(cross_file_export, out, workers=1, job={"index": 1, "count": 2})
    (job_dir(out, "ingest", 1, 2) / "job.json").unlink()  # what a job killed before its end leaves
    with pytest.raises(IncompleteJobError, match=r"job 1 of 2 \(job.index=1\) is incomplete: .*job.json is missing"):
        ehrfm.ingest_fhir(cross_file_export, out, workers=1, job={"count": 2})
    with pytest.raises(MissingJobError, match=r"job 0 of 3 \(job.index=0\) has not run"):
        ehrfm.ingest_fhir(cross_file_export, out, workers=1, job={"count": 3})
    ehrfm.ingest_fhir(cross_file_export, out, workers=1, job={"index": 1, "count": 2})  # a rerun replaces it
    merged = ehrfm.ingest_fhir(cross_file_export, out, workers=1, job={"count": 2})
    assert isinstance(merged, IngestSummary) and merged.balanced and (out / "metadata" / "dataset.json").is_file()
    assert not (out / ".ehrfm-jobs").exists()


def test_overlapping_changed_or_differently_set_partials_are_refused(cross_file_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "meds"
    for index in (0, 1):
        ehrfm.ingest_fhir(cross_file_export, out, workers=1, job={"index": index, "count": 2})
    manifests = [job_dir(out, "ingest", i, 2) / "job.json" for i in (0, 1)]
    original = manifests[1].read_text()
    theirs, mine = (json.loads(m.read_text()) for m in manifests)
    mine["files"].append(theirs["files"][0])
    manifests[1].write_text(json.dumps(mine))
    with pytest.raises(OverlappingJobsError, match=rf"jobs 0 and 1 both read .*{Path(theirs['files'][0][1]).name}"):
        ehrfm.ingest_fhir(cross_file_export, out, workers=1, job={"count": 2})
    manifests[1].write_text(original)
    with pytest.raises(JobMismatchError, match=r"job.index=0\) ran with split_ratios=.* but this run has split_ratios="):
        ehrfm.ingest_fhir(cross_file_export, out, workers=1, job={"count": 2},
                          split_ratios={"train": 0.5, "tuning": 0.25, "held_out": 0.25})
    changed = Path(theirs["files"][0][1])
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        with pytest.raises(JobMismatchError, match=rf"{changed.name} changed since job 0 of 2 read it"):
            ehrfm.ingest_fhir(cross_file_export, out, workers=1, job={"count": 2})
    finally:
        os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # settings that change nothing in the dataset may differ: more processes for the merge
    assert ehrfm.ingest_fhir(cross_file_export, out, workers=2, job={"count": 2}).balanced


def test_job_settings_are_checked_and_jobs_leave_a_finished_dataset_alone(cross_file_export: Path,
                                                                          tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"job.index must be an integer in 0..1 \(job.count=2\), got 2"):
        ehrfm.ingest_fhir(cross_file_export, tmp_path / "x", job={"index": 2, "count": 2})
    with pytest.raises(ValueError, match="job.count must be a positive integer, got 0"):
        ehrfm.ingest_fhir(cross_file_export, tmp_path / "x", job={"count": 0})
    out = tmp_path / "meds"
    ehrfm.ingest_fhir(cross_file_export, out, workers=1)
    with pytest.raises(FileExistsError, match=r"meds/data: already exists; pass overwrite=True"):
        ehrfm.ingest_fhir(cross_file_export, out, workers=1, job={"index": 0, "count": 2})
    assert not (out / ".ehrfm-jobs").exists(), "refused before any work"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "ehrfm.cli", "ingest", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env={**os.environ, "EHRFM_PROGRESS": "0"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
             # submitit's local executor: the Slurm launcher's code path, with local processes for jobs
             "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_hydra_multirun_jobs_then_the_merge(cross_file_export: Path, cross_file_single, tmp_path: Path,
                                            launcher: str) -> None:
    if launcher == "submitit_local":
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                            reason="the slurm extra (hydra-submitit-launcher) is not installed")
    out = tmp_path / "meds"
    common = [f"input={cross_file_export}", f"output={out}", "workers=1", "before_birth=quarantine"]
    extra = LAUNCHERS[launcher]
    sweep = _cli("-m", *extra, f"hydra.sweep.dir={tmp_path / 'multirun'}", *common, "job.count=2", "job.index=0,1",
                 cwd=tmp_path)
    if launcher == "submitit_local":  # the jobs' output goes to submitit's logs, not to this process
        assert all((job_dir(out, "ingest", k, 2) / "job.json").is_file() for k in (0, 1))
    else:
        assert "ingest job 0 of 2" in sweep.stdout and "ingest job 1 of 2" in sweep.stdout
    assert not (out / "data").exists(), "jobs write their partials only"
    merge = _cli(*common, "job.count=2", cwd=tmp_path)
    assert "TOTAL" in merge.stdout
    one, _ = cross_file_single
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert "metadata/ingest_config.yaml" in written  # the CLI's copy of its settings (job.count: 2 here)
    (out / "metadata" / "ingest_config.yaml").unlink()
    assert_same_dataset(one, out)


def test_progress_bars_count_files_and_shards_when_forced(cross_file_export: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from ehrfm.ingest import pipeline

    bars = []

    def recording_bar(**options: object):
        bars.append(pipeline_bar(**options))
        return bars[-1]

    pipeline_bar = pipeline.progress_bar
    monkeypatch.setattr(pipeline, "progress_bar", recording_bar)
    monkeypatch.setenv("EHRFM_PROGRESS", "1")
    ehrfm.ingest_fhir(cross_file_export, tmp_path / "meds", workers=1)
    files = len(discover_files(cross_file_export))
    (bar,) = bars
    assert (bar.desc, bar.unit, bar.total, bar.n) == ("ingest", "file", files, files)  # every file counted
    assert bar.postfix.endswith("resources/s")
    err = capsys.readouterr().err
    assert f"ingest:   0%|          | 0/{files}" in err and "ingest: shards" in err and "/1 " in err
    monkeypatch.setenv("EHRFM_PROGRESS", "0")
    ehrfm.ingest_fhir(cross_file_export, tmp_path / "again", workers=1)
    assert capsys.readouterr().err == ""
