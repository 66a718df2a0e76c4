"""The patient simulator: deterministic, valid FHIR R4 that ingest takes whole, events that follow the
ground truth, and a planted risk that the labels bear out (and per-code counts partly miss)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from ehrfm.ingest import ingest_fhir
from ehrfm.predict.metrics import auroc
from ehrfm.synth import run_synth
from ehrfm.synthetic import population as population_module
from ehrfm.synthetic.dynamics import TASK_OUTCOMES, Truth, hazard, true_risk
from ehrfm.synthetic.population import load_truth, true_risks, write_population
from ehrfm.synthetic.simulator import DIAGNOSIS_CODES, simulate_patient
from ehrfm.tasks import builtin_task_names, label_meds_dataset


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "population.json":
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(population_module, "PART_SIZE", 4)  # 3 parts for 10 patients
    write_population(tmp_path / "one", n_patients=10, seed=5, workers=1, gzip=True)
    write_population(tmp_path / "two", n_patients=10, seed=5, workers=2, gzip=True)
    write_population(tmp_path / "other", n_patients=10, seed=6, workers=1, gzip=True)
    assert len(list((tmp_path / "one" / "fhir").glob("Patient.*.ndjson.gz"))) == 3
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")
    assert _digest(tmp_path / "one") != _digest(tmp_path / "other")


def test_a_patient_does_not_depend_on_the_population_size() -> None:
    assert simulate_patient(3, 7).resources == simulate_patient(3, 7).resources
    assert simulate_patient(3, 7).patient_id != simulate_patient(3, 8).patient_id


@pytest.mark.slow
@pytest.mark.parametrize(("format", "compress"), [("ndjson", False), ("bundle", True)])
def test_both_formats_pass_strict_r4_validation_with_zero_rejects(tmp_path: Path, format: str,
                                                                  compress: bool) -> None:
    written = write_population(tmp_path / "pop", n_patients=25, seed=2, format=format, gzip=compress,
                               notes=True, imaging=True, workers=1)
    assert {"DocumentReference", "ImagingStudy", "Immunization", "MedicationRequest", "Procedure",
            "Condition", "Observation", "Encounter", "Patient"} <= set(written["resources"])
    summary = ingest_fhir([str(tmp_path / "pop" / "fhir")], tmp_path / "meds", workers=1, strict=True)
    assert summary.resources_rejected == 0 and summary.balanced
    assert summary.resources_read == sum(written["resources"].values())
    subjects = pl.read_parquet(tmp_path / "meds" / "metadata" / "subjects.parquet")
    assert subjects.height == 25


def test_recorded_events_follow_the_ground_truth(tmp_path: Path) -> None:
    write_population(tmp_path, n_patients=40, seed=1, format="ndjson", workers=1)
    truth = load_truth(tmp_path)
    rows = [json.loads(line) for path in sorted((tmp_path / "fhir").glob("*.ndjson")) for line in path.open()]
    by_type: dict[str, list[dict]] = {}
    for row in rows:
        by_type.setdefault(row["resourceType"], []).append(row)
    code_of = {code: condition for condition, (code, _, _) in DIAGNOSIS_CODES.items()}
    diagnosed: dict[tuple[str, str], str] = {}
    for condition in by_type["Condition"]:
        code = condition["code"]["coding"][0]["code"]
        if code in code_of:
            diagnosed[(condition["subject"]["reference"].split("/")[1], code_of[code])] = condition["onsetDateTime"]
    expected = {(pid, name): when.replace(tzinfo=dt.timezone.utc).isoformat(timespec="seconds")
                for pid, t in truth.items() for name, when in t.diagnoses.items()}
    assert diagnosed == expected  # each chronic diagnosis once, when the truth says
    deaths = {p["id"]: p.get("deceasedDateTime") for p in by_type["Patient"]}
    assert deaths == {pid: t.death and t.death.replace(tzinfo=dt.timezone.utc).isoformat(timespec="seconds")
                      for pid, t in truth.items()}
    assert any(deaths.values()), "40 simulated adults, some of whom die"
    inpatient_ends = sorted(e["period"]["end"] for e in by_type["Encounter"] if e["class"]["code"] == "IMP")
    assert inpatient_ends == sorted(d.replace(tzinfo=dt.timezone.utc).isoformat(timespec="seconds")
                                    for t in truth.values() for d in t.discharges)
    for patient in truth.values():  # nothing after death
        if patient.death:
            assert all(d <= patient.death for d in patient.discharges)
    units = {(o["code"]["coding"][0]["code"], o["valueQuantity"]["unit"])
             for o in by_type["Observation"] if "valueQuantity" in o}
    assert {("4548-4", "%"), ("2160-0", "mg/dL"), ("8867-4", "/min")} <= units


def _truth(**changes: object) -> Truth:
    base = {"birth": dt.datetime(1950, 1, 1), "male": False, "frailty": 0.0, "smoker": False, "hba1c_start": 5.3,
            "hba1c_drift": 0.0, "creatinine_slope": 0.3, "history_start": dt.datetime(2005, 1, 1)}
    return Truth(**{**base, **changes})


def test_true_risk_moves_with_each_planted_signal() -> None:
    at = dt.datetime(2020, 1, 1)
    calm = _truth()
    assert true_risk(_truth(discharges=[dt.datetime(2019, 12, 20)]), "inpatient_admission_1y", at) > \
        1.3 * true_risk(calm, "inpatient_admission_1y", at)  # recency, not count
    assert true_risk(_truth(discharges=[dt.datetime(2009, 11, 1)]), "inpatient_admission_1y", at) == \
        pytest.approx(true_risk(calm, "inpatient_admission_1y", at))
    kidneys = _truth(diagnoses={"chronic_kidney_disease": dt.datetime(2012, 1, 1)})
    faster = _truth(diagnoses={"chronic_kidney_disease": dt.datetime(2012, 1, 1)}, creatinine_slope=0.45)
    assert true_risk(faster, "mortality_1y", at) > true_risk(kidneys, "mortality_1y", at)  # a value trend
    rising = _truth(hba1c_drift=0.04)
    assert true_risk(rising, "new_prediabetes_3y", at) > 2 * true_risk(calm, "new_prediabetes_3y", at)
    diagnosed = _truth(diagnoses={"prediabetes": dt.datetime(2015, 1, 1)})
    assert true_risk(diagnosed, "new_prediabetes_3y", at) == 0.0
    assert true_risk(_truth(death=dt.datetime(2019, 1, 1)), "mortality_1y", at) == 0.0
    # what happens after the prediction time is not known at it
    later = _truth(discharges=[dt.datetime(2020, 6, 1)])
    assert true_risk(later, "mortality_1y", at) == true_risk(calm, "mortality_1y", at)
    assert hazard(later, "death", dt.datetime(2020, 7, 1)) > hazard(later, "death", dt.datetime(2020, 7, 1),
                                                                    known_until=at)
    with pytest.raises(ValueError, match="no planted risk for task 'readmission_30d'"):
        true_risk(calm, "readmission_30d", at)


def test_truth_round_trips_through_its_file(tmp_path: Path) -> None:
    write_population(tmp_path, n_patients=5, seed=4, workers=1)
    with gzip.open(tmp_path / "truth.jsonl.gz", "rt") as handle:
        lines = [json.loads(line) for line in handle]
    assert [line["index"] for line in lines] == list(range(5))
    truth = load_truth(tmp_path)
    for line in lines:
        assert Truth.from_dict(line["truth"]) == truth[line["patient_id"]]
        assert truth[line["patient_id"]] == simulate_patient(4, line["index"]).truth


def test_synth_refuses_to_overwrite_unless_told(tmp_path: Path) -> None:
    run_synth(output=str(tmp_path), n_patients=2, workers=1)
    with pytest.raises(FileExistsError, match="overwrite"):
        run_synth(output=str(tmp_path), n_patients=2, workers=1)
    (tmp_path / "mine.txt").write_text("kept")
    summary = run_synth(output=str(tmp_path), n_patients=3, workers=1, overwrite=True)
    assert summary["patients"] == 3 and (tmp_path / "mine.txt").read_text() == "kept"
    with pytest.raises(ValueError, match="format='csv'"):
        run_synth(output=str(tmp_path / "x"), format="csv")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("simulated")
    write_population(root / "pop", n_patients=1200, seed=0, workers=2)
    ingest_fhir([str(root / "pop" / "fhir")], root / "meds", workers=2)
    label_meds_dataset(root / "meds", builtin_task_names(), root / "labels")
    return root / "pop", root / "meds", root / "labels"


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASK_OUTCOMES))
def test_the_labels_bear_out_the_planted_risk(simulated, task: str) -> None:
    population, meds, labels_dir = simulated
    labels = pl.read_parquet(labels_dir / task / "0.parquet")
    positives = int(labels["boolean_value"].sum())
    assert positives >= 50, f"{task}: {positives} positives in {labels.height} rows"
    risk = true_risks(population, meds, labels, task)
    assert auroc(labels["boolean_value"].to_numpy(), risk.to_numpy()) > 0.68
    # the planted risk ignores new events inside the window, so it can only be low, not high
    assert 0.3 * labels["boolean_value"].mean() < risk.mean() < 1.3 * labels["boolean_value"].mean()


@pytest.mark.slow
def test_per_code_counts_miss_the_hba1c_trend_that_drives_prediabetes(simulated) -> None:
    from ehrfm.evaluate.count_baselines import run_count_baselines
    from ehrfm.evaluate.count_features import read_events

    population, meds, labels_dir = simulated
    task = "new_prediabetes_3y"
    labels = pl.read_parquet(labels_dir / "_details" / f"{task}.parquet").select(
        "subject_id", "prediction_time", "boolean_value", "split")
    run = run_count_baselines(read_events(meds).collect(), labels, task, models=("logistic_regression",))
    held_out = run.predictions.filter(pl.col("split") == "held_out")
    counts = auroc(held_out["boolean_value"].to_numpy(), held_out["predicted_boolean_probability"].to_numpy())
    truth = labels.filter(pl.col("split") == "held_out")
    planted = auroc(truth["boolean_value"].to_numpy(), true_risks(population, meds, truth, task).to_numpy())
    assert planted > counts + 0.1, f"planted risk AUROC {planted:.3f}, count baseline {counts:.3f}"
