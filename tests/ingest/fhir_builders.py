"""Small Synthea-like FHIR R4 resources built in code, and a helper that ingests them.

Imported by the tests in this folder (not a test module itself). Everything a test writes goes
under pytest's ``tmp_path``.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow.parquet as pq
from meds import CodeMetadataSchema, DataSchema, DatasetMetadataSchema, SubjectSplitSchema

import ehrfm
from ehrfm.ingest.subjects import subject_id_for

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
RACE_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
ETHNICITY_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
CDCREC = "urn:oid:2.16.840.1.113883.6.238"


# -- time helpers ----------------------------------------------------------------------------

def ts(text: str) -> datetime:
    """A naive datetime (MEDS ``time`` is a zone-less UTC wall clock) from ISO text."""
    return datetime.fromisoformat(text)


# -- writing input files ---------------------------------------------------------------------

def _line(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    return orjson.dumps(item)


def write_ndjson(path: Path, items: list[Any]) -> Path:
    """One line per item: dicts are JSON-encoded, str/bytes are written raw (for bad lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(_line(item) + b"\n" for item in items))
    return path


def write_json(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(value))
    return path


def bundle(*resources: dict[str, Any], kind: str = "collection",
           full_urls: list[str] | None = None) -> dict[str, Any]:
    """A Bundle whose entries have ``urn:uuid:<id>`` fullUrls (or the ones given)."""
    entries = []
    for index, resource in enumerate(resources):
        url = full_urls[index] if full_urls else f"urn:uuid:{resource.get('id')}"
        entry: dict[str, Any] = {"fullUrl": url, "resource": resource}
        if kind == "transaction":
            entry["request"] = {"method": "POST", "url": resource["resourceType"]}
        entries.append(entry)
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


# -- resources -------------------------------------------------------------------------------

def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def concept(system: str, code: str, display: str | None = None, text: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display is not None:
        coding["display"] = display
    out: dict[str, Any] = {"coding": [coding]}
    if text is not None:
        out["text"] = text
    return out


def patient(pid: str = "p1", *, gender: str = "female", birth: str | None = "1970-04-12",
            **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": pid, "gender": gender,
                                "name": [{"family": "Doe", "given": ["Jane"]}]}
    if birth is not None:
        resource["birthDate"] = birth
    resource.update(extra)
    return resource


def encounter(eid: str = "e1", subject: str = "Patient/p1", *, start: str = "2020-03-04T10:00:00Z",
              end: str | None = "2020-03-04T10:30:00Z", klass: str = "AMB", **extra: Any) -> dict[str, Any]:
    period = {"start": start}
    if end is not None:
        period["end"] = end
    resource: dict[str, Any] = {
        "resourceType": "Encounter", "id": eid, "status": "finished",
        "class": {"system": ACT_CODE, "code": klass},
        "type": [concept(SNOMED, "185349003", "Encounter for check up (procedure)")],
        "subject": ref(subject), "period": period,
    }
    resource.update(extra)
    return resource


def observation(oid: str = "o1", subject: str = "Patient/p1", *, code: str = "2160-0",
                display: str | None = "Creatinine", effective: str | None = "2020-03-04T10:15:00Z",
                value: Any = 1.2, unit: str | None = "mg/dL", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": oid, "status": "final",
        "category": [concept("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory")],
        "code": concept(LOINC, code, display), "subject": ref(subject),
    }
    if effective is not None:
        resource["effectiveDateTime"] = effective
    if value is not None:
        quantity: dict[str, Any] = {"value": value}
        if unit is not None:
            quantity.update({"unit": unit, "system": "http://unitsofmeasure.org", "code": unit})
        resource["valueQuantity"] = quantity
    resource.update(extra)
    return resource


def condition(cid: str = "c1", subject: str = "Patient/p1", *, code: str = "44054006",
              display: str = "Diabetes mellitus type 2 (disorder)", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition", "id": cid,
        "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
        "verificationStatus": concept("http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                      "confirmed"),
        "code": concept(SNOMED, code, display), "subject": ref(subject),
    }
    resource.update(extra)
    return resource


def note_text_b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


# -- running ingest --------------------------------------------------------------------------

class Run:
    """The result of one ingest: summary, all events, rejects, and the output folder."""

    def __init__(self, summary: ehrfm.ingest.IngestSummary, output: Path) -> None:
        self.summary = summary
        self.output = output
        shards = sorted((output / "data").rglob("*.parquet"))
        self.shards = shards
        self.events = pl.read_parquet(shards) if shards else pl.DataFrame()
        self.rejects = pl.read_parquet(output / "rejects" / "rejects.parquet")
        self.codes = pl.read_parquet(output / "metadata" / "codes.parquet")
        self.subjects = pl.read_parquet(output / "metadata" / "subjects.parquet")
        self.splits = pl.read_parquet(output / "metadata" / "subject_splits.parquet")
        self.summary_json = json.loads((output / "metadata" / "ingest_summary.json").read_text())

    def events_of(self, resource_id: str, resource_type: str | None = None) -> list[dict[str, Any]]:
        frame = self.events.filter(pl.col("resource_id") == resource_id)
        if resource_type is not None:
            frame = frame.filter(pl.col("resource_type") == resource_type)
        return frame.to_dicts()

    def reject_rows(self, reason: str | None = None) -> list[dict[str, Any]]:
        frame = self.rejects if reason is None else self.rejects.filter(pl.col("reason") == reason)
        return frame.to_dicts()

    def only_reject(self, reason: str) -> dict[str, Any]:
        rows = self.reject_rows(reason)
        assert len(rows) == 1, f"expected one {reason!r} reject, got {self.rejects.to_dicts()}"
        return rows[0]

    def description(self, code: str) -> str | None:
        rows = self.codes.filter(pl.col("code") == code)
        assert rows.height == 1, f"{code} is not in codes.parquet: {self.codes['code'].to_list()}"
        return rows["description"][0]


def ingest(inputs: Any, output: Path, **settings: Any) -> Run:
    """Run ``ehrfm.ingest_fhir`` and check what every run must satisfy, whatever the input."""
    settings.setdefault("workers", 1)
    summary = ehrfm.ingest_fhir(inputs, output, **settings)
    run = Run(summary, output)
    check_run_invariants(run, hashed_subject_ids=settings.get("subject_id_system") is None)
    return run


def check_run_invariants(run: Run, hashed_subject_ids: bool = True) -> None:
    summary = run.summary
    totals = summary.totals()
    assert summary.balanced, summary.balance_errors
    assert totals["read"] == totals["written"] + totals["skipped"] + totals["rejected"], totals
    for kind, count in summary.read.items():
        accounted = (summary.written.get(kind, 0) + sum(summary.skipped.get(kind, {}).values())
                     + sum(summary.rejected.get(kind, {}).values()))
        assert accounted == count, (kind, count, accounted)
    # Every reject is a row, and every row is counted.
    assert run.rejects.height == totals["rejected"], (run.rejects.to_dicts(), summary.rejected)
    by_reason = run.rejects.group_by("reason").len().sort("reason")
    assert dict(by_reason.iter_rows()) == summary.rejected_by_reason()
    # The same numbers are in metadata/.
    assert run.summary_json["totals"] == totals
    assert run.summary_json["rejected"] == summary.rejected
    assert run.summary_json["balanced"] is True
    # MEDS validity of everything written.
    for shard in run.shards:
        DataSchema.validate(pq.read_table(shard))
    CodeMetadataSchema.validate(pq.read_table(run.output / "metadata" / "codes.parquet"))
    SubjectSplitSchema.validate(pq.read_table(run.output / "metadata" / "subject_splits.parquet"))
    DatasetMetadataSchema.validate(json.loads((run.output / "metadata" / "dataset.json").read_text()))
    if run.events.height:
        # Each subject in one shard, sorted by subject then time (static facts first).
        for shard in run.shards:
            frame = pl.read_parquet(shard)
            assert frame.equals(frame.sort("subject_id", "time", nulls_last=False, maintain_order=True))
        per_subject = pl.concat(
            [pl.read_parquet(s).select("subject_id").unique().with_columns(
                pl.lit(s.relative_to(run.output / "data").as_posix()).alias("shard"),
                pl.lit(s.parent.name).alias("folder")) for s in run.shards]
        )
        assert per_subject["subject_id"].is_unique().all()
        # Split-sharded: data/<split>/<n>.parquet, each subject in their split's folder, n from 0.
        filed = per_subject.join(run.splits, on="subject_id", how="left")
        assert (filed["folder"] == filed["split"]).all(), filed.filter(pl.col("folder") != pl.col("split"))
        for folder in {s.parent for s in run.shards}:
            numbers = sorted(int(p.stem) for p in folder.glob("*.parquet"))
            assert numbers == list(range(len(numbers))), (folder, numbers)
        # Every code written is in codes.parquet.
        assert set(run.events["code"].to_list()) <= set(run.codes["code"].to_list())
        assert run.events["code"].null_count() == 0
        # subject ids are the stable hash of the FHIR Patient id (unless taken from an identifier).
        for row in run.subjects.iter_rows(named=True):
            assert not hashed_subject_ids or row["subject_id"] == subject_id_for(row["fhir_patient_id"])
        assert set(run.events["subject_id"].unique().to_list()) <= set(run.subjects["subject_id"].to_list())
        # No event more than a day (time zones) before its subject's birth: ages are never negative.
        births = run.events.filter(pl.col("code") == "MEDS_BIRTH").group_by("subject_id").agg(
            pl.col("time").min().alias("birth"))
        early = run.events.join(births, on="subject_id").filter(
            pl.col("time") < pl.col("birth") - pl.duration(days=1))
        assert early.height == 0, early.to_dicts()


def sid(patient_id: str) -> int:
    return subject_id_for(patient_id)
