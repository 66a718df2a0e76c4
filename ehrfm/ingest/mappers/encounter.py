"""Encounter: class and type at the start, a visit end event; its id ties the visit's events."""

from __future__ import annotations

from typing import Any

from ehrfm import schema
from ehrfm.ingest.events import EventEmitter, Reject


def map_encounter(resource: dict[str, Any], out: EventEmitter) -> None:
    out.subject_from(resource)
    out.encounter_id = out.resource_id
    period = resource.get("period") if isinstance(resource.get("period"), dict) else {}
    if period.get("start") is None:
        raise Reject("missing time", "Encounter.period.start is missing")
    start = out.time(period["start"], "period.start", start=True)

    klass = resource.get("class")
    if isinstance(klass, list):  # R5-style CodeableConcept list seen in mixed exports
        klass = klass[0].get("coding", [{}])[0] if klass and isinstance(klass[0], dict) else None
    class_code = (klass or {}).get("code") if isinstance(klass, dict) else None
    class_code = class_code or "UNKNOWN"
    class_display = (klass or {}).get("display") if isinstance(klass, dict) else None
    out.emit(f"{schema.VISIT_START_PREFIX}/{class_code}", start,
             description=f"Visit start ({class_display or class_code})")
    for concept in resource.get("type") or ():
        found = out.concept(concept)
        if found is not None:
            out.emit(found[0], start, description=found[1])
            break
    if period.get("end") is not None:
        end = out.time(period["end"], "period.end")
        if end < start:
            raise Reject("invalid date",
                         f"Encounter.period.end {period['end']!r} is before start {period['start']!r}")
        out.emit(f"{schema.VISIT_END_PREFIX}/{class_code}", end,
                 description=f"Visit end ({class_display or class_code})")
