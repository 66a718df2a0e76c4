"""Settings of one ingest run; ``conf/ingest.yaml`` holds the same keys for the CLI."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ehrfm.ingest.subjects import validate_ratios

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
    overwrite: bool = False
    dataset_name: str = "ehrfm"

    def __post_init__(self) -> None:
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
        self.split_ratios = dict(self.split_ratios)
        validate_ratios(self.split_ratios)
        self.skip_types = DEFAULT_SKIP_TYPES if self.skip_types is None else tuple(self.skip_types)

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> IngestConfig:
        """Build from a plain mapping (a Hydra config), rejecting unknown keys by name."""
        from ehrfm.typed_config import from_mapping

        return from_mapping(cls, values, where="ingest")
