"""Ingest of a MIMIC-IV-on-FHIR-shaped export: standard vocabularies, descriptions, parents,
medication mixes as one event per ingredient, every order accounted for, identifiers kept."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from fhir_builders import Run, ingest, write_ndjson
from mimic_builders import PATIENT_ID_SYSTEM, REQUEST_OUTCOMES, mimic_patient, write_mimic_export

from ehrfm.ingest.finalize import SubjectIdentifierError


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("mimic")
    return ingest(write_mimic_export(root / "mimic-iv-demo-fhir"), root / "out")


def codes_of(run: Run, resource_id: str) -> list[str]:
    return [row["code"] for row in run.events_of(resource_id)]


def test_source_codes_become_the_standard_vocabularies_meds_etls_write(run: Run) -> None:
    assert codes_of(run, "cond-10") == ["ICD10CM/I62.01"]
    assert codes_of(run, "cond-9") == ["ICD9CM/285.9"]
    assert codes_of(run, "cond-e") == ["ICD9CM/E888.9"]  # E-codes: dot after the 4th character
    assert codes_of(run, "proc-9") == ["ICD9Proc/96.71"]
    assert codes_of(run, "proc-10") == ["ICD10PCS/0DB64Z3"]
    assert codes_of(run, "hr") == ["MIMIC_IV_ITEM/220045"]
    assert codes_of(run, "dt") == ["MIMIC_IV_ITEM/225755"]
    assert codes_of(run, "lab") == ["MIMIC_IV_LABITEM/50912"]
    assert codes_of(run, "mr-ndc") == ["NDC/51079030020"]
    assert not any("~" in code for code in run.events["code"].to_list())  # no hashed local names left


def test_every_medication_request_is_written_or_rejected_with_its_reason(run: Run) -> None:
    for request, outcome in REQUEST_OUTCOMES.items():
        if isinstance(outcome, list):
            assert codes_of(run, request) == outcome, request
        else:
            assert codes_of(run, request) == []
            rows = [r for r in run.reject_rows(outcome) if r["resource_id"] == request]
            assert len(rows) == 1, (request, run.rejects.to_dicts())
    assert run.summary.read["MedicationRequest"] == len(REQUEST_OUTCOMES)
    assert "Medication/med-gone" in run.reject_rows("no code")[0]["detail"]


def test_a_medication_mix_is_one_event_per_ingredient_in_order(run: Run) -> None:
    rows = run.events_of("mr-mix")
    assert [r["code"] for r in rows] == ["NDC/00338004904", "NDC/00409672924"]
    assert len({r["time"] for r in rows}) == 1 and rows[0]["resource_type"] == "MedicationRequest"
    assert run.summary.written["MedicationRequest"] == 3  # a mix is one resource written, not two


def test_descriptions_come_from_displays_and_medication_name_identifiers(run: Run) -> None:
    assert run.description("ICD9CM/285.9") == "Anemia, unspecified"
    assert run.description("MIMIC_IV_ITEM/220045") == "Heart Rate"
    assert run.description("NDC/51079030020") == "CloniDINE"  # only the identifier names it
    assert run.description("NDC/00409672924") == "Calcium Gluconate"
    assert run.description("RxNorm/313782") == "Acetaminophen 325 MG Oral Tablet"


def test_parent_codes_hold_icd_categories_and_an_ndcs_rxnorm_concept(run: Run) -> None:
    parents = dict(run.codes.select("code", "parent_codes").iter_rows())
    assert parents["ICD10CM/I62.01"] == ["ICD10CM/I62"]
    assert parents["ICD9CM/285.9"] == ["ICD9CM/285"]
    assert parents["ICD9Proc/96.71"] == ["ICD9Proc/96"]
    assert parents["NDC/00904198261"] == ["RxNorm/313782"]  # both codings of one Medication
    assert parents["MIMIC_IV_ITEM/220045"] is None


def test_numeric_strings_are_numbers_and_date_times_are_no_text_tokens(run: Run) -> None:
    def value(rid: str) -> tuple:
        row = run.events_of(rid)[0]
        return row["numeric_value"], row["text_value"]

    assert value("pain-3") == (3.0, None)
    assert value("pain-x") == (None, "Unable to score")
    assert value("str-time") == (None, "datetime")
    assert value("dt") == (None, "datetime")


def test_identifiers_are_kept_and_the_name_comes_from_the_input(run: Run) -> None:
    identifiers = {row["fhir_patient_id"]: row["identifiers"] for row in run.subjects.to_dicts()}
    assert identifiers["8a1b9c63-0e1f-5c5a-9b1a-000000000001"] == [
        {"system": PATIENT_ID_SYSTEM, "value": "10000032"}]
    dataset = json.loads((run.output / "metadata" / "dataset.json").read_text())
    assert dataset["dataset_name"] == "mimic-iv-demo-fhir"


def test_subject_id_can_come_from_a_patient_identifier(tmp_path: Path) -> None:
    run = ingest(write_mimic_export(tmp_path / "in"), tmp_path / "out", subject_id_system=PATIENT_ID_SYSTEM,
                 dataset_name="mimic-demo")
    assert sorted(run.subjects["subject_id"].to_list()) == [10000032, 10000033]
    assert set(run.events["subject_id"].unique().to_list()) == {10000032, 10000033}
    assert set(run.splits["subject_id"].to_list()) == {10000032, 10000033}
    by_patient = dict(run.subjects.select("fhir_patient_id", "subject_id").iter_rows())
    cond = run.events.filter(pl.col("resource_id") == "cond-e")
    assert cond["subject_id"].to_list() == [by_patient["8a1b9c63-0e1f-5c5a-9b1a-000000000002"]]
    assert json.loads((run.output / "metadata" / "dataset.json").read_text())["dataset_name"] == "mimic-demo"


@pytest.mark.parametrize("identifier,message", [
    (None, r"Patient/p-bad has no identifier with system 'http://mimic.mit.edu/fhir/mimic/identifier/patient'"),
    ("MRN-7", r"Patient/p-bad: identifier http://mimic.mit.edu/fhir/mimic/identifier/patient\|'MRN-7' is not an integer"),
])
def test_a_patient_without_an_integer_identifier_is_a_named_error(tmp_path: Path, identifier, message) -> None:
    bad = mimic_patient("p-bad", identifier or 0)
    if identifier is None:
        bad["identifier"] = [{"system": "http://hospital.example/mrn", "value": "7"}]
    source = write_ndjson(tmp_path / "in" / "MimicPatient.ndjson", [mimic_patient("p-ok", 1), bad])
    with pytest.raises(SubjectIdentifierError, match=message) as caught:
        ingest(source, tmp_path / "out", subject_id_system=PATIENT_ID_SYSTEM)
    assert "MimicPatient.ndjson (line 2)" in str(caught.value)


def test_two_patients_sharing_the_identifier_are_refused(tmp_path: Path) -> None:
    source = write_ndjson(tmp_path / "in" / "p.ndjson", [mimic_patient("a", 5), mimic_patient("b", 5)])
    with pytest.raises(SubjectIdentifierError, match=r"Patients \['a', 'b'\] share the identifier"):
        ingest(source, tmp_path / "out", subject_id_system=PATIENT_ID_SYSTEM)
