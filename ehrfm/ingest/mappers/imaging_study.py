"""ImagingStudy: one event per series, code = modality (``DCM/DX``), text_value = body site code.

``resource_id`` keeps the study id so the imaging stage can find the pictures.
"""

from __future__ import annotations

from typing import Any

from ehrfm.ingest.events import EventEmitter


def map_imaging_study(resource: dict[str, Any], out: EventEmitter) -> None:
    out.subject_from(resource)
    out.encounter_from(resource)
    study_time = out.first_time(resource, "started")
    series_list = [s for s in resource.get("series") or () if isinstance(s, dict)]
    for index, series in enumerate(series_list):
        modality = series.get("modality") if isinstance(series.get("modality"), dict) else {}
        code = out.vocab.code_from_coding(modality) or "DCM/UNKNOWN"
        body_site = series.get("bodySite") if isinstance(series.get("bodySite"), dict) else {}
        site_code = out.vocab.code_from_coding(body_site)
        if site_code is not None:
            out.describe(site_code, body_site.get("display"))
        time = out.first_time(series, "started") if series.get("started") else study_time
        out.emit_at(code, time, text=site_code, description=modality.get("display") or code)
    if not series_list:
        for modality in resource.get("modality") or ():
            if isinstance(modality, dict):
                code = out.vocab.code_from_coding(modality) or "DCM/UNKNOWN"
                out.emit_at(code, study_time, description=modality.get("display") or code)
        if out.emitted() == 0:
            out.emit_at("DCM/UNKNOWN", study_time, description="Imaging study, modality not given")
