"""The parallel half of ingest: files in, per-shard spill parquet files out.

Each worker process takes a batch of files, maps every record through its mapper, and writes
events to ``<tmp>/events/shard=<k>/`` whenever its buffer reaches ``chunk_events``, so memory
stays bounded however many patients the input holds. It returns only counts; rejected records
go to ``<tmp>/rejects/`` as they happen.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ehrfm import schema
from ehrfm.ingest.config import SPILL_BUCKETS, IngestConfig
from ehrfm.ingest.events import EventEmitter, Reject
from ehrfm.ingest.fhir_types import R4_RESOURCE_TYPES
from ehrfm.ingest.mappers import MAPPERS, REFERENCE_ONLY_TYPES
from ehrfm.ingest.sources import Record, location_text, read_records
from ehrfm.ingest.strict import validation_error

UNREADABLE = "(unreadable)"


REJECT_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "location": pl.String(),
    "resource_type": pl.String(),
    "resource_id": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),
    "excerpt": pl.String(),
}
PATIENT_SCHEMA: dict[str, pl.DataType] = {
    "patient_id": pl.String(), schema.SUBJECT_ID: pl.Int64(),
    "_src_file": pl.Int32(), "_src_entry": pl.Int64(),
}
MEDICATION_SCHEMA: dict[str, pl.DataType] = {
    "medication_id": pl.String(), "code": pl.String(), "description": pl.String(),
    "_src_file": pl.Int32(), "_src_entry": pl.Int64(),
}


@dataclass
class BatchResult:
    """Counts from one batch of files, keyed by resource type (and reason)."""

    read: Counter[str] = field(default_factory=Counter)
    mapped: Counter[str] = field(default_factory=Counter)
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    descriptions: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # code -> (file, pos, text)

    def merge(self, other: BatchResult) -> None:
        self.read.update(other.read)
        self.mapped.update(other.mapped)
        self.skipped.update(other.skipped)
        self.rejected.update(other.rejected)
        for code, found in other.descriptions.items():
            mine = self.descriptions.get(code)
            if mine is None or found[:2] < mine[:2]:
                self.descriptions[code] = found


class _Spill:
    """Writes a worker's buffered rows to parquet parts under the run's temporary folder."""

    _counter = itertools.count()

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.tag = f"{os.getpid()}-{next(self._counter)}"
        self.parts = itertools.count()
        self.rejects: list[dict[str, Any]] = []

    def _path(self, kind: str) -> Path:
        folder = self.tmp / kind
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.tag}-{next(self.parts)}.parquet"

    def flush(self, emitter: EventEmitter) -> None:
        if len(emitter):
            frame = emitter.take_frame().with_columns(
                (pl.col(schema.SUBJECT_ID) % SPILL_BUCKETS).alias("_bucket")
            )
            for (bucket,), part in frame.partition_by("_bucket", as_dict=True).items():
                folder = self.tmp / "events" / f"bucket={bucket}"
                folder.mkdir(parents=True, exist_ok=True)
                part.drop("_bucket").write_parquet(folder / f"{self.tag}-{next(self.parts)}.parquet")
        if emitter.patients:
            pl.DataFrame(emitter.patients, schema=PATIENT_SCHEMA, orient="row").write_parquet(
                self._path("patients")
            )
            emitter.patients.clear()
        if emitter.medications:
            pl.DataFrame(emitter.medications, schema=MEDICATION_SCHEMA, orient="row").write_parquet(
                self._path("medications")
            )
            emitter.medications.clear()
        if self.rejects:
            pl.DataFrame(self.rejects, schema=REJECT_SCHEMA).write_parquet(self._path("rejects"))
            self.rejects.clear()


def ingest_batch(files: list[tuple[int, str]], config: IngestConfig, tmp: str) -> BatchResult:
    """Map every record of ``files`` (pairs of run-wide file index and path); spill to ``tmp``."""
    result = BatchResult()
    emitter = EventEmitter()
    spill = _Spill(Path(tmp))
    skip_types = frozenset(config.skip_types)
    for file_index, path_text in files:
        path = Path(path_text)
        for record in read_records(path, replace_bad_utf8=config.replace_bad_utf8):
            _ingest_record(record, file_index, path, config, skip_types, emitter, spill, result)
            if len(emitter) >= config.chunk_events or len(spill.rejects) >= 10_000:
                spill.flush(emitter)
    spill.flush(emitter)
    result.descriptions = emitter.descriptions
    return result


def _ingest_record(record: Record, file_index: int, path: Path, config: IngestConfig,
                   skip_types: frozenset[str], emitter: EventEmitter, spill: _Spill,
                   result: BatchResult) -> None:
    resource = record.resource
    if resource is None:
        kind, detail = record.error or ("unreadable", "no detail")
        result.read[UNREADABLE] += 1
        _reject(spill, result, path, record, None, None, kind, detail)
        return
    resource_type = resource.get("resourceType")
    resource_id = resource.get("id")
    resource_id = str(resource_id) if resource_id is not None else None
    if not isinstance(resource_type, str) or not resource_type:
        result.read[UNREADABLE] += 1
        _reject(spill, result, path, record, None, resource_id, "missing resourceType",
                "the JSON object has no resourceType, so it is not a FHIR resource")
        return
    result.read[resource_type] += 1
    if resource_type not in R4_RESOURCE_TYPES:
        _reject(spill, result, path, record, resource_type, resource_id, "unknown resourceType",
                f"{resource_type!r} is not a FHIR R4 resource type")
        return
    if resource_type in skip_types:
        result.skipped[(resource_type, "skipped type")] += 1
        return
    mapper = MAPPERS.get(resource_type)
    if mapper is None:
        if config.unmapped_types == "reject":
            _reject(spill, result, path, record, resource_type, resource_id, "no mapper",
                    f"ehrfm has no mapper for {resource_type} (unmapped_types=reject)")
        else:
            result.skipped[(resource_type, "no mapper")] += 1
        return
    if _entered_in_error(resource):
        result.skipped[(resource_type, "entered-in-error")] += 1
        return
    emitter.begin(resource_type, resource_id, record.bundle, file_index, record.position)
    try:
        if config.strict:
            problem = validation_error(resource)
            if problem is not None:
                raise Reject("strict validation failed", problem)
        mapper(resource, emitter)
        if resource_type not in REFERENCE_ONLY_TYPES and emitter.emitted() == 0:
            raise Reject("no events", f"{resource_type} yielded no event")
    except Reject as exc:
        emitter.rollback()
        _reject(spill, result, path, record, resource_type, resource_id, exc.kind, exc.detail)
        return
    except Exception as exc:  # a mapper bug must not end the run nor lose the record
        emitter.rollback()
        _reject(spill, result, path, record, resource_type, resource_id, "mapper error",
                f"{type(exc).__name__}: {exc}")
        return
    if resource_type in REFERENCE_ONLY_TYPES:
        result.skipped[(resource_type, "reference data")] += 1
    else:
        result.mapped[resource_type] += 1


def _entered_in_error(resource: dict[str, Any]) -> bool:
    """``status`` (a code) or ``verificationStatus`` (a CodeableConcept) says entered-in-error."""
    if resource.get("status") == "entered-in-error":
        return True
    concept = resource.get("verificationStatus")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return isinstance(codings, list) and any(
        isinstance(c, dict) and c.get("code") == "entered-in-error" for c in codings
    )


def _reject(spill: _Spill, result: BatchResult, path: Path, record: Record, resource_type: str | None,
            resource_id: str | None, kind: str, detail: str) -> None:
    result.rejected[(resource_type or UNREADABLE, kind)] += 1
    spill.rejects.append({
        "source_file": str(path),
        "location": location_text(path, record.position),
        "resource_type": resource_type,
        "resource_id": resource_id,
        "reason": kind,
        "detail": detail,
        "excerpt": record.excerpt,
    })
