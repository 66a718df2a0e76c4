"""FHIR code systems to short vocabulary names: the one table, and codes as ``VOCAB/code``.

>>> code_from_coding({"system": "http://loinc.org", "code": "2160-0"})
'LOINC/2160-0'
>>> code_from_coding({"system": "http://snomed.info/sct", "code": "44054006"})
'SNOMED/44054006'
>>> code_from_coding({"system": "http://example.org/fhir/CodeSystem/local-labs", "code": "K1"})
'example.org_fhir_CodeSystem_local-labs~70a59b/K1'
>>> code_from_coding({"code": "K1"})
'NOSYSTEM/K1'
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

# System URI (as written in Coding.system) -> short vocabulary name. The only such table in ehrfm.
SYSTEM_TO_VOCAB: dict[str, str] = {
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD10",
    "http://www.cms.gov/Medicare/Coding/ICD10": "ICD10PCS",
    "http://hl7.org/fhir/sid/icd-9-cm": "ICD9CM",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://hl7.org/fhir/sid/ndc": "NDC",
    "http://www.ama-assn.org/go/cpt": "CPT",
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": "HCPCS",
    "http://unitsofmeasure.org": "UCUM",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode": "ActCode",
    "http://terminology.hl7.org/CodeSystem/v2-0074": "HL7v2-0074",
    "http://terminology.hl7.org/CodeSystem/observation-category": "ObsCategory",
    "http://dicom.nema.org/resources/ontology/DCM": "DCM",
    "urn:oid:2.16.840.1.113883.6.238": "CDCREC",
    "urn:oid:2.16.840.1.113883.6.96": "SNOMED",
    "urn:oid:2.16.840.1.113883.6.1": "LOINC",
    "urn:oid:2.16.840.1.113883.6.88": "RxNorm",
    "urn:oid:2.16.840.1.113883.12.292": "CVX",
    "urn:oid:2.16.840.1.113883.6.90": "ICD10CM",
    "urn:oid:2.16.840.1.113883.6.103": "ICD9CM",
    "http://www.whocc.no/atc": "ATC",
    "http://nucc.org/provider-taxonomy": "NUCC",
}

NO_SYSTEM_VOCAB = "NOSYSTEM"
TEXT_VOCAB = "TEXT"  # a CodeableConcept with only text: kept, never dropped

_NON_NAME_CHARS = re.compile(r"[^A-Za-z0-9.\-]+")


def vocabulary_for_system(system: str | None) -> str:
    """Short vocabulary name of a FHIR ``Coding.system``.

    Known systems come from :data:`SYSTEM_TO_VOCAB`; an unknown one gets a stable readable name
    made from the URI itself (scheme dropped, separators turned into ``_``) plus ``~`` and a
    6-hex digest of the exact URI, so two different systems do not share a name and nothing is
    dropped.

    >>> vocabulary_for_system("http://loinc.org")
    'LOINC'
    >>> vocabulary_for_system("urn:oid:1.2.3.4")
    'oid_1.2.3.4~5fd4db'
    """
    if not system:
        return NO_SYSTEM_VOCAB
    known = SYSTEM_TO_VOCAB.get(system) or SYSTEM_TO_VOCAB.get(system.rstrip("/"))
    if known:
        return known
    return _readable_vocab(system)


_readable_cache: dict[str, str] = {}


def _readable_vocab(system: str) -> str:
    cached = _readable_cache.get(system)
    if cached is None:
        bare = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.\-]*:(//)?", "", system)
        if system.startswith("urn:"):
            bare = system[4:]
        readable = _NON_NAME_CHARS.sub("_", bare).strip("_") or "system"
        # Folding separators can map two URIs to one name; a short digest of the exact URI keeps
        # them apart while the name stays readable and stable across runs.
        digest = hashlib.blake2b(system.encode("utf-8"), digest_size=3).hexdigest()
        cached = f"{readable}~{digest}"
        _readable_cache[system] = cached
    return cached


def code_from_coding(coding: dict[str, Any]) -> str | None:
    """``VOCAB/code`` for one FHIR Coding, or None when it carries no code."""
    code = coding.get("code")
    if code is None or code == "":
        return None
    return f"{vocabulary_for_system(coding.get('system'))}/{code}"


# When a CodeableConcept carries several codings, the first one from this list wins; codings
# from vocabularies not listed keep their order after these.
PREFERRED_VOCABS: tuple[str, ...] = (
    "SNOMED", "LOINC", "RxNorm", "ICD10CM", "ICD10", "CVX", "NDC", "CPT", "ICD9CM", "ATC",
)
_PREFERENCE = {name: rank for rank, name in enumerate(PREFERRED_VOCABS)}


def code_from_concept(concept: Any) -> tuple[str, str | None] | None:
    """(``VOCAB/code``, display) for a CodeableConcept, or None when it holds nothing usable.

    >>> code_from_concept({"coding": [{"system": "http://loinc.org", "code": "8302-2",
    ...                                "display": "Body Height"}]})
    ('LOINC/8302-2', 'Body Height')
    >>> code_from_concept({"text": "Patient feels dizzy"})
    ('TEXT/Patient feels dizzy', 'Patient feels dizzy')
    """
    if not isinstance(concept, dict):
        return None
    best: tuple[int, str, str | None] | None = None
    codings = concept.get("coding")
    if isinstance(codings, list) and len(codings) == 1 and isinstance(codings[0], dict):
        # The common case (one coding): no ranking needed.
        code = code_from_coding(codings[0])
        if code is not None:
            return code, codings[0].get("display") or concept.get("text")
    if isinstance(codings, list):
        for position, coding in enumerate(codings):
            if not isinstance(coding, dict):
                continue
            code = code_from_coding(coding)
            if code is None:
                continue
            vocab = code.split("/", 1)[0]
            rank = _PREFERENCE.get(vocab, len(_PREFERENCE) + position)
            if best is None or rank < best[0]:
                best = (rank, code, coding.get("display") or concept.get("text"))
    if best is not None:
        return best[1], best[2]
    text = concept.get("text")
    if isinstance(text, str) and text.strip():
        return f"{TEXT_VOCAB}/{text.strip()}", text.strip()
    return None
