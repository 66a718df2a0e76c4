"""Settings of one ingest run; ``conf/ingest.yaml`` holds the same keys for the CLI."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from ehrfm.ingest.sources import DEFAULT_MAX_DOCUMENT_BYTES, DEFAULT_MAX_LINE_BYTES
from ehrfm.ingest.subjects import validate_ratios
from ehrfm.jobs import JobSpec

SPILL_BUCKETS = 64  # subject buckets of the spill; the most shards a run can have

# Billing and administrative resources: no clinical events. Skipped and counted by type.
DEFAULT_SKIP_TYPES: tuple[str, ...] = (
    "Claim", "ClaimResponse", "ExplanationOfBenefit", "Coverage", "CoverageEligibilityRequest",
    "CoverageEligibilityResponse", "PaymentNotice", "PaymentReconciliation", "Invoice", "Account",
    "ChargeItem", "Organization", "Practitioner", "PractitionerRole", "Location", "Endpoint",
    "HealthcareService", "Provenance", "AuditEvent", "OperationOutcome",
)


@dataclass
class IngestConfig:
    """How to turn FHIR files into a MEDS dataset.

    ``num_shards`` is a number, or ``"auto"``: one shard per ``events_per_shard`` events, which
    keeps the memory of the final per-shard sort flat however large the input.

    >>> IngestConfig(inputs=["bundles/"], output="meds/").num_shards
    'auto'
    """

    inputs: Sequence[str]
    output: str
    num_shards: int | str = "auto"
    events_per_shard: int = 250_000
    split_ratios: Mapping[str, float] = field(
        default_factory=lambda: {"train": 0.8, "tuning": 0.1, "held_out": 0.1}
    )
    skip_types: Sequence[str] | None = None  # None: DEFAULT_SKIP_TYPES
    # Valid FHIR types that have no mapper and are not in skip_types: "skip" or "reject".
    unmapped_types: str = "skip"
    strict: bool = False  # validate every resource with fhir.resources.R4B; reject what fails
    workers: int = 0  # 0: one per CPU core
    chunk_events: int = 25_000  # events a worker buffers before writing them out
    replace_bad_utf8: bool = False  # True: decode with U+FFFD instead of rejecting the record
    # Bounds on what one record may cost in memory: a longer ndjson line is rejected (and reading
    # goes on); a larger single-document file is rejected whole.
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    # Events earlier than the patient's birth (a day's slack for time zones): "reject" the
    # resource, or "quarantine" it (rejected, and its events kept in quarantine/ for review).
    before_birth: str = "reject"
    # meta.security labels (a code, e.g. "R" or "HIV", or "system|code") whose resources are
    # skipped; labels of the resources written are kept in the data's ``security`` column.
    exclude_security_labels: Sequence[str] = ()
    reject_excerpts: bool = True  # False: rejects.parquet keeps no excerpt of the source text (PHI)
    overwrite: bool = False
    # dataset.json's dataset_name; None: the input's name (see dataset_name_for).
    dataset_name: str | None = None
    # More Coding.system URI -> vocabulary name entries (win over the shipped vocabularies.yaml),
    # and more tables in that file's layout (systems, vocabularies with formats, ...), in order.
    vocabularies: Mapping[str, str] = field(default_factory=dict)
    vocabulary_files: Sequence[str] = ()
    # Patient.identifier system whose (integer) value becomes subject_id, so results join back
    # to hospital tables; None: subject_id is a hash of the FHIR Patient id.
    subject_id_system: str | None = None
    # Independent jobs over disjoint shares of the input files (ehrfm.ingest.partitions):
    # index=k, count=n writes job k's partial; count=n without index merges the n partials.
    job: JobSpec = field(default_factory=JobSpec)

    def __post_init__(self) -> None:
        self.job = JobSpec.of(self.job)
        if isinstance(self.inputs, (str, os.PathLike)):
            self.inputs = [os.fspath(self.inputs)]
        self.inputs = [os.fspath(item) for item in self.inputs]
        if not self.inputs:
            raise ValueError("ingest needs at least one input path (input=...)")
        if not self.output:
            raise ValueError("ingest needs an output directory (output=...)")
        if self.num_shards != "auto" and not (
            isinstance(self.num_shards, int) and 1 <= self.num_shards <= SPILL_BUCKETS
        ):
            raise ValueError(f"num_shards must be 'auto' or an integer in 1..{SPILL_BUCKETS}, "
                             f"got {self.num_shards!r}")
        if self.unmapped_types not in ("skip", "reject"):
            raise ValueError(f"unmapped_types must be 'skip' or 'reject', got {self.unmapped_types!r}")
        if self.chunk_events < 1:
            raise ValueError(f"chunk_events must be positive, got {self.chunk_events!r}")
        for name in ("max_line_bytes", "max_document_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1024:
                raise ValueError(f"{name} must be an integer of at least 1024 bytes, got {value!r}")
        if self.before_birth not in ("reject", "quarantine"):
            raise ValueError(f"before_birth must be 'reject' or 'quarantine', got {self.before_birth!r}")
        if isinstance(self.exclude_security_labels, str):
            self.exclude_security_labels = [self.exclude_security_labels]
        self.exclude_security_labels = tuple(str(label) for label in self.exclude_security_labels)
        self.split_ratios = dict(self.split_ratios)
        validate_ratios(self.split_ratios)
        self.skip_types = DEFAULT_SKIP_TYPES if self.skip_types is None else tuple(self.skip_types)
        self.vocabularies = dict(self.vocabularies or {})
        if isinstance(self.vocabulary_files, (str, os.PathLike)):
            self.vocabulary_files = [self.vocabulary_files]
        self.vocabulary_files = tuple(os.fspath(path) for path in self.vocabulary_files or ())
        # Checked here, before any worker starts: a bad table fails once, naming file, key and value.
        from ehrfm.ingest.vocabulary import vocabularies_for

        vocabularies_for(self.vocabularies, self.vocabulary_files)
        if self.strict:  # fhir.resources is the `fhir` extra: fail before any file is read
            from ehrfm.extras import require_extra

            require_extra("fhir.resources", "fhir", "ingest strict=true (full FHIR R4 validation)")
        if self.subject_id_system is not None and (not isinstance(self.subject_id_system, str)
                                                   or not self.subject_id_system):
            raise ValueError(f"subject_id_system must be an identifier system URI, got {self.subject_id_system!r}")

    @property
    def name(self) -> str:
        """``dataset_name``, else the input's name: see :func:`dataset_name_for`."""
        return self.dataset_name or dataset_name_for(self.inputs)

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> IngestConfig:
        """Build from a plain mapping (a Hydra config), rejecting unknown keys by name."""
        from ehrfm.typed_config import from_mapping

        return from_mapping(cls, values, where="ingest")


def dataset_name_for(inputs: Sequence[str]) -> str:
    """A dataset name from the inputs: the folder (or file, without extensions) they name.

    Several inputs give their common folder's name; a glob is named by the folder before it.

    >>> dataset_name_for(["/data/mimic-iv-demo-fhir/"])
    'mimic-iv-demo-fhir'
    >>> dataset_name_for(["/data/exports/site_a.ndjson.gz"])
    'site_a'
    >>> dataset_name_for(["/data/synthea/*.json.gz"]), dataset_name_for(["/x/a/p.json", "/x/a/q/"])
    ('synthea', 'a')
    """
    paths = []
    for item in inputs:
        parts = PurePath(item).parts
        cut = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
        paths.append(PurePath(*parts[:cut]) if cut else PurePath("."))
    if len(paths) == 1:
        path = paths[0]
        name = path.name.split(".")[0] if "." in path.name and not Path(path).is_dir() else path.name
    else:
        common = os.path.commonpath([str(p) for p in paths]) if paths else ""
        name = PurePath(common).name
    return name or "fhir"
