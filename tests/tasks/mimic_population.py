"""A seeded MIMIC-IV-on-FHIR-shaped population with admissions, ED visits, diagnoses and deaths.

The shapes follow the MIMIC-IV FHIR export (kind-lab/mimic-fhir): one ndjson file per profile;
Encounter.class in HL7 v3 ActCode as MIMIC writes it (hospital admissions ACUTE, emergency EMER,
observation OBSENC, short stay SS, ambulatory AMB; ED stays in their own MimicEncounterED file);
Conditions carry ICD-9-CM or ICD-10-CM codes without their dots, under MIMIC's own code-system
URIs, and no time of their own (ingest takes their encounter's start, an Encounter in another
file); dates are shifted into the 22nd century as MIMIC's are. ``encounters`` and ``conditions``
of the returned :class:`Population` are the ground truth the label tests recompute from.
Imported by the tests in this folder (not a test module itself).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

CS = "http://mimic.mit.edu/fhir/mimic/CodeSystem"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PATIENT_ID_SYSTEM = "http://mimic.mit.edu/fhir/mimic/identifier/patient"
UTC = dt.timezone.utc

# Diagnoses as MIMIC writes them (no dots) and the MEDS code ingest must make of each.
DIAGNOSES = {
    "prediabetes_icd10": ("mimic-diagnosis-icd10", "R7303", "ICD10CM/R73.03"),
    "prediabetes_icd9": ("mimic-diagnosis-icd9", "79029", "ICD9CM/790.29"),
    "t2d_icd10": ("mimic-diagnosis-icd10", "E119", "ICD10CM/E11.9"),
    "t2d_icd9": ("mimic-diagnosis-icd9", "25000", "ICD9CM/250.00"),
    "hypertension_icd9": ("mimic-diagnosis-icd9", "4019", "ICD9CM/401.9"),
    "anemia_icd9": ("mimic-diagnosis-icd9", "2859", "ICD9CM/285.9"),
}


@dataclass
class Encounter:
    id: str
    patient: str
    klass: str
    start: dt.datetime
    end: dt.datetime


@dataclass
class Population:
    folder: Path
    patients: dict[str, dt.date] = field(default_factory=dict)        # id -> birth date
    subject_ids: dict[str, int] = field(default_factory=dict)         # id -> MIMIC subject_id identifier
    deaths: dict[str, dt.datetime] = field(default_factory=dict)      # id -> death time
    encounters: list[Encounter] = field(default_factory=list)
    conditions: list[tuple[str, str, dt.datetime]] = field(default_factory=list)  # patient, MEDS code, time

    def patient_of_subject(self) -> dict[int, str]:
        """subject_id (ingested with ``subject_id_system=PATIENT_ID_SYSTEM``) -> FHIR Patient id."""
        return {subject: pid for pid, subject in self.subject_ids.items()}


def _iso(time: dt.datetime) -> str:
    return time.astimezone(dt.timezone(dt.timedelta(hours=-4))).isoformat()


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def write_mimic_population(folder: Path, n_patients: int = 60, seed: int = 7) -> Population:
    """Write the population under ``folder`` and return its ground truth."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    population = Population(folder)
    patients, hospital, emergency, conditions = [], [], [], []
    for i in range(n_patients):
        pid = f"5a1c0000-0000-5000-8000-{i:012d}"
        birth = dt.date(2090 + rng.randrange(40), 1 + rng.randrange(12), 1 + rng.randrange(28))
        population.patients[pid] = birth
        population.subject_ids[pid] = 10_000_000 + i
        time = dt.datetime(2170 + rng.randrange(10), 1 + rng.randrange(12), 1 + rng.randrange(28), 8, tzinfo=UTC)
        # Visit mix: mostly ambulatory, then ED, admissions, observation and short stays.
        for j in range(rng.randint(4, 14)):
            klass = rng.choices(["AMB", "EMER", "ACUTE", "OBSENC", "SS"], [45, 20, 20, 8, 7])[0]
            length = {"AMB": dt.timedelta(hours=1), "EMER": dt.timedelta(hours=6),
                      "ACUTE": dt.timedelta(days=rng.randint(2, 9)), "OBSENC": dt.timedelta(hours=20),
                      "SS": dt.timedelta(hours=12)}[klass]
            encounter = Encounter(f"enc-{i}-{j}", pid, klass, time, time + length)
            population.encounters.append(encounter)
            row = {"resourceType": "Encounter", "id": encounter.id, "status": "finished",
                   "class": {"system": ACT_CODE, "code": klass},
                   "subject": {"reference": f"Patient/{pid}"},
                   "period": {"start": _iso(encounter.start), "end": _iso(encounter.end)}}
            (emergency if klass == "EMER" else hospital).append(row)
            if klass in ("AMB", "ACUTE") and rng.random() < 0.35:
                name = rng.choice(list(DIAGNOSES))
                system, code, meds_code = DIAGNOSES[name]
                conditions.append({"resourceType": "Condition", "id": f"cond-{i}-{j}",
                                   "subject": {"reference": f"Patient/{pid}"},
                                   "encounter": {"reference": f"Encounter/{encounter.id}"},
                                   "code": {"coding": [{"system": f"{CS}/{system}", "code": code}]}})
                population.conditions.append((pid, meds_code, encounter.start))
            time = encounter.end + dt.timedelta(days=rng.randint(20, 400))
        patient = {"resourceType": "Patient", "id": pid, "gender": rng.choice(["female", "male"]),
                   "birthDate": birth.isoformat(),
                   "identifier": [{"system": PATIENT_ID_SYSTEM, "value": str(population.subject_ids[pid])}]}
        if rng.random() < 0.3:  # death some months after the last encounter ended
            death = population.encounters[-1].end + dt.timedelta(days=rng.randint(5, 300))
            population.deaths[pid] = death
            patient["deceasedDateTime"] = _iso(death)
        patients.append(patient)
    _write(folder / "MimicPatient.ndjson", patients)
    _write(folder / "MimicEncounter.ndjson", hospital)
    _write(folder / "MimicEncounterED.ndjson", emergency)
    _write(folder / "MimicCondition.ndjson", conditions)
    return population
