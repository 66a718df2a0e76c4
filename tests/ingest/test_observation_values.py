"""Every Observation value type becomes a meaningful MEDS value (issue 11: real-world bad input).

Also here: MIME-wrapped base64 in DocumentReference notes, and instants that leave the years
0001..9999 once converted to UTC.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fhir_builders import LOINC, SNOMED, concept, ingest, observation, patient, ref, ts, write_ndjson

from ehrfm.ingest.events import EventEmitter, Reject
from ehrfm.ingest.fhirtime import FhirTimeError, to_utc_micros
from ehrfm.ingest.mappers.observation import map_observation
from ehrfm.ingest.references import BundleIndex
from ehrfm.ingest.vocabulary import vocabulary_for_system

AT = ts("2020-03-04T10:15:00")
VALUE_COLUMNS = ("code", "numeric_value", "text_value", "unit")
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"


def obs(oid: str, **value: Any) -> dict[str, Any]:
    """An Observation of patient p1 with exactly the value elements given (no valueQuantity)."""
    return observation(oid, "Patient/p1", code="1234-5", display="Some test", value=None, **value)


def run_of(tmp_path: Path, *resources: dict[str, Any]):
    return ingest(write_ndjson(tmp_path / "x.ndjson", [patient("p1"), *resources]), tmp_path / "out")


def values(run, resource_id: str) -> list[tuple]:
    frame = run.events.filter(pl.col("resource_id") == resource_id)
    return [tuple(row[c] for c in VALUE_COLUMNS) for row in frame.to_dicts()]


def qty(value: Any, unit: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"value": value, **extra}
    if unit is not None:
        out.update({"unit": unit, "system": "http://unitsofmeasure.org", "code": unit})
    return out


# -- valueQuantity ---------------------------------------------------------------------------

@pytest.mark.parametrize("comparator", ["<", "<=", ">=", ">", "ad"])
def test_quantity_comparator_keeps_number_and_records_the_symbol(tmp_path: Path, comparator: str) -> None:
    run = run_of(tmp_path, obs("o-cmp", valueQuantity=qty(0.01, "mg/L", comparator=comparator)),
                 obs("o-plain", valueQuantity=qty(0.01, "mg/L")))
    assert values(run, "o-cmp") == [("LOINC/1234-5", pytest.approx(0.01), comparator, "mg/L")]
    assert values(run, "o-plain") == [("LOINC/1234-5", pytest.approx(0.01), None, "mg/L")]


@pytest.mark.parametrize("comparator", ["~", "less than", 5, {"code": "<"}])
def test_quantity_with_an_unknown_comparator_is_an_invalid_value(tmp_path: Path, comparator: Any) -> None:
    run = run_of(tmp_path, obs("o-bad", valueQuantity=qty(1, comparator=comparator)))
    row = run.only_reject("invalid value")
    assert row["resource_id"] == "o-bad"
    assert row["detail"].startswith("Observation.valueQuantity.comparator is not <, <=, >=, > or ad: ")


# -- valueRange ------------------------------------------------------------------------------

def test_range_midpoint_or_one_side(tmp_path: Path) -> None:
    run = run_of(
        tmp_path,
        obs("o-both", valueRange={"low": qty(4, "mmol/L"), "high": qty(6, "mmol/L")}),
        obs("o-low", valueRange={"low": qty(10, "%")}),
        obs("o-high", valueRange={"high": qty(0.5, "ng/mL")}),
        obs("o-none", valueRange={}),
        obs("o-mixed", valueRange={"low": qty(1, "mg"), "high": qty(2, "g")}),
    )
    assert values(run, "o-both") == [("LOINC/1234-5", 5.0, "range", "mmol/L")]
    assert values(run, "o-low") == [("LOINC/1234-5", 10.0, ">=", "%")]
    assert values(run, "o-high") == [("LOINC/1234-5", 0.5, "<=", "ng/mL")]
    assert values(run, "o-none") == [("LOINC/1234-5", None, "range", None)]
    assert values(run, "o-mixed") == [("LOINC/1234-5", None, "range", None)]  # mg and g: no midpoint


def test_range_with_a_non_numeric_side_is_an_invalid_value(tmp_path: Path) -> None:
    run = run_of(tmp_path, obs("o-bad", valueRange={"low": qty("four")}))
    assert run.only_reject("invalid value")["detail"] == (
        "Observation.valueRange.low.value is not a number: 'four'")


# -- valueRatio ------------------------------------------------------------------------------

def test_ratio(tmp_path: Path) -> None:
    run = run_of(
        tmp_path,
        obs("o-titer", valueRatio={"numerator": qty(1), "denominator": qty(128)}),
        obs("o-units", valueRatio={"numerator": qty(5, "mg"), "denominator": qty(2, "mL")}),
        obs("o-per", valueRatio={"numerator": qty(3), "denominator": qty(1, "h")}),
        obs("o-zero", valueRatio={"numerator": qty(1, "mg"), "denominator": qty(0, "mL")}),
        obs("o-half", valueRatio={"numerator": qty(1, "mg")}),
    )
    assert values(run, "o-titer") == [("LOINC/1234-5", pytest.approx(1 / 128), "ratio", None)]
    assert values(run, "o-units") == [("LOINC/1234-5", 2.5, "ratio", "mg/mL")]
    assert values(run, "o-per") == [("LOINC/1234-5", 3.0, "ratio", "1/h")]
    assert values(run, "o-zero") == [("LOINC/1234-5", None, "ratio", None)]
    assert values(run, "o-half") == [("LOINC/1234-5", None, "ratio", None)]


# -- valueSampledData ------------------------------------------------------------------------

def test_sampled_data_is_a_token_never_the_data(tmp_path: Path) -> None:
    sampled = {"origin": qty(0, "mV"), "period": 10, "dimensions": 1, "data": "2041 2043 2046 E U L"}
    run = run_of(tmp_path, obs("o-ecg", valueSampledData=sampled))
    assert values(run, "o-ecg") == [("LOINC/1234-5", None, "sampled-data", None)]
    assert not any("2041" in (t or "") for t in run.events["text_value"].to_list())


# -- valuePeriod -----------------------------------------------------------------------------

def test_period_is_its_duration_in_days(tmp_path: Path) -> None:
    run = run_of(
        tmp_path,
        obs("o-hours", valuePeriod={"start": "2020-01-01T00:00:00Z", "end": "2020-01-03T12:00:00Z"}),
        obs("o-dates", valuePeriod={"start": "2020-01-01", "end": "2020-01-07"}),
        obs("o-open", valuePeriod={"start": "2020-01-01T00:00:00Z"}),
        obs("o-backwards", valuePeriod={"start": "2020-01-05", "end": "2020-01-01"}),
        obs("o-garbled", valuePeriod={"start": "yesterday", "end": "2020-01-01"}),
    )
    assert values(run, "o-hours") == [("LOINC/1234-5", 2.5, "period", "d")]
    assert values(run, "o-dates") == [("LOINC/1234-5", pytest.approx(7.0), "period", "d")]  # inclusive
    for oid in ("o-open", "o-backwards", "o-garbled"):
        assert values(run, oid) == [("LOINC/1234-5", None, "period", None)], oid


# -- valueDateTime / valueTime ---------------------------------------------------------------

def test_date_time_and_time_are_one_token_each_not_one_per_value(tmp_path: Path) -> None:
    run = run_of(
        tmp_path,
        obs("o-dt1", valueDateTime="2019-05-01T08:00:00Z"), obs("o-dt2", valueDateTime="2021-11-30"),
        obs("o-t1", valueTime="08:30:00"), obs("o-t2", valueTime="23:59:59"),
    )
    assert values(run, "o-dt1") == values(run, "o-dt2") == [("LOINC/1234-5", None, "datetime", None)]
    assert values(run, "o-t1") == values(run, "o-t2") == [("LOINC/1234-5", None, "time", None)]


# -- valueBoolean / valueInteger -------------------------------------------------------------

def test_boolean_and_integer_as_before_and_a_boolean_integer_is_invalid(tmp_path: Path) -> None:
    run = run_of(tmp_path, obs("o-yes", valueBoolean=True), obs("o-int", valueInteger=7),
                 obs("o-boolint", valueInteger=True))
    assert values(run, "o-yes") == [("LOINC/1234-5", 1.0, None, None)]
    assert values(run, "o-int") == [("LOINC/1234-5", 7.0, None, None)]
    row = run.only_reject("invalid value")
    assert (row["resource_id"], row["detail"]) == (
        "o-boolint", "Observation.valueInteger is not a number: True")


# -- no Python repr anywhere ----------------------------------------------------------------

def test_no_value_type_writes_a_python_repr(tmp_path: Path) -> None:
    every = [
        obs("v1", valueQuantity=qty(1.5, "mg", comparator="<")),
        obs("v2", valueCodeableConcept=concept(SNOMED, "260385009", "Negative")),
        obs("v3", valueString="clear"),
        obs("v4", valueBoolean=False),
        obs("v5", valueInteger=2),
        obs("v6", valueDateTime="2020-01-01T00:00:00Z"),
        obs("v7", valueTime="10:00:00"),
        obs("v8", valuePeriod={"start": "2020-01-01", "end": "2020-01-02"}),
        obs("v9", valueRange={"low": qty(1, "mg"), "high": qty(3, "mg")}),
        obs("v10", valueRatio={"numerator": qty(1, "mg"), "denominator": qty(4, "mL")}),
        obs("v11", valueSampledData={"origin": qty(0), "dimensions": 1, "data": "1 2 3"}),
        obs("v12", dataAbsentReason=concept(DATA_ABSENT, "asked-unknown", "Asked But Unknown")),
        obs("v13", valueQuantity={"value": 1, "unit": {"text": "mg"}}),  # a unit that is not text
    ]
    run = run_of(tmp_path, *every)
    assert run.summary.written == {"Observation": len(every), "Patient": 1}
    for column in ("text_value", "unit"):
        for text in run.events[column].drop_nulls().to_list():
            assert "{" not in text and "'" not in text and ":" not in text, (column, text)


@pytest.mark.parametrize("field,value", [("valueString", {"text": "x"}), ("valueDateTime", 20200101),
                                         ("valueTime", ["10:00"])])
def test_non_string_text_values_are_invalid_not_a_repr(tmp_path: Path, field: str, value: Any) -> None:
    run = run_of(tmp_path, obs("o-bad", **{field: value}))
    assert run.only_reject("invalid value")["detail"].startswith(f"Observation.{field} is not a string: ")


# -- dataAbsentReason ------------------------------------------------------------------------

def test_data_absent_reason_is_kept_as_a_coded_text(tmp_path: Path) -> None:
    reason = f"{vocabulary_for_system(DATA_ABSENT)}/not-performed"
    run = run_of(
        tmp_path,
        obs("o-absent", dataAbsentReason=concept(DATA_ABSENT, "not-performed", "Not Performed")),
        obs("o-text-only", dataAbsentReason={"text": "patient refused"}),
        obs("o-both", valueQuantity=qty(3, "mg"), dataAbsentReason=concept(DATA_ABSENT, "unknown")),
    )
    assert values(run, "o-absent") == [("LOINC/1234-5", None, reason, None)]
    assert run.description(reason) == "Not Performed"
    assert values(run, "o-text-only") == [("LOINC/1234-5", None, "TEXT/patient refused", None)]
    assert values(run, "o-both") == [("LOINC/1234-5", 3.0, None, "mg")]  # a value wins


def test_panel_with_a_data_absent_reason_and_components_writes_both(tmp_path: Path) -> None:
    reason = f"{vocabulary_for_system(DATA_ABSENT)}/unknown"
    panel = obs("o-panel", dataAbsentReason=concept(DATA_ABSENT, "unknown"), component=[
        {"code": concept(LOINC, "8480-6"), "dataAbsentReason": concept(DATA_ABSENT, "not-performed")},
        {"code": concept(LOINC, "8462-4"), "valueQuantity": qty(80, "mm[Hg]")},
    ])
    run = run_of(tmp_path, panel)
    assert values(run, "o-panel") == [
        ("LOINC/1234-5", None, reason, None),
        ("LOINC/8480-6", None, f"{vocabulary_for_system(DATA_ABSENT)}/not-performed", None),
        ("LOINC/8462-4", 80.0, None, "mm[Hg]"),
    ]


# -- components ------------------------------------------------------------------------------

def bp_panel(oid: str, *components: Any) -> dict[str, Any]:
    return observation(oid, "Patient/p1", code="85354-9", value=None,
                       component=list(components))


SYSTOLIC = {"code": concept(LOINC, "8480-6"), "valueQuantity": qty(120, "mm[Hg]")}
DIASTOLIC = {"code": concept(LOINC, "8462-4"), "valueQuantity": qty(80, "mm[Hg]")}
BAD_VALUE = {"code": concept(LOINC, "8462-4"), "valueQuantity": qty("80/", "mm[Hg]")}
NO_CODE = {"code": {"coding": [{"system": LOINC}]}, "valueQuantity": qty(70, "/min")}


def test_a_bad_component_is_skipped_and_the_good_ones_written(tmp_path: Path) -> None:
    run = run_of(tmp_path, bp_panel("bp-value", SYSTOLIC, BAD_VALUE),
                 bp_panel("bp-code", NO_CODE, DIASTOLIC, "not an object"))
    assert values(run, "bp-value") == [("LOINC/8480-6", 120.0, None, "mm[Hg]")]
    assert values(run, "bp-code") == [("LOINC/8462-4", 80.0, None, "mm[Hg]")]
    assert run.summary.written == {"Observation": 2, "Patient": 1}
    assert run.rejects.height == 0


def test_all_components_bad_and_no_panel_value_rejects_naming_the_first(tmp_path: Path) -> None:
    run = run_of(tmp_path, bp_panel("bp-bad", BAD_VALUE, NO_CODE),
                 bp_panel("bp-nocode", NO_CODE, BAD_VALUE))
    rows = {r["resource_id"]: (r["reason"], r["detail"]) for r in run.reject_rows()}
    assert rows == {
        "bp-bad": ("invalid value", "Observation.component[0].valueQuantity.value is not a number: '80/' "
                                    "(no usable component among 2)"),
        "bp-nocode": ("no code", "Observation.component[0].code has no coding and no text "
                                 "(no usable component among 2)"),
    }
    assert run.summary.written == {"Patient": 1}


def test_all_components_bad_but_a_panel_value_writes_the_panel(tmp_path: Path) -> None:
    panel = bp_panel("bp-panel", BAD_VALUE) | {"valueString": "see components"}
    run = run_of(tmp_path, panel)
    assert values(run, "bp-panel") == [("LOINC/85354-9", None, "see components", None)]


def _emitter() -> EventEmitter:
    out = EventEmitter()
    out.begin("Observation", "bp", BundleIndex.empty(), 0, 1)
    return out


def test_skipped_components_are_counted_and_rolled_back_with_a_rejected_resource() -> None:
    out = _emitter()
    map_observation(bp_panel("bp", SYSTOLIC, BAD_VALUE, NO_CODE) | {"effectiveDateTime": "2020-01-01"}, out)
    assert out.emitted() == 1
    assert out.skipped_parts == {("Observation", "invalid value"): 1, ("Observation", "no code"): 1}
    out.begin("Observation", "bp2", BundleIndex.empty(), 0, 2)
    with pytest.raises(Reject):
        map_observation(bp_panel("bp2", BAD_VALUE) | {"effectiveDateTime": "2020-01-01"}, out)
    out.rollback()
    assert out.skipped_parts == {("Observation", "invalid value"): 1, ("Observation", "no code"): 1}


# -- DocumentReference: MIME-wrapped base64 --------------------------------------------------

def document(did: str, data: str) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "id": did, "status": "current",
            "subject": ref("Patient/p1"), "date": "2020-03-04T10:00:00Z", "type": concept(LOINC, "34117-2"),
            "content": [{"attachment": {"contentType": "text/plain", "data": data}}]}


def test_mime_wrapped_base64_note_is_decoded(tmp_path: Path) -> None:
    note = "Patient reports a mild headache since Tuesday. " * 8
    encoded = base64.b64encode(note.encode("utf-8")).decode("ascii")
    wrapped = "\r\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76)) + "\n"
    spaced = " \t".join(encoded[i:i + 40] for i in range(0, len(encoded), 40))
    run = run_of(tmp_path, document("doc-mime", wrapped), document("doc-spaced", spaced),
                 document("doc-bad", wrapped.replace("\r\n", "\r\n*", 1)))
    assert "\n" in wrapped
    assert run.events_of("doc-mime")[0]["text_value"] == note
    assert run.events_of("doc-spaced")[0]["text_value"] == note
    row = run.only_reject("invalid value")  # other non-alphabet characters are still rejected
    assert (row["resource_id"], row["detail"]) == (
        "doc-bad", "DocumentReference.content[0].attachment.data is not valid base64")


# -- fhirtime: outside years 0001..9999 once in UTC ------------------------------------------

@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-05:00",
                                   "0001-01-01T13:59:59.999999+14:00"])
def test_instant_leaving_the_representable_years_raises(value: str) -> None:
    with pytest.raises(FhirTimeError, match="outside the years 0001..9999") as info:
        to_utc_micros(value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00-01:00",
                                   "9999-12-31T23:59:59.999999Z", "9999-12-31T23:00:00+05:00",
                                   "0001-01-01T14:00:00+14:00"])
def test_instant_at_the_edges_of_the_representable_years_is_kept(value: str) -> None:
    assert isinstance(to_utc_micros(value), int)


def test_observation_at_an_unrepresentable_time_is_rejected_cleanly(tmp_path: Path) -> None:
    run = run_of(tmp_path, observation("o-edge", effective="9999-12-31T23:00:00-05:00"),
                 observation("o-ok", effective="2020-01-01T00:00:00Z"))
    row = run.only_reject("invalid date")
    assert (row["resource_id"], row["detail"]) == (
        "o-edge", "Observation.effectiveDateTime: '9999-12-31T23:00:00-05:00' falls outside the years "
                  "0001..9999 once converted to UTC")
    assert run.summary.written == {"Observation": 1, "Patient": 1}
    assert values(run, "o-ok") == [("LOINC/2160-0", pytest.approx(1.2), None, "mg/dL")]
