"""Strict mode: full FHIR R4 validation of each resource with ``fhir.resources.R4B``.

The package's default classes are R5 and reject R4 content; R4B is the R4-compatible set.
About 15x slower than the fast path's structural checks, so it is opt-in (``strict=true``).
"""

from __future__ import annotations

from typing import Any


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
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None
