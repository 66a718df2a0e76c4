"""Resources that are one coded event at one time: Condition, Procedure, Immunization,
AllergyIntolerance. Each has its own mapper (time fields differ); they share the skeleton."""

from __future__ import annotations

from typing import Any

from ehrfm.ingest.events import EventEmitter, Reject


def _emit_coded(resource: dict[str, Any], out: EventEmitter, *, code_field: str,
                subject_field: str, time_fields: tuple[str, ...]) -> None:
    out.subject_from(resource, subject_field)
    out.encounter_from(resource)
    found = out.concept(resource.get(code_field))
    if found is None:
        raise Reject("no code", f"{out.resource_type}.{code_field} has no coding and no text")
    out.emit_at(found[0], out.first_time(resource, *time_fields), description=found[1])


def map_condition(resource: dict[str, Any], out: EventEmitter) -> None:
    """Onset, else recorded date, else the start of its encounter."""
    _emit_coded(resource, out, code_field="code", subject_field="subject",
                time_fields=("onsetDateTime", "onsetPeriod.start", "recordedDate"))


def map_procedure(resource: dict[str, Any], out: EventEmitter) -> None:
    _emit_coded(resource, out, code_field="code", subject_field="subject",
                time_fields=("performedDateTime", "performedPeriod.start"))


def map_immunization(resource: dict[str, Any], out: EventEmitter) -> None:
    _emit_coded(resource, out, code_field="vaccineCode", subject_field="patient",
                time_fields=("occurrenceDateTime", "recorded"))


def map_allergy_intolerance(resource: dict[str, Any], out: EventEmitter) -> None:
    _emit_coded(resource, out, code_field="code", subject_field="patient",
                time_fields=("onsetDateTime", "onsetPeriod.start", "recordedDate"))
