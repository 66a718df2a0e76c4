"""Each FHIR resource type, written the way Synthea writes it, becomes exactly these MEDS events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fhir_builders import (
    CDCREC,
    CVX,
    DCM,
    ETHNICITY_URL,
    LOINC,
    RACE_URL,
    RXNORM,
    SNOMED,
    bundle,
    concept,
    condition,
    encounter,
    ingest,
    note_text_b64,
    observation,
    patient,
    ref,
    sid,
    ts,
    write_json,
    write_ndjson,
)

COLUMNS = ("code", "time", "numeric_value", "text_value", "unit", "encounter_id")


def events(run, resource_id: str, resource_type: str | None = None, columns=COLUMNS) -> list[tuple]:
    """The events of one resource, in output order, as tuples of ``columns``."""
    frame = run.events.filter(pl.col("resource_id") == resource_id)
    if resource_type is not None:
        frame = frame.filter(pl.col("resource_type") == resource_type)
    return [tuple(row[c] for c in columns) for row in frame.to_dicts()]


def synthea_patient(pid: str = "pat-1", **extra: Any) -> dict[str, Any]:
    resource = patient(pid, gender="female", birth="1965-08-14", extension=[
        {"url": RACE_URL, "extension": [
            {"url": "ombCategory", "valueCoding": {"system": CDCREC, "code": "2106-3", "display": "White"}},
            {"url": "text", "valueString": "White"},
        ]},
        {"url": ETHNICITY_URL, "extension": [
            {"url": "ombCategory", "valueCoding": {"system": CDCREC, "code": "2186-5",
                                                   "display": "Not Hispanic or Latino"}},
            {"url": "text", "valueString": "Not Hispanic or Latino"},
        ]},
        {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": "F"},
        {"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName", "valueString": "Smith"},
    ])
    resource.update(extra)
    return resource


# -- Patient ---------------------------------------------------------------------------------

def test_patient(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "Patient.ndjson", [
        synthea_patient("pat-1", deceasedDateTime="2019-03-01T12:30:00-05:00"),
    ])
    run = ingest(src, tmp_path / "out")

    assert events(run, "pat-1") == [
        ("GENDER/female", None, None, None, None, None),
        ("RACE/2106-3", None, None, None, None, None),
        ("ETHNICITY/2186-5", None, None, None, None, None),
        ("BIRTHSEX/F", None, None, None, None, None),
        ("MEDS_BIRTH", ts("1965-08-14T00:00:00"), None, None, None, None),
        ("MEDS_DEATH", ts("2019-03-01T17:30:00"), None, None, None, None),
    ]
    assert set(run.events["resource_type"].to_list()) == {"Patient"}
    assert run.events["subject_id"].unique().to_list() == [sid("pat-1")]
    assert run.subjects.to_dicts() == [{"subject_id": sid("pat-1"), "fhir_patient_id": "pat-1", "identifiers": []}]
    assert run.description("RACE/2106-3") == "White"
    assert run.description("ETHNICITY/2186-5") == "Not Hispanic or Latino"
    assert run.summary.written == {"Patient": 1} and run.summary.subjects == 1


def test_patient_deceased_boolean_and_race_text_only(tmp_path: Path) -> None:
    alive = patient("p-alive", gender="male", deceasedBoolean=False)
    dead = patient("p-dead", gender="other", deceasedBoolean=True, extension=[
        {"url": RACE_URL, "extension": [{"url": "text", "valueString": "Declined"}]},
    ])
    run = ingest(write_ndjson(tmp_path / "P.ndjson", [alive, dead]), tmp_path / "out")
    assert events(run, "p-alive", columns=("code", "time")) == [
        ("GENDER/male", None), ("MEDS_BIRTH", ts("1970-04-12T00:00:00")),
    ]
    assert events(run, "p-dead", columns=("code", "time")) == [
        ("GENDER/other", None), ("RACE/TEXT:Declined", None), ("MEDS_DEATH", None),
        ("MEDS_BIRTH", ts("1970-04-12T00:00:00")),
    ]


# -- Encounter -------------------------------------------------------------------------------

def test_encounter(tmp_path: Path) -> None:
    enc = encounter("enc-1", "Patient/pat-1", start="2020-03-04T10:00:00-05:00",
                    end="2020-03-04T10:30:00-05:00", klass="AMB")
    enc["class"]["display"] = "ambulatory"
    inpatient = encounter("enc-2", "Patient/pat-1", start="2021-01-01T00:00:00Z", end=None, klass="IMP")
    run = ingest(write_ndjson(tmp_path / "x.ndjson", [synthea_patient(), enc, inpatient]), tmp_path / "out")

    assert events(run, "enc-1") == [
        ("VISIT_START/AMB", ts("2020-03-04T15:00:00"), None, None, None, "enc-1"),
        ("SNOMED/185349003", ts("2020-03-04T15:00:00"), None, None, None, "enc-1"),
        ("VISIT_END/AMB", ts("2020-03-04T15:30:00"), None, None, None, "enc-1"),
    ]
    assert events(run, "enc-2", columns=("code", "time")) == [
        ("VISIT_START/IMP", ts("2021-01-01T00:00:00")), ("SNOMED/185349003", ts("2021-01-01T00:00:00")),
    ]
    assert run.description("SNOMED/185349003") == "Encounter for check up (procedure)"
    assert run.description("VISIT_START/AMB") == "Visit start (ambulatory)"


def test_encounter_end_before_start_is_rejected(tmp_path: Path) -> None:
    enc = encounter("enc-bad", "Patient/p1", start="2020-03-04T10:00:00Z", end="2020-03-04T09:00:00Z")
    run = ingest(write_ndjson(tmp_path / "x.ndjson", [patient("p1"), enc]), tmp_path / "out")
    row = run.only_reject("invalid date")
    assert row["resource_id"] == "enc-bad" and "before start" in row["detail"]


# -- Condition -------------------------------------------------------------------------------

def test_condition_time_onset_then_recorded_then_encounter(tmp_path: Path) -> None:
    enc = encounter("enc-1", "Patient/pat-1", start="2020-03-04T10:00:00Z")
    onset = condition("c-onset", "Patient/pat-1", onsetDateTime="2019-01-02T03:04:05Z",
                      recordedDate="2020-03-04T10:00:00Z", encounter=ref("Encounter/enc-1"))
    recorded = condition("c-recorded", "Patient/pat-1", recordedDate="2018-05-06T07:08:09+02:00")
    timeless = condition("c-enc", "Patient/pat-1", code="15777000", display="Prediabetes",
                         encounter=ref("Encounter/enc-1"))
    onset_period = condition("c-period", "Patient/pat-1", onsetPeriod={"start": "2017-06"})
    run = ingest(write_ndjson(tmp_path / "x.ndjson", [synthea_patient(), enc, onset, recorded, timeless,
                                                      onset_period]), tmp_path / "out")

    assert events(run, "c-onset") == [
        ("SNOMED/44054006", ts("2019-01-02T03:04:05"), None, None, None, "enc-1")]
    assert events(run, "c-recorded") == [
        ("SNOMED/44054006", ts("2018-05-06T05:08:09"), None, None, None, None)]
    assert events(run, "c-enc") == [("SNOMED/15777000", ts("2020-03-04T10:00:00"), None, None, None, "enc-1")]
    assert events(run, "c-period", columns=("time",)) == [(ts("2017-06-01T00:00:00"),)]
    assert run.description("SNOMED/44054006") == "Diabetes mellitus type 2 (disorder)"
    assert run.summary.written == {"Condition": 4, "Encounter": 1, "Patient": 1}


def test_condition_takes_start_of_encounter_in_another_ndjson_file(tmp_path: Path) -> None:
    write_ndjson(tmp_path / "in" / "Patient.ndjson", [synthea_patient()])
    write_ndjson(tmp_path / "in" / "Encounter.ndjson", [
        encounter("enc-9", "Patient/pat-1", start="2022-11-30T23:30:00-03:00", end="2022-12-01T04:00:00Z"),
    ])
    write_ndjson(tmp_path / "in" / "Condition.ndjson", [
        condition("c-1", "Patient/pat-1", encounter=ref("Encounter/enc-9")),
    ])
    for workers in (1, 2):
        run = ingest(tmp_path / "in", tmp_path / f"out{workers}", workers=workers)
        assert events(run, "c-1") == [
            ("SNOMED/44054006", ts("2022-12-01T02:30:00"), None, None, None, "enc-9")]


def test_condition_in_a_bundle_takes_its_encounter_start_by_urn(tmp_path: Path) -> None:
    value = bundle(
        synthea_patient("pat-1"),
        encounter("enc-1", "urn:uuid:pat-1", start="2020-03-04T10:00:00Z"),
        condition("c-1", "urn:uuid:pat-1", encounter=ref("urn:uuid:enc-1")),
    )
    run = ingest(write_json(tmp_path / "b.json", value), tmp_path / "out")
    assert events(run, "c-1") == [("SNOMED/44054006", ts("2020-03-04T10:00:00"), None, None, None, "enc-1")]


def test_condition_without_any_time_or_encounter_is_rejected(tmp_path: Path) -> None:
    run = ingest(write_ndjson(tmp_path / "x.ndjson", [patient("p1"), condition("c-x")]), tmp_path / "out")
    row = run.only_reject("missing time")
    assert (row["location"], row["resource_id"]) == ("line 2", "c-x")


def test_condition_whose_encounter_is_missing_is_rejected_not_timeless(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "x.ndjson",
                       [patient("p1"), condition("c-x", encounter=ref("Encounter/nope"))])
    run = ingest(src, tmp_path / "out")
    row = run.only_reject("missing time")
    assert (row["location"], row["resource_type"], row["resource_id"]) == ("line 2", "Condition", "c-x")
    assert row["detail"] == "no time of its own, and Encounter/nope of this patient was not found"
    assert run.events.filter(pl.col("time").is_null() & (pl.col("resource_type") != "Patient")).height == 0


# -- Observation -----------------------------------------------------------------------------

def test_observation_values(tmp_path: Path) -> None:
    quantity = observation("o-qty", "Patient/pat-1", code="2339-0", display="Glucose", value=98.5,
                           unit="mg/dL", encounter=ref("Encounter/enc-1"))
    coded = observation("o-cc", "Patient/pat-1", code="72166-2", display="Tobacco smoking status", value=None,
                        valueCodeableConcept=concept(SNOMED, "266919005", "Never smoked tobacco (finding)"))
    text = observation("o-str", "Patient/pat-1", code="8867-4", value=None, valueString="regular rhythm")
    yes = observation("o-true", "Patient/pat-1", code="11111-1", value=None, valueBoolean=True)
    no = observation("o-false", "Patient/pat-1", code="11111-1", value=None, valueBoolean=False,
                     effectiveDateTime="2020-03-05T00:00:00Z")
    integer = observation("o-int", "Patient/pat-1", code="55284-4", value=None, valueInteger=3)
    run = ingest(write_ndjson(tmp_path / "x.ndjson", [synthea_patient(), encounter("enc-1", "Patient/pat-1"),
                                                      quantity, coded, text, yes, no, integer]),
                 tmp_path / "out")
    at = ts("2020-03-04T10:15:00")
    assert events(run, "o-qty") == [("LOINC/2339-0", at, pytest.approx(98.5), None, "mg/dL", "enc-1")]
    assert events(run, "o-cc") == [("LOINC/72166-2", at, None, "SNOMED/266919005", None, None)]
    assert events(run, "o-str") == [("LOINC/8867-4", at, None, "regular rhythm", None, None)]
    assert events(run, "o-true") == [("LOINC/11111-1", at, 1.0, None, None, None)]
    assert events(run, "o-false") == [("LOINC/11111-1", ts("2020-03-05T00:00:00"), 0.0, None, None, None)]
    assert events(run, "o-int") == [("LOINC/55284-4", at, 3.0, None, None, None)]
    assert run.description("SNOMED/266919005") == "Never smoked tobacco (finding)"
    assert run.description("LOINC/72166-2") == "Tobacco smoking status"
    assert run.description("LOINC/2339-0") == "Glucose"


def test_blood_pressure_writes_both_components(tmp_path: Path) -> None:
    bp = observation("o-bp", "Patient/pat-1", code="85354-9",
                     display="Blood pressure panel with all children optional",
                     value=None, effective="2020-03-04T10:15:00+01:00", component=[
                         {"code": concept(LOINC, "8462-4", "Diastolic Blood Pressure"),
                          "valueQuantity": {"value": 82, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                                            "code": "mm[Hg]"}},
                         {"code": concept(LOINC, "8480-6", "Systolic Blood Pressure"),
                          "valueQuantity": {"value": 121, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                                            "code": "mm[Hg]"}},
                     ])
    run = ingest(write_ndjson(tmp_path / "x.ndjson", [synthea_patient(), bp]), tmp_path / "out")
    at = ts("2020-03-04T09:15:00")
    assert events(run, "o-bp") == [
        ("LOINC/8462-4", at, 82.0, None, "mm[Hg]", None),
        ("LOINC/8480-6", at, 121.0, None, "mm[Hg]", None),
    ]
    assert run.description("LOINC/8480-6") == "Systolic Blood Pressure"
    assert run.summary.written == {"Observation": 1, "Patient": 1}


# -- Medication* -----------------------------------------------------------------------------

def medication_request(mid: str, subject: str, **extra: Any) -> dict[str, Any]:
    resource = {"resourceType": "MedicationRequest", "id": mid, "status": "active", "intent": "order",
                "subject": ref(subject), "authoredOn": "2020-03-04T10:20:00-05:00"}
    resource.update(extra)
    return resource


def medication(mid: str, code: str, display: str) -> dict[str, Any]:
    return {"resourceType": "Medication", "id": mid, "status": "active",
            "code": concept(RXNORM, code, display)}


def test_medication_request_with_codeable_concept(tmp_path: Path) -> None:
    mr = medication_request("mr-1", "Patient/pat-1", encounter=ref("Encounter/enc-1"),
                            medicationCodeableConcept=concept(RXNORM, "860975", "24 HR Metformin 500 MG"))
    run = ingest(write_ndjson(tmp_path / "x.ndjson",
                              [synthea_patient(), encounter("enc-1", "Patient/pat-1"), mr]),
                 tmp_path / "out")
    assert events(run, "mr-1") == [("RxNorm/860975", ts("2020-03-04T15:20:00"), None, None, None, "enc-1")]
    assert run.description("RxNorm/860975") == "24 HR Metformin 500 MG"


def test_medication_request_with_contained_medication(tmp_path: Path) -> None:
    mr = medication_request("mr-2", "Patient/pat-1", medicationReference=ref("#med-c"),
                            contained=[medication("med-c", "314076", "lisinopril 10 MG Oral Tablet")])
    run = ingest(write_ndjson(tmp_path / "x.ndjson", [synthea_patient(), mr]), tmp_path / "out")
    assert events(run, "mr-2", columns=("code", "time")) == [("RxNorm/314076", ts("2020-03-04T15:20:00"))]
    assert run.description("RxNorm/314076") == "lisinopril 10 MG Oral Tablet"


def test_medication_request_with_bundle_internal_medication(tmp_path: Path) -> None:
    value = bundle(
        synthea_patient("pat-1"),
        medication("med-b", "197361", "amlodipine 5 MG Oral Tablet"),
        medication_request("mr-3", "urn:uuid:pat-1", medicationReference=ref("urn:uuid:med-b")),
    )
    run = ingest(write_json(tmp_path / "b.json", value), tmp_path / "out")
    assert events(run, "mr-3", columns=("code", "resource_type")) == [("RxNorm/197361", "MedicationRequest")]
    assert run.description("RxNorm/197361") == "amlodipine 5 MG Oral Tablet"
    assert run.summary.skipped == {"Medication": {"reference data": 1}}
    assert run.summary.written == {"MedicationRequest": 1, "Patient": 1}


def test_medication_request_referencing_medication_in_another_file(tmp_path: Path) -> None:
    write_ndjson(tmp_path / "in" / "Patient.ndjson", [synthea_patient()])
    write_ndjson(tmp_path / "in" / "MedicationRequest.ndjson", [
        medication_request("mr-4", "Patient/pat-1", medicationReference=ref("Medication/med-f")),
        medication_request("mr-5", "Patient/pat-1", medicationReference=ref("Medication/absent")),
    ])
    write_ndjson(tmp_path / "in" / "Medication.ndjson", [medication("med-f", "308136", "amLODIPine 2.5 MG")])
    run = ingest(tmp_path / "in", tmp_path / "out")
    assert events(run, "mr-4") == [("RxNorm/308136", ts("2020-03-04T15:20:00"), None, None, None, None)]
    assert run.description("RxNorm/308136") == "amLODIPine 2.5 MG"
    row = run.only_reject("unresolved medication")
    assert (row["location"], row["resource_type"], row["resource_id"]) == (
        "line 2", "MedicationRequest", "mr-5")
    assert row["detail"] == "medicationReference Medication/absent is not in the input"


def test_medication_statement_and_administration(tmp_path: Path) -> None:
    statement = {"resourceType": "MedicationStatement", "id": "ms-1", "status": "active",
                 "subject": ref("Patient/pat-1"), "effectivePeriod": {"start": "2019-02"},
                 "medicationCodeableConcept": concept(RXNORM, "860975")}
    admin = {"resourceType": "MedicationAdministration", "id": "ma-1", "status": "completed",
             "subject": ref("Patient/pat-1"), "context": ref("Encounter/enc-1"),
             "effectiveDateTime": "2020-03-04T10:25:00Z",
             "medicationCodeableConcept": concept(RXNORM, "1234")}
    run = ingest(write_ndjson(tmp_path / "x.ndjson", [synthea_patient(), encounter("enc-1", "Patient/pat-1"),
                                                      statement, admin]), tmp_path / "out")
    assert events(run, "ms-1", columns=("code", "time")) == [("RxNorm/860975", ts("2019-02-01T00:00:00"))]
    assert events(run, "ma-1", columns=("code", "time", "encounter_id")) == [
        ("RxNorm/1234", ts("2020-03-04T10:25:00"), "enc-1")]


# -- Immunization, AllergyIntolerance, Procedure, DiagnosticReport ---------------------------

def test_immunization(tmp_path: Path) -> None:
    imm = {"resourceType": "Immunization", "id": "imm-1", "status": "completed",
           "vaccineCode": concept(CVX, "140", "Influenza, seasonal, injectable, preservative free"),
           "patient": ref("Patient/pat-1"), "encounter": ref("Encounter/enc-1"),
           "occurrenceDateTime": "2020-03-04T10:00:00-05:00", "primarySource": True}
    run = ingest(write_ndjson(tmp_path / "x.ndjson",
                              [synthea_patient(), encounter("enc-1", "Patient/pat-1"), imm]),
                 tmp_path / "out")
    assert events(run, "imm-1") == [("CVX/140", ts("2020-03-04T15:00:00"), None, None, None, "enc-1")]
    assert run.description("CVX/140") == "Influenza, seasonal, injectable, preservative free"


def test_allergy_intolerance(tmp_path: Path) -> None:
    allergy = {"resourceType": "AllergyIntolerance", "id": "al-1", "type": "allergy", "category": ["food"],
               "criticality": "low",
               "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                         "active"),
               "code": concept(SNOMED, "300916003", "Latex allergy"), "patient": ref("Patient/pat-1"),
               "recordedDate": "1998-11-02T08:00:00+00:00"}
    run = ingest(write_ndjson(tmp_path / "x.ndjson", [synthea_patient(), allergy]), tmp_path / "out")
    assert events(run, "al-1") == [("SNOMED/300916003", ts("1998-11-02T08:00:00"), None, None, None, None)]


def test_allergy_entered_in_error_is_skipped_and_counted(tmp_path: Path) -> None:
    allergy = {"resourceType": "AllergyIntolerance", "id": "al-x", "patient": ref("Patient/pat-1"),
               "code": concept(SNOMED, "300916003"), "recordedDate": "1998-11-02",
               "verificationStatus": concept("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                                             "entered-in-error")}
    run = ingest(write_ndjson(tmp_path / "x.ndjson", [synthea_patient(), allergy]), tmp_path / "out")
    assert run.summary.skipped == {"AllergyIntolerance": {"entered-in-error": 1}}


def test_procedure_with_performed_period(tmp_path: Path) -> None:
    proc = {"resourceType": "Procedure", "id": "proc-1", "status": "completed",
            "code": concept(SNOMED, "430193006", "Medication Reconciliation (procedure)"),
            "subject": ref("Patient/pat-1"), "encounter": ref("Encounter/enc-1"),
            "performedPeriod": {"start": "2020-03-04T10:05:00-05:00", "end": "2020-03-04T10:20:00-05:00"}}
    proc_day = {"resourceType": "Procedure", "id": "proc-2", "status": "completed",
                "code": concept(SNOMED, "430193006"), "subject": ref("Patient/pat-1"),
                "performedPeriod": {"start": "2020-03-05"}}
    run = ingest(write_ndjson(tmp_path / "x.ndjson", [synthea_patient(), encounter("enc-1", "Patient/pat-1"),
                                                      proc, proc_day]), tmp_path / "out")
    assert events(run, "proc-1") == [
        ("SNOMED/430193006", ts("2020-03-04T15:05:00"), None, None, None, "enc-1")]
    assert events(run, "proc-2", columns=("time",)) == [(ts("2020-03-05T00:00:00"),)]


def test_diagnostic_report(tmp_path: Path) -> None:
    report = {"resourceType": "DiagnosticReport", "id": "dr-1", "status": "final",
              "code": concept(LOINC, "51990-0", "Basic metabolic panel - Blood"),
              "subject": ref("Patient/pat-1"), "encounter": ref("Encounter/enc-1"),
              "effectiveDateTime": "2020-03-04T10:15:00-05:00", "issued": "2020-03-04T10:15:00.123-05:00",
              "result": [ref("Observation/o1")], "conclusion": "Within normal limits."}
    run = ingest(write_ndjson(tmp_path / "x.ndjson", [synthea_patient(), encounter("enc-1", "Patient/pat-1"),
                                                      report]), tmp_path / "out")
    assert events(run, "dr-1") == [
        ("LOINC/51990-0", ts("2020-03-04T15:15:00"), None, "Within normal limits.", None, "enc-1")]
    assert run.description("LOINC/51990-0") == "Basic metabolic panel - Blood"


# -- ImagingStudy and DocumentReference ------------------------------------------------------

def test_imaging_study(tmp_path: Path) -> None:
    study = {
        "resourceType": "ImagingStudy", "id": "img-1", "status": "available",
        "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986",
                        "value": "urn:oid:1.2.840.99999999.1.1"}],
        "subject": ref("Patient/pat-1"), "encounter": ref("Encounter/enc-1"),
        "started": "2020-03-04T10:40:00-05:00", "numberOfSeries": 2, "numberOfInstances": 2,
        "series": [
            {"uid": "1.2.840.99999999.1.1.1", "number": 1,
             "modality": {"system": DCM, "code": "DX", "display": "Digital Radiography"},
             "bodySite": {"system": SNOMED, "code": "40983000", "display": "Upper arm"},
             "instance": [{"uid": "1.2.3", "sopClass": {"system": "urn:ietf:rfc:3986",
                                                        "code": "urn:oid:1.2.840.10008.5.1.4.1.1.1.1"}}]},
            {"uid": "1.2.840.99999999.1.1.2", "number": 2, "started": "2020-03-04T11:00:00Z",
             "modality": {"system": DCM, "code": "CT"},
             "bodySite": {"system": SNOMED, "code": "51185008", "display": "Thoracic structure"}},
        ],
    }
    run = ingest(write_ndjson(tmp_path / "x.ndjson", [synthea_patient(), encounter("enc-1", "Patient/pat-1"),
                                                      study]), tmp_path / "out")
    assert events(run, "img-1", columns=COLUMNS + ("resource_type",)) == [
        ("DCM/CT", ts("2020-03-04T11:00:00"), None, "SNOMED/51185008", None, "enc-1", "ImagingStudy"),
        ("DCM/DX", ts("2020-03-04T15:40:00"), None, "SNOMED/40983000", None, "enc-1", "ImagingStudy"),
    ]
    assert run.description("DCM/DX") == "Digital Radiography"
    assert run.description("SNOMED/40983000") == "Upper arm"
    assert run.summary.written == {"Encounter": 1, "ImagingStudy": 1, "Patient": 1}


def test_document_reference_note_text(tmp_path: Path) -> None:
    note = ("2020-03-04\n\n# Chief Complaint\nNo complaints.\n\n"
            "# History\nPatient is a 54 year-old café owner.")
    doc = {
        "resourceType": "DocumentReference", "id": "doc-1", "status": "current",
        "type": concept(LOINC, "34117-2", "History and physical note"),
        "category": [concept("http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                             "clinical-note")],
        "subject": ref("Patient/pat-1"), "date": "2020-03-04T10:00:00.000-05:00",
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8", "data": note_text_b64(note)},
                     "format": {"system": "http://ihe.net/fhir/ValueSet/IHE.FormatCode.codesystem",
                                "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient"}}],
        "context": {"encounter": [ref("Encounter/enc-1")],
                    "period": {"start": "2020-03-04T10:00:00-05:00", "end": "2020-03-04T10:30:00-05:00"}},
    }
    run = ingest(write_ndjson(tmp_path / "x.ndjson",
                              [synthea_patient(), encounter("enc-1", "Patient/pat-1"), doc]),
                 tmp_path / "out")
    assert events(run, "doc-1") == [("LOINC/34117-2", ts("2020-03-04T15:00:00"), None, note, None, "enc-1")]
    assert run.description("LOINC/34117-2") == "History and physical note"


def test_document_reference_with_invalid_base64_is_rejected(tmp_path: Path) -> None:
    doc = {"resourceType": "DocumentReference", "id": "doc-x", "status": "current",
           "subject": ref("Patient/p1"), "date": "2020-03-04T10:00:00Z", "type": concept(LOINC, "34117-2"),
           "content": [{"attachment": {"contentType": "text/plain", "data": "@@not base64@@"}}]}
    run = ingest(write_ndjson(tmp_path / "x.ndjson", [patient("p1"), doc]), tmp_path / "out")
    row = run.only_reject("invalid value")
    assert (row["resource_id"], row["detail"]) == (
        "doc-x", "DocumentReference.content[0].attachment.data is not valid base64")


# -- references, times, codes ----------------------------------------------------------------

def test_reference_forms_resolve_to_the_same_patient(tmp_path: Path) -> None:
    write_ndjson(tmp_path / "in" / "a.ndjson", [
        patient("p-ref"),
        observation("o-rel", "Patient/p-ref"),
        observation("o-abs", "https://fhir.example.org/r4/Patient/p-ref"),
        observation("o-hist", "Patient/p-ref/_history/3"),
    ])
    # In a Bundle, urn:uuid references name the entry's fullUrl, whose resource id differs.
    value = bundle(
        patient("p-bundle"), observation("o-urn", "urn:uuid:8c1b5a55-0000-4000-8000-000000000001"),
        full_urls=["urn:uuid:8c1b5a55-0000-4000-8000-000000000001",
                   "urn:uuid:8c1b5a55-0000-4000-8000-000000000002"],
    )
    value["type"] = "searchset"
    write_json(tmp_path / "in" / "b.json", value)
    # An absolute fullUrl in a transaction Bundle, referenced by that URL.
    server = bundle(
        patient("p-srv"), observation("o-srv", "http://server.example/fhir/Patient/p-srv"),
        kind="transaction",
        full_urls=["http://server.example/fhir/Patient/p-srv", "http://server.example/fhir/Observation/o-srv"],
    )
    write_json(tmp_path / "in" / "c.json", server)
    run = ingest(tmp_path / "in", tmp_path / "out")

    assert run.summary.rejected == {}
    subject_of = dict(zip(run.events["resource_id"].to_list(), run.events["subject_id"].to_list()))
    assert {k: subject_of[k] for k in ("o-rel", "o-abs", "o-hist")} == dict.fromkeys(
        ("o-rel", "o-abs", "o-hist"), sid("p-ref"))
    assert subject_of["o-urn"] == sid("p-bundle")
    assert subject_of["o-srv"] == sid("p-srv")
    assert sorted(run.subjects["fhir_patient_id"].to_list()) == ["p-bundle", "p-ref", "p-srv"]


def test_ndjson_line_holding_a_bundle(tmp_path: Path) -> None:
    line = bundle(patient("p1"), observation("o1", "urn:uuid:p1"), observation("o2", "urn:uuid:ghost"))
    src = write_ndjson(tmp_path / "x.ndjson", [observation("o0", "Patient/p1"), line])
    run = ingest(src, tmp_path / "out")
    assert run.summary.written == {"Observation": 2, "Patient": 1}
    row = run.only_reject("unknown patient")
    assert (row["location"], row["resource_id"]) == ("line 2, Bundle entry 2", "o2")


def test_times_normalized_to_utc_and_far_future_kept(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "x.ndjson", [
        patient("p1", birth="1901-02-03"),
        observation("o-plus", effective="2020-01-01T01:30:00+05:30"),
        observation("o-minus", effective="2019-12-31T20:00:00-08:00"),
        observation("o-z", effective="2020-06-15T12:00:00.123456789Z"),
        observation("o-future", effective="2150-06-01T08:00:00+02:00"),
        observation("o-naive", effective="2020-06-15T12:00:00"),
    ])
    run = ingest(src, tmp_path / "out")
    times = {r["resource_id"]: r["time"]
             for r in run.events.filter(pl.col("resource_type") == "Observation").to_dicts()}
    assert times == {
        "o-plus": ts("2019-12-31T20:00:00"),
        "o-minus": ts("2020-01-01T04:00:00"),
        "o-z": ts("2020-06-15T12:00:00.123456"),
        "o-future": ts("2150-06-01T06:00:00"),
        "o-naive": ts("2020-06-15T12:00:00"),
    }
    assert ("MEDS_BIRTH", ts("1901-02-03T00:00:00")) in events(run, "p1", columns=("code", "time"))


def test_codes_vocab_prefixes_including_unknown_system(tmp_path: Path) -> None:
    local = {"coding": [{"system": "http://example.org/fhir/CodeSystem/local-labs", "code": "K1",
                         "display": "Local potassium"}]}
    icd_and_snomed = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"},
                                 {"system": SNOMED, "code": "44054006", "display": "Diabetes"}]}
    icd_only = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9",
                            "display": "T2DM"}]}
    text_only = {"text": "Feels dizzy"}
    src = write_ndjson(tmp_path / "x.ndjson", [
        patient("p1"),
        observation("o-local", code="x", value=3.9, unit="mmol/L") | {"code": local},
        condition("c-both", code="x") | {"code": icd_and_snomed, "onsetDateTime": "2020-01-01T00:00:00Z"},
        condition("c-icd", code="x") | {"code": icd_only, "onsetDateTime": "2020-01-01T00:00:00Z"},
        condition("c-text", code="x") | {"code": text_only, "onsetDateTime": "2020-01-01T00:00:00Z"},
    ])
    run = ingest(src, tmp_path / "out")
    code_of = dict(zip(run.events["resource_id"].to_list(), run.events["code"].to_list()))
    assert code_of["o-local"] == "example.org_fhir_CodeSystem_local-labs~70a59b/K1"
    assert code_of["c-both"] == "SNOMED/44054006"
    assert code_of["c-icd"] == "ICD10CM/E11.9"
    assert code_of["c-text"] == "TEXT/Feels dizzy"
    assert run.description("example.org_fhir_CodeSystem_local-labs~70a59b/K1") == "Local potassium"
    assert run.description("ICD10CM/E11.9") == "T2DM"


def test_output_layout_shards_and_splits(tmp_path: Path) -> None:
    ids = [f"pt-{i:03d}" for i in range(40)]
    resources = []
    for pid in ids:
        resources += [patient(pid), encounter(f"e-{pid}", f"Patient/{pid}"),
                      observation(f"o-{pid}", f"Patient/{pid}")]
    src = write_ndjson(tmp_path / "x.ndjson", resources)
    run = ingest(src, tmp_path / "out", num_shards=4,
                 split_ratios={"train": 0.5, "tuning": 0.25, "held_out": 0.25})
    # four patient shards, each written into the split folders it has subjects of, numbered from 0
    # in each folder (a split without subjects in a shard gets no file, and no gap in the numbers)
    folders = {p.relative_to(run.output).parent.as_posix() for p in run.shards}
    assert folders == {"data/held_out", "data/train", "data/tuning"}
    assert [p.name for p in run.shards if p.parent.name == "train"] == [f"{n}.parquet" for n in range(4)]
    assert 3 * 1 <= run.summary.shards == len(run.shards) <= 3 * 4 and run.summary.subjects == 40
    assert run.events.height == 40 * (2 + 3 + 1)
    assert sorted(run.splits["subject_id"].to_list()) == sorted(sid(p) for p in ids)
    assert set(run.splits["split"].to_list()) <= {"train", "tuning", "held_out"}
    again = ingest(src, tmp_path / "out2", num_shards=4,
                   split_ratios={"train": 0.5, "tuning": 0.25, "held_out": 0.25}, workers=2)
    assert again.splits.equals(run.splits)
    assert again.events.equals(run.events)
    for shard in run.shards:  # subject_id % 64 buckets go to patient shard bucket % 4, one per file
        subjects = pl.read_parquet(shard)["subject_id"].unique().to_list()
        assert len({s % 64 % 4 for s in subjects}) == 1
