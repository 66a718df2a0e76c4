"""Patient: birth, sex, race / ethnicity (US Core extensions), death as an event."""

from __future__ import annotations

from typing import Any

from ehrfm import schema
from ehrfm.ingest.events import EventEmitter, Reject
from ehrfm.ingest.fhirtime import BIRTH_SLACK_US

_RACE_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
_ETHNICITY_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
_BIRTHSEX_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"


def map_patient(resource: dict[str, Any], out: EventEmitter) -> None:
    if not out.resource_id:
        raise Reject("no id", "Patient has neither an id nor a Bundle fullUrl, so nothing can refer to it")
    out.set_patient(out.resource_id)
    out.register_patient(patient_identifiers(resource))

    gender = resource.get("gender") or "unknown"
    out.emit(f"GENDER/{gender}", None, description=f"Administrative gender: {gender}")
    birth = resource.get("birthDate")
    birth_time = out.time(birth, "birthDate", start=True) if birth is not None else None
    if birth_time is not None:
        out.emit(schema.BIRTH_CODE, birth_time, description="Birth")

    for extension in resource.get("extension") or ():
        if not isinstance(extension, dict):
            continue
        url = extension.get("url")
        if url == _RACE_URL:
            _emit_omb_categories(extension, "RACE", out)
        elif url == _ETHNICITY_URL:
            _emit_omb_categories(extension, "ETHNICITY", out)
        elif url == _BIRTHSEX_URL and extension.get("valueCode"):
            sex = extension["valueCode"]
            out.emit(f"BIRTHSEX/{sex}", None, description=f"Birth sex: {sex}")

    if resource.get("deceasedDateTime") is not None:
        death = out.time(resource["deceasedDateTime"], "deceasedDateTime")
        if birth_time is not None and death < birth_time - BIRTH_SLACK_US:
            raise Reject("death before birth",
                         f"deceasedDateTime {resource['deceasedDateTime']!r} is before birthDate {birth!r}")
        out.emit(schema.DEATH_CODE, death, description="Death")
    elif resource.get("deceasedBoolean") is True:
        # Known dead, time unknown: a static fact rather than an invented date.
        out.emit(schema.DEATH_CODE, None, description="Death")


def patient_identifiers(resource: dict[str, Any]) -> list[dict[str, str | None]]:
    """``Patient.identifier`` as {system, value} pairs (kept in subjects.parquet, to join back).

    >>> patient_identifiers({"identifier": [{"system": "http://h/mrn", "value": "12"}, {"value": 3}, "x"]})
    [{'system': 'http://h/mrn', 'value': '12'}, {'system': None, 'value': '3'}]
    """
    found = []
    for identifier in resource.get("identifier") or ():
        if not isinstance(identifier, dict) or identifier.get("value") is None:
            continue
        system = identifier.get("system")
        found.append({"system": system if isinstance(system, str) else None, "value": str(identifier["value"])})
    return found


def _emit_omb_categories(extension: dict[str, Any], prefix: str, out: EventEmitter) -> None:
    emitted = False
    text = None
    for part in extension.get("extension") or ():
        if not isinstance(part, dict):
            continue
        if part.get("url") in ("ombCategory", "detailed") and isinstance(part.get("valueCoding"), dict):
            coding = part["valueCoding"]
            if coding.get("code"):
                out.emit(f"{prefix}/{coding['code']}", None, description=coding.get("display"))
                emitted = True
        elif part.get("url") == "text":
            text = part.get("valueString")
    if not emitted and text:
        out.emit(f"{prefix}/TEXT:{text}", None, description=text)
