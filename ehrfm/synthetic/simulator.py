"""A seeded patient simulator: FHIR R4 histories drawn from planted, known dynamics.

Each patient's adult history (from age 18 or 2000-01-01, whichever is later, to 2024-01-01 or
death) is simulated in 30-day steps. In every step the rates of :mod:`ehrfm.synthetic.dynamics`
decide new diagnoses, emergency visits (a quarter end in an admission), inpatient admissions
and death; yearly check-ups and half-yearly follow-ups of chronic patients record vitals and
labs (the latent HbA1c and creatinine plus noise), prescriptions follow diagnoses and lower what
they treat, and inpatient stays last longer for sicker patients. Codes are real: SNOMED CT,
LOINC with UCUM units, RxNorm, CVX, HL7 ActCode encounter classes.

Patient ``i`` of seed ``s`` is drawn from its own random source (seeded with ``"s:i"``), so a
population is the same whatever the number of workers or the order they write in.

>>> patient = simulate_patient(seed=0, index=3)
>>> patient.resources[0]["resourceType"], patient.resources[0]["id"] == patient.patient_id
('Patient', True)
>>> sorted({r["resourceType"] for r in patient.resources})[:3]
['Condition', 'Encounter', 'Immunization']
>>> simulate_patient(seed=0, index=3).resources == patient.resources   # deterministic
True
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import random
from dataclasses import dataclass
from typing import Any

from .dynamics import ADMITTED_FROM_EMERGENCY, CHRONIC, Truth, creatinine, hba1c, rates
from .fhir_parts import ACT, CVX, LOINC, RXNORM, SNOMED, UCUM, coding

__all__ = ["HISTORY_END", "SimulatedPatient", "SUBJECT_SYSTEM", "simulate_patient"]

HISTORY_END = dt.datetime(2024, 1, 1)
HISTORY_FLOOR = dt.datetime(2000, 1, 1)
STEP = dt.timedelta(days=30)
SUBJECT_SYSTEM = "urn:ehrfm:synthetic:subject"  # Patient.identifier: the patient's index, as a subject id

OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"

# condition -> (SNOMED code, display, drug key or None)
DIAGNOSIS_CODES = {
    "hypertension": ("59621000", "Essential hypertension", "lisinopril"),
    "hyperlipidemia": ("55822004", "Hyperlipidemia", "atorvastatin"),
    "prediabetes": ("15777000", "Prediabetes", None),
    "type_2_diabetes": ("44054006", "Diabetes mellitus type 2", "metformin"),
    "chronic_kidney_disease": ("709044004", "Chronic kidney disease", None),
    "heart_failure": ("84114007", "Heart failure", "furosemide"),
    "copd": ("13645005", "Chronic obstructive lung disease", "albuterol"),
}
DRUGS = {  # drug key -> (RxNorm code, display)
    "lisinopril": ("314076", "lisinopril 10 MG Oral Tablet"),
    "atorvastatin": ("259255", "atorvastatin 80 MG Oral Tablet"),
    "metformin": ("860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet"),
    "furosemide": ("310429", "furosemide 20 MG Oral Tablet"),
    "albuterol": ("745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"),
}
ACUTE = [("10509002", "Acute bronchitis"), ("233604007", "Pneumonia"), ("62106007", "Concussion"),
         ("22298006", "Myocardial infarction"), ("195662009", "Acute viral pharyngitis")]
VACCINES = [("140", "Influenza, seasonal, injectable, preservative free"), ("113", "Td (adult)"),
            ("133", "Pneumococcal conjugate PCV 13")]
SMOKING = {True: ("77176002", "Smoker"), False: ("266919005", "Never smoker")}


@dataclass
class SimulatedPatient:
    """One simulated patient: FHIR resources (Patient first) and the ground truth behind them."""

    index: int
    patient_id: str
    resources: list[dict[str, Any]]
    truth: Truth


def _instant(moment: dt.datetime) -> str:
    return moment.replace(tzinfo=dt.timezone.utc).isoformat(timespec="seconds")


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


class _Writer:
    """Builds one patient's resources: ids from the patient's own random source."""

    def __init__(self, rng: random.Random, truth: Truth, notes: bool, imaging: bool) -> None:
        self.rng, self.truth, self.notes, self.imaging = rng, truth, notes, imaging
        self.resources: list[dict[str, Any]] = []
        self.patient_id = self.new_id()
        self.latest = truth.birth  # the end of the latest encounter written

    def new_id(self) -> str:
        """A version-4 UUID from the patient's random source (formatted by hand: uuid.UUID is slow)."""
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.patient_id}"}

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.resources.append(resource)
        return resource

    def encounter(self, klass: str, kind: tuple[str, str], start: dt.datetime, end: dt.datetime,
                  reason: tuple[str, str] | None = None) -> dict[str, str]:
        resource: dict[str, Any] = {
            "resourceType": "Encounter", "id": self.new_id(), "status": "finished",
            "class": {"system": ACT, "code": klass}, "type": [coding(SNOMED, *kind)],
            "subject": self.subject(), "period": {"start": _instant(start), "end": _instant(end)}}
        self.latest = max(self.latest, end)
        if reason:
            resource["reasonCode"] = [coding(SNOMED, *reason)]
        self.add(resource)
        return {"reference": f"Encounter/{resource['id']}"}

    def condition(self, enc: dict[str, str], code: str, display: str, when: dt.datetime) -> None:
        self.add({"resourceType": "Condition", "id": self.new_id(),
                  "clinicalStatus": coding(CLINICAL, "active", "Active"),
                  "verificationStatus": coding(VERIFICATION, "confirmed", "Confirmed"),
                  "category": [coding(CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")],
                  "code": coding(SNOMED, code, display), "subject": self.subject(), "encounter": enc,
                  "onsetDateTime": _instant(when), "recordedDate": _instant(when)})

    def prescription(self, enc: dict[str, str], drug: str, when: dt.datetime) -> None:
        code, display = DRUGS[drug]
        self.add({"resourceType": "MedicationRequest", "id": self.new_id(), "status": "active", "intent": "order",
                  "medicationCodeableConcept": coding(RXNORM, code, display), "subject": self.subject(),
                  "encounter": enc, "authoredOn": _instant(when)})

    def observation(self, enc: dict[str, str], when: dt.datetime, code: str, display: str, value: float,
                    unit: str, category: str = "laboratory") -> None:
        self.add({"resourceType": "Observation", "id": self.new_id(), "status": "final",
                  "category": [coding(OBS_CATEGORY, category, category.replace("-", " ").title())],
                  "code": coding(LOINC, code, display), "subject": self.subject(), "encounter": enc,
                  "effectiveDateTime": _instant(when), "valueQuantity": _quantity(value, unit)})

    def labs(self, enc: dict[str, str], when: dt.datetime) -> None:
        rng, truth = self.rng, self.truth
        self.observation(enc, when, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood",
                         round(hba1c(truth, when) + rng.gauss(0, 0.12), 1), "%")
        self.observation(enc, when, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma",
                         round(max(0.3, creatinine(truth, when) + rng.gauss(0, 0.06)), 2), "mg/dL")
        glucose = 18.0 * hba1c(truth, when) - 5 + rng.gauss(0, 8)  # the ADAG relation, roughly
        self.observation(enc, when, "2339-0", "Glucose [Mass/volume] in Blood", round(glucose, 1), "mg/dL")

    def vitals(self, enc: dict[str, str], when: dt.datetime) -> None:
        rng, truth = self.rng, self.truth
        age = (when - truth.birth).days / 365.25
        treated = truth.takes("lisinopril", when, when) is not None
        systolic = (112 + 0.35 * (age - 40) + 16 * truth.has("hypertension", when) - 11 * treated
                    + rng.gauss(0, 7))
        self.add({"resourceType": "Observation", "id": self.new_id(), "status": "final",
                  "category": [coding(OBS_CATEGORY, "vital-signs", "Vital Signs")],
                  "code": coding(LOINC, "85354-9", "Blood pressure panel with all children optional"),
                  "subject": self.subject(), "encounter": enc, "effectiveDateTime": _instant(when),
                  "component": [
                      {"code": coding(LOINC, "8480-6", "Systolic blood pressure"),
                       "valueQuantity": _quantity(round(systolic, 0), "mm[Hg]")},
                      {"code": coding(LOINC, "8462-4", "Diastolic blood pressure"),
                       "valueQuantity": _quantity(round(0.6 * systolic + rng.gauss(0, 5), 0), "mm[Hg]")}]})
        heart_rate = 72 + 8 * truth.has("heart_failure", when) + rng.gauss(0, 8)
        self.observation(enc, when, "8867-4", "Heart rate", round(heart_rate, 0), "/min", "vital-signs")
        bmi = 27 + 2 * truth.frailty + 3 * truth.has("type_2_diabetes", when) + rng.gauss(0, 1.0)
        self.observation(enc, when, "39156-5", "Body mass index (BMI) [Ratio]", round(bmi, 1), "kg/m2",
                         "vital-signs")

    def note(self, enc: dict[str, str], when: dt.datetime, setting: str, problems: list[str]) -> None:
        if not self.notes:
            return
        listed = ", ".join(problems) or "no active problems"
        breath = " Reports shortness of breath on exertion." if self.truth.has("heart_failure", when) else ""
        text = (f"{when.date()} {setting} note\n\nActive problems: {listed}.{breath}\n"
                "Plan: continue current medications; follow up as scheduled.\n")
        self.add({"resourceType": "DocumentReference", "id": self.new_id(), "status": "current",
                  "type": coding(LOINC, "11506-3", "Progress note"), "subject": self.subject(),
                  "date": _instant(when), "context": {"encounter": [enc]},
                  "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                              "data": base64.b64encode(text.encode()).decode()}}]})

    def chest_xray(self, enc: dict[str, str], when: dt.datetime) -> None:
        if not self.imaging:
            return
        self.add({"resourceType": "ImagingStudy", "id": self.new_id(), "status": "available",
                  "subject": self.subject(), "encounter": enc, "started": _instant(when),
                  "numberOfSeries": 1, "numberOfInstances": 1,
                  "procedureCode": [coding(SNOMED, "399208008", "Plain X-ray of chest")],
                  "series": [{"uid": f"2.25.{self.rng.getrandbits(96)}", "number": 1,
                              "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                           "code": "CR", "display": "Computed Radiography"},
                              "bodySite": {"system": SNOMED, "code": "51185008", "display": "Chest"},
                              "numberOfInstances": 1}]})


def _problems(truth: Truth, at: dt.datetime) -> list[str]:
    return [DIAGNOSIS_CODES[c][1] for c in CHRONIC if truth.has(c, at)]


def _happens(rng: random.Random, rate_per_year: float, step: dt.timedelta) -> bool:
    return rng.random() < 1.0 - math.exp(-rate_per_year * step.days / 365.25)


def simulate_patient(seed: int, index: int, *, notes: bool = False, imaging: bool = False,
                     end: dt.datetime = HISTORY_END) -> SimulatedPatient:
    """Patient ``index`` of population ``seed``: resources and truth (see the module docstring)."""
    rng = random.Random(f"{seed}:{index}")
    birth = dt.datetime(1930, 1, 1) + dt.timedelta(days=rng.randrange(0, 70 * 365), hours=rng.randrange(24))
    start = max(birth + dt.timedelta(days=round(18 * 365.25)), HISTORY_FLOOR)
    truth = Truth(birth=birth, male=rng.random() < 0.5, frailty=rng.gauss(0, 1), smoker=rng.random() < 0.2,
                  hba1c_start=rng.gauss(5.25, 0.25), hba1c_drift=max(0.0, rng.gauss(0.02, 0.04)),
                  creatinine_slope=rng.uniform(0.05, 0.45), history_start=start)
    w = _Writer(rng, truth, notes, imaging)
    patient: dict[str, Any] = {
        "resourceType": "Patient", "id": w.patient_id,
        "identifier": [{"system": SUBJECT_SYSTEM, "value": str(index)}],
        "name": [{"family": f"Simulated{index}", "given": ["Patient"]}],
        "gender": "male" if truth.male else "female", "birthDate": birth.date().isoformat()}
    w.add(patient)
    next_checkup = start + dt.timedelta(days=rng.randrange(0, 365))
    next_follow_up = start + dt.timedelta(days=180)
    moment = start
    while moment < end:
        step_end = min(moment + STEP, end)
        step = step_end - moment

        def at(moment: dt.datetime = moment, step: dt.timedelta = step) -> dt.datetime:
            offset = dt.timedelta(seconds=rng.randrange(max(1, int(step.total_seconds()))))
            return (moment + offset).replace(microsecond=0)

        # rates from the state at the start of the step (the dynamics' own definition)
        now = rates(truth, moment)
        new = [c for c in CHRONIC if _happens(rng, now[c], step)]
        if "prediabetes" in new and "type_2_diabetes" in new:
            new.remove("type_2_diabetes")
        for condition in new:
            when = at()
            enc = w.encounter("AMB", ("185347001", "Encounter for problem"), when,
                              when + dt.timedelta(minutes=rng.randrange(15, 60)))
            code, display, drug = DIAGNOSIS_CODES[condition]
            truth.diagnoses[condition] = when
            w.condition(enc, code, display, when)
            if condition in ("prediabetes", "type_2_diabetes", "chronic_kidney_disease"):
                w.labs(enc, when)
            if drug is not None and drug not in truth.medications:
                truth.medications[drug] = when
                w.prescription(enc, drug, when)
        if moment >= next_checkup:
            when = at()
            enc = w.encounter("AMB", ("162673000", "General examination of patient"), when,
                              when + dt.timedelta(minutes=rng.randrange(20, 50)))
            w.vitals(enc, when)
            w.labs(enc, when)
            w.add({"resourceType": "Observation", "id": w.new_id(), "status": "final",
                   "category": [coding(OBS_CATEGORY, "social-history", "Social History")],
                   "code": coding(LOINC, "72166-2", "Tobacco smoking status"), "subject": w.subject(),
                   "encounter": enc, "effectiveDateTime": _instant(when),
                   "valueCodeableConcept": coding(SNOMED, *SMOKING[truth.smoker])})
            if rng.random() < 0.6:
                code, display = VACCINES[0] if rng.random() < 0.7 else rng.choice(VACCINES[1:])
                w.add({"resourceType": "Immunization", "id": w.new_id(), "status": "completed",
                       "vaccineCode": coding(CVX, code, display), "patient": w.subject(), "encounter": enc,
                       "occurrenceDateTime": _instant(when), "primarySource": True})
            if _problems(truth, when):
                w.add({"resourceType": "Procedure", "id": w.new_id(), "status": "completed",
                       "code": coding(SNOMED, "430193006", "Medication reconciliation (procedure)"),
                       "subject": w.subject(), "encounter": enc, "performedDateTime": _instant(when)})
            w.note(enc, when, "Check-up", _problems(truth, when))
            next_checkup = when + dt.timedelta(days=rng.randrange(330, 400))
        elif moment >= next_follow_up and _problems(truth, moment):
            when = at()
            enc = w.encounter("AMB", ("185389009", "Follow-up visit"), when,
                              when + dt.timedelta(minutes=rng.randrange(15, 30)))
            w.labs(enc, when)
            next_follow_up = when + dt.timedelta(days=rng.randrange(150, 210))
        admissions: list[tuple[dt.datetime, bool]] = []
        if _happens(rng, now["emergency_visit"], step):
            when = at()
            leaves = when + dt.timedelta(minutes=rng.randrange(90, 480))
            reason = ACUTE[rng.randrange(len(ACUTE))]
            enc = w.encounter("EMER", ("50849002", "Emergency room admission"), when, leaves, reason)
            w.condition(enc, *reason, when)
            w.vitals(enc, when)
            if rng.random() < 0.5:
                w.chest_xray(enc, when)
            if rng.random() < ADMITTED_FROM_EMERGENCY:
                admissions.append((leaves, True))
        if _happens(rng, now["admission"], step):
            admissions.append((at(), False))
        for admitted, from_emergency in sorted(admissions):
            if truth.discharges and admitted <= truth.discharges[-1]:
                continue  # still in hospital
            sick = len(_problems(truth, admitted))
            stay = dt.timedelta(days=1 + min(20, int(rng.expovariate(1 / (2 + sick)))), hours=rng.randrange(24))
            enc = w.encounter("IMP", ("32485007", "Hospital admission"), admitted, admitted + stay)
            w.labs(enc, admitted)
            w.vitals(enc, admitted)
            procedure = ("252465000", "Pulse oximetry") if from_emergency else ("396550006", "Blood test")
            w.add({"resourceType": "Procedure", "id": w.new_id(), "status": "completed",
                   "code": coding(SNOMED, *procedure), "subject": w.subject(), "encounter": enc,
                   "performedDateTime": _instant(admitted)})
            w.chest_xray(enc, admitted)
            w.note(enc, admitted + stay, "Discharge", _problems(truth, admitted))
            truth.discharges.append(admitted + stay)
        if _happens(rng, now["death"], step):
            # after everything this step recorded (in hospital: at the end of the stay)
            died = max(at(), w.latest + dt.timedelta(hours=1))
            if died < end:
                truth.death = died
                patient["deceasedDateTime"] = _instant(died)
                break
        moment = step_end
    return SimulatedPatient(index=index, patient_id=w.patient_id, resources=w.resources, truth=truth)
