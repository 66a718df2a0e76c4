"""A small MIMIC-IV-on-FHIR-shaped export, built in code: one ndjson file per profile, as MIMIC ships.

The systems, resource shapes and file names follow the MIMIC-IV FHIR export (kind-lab/mimic-fhir):
ICD codes without their dots, NDC drugs whose name sits in an identifier, a "medication mix"
(a Medication with no code, only ``ingredient.itemReference``s) in its own file, chartevents
with numeric strings, datetimeevents with valueDateTime, Patient identifiers carrying the MIMIC
subject_id. Imported by the tests in this folder (not a test module itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fhir_builders import ref, write_ndjson

CS = "http://mimic.mit.edu/fhir/mimic/CodeSystem"
PATIENT_ID_SYSTEM = "http://mimic.mit.edu/fhir/mimic/identifier/patient"
NAME_ID_SYSTEM = "http://mimic.mit.edu/fhir/mimic/identifier/mimic-medication-name"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

# Every MedicationRequest of the fixture and what must become of it.
REQUEST_OUTCOMES = {
    "mr-ndc": ["NDC/51079030020"],                    # Medication in another file
    "mr-mix": ["NDC/00338004904", "NDC/00409672924"],  # medication mix: one event per ingredient
    "mr-rx": ["RxNorm/313782"],                        # Medication with NDC and RxNorm codings
    "mr-missing": "unresolved medication",             # Medication not in the input
    "mr-bad-mix": "no code",                           # a mix whose ingredient is not in the input
}


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"system": system, "code": code}
    if display is not None:
        found["display"] = display
    return found


def mimic_patient(pid: str, subject_id: str | int) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "2110-01-01",
            "identifier": [{"system": PATIENT_ID_SYSTEM, "value": str(subject_id)}]}


def _med_request(rid: str, patient: str, medication: str) -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": rid, "status": "completed", "intent": "order",
            "subject": ref(f"Patient/{patient}"), "authoredOn": "2180-07-23T10:00:00-04:00",
            "medicationReference": ref(f"Medication/{medication}")}


def _observation(oid: str, patient: str, system: str, code: str, display: str, **value: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": ref(f"Patient/{patient}"),
            "effectiveDateTime": "2180-07-23T12:00:00-04:00",
            "code": {"coding": [coding(f"{CS}/{system}", code, display)]}, **value}


def write_mimic_export(folder: Path) -> Path:
    """Write the export under ``folder`` (one ``Mimic*.ndjson`` per profile); return the folder."""
    pid, other = "8a1b9c63-0e1f-5c5a-9b1a-000000000001", "8a1b9c63-0e1f-5c5a-9b1a-000000000002"
    write_ndjson(folder / "MimicPatient.ndjson", [mimic_patient(pid, 10000032), mimic_patient(other, 10000033)])
    write_ndjson(folder / "MimicCondition.ndjson", [
        {"resourceType": "Condition", "id": "cond-10", "subject": ref(f"Patient/{pid}"),
         "recordedDate": "2180-07-23T00:00:00-04:00",
         "code": {"coding": [coding(f"{CS}/mimic-diagnosis-icd10", "I6201",
                                    "Nontraumatic subarachnoid hemorrhage from right carotid siphon")]}},
        {"resourceType": "Condition", "id": "cond-9", "subject": ref(f"Patient/{pid}"),
         "recordedDate": "2180-07-23T00:00:00-04:00",
         "code": {"coding": [coding(f"{CS}/mimic-diagnosis-icd9", "2859", "Anemia, unspecified")]}},
        {"resourceType": "Condition", "id": "cond-e", "subject": ref(f"Patient/{other}"),
         "recordedDate": "2180-07-23T00:00:00-04:00",
         "code": {"coding": [coding(f"{CS}/mimic-diagnosis-icd9", "E8889", "Fall NOS")]}},
    ])
    write_ndjson(folder / "MimicProcedure.ndjson", [
        {"resourceType": "Procedure", "id": "proc-9", "status": "completed", "subject": ref(f"Patient/{pid}"),
         "performedDateTime": "2180-07-24T00:00:00-04:00",
         "code": {"coding": [coding(f"{CS}/mimic-procedure-icd9", "9671",
                                    "Continuous invasive mechanical ventilation for less than 96 consecutive hours")]}},
        {"resourceType": "Procedure", "id": "proc-10", "status": "completed", "subject": ref(f"Patient/{pid}"),
         "performedDateTime": "2180-07-24T00:00:00-04:00",
         "code": {"coding": [coding(f"{CS}/mimic-procedure-icd10", "0DB64Z3")]}},
    ])
    write_ndjson(folder / "MimicMedication.ndjson", [
        {"resourceType": "Medication", "id": "med-clonidine",
         "code": {"coding": [coding(f"{CS}/mimic-medication-ndc", "51079030020")]},
         "identifier": [{"system": NAME_ID_SYSTEM, "value": "CloniDINE"}]},
        {"resourceType": "Medication", "id": "med-nacl",
         "code": {"coding": [coding(f"{CS}/mimic-medication-ndc", "00338004904")]},
         "identifier": [{"system": NAME_ID_SYSTEM, "value": "Sodium Chloride 0.9%"}]},
        {"resourceType": "Medication", "id": "med-calcium",
         "code": {"coding": [coding(f"{CS}/mimic-medication-ndc", "00409672924")]},
         "identifier": [{"system": NAME_ID_SYSTEM, "value": "Calcium Gluconate"}]},
        {"resourceType": "Medication", "id": "med-apap",
         "code": {"coding": [coding("http://hl7.org/fhir/sid/ndc", "00904198261"),
                             coding(RXNORM, "313782", "Acetaminophen 325 MG Oral Tablet")]}},
    ])
    # MIMIC ships the mixes in a file of their own, apart from the Medications they list.
    write_ndjson(folder / "MimicMedicationMix.ndjson", [
        {"resourceType": "Medication", "id": "mix-1",
         "ingredient": [{"itemReference": ref("Medication/med-nacl")},
                        {"itemReference": ref("Medication/med-calcium")}]},
        {"resourceType": "Medication", "id": "mix-bad",
         "ingredient": [{"itemReference": ref("Medication/med-nacl")},
                        {"itemReference": ref("Medication/med-gone")}]},
    ])
    write_ndjson(folder / "MimicMedicationRequest.ndjson", [
        _med_request("mr-ndc", pid, "med-clonidine"),
        _med_request("mr-mix", pid, "mix-1"),
        _med_request("mr-rx", other, "med-apap"),
        _med_request("mr-missing", other, "med-nowhere"),
        _med_request("mr-bad-mix", other, "mix-bad"),
    ])
    write_ndjson(folder / "MimicObservationChartevents.ndjson", [
        _observation("pain-3", pid, "mimic-chartevents-d-items", "223791", "Pain Level", valueString="3"),
        _observation("pain-x", pid, "mimic-chartevents-d-items", "223791", "Pain Level",
                     valueString="Unable to score"),
        _observation("hr", pid, "mimic-chartevents-d-items", "220045", "Heart Rate",
                     valueQuantity={"value": 88.0, "unit": "bpm"}),
        _observation("str-time", pid, "mimic-chartevents-d-items", "224187", "Last dose time",
                     valueString="2180-07-23T08:30:00"),
    ])
    write_ndjson(folder / "MimicObservationDatetimeevents.ndjson", [
        _observation("dt", pid, "mimic-datetimeevents-d-items", "225755", "18 Gauge Insertion Date",
                     valueDateTime="2180-07-22T14:00:00-04:00"),
    ])
    write_ndjson(folder / "MimicObservationLabevents.ndjson", [
        _observation("lab", pid, "mimic-d-labitems", "50912", "Creatinine",
                     valueQuantity={"value": 1.1, "unit": "mg/dL"}),
    ])
    return folder
