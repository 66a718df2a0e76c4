"""Fast unit tests of the ingest building blocks: times, codes, references, splits, file discovery."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fhir_builders import patient, write_ndjson

import ehrfm
from ehrfm.ingest.config import IngestConfig
from ehrfm.ingest.fhirtime import FhirTimeError, to_utc_micros
from ehrfm.ingest.references import BundleIndex, parse_reference, reference_text
from ehrfm.ingest.sources import InputError, discover_files, discover_inputs, line_position, location_text
from ehrfm.ingest.subjects import split_for, subject_id_for, validate_ratios
from ehrfm.ingest.vocabulary import code_from_coding, code_from_concept, vocabulary_for_system


def micros(text: str) -> int:
    """Reference value computed independently: an aware ISO instant to epoch microseconds."""
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# -- fhirtime --------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    ("2020-05-01T10:00:00+02:00", "2020-05-01T08:00:00+00:00"),
    ("2020-05-01T10:00:00-07:00", "2020-05-01T17:00:00+00:00"),
    ("2020-05-01T10:00:00Z", "2020-05-01T10:00:00+00:00"),
    ("2020-05-01T10:00:00.5Z", "2020-05-01T10:00:00.500000+00:00"),
    ("2020-05-01T10:00:00.123456789+00:00", "2020-05-01T10:00:00.123456+00:00"),
    ("2020-05-01T10:00:00", "2020-05-01T10:00:00+00:00"),  # no offset: read as UTC
    ("2150-12-31T23:00:00-02:00", "2151-01-01T01:00:00+00:00"),  # 22nd century kept
    ("1850-01-01T00:00:00Z", "1850-01-01T00:00:00+00:00"),
])
def test_instants_normalized_to_utc(value: str, expected: str) -> None:
    assert to_utc_micros(value) == micros(expected)
    assert to_utc_micros(value, start=True) == micros(expected)  # an instant is not a span


@pytest.mark.parametrize("value,first,last", [
    ("2020", "2020-01-01T00:00:00+00:00", "2020-12-31T23:59:59.999999+00:00"),
    ("2020-02", "2020-02-01T00:00:00+00:00", "2020-02-29T23:59:59.999999+00:00"),
    ("2019-02", "2019-02-01T00:00:00+00:00", "2019-02-28T23:59:59.999999+00:00"),
    ("1900-02", "1900-02-01T00:00:00+00:00", "1900-02-28T23:59:59.999999+00:00"),
    ("2021-12", "2021-12-01T00:00:00+00:00", "2021-12-31T23:59:59.999999+00:00"),
    ("2020-07-15", "2020-07-15T00:00:00+00:00", "2020-07-15T23:59:59.999999+00:00"),
    ("2199-06", "2199-06-01T00:00:00+00:00", "2199-06-30T23:59:59.999999+00:00"),
])
def test_partial_dates_first_microsecond_for_starts_last_otherwise(value: str, first: str, last: str) -> None:
    assert to_utc_micros(value, start=True) == micros(first)
    assert to_utc_micros(value) == micros(last)


@pytest.mark.parametrize("value", [
    "2020-13-45", "2020-02-30", "2020-00", "20", "2020-1", "2020-01-1", "abcd", "", "2020-01-01 10:00:00",
    "2020-05-01T25:00:00Z", "2020-05-01Tnoon", "not a date at all",
])
def test_invalid_dates_raise_naming_the_value(value: str) -> None:
    with pytest.raises(FhirTimeError) as info:
        to_utc_micros(value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", [None, 2020, 2020.5, ["2020"], {"start": "2020"}])
def test_non_string_times_raise(value) -> None:
    with pytest.raises(FhirTimeError, match="expected a date string"):
        to_utc_micros(value)


# -- vocabulary ------------------------------------------------------------------------------

@pytest.mark.parametrize("system,vocab", [
    ("http://loinc.org", "LOINC"),
    ("http://loinc.org/", "LOINC"),
    ("http://snomed.info/sct", "SNOMED"),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "RxNorm"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "ICD10CM"),
    ("http://hl7.org/fhir/sid/cvx", "CVX"),
    ("http://dicom.nema.org/resources/ontology/DCM", "DCM"),
    ("urn:oid:2.16.840.1.113883.6.238", "CDCREC"),
    ("urn:oid:2.16.840.1.113883.6.96", "SNOMED"),
    (None, "NOSYSTEM"),
    ("", "NOSYSTEM"),
    ("http://example.org/fhir/CodeSystem/local-labs", "example.org_fhir_CodeSystem_local-labs~70a59b"),
    ("https://acme.example/codes?v=2", "acme.example_codes_v_2~269c46"),
    ("urn:oid:1.2.3.4", "oid_1.2.3.4~5fd4db"),
    ("urn:ietf:bcp:47", "ietf_bcp_47~41bb4f"),
])
def test_vocabulary_for_system(system, vocab: str) -> None:
    assert vocabulary_for_system(system) == vocab
    assert "/" not in vocab  # VOCAB/code splits on the first slash


def test_unknown_system_names_are_stable_and_readable() -> None:
    system = "http://hospital.example/fhir/CodeSystem/lab-codes"
    assert vocabulary_for_system(system) == vocabulary_for_system(system) == (
        "hospital.example_fhir_CodeSystem_lab-codes~fd7bc5")


def test_different_unknown_systems_get_different_names() -> None:
    # vocabulary_for_system's contract: "two different systems never share a name".
    a = "http://example.org/codes/a/b"
    b = "http://example.org/codes/a_b"
    assert vocabulary_for_system(a) != vocabulary_for_system(b)


def test_code_from_coding() -> None:
    assert code_from_coding({"system": "http://loinc.org", "code": "2160-0"}) == "LOINC/2160-0"
    assert code_from_coding({"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"}) == (
        "ICD10CM/E11.9")
    assert code_from_coding({"code": "K1"}) == "NOSYSTEM/K1"
    assert code_from_coding({"system": "http://loinc.org"}) is None
    assert code_from_coding({"system": "http://loinc.org", "code": ""}) is None
    assert code_from_coding({"system": "http://example.org/x", "code": "a/b"}) == "example.org_x~67b2b4/a/b"


def test_code_from_concept_prefers_standard_vocabularies_and_keeps_display() -> None:
    concept = {"coding": [
        {"system": "http://example.org/local", "code": "L1", "display": "local"},
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9", "display": "icd"},
        {"system": "http://snomed.info/sct", "code": "44054006", "display": "snomed"},
    ], "text": "Diabetes"}
    assert code_from_concept(concept) == ("SNOMED/44054006", "snomed")
    assert code_from_concept({"coding": [concept["coding"][0], concept["coding"][1]]}) == (
        "ICD10CM/E11.9", "icd")
    assert code_from_concept({"coding": [{"system": "http://loinc.org", "code": "1-8"}], "text": "T"}) == (
        "LOINC/1-8", "T")
    assert code_from_concept({"coding": [{"system": "http://a.example/x", "code": "1"},
                                         {"system": "http://b.example/y", "code": "2"}]}) == (
        "a.example_x~449ce6/1", None)


@pytest.mark.parametrize("concept,expected", [
    ({"text": "  Feels dizzy "}, ("TEXT/Feels dizzy", "Feels dizzy")),
    ({"coding": [{"system": "http://loinc.org"}], "text": "only text"}, ("TEXT/only text", "only text")),
    ({"text": "   "}, None),
    ({"coding": "nonsense"}, None),
    ({}, None),
    (None, None),
    ("LOINC/1-8", None),
])
def test_code_from_concept_edge_cases(concept, expected) -> None:
    assert code_from_concept(concept) == expected


# -- references ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("Patient/123", ("Patient", "123")),
    ("Encounter/e-1", ("Encounter", "e-1")),
    ("Patient/123/_history/2", ("Patient", "123")),
    ("https://fhir.example.org/r4/Patient/123", ("Patient", "123")),
    ("https://fhir.example.org/r4/Patient/123/_history/7", ("Patient", "123")),
    ("http://server/fhir/Medication/m1/", ("Medication", "m1")),
    ("urn:uuid:9b1f6c4e-aaaa-bbbb-cccc-000000000000", (None, "9b1f6c4e-aaaa-bbbb-cccc-000000000000")),
    ("urn:oid:1.2.3", (None, "1.2.3")),
    ("#med1", None),
    ("Patient?identifier=http://x|1", None),
    ("Foo/1", None),
    ("123", None),
    ("Patient/", None),
    ("", None),
])
def test_parse_reference(text: str, expected) -> None:
    assert parse_reference(text) == expected


def test_bundle_index_resolves_full_urls_first() -> None:
    target = {"resourceType": "Patient", "id": "p-1"}
    index = BundleIndex({
        "urn:uuid:aa": ("Patient", "p-1", target),
        "http://srv/fhir/Medication/m9": ("Medication", "m9", {"resourceType": "Medication", "id": "m9"}),
    })
    assert index.resolve("urn:uuid:aa") == ("Patient", "p-1")
    assert index.resolve("urn:uuid:bb") == (None, "bb")
    assert index.resolve("Patient/p-1") == ("Patient", "p-1")
    assert index.resource("urn:uuid:aa") is target
    assert index.resource("Patient/p-1") is target  # relative reference to an entry of the Bundle
    assert index.resource("Medication/m9")["id"] == "m9"
    assert index.resource("Patient/other") is None
    assert index.resource("urn:uuid:bb") is None
    assert BundleIndex.empty().resolve("Patient?name=x") is None


def test_reference_text() -> None:
    assert reference_text({"reference": "Patient/1", "display": "x"}) == "Patient/1"
    assert reference_text({"display": "x"}) is None
    assert reference_text({"reference": ""}) is None
    assert reference_text({"reference": 5}) is None
    assert reference_text("Patient/1") is None
    assert reference_text(None) is None


# -- subjects and splits ---------------------------------------------------------------------

RATIOS = {"train": 0.8, "tuning": 0.1, "held_out": 0.1}


def test_subject_id_is_stable_non_negative_int64_and_distinct() -> None:
    ids = [f"patient-{i}" for i in range(10_000)]
    values = [subject_id_for(i) for i in ids]
    assert values == [subject_id_for(i) for i in ids]
    assert all(0 <= v < 2**63 for v in values)
    assert len(set(values)) == len(ids)
    assert subject_id_for("a") != subject_id_for("A")


def test_split_is_deterministic() -> None:
    ids = [f"018f428e-{i:04x}" for i in range(500)]
    assert [split_for(i, RATIOS) for i in ids] == [split_for(i, dict(RATIOS)) for i in ids]


def test_split_ratios_roughly_respected_over_10k_ids() -> None:
    counts = Counter(split_for(f"patient-{i}", RATIOS) for i in range(10_000))
    assert set(counts) == {"train", "tuning", "held_out"}
    assert abs(counts["train"] / 10_000 - 0.8) < 0.02
    assert abs(counts["tuning"] / 10_000 - 0.1) < 0.015
    assert abs(counts["held_out"] / 10_000 - 0.1) < 0.015


def test_split_ratios_are_configurable() -> None:
    ids = [f"patient-{i}" for i in range(10_000)]
    half = Counter(split_for(i, {"train": 0.5, "held_out": 0.5}) for i in ids)
    assert set(half) == {"train", "held_out"} and abs(half["train"] / 10_000 - 0.5) < 0.02
    # Ratios need not sum to 1: they are weights.
    weights = Counter(split_for(i, {"train": 6, "tuning": 2, "held_out": 2}) for i in ids)
    assert abs(weights["train"] / 10_000 - 0.6) < 0.02
    # A zero ratio is never chosen, wherever it sits.
    assert Counter(split_for(i, {"train": 1.0, "tuning": 0.0, "held_out": 0.0}) for i in ids) == {
        "train": 10_000}
    assert "train" not in {split_for(i, {"train": 0.0, "tuning": 0.5, "held_out": 0.5}) for i in ids}


def test_split_is_independent_of_subject_id_bucket() -> None:
    # Not a function of subject_id % 64 (the shard bucket): every bucket holds several splits.
    by_bucket: dict[int, set[str]] = {}
    for i in range(5_000):
        pid = f"patient-{i}"
        by_bucket.setdefault(subject_id_for(pid) % 64, set()).add(split_for(pid, RATIOS))
    assert all(len(splits) >= 2 for splits in by_bucket.values())


@pytest.mark.parametrize("ratios", [{}, {"train": -0.1, "held_out": 1.1}, {"train": 0, "held_out": 0},
                                    {"train": "0.8"}])
def test_bad_ratios_raise(ratios) -> None:
    with pytest.raises(ValueError, match="split ratios"):
        validate_ratios(ratios)
    with pytest.raises(ValueError, match="split ratios"):
        IngestConfig(inputs="x", output="y", split_ratios=ratios)


# -- finding input files ---------------------------------------------------------------------

def _touch(path: Path, content: bytes = b"{}\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_discover_files_in_directories_recursively(tmp_path: Path) -> None:
    files = [
        _touch(tmp_path / "root" / "Patient.ndjson"),
        _touch(tmp_path / "root" / "sub" / "Observation.ndjson.gz"),
        _touch(tmp_path / "root" / "sub" / "deep" / "bundle.json"),
        _touch(tmp_path / "root" / "b2.JSON.GZ"),
        _touch(tmp_path / "root" / "lines.jsonl"),
    ]
    _touch(tmp_path / "root" / "README.md", b"# exports\n")
    _touch(tmp_path / "root" / "notes.txt", b"hello")
    _touch(tmp_path / "root" / "sub" / "data.csv", b"a,b\n1,2\n")
    files.append(_touch(tmp_path / "root" / "export-no-extension", b'{"resourceType": "Patient"}'))
    found = discover_inputs([tmp_path / "root"])
    assert found.files == sorted(p.resolve() for p in files)
    assert found.ignored_by_reason() == {"not JSON": 3}


def test_discover_files_globs_dedup_and_sort(tmp_path: Path) -> None:
    a = _touch(tmp_path / "x" / "a.ndjson")
    b = _touch(tmp_path / "x" / "b.json")
    _touch(tmp_path / "x" / "c.txt", b"plain text")
    c = _touch(tmp_path / "y" / "z" / "c.ndjson")
    found = discover_files([str(tmp_path / "x" / "*"), str(a), str(tmp_path / "**" / "*.ndjson")])
    assert found == sorted({a.resolve(), b.resolve(), c.resolve()})
    # A glob naming a directory takes the FHIR files in it.
    assert discover_files(str(tmp_path / "[y]")) == [c.resolve()]
    # A single file is taken even when its name is unusual.
    odd = _touch(tmp_path / "export.fhir")
    assert discover_files(str(odd)) == [odd.resolve()]


def test_discover_files_missing_path_names_it(tmp_path: Path) -> None:
    _touch(tmp_path / "ok.ndjson")
    missing = tmp_path / "nope" / "Patient.ndjson"
    with pytest.raises(InputError) as info:
        discover_files([tmp_path / "ok.ndjson", missing])
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)


def test_discover_files_directory_without_fhir_names_it(tmp_path: Path) -> None:
    _touch(tmp_path / "docs" / "README.md", b"# not FHIR")
    with pytest.raises(InputError) as info:
        discover_files(tmp_path / "docs")
    assert str(tmp_path / "docs") in str(info.value) and ".ndjson" in str(info.value)
    with pytest.raises(InputError) as info:
        discover_files(str(tmp_path / "*.ndjson"))
    assert str(tmp_path / "*.ndjson") in str(info.value)


def test_ingest_fhir_with_missing_input_raises_input_error(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(InputError, match="does-not-exist"):
        ehrfm.ingest_fhir(missing, tmp_path / "out", workers=1)


def test_location_text() -> None:
    # Positions read back without the file name: a .json holding lines is told apart by the flag.
    assert location_text(line_position(12)) == "line 12"
    assert location_text(line_position(3, 4)) == "line 3, Bundle entry 4"
    assert location_text(7) == "entry 7"
    assert location_text(-1) == "whole file"
    assert location_text(line_position(10**9, 2**23)) == f"line {10**9}, Bundle entry {2**23}"
    assert line_position(2) > line_position(1, 2**23)  # input order is position order


# -- settings and output folder --------------------------------------------------------------

@pytest.mark.parametrize("settings,match", [
    ({"num_shards": 0}, "num_shards"),
    ({"num_shards": 65}, "num_shards"),
    ({"num_shards": "many"}, "num_shards"),
    ({"unmapped_types": "drop"}, "unmapped_types"),
    ({"chunk_events": 0}, "chunk_events"),
])
def test_bad_settings_raise_naming_the_setting(settings, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        IngestConfig(inputs="in", output="out", **settings)


def test_unknown_setting_from_mapping_is_named() -> None:
    with pytest.raises(ValueError, match="num_shard"):
        IngestConfig.from_mapping({"inputs": "in", "output": "out", "num_shard": 2})


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "p.ndjson", [patient("p1")])
    first = ehrfm.ingest_fhir(src, tmp_path / "out", workers=1)
    assert first.resources_written == 1
    with pytest.raises(FileExistsError, match="overwrite"):
        ehrfm.ingest_fhir(src, tmp_path / "out", workers=1)
    again = ehrfm.ingest_fhir(src, tmp_path / "out", workers=1, overwrite=True)
    assert again.totals() == first.totals()
    assert not list((tmp_path / "out").glob(".ehrfm_tmp*")), "scratch folders are removed"
