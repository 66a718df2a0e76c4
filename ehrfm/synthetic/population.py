"""Write a simulated population to disk: FHIR (Bundles or Bulk ndjson, gzipped or not) plus its truth.

Layout under ``output``::

    fhir/                          what ``ehrfm ingest`` reads
      bundles/<index>.json[.gz]    format="bundle": one transaction Bundle per patient
      <Type>.<part>.ndjson[.gz]    format="ndjson": Bulk FHIR, one file per type and part
    truth.jsonl.gz                 one line per patient: index, Patient id, ground truth
    population.json                the settings and what was written

Patients are simulated in parts of ``PART_SIZE`` by ``workers`` processes; part ``k`` holds
patients ``k * PART_SIZE ...``, so the files are the same whatever ``workers`` is.

>>> import tempfile
>>> out = write_population(tempfile.mkdtemp(), n_patients=3, seed=1, format="ndjson")
>>> out["patients"], out["format"], sorted(out["resources"])[:2]
(3, 'ndjson', ['Condition', 'Encounter'])
>>> truth = load_truth(out["output"])
>>> len(truth), type(next(iter(truth.values()))).__name__
(3, 'Truth')
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from .dynamics import TASK_OUTCOMES, Truth, true_risk
from .fhir_parts import bundle_references
from .simulator import HISTORY_END, SimulatedPatient, simulate_patient

__all__ = ["FORMATS", "PART_SIZE", "TRUTH_FILE", "load_truth", "true_risks", "write_population"]

FORMATS = ("bundle", "ndjson")
PART_SIZE = 1000
TRUTH_FILE = "truth.jsonl.gz"
_JSON = {"separators": (",", ":"), "ensure_ascii": False}


def _open(path: Path, compress: bool):  # noqa: ANN202 - a text file object
    # mtime=0: the same population gives the same bytes
    return (io.TextIOWrapper(gzip.GzipFile(path, "wb", mtime=0), encoding="utf-8") if compress
            else path.open("w", encoding="utf-8"))


def _bundle(patient: SimulatedPatient) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{r['id']}", "resource": bundle_references(r),
         "request": {"method": "POST", "url": r["resourceType"]}} for r in patient.resources]}


@dataclass(frozen=True)
class _Part:
    """One worker's job: patients ``first .. last - 1`` of population ``seed`` into ``fhir``."""

    fhir: Path
    number: int
    first: int
    last: int
    seed: int
    format: str
    compress: bool
    notes: bool
    imaging: bool


def _write_part(part: _Part) -> tuple[Counter, list[str]]:
    """Simulate and write one part; returns (resources per type, truth lines)."""
    counts: Counter = Counter()
    truth_lines = []
    suffix = ".gz" if part.compress else ""
    by_type: dict[str, Any] = {}
    try:
        for index in range(part.first, part.last):
            patient = simulate_patient(part.seed, index, notes=part.notes, imaging=part.imaging)
            counts.update(r["resourceType"] for r in patient.resources)
            truth_lines.append(json.dumps({"index": index, "patient_id": patient.patient_id,
                                           "truth": patient.truth.to_dict()}, **_JSON))
            if part.format == "bundle":
                with _open(part.fhir / "bundles" / f"{index}.json{suffix}", part.compress) as handle:
                    handle.write(json.dumps(_bundle(patient), **_JSON) + "\n")
                continue
            for resource in patient.resources:
                kind = resource["resourceType"]
                if kind not in by_type:
                    by_type[kind] = _open(part.fhir / f"{kind}.{part.number:04d}.ndjson{suffix}", part.compress)
                by_type[kind].write(json.dumps(resource, **_JSON) + "\n")
    finally:
        for handle in by_type.values():
            handle.close()
    return counts, truth_lines


def write_population(output: str | Path, *, n_patients: int = 1000, seed: int = 0, format: str = "ndjson",
                     gzip: bool = False, notes: bool = False, imaging: bool = False,
                     workers: int = 1) -> dict[str, Any]:
    """Simulate ``n_patients`` and write them under ``output`` (see the module docstring).

    ``workers`` processes (0: one per CPU core) simulate parts of ``PART_SIZE`` patients.
    Returns what ``population.json`` holds: the settings, patients and resources per type.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: expected one of {', '.join(FORMATS)}")
    if n_patients < 1:
        raise ValueError(f"n_patients={n_patients}: expected at least 1")
    output = Path(output)
    fhir = output / "fhir"
    if fhir.exists() and any(fhir.iterdir()):
        raise FileExistsError(f"{fhir}: already holds files; choose an empty output folder")
    output.mkdir(parents=True, exist_ok=True)
    (fhir / "bundles" if format == "bundle" else fhir).mkdir(parents=True, exist_ok=True)
    parts = [_Part(fhir, number, first, min(first + PART_SIZE, n_patients), seed, format, gzip, notes, imaging)
             for number, first in enumerate(range(0, n_patients, PART_SIZE))]
    workers = min(len(parts), workers or os.cpu_count() or 1)
    counts: Counter = Counter()
    with (_open(output / TRUTH_FILE, True) as truth,
          ProcessPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool):
        results: Iterable[tuple[Counter, list[str]]] = (pool.map if pool else map)(_write_part, parts)
        for part_counts, lines in results:  # in part order: the truth file is the same for any workers
            counts.update(part_counts)
            truth.writelines(line + "\n" for line in lines)
    summary = {"output": str(output), "fhir": str(fhir), "patients": n_patients, "seed": seed, "format": format,
               "gzip": gzip, "notes": notes, "imaging": imaging, "resources": dict(sorted(counts.items())),
               "history_end": HISTORY_END.isoformat(), "tasks_with_true_risk": list(TASK_OUTCOMES)}
    (output / "population.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _truth_lines(output: str | Path) -> Iterator[dict[str, Any]]:
    path = Path(output) / TRUTH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no simulated truth here (write_population writes it)")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def load_truth(output: str | Path) -> dict[str, Truth]:
    """FHIR Patient id -> :class:`Truth` of a population written by :func:`write_population`."""
    return {row["patient_id"]: Truth.from_dict(row["truth"]) for row in _truth_lines(output)}


def true_risks(output: str | Path, meds_dir: str | Path, labels: pl.DataFrame, task: str) -> pl.Series:
    """The planted risk of ``task`` at each label row (``subject_id``, ``prediction_time``).

    ``meds_dir`` is the population's ingested MEDS dataset: its ``metadata/subjects.parquet``
    maps subject ids to FHIR Patient ids.
    """
    truth = load_truth(output)
    subjects = pl.read_parquet(Path(meds_dir) / "metadata" / "subjects.parquet", columns=["subject_id",
                                                                                        "fhir_patient_id"])
    patient_of = dict(zip(subjects["subject_id"].to_list(), subjects["fhir_patient_id"].to_list(), strict=True))
    risks = []
    for subject, at in zip(labels["subject_id"].to_list(), labels["prediction_time"].to_list(), strict=True):
        patient = patient_of.get(subject)
        if patient not in truth:
            raise KeyError(f"subject {subject} (Patient {patient}) is not in the simulated population at {output}")
        risks.append(true_risk(truth[patient], task, at))
    return pl.Series("true_risk", risks, dtype=pl.Float64)
