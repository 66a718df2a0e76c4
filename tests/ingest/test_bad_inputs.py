"""Bad input never crashes ingest nor disappears: each ends as a reject row a person can act on.

Every test runs ``ehrfm.ingest_fhir`` through ``fhir_builders.ingest``, which also checks that
the counts balance (read = written + skipped + rejected, per type and in total), that the reject
table has exactly one row per counted reject, and that the output validates against MEDS.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import orjson
import polars as pl
import pytest
from fhir_builders import (
    bundle,
    concept,
    encounter,
    ingest,
    observation,
    patient,
    ref,
    sid,
    ts,
    write_json,
    write_ndjson,
)


def _src(path: Path) -> str:
    return str(path.resolve())


def _values(run, resource_type: str = "Observation") -> dict[str, float]:
    rows = run.events.filter(pl.col("resource_type") == resource_type)
    return dict(zip(rows["resource_id"].to_list(), rows["numeric_value"].to_list()))


# -- unreadable pieces of files --------------------------------------------------------------

def test_malformed_json_line(tmp_path: Path) -> None:
    bad_line = '{"resourceType": "Observation", "id": "o-bad", "status": "final", '
    src = write_ndjson(tmp_path / "in" / "mixed.ndjson", [
        patient("p1"), observation("o1"), bad_line, observation("o2", value=2.5),
    ])
    run = ingest(tmp_path / "in", tmp_path / "out")

    assert run.summary.totals() == {"read": 4, "written": 3, "skipped": 0, "rejected": 1}
    assert run.summary.read == {"(unreadable)": 1, "Observation": 2, "Patient": 1}
    assert run.summary.rejected == {"(unreadable)": {"malformed JSON": 1}}
    row = run.only_reject("malformed JSON")
    assert row["source_file"] == _src(src)
    assert row["location"] == "line 3"
    assert "unexpected end of data" in row["detail"] and "column" in row["detail"]
    assert row["excerpt"].startswith(bad_line)  # the id is readable by a person in the excerpt
    assert _values(run) == {"o1": pytest.approx(1.2), "o2": pytest.approx(2.5)}


def _gzip_with_cut(good: list[dict], tail: list[dict], keep_tail_fraction: float) -> bytes:
    """gzip of ``good`` lines (sync-flushed), then ``tail`` lines, cut inside the tail."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        handle.write(b"".join(orjson.dumps(r) + b"\n" for r in good))
        handle.flush()  # everything before this point is decodable on its own
        flushed = buffer.tell()
        handle.write(b"".join(orjson.dumps(r) + b"\n" for r in tail))
    data = buffer.getvalue()
    cut = flushed + int((len(data) - flushed) * keep_tail_fraction)
    assert flushed < cut < len(data) - 8
    return data[:cut]


def test_truncated_ndjson_gz_keeps_lines_before_the_cut(tmp_path: Path) -> None:
    good = [patient("p1")] + [observation(f"o{i}", value=float(i)) for i in range(1, 6)]
    # One long line after the flush: the cut always lands inside it.
    long_note = observation("o-tail", valueString="x" * 50_000, value=None)
    long_note["note"] = [{"text": "".join(f"{i:05d}" for i in range(20_000))}]
    src = tmp_path / "in" / "Observation.ndjson.gz"
    src.parent.mkdir()
    src.write_bytes(_gzip_with_cut(good, [long_note], keep_tail_fraction=0.5))

    run = ingest(src, tmp_path / "out")

    assert run.summary.written == {"Observation": 5, "Patient": 1}
    assert sorted(_values(run)) == ["o1", "o2", "o3", "o4", "o5"]
    assert run.summary.rejected == {"(unreadable)": {"truncated or corrupt file": 1}}
    row = run.only_reject("truncated or corrupt file")
    assert row["source_file"] == _src(src)
    assert row["location"] == "line 7"  # the line that could not be completed
    assert "reading stopped after line 6" in row["detail"]
    assert run.summary.totals() == {"read": 7, "written": 6, "skipped": 0, "rejected": 1}


def test_truncated_json_gz_bundle(tmp_path: Path) -> None:
    payload = orjson.dumps(bundle(patient("p1"), *[observation(f"o{i}") for i in range(200)]))
    data = gzip.compress(payload, mtime=0)
    src = tmp_path / "in" / "bundle.json.gz"
    src.parent.mkdir()
    src.write_bytes(data[: len(data) // 2])
    intact = write_json(tmp_path / "in" / "other.json",
                        bundle(patient("p2"), observation("q1", "urn:uuid:p2")))

    run = ingest(tmp_path / "in", tmp_path / "out")

    row = run.only_reject("truncated or corrupt file")
    assert row["source_file"] == _src(src)
    assert row["location"] == "whole file"
    assert "end-of-stream" in row["detail"] or "Compressed file ended" in row["detail"]
    assert run.summary.totals() == {"read": 3, "written": 2, "skipped": 0, "rejected": 1}
    assert set(run.events["resource_id"].to_list()) == {"p2", "q1"}
    assert _src(intact) not in run.rejects["source_file"].to_list()


@pytest.mark.parametrize("name,content", [
    ("empty.ndjson", b""),
    ("blank.ndjson", b"\n  \n\n"),
    ("empty.json", b""),
    ("blank.json", b"  \n"),
    ("empty.ndjson.gz", gzip.compress(b"", mtime=0)),
])
def test_empty_file(tmp_path: Path, name: str, content: bytes) -> None:
    src = tmp_path / "in" / name
    src.parent.mkdir()
    src.write_bytes(content)
    write_ndjson(tmp_path / "in" / "ok.ndjson", [patient("p1")])

    run = ingest(tmp_path / "in", tmp_path / "out")

    row = run.only_reject("empty file")
    assert row["source_file"] == _src(src)
    assert row["location"] == "whole file"
    assert row["detail"] == "the file holds no resources"
    assert run.summary.totals() == {"read": 2, "written": 1, "skipped": 0, "rejected": 1}


def test_line_that_is_a_json_array(tmp_path: Path) -> None:
    # A line may hold an array of resources; what in it is not a resource is rejected element by element.
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), f"[1, {orjson.dumps(observation('o1')).decode()}]",
                                              '"just a string"'])
    run = ingest(src, tmp_path / "out")

    rows = run.reject_rows("not a JSON object")
    assert [(r["location"], r["detail"]) for r in rows] == [
        ("line 2, Bundle entry 0", "array element 0 is a number, not a resource"),
        ("line 3", "the line holds a string, not a resource"),
    ]
    assert all(r["source_file"] == _src(src) for r in rows)
    assert rows[1]["excerpt"].startswith('"just a string"')
    assert run.summary.written == {"Observation": 1, "Patient": 1}
    assert run.summary.totals() == {"read": 4, "written": 2, "skipped": 0, "rejected": 2}


def test_object_without_resource_type(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), {"id": "mystery", "status": "final"}])
    run = ingest(src, tmp_path / "out")
    row = run.only_reject("missing resourceType")
    assert (row["location"], row["resource_id"]) == ("line 2", "mystery")
    assert "resourceType" in row["detail"]


def test_bundle_entry_without_resource(tmp_path: Path) -> None:
    value = bundle(patient("p1"))
    value["entry"].append({"fullUrl": "urn:uuid:nothing"})
    src = write_json(tmp_path / "b.json", value)
    run = ingest(src, tmp_path / "out")
    row = run.only_reject("bundle entry without resource")
    assert (row["source_file"], row["location"]) == (_src(src), "entry 1")
    assert row["detail"] == "entry 1 has no resource object"


# -- resources that parse but cannot become events -------------------------------------------

def test_resource_without_subject(tmp_path: Path) -> None:
    orphan = observation("o-nosubj")
    del orphan["subject"]
    src = write_ndjson(tmp_path / "Observation.ndjson", [patient("p1"), orphan, observation("o1")])
    run = ingest(src, tmp_path / "out")

    row = run.only_reject("no subject")
    assert row == {
        "source_file": _src(src), "location": "line 2", "resource_type": "Observation",
        "resource_id": "o-nosubj", "reason": "no subject",
        "detail": "Observation.subject.reference is missing", "excerpt": None,
    }
    assert run.summary.rejected == {"Observation": {"no subject": 1}}
    assert run.summary.written == {"Observation": 1, "Patient": 1}


def test_reference_to_unknown_patient(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "in" / "obs.ndjson", [
        observation("o1"), observation("o-ghost", "Patient/ghost"),
    ])
    write_ndjson(tmp_path / "in" / "patients.ndjson", [patient("p1")])
    run = ingest(tmp_path / "in", tmp_path / "out")

    row = run.only_reject("unknown patient")
    assert row["source_file"] == _src(src)
    assert row["location"] == "line 2"
    assert (row["resource_type"], row["resource_id"]) == ("Observation", "o-ghost")
    assert row["detail"] == "refers to Patient/ghost, which is not in the input"
    assert sid("ghost") not in run.events["subject_id"].to_list()
    assert run.summary.subjects == 1


def test_unknown_patient_inside_a_bundle_names_the_entry(tmp_path: Path) -> None:
    src = write_json(tmp_path / "b.json", bundle(
        patient("p1"), observation("o1", "urn:uuid:p1"), observation("o2", "urn:uuid:not-here"),
    ))
    run = ingest(src, tmp_path / "out")
    row = run.only_reject("unknown patient")
    assert (row["location"], row["resource_id"]) == ("entry 2", "o2")
    assert row["detail"] == "refers to Patient/not-here, which is not in the input"


def test_subject_that_is_not_a_patient(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), observation("o-grp", "Group/g1")])
    run = ingest(src, tmp_path / "out")
    row = run.only_reject("unresolvable subject reference")
    assert (row["location"], row["resource_id"]) == ("line 2", "o-grp")
    assert "'Group/g1'" in row["detail"]


def test_invalid_date(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "x.ndjson", [
        patient("p1"), observation("o-bad-date", effective="2020-13-45"), observation("o1"),
    ])
    run = ingest(src, tmp_path / "out")
    row = run.only_reject("invalid date")
    assert (row["location"], row["resource_type"], row["resource_id"]) == (
        "line 2", "Observation", "o-bad-date")
    assert "Observation.effectiveDateTime" in row["detail"] and "'2020-13-45'" in row["detail"]
    assert run.summary.written == {"Observation": 1, "Patient": 1}


@pytest.mark.parametrize("bad", ["2020-02-30", "2020-01-01T25:00:00Z", "yesterday", "2020-1-5"])
def test_other_invalid_dates(tmp_path: Path, bad: str) -> None:
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), observation("o-bad", effective=bad)])
    run = ingest(src, tmp_path / "out")
    row = run.only_reject("invalid date")
    assert row["resource_id"] == "o-bad" and repr(bad) in row["detail"]


def test_partial_dates_are_written_at_the_documented_time(tmp_path: Path) -> None:
    # Rule (fhirtime.py): a start field takes the first microsecond of the span, any other
    # field the last one.
    src = write_ndjson(tmp_path / "x.ndjson", [
        patient("p1", birth="1970", deceasedDateTime="2021-02"),
        encounter("e1", start="2020-02", end="2020-02"),
        observation("o-year", effective="2020"),
        observation("o-month", effective="2020-02"),
        observation("o-day", effective="2019-07-15"),
    ])
    run = ingest(src, tmp_path / "out")
    assert run.summary.rejected == {}
    times = {(r["resource_id"], r["code"]): r["time"] for r in run.events.to_dicts()}
    assert times[("p1", "MEDS_BIRTH")] == ts("1970-01-01T00:00:00")
    assert times[("p1", "MEDS_DEATH")] == ts("2021-02-28T23:59:59.999999")
    assert times[("e1", "VISIT_START/AMB")] == ts("2020-02-01T00:00:00")
    assert times[("e1", "VISIT_END/AMB")] == ts("2020-02-29T23:59:59.999999")
    assert times[("o-year", "LOINC/2160-0")] == ts("2020-12-31T23:59:59.999999")
    assert times[("o-month", "LOINC/2160-0")] == ts("2020-02-29T23:59:59.999999")
    assert times[("o-day", "LOINC/2160-0")] == ts("2019-07-15T23:59:59.999999")


def test_non_numeric_value_quantity(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), observation("o-text", value="12 mg")])
    run = ingest(src, tmp_path / "out")
    row = run.only_reject("invalid value")
    assert (row["location"], row["resource_type"], row["resource_id"]) == ("line 2", "Observation", "o-text")
    assert row["detail"].endswith("valueQuantity.value is not a number: '12 mg'")


def test_invalid_value_detail_names_the_field_once(tmp_path: Path) -> None:
    bp = observation("bp1", code="85354-9", value=None, component=[
        {"code": concept("http://loinc.org", "8480-6"), "valueQuantity": {"value": 120, "unit": "mm[Hg]"}},
        {"code": concept("http://loinc.org", "8462-4"), "valueQuantity": {"value": "80/", "unit": "mm[Hg]"}},
    ])
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), observation("o-text", value="12 mg"), bp])
    run = ingest(src, tmp_path / "out")
    details = {r["resource_id"]: r["detail"] for r in run.reject_rows("invalid value")}
    assert details == {
        "o-text": "Observation.valueQuantity.value is not a number: '12 mg'",
    }


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_tokens(tmp_path: Path, token: str) -> None:
    line = orjson.dumps(observation("o-nan", value=1.0)).replace(b'"value":1.0', f'"value":{token}'.encode())
    assert token.encode() in line
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), line, observation("o1")])
    run = ingest(src, tmp_path / "out")
    row = run.only_reject("malformed JSON")
    assert (row["source_file"], row["location"]) == (_src(src), "line 2")
    assert "(NaN and Infinity are not JSON numbers)" in row["detail"]
    assert run.summary.written == {"Observation": 1, "Patient": 1}


def test_number_out_of_double_range(tmp_path: Path) -> None:
    # 1e999 is valid JSON beyond float range: the one resource holding it is rejected, by field.
    line = orjson.dumps(observation("o-huge", value=1.0)).replace(b'"value":1.0', b'"value":1e999')
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), line, observation("o-ok", value=2.0)])
    run = ingest(src, tmp_path / "out")
    row = run.only_reject("invalid value")
    assert (row["location"], row["resource_id"]) == ("line 2", "o-huge")
    assert "valueQuantity.value is not finite" in row["detail"]
    assert _values(run) == {"o-ok": 2.0}


def test_number_out_of_range_rejects_one_resource_of_a_bundle(tmp_path: Path) -> None:
    text = orjson.dumps(bundle(patient("p1"), observation("o-huge", value=1.0), observation("o-ok", value=2.0)))
    src = tmp_path / "b.json"
    src.write_bytes(text.replace(b'"value":1.0', b'"value":1e400'))
    run = ingest(src, tmp_path / "out")
    assert run.only_reject("invalid value")["resource_id"] == "o-huge"
    assert _values(run) == {"o-ok": 2.0}
    assert run.summary.written == {"Observation": 1, "Patient": 1}


@pytest.mark.parametrize("value,fragment", [
    ("NaN", "is not a number: 'NaN'"),
    (1e39, "is not finite in float32: 1e+39"),
    (True, "is not a number: True"),
])
def test_values_that_are_not_finite_float32_numbers(tmp_path: Path, value, fragment: str) -> None:
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), observation("o-bad", value=value)])
    run = ingest(src, tmp_path / "out")
    row = run.only_reject("invalid value")
    assert row["resource_id"] == "o-bad"
    assert row["detail"].endswith(f"valueQuantity.value {fragment}")


def test_duplicate_ids_across_files_first_sorted_file_wins(tmp_path: Path) -> None:
    # Written in reverse order on purpose: sorted path order decides, not creation order.
    later = write_ndjson(tmp_path / "in" / "z_second.ndjson", [observation("o1", value=2.0), patient("p1")])
    first = write_ndjson(tmp_path / "in" / "a_first.ndjson", [patient("p1"), observation("o1", value=1.0)])
    run = ingest(tmp_path / "in", tmp_path / "out")

    assert _values(run) == {"o1": 1.0}
    # Same content: a plain duplicate; different content: a conflict, both naming the copy kept.
    assert run.summary.rejected == {"Observation": {"conflicting duplicate": 1},
                                    "Patient": {"duplicate resource": 1}}
    observation_row = run.only_reject("conflicting duplicate")
    assert observation_row["source_file"] == _src(later)
    assert observation_row["location"] == "line 1"
    assert observation_row["resource_id"] == "o1"
    assert observation_row["detail"] == (
        f"Observation/o1 differs from the copy in {_src(first)} (line 2), which is kept because "
        "it was read first (meta.lastUpdated does not decide)")
    patient_row = run.only_reject("duplicate resource")
    assert patient_row["location"] == "line 2"
    assert patient_row["detail"] == (
        f"Patient/p1 was also read from {_src(first)} (line 1), with the same content; that copy is kept")
    # The patient's static facts are written once, not twice.
    assert run.events.filter(pl.col("code") == "GENDER/female").height == 1


def test_duplicate_id_for_different_patients_in_different_shards(tmp_path: Path) -> None:
    # Same Observation id for two different patients in two files: still one resource read
    # twice, so the copy in the later file must be rejected whatever the shard layout.
    a, b = "p1", "p2"
    assert sid(a) % 64 != sid(b) % 64  # different spill buckets
    write_ndjson(tmp_path / "in" / "patients.ndjson", [patient(a), patient(b)])
    write_ndjson(tmp_path / "in" / "obs_a.ndjson", [observation("o1", f"Patient/{a}", value=1.0)])
    write_ndjson(tmp_path / "in" / "obs_b.ndjson", [observation("o1", f"Patient/{b}", value=2.0)])

    one = ingest(tmp_path / "in", tmp_path / "out1", num_shards=1)
    assert _values(one) == {"o1": 1.0}
    assert one.summary.rejected == {"Observation": {"conflicting duplicate": 1}}

    many = ingest(tmp_path / "in", tmp_path / "out64", num_shards=64)
    assert _values(many) == {"o1": 1.0}
    assert many.summary.rejected == {"Observation": {"conflicting duplicate": 1}}


def test_non_utf8_bytes(tmp_path: Path) -> None:
    good = orjson.dumps(observation("o-latin", value=None, valueString="Caf_"))
    bad_line = good.replace(b"Caf_", b"Caf\xe9")
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), bad_line])

    run = ingest(src, tmp_path / "out")
    row = run.only_reject("invalid UTF-8")
    assert (row["source_file"], row["location"]) == (_src(src), "line 2")
    offset = bad_line.index(b"\xe9")
    assert row["detail"] == f"byte {offset} is not UTF-8 (b'\\xe9')"
    assert "o-latin" in row["excerpt"]

    replaced = ingest(src, tmp_path / "out2", replace_bad_utf8=True)
    assert replaced.summary.rejected == {}
    assert replaced.events_of("o-latin")[0]["text_value"] == "Caf\ufffd"


def test_non_utf8_bytes_in_a_bundle_file(tmp_path: Path) -> None:
    raw = orjson.dumps(bundle(patient("p1"),
                              observation("o1", "urn:uuid:p1", value=None, valueString="Caf_")))
    src = tmp_path / "b.json"
    src.write_bytes(raw.replace(b"Caf_", b"Caf\xe9"))
    run = ingest(src, tmp_path / "out")
    row = run.only_reject("invalid UTF-8")
    assert row["location"] == "whole file"
    replaced = ingest(src, tmp_path / "out2", replace_bad_utf8=True)
    assert replaced.summary.written == {"Observation": 1, "Patient": 1}


def test_unknown_resource_type(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), {"resourceType": "Foo", "id": "f1"}])
    run = ingest(src, tmp_path / "out")
    row = run.only_reject("unknown resourceType")
    assert (row["location"], row["resource_type"], row["resource_id"]) == ("line 2", "Foo", "f1")
    assert row["detail"] == "'Foo' is not a FHIR R4 resource type"
    assert run.summary.read == {"Foo": 1, "Patient": 1}


def _claim() -> dict:
    return {"resourceType": "Claim", "id": "cl1", "status": "active", "use": "claim",
            "patient": ref("Patient/p1"), "created": "2020-03-04T10:00:00Z",
            "type": concept("http://terminology.hl7.org/CodeSystem/claim-type", "professional"),
            "priority": concept("http://terminology.hl7.org/CodeSystem/processpriority", "normal"),
            "provider": ref("Organization/org1"), "insurance": [],
            "total": {"value": 10.0, "currency": "USD"}}


def test_claim_is_skipped_by_type_and_counted(tmp_path: Path) -> None:
    eob = {"resourceType": "ExplanationOfBenefit", "id": "eob1", "patient": ref("Patient/p1")}
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), _claim(), eob, _claim() | {"id": "cl2"}])
    run = ingest(src, tmp_path / "out")
    assert run.summary.skipped == {"Claim": {"skipped type": 2}, "ExplanationOfBenefit": {"skipped type": 1}}
    assert run.summary.read == {"Claim": 2, "ExplanationOfBenefit": 1, "Patient": 1}
    assert run.summary.rejected == {}
    assert "Claim" not in run.events["resource_type"].to_list()


def test_skip_types_is_configurable(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), _claim()])
    run = ingest(src, tmp_path / "out", skip_types=[], unmapped_types="reject")
    row = run.only_reject("no mapper")
    assert (row["resource_type"], row["resource_id"]) == ("Claim", "cl1")


def _care_plan() -> dict:
    return {"resourceType": "CarePlan", "id": "cp1", "status": "active", "intent": "order",
            "subject": ref("Patient/p1"), "period": {"start": "2020-03-04T10:00:00Z"}}


def test_unmapped_type_skipped_by_default(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), _care_plan()])
    run = ingest(src, tmp_path / "out")
    assert run.summary.skipped == {"CarePlan": {"no mapper": 1}}


def test_unmapped_type_rejected_when_configured(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), _care_plan()])
    run = ingest(src, tmp_path / "out", unmapped_types="reject")
    row = run.only_reject("no mapper")
    assert (row["source_file"], row["location"]) == (_src(src), "line 2")
    assert (row["resource_type"], row["resource_id"]) == ("CarePlan", "cp1")
    assert row["detail"] == "ehrfm has no mapper for CarePlan (unmapped_types=reject)"
    assert run.summary.skipped == {}


def test_strict_mode_rejects_r4_invalid_resources_and_keeps_valid_ones(tmp_path: Path) -> None:
    no_status = observation("o-nostatus")
    del no_status["status"]
    r5_class = encounter("e-r5",
                         **{"class": [concept("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB")]})
    src = write_ndjson(tmp_path / "x.ndjson", [
        patient("p1"), encounter("e1"), observation("o1"), no_status,
        observation("o-extra", valueX=1), r5_class,
        {"resourceType": "Condition", "id": "c1", "subject": ref("Patient/p1"),
         "code": concept("http://snomed.info/sct", "44054006"), "onsetDateTime": "2020-01-01T00:00:00Z"},
    ])
    loose = ingest(src, tmp_path / "loose")
    assert loose.summary.written == {"Condition": 1, "Encounter": 2, "Observation": 3, "Patient": 1}

    strict = ingest(src, tmp_path / "strict", strict=True)
    assert strict.summary.written == {"Condition": 1, "Encounter": 1, "Observation": 1, "Patient": 1}
    assert strict.summary.rejected == {"Encounter": {"strict validation failed": 1},
                                       "Observation": {"strict validation failed": 2}}
    rows = {r["resource_id"]: r for r in strict.reject_rows("strict validation failed")}
    assert {k: (v["location"], v["resource_type"]) for k, v in rows.items()} == {
        "o-nostatus": ("line 4", "Observation"), "o-extra": ("line 5", "Observation"),
        "e-r5": ("line 6", "Encounter"),
    }
    assert rows["o-nostatus"]["detail"].startswith("status:")
    assert rows["o-extra"]["detail"].startswith("valueX:")
    assert rows["e-r5"]["detail"].startswith("class")
    assert all(r["source_file"] == _src(src) for r in rows.values())


def test_strict_mode_rejects_a_status_outside_its_required_value_set(tmp_path: Path) -> None:
    # Observation.status has a required binding (registered | preliminary | final | amended |
    # corrected | cancelled | entered-in-error | unknown): "bogus" is not valid R4.
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), observation("o1"),
                                               observation("o-bogus", status="bogus")])
    strict = ingest(src, tmp_path / "strict", strict=True)
    row = strict.only_reject("strict validation failed")
    assert (row["location"], row["resource_id"]) == ("line 3", "o-bogus")
    assert "status" in row["detail"]
    assert strict.summary.written == {"Observation": 1, "Patient": 1}


def test_strict_mode_accepts_a_transaction_bundle_without_ids(tmp_path: Path) -> None:
    p = patient("p1")
    o = observation("o1", "urn:uuid:11111111-1111-4111-8111-111111111111")
    del p["id"], o["id"]
    value = bundle(p, o, kind="transaction", full_urls=[
        "urn:uuid:11111111-1111-4111-8111-111111111111", "urn:uuid:22222222-2222-4222-8222-222222222222",
    ])
    run = ingest(write_json(tmp_path / "t.json", value), tmp_path / "out", strict=True)
    assert run.summary.written == {"Observation": 1, "Patient": 1}
    assert run.subjects["fhir_patient_id"].to_list() == ["11111111-1111-4111-8111-111111111111"]


# -- all of it at once, in parallel ----------------------------------------------------------

def _mixed_bad_directory(root: Path) -> Path:
    folder = root / "mixed"
    write_ndjson(folder / "Patient.ndjson", [patient("p1"), patient("p2", gender="male"), "{not json"])
    write_ndjson(folder / "Observation.ndjson", [
        observation("o1"), observation("o2", "Patient/p2", value="12 mg"),
        observation("o3", effective="2020-13-45"),
        observation("o4", "Patient/ghost"), "[1]", b'{"resourceType":"Observation","id":"x\xff"}',
        {"resourceType": "Foo", "id": "f1"}, _claim(), _care_plan(),
        observation("o5", "Patient/p2", value=3.0),
    ])
    write_ndjson(folder / "dupes.ndjson", [observation("o1", value=9.0)])
    (folder / "empty.ndjson").write_bytes(b"")
    (folder / "empty.json").write_bytes(b"")
    write_json(folder / "bundle.json", bundle(
        patient("p3"), encounter("e3", "urn:uuid:p3"),
        observation("o6", "urn:uuid:p3", effective=None, encounter=ref("urn:uuid:e3")),
    ))
    data = gzip.compress(orjson.dumps(bundle(patient("p9"), observation("o9", "urn:uuid:p9"))), mtime=0)
    (folder / "cut.json.gz").write_bytes(data[: len(data) // 2])
    return folder


def test_mixed_bad_directory_same_result_with_two_workers(tmp_path: Path) -> None:
    folder = _mixed_bad_directory(tmp_path)
    one = ingest(folder, tmp_path / "w1", workers=1)
    two = ingest(folder, tmp_path / "w2", workers=2)

    assert one.summary.totals() == {"read": 20, "written": 7, "skipped": 2, "rejected": 11}
    assert one.summary.rejected_by_reason() == {
        "conflicting duplicate": 1, "empty file": 2, "invalid UTF-8": 1, "invalid date": 1, "invalid value": 1,
        "malformed JSON": 1, "not a JSON object": 1, "truncated or corrupt file": 1,
        "unknown patient": 1, "unknown resourceType": 1,
    }
    for attr in ("read", "written", "skipped", "rejected"):
        assert getattr(two.summary, attr) == getattr(one.summary, attr), attr
    assert two.rejects.sort(pl.all()).equals(one.rejects.sort(pl.all()))
    assert two.events.equals(one.events)
    # The timeless Observation took its encounter's start.
    assert two.events_of("o6")[0]["time"] == ts("2020-03-04T10:00:00")


def test_small_chunks_give_the_same_dataset(tmp_path: Path) -> None:
    folder = _mixed_bad_directory(tmp_path)
    default = ingest(folder, tmp_path / "default")
    chunked = ingest(folder, tmp_path / "chunked", chunk_events=1)
    assert chunked.summary.totals() == default.summary.totals()
    assert chunked.events.equals(default.events)
    assert chunked.rejects.equals(default.rejects)
    assert chunked.codes.equals(default.codes)


def test_code_descriptions_do_not_depend_on_worker_count(tmp_path: Path) -> None:
    # The same code with two displays in two files: the description must be the same whatever
    # the number of workers (here: the first file in sorted order, as for duplicates).
    write_ndjson(tmp_path / "in" / "a.ndjson", [patient("p1"), observation("o1", display="Creatinine")])
    write_ndjson(tmp_path / "in" / "b.ndjson", [patient("p2")] + [
        observation(f"q{i}", "Patient/p2", display="Creatinine [Mass/volume] in Serum or Plasma")
        for i in range(50)
    ])
    one = ingest(tmp_path / "in", tmp_path / "w1", workers=1)
    two = ingest(tmp_path / "in", tmp_path / "w2", workers=2)
    assert one.description("LOINC/2160-0") == "Creatinine"
    assert two.description("LOINC/2160-0") == "Creatinine"
    assert two.codes.equals(one.codes)


def test_medication_descriptions_do_not_depend_on_chunk_size(tmp_path: Path) -> None:
    # Two Medication resources with one code and two displays: the first read should describe
    # the code, however often the worker spills its buffer to disk.
    def med(mid: str, display: str) -> dict:
        return {"resourceType": "Medication", "id": mid,
                "code": concept("http://www.nlm.nih.gov/research/umls/rxnorm", "314076", display)}

    mr = {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order",
          "subject": ref("Patient/p0"), "authoredOn": "2020-01-01T00:00:00Z",
          "medicationReference": ref("Medication/m1")}
    lines = [patient("p0"), patient("p1"), med("m1", "first display"), mr]
    lines += [patient(f"p{i}") for i in range(2, 6)] + [med("m2", "second display"), patient("p6")]
    src = write_ndjson(tmp_path / "x.ndjson", lines)
    default = ingest(src, tmp_path / "default")
    chunked = ingest(src, tmp_path / "chunked", chunk_events=1)
    assert default.description("RxNorm/314076") == "first display"
    assert chunked.description("RxNorm/314076") == "first display"


# -- wrongly typed values inside otherwise valid JSON: never a crash -------------------------

def _wrongly_typed_cases() -> dict[str, dict]:
    display_int = observation("o-x")
    display_int["code"] = {"coding": [{"system": "http://loinc.org", "code": "9999-9", "display": 9999}]}
    unit_int = observation("o-x")
    unit_int["valueQuantity"] = {"value": 1.0, "unit": 5}
    status_coding_int = {"resourceType": "Condition", "id": "o-x", "subject": ref("Patient/p1"),
                         "code": concept("http://snomed.info/sct", "44054006"), "onsetDateTime": "2020-01-01",
                         "verificationStatus": {"coding": 1}}
    imaging_display_int = {"resourceType": "ImagingStudy", "id": "o-x", "subject": ref("Patient/p1"),
                           "started": "2020-01-01T00:00:00Z",
                           "series": [{"modality": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                                    "code": "DX", "display": 5}}]}
    return {"coding.display is a number": display_int, "valueQuantity.unit is a number": unit_int,
            "verificationStatus.coding is a number": status_coding_int,
            "series.modality.display is a number": imaging_display_int}


@pytest.mark.parametrize("case", list(_wrongly_typed_cases()))
def test_wrongly_typed_field_does_not_crash_the_run(tmp_path: Path, case: str) -> None:
    resource = _wrongly_typed_cases()[case]
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), observation("o1"), resource])
    run = ingest(src, tmp_path / "out")  # must finish; balance and MEDS validity checked inside
    kind = resource["resourceType"]
    assert run.summary.read[kind] == (1 if kind != "Observation" else 2)
    assert "o1" in run.events["resource_id"].to_list()
    # The odd resource is written or rejected with its id, never lost.
    if "o-x" not in run.events["resource_id"].to_list():
        row = run.reject_rows()[0]
        assert (row["location"], row["resource_id"]) == ("line 3", "o-x")


def test_strict_mode_contained_resource_with_unknown_type_does_not_crash(tmp_path: Path) -> None:
    mr = {"resourceType": "MedicationRequest", "id": "mr-typo", "status": "active", "intent": "order",
          "subject": ref("Patient/p1"), "authoredOn": "2020-01-01T00:00:00Z",
          "medicationReference": ref("#m"),
          "contained": [{"resourceType": "Medicaton", "id": "m",
                         "code": concept("http://www.nlm.nih.gov/research/umls/rxnorm", "314076")}]}
    src = write_ndjson(tmp_path / "x.ndjson", [patient("p1"), observation("o1"), mr])
    run = ingest(src, tmp_path / "out", strict=True)
    row = run.only_reject("strict validation failed")
    assert (row["location"], row["resource_type"], row["resource_id"]) == (
        "line 3", "MedicationRequest", "mr-typo")
    assert "Medicaton" in row["detail"]
    assert run.summary.written == {"Observation": 1, "Patient": 1}


# -- outputs that overlap the inputs ---------------------------------------------------------

@pytest.mark.parametrize("where", ["same", "inside", "around", "around_file_input"])
def test_an_output_overlapping_the_input_is_refused_and_the_input_survives(tmp_path: Path, where: str) -> None:
    import ehrfm
    from ehrfm.outputs import OutputOverlapsInputError

    fhir = tmp_path / "site" / "fhir"
    src = write_ndjson(fhir / "data" / "patients.ndjson", [patient("p1"), observation("o1")])
    before = src.read_bytes()
    inputs = {"same": fhir, "inside": fhir, "around": fhir, "around_file_input": src}[where]
    output = {"same": fhir, "inside": fhir / "out", "around": tmp_path / "site",
              "around_file_input": fhir}[where]
    with pytest.raises(OutputOverlapsInputError, match=r"ehrfm never writes where it reads"):
        ehrfm.ingest_fhir(inputs, output, workers=1, overwrite=True)
    assert src.read_bytes() == before
    assert sorted(p.name for p in fhir.rglob("*")) == ["data", "patients.ndjson"]


def test_meds_stages_refuse_to_write_over_the_dataset_they_read(tmp_path: Path) -> None:
    import ehrfm
    from ehrfm.outputs import OutputOverlapsInputError
    from ehrfm.tasks.label_meds import label_meds_dataset as label_dataset
    from ehrfm.tokenize import EventTokenizer, tokenize_dataset

    write_ndjson(tmp_path / "in" / "p.ndjson", [patient("p1"), observation("o1")])
    meds = tmp_path / "meds"
    ehrfm.ingest_fhir(tmp_path / "in", meds, workers=1)
    shards = sorted(p.read_bytes() for p in (meds / "data").rglob("*.parquet"))
    for output in (meds, meds / "data" / "labels", tmp_path):
        with pytest.raises(OutputOverlapsInputError):
            tokenize_dataset(meds, EventTokenizer(min_count=1), output, overwrite=True)
        with pytest.raises(OutputOverlapsInputError):
            label_dataset(meds, ["mortality_1y"], output, overwrite=True)
    assert sorted(p.read_bytes() for p in (meds / "data").rglob("*.parquet")) == shards
    # inside the dataset folder but outside its data and metadata is fine
    label_dataset(meds, ["mortality_1y"], meds / "labels")


def test_overwrite_removes_only_what_ehrfm_wrote(tmp_path: Path) -> None:
    import ehrfm
    from ehrfm.outputs import MARKER_FILE, NotWrittenByEhrfmError

    src = write_ndjson(tmp_path / "in" / "p.ndjson", [patient("p1"), observation("o1")])
    # a folder of the user's that happens to hold a data/ of their own: never removed
    theirs = tmp_path / "project"
    (theirs / "data").mkdir(parents=True)
    (theirs / "data" / "cohort.csv").write_text("subject_id\n1\n")
    with pytest.raises(NotWrittenByEhrfmError, match=r"project/data: ehrfm did not write this"):
        ehrfm.ingest_fhir(src, theirs, workers=1, overwrite=True)
    assert (theirs / "data" / "cohort.csv").read_text() == "subject_id\n1\n"
    assert not (theirs / "metadata").exists(), "a refused overwrite removes nothing"

    # ehrfm's own output is replaced, and a user's file beside it stays
    ours = tmp_path / "meds"
    first = ehrfm.ingest_fhir(src, ours, workers=1)
    (ours / "README.txt").write_text("site notes")
    again = ehrfm.ingest_fhir(src, ours, workers=1, overwrite=True)
    assert again.totals() == first.totals()
    assert (ours / "README.txt").read_text() == "site notes"
    # a marker deleted by hand: ehrfm no longer knows the parts are its own, so it refuses
    (ours / MARKER_FILE).unlink()
    with pytest.raises(NotWrittenByEhrfmError, match=r"meds/(data|metadata)"):
        ehrfm.ingest_fhir(src, ours, workers=1, overwrite=True)


def test_a_second_ingest_into_a_folder_in_use_is_refused(tmp_path: Path) -> None:
    import ehrfm
    from ehrfm.outputs import OutputInUseError, exclusive_output

    src = write_ndjson(tmp_path / "in" / "p.ndjson", [patient("p1")])
    out = tmp_path / "out"
    with exclusive_output(out, "ingest"):  # as a run in another process holds it
        (out / ".ehrfm_tmp-live").mkdir()  # that run's scratch
        with pytest.raises(OutputInUseError, match=r"out: another ehrfm ingest is writing to this folder now"):
            ehrfm.ingest_fhir(src, out, workers=1, overwrite=True)
        assert (out / ".ehrfm_tmp-live").is_dir(), "a live run's scratch is left alone"
    # once it is gone (released, or killed: the lock dies with its process) the folder is free
    assert ehrfm.ingest_fhir(src, out, workers=1).resources_written == 1
    assert not (out / ".ehrfm_tmp-live").exists(), "scratch of a run that is gone is removed"
