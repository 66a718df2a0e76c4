"""Predictions as FHIR R4 ``RiskAssessment`` resources, one per patient, prediction time and task.

Each resource references the original ``Patient`` (its FHIR id from ``metadata/subjects.parquet``),
is stamped with the prediction time (``occurrenceDateTime``, UTC), names the model bundle in
``method`` and ``basis``, and holds one ``prediction``: the task as a coded ``outcome``
(system :data:`TASK_SYSTEM`, code = task name, text = its description), the probability as
``probabilityDecimal``, and the task's window as ``whenPeriod`` (open-ended windows get no end).

>>> import datetime as dt
>>> resource = risk_assessment(patient_id="p1", prediction_time=dt.datetime(2020, 1, 1), task="mortality_1y",
...     description="death within a year", probability=0.125, window=(dt.timedelta(0), dt.timedelta(days=365)),
...     model_name="mtf", model_version="ehrfm 0.1.0")
>>> resource["subject"], resource["prediction"][0]["whenPeriod"]
({'reference': 'Patient/p1'}, {'start': '2020-01-01T00:00:00Z', 'end': '2020-12-31T00:00:00Z'})
>>> validate_risk_assessment(resource).status
'final'
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

__all__ = ["SUBJECT_SYSTEM", "TASK_SYSTEM", "risk_assessment", "validate_risk_assessment"]

TASK_SYSTEM = "urn:ehrfm:task"
SUBJECT_SYSTEM = "urn:ehrfm:subject_id"


def _instant(value: dt.datetime) -> str:
    return value.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def risk_assessment(*, patient_id: str | None, prediction_time: dt.datetime, task: str, description: str,
                    probability: float, window: tuple[dt.timedelta, dt.timedelta | None], model_name: str,
                    model_version: str, subject_id: int | None = None) -> dict[str, Any]:
    """One ``RiskAssessment`` (a JSON-ready dict); ``prediction_time`` is naive UTC.

    Without a FHIR Patient id (a MEDS dataset from another ETL), ``subject`` identifies the
    patient by ``subject_id`` instead (system :data:`SUBJECT_SYSTEM`).
    """
    start, end = window
    period: dict[str, str] = {"start": _instant(prediction_time + start)}
    if end is not None:
        period["end"] = _instant(prediction_time + end)
    if patient_id is not None:
        subject: dict[str, Any] = {"reference": f"Patient/{patient_id}"}
    elif subject_id is not None:
        subject = {"identifier": {"system": SUBJECT_SYSTEM, "value": str(subject_id)}}
    else:
        raise ValueError("a RiskAssessment needs the patient's FHIR id or its subject_id")
    key = f"{model_name}|{patient_id}|{subject_id}|{task}|{prediction_time.isoformat()}"
    method = f"ehrfm model bundle {model_name} ({model_version})"
    return {
        "resourceType": "RiskAssessment",
        "id": hashlib.sha256(key.encode()).hexdigest()[:32],
        "status": "final",
        "subject": subject,
        "occurrenceDateTime": _instant(prediction_time),
        "method": {"coding": [{"system": "urn:ehrfm:model", "code": model_name}], "text": method},
        "basis": [{"display": method}],
        "prediction": [{
            "outcome": {"coding": [{"system": TASK_SYSTEM, "code": task}], "text": description or task},
            "probabilityDecimal": float(probability),
            "whenPeriod": period,
        }],
    }


def validate_risk_assessment(resource: dict[str, Any]) -> Any:
    """Parse with ``fhir.resources.R4B`` (raises on anything that is not valid R4)."""
    from fhir.resources.R4B.riskassessment import RiskAssessment

    return RiskAssessment.model_validate(resource)
