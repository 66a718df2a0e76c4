"""A small deterministic generator of synthetic FHIR R4 patients, for demos and tests.

The patients are invented (no real person, no copied data set): a birth, chronic conditions
that appear with age, yearly check-ups with vital signs and labs, emergency and inpatient stays,
prescriptions, vaccines, a few imaging studies and clinical notes, and deaths in the old and
sick. Half the patients are written as transaction Bundles (``bundles/*.json``), the rest as Bulk
FHIR ndjson with one file per resource type (``bulk/*.ndjson``), so both readers are exercised.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> paths = write_synthetic_fhir(out, n_patients=4, seed=1)
>>> sorted(p.parent.name for p in paths)[:1]
['bulk']
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .fhir_parts import ACT, CVX, LOINC, RXNORM, SNOMED, UCUM, bundle_references, coding

GENERATOR_VERSION = 1  # bump when the output changes, so caches regenerate


# (SNOMED code, display, yearly onset hazard from age 40, RxNorm treatment, display)
CHRONIC = [
    ("38341003", "Hypertension", 0.025, "314076", "lisinopril 10 MG Oral Tablet"),
    ("44054006", "Diabetes mellitus type 2", 0.012, "860975", "metformin 500 MG Oral Tablet"),
    ("55822004", "Hyperlipidemia", 0.02, "259255", "atorvastatin 80 MG Oral Tablet"),
    ("431855005", "Chronic kidney disease stage 1", 0.006, None, None),
    ("195967001", "Asthma", 0.004, "895994", "fluticasone 0.044 MG/ACTUAT Inhaler"),
]
ACUTE = [
    ("10509002", "Acute bronchitis", "EMER"),
    ("444814009", "Viral sinusitis", "AMB"),
    ("195662009", "Acute viral pharyngitis", "AMB"),
    ("22298006", "Myocardial infarction", "IMP"),
    ("233604007", "Pneumonia", "IMP"),
    ("62106007", "Concussion", "EMER"),
]
VACCINES = [("140", "Influenza, seasonal, injectable, preservative free"), ("113", "Td (adult)"),
            ("08", "Hep B, adolescent or pediatric"), ("133", "Pneumococcal conjugate PCV 13")]


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


class _Patient:
    def __init__(self, rng: random.Random, index: int, end: datetime) -> None:
        self.rng = rng
        self.id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.gender = rng.choice(["female", "male"])
        self.birth = datetime(1935, 1, 1, tzinfo=timezone.utc) + timedelta(days=rng.randrange(0, 80 * 365))
        self.end = end
        self.resources: list[dict[str, Any]] = []
        self.index = index

    def ref(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.id}"}

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.resources.append(resource)
        return resource


def _generate_patient(rng: random.Random, index: int, end: datetime) -> list[dict[str, Any]]:
    p = _Patient(rng, index, end)
    patient: dict[str, Any] = {
        "resourceType": "Patient", "id": p.id, "gender": p.gender, "birthDate": p.birth.date().isoformat(),
        "extension": [{
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
            "extension": [{"url": "ombCategory", "valueCoding": rng.choice([
                {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3", "display": "White"},
                {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2054-5",
                 "display": "Black or African American"},
                {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2028-9", "display": "Asian"}])}],
        }],
        "name": [{"family": f"Example{index:03d}", "given": ["Synthetic"]}],
    }
    p.add(patient)
    conditions: list[tuple[str, str, str | None, str | None]] = []
    frailty = rng.random()
    moment = p.birth + timedelta(days=rng.randrange(30, 400))
    death: datetime | None = None
    while moment < end:
        age = (moment - p.birth).days / 365.25
        for code, display, hazard, rx, rx_display in CHRONIC:
            if age > 40 and all(c[0] != code for c in conditions) and rng.random() < hazard * (1 + frailty):
                conditions.append((code, display, rx, rx_display))
                _visit(p, moment, "AMB", ("185347001", "Encounter for problem"), [(code, display)],
                       [(rx, rx_display)])
        _visit(p, moment, "AMB", ("185349003", "Encounter for check up"), [], [], checkup=True,
               chronic=[c[0] for c in conditions])
        if rng.random() < 0.35 + 0.1 * len(conditions):
            code, display, klass = rng.choice(ACUTE)
            when = moment + timedelta(days=rng.randrange(10, 300))
            if when < end:
                _visit(p, when, klass,
                       ("50849002" if klass == "EMER" else "32485007" if klass == "IMP" else "185345009",
                        {"EMER": "Emergency room admission", "IMP": "Hospital admission",
                         "AMB": "Encounter for symptom"}[klass]), [(code, display)], [])
                if klass == "IMP" and rng.random() < 0.3:  # readmission
                    again = when + timedelta(days=rng.randrange(5, 40))
                    if again < end:
                        _visit(p, again, "IMP", ("32485007", "Hospital admission"), [(code, display)], [])
        risk = 0.002 + 0.0009 * max(0.0, age - 55) * (1 + len(conditions)) * (0.5 + frailty)
        if age > 50 and rng.random() < risk:
            death = moment + timedelta(days=rng.randrange(20, 200))
            break
        moment += timedelta(days=rng.randrange(300, 430))
    if death is not None and death < end:
        patient["deceasedDateTime"] = _instant(death)
    return p.resources


def _visit(p: _Patient, start: datetime, klass: str, kind: tuple[str, str], diagnoses: list[tuple[str, str]],
           prescriptions: list[tuple[str | None, str | None]], *, checkup: bool = False,
           chronic: list[str] | None = None) -> None:
    rng = p.rng
    start = start.replace(hour=rng.randrange(7, 18), minute=rng.randrange(60), second=0, microsecond=0)
    stay = (timedelta(days=rng.randrange(1, 12)) if klass == "IMP"
            else timedelta(minutes=rng.randrange(15, 240)))
    encounter_id = p.new_id()
    p.add({
        "resourceType": "Encounter", "id": encounter_id, "status": "finished",
        "class": {"system": ACT, "code": klass}, "type": [coding(SNOMED, kind[0], kind[1])],
        "subject": p.ref(), "period": {"start": _instant(start), "end": _instant(start + stay)},
    })
    enc = {"reference": f"Encounter/{encounter_id}"}
    for code, display in diagnoses:
        p.add({"resourceType": "Condition", "id": p.new_id(), "subject": p.ref(), "encounter": enc,
               "clinicalStatus": coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active",
                                         "Active"),
               "code": coding(SNOMED, code, display), "onsetDateTime": _instant(start)})
    for rx, rx_display in prescriptions:
        if rx:
            p.add({"resourceType": "MedicationRequest", "id": p.new_id(), "status": "active",
                   "intent": "order", "subject": p.ref(), "encounter": enc, "authoredOn": _instant(start),
                   "medicationCodeableConcept": coding(RXNORM, rx, rx_display)})
    if checkup:
        age = (start - p.birth).days / 365.25
        sick = len(chronic or [])
        systolic = 105 + 0.5 * age + 8 * ("38341003" in (chronic or [])) + rng.gauss(0, 8)
        vitals = [("8302-2", "Body Height", min(175.0, 50 + age * 7) + rng.gauss(0, 3), "cm"),
                  ("29463-7", "Body Weight", min(85.0, 3 + age * 3) + rng.gauss(0, 4), "kg"),
                  ("8867-4", "Heart rate", 72 + rng.gauss(0, 8), "/min")]
        for code, display, value, unit in vitals:
            _observation(p, start, enc, code, display, round(value, 1), unit, "vital-signs")
        p.add({"resourceType": "Observation", "id": p.new_id(), "status": "final", "subject": p.ref(),
               "encounter": enc, "code": coding(LOINC, "85354-9", "Blood pressure panel"),
               "effectiveDateTime": _instant(start),
               "component": [
                   {"code": coding(LOINC, "8480-6", "Systolic blood pressure"),
                    "valueQuantity": {"value": round(systolic, 1), "unit": "mm[Hg]", "system": UCUM,
                                      "code": "mm[Hg]"}},
                   {"code": coding(LOINC, "8462-4", "Diastolic blood pressure"),
                    "valueQuantity": {"value": round(systolic * 0.62 + rng.gauss(0, 5), 1), "unit": "mm[Hg]",
                                      "system": UCUM, "code": "mm[Hg]"}}]})
        if age > 18:
            glucose = 90 + 45 * ("44054006" in (chronic or [])) + rng.gauss(0, 12)
            _observation(p, start, enc, "2339-0", "Glucose", round(glucose, 1), "mg/dL", "laboratory")
            _observation(p, start, enc, "2160-0", "Creatinine", round(0.8 + 0.4 * sick * rng.random(), 2),
                         "mg/dL", "laboratory")
            p.add({"resourceType": "Observation", "id": p.new_id(), "status": "final", "subject": p.ref(),
                   "encounter": enc, "code": coding(LOINC, "72166-2", "Tobacco smoking status"),
                   "effectiveDateTime": _instant(start),
                   "valueCodeableConcept": coding(SNOMED, *rng.choice([("266919005", "Never smoker"),
                                                                         ("8517006", "Ex-smoker"),
                                                                         ("77176002", "Smoker")]))})
        if rng.random() < 0.5:
            code, display = rng.choice(VACCINES)
            p.add({"resourceType": "Immunization", "id": p.new_id(), "status": "completed",
                   "patient": p.ref(), "encounter": enc, "occurrenceDateTime": _instant(start),
                   "vaccineCode": coding(CVX, code, display)})
        if rng.random() < 0.15:
            p.add({"resourceType": "Procedure", "id": p.new_id(), "status": "completed", "subject": p.ref(),
                   "encounter": enc, "code": coding(SNOMED, "430193006", "Medication reconciliation"),
                   "performedPeriod": {"start": _instant(start),
                                       "end": _instant(start + timedelta(minutes=15))}})
    if klass in ("EMER", "IMP") and rng.random() < 0.4:
        p.add({"resourceType": "ImagingStudy", "id": p.new_id(), "status": "available", "subject": p.ref(),
               "encounter": enc, "started": _instant(start),
               "series": [{"uid": f"1.2.826.0.1.3680043.8.498.{rng.randrange(10**9)}", "number": 1,
                           "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                        "code": "CR", "display": "Computed Radiography"},
                           "bodySite": {"system": SNOMED, "code": "51185008", "display": "Chest"}}]})
    if klass != "AMB" or diagnoses:
        words = ", ".join(d for _, d in diagnoses) or "routine follow-up"
        text = (f"{start.date()}\n\n# Chief Complaint\n{words}\n\n# Assessment and Plan\n"
                f"Patient seen in {klass} setting for {words}. Plan discussed with the patient.\n")
        p.add({"resourceType": "DocumentReference", "id": p.new_id(), "status": "current", "subject": p.ref(),
               "type": coding(LOINC, "34117-2", "History and physical note"), "date": _instant(start),
               "context": {"encounter": [enc]},
               "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                           "data": base64.b64encode(text.encode()).decode()}}]})


def _observation(p: _Patient, start: datetime, enc: dict[str, str], code: str, display: str, value: float,
                 unit: str, category: str) -> None:
    p.add({"resourceType": "Observation", "id": p.new_id(), "status": "final", "subject": p.ref(),
           "encounter": enc,
           "category": [coding("http://terminology.hl7.org/CodeSystem/observation-category", category,
                                category)],
           "code": coding(LOINC, code, display), "effectiveDateTime": _instant(start),
           "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}})


def write_synthetic_fhir(output: str | Path, *, n_patients: int = 40, seed: int = 7,
                         end: datetime = datetime(2024, 1, 1, tzinfo=timezone.utc)) -> list[Path]:
    """Write ``n_patients`` synthetic patients under ``output``; return the files written.

    Same arguments, same bytes: the generator uses only its own seeded random source.
    """
    rng = random.Random(seed)
    output = Path(output)
    bundles_dir, bulk_dir = output / "bundles", output / "bulk"
    bundles_dir.mkdir(parents=True, exist_ok=True)
    bulk_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    by_type: dict[str, list[dict[str, Any]]] = {}
    for index in range(n_patients):
        resources = _generate_patient(rng, index, end)
        if index % 2 == 0:
            entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": bundle_references(r),
                        "request": {"method": "POST", "url": r["resourceType"]}} for r in resources]
            path = bundles_dir / f"patient_{index:03d}.json"
            path.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries},
                                       separators=(",", ":")) + "\n")
            written.append(path)
        else:
            for resource in resources:
                by_type.setdefault(resource["resourceType"], []).append(resource)
    for resource_type, resources in sorted(by_type.items()):
        path = bulk_dir / f"{resource_type}.000.ndjson"
        path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in resources))
        written.append(path)
    return written
