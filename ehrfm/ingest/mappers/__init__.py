"""One mapper per FHIR resource type, looked up by ``resourceType`` in :data:`MAPPERS`.

A mapper reads one resource (a dict, as parsed from JSON) and writes events through the
:class:`~ehrfm.ingest.events.EventEmitter`, or raises :class:`~ehrfm.ingest.events.Reject`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ehrfm.ingest.events import EventEmitter
from ehrfm.ingest.mappers.clinical import (
    map_allergy_intolerance,
    map_condition,
    map_immunization,
    map_procedure,
)
from ehrfm.ingest.mappers.document_reference import map_document_reference
from ehrfm.ingest.mappers.encounter import map_encounter
from ehrfm.ingest.mappers.imaging_study import map_imaging_study
from ehrfm.ingest.mappers.medication import map_medication, map_medication_use
from ehrfm.ingest.mappers.observation import map_diagnostic_report, map_observation
from ehrfm.ingest.mappers.patient import map_patient

Mapper = Callable[[dict[str, Any], EventEmitter], None]

MAPPERS: dict[str, Mapper] = {
    "Patient": map_patient,
    "Encounter": map_encounter,
    "Condition": map_condition,
    "Procedure": map_procedure,
    "MedicationRequest": map_medication_use,
    "MedicationAdministration": map_medication_use,
    "MedicationDispense": map_medication_use,
    "MedicationStatement": map_medication_use,
    "Medication": map_medication,
    "Observation": map_observation,
    "DiagnosticReport": map_diagnostic_report,
    "Immunization": map_immunization,
    "AllergyIntolerance": map_allergy_intolerance,
    "ImagingStudy": map_imaging_study,
    "DocumentReference": map_document_reference,
}

# Resources that produce no events of their own but are read for references.
REFERENCE_ONLY_TYPES = frozenset({"Medication"})

__all__ = ["MAPPERS", "Mapper", "REFERENCE_ONLY_TYPES"]
