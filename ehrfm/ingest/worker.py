"""The parallel half of ingest: files in, per-shard spill parquet files out.

Each worker process takes a batch of files, maps every record through its mapper, and writes
events to ``<tmp>/events/shard=<k>/`` whenever its buffer reaches ``chunk_events``, so memory
stays bounded however many patients the input holds. It returns only counts; rejected records
go to ``<tmp>/rejects/`` as they happen.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from ehrfm import schema
from ehrfm.ingest.config import SPILL_BUCKETS, IngestConfig
from ehrfm.ingest.events import EventEmitter, Reject
from ehrfm.ingest.fhir_types import R4_RESOURCE_TYPES
from ehrfm.ingest.fhirtime import FhirTimeError, to_utc_micros
from ehrfm.ingest.mappers import MAPPERS, REFERENCE_ONLY_TYPES
from ehrfm.ingest.sources import Record, location_text, read_records
from ehrfm.ingest.strict import validation_error
from ehrfm.ingest.vocabulary import vocabularies_for

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
IDENTIFIERS = "identifiers"  # Patient.identifier as a list of {system, value}
IDENTIFIER_TYPE = pl.List(pl.Struct({"system": pl.String(), "value": pl.String()}))
PATIENT_SCHEMA: dict[str, pl.DataType] = {
    "patient_id": pl.String(), schema.SUBJECT_ID: pl.Int64(), IDENTIFIERS: IDENTIFIER_TYPE,
    "_src_file": pl.Int32(), "_src_entry": pl.Int64(),
}
# One row per Medication, or one per ingredient of a Medication that has ingredients but no code
# (``ingredient_ref``: the id of the Medication an ingredient names; ``ingredient``: its position).
MEDICATION_SCHEMA: dict[str, pl.DataType] = {
    "medication_id": pl.String(), "code": pl.String(), "description": pl.String(),
    "ingredient_ref": pl.String(), "ingredient": pl.Int32(),
    "_src_file": pl.Int32(), "_src_entry": pl.Int64(),
}
# Where one copy of a resource is, for two spills. "resources": one row per reference-data
# resource kept (a Medication, which has no events); with the events spill, that says where every
# copy of every resource is. Duplicates are rare, so what deciding between copies needs
# (meta.lastUpdated, a hash of the content) is read again from the files, for those copies only,
# at finalize. "deletes": one row per transaction DELETE; every copy of the resource read before
# it is removed at finalize.
LOCATED_SCHEMA: dict[str, pl.DataType] = {
    schema.RESOURCE_TYPE: pl.String(), schema.RESOURCE_ID: pl.String(),
    "_src_file": pl.Int32(), "_src_entry": pl.Int64(),
}


@dataclass
class BatchResult:
    """Counts from one batch of files, keyed by resource type (and reason)."""

    read: Counter[str] = field(default_factory=Counter)
    mapped: Counter[str] = field(default_factory=Counter)
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    parts_skipped: Counter[tuple[str, str]] = field(default_factory=Counter)  # inside written resources
    events: int = 0  # events emitted into the spill, checked against what finalize writes
    descriptions: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # code -> (file, pos, text)
    parents: dict[str, set[str]] = field(default_factory=dict)  # code -> parents seen beside it

    def merge(self, other: BatchResult) -> None:
        self.read.update(other.read)
        self.mapped.update(other.mapped)
        self.skipped.update(other.skipped)
        self.rejected.update(other.rejected)
        self.parts_skipped.update(other.parts_skipped)
        self.events += other.events
        for code, found in other.descriptions.items():
            mine = self.descriptions.get(code)
            if mine is None or found[:2] < mine[:2]:
                self.descriptions[code] = found
        for code, parents in other.parents.items():
            self.parents.setdefault(code, set()).update(parents)


class _Spill:
    """Writes a worker's buffered rows to parquet parts under the run's temporary folder."""

    _counter = itertools.count()

    def __init__(self, tmp: Path, keep_excerpts: bool = True) -> None:
        self.tmp = tmp
        self.keep_excerpts = keep_excerpts  # excerpts of rejected records may hold PHI
        self.tag = f"{os.getpid()}-{next(self._counter)}"
        self.parts = itertools.count()
        self.rejects: list[dict[str, Any]] = []
        self.resources: list[tuple[Any, ...]] = []
        self.deletes: list[tuple[Any, ...]] = []
        self.events = 0

    def _path(self, kind: str) -> Path:
        folder = self.tmp / kind
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.tag}-{next(self.parts):08d}.parquet"

    def flush(self, emitter: EventEmitter) -> None:
        if len(emitter):
            self.events += len(emitter)
            frame = emitter.take_frame().with_columns(
                (pl.col(schema.SUBJECT_ID) % SPILL_BUCKETS).alias("_bucket")
            )
            for (bucket,), part in frame.partition_by("_bucket", as_dict=True).items():
                folder = self.tmp / "events" / f"bucket={bucket}"
                folder.mkdir(parents=True, exist_ok=True)
                # Zero-padded, so sorted names are write order: the finalize step reads each file's
                # rows (its rejects above all) in the order they were read, however many parts.
                part.drop("_bucket").write_parquet(folder / f"{self.tag}-{next(self.parts):08d}.parquet")
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
        for rows, kind in ((self.resources, "resources"), (self.deletes, "deletes")):
            if rows:
                pl.DataFrame(rows, schema=LOCATED_SCHEMA, orient="row").write_parquet(self._path(kind))
                rows.clear()
        if self.rejects:
            pl.DataFrame(self.rejects, schema=REJECT_SCHEMA).write_parquet(self._path("rejects"))
            self.rejects.clear()


# A parsed Bundle is hundreds of thousands of dicts and lists that hold no reference cycles;
# at the default threshold (700 new objects) the collector walks them over and over, about a
# tenth of a worker's time. Cycles (rare here: a traceback) are still collected, less often.
_GC_THRESHOLD0 = 50_000


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    previous = gc.get_threshold()
    gc.set_threshold(max(previous[0], _GC_THRESHOLD0), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def ingest_batch(files: list[tuple[int, str]], config: IngestConfig, tmp: str,
                 on_file: Callable[[int], None] | None = None) -> BatchResult:
    """Map every record of ``files`` (pairs of run-wide file index and path); spill to ``tmp``.

    ``on_file`` (in-process runs only: a progress bar) is called after each file with the number
    of resources read so far.
    """
    with _fewer_collections():
        return _ingest_batch(files, config, tmp, on_file)


def _ingest_batch(files: list[tuple[int, str]], config: IngestConfig, tmp: str,
                  on_file: Callable[[int], None] | None = None) -> BatchResult:
    result = BatchResult()
    emitter = EventEmitter()
    emitter.vocab = vocabularies_for(config.vocabularies, config.vocabulary_files)
    spill = _Spill(Path(tmp), config.reject_excerpts)
    skip_types = frozenset(config.skip_types)
    for file_index, path_text in files:
        path = Path(path_text)
        records = read_records(path, replace_bad_utf8=config.replace_bad_utf8,
                               max_line_bytes=config.max_line_bytes,
                               max_document_bytes=config.max_document_bytes)
        for record in records:
            _ingest_record(record, file_index, path, config, skip_types, emitter, spill, result)
            if (len(emitter) >= config.chunk_events or len(spill.rejects) >= 10_000
                    or len(spill.resources) >= config.chunk_events):
                spill.flush(emitter)
        if on_file is not None:
            on_file(sum(result.read.values()))
    spill.flush(emitter)
    result.descriptions = emitter.descriptions
    result.parents = emitter.parents
    result.parts_skipped = emitter.skipped_parts
    result.events = spill.events
    return result


def _ingest_record(record: Record, file_index: int, path: Path, config: IngestConfig,
                   skip_types: frozenset[str], emitter: EventEmitter, spill: _Spill,
                   result: BatchResult) -> None:
    resource = record.resource
    if record.skipped is not None:  # an empty Bundle, a transaction DELETE: read, nothing to map
        result.read[record.skipped[0]] += 1
        result.skipped[record.skipped] += 1
        if record.deleted is not None:
            spill.deletes.append((*record.deleted, file_index, record.position))
        return
    if resource is None:
        kind, detail = record.error or ("unreadable", "no detail")
        known_type, known_id = record.identity or (None, None)
        result.read[known_type or UNREADABLE] += 1
        _reject(spill, result, path, record, known_type, known_id, kind, detail)
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
    security = None
    meta = resource.get("meta")
    if isinstance(meta, dict) and "security" in meta:
        labels = security_labels(resource)
        if labels and config.exclude_security_labels and _excluded(labels, config.exclude_security_labels):
            result.skipped[(resource_type, "excluded security label")] += 1
            return
        security = ",".join(sorted({code for _, code in labels})) or None
    emitter.begin(resource_type, resource_id, record.bundle, file_index, record.position, security)
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
    if resource_id is not None and resource_type in REFERENCE_ONLY_TYPES:
        # Resources with events are found in the events spill; these have none.
        spill.resources.append((resource_type, resource_id, file_index, record.position))


def content_hash(resource: dict[str, Any]) -> int:
    """A 64-bit digest of the resource without ``meta``: two copies that differ only in their
    metadata (a re-export) are the same content."""
    body = {key: value for key, value in resource.items() if key != "meta"}
    try:
        text = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # a float out of range read by the slow parser
        text = repr(sorted(body.items())).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little", signed=True)


def last_updated(resource: dict[str, Any]) -> int | None:
    """``meta.lastUpdated`` in microseconds UTC, or None when absent or unreadable."""
    meta = resource.get("meta")
    value = meta.get("lastUpdated") if isinstance(meta, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return to_utc_micros(value)
    except FhirTimeError:
        return None


def security_labels(resource: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(system, code) of every ``meta.security`` Coding (confidentiality, sensitivity: HIV, ...).

    >>> security_labels({"meta": {"security": [{"system": "http://x", "code": "R"}, {"code": 3}]}})
    [('http://x', 'R')]
    """
    meta = resource.get("meta")
    codings = meta.get("security") if isinstance(meta, dict) else None
    if not isinstance(codings, list):
        return []
    return [(c.get("system") if isinstance(c.get("system"), str) else None, c["code"])
            for c in codings if isinstance(c, dict) and isinstance(c.get("code"), str) and c["code"]]


def _excluded(labels: list[tuple[str | None, str]], excluded: Sequence[str]) -> bool:
    """A label matches an entry written as its code (``R``) or as ``system|code``."""
    wanted = set(excluded)
    return any(code in wanted or f"{system}|{code}" in wanted for system, code in labels)


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
        "location": location_text(record.position),
        "resource_type": resource_type,
        "resource_id": resource_id,
        "reason": kind,
        "detail": detail,
        "excerpt": record.excerpt if spill.keep_excerpts else None,
    })
