"""Observation and DiagnosticReport: a code with its value, and every ``component`` as its own event.

Values: valueQuantity -> numeric_value + unit; valueCodeableConcept -> text_value holding the
answer's own ``VOCAB/code`` (described in codes.parquet); valueString -> text_value;
valueBoolean / valueInteger -> numeric_value. Other value types are kept as text. A panel with
components (blood pressure) writes one event per component; the panel code itself is written
only when it carries a value or has no components, so nothing is counted twice.
"""

from __future__ import annotations

from typing import Any

from ehrfm.ingest.events import EventEmitter, Reject
from ehrfm.ingest.vocabulary import code_from_concept

_TIME_FIELDS = ("effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued")
_VALUE_KEYS = (
    "valueQuantity", "valueCodeableConcept", "valueString", "valueBoolean", "valueInteger",
    "valueDateTime", "valueTime", "valuePeriod", "valueRange", "valueRatio", "valueSampledData",
)


def map_observation(resource: dict[str, Any], out: EventEmitter) -> None:
    out.subject_from(resource)
    out.encounter_from(resource)
    found = code_from_concept(resource.get("code"))
    if found is None:
        raise Reject("no code", "Observation.code has no coding and no text")
    time = out.first_time(resource, *_TIME_FIELDS)
    components = [c for c in resource.get("component") or () if isinstance(c, dict)]
    has_value = any(key in resource for key in _VALUE_KEYS)
    if has_value or not components:
        _emit_with_value(resource, found, time, out, where="")
    for index, component in enumerate(components):
        component_code = code_from_concept(component.get("code"))
        if component_code is None:
            raise Reject("no code", f"Observation.component[{index}].code has no coding and no text")
        _emit_with_value(component, component_code, time, out, where=f"component[{index}].")


def map_diagnostic_report(resource: dict[str, Any], out: EventEmitter) -> None:
    out.subject_from(resource)
    out.encounter_from(resource)
    found = code_from_concept(resource.get("code"))
    if found is None:
        raise Reject("no code", "DiagnosticReport.code has no coding and no text")
    conclusion = resource.get("conclusion") if isinstance(resource.get("conclusion"), str) else None
    out.emit_at(found[0], out.first_time(resource, *_TIME_FIELDS), text=conclusion, description=found[1])


def _emit_with_value(element: dict[str, Any], code: tuple[str, str | None], time: int | None,
                     out: EventEmitter, *, where: str) -> None:
    """``where`` is the element's path inside the Observation: "" or "component[i]."."""
    numeric: float | None = None
    text: str | None = None
    unit: str | None = None
    if "valueQuantity" in element:
        quantity = element["valueQuantity"]
        if not isinstance(quantity, dict):
            raise Reject("invalid value", f"Observation.{where}valueQuantity is not an object: {quantity!r}")
        if "value" in quantity:
            numeric = out.number(quantity["value"], f"{where}valueQuantity.value")
        unit_value = quantity.get("unit") or quantity.get("code")
        unit = str(unit_value) if unit_value is not None else None
    elif "valueCodeableConcept" in element:
        answer = code_from_concept(element["valueCodeableConcept"])
        if answer is not None:
            text = answer[0]
            out.describe(answer[0], answer[1])
    elif "valueString" in element:
        text = str(element["valueString"])
    elif "valueBoolean" in element:
        if not isinstance(element["valueBoolean"], bool):
            raise Reject("invalid value",
                         f"Observation.{where}valueBoolean is not true/false: {element['valueBoolean']!r}")
        numeric = 1.0 if element["valueBoolean"] else 0.0
    elif "valueInteger" in element:
        numeric = out.number(element["valueInteger"], f"{where}valueInteger")
    else:
        for key in _VALUE_KEYS[5:]:
            if key in element:
                text = f"{key[5:]}:{element[key]}"
                break
    out.emit_at(code[0], time, numeric=numeric, text=text, unit=unit, description=code[1])
