"""MedicationRequest / Administration / Dispense / Statement: one drug event each.

The drug is ``medicationCodeableConcept`` or ``medicationReference``. A reference is resolved
from ``contained`` resources, then from the same Bundle; failing both (Bulk ndjson keeps
Medication resources in their own file) the event carries the id and the finalize step joins it
against every Medication resource of the run.
"""

from __future__ import annotations

from typing import Any

from ehrfm.ingest.events import EventEmitter, Reject
from ehrfm.ingest.references import reference_text
from ehrfm.ingest.vocabulary import code_from_concept

_TIME_FIELDS: dict[str, tuple[str, ...]] = {
    "MedicationRequest": ("authoredOn",),
    "MedicationAdministration": ("effectiveDateTime", "effectivePeriod.start"),
    "MedicationDispense": ("whenHandedOver", "whenPrepared"),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod.start", "dateAsserted"),
}
_ENCOUNTER_FIELD = {
    "MedicationRequest": "encounter",
    "MedicationAdministration": "context",
    "MedicationDispense": "context",
    "MedicationStatement": "context",
}


def map_medication_use(resource: dict[str, Any], out: EventEmitter) -> None:
    kind = out.resource_type
    out.subject_from(resource)
    out.encounter_from(resource, _ENCOUNTER_FIELD[kind])
    time = out.first_time(resource, *_TIME_FIELDS[kind])
    concept = resource.get("medicationCodeableConcept")
    if concept is not None:
        found = code_from_concept(concept)
        if found is None:
            raise Reject("no code", f"{kind}.medicationCodeableConcept has no coding and no text")
        out.emit_at(found[0], time, description=found[1])
        return
    ref = reference_text(resource.get("medicationReference"))
    if ref is None:
        raise Reject("no code", f"{kind} has neither medicationCodeableConcept nor medicationReference")
    medication = _contained(resource, ref) or out.bundle.resource(ref)
    if medication is not None:
        found = code_from_concept(medication.get("code"))
        if found is None:
            raise Reject("no code",
                         f"{kind}.medicationReference {ref!r} points at a Medication without a code")
        out.emit_at(found[0], time, description=found[1])
        return
    resolved = out.bundle.resolve(ref)
    if resolved is None or resolved[0] not in (None, "Medication"):
        raise Reject("unresolved medication",
                     f"{kind}.medicationReference {ref!r} is not a Medication reference")
    out.emit_at(None, time, medication_ref=resolved[1])


def map_medication(resource: dict[str, Any], out: EventEmitter) -> None:
    """Medication is reference data: no events, but its code is kept for references to it.

    One without a code is kept too, so that a reference to it is rejected as "no code" rather
    than as a Medication missing from the input.
    """
    found = code_from_concept(resource.get("code"))
    if out.resource_id:
        out.register_medication(out.resource_id, *(found if found is not None else (None, None)))


def _contained(resource: dict[str, Any], ref: str) -> dict[str, Any] | None:
    if not ref.startswith("#"):
        return None
    for item in resource.get("contained") or ():
        if isinstance(item, dict) and item.get("id") == ref[1:]:
            return item
    return None
