"""The simulator's planted clinical dynamics: latent lab trajectories, hazards and true risk.

One :class:`Truth` per patient holds everything the hazards depend on: birth, sex, frailty,
smoking, the parameters of the latent HbA1c and creatinine trajectories, diagnosis times,
medication starts and hospital discharges. :func:`hazard` gives the yearly rate of each kind of
event at time ``at`` from what is known at ``known_until`` (the generator uses
``known_until = at``, so the events it draws follow exactly these rates), and
:func:`true_risk` integrates a task's outcome rate over its window.

Where the signal lives (so a test can tell a sequence model from per-code counts):

- **counts**: every chronic diagnosis raises the rates of admission, emergency visits and death;
- **values and trends**: prediabetes and type 2 diabetes follow the latent HbA1c, which drifts
  upwards in some patients (metformin lowers it); admissions and death rise with the latent
  creatinine, which climbs after chronic kidney disease at a patient-specific speed. Counts of
  lab codes carry none of this: only the measured values do;
- **timing**: an inpatient discharge raises admission for 90 days and death for 180 days, so
  the same number of admissions means more risk when the last one is recent.

:func:`true_risk` is the planted risk given the state at the prediction time: the outcome's rate
integrated over the window as the known state evolves (age, lab trajectories, the expiry of a
recent discharge), without diagnoses, admissions or prescriptions that happen after it. It is a
slight underestimate of the full conditional risk (new events can only raise the rates), and
the quantity a model that sees the whole history can at best recover.

>>> import datetime as dt
>>> truth = Truth(birth=dt.datetime(1950, 1, 1), male=True, frailty=0.0, smoker=False,
...               hba1c_start=5.3, hba1c_drift=0.0, creatinine_slope=0.2, history_start=dt.datetime(2000, 1, 1))
>>> at = dt.datetime(2020, 1, 1)
>>> calm = true_risk(truth, "mortality_1y", at)
>>> truth.discharges.append(dt.datetime(2019, 12, 1))
>>> true_risk(truth, "mortality_1y", at) > calm   # a recent discharge raises the risk
True
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CHRONIC", "HAZARD_KINDS", "TASK_OUTCOMES", "Truth", "creatinine", "hazard", "hba1c", "rates", "true_risk"]

DAYS_PER_YEAR = 365.25
STEP = dt.timedelta(days=10)  # integration step of true_risk

# Diagnoses the dynamics use (each also a hazard kind: its onset).
CHRONIC = ("hypertension", "hyperlipidemia", "prediabetes", "type_2_diabetes", "chronic_kidney_disease",
           "heart_failure", "copd")
HAZARD_KINDS = (*CHRONIC, "emergency_visit", "admission", "death")
ADMITTED_FROM_EMERGENCY = 0.25  # share of emergency visits that end in an inpatient admission

# The outcome of each built-in task: (hazard kinds with their weights, window length).
TASK_OUTCOMES: dict[str, tuple[tuple[tuple[str, float], ...], dt.timedelta]] = {
    "mortality_1y": ((("death", 1.0),), dt.timedelta(days=365)),
    "inpatient_admission_1y": ((("admission", 1.0), ("emergency_visit", ADMITTED_FROM_EMERGENCY)),
                               dt.timedelta(days=365)),
    "emergency_visit_90d": ((("emergency_visit", 1.0),), dt.timedelta(days=90)),
    "new_prediabetes_3y": ((("prediabetes", 1.0),), dt.timedelta(days=1095)),
}


@dataclass
class Truth:
    """A simulated patient's ground truth: what the hazards depend on (times are naive UTC)."""

    birth: dt.datetime
    male: bool
    frailty: float  # standard normal; raises every rate
    smoker: bool
    hba1c_start: float  # % at history_start
    hba1c_drift: float  # % per year
    creatinine_slope: float  # mg/dL per year after chronic kidney disease
    history_start: dt.datetime
    diagnoses: dict[str, dt.datetime] = field(default_factory=dict)  # chronic condition -> onset
    medications: dict[str, dt.datetime] = field(default_factory=dict)  # drug key -> first prescription
    discharges: list[dt.datetime] = field(default_factory=list)  # inpatient discharges, in order
    death: dt.datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        def iso(t: dt.datetime | None) -> str | None:
            return None if t is None else t.isoformat()
        return {"birth": iso(self.birth), "male": self.male, "frailty": self.frailty, "smoker": self.smoker,
                "hba1c_start": self.hba1c_start, "hba1c_drift": self.hba1c_drift,
                "creatinine_slope": self.creatinine_slope, "history_start": iso(self.history_start),
                "diagnoses": {k: iso(v) for k, v in self.diagnoses.items()},
                "medications": {k: iso(v) for k, v in self.medications.items()},
                "discharges": [iso(t) for t in self.discharges], "death": iso(self.death)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Truth:
        def when(text: str | None) -> dt.datetime | None:
            return None if text is None else dt.datetime.fromisoformat(text)
        return cls(birth=when(data["birth"]), male=data["male"], frailty=data["frailty"], smoker=data["smoker"],
                   hba1c_start=data["hba1c_start"], hba1c_drift=data["hba1c_drift"],
                   creatinine_slope=data["creatinine_slope"], history_start=when(data["history_start"]),
                   diagnoses={k: when(v) for k, v in data["diagnoses"].items()},
                   medications={k: when(v) for k, v in data["medications"].items()},
                   discharges=[when(t) for t in data["discharges"]], death=when(data["death"]))

    def has(self, condition: str, known_until: dt.datetime) -> bool:
        onset = self.diagnoses.get(condition)
        return onset is not None and onset <= known_until

    def takes(self, drug: str, at: dt.datetime, known_until: dt.datetime) -> dt.datetime | None:
        start = self.medications.get(drug)
        return start if start is not None and start <= min(at, known_until) else None

    def last_discharge(self, known_until: dt.datetime) -> dt.datetime | None:
        index = bisect.bisect_right(self.discharges, known_until)
        return self.discharges[index - 1] if index else None


def _years(delta: dt.timedelta) -> float:
    return delta.total_seconds() / (86_400 * DAYS_PER_YEAR)


def hba1c(truth: Truth, at: dt.datetime, known_until: dt.datetime | None = None) -> float:
    """Latent HbA1c (%) at ``at``: a linear drift; metformin lowers it by 0.8 and halves the drift."""
    known_until = at if known_until is None else known_until
    value = truth.hba1c_start + truth.hba1c_drift * _years(at - truth.history_start)
    started = truth.takes("metformin", at, known_until)
    if started is not None:
        value -= min(0.8, 0.8 * _years(at - started) * 4) + 0.5 * truth.hba1c_drift * _years(at - started)
    return value


def creatinine(truth: Truth, at: dt.datetime, known_until: dt.datetime | None = None) -> float:
    """Latent serum creatinine (mg/dL): flat, then rising at the patient's own speed after CKD."""
    known_until = at if known_until is None else known_until
    value = 0.95 if truth.male else 0.75
    onset = truth.diagnoses.get("chronic_kidney_disease")
    if onset is not None and onset <= known_until and onset <= at:
        value += truth.creatinine_slope * _years(at - onset)
    return value


def hazard(truth: Truth, kind: str, at: dt.datetime, known_until: dt.datetime | None = None) -> float:
    """Yearly rate of ``kind`` (a ``HAZARD_KINDS`` entry) at ``at``, from what is known at ``known_until``.

    A chronic condition already diagnosed has rate 0 (it is diagnosed once).
    """
    if kind not in HAZARD_KINDS:
        raise ValueError(f"unknown hazard kind {kind!r}; known: {', '.join(HAZARD_KINDS)}")
    return rates(truth, at, known_until)[kind]


def rates(truth: Truth, at: dt.datetime, known_until: dt.datetime | None = None) -> dict[str, float]:
    """Every ``HAZARD_KINDS`` rate (per year) at ``at``, from what is known at ``known_until``."""
    known_until = at if known_until is None else known_until
    age = _years(at - truth.birth)
    z = truth.frailty
    has = {c: truth.has(c, known_until) for c in CHRONIC}
    chronic = sum(has.values())
    a1c = hba1c(truth, at, known_until)
    creat = creatinine(truth, at, known_until)
    discharged = truth.last_discharge(known_until)
    since_discharge = None if discharged is None else (at - discharged).days
    recent_90 = since_discharge is not None and 0 <= since_discharge <= 90
    recent_180 = since_discharge is not None and 0 <= since_discharge <= 180
    bp_treated = truth.takes("lisinopril", at, known_until) is not None
    older = age - 40
    out = {
        "hypertension": 0.012 * math.exp(0.05 * older + 0.3 * z),
        "hyperlipidemia": 0.015 * math.exp(0.04 * older + 0.2 * z),
        "prediabetes": 0.0 if has["type_2_diabetes"] else 0.05 * math.exp(4.0 * (a1c - 5.7)),
        "type_2_diabetes": 0.08 * math.exp(4.0 * (a1c - 6.4)) if has["prediabetes"] else 0.0,
        "chronic_kidney_disease": 0.004 * math.exp(0.05 * older + 0.9 * has["type_2_diabetes"]
                                                   + 0.6 * (has["hypertension"] and not bp_treated) + 0.3 * z),
        "heart_failure": 0.002 * math.exp(0.06 * older + 0.8 * has["hypertension"]
                                          + 0.6 * has["chronic_kidney_disease"] + 0.3 * z),
        "copd": (0.012 if truth.smoker else 0.001) * math.exp(0.04 * older),
        "emergency_visit": 0.12 * math.exp(0.3 * chronic + 0.4 * z + 0.9 * has["copd"]
                                           + 0.7 * has["heart_failure"]),
        "admission": 0.02 * math.exp(0.35 * chronic + 0.4 * z + 1.8 * recent_90 + 1.6 * max(0.0, creat - 1.3)
                                     + 0.8 * has["heart_failure"] + 0.02 * max(0.0, age - 60)),
        "death": math.exp(-10.5 + 0.085 * age + 0.3 * chronic + 0.4 * z + 1.6 * recent_180
                          + 1.3 * max(0.0, creat - 1.5) + 0.7 * has["heart_failure"]),
    }
    for condition in CHRONIC:
        if has[condition]:
            out[condition] = 0.0
    return out


def true_risk(truth: Truth, task: str, at: dt.datetime) -> float:
    """The planted probability of ``task``'s outcome in ``(at, at + window]`` given the state at ``at``.

    ``task`` is a built-in task name (``TASK_OUTCOMES``). Zero once the patient has died, and for
    ``new_prediabetes_3y`` once prediabetes or diabetes is known.
    """
    if task not in TASK_OUTCOMES:
        raise ValueError(f"no planted risk for task {task!r}; tasks: {', '.join(TASK_OUTCOMES)}")
    if truth.death is not None and truth.death <= at:
        return 0.0
    kinds, window = TASK_OUTCOMES[task]
    total, moment, end = 0.0, at, at + window
    while moment < end:
        step = min(STEP, end - moment)
        middle = moment + step / 2
        now = rates(truth, middle, known_until=at)
        rate = sum(weight * now[kind] for kind, weight in kinds)
        total += rate * _years(step)
        moment += step
    return 1.0 - math.exp(-total)
