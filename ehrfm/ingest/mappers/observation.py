"""Observation and DiagnosticReport: a code with its value, and every ``component`` as its own event.

Each value type becomes ``numeric_value`` / ``text_value`` / ``unit`` as follows. A text written
for a value type is a small fixed token (``"range"``, ``"<"``, ``"datetime"``...), never the value
itself and never a Python repr, so it stays a categorical value a tokenizer can count.

``valueQuantity``
    numeric = ``value``, unit = ``unit`` (else ``code``). With a ``comparator`` (``<``, ``<=``,
    ``>=``, ``>``, ``ad``) the number is kept and text = the comparator alone (``<0.01`` is
    numeric 0.01, text ``"<"``); an unknown comparator is an invalid value.
``valueCodeableConcept``
    text = the answer's own ``VOCAB/code``, described in codes.parquet.
``valueString``
    text = the string (a non-string is an invalid value), except: a plain decimal number
    (``"3"``, ``"-0.5"``, ``"12."``; no exponent, no leading zero such as ``"007"``, which reads
    as an identifier) is numeric = the number with no text, as MIMIC writes pain scores; and an
    ISO date-time (``"2180-07-23T12:00:00"``, ``"2180-07-23"``) is the ``"datetime"`` marker, as
    for valueDateTime, so moments never become one token per value. A string that is not a
    number stays text, so a code with both ("3", "Unable to score") keeps both.
``valueBoolean``
    numeric 1.0 / 0.0 (anything but true/false is an invalid value).
``valueInteger``
    numeric = the integer (a boolean or a non-number is an invalid value).
``valueRange``
    numeric = the midpoint when both ``low.value`` and ``high.value`` are present, text
    ``"range"``; only one side present: numeric = that side, text ``">="`` (only low: at least) or
    ``"<="`` (only high: at most), the comparator vocabulary of valueQuantity. Unit = the side's
    unit; two different units give no numeric (text ``"range"``, no unit). Neither side: text
    ``"range"`` alone.
``valueRatio``
    numeric = numerator / denominator when both values are numbers, the denominator is not 0 and
    the quotient fits float32; unit = ``"num_unit/den_unit"`` (``"1/den_unit"`` without a numerator
    unit, ``"num_unit"`` without a denominator unit, none without both); text ``"ratio"``. Otherwise
    text ``"ratio"`` alone.
``valueSampledData``
    text ``"sampled-data"``, no numeric (the ``data`` string is never written).
``valuePeriod``
    numeric = the duration in days when ``start`` and ``end`` both parse and ``end`` is not before
    ``start`` (start read as its first microsecond, end as its last, as in
    :mod:`ehrfm.ingest.fhirtime`, so a date-only period counts its days inclusively); text
    ``"period"``, unit ``"d"``. Otherwise (a side missing or unreadable, end before start) text
    ``"period"`` alone.
``valueDateTime`` / ``valueTime``
    the code with text ``"datetime"`` / ``"time"`` and no numeric: the moment itself would make a
    distinct token per value (a non-string is an invalid value).
no value, ``dataAbsentReason``
    text = the reason's own ``VOCAB/code`` (described like a valueCodeableConcept answer), so
    "not performed" / "unknown" stays information. A value, when present, wins.
no value at all
    the code alone.

A panel with components (blood pressure) writes one event per component; the panel code itself
is written only when it carries a value (or a dataAbsentReason) or has no components, so nothing
is counted twice. An invalid top-level value rejects the Observation. A component that is not
an object, has no code or has an invalid value is left out and counted with
:meth:`EventEmitter.skip_part` (``EventEmitter.skipped_parts``), while the other components are
written; when every component is unusable and the panel has no value of its own, the Observation
is rejected with the first component's problem.
"""

from __future__ import annotations

from typing import Any

from ehrfm.ingest.events import FLOAT32_MAX, EventEmitter, Reject
from ehrfm.ingest.fhirtime import DAY_US, FhirTimeError, to_utc_micros

_TIME_FIELDS = ("effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued")
_VALUE_KEYS = (
    "valueQuantity", "valueCodeableConcept", "valueString", "valueBoolean", "valueInteger",
    "valueDateTime", "valueTime", "valuePeriod", "valueRange", "valueRatio", "valueSampledData",
)
_VALUE_KEY_SET = frozenset(_VALUE_KEYS) | {"dataAbsentReason"}
_ABSENT = object()
_COMPARATORS = frozenset({"<", "<=", ">=", ">", "ad"})

# (numeric_value, text_value, unit) of one value element.
_Value = tuple[float | None, str | None, str | None]


def map_observation(resource: dict[str, Any], out: EventEmitter) -> None:
    out.subject_from(resource)
    out.encounter_from(resource)
    found = out.concept(resource.get("code"))
    if found is None:
        raise Reject("no code", "Observation.code has no coding and no text")
    time = out.first_time(resource, *_TIME_FIELDS)
    components = _components(resource.get("component"))
    has_value = not _VALUE_KEY_SET.isdisjoint(resource.keys())
    if has_value or not components:
        numeric, text, unit = _value_of(resource, out, where="")
        out.emit_at(found[0], time, numeric=numeric, text=text, unit=unit, description=found[1])
    first_problem: Reject | None = None
    written = 0
    for index, component in enumerate(components):
        where = f"component[{index}]."
        try:
            if not isinstance(component, dict):
                raise Reject("invalid value", f"Observation.component[{index}] is not an object")
            component_code = out.concept(component.get("code"))
            if component_code is None:
                raise Reject("no code", f"Observation.component[{index}].code has no coding and no text")
            numeric, text, unit = _value_of(component, out, where=where)
        except Reject as problem:
            first_problem = first_problem or problem
            out.skip_part(problem.kind)
            continue
        out.emit_at(component_code[0], time, numeric=numeric, text=text, unit=unit,
                    description=component_code[1])
        written += 1
    if components and written == 0 and not has_value and first_problem is not None:
        raise Reject(first_problem.kind,
                     f"{first_problem.detail} (no usable component among {len(components)})")


def map_diagnostic_report(resource: dict[str, Any], out: EventEmitter) -> None:
    out.subject_from(resource)
    out.encounter_from(resource)
    found = out.concept(resource.get("code"))
    if found is None:
        raise Reject("no code", "DiagnosticReport.code has no coding and no text")
    conclusion = resource.get("conclusion") if isinstance(resource.get("conclusion"), str) else None
    out.emit_at(found[0], out.first_time(resource, *_TIME_FIELDS), text=conclusion, description=found[1])


def _components(value: Any) -> list[Any]:
    """``component`` as a list; a lone object (not in a list) is read as one component."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _invalid(where: str, what: str) -> Reject:
    return Reject("invalid value", f"Observation.{where}{what}")


def _value_of(element: dict[str, Any], out: EventEmitter, *, where: str) -> _Value:
    """The value of an Observation or one of its components; ``where`` is "" or "component[i]."."""
    if "valueQuantity" in element:
        return _quantity(element["valueQuantity"], out, where)
    if "valueCodeableConcept" in element:
        return None, _coded_text(element["valueCodeableConcept"], out), None
    if "valueString" in element:
        value = element["valueString"]
        if not isinstance(value, str):
            raise _invalid(where, f"valueString is not a string: {value!r}")
        return _string_value(value)
    if "valueBoolean" in element:
        value = element["valueBoolean"]
        if not isinstance(value, bool):
            raise _invalid(where, f"valueBoolean is not true/false: {value!r}")
        return (1.0 if value else 0.0), None, None
    if "valueInteger" in element:
        return out.number(element["valueInteger"], f"{where}valueInteger"), None, None
    if "valueRange" in element:
        return _range(element["valueRange"], out, f"{where}valueRange")
    if "valueRatio" in element:
        return _ratio(element["valueRatio"], out, f"{where}valueRatio")
    if "valueSampledData" in element:
        if not isinstance(element["valueSampledData"], dict):
            raise _invalid(where, "valueSampledData is not an object")
        return None, "sampled-data", None
    if "valuePeriod" in element:
        return _period(element["valuePeriod"], where)
    for key, token in (("valueDateTime", "datetime"), ("valueTime", "time")):
        if key in element:
            if not isinstance(element[key], str):
                raise _invalid(where, f"{key} is not a string: {element[key]!r}")
            return None, token, None
    if "dataAbsentReason" in element:
        return None, _coded_text(element["dataAbsentReason"], out), None
    return None, None, None


_NUMBER_START = frozenset("0123456789-+.")


def _string_value(value: str) -> _Value:
    """A valueString as a number, the datetime marker, or the text itself (see the module doc)."""
    text = value.strip()
    if not text or text[0] not in _NUMBER_START:  # the common word-valued string: one set lookup
        return None, value, None
    body = text[1:] if text[0] in "+-" else text
    whole, dot, fraction = body.partition(".")
    if (whole or fraction) and (not whole or whole.isdigit()) and (not fraction or fraction.isdigit()) \
            and whole.isascii() and fraction.isascii() and not (len(whole) > 1 and whole[0] == "0"):
        number = float(text)
        if abs(number) <= FLOAT32_MAX:
            return number, None, None
    if len(text) >= 10 and text[4] == "-" and text[:4].isdigit():
        try:
            to_utc_micros(text)
        except FhirTimeError:
            return None, value, None
        return None, "datetime", None
    return None, value, None


def _coded_text(concept: Any, out: EventEmitter) -> str | None:
    """``VOCAB/code`` of an answer or reason concept, described in codes.parquet."""
    answer = out.concept(concept)
    if answer is None:
        return None
    out.describe(answer[0], answer[1])
    return answer[0]


def _unit(quantity: dict[str, Any]) -> str | None:
    for key in ("unit", "code"):
        value = quantity.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _quantity(quantity: Any, out: EventEmitter, where: str) -> _Value:
    # The most common value of all: field names for messages are only built when one is needed.
    if not isinstance(quantity, dict):
        raise Reject("invalid value", f"Observation.{where}valueQuantity is not an object: {quantity!r}")
    value = quantity.get("value", _ABSENT)
    if value is _ABSENT:
        numeric = None
    elif type(value) is float and -FLOAT32_MAX <= value <= FLOAT32_MAX:  # NaN fails both
        numeric = value
    else:
        numeric = out.number(value, f"{where}valueQuantity.value")
    comparator = quantity.get("comparator")
    if comparator is not None and (not isinstance(comparator, str) or comparator not in _COMPARATORS):
        raise Reject("invalid value",
                     f"Observation.{where}valueQuantity.comparator is not <, <=, >=, > or ad: {comparator!r}")
    return numeric, comparator, _unit(quantity)


def _side(value: Any, out: EventEmitter, field: str) -> tuple[float | None, str | None]:
    """(value, unit) of one side of a Range or Ratio; (None, None) when it is absent."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise Reject("invalid value", f"Observation.{field} is not an object: {value!r}")
    number = out.number(value["value"], f"{field}.value") if "value" in value else None
    return number, _unit(value)


def _range(value: Any, out: EventEmitter, field: str) -> _Value:
    if not isinstance(value, dict):
        raise Reject("invalid value", f"Observation.{field} is not an object: {value!r}")
    low, low_unit = _side(value.get("low"), out, f"{field}.low")
    high, high_unit = _side(value.get("high"), out, f"{field}.high")
    if low is not None and high is not None:
        if low_unit is not None and high_unit is not None and low_unit != high_unit:
            return None, "range", None
        return (low + high) / 2.0, "range", low_unit or high_unit
    if low is not None:
        return low, ">=", low_unit
    if high is not None:
        return high, "<=", high_unit
    return None, "range", None


def _ratio(value: Any, out: EventEmitter, field: str) -> _Value:
    if not isinstance(value, dict):
        raise Reject("invalid value", f"Observation.{field} is not an object: {value!r}")
    numerator, num_unit = _side(value.get("numerator"), out, f"{field}.numerator")
    denominator, den_unit = _side(value.get("denominator"), out, f"{field}.denominator")
    if numerator is None or denominator is None or denominator == 0:
        return None, "ratio", None
    quotient = numerator / denominator
    if abs(quotient) > FLOAT32_MAX:
        return None, "ratio", None
    if den_unit is not None:
        unit: str | None = f"{num_unit or '1'}/{den_unit}"
    else:
        unit = num_unit
    return quotient, "ratio", unit


def _period(value: Any, where: str) -> _Value:
    if not isinstance(value, dict):
        raise _invalid(where, f"valuePeriod is not an object: {value!r}")
    try:
        start = to_utc_micros(value.get("start"), start=True)
        end = to_utc_micros(value.get("end"))
    except FhirTimeError:
        return None, "period", None
    if end < start:
        return None, "period", None
    return (end - start) / DAY_US, "period", "d"
