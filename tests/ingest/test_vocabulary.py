"""The system -> vocabulary table as data: the shipped YAML, user additions, code formats."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fhir_builders import bundle, ingest, patient, ref, write_json, write_ndjson

from ehrfm.ingest.code_formats import FORMATS
from ehrfm.ingest.config import IngestConfig, dataset_name_for
from ehrfm.ingest.vocabulary import Vocabularies, VocabularyTableError, shipped

MIMIC = "http://mimic.mit.edu/fhir/mimic/CodeSystem"


@pytest.mark.parametrize("system,code,expected", [
    (f"{MIMIC}/mimic-diagnosis-icd10", "I6201", "ICD10CM/I62.01"),
    (f"{MIMIC}/mimic-diagnosis-icd9", "2859", "ICD9CM/285.9"),
    (f"{MIMIC}/mimic-diagnosis-icd9", "V462", "ICD9CM/V46.2"),
    (f"{MIMIC}/mimic-diagnosis-icd9", "E8889", "ICD9CM/E888.9"),
    (f"{MIMIC}/mimic-diagnosis-icd9", "401", "ICD9CM/401"),  # a 3-character code has no dot
    (f"{MIMIC}/mimic-procedure-icd9", "9671", "ICD9Proc/96.71"),
    (f"{MIMIC}/mimic-procedure-icd10", "0DB64Z3", "ICD10PCS/0DB64Z3"),
    (f"{MIMIC}/mimic-medication-ndc", "51079030020", "NDC/51079030020"),
    (f"{MIMIC}/mimic-chartevents-d-items", "223791", "MIMIC_IV_ITEM/223791"),
    (f"{MIMIC}/mimic-d-labitems", "50912", "MIMIC_IV_LABITEM/50912"),
    ("http://fhir.mimic.mit.edu/CodeSystem/mimic-diagnosis-icd10", "I6201", "ICD10CM/I62.01"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "E11.9", "ICD10CM/E11.9"),  # already dotted: kept
    ("http://hl7.org/fhir/sid/icd-10-cm", " E119 ", "ICD10CM/E11.9"),  # whitespace stripped first
    ("urn:oid:2.16.840.1.113883.6.90", "E119", "ICD10CM/E11.9"),
    ("urn:oid:2.16.840.1.113883.6.69", "0002-8215-01", "NDC/0002-8215-01"),
    ("urn:oid:2.16.840.1.113883.6.12", "99213", "CPT/99213"),
    ("http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "G0378", "HCPCS/G0378"),
    ("http://loinc.org", " 2160-0", "LOINC/2160-0"),
    ("urn:oid:2.16.840.1.113883.6.88", "313782", "RxNorm/313782"),
    ("urn:oid:2.16.840.1.113883.12.292", "140", "CVX/140"),
    ("urn:oid:2.16.840.1.113883.6.8", "mg/dL", "UCUM/mg/dL"),
])
def test_shipped_table_maps_and_normalises(system: str, code: str, expected: str) -> None:
    assert shipped().code_from_coding({"system": system, "code": code}) == expected


def test_a_code_of_only_whitespace_is_no_code() -> None:
    assert shipped().code_from_coding({"system": "http://loinc.org", "code": "  "}) is None
    assert shipped().code_from_coding({"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": " "}) is None


def test_formats_leave_short_or_dotted_codes_alone() -> None:
    assert FORMATS["icd10cm"]("A09") == "A09"
    assert FORMATS["icd9proc"]("96") == "96"
    assert FORMATS["icd9cm"]("E888") == "E888"


def test_the_shipped_table_is_a_package_file_listed_in_the_wheel() -> None:
    from importlib import resources

    text = resources.files("ehrfm.ingest").joinpath("vocabularies.yaml").read_text()
    data = yaml.safe_load(text)
    assert data["systems"]["http://loinc.org"] == "LOINC"
    assert {"ICD9CM", "ICD10CM", "ICD9Proc", "ICD10PCS"} <= set(data["vocabularies"])


def test_user_entries_win_over_the_shipped_table(tmp_path: Path) -> None:
    extra = tmp_path / "site.yaml"
    extra.write_text(yaml.safe_dump({
        "vocabularies": {"SITE_DX": {"format": "icd10cm"}},
        "systems": {"http://site.example/dx": "SITE_DX", "http://loinc.org": "LOINC_SITE"},
    }))
    table = Vocabularies.load(extra={"http://site.example/labs": "SITE_LAB"}, files=[extra])
    assert table.code_from_coding({"system": "http://site.example/dx", "code": "I6201"}) == "SITE_DX/I62.01"
    assert table.code_from_coding({"system": "http://site.example/labs", "code": "K1"}) == "SITE_LAB/K1"
    assert table.vocabulary_for_system("http://loinc.org") == "LOINC_SITE"
    assert shipped().vocabulary_for_system("http://loinc.org") == "LOINC"  # the shipped one unchanged


@pytest.mark.parametrize("content,message", [
    ({"systems": {"http://x": "BAD/NAME"}}, r"bad\.yaml: systems\['http://x'\] must be a vocabulary name"),
    ({"vocabularies": {"X": {"format": "icd11"}}}, r"bad\.yaml: vocabularies\.X\.format must be one of"),
    ({"vocabularies": {"X": {"colour": 1}}}, r"bad\.yaml: vocabularies\.X must be a mapping with keys"),
    ({"sytems": {}}, r"bad\.yaml: unknown key\(s\) \['sytems'\]"),
    (["not", "a", "mapping"], r"bad\.yaml: a vocabulary table is a mapping, got list"),
])
def test_a_bad_table_is_refused_naming_file_key_and_value(tmp_path: Path, content, message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(content))
    with pytest.raises(VocabularyTableError, match=message):
        Vocabularies.load(files=[bad])
    with pytest.raises(VocabularyTableError, match=message):  # before any worker starts
        IngestConfig(inputs=["x"], output="y", vocabulary_files=[str(bad)])


def test_a_bad_vocabularies_key_is_refused() -> None:
    with pytest.raises(VocabularyTableError, match=r"ingest key 'vocabularies': systems\['http://x'\]"):
        IngestConfig(inputs=["x"], output="y", vocabularies={"http://x": "has space"})


def test_user_vocabularies_reach_the_ingested_codes(tmp_path: Path) -> None:
    obs = {"resourceType": "Observation", "id": "o1", "status": "final", "subject": ref("Patient/p1"),
           "effectiveDateTime": "2020-01-01T00:00:00Z",
           "code": {"coding": [{"system": "http://site.example/labs", "code": "K1", "display": "Potassium"}]}}
    source = write_ndjson(tmp_path / "in" / "all.ndjson", [patient("p1"), obs])
    run = ingest(source, tmp_path / "out", vocabularies={"http://site.example/labs": "SITE_LAB"})
    assert [r["code"] for r in run.events_of("o1")] == ["SITE_LAB/K1"]
    assert run.description("SITE_LAB/K1") == "Potassium"


def test_a_mix_resolves_inside_one_bundle(tmp_path: Path) -> None:
    ndc = "http://hl7.org/fhir/sid/ndc"
    base = {"resourceType": "Medication", "id": "m-base", "code": {"coding": [{"system": ndc, "code": "1"}]}}
    additive = {"resourceType": "Medication", "id": "m-add",
                "code": {"coding": [{"system": ndc, "code": "2", "display": "Additive"}]}}
    mix = {"resourceType": "Medication", "id": "m-mix",
           "ingredient": [{"itemReference": ref("urn:uuid:m-base")}, {"itemReference": ref("urn:uuid:m-add")},
                          {"itemCodeableConcept": {"coding": [{"system": ndc, "code": "3"}]}}]}
    order = {"resourceType": "MedicationRequest", "id": "mr", "status": "active", "intent": "order",
             "subject": ref("urn:uuid:p1"), "authoredOn": "2020-01-01T00:00:00Z",
             "medicationReference": ref("urn:uuid:m-mix")}
    source = write_json(tmp_path / "in" / "b.json", bundle(patient("p1"), base, additive, mix, order))
    run = ingest(source, tmp_path / "out")
    assert [r["code"] for r in run.events_of("mr")] == ["NDC/1", "NDC/2", "NDC/3"]
    assert run.description("NDC/2") == "Additive"


@pytest.mark.parametrize("inputs,name", [
    (["/data/mimic-iv-demo-fhir"], "mimic-iv-demo-fhir"),
    (["/data/mimic-iv-demo-fhir/"], "mimic-iv-demo-fhir"),
    (["/data/site_a.ndjson.gz"], "site_a"),
    (["/data/synthea/*.json.gz"], "synthea"),
    (["/x/a/p.json", "/x/a/q/r.json"], "a"),
])
def test_dataset_name_comes_from_the_input(inputs: list[str], name: str) -> None:
    assert dataset_name_for(inputs) == name
    assert IngestConfig(inputs=inputs, output="o").name == name
    assert IngestConfig(inputs=inputs, output="o", dataset_name="given").name == "given"
