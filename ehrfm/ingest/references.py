"""FHIR references (``Patient/x``, ``urn:uuid:x``, absolute URLs, Bundle ``fullUrl``) to logical ids.

>>> BundleIndex.empty().resolve("Patient/123")
('Patient', '123')
>>> BundleIndex.empty().resolve("https://fhir.example.org/r4/Patient/123/_history/2")
('Patient', '123')
>>> BundleIndex.empty().resolve("urn:uuid:9b1f")
(None, '9b1f')
>>> index = BundleIndex({"urn:uuid:aa": ("Patient", "p-1", {})})
>>> index.resolve("urn:uuid:aa")
('Patient', 'p-1')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ehrfm.ingest.fhir_types import R4_RESOURCE_TYPES

_HISTORY = re.compile(r"/_history/[^/]+$")


@dataclass
class BundleIndex:
    """Entries of one Bundle by ``fullUrl``: (resourceType, logical id, resource).

    Outside a Bundle (ndjson) the index is empty and references resolve by their own text.
    """

    by_full_url: dict[str, tuple[str, str, dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> BundleIndex:
        return cls({})

    def resolve(self, reference: str) -> tuple[str | None, str] | None:
        """(resourceType or None when the text does not say, logical id), or None if unusable.

        Conditional references (``Patient?identifier=...``) cannot be resolved offline: None.
        """
        hit = self.by_full_url.get(reference)
        if hit is not None:
            return hit[0], hit[1]
        return parse_reference(reference)

    def resource(self, reference: str) -> dict[str, Any] | None:
        """The resource a reference points at inside this Bundle, if it is here."""
        hit = self.by_full_url.get(reference)
        if hit is not None:
            return hit[2]
        parsed = parse_reference(reference)
        if parsed is None or parsed[0] is None:
            return None
        for resource_type, logical_id, resource in self.by_full_url.values():
            if resource_type == parsed[0] and logical_id == parsed[1]:
                return resource
        return None


def parse_reference(reference: str) -> tuple[str | None, str] | None:
    """Split a reference's text into (resourceType, id) without any Bundle context."""
    if not reference or "?" in reference or reference.startswith("#"):
        return None
    if reference.startswith("urn:uuid:") or reference.startswith("urn:oid:"):
        return None, reference.split(":", 2)[2]
    path = _HISTORY.sub("", reference.rstrip("/"))
    parts = path.split("/")
    if len(parts) >= 2 and parts[-2] in R4_RESOURCE_TYPES and parts[-1]:
        return parts[-2], parts[-1]
    return None


def reference_text(value: Any) -> str | None:
    """``Reference.reference`` of a Reference element, or None."""
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and ref:
            return ref
    return None
