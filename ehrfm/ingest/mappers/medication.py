"""MedicationRequest / Administration / Dispense / Statement: one drug event each, or one per ingredient.

The drug is ``medicationCodeableConcept`` or ``medicationReference``. A reference is resolved
from ``contained`` resources, then from the same Bundle; failing both (Bulk ndjson keeps
Medication resources in their own file) the event carries the id and the finalize step joins it
against every Medication resource of the run.

A Medication without a ``code`` but with ``ingredient`` items (MIMIC-IV's "medication mix": a
base solution plus additives) stands for its ingredients: the order becomes **one event per
ingredient**, in ingredient order, each with the ingredient's code (``itemCodeableConcept``, or
the code of the Medication its ``itemReference`` names, wherever that Medication is). An order
whose drug cannot be resolved to a code (a Medication missing from the input, one without a code
or usable ingredients, or a mix with an ingredient that cannot be resolved) is rejected with the
reason, never dropped silently.

A Medication's description is its code's display, else the ``code.text``, else the value of a
``name_identifier_systems`` identifier (MIMIC keeps the drug's name there).
"""

from __future__ import annotations

from typing import Any

from ehrfm.ingest.events import EventEmitter, Reject
from ehrfm.ingest.references import reference_text

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
        found = out.concept(concept)
        if found is None:
            raise Reject("no code", f"{kind}.medicationCodeableConcept has no coding and no text")
        out.emit_at(found[0], time, description=found[1])
        return
    ref = reference_text(resource.get("medicationReference"))
    if ref is None:
        raise Reject("no code", f"{kind} has neither medicationCodeableConcept nor medicationReference")
    medication = _contained(resource, ref) or out.bundle.resource(ref)
    if medication is not None:
        found = out.concept(medication.get("code"))
        if found is not None:
            out.emit_at(found[0], time, description=found[1] or _identifier_name(medication, out))
            return
        ingredients = _ingredients_here(medication, resource, out)
        if ingredients is None and not _ingredient_items(medication):
            raise Reject("no code",
                         f"{kind}.medicationReference {ref!r} points at a Medication without a code "
                         "or ingredients")
        if ingredients is not None:
            for code, display in ingredients:
                out.emit_at(code, time, description=display)
            return
        # Ingredients that live outside this Bundle: the finalize step resolves the mix by id.
    resolved = out.bundle.resolve(ref)
    if resolved is None or resolved[0] not in (None, "Medication"):
        raise Reject("unresolved medication",
                     f"{kind}.medicationReference {ref!r} is not a Medication reference")
    out.emit_at(None, time, medication_ref=resolved[1])


def map_medication(resource: dict[str, Any], out: EventEmitter) -> None:
    """Medication is reference data: no events, but its code is kept for references to it.

    One without a code is kept too, so that a reference to it is rejected as "no code" rather
    than as a Medication missing from the input; one with ingredients keeps a row per ingredient.
    """
    if not out.resource_id:
        return
    found = out.concept(resource.get("code"))
    if found is not None:
        out.register_medication(out.resource_id, found[0], found[1] or _identifier_name(resource, out))
        return
    position = 0
    for item in _ingredient_items(resource):
        code = out.concept(item.get("itemCodeableConcept"))
        item_ref = reference_text(item.get("itemReference"))
        resolved = out.bundle.resolve(item_ref) if item_ref is not None else None
        if code is not None:
            out.register_medication(out.resource_id, code[0], code[1], ingredient=position)
        elif resolved is not None and resolved[0] in (None, "Medication"):
            out.register_medication(out.resource_id, None, None, ingredient_ref=resolved[1], ingredient=position)
        else:
            continue
        position += 1
    if position == 0:
        out.register_medication(out.resource_id, None, None)


def _ingredient_items(medication: dict[str, Any]) -> list[dict[str, Any]]:
    items = medication.get("ingredient")
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _ingredients_here(medication: dict[str, Any], resource: dict[str, Any],
                      out: EventEmitter) -> list[tuple[str, str | None]] | None:
    """Codes of a mix's ingredients when all are inline, contained or in this Bundle; else None."""
    found = []
    for item in _ingredient_items(medication):
        code = out.concept(item.get("itemCodeableConcept"))
        if code is None:
            item_ref = reference_text(item.get("itemReference"))
            if item_ref is None:
                continue
            target = _contained(resource, item_ref) or out.bundle.resource(item_ref)
            code = out.concept(target.get("code")) if target is not None else None
            if code is None:
                return None
            code = (code[0], code[1] or _identifier_name(target, out))
        found.append(code)
    return found or None


def _identifier_name(medication: dict[str, Any] | None, out: EventEmitter) -> str | None:
    """The drug's name from a ``name_identifier_systems`` identifier (MIMIC), or None."""
    if not isinstance(medication, dict) or not out.vocab.name_identifier_systems:
        return None
    for identifier in medication.get("identifier") or ():
        if (isinstance(identifier, dict) and identifier.get("system") in out.vocab.name_identifier_systems
                and isinstance(identifier.get("value"), str) and identifier["value"].strip()):
            return identifier["value"].strip()
    return None


def _contained(resource: dict[str, Any], ref: str) -> dict[str, Any] | None:
    if not ref.startswith("#"):
        return None
    for item in resource.get("contained") or ():
        if isinstance(item, dict) and item.get("id") == ref[1:]:
            return item
    return None
