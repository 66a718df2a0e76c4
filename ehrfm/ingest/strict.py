"""Strict mode: full FHIR R4 validation of each resource with ``fhir.resources.R4B``.

The package's default classes are R5 and reject R4 content; R4B is the R4-compatible set.
fhir.resources checks elements, types and cardinality but not value-set bindings, so strict mode
adds the one required binding every mapped type has: ``status``. About 15x slower than the fast
path's structural checks, so it is opt-in (``strict=true``).
"""

from __future__ import annotations

from typing import Any

# Required value sets of ``status`` in FHIR R4 (4.0.1) for the types ehrfm maps.
REQUIRED_STATUS: dict[str, frozenset[str]] = {
    name: frozenset(codes.split())
    for name, codes in {
        "Observation": "registered preliminary final amended corrected cancelled entered-in-error unknown",
        "DiagnosticReport": "registered partial preliminary final amended corrected appended cancelled "
                            "entered-in-error unknown",
        "Encounter": "planned arrived triaged in-progress onleave finished cancelled "
                     "entered-in-error unknown",
        "Procedure": "preparation in-progress not-done on-hold stopped completed entered-in-error unknown",
        "MedicationRequest": "active on-hold cancelled completed entered-in-error stopped draft unknown",
        "MedicationAdministration": "in-progress not-done on-hold completed entered-in-error stopped unknown",
        "MedicationDispense": "preparation in-progress cancelled on-hold completed entered-in-error stopped "
                              "declined unknown",
        "MedicationStatement": "active completed entered-in-error intended stopped on-hold unknown not-taken",
        "Immunization": "completed entered-in-error not-done",
        "ImagingStudy": "registered available cancelled entered-in-error unknown",
        "DocumentReference": "current superseded entered-in-error",
    }.items()
}


def validation_error(resource: dict[str, Any]) -> str | None:
    """None when the resource validates, else the first problems in a line a person can act on."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    model = get_fhir_model_class(resource["resourceType"])
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()[:3]
        ]
        more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
        return "; ".join(problems) + more
    except Exception as exc:  # fhir.resources raises KeyError etc. for unknown contained types
        return f"{type(exc).__name__}: {exc}"
    allowed = REQUIRED_STATUS.get(resource["resourceType"])
    status = resource.get("status")
    if allowed is not None and status is not None and status not in allowed:
        return f"status: {status!r} is not in the required value set ({', '.join(sorted(allowed))})"
    return None
