"""Pieces both synthetic writers build FHIR from: code-system URIs, codings, Bundle references.

>>> coding(LOINC, "4548-4", "HbA1c")["coding"][0]["system"]
'http://loinc.org'
>>> bundle_references({"subject": {"reference": "Patient/p1"}})
{'subject': {'reference': 'urn:uuid:p1'}}
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["ACT", "CVX", "LOINC", "RXNORM", "SNOMED", "UCUM", "bundle_references", "coding"]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
UCUM = "http://unitsofmeasure.org"


def coding(system: str, code: str, display: str) -> dict[str, Any]:
    """A CodeableConcept with one coding and its display as text."""
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def bundle_references(resource: dict[str, Any]) -> dict[str, Any]:
    """Inside a transaction Bundle, references point at entries' ``urn:uuid`` fullUrls."""
    text = json.dumps(resource)
    for kind in ("Patient", "Encounter"):
        text = text.replace(f'"reference": "{kind}/', '"reference": "urn:uuid:')
    return json.loads(text)
